"""Gate reports: JSON Schema validation, writing, and a Markdown rendering for humans."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from quality import visuals
from quality.evaluate import verdict
from quality.gates.common import HEADROOM_REFERENCES
from quality.gates.family import kind_of
from quality.gates.registry import expected_names, spec_for
from quality.gates.result import compare
from quality.policy import Policy
from worldflux import WorldFluxError
from worldflux.core.registry import get_family

SCHEMA_PATH = Path(__file__).parent / "schema" / "gate_report.schema.json"


class ReportError(ValueError):
    """A report does not satisfy the published schema."""


@cache
def report_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def _no_nonfinite(value: Any, path: str = "$") -> None:
    """JSON has no NaN/Infinity: a report holding one is a bug upstream, not a value."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ReportError(f"{path} is {value}; reports record non-finite values as null")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nonfinite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nonfinite(item, f"{path}[{index}]")


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``ReportError`` naming the first violation of the schema, or the first thing in
    the report that its own evidence contradicts (see ``check_integrity``)."""
    _no_nonfinite(report)
    validator = jsonschema.Draft202012Validator(
        report_schema(), format_checker=jsonschema.FormatChecker()
    )
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise ReportError(f"report violates {SCHEMA_PATH.name} at {where}: {first.message}")
    check_integrity(report)


def check_integrity(report: dict[str, Any]) -> None:
    """A report's decisions are recomputed, never trusted: the recorded policy must match its
    digest; the gate list must be exactly the family's (from the gate registry, the recorded
    policy and the family's maturity); each gate's ``pass`` must match its status, and a passing
    gate's value must meet its threshold; ``common.pass``, ``family_pass``, ``release_pass``
    and ``failed_gates`` must equal what the statuses give."""
    family = report["family"]
    policy = Policy.from_dict(report["policy"])
    if policy.digest != report["policy_digest"]:
        raise ReportError(
            f"report {report['report_id']}: the recorded policy's digest {policy.digest[:12]} is "
            f"not the recorded policy_digest {report['policy_digest'][:12]}: the thresholds were "
            "edited after evaluation"
        )
    try:
        maturity = get_family(family).maturity.value
    except WorldFluxError as err:
        raise ReportError(f"report {report['report_id']}: {err}") from None
    results = report["gates"]["results"]
    names = [g["name"] for g in results]
    expected = expected_names(policy, kind_of(policy, maturity))
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        raise ReportError(
            f"report {report['report_id']}: the gates are not exactly {family}'s gate list "
            f"(missing {missing}, unexpected {extra}"
            + (", or out of order" if not (missing or extra) else "")
            + ")"
        )
    for g in results:
        spec = spec_for(g["name"])
        allowed = spec.thresholds(policy, g["name"]) if spec and spec.thresholds else None
        if allowed is not None and g["threshold"] is not None and g["threshold"] not in allowed:
            raise ReportError(
                f"gate {g['name']}: threshold {g['threshold']} is not the recorded policy's "
                f"({sorted(allowed)}): the report was edited after evaluation"
            )
        if g["pass"] != (g["status"] == "pass"):
            raise ReportError(f"gate {g['name']}: pass={g['pass']} contradicts {g['status']}")
        numbers = g["value"] is not None and g["threshold"] is not None and g["comparison"]
        if g["status"] == "pass" and not numbers:  # every gate passes by a measured number
            raise ReportError(
                f"gate {g['name']} says pass, but records no value, threshold and comparison "
                "that could meet it"
            )
        if g["status"] == "pass" and not compare(g["value"], g["threshold"], g["comparison"]):
            raise ReportError(
                f"gate {g['name']} says pass, but its value {g['value']} does not meet "
                f"{g['comparison']} {g['threshold']}"
            )
    decided = verdict(results)
    recorded = {
        "gates.common.pass": report["gates"]["common"]["pass"],
        "gates.family_pass": report["gates"]["family_pass"],
        "gates.release_pass": report["gates"]["release_pass"],
        "failed_gates": report["failed_gates"],
    }
    derived = {
        "gates.common.pass": decided.common_pass,
        "gates.family_pass": decided.family_pass,
        "gates.release_pass": decided.release_pass,
        "failed_gates": decided.failed_gates,
    }
    for key, value in recorded.items():
        if value != derived[key]:
            raise ReportError(
                f"report {report['report_id']}: {key} is recorded as {value}, but the gate "
                f"results give {derived[key]}"
            )


def write_report(report: dict[str, Any], directory: Path, stem: str | None = None) -> Path:
    """Validate, then write ``<stem>.json`` and ``<stem>.md``; return the JSON path."""
    validate_report(report)
    directory.mkdir(parents=True, exist_ok=True)
    stem = stem or report["family"]
    path = directory / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    (directory / f"{stem}.md").write_text(render_markdown(report))
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


STATUS_MARK = {"pass": "PASS", "fail": "FAIL", "skipped": "SKIPPED", "not_applicable": "n/a"}


def _headroom(results: list[dict[str, Any]]) -> list[str]:
    """Per horizon, the seeds' median open-loop NMSE beside the trivial baselines and what the
    data allows (the success gate's per-seed evidence); nothing when no seed was probed."""
    success = next((g for g in results if g["name"] == "common.seed_success_rate"), None)
    per_seed = [
        s["per_horizon"] for s in ((success or {}).get("evidence") or {}).get("per_seed", [])
    ]
    per_seed = [h for h in per_seed if h]
    if not per_seed:
        return []
    columns = ("model", *HEADROOM_REFERENCES)
    lines = [
        "",
        "## Headroom (held-out open-loop NMSE, median over seeds)",
        "",
        "| steps ahead | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for k in per_seed[0]:
        cells = []
        for c in columns:
            values = [h[k][c] for h in per_seed if k in h and h[k].get(c) is not None]
            cells.append(_fmt(statistics.median(values)) if values else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(
    report: dict[str, Any], pictures: Mapping[int, visuals.Picture] | None = None
) -> str:
    """``pictures``: each seed's real-versus-imagined PNG (quality/visuals.py), shown inline
    after the seed table."""
    gates = report["gates"]
    verdict = "RELEASABLE" if gates["release_pass"] else "BLOCKED"
    common = gates["common"]
    lines = [
        f"# Gate report: {report['family']} ({report['preset']}) - {verdict}",
        "",
        f"- report `{report['report_id']}`, created {report['created_at']}",
        f"- seeds {report['seeds']}, {report['steps']} steps; data sets "
        + ", ".join(f"{d['name']} (`{str(d['digest'])[:12]}`)" for d in report["datasets"]),
        f"- success rate {report['success_rate']:.0%} ({common['successes']}/{common['trials']}, "
        f"need {common['required']}); bootstrap 95% CI [{common['ci_low']:.2f}, "
        f"{common['ci_high']:.2f}], exact 95% CI [{common['clopper_pearson_low']:.2f}, "
        f"{common['clopper_pearson_high']:.2f}]",
        f"- common gates {'pass' if common['pass'] else 'FAIL'}; family gates "
        f"{'pass' if gates['family_pass'] else 'FAIL'}; policy `{report['policy_digest'][:12]}` "
        f"({', '.join(report.get('policy_sources', []))}); code "
        f"`{str(report['code_version'].get('git_commit'))[:12]}`",
        "",
    ]
    failed = [g for g in gates["results"] if g["status"] in ("fail", "skipped")]
    if failed:
        lines += ["## Why it is blocked", ""]
        lines += [f"- **{g['name']}** ({STATUS_MARK[g['status']]}): {g['reason']}" for g in failed]
        lines.append("")
    lines += [
        "## Gates",
        "",
        "| gate | status | value | threshold | reason |",
        "|---|---|---|---|---|",
    ]
    for g in gates["results"]:
        threshold = f"{g['comparison']} {_fmt(g['threshold'])}" if g["comparison"] else "-"
        reason = g["reason"].replace("|", "\\|")
        lines.append(
            f"| {g['name']} | {STATUS_MARK[g['status']]} | {_fmt(g['value'])} | {threshold} "
            f"| {reason} |"
        )
    lines += _headroom(gates["results"])
    lines += [
        "",
        "## Seeds",
        "",
        "| seed | status | skill | metric before | metric after | drop | steps | samples/s | "
        "checkpoint |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        status = r["status"] if not r["failure"] else f"failed: {r['failure'].get('message', '')}"
        status = status.replace("|", "\\|")
        sha = (r.get("checkpoint") or {}).get("sha256")
        drop = f"{r['drop']:.1%}" if r["drop"] is not None else "-"
        lines.append(
            f"| {r['seed']} | {status} | {_fmt(r.get('skill'))} | {_fmt(r['metric_before'])} | "
            f"{_fmt(r['metric_after'])} | {drop} | {r['steps_completed']}/{r['steps']} | "
            f"{_fmt(r.get('samples_per_second'))} | {('`' + sha[:12] + '`') if sha else '-'} |"
        )
    if pictures:
        lines += ["", "## Real versus imagined", ""]
        for seed, picture in sorted(pictures.items()):
            lines += [f"Seed {seed}: {picture.caption}.", "", picture.markdown(f"seed {seed}"), ""]
    return "\n".join(lines) + "\n"
