"""The gate registry is the one list of gates: the report schema's gate names, ``gate_names``
and every evaluation agree with it, and a gate a policy requires can never be waved through as
not applicable."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from typing import Any

import jsonschema
import pytest

import worldflux
from quality.evaluate import build_report, evaluate_gates, gate_names
from quality.gates.family import kind_of
from quality.gates.registry import GATES, UNKNOWN_KIND, Evidence, evaluate, expected_names
from quality.gates.result import GateResult, compare
from quality.policy import PolicyError, load_policy
from quality.report import ReportError, report_schema, validate_report
from tests.quality.records import (
    failed_record,
    frame_figures,
    repeat_pair,
    seed_record,
    skill_probe,
)

MATURITY = {m["family"]: m["maturity"] for m in worldflux.list_models()}
FAMILIES = sorted(MATURITY)
KINDS = (None, "reference", "token", "diffusion", "jepa", "vjepa2", "skeleton", "nonsense")


def _gate_name_schema() -> dict[str, Any]:
    return report_schema()["$defs"]["gate_name"]


def _is_gate_name(name: str) -> bool:
    schema = {"$defs": report_schema()["$defs"], "$ref": "#/$defs/gate_name"}
    return jsonschema.Draft202012Validator(schema).is_valid(name)


def test_the_schema_names_exactly_the_registry_gates() -> None:
    branches = _gate_name_schema()["anyOf"]
    (enum,) = [b["enum"] for b in branches if "enum" in b]
    patterns = [b["pattern"] for b in branches if "pattern" in b]
    fixed = [g.name for g in GATES if g.per_key is None]
    assert len(set(fixed)) == len(fixed), "a gate is declared twice"
    assert enum == [*fixed, UNKNOWN_KIND]  # same names, same (report) order

    # Every per-key gate (one per policy key) has a pattern, and every pattern a gate.
    per_key = [g for g in GATES if g.per_key is not None]
    assert len(patterns) == len(per_key)
    for spec in per_key:
        matching = [p for p in patterns if re.fullmatch(p, spec.name.format(k="7"))]
        assert len(matching) == 1, spec.name
        for k in ("1", "5", "10", "250"):
            assert _is_gate_name(spec.name.format(k=k))
        assert not _is_gate_name(spec.name.format(k="x"))

    # Whatever the registry can produce for any policy and kind is a schema gate name.
    for family, kind in itertools.product(FAMILIES, KINDS):
        for name in expected_names(load_policy(family), kind):
            assert _is_gate_name(name), name
    # And names the registry does not have (schema 1's, or misspelt) are not.
    for stale in (
        "prediction.open_loop_nmse_5",
        "family.reference.loss_drop",
        "family.reference.seed_success",
        "family.token.cross_entropy_trend",
        "common.finite_run",
        "prediction.open_loop_skill_",
    ):
        assert not _is_gate_name(stale), stale


def _healthy(family: str, n: int = 3) -> list[dict[str, Any]]:
    kind = kind_of(load_policy(family), MATURITY[family])
    assert kind is not None
    return [seed_record(s, family, kind=kind) for s in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_gate_names_are_the_names_of_every_evaluation(family: str) -> None:
    policy = load_policy(family)
    names = gate_names(family)
    assert names == expected_names(policy, kind_of(policy, MATURITY[family]))
    assert len(set(names)) == len(names)
    assert UNKNOWN_KIND not in names  # every family's policy sets a kind (or it is a skeleton)
    assert set(policy.required_gates) <= set(names)
    horizons = [f"prediction.open_loop_skill_{k}" for k in sorted(policy["min_skill_at"], key=int)]
    assert [n for n in names if n.startswith("prediction.open_loop_skill_")] == horizons
    evidences = {
        "healthy": (_healthy(family), repeat_pair()),
        "all failed": ([failed_record(0, family), failed_record(1, family)], None),
        "mixed": ([*_healthy(family, 2), failed_record(2, family)], [failed_record(0, family)]),
    }
    for what, (runs, repeats) in evidences.items():
        for shape in ((3,), (1, 32, 32)):
            gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=shape)
            assert [g.name for g in gates] == names, (what, shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_gate_result_is_consistent_with_its_own_numbers(family: str) -> None:
    """What check_integrity relies on: a pass always carries a value that meets its threshold,
    and a failure never carries one that does (else flipping its status could not be caught)."""
    policy = load_policy(family)
    slow = _healthy(family, 5)
    for r in slow:  # frames through a decoder: the frame gates apply; two seeds fail them
        figures = frame_figures(psnr=15.0 if r["seed"] == 1 else 35.0)
        figures["ssim_persistence"] = 0.95 if r["seed"] == 2 else 0.7  # beats no change? no
        r["probes"]["skill"] = skill_probe(space="decoder", frames=figures)
    slow[0]["samples_per_second"] = 50.0
    slow[1]["probes"]["latency"] |= {"p50_ms": 60.0}
    slow[2]["drop"] = 0.01
    slow[3]["stored"] = {"error": "OSError: gone"}
    slow[4]["probes"]["skill"]["horizons"]["10"]["skill"] = 0.1
    statuses = set()
    for runs, repeats in (
        (_healthy(family, 5), repeat_pair()),
        (slow, repeat_pair(same=False)),
        ([failed_record(0, family), *_healthy(family, 2)], None),
    ):
        gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(1, 32, 32))
        for g in gates:
            statuses.add(g.status)
            numbers = None
            if g.value is not None and g.threshold is not None and g.comparison:
                numbers = (g.value, g.threshold)
            if g.status == "pass":
                assert numbers is not None, g
                assert compare(*numbers, g.comparison), g
            elif g.status == "fail" and numbers is not None:
                assert not compare(*numbers, g.comparison), g
        validate_report(build_report(runs, policy, gates, repeats=repeats))
    assert statuses == {"pass", "fail", "skipped", "not_applicable"}


def _no_planner(family: str) -> list[dict[str, Any]]:
    runs = _healthy(family, 3)
    for r in runs:
        r["probes"]["planner"] = {"applicable": False}
    return runs


def test_a_required_gate_that_is_not_applicable_fails() -> None:
    def judged(family: str) -> tuple[dict[str, GateResult], dict[str, Any]]:
        policy, runs, repeats = load_policy(family), _no_planner(family), repeat_pair()
        gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(3,))
        report = build_report(runs, policy, gates, repeats=repeats)
        validate_report(report)
        return {g.name: g for g in gates}, report

    assert "planner.boundary" in load_policy("tdmpc2").required_gates
    gates, report = judged("tdmpc2")
    planner = gates["planner.boundary"]
    assert planner.status == "fail"
    assert planner.blocks
    assert planner.reason == (
        "required by the tdmpc2 policy but not applicable: the family does not predict rewards"
    )
    # Nothing else changed: every other gate still passes (frames: vector observations).
    frame_gates = {
        "prediction.psnr_5", "prediction.psnr_10", "prediction.ssim_5", "prediction.ssim_10",
        "prediction.temporal_consistency",
    }  # fmt: skip
    assert {n for n, g in gates.items() if not g.passed} == {"planner.boundary", *frame_gates}
    assert {gates[n].status for n in frame_gates} == {"not_applicable"}
    assert report["failed_gates"] == ["planner.boundary"]
    assert not report["gates"]["release_pass"]
    assert report["gates"]["family_pass"]  # the planner is not a family gate

    # The requirement is pinned by the policy digest: dropping it from a report is refused.
    edited = copy.deepcopy(report)
    edited["policy"]["required_gates"] = []
    with pytest.raises(ReportError, match="edited after evaluation"):
        validate_report(edited)

    # Where the policy does not require it, not applicable does not block.
    assert "planner.boundary" not in load_policy("jepa").required_gates
    gates, report = judged("jepa")
    assert gates["planner.boundary"].status == "not_applicable"
    assert not gates["planner.boundary"].blocks
    assert report["gates"]["release_pass"]


def test_any_required_gate_is_enforced_and_an_unknown_requirement_is_refused() -> None:
    base = load_policy("tdmpc2")
    psnr_required = dataclasses.replace(base, required_gates=("prediction.psnr_5",))
    runs = _healthy("tdmpc2")
    psnr = next(g for g in evaluate_gates(runs, psnr_required, obs_shape=(3,))
                if g.name == "prediction.psnr_5")  # fmt: skip
    assert psnr.status == "fail"
    assert "not applicable: observations are vectors (3,), not images" in psnr.reason

    for name in ("planner.boundry", "family.jepa.embedding_spread"):  # misspelt; another kind's
        policy = dataclasses.replace(base, required_gates=(name,))
        with pytest.raises(PolicyError, match=re.escape(f"requires gates ['{name}']")):
            evaluate_gates(runs, policy, obs_shape=(3,))


def test_a_policy_without_a_known_kind_fails_family_unknown() -> None:
    policy = load_policy("no_such_family")
    assert policy.kind is None
    runs = [seed_record(s, "no_such_family") for s in range(3)]
    evidence = Evidence("no_such_family", None, runs, None, policy, (3,))
    results = evaluate(evidence)
    assert [r.name for r in results] == expected_names(policy, None)
    assert results[-1].name == UNKNOWN_KIND
    assert results[-1].status == "fail"
    assert not any(r.group == "family" for r in results[:-1])


def test_the_gate_docs_name_every_registered_gate() -> None:
    """docs/quality-gates.md explains every gate of the registry: the common gates by name, the
    per-horizon gates by their pattern with the default horizons, each family gate by its suffix
    in its kind's row."""
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "quality-gates.md").read_text()
    default = load_policy("no_such_family")  # the defaults alone
    for spec in GATES:
        if spec.kinds is None:
            keys = sorted(default[spec.per_key], key=int) if spec.per_key else []
            shown = spec.name.replace("{k}", "{" + ",".join(keys) + "}")
            assert f"`{shown}`" in docs, f"{spec.name} is not documented"
        else:
            suffix = spec.name.rsplit(".", 1)[-1]
            kind = spec.name.split(".")[1]
            rows = [line for line in docs.splitlines() if line.startswith(f"| {kind}")]
            assert any(f"`{suffix}`" in row for row in rows), f"{spec.name} is not documented"
