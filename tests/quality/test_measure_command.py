"""The seed document's measurement commands, end to end on the bundled data (tiny budgets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from quality.report import validate_report

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_measure_then_estimate(tmp_path: Path) -> None:
    out = tmp_path / "qg"
    common = ["--seeds", "0,1", "--steps", "40", "--repeat-steps", "10", "--out", str(out)]
    first = _run("scripts/measure_quality_gates.py", "--models", "dreamer", *common)
    assert first.returncode == 0, first.stderr
    seed_runs = json.loads((out / "seed_runs.json").read_text())
    assert [(r["kind"], r["family"], r["seed"]) for r in seed_runs["runs"]] == [
        ("seed", "dreamerv3", 0), ("seed", "dreamerv3", 1),
        ("repeat", "dreamerv3", 0), ("repeat", "dreamerv3", 0),
    ]  # fmt: skip
    summary = seed_runs["summary"]["dreamerv3"]
    assert {"success_rate", "gates", "report"} <= set(summary)
    assert {"pass", "ci_low", "ci_high"} == set(summary["gates"]["common"])
    report = json.loads((out / "dreamerv3.json").read_text())
    validate_report(report)
    assert (out / "dreamerv3.md").read_text().startswith("# Gate report: dreamerv3")

    # --append resumes: finished runs are kept, only the new family trains.
    second = _run(
        "scripts/measure_quality_gates.py", "--models", "dreamer,tdmpc2", "--append", *common
    )
    assert second.returncode == 0, second.stderr
    assert "resuming: 4 runs" in second.stderr
    again = json.loads((out / "seed_runs.json").read_text())
    assert again["runs"][:4] == seed_runs["runs"]
    assert [r["family"] for r in again["runs"][4:]] == ["tdmpc2"] * 4
    validate_report(json.loads((out / "tdmpc2.json").read_text()))

    estimate = _run(
        "scripts/estimate_quality_gate_runtime.py", "--input", str(out / "seed_runs.json"),
        "--scenarios", "5x5000,7x10000",
    )  # fmt: skip
    assert estimate.returncode == 0, estimate.stderr
    assert "5x5000" in estimate.stdout
    assert "7x10000" in estimate.stdout


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    bad = _run("scripts/measure_quality_gates.py", "--models", "dreamr", "--out", str(tmp_path))
    assert bad.returncode == 2
    assert "did you mean 'dreamer'" in bad.stderr
