"""Gate reports: JSON Schema validation, writing, and a Markdown rendering for humans."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

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
    """Raise ``ReportError`` naming the first violation of the schema."""
    _no_nonfinite(report)
    validator = jsonschema.Draft202012Validator(
        report_schema(), format_checker=jsonschema.FormatChecker()
    )
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise ReportError(f"report violates {SCHEMA_PATH.name} at {where}: {first.message}")


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


def render_markdown(report: dict[str, Any]) -> str:
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
    lines += [
        "",
        "## Seeds",
        "",
        "| seed | status | metric before | metric after | drop | steps | samples/s | checkpoint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        status = r["status"] if not r["failure"] else f"failed: {r['failure'].get('message', '')}"
        status = status.replace("|", "\\|")
        sha = (r.get("checkpoint") or {}).get("sha256")
        drop = f"{r['drop']:.1%}" if r["drop"] is not None else "-"
        lines.append(
            f"| {r['seed']} | {status} | {_fmt(r['metric_before'])} | "
            f"{_fmt(r['metric_after'])} | {drop} | {r['steps_completed']}/{r['steps']} | "
            f"{_fmt(r.get('samples_per_second'))} | {('`' + sha[:12] + '`') if sha else '-'} |"
        )
    return "\n".join(lines) + "\n"
