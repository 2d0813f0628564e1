"""The seed document's measurement commands, end to end on the bundled data or a data set file
(tiny budgets)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from quality.report import validate_report
from worldflux.data import TrajectoryDataset, load_bundled

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


def _renamed(data: TrajectoryDataset, name: str) -> TrajectoryDataset:
    return TrajectoryDataset(name=name, spec=data.spec, **data.columns())


def test_dataset_file_trains_every_family_on_it_and_names_it(tmp_path: Path) -> None:
    data = _renamed(load_bundled("pendulum"), "mypendulum")
    file = tmp_path / "f.safetensors"
    sha256 = data.save(file)
    out = tmp_path / "qg"
    args = ["--models", "tdmpc2", "--dataset-file", str(file), "--seeds", "0,1", "--steps", "20"]
    run = _run("scripts/measure_quality_gates.py", *args, "--repeat-steps", "0", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert f"data set 'mypendulum' from {file.resolve()}" in run.stdout
    assert data.digest in run.stdout
    assert sha256 in run.stdout

    report = json.loads((out / "tdmpc2.json").read_text())
    validate_report(report)
    assert report["datasets"] == [
        {"name": "mypendulum", "digest": data.digest, "file": str(file.resolve())}
    ]
    assert report["seeds"] == [0, 1]
    seed_runs = json.loads((out / "seed_runs.json").read_text())
    assert seed_runs["config"]["dataset_file"] == {
        "path": str(file.resolve()), "sha256": sha256, "name": "mypendulum", "digest": data.digest,
    }  # fmt: skip
    assert [(r["dataset"], r["dataset_digest"]) for r in seed_runs["runs"]] == [
        ("mypendulum", data.digest)
    ] * 2
    assert {(r["dataset_file"], r["dataset_file_sha256"]) for r in seed_runs["runs"]} == {
        (str(file.resolve()), sha256)
    }
    assert seed_runs["summary"]["tdmpc2"]["datasets"] == report["datasets"]

    # --append on the bundled data set does not take the file's runs for its own.
    bundled = _run(
        "scripts/measure_quality_gates.py", "--models", "tdmpc2", "--seeds", "0", "--steps", "20",
        "--repeat-steps", "0", "--out", str(out), "--append",
    )  # fmt: skip
    assert bundled.returncode == 0, bundled.stderr
    runs = json.loads((out / "seed_runs.json").read_text())["runs"]
    assert [r["dataset"] for r in runs] == ["mypendulum", "mypendulum", "pendulum"]
    assert json.loads((out / "tdmpc2.json").read_text())["datasets"][0]["name"] == "pendulum"

    # Different data under the same name cannot be appended to these runs.
    other = _renamed(load_bundled("cartpole"), "mypendulum")
    other.save(tmp_path / "other.safetensors")
    clash = _run(
        "scripts/measure_quality_gates.py", "--models", "tdmpc2", "--seeds", "0",
        "--dataset-file", str(tmp_path / "other.safetensors"), "--out", str(out), "--append",
    )  # fmt: skip
    assert clash.returncode == 2
    assert "holds runs on other data named 'mypendulum'" in clash.stderr


def test_dataset_file_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    def refused(file: Path, models: str = "tdmpc2") -> str:
        run = _run(
            "scripts/measure_quality_gates.py", "--models", models, "--dataset-file", str(file),
            "--out", str(tmp_path / "qg"),
        )  # fmt: skip
        assert run.returncode == 2
        assert "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "qg").exists()
        return run.stderr

    missing = refused(tmp_path / "missing.safetensors")
    assert "cannot read data set file" in missing
    assert "missing.safetensors" in missing
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a data set")
    assert "corrupt.safetensors" in refused(corrupt)
    vectors = tmp_path / "vectors.safetensors"
    load_bundled("pendulum").save(vectors)
    unfit = refused(vectors, models="tdmpc2,vjepa2")
    assert "does not fit vjepa2" in unfit
    assert "image observations" in unfit


def test_learning_curve_probes_while_training_and_refuses_bad_input(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """scripts/learning_curve.py (the diagnosis behind the pixel preset, docs/worldflux.md) on
    CartPole without its velocities: a probe every 2 steps and at the end, and clear errors."""
    run = _run(
        "scripts/learning_curve.py", "--model", "dreamerv3:ci", "--dataset", "cartpole",
        "--keep", "0,2", "--steps", "5", "--every", "2", "--override", "stoch=8",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "dreamerv3:ci on cartpole {'stoch': 8}"
    assert [line.split(" (")[0] for line in lines[1:]] == ["step 2", "step 4", "step 5"]
    assert all("| k15 " in line and "psnr" not in line for line in lines[1:])  # vectors
    script = _load_script("learning_curve")
    for args, message in [
        (["--keep", "0,9"], "needs indices into a vector observation"),
        (["--keep", "x"], "comma-separated indices"),
        (["--override", "stoch"], "overrides are key=value"),
        (["--override", "stoch=-1"], "stoch must be >= 1"),
        (["--dataset", "nosuch"], "--dataset 'nosuch'"),
        (["--lr-schedule", "cosine", "--lr-floor", "0"], "lr_floor must be in (0, 1]"),
    ]:
        base = {"--model": "dreamerv3:ci", "--dataset": "cartpole", "--steps": "1"}
        base.update(dict(zip(args[::2], args[1::2], strict=True)))
        with pytest.raises(SystemExit) as exit_info:
            script.main([x for kv in base.items() for x in kv])
        assert exit_info.value.code == 2, args
        assert message in capsys.readouterr().err, args


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
