"""Measure the release gates over seeds (seed document 004, "Measurement Commands").

    python scripts/measure_quality_gates.py --models dreamer,tdmpc2 --seeds 0,1,2,3,4 \
        --steps 5000 --device auto

Trains every family for every seed on its bundled data set (quality/policies/<family>.json) for
``--steps`` steps, by default the policy's own (``training.steps``, what the nightly trains),
plus two short same-seed re-runs for the repeatability gate, and writes
``reports/quality-gates/seed_runs.json`` after every run. ``--append`` resumes an interrupted
sweep: runs already in the file are not repeated. At the end it evaluates every gate and writes
one report per family (``<family>.json``, validated against the published schema, and
``<family>.md``) and a summary into ``seed_runs.json``. Exit status: 0 when measured (whatever
the verdict; ``--strict`` returns 1 when a family is blocked), 2 on bad arguments.

``--dataset-file PATH`` trains every family on that trajectory data set (a file written by
``worldflux.data.TrajectoryDataset.save``) instead of its bundled one; every run record names
the file and its sha256, the reports name the data set and its digest. A file that cannot be
read, or a data set that does not fit a family, exits 2 before anything trains.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import torch

from quality.report import write_report
from quality.seed_run import SeedRunSpec
from quality.sweep import (
    SEED_RUNS_VERSION,
    SweepConfig,
    check_data_fits,
    execute,
    family_report,
    load_seed_runs,
    resolve_families,
    save_seed_runs,
)
from worldflux import WorldFluxError, select_device
from worldflux.data import TrajectoryDataset, load_bundled

REPO_ROOT = Path(__file__).resolve().parents[1]


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be comma-separated integers: {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and non-empty: {text!r}")
    return seeds


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="dreamer,tdmpc2", help="families (aliases allowed)")
    parser.add_argument("--seeds", type=_seeds, default=(0, 1, 2, 3, 4))
    parser.add_argument(
        "--steps", type=int, default=None,
        help="training steps per seed (default: each family's policy, its nightly steps)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--repeat-steps", type=int, default=None,
        help="steps of each same-seed re-run (default: the policy's; 0 disables)",
    )  # fmt: skip
    parser.add_argument(
        "--dataset-file", type=Path, default=None, metavar="PATH",
        help="train every family on this data set file (TrajectoryDataset.save) "
        "instead of its bundled data set",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "quality-gates")
    parser.add_argument("--append", action="store_true", help="resume: keep runs already saved")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a family is blocked")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    try:
        args.families = resolve_families(args.models.split(","))
    except WorldFluxError as err:
        parser.error(str(err))
    return args


class DatasetFile:
    """The ``--dataset-file`` data set, loaded once, with where it came from."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise WorldFluxError(
                f"cannot read data set file {path}: {err.strerror or err}"
            ) from None
        self.sha256 = hashlib.sha256(raw).hexdigest()
        # Verified against the bytes hashed above: the file recorded is the file trained on.
        self.data = TrajectoryDataset.load(path, expected_sha256=self.sha256)

    def describe(self) -> str:
        return (
            f"data set {self.data.name!r} from {self.path} (digest {self.data.digest}, "
            f"file sha256 {self.sha256})"
        )


def _conflicting_runs(runs: list[dict[str, Any]], name: str, digest: str) -> set[str]:
    """Digests of saved runs on a data set called ``name`` whose data differ from ``digest``."""
    return {
        r["dataset_digest"]
        for r in runs
        if r.get("dataset") == name and r.get("dataset_digest") not in (None, digest)
    }


class Progress:
    """A progress bar on a terminal, one line per run otherwise (logs, CI)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()
        self.bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                "[progress.description]{task.description}", BarColumn(),
                "{task.completed}/{task.total}", TimeElapsedColumn(), TimeRemainingColumn(),
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("quality gates", total=total)

    def start(self, spec: SeedRunSpec, index: int) -> None:
        label = f"{spec.family} seed {spec.seed} ({spec.kind}, {spec.steps} steps)"
        if self.bar is not None:
            self.bar.update(self.task, description=label)
        else:
            elapsed = time.perf_counter() - self.started
            print(f"[{index + 1}/{self.total}] {label} ... ({elapsed:.0f}s)", file=sys.stderr)

    def done(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
        if record["status"] != "ok":
            print(f"  failed: {record['failure']['message']}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from quality.policy import load_policy
    from quality.sweep import planned_runs

    policies = {f: load_policy(f) for f in args.families}
    source: DatasetFile | None = None
    if args.dataset_file is not None:
        try:
            source = DatasetFile(args.dataset_file)
            check_data_fits(source.data, policies)
        except WorldFluxError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"training on {source.describe()}", file=sys.stderr)
    data = source.data if source is not None else None
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = str(select_device(args.device))
    path = args.out / "seed_runs.json"
    config = SweepConfig(args.families, args.seeds, args.steps, device, args.repeat_steps)
    document: dict[str, Any] = {
        "schema_version": SEED_RUNS_VERSION,
        "config": {
            "models": list(args.families),
            "seeds": list(args.seeds),
            "steps": args.steps,
            "device": device,
            "threads": torch.get_num_threads(),
            "repeat_steps": args.repeat_steps,
            "dataset_file": None
            if source is None
            else {
                "path": str(source.path),
                "sha256": source.sha256,
                "name": source.data.name,
                "digest": source.data.digest,
            },
        },
        "runs": [],
    }
    if args.append and path.exists():
        try:
            previous = load_seed_runs(path)
        except (ValueError, OSError) as err:
            print(f"error: cannot resume from {path}: {err}", file=sys.stderr)
            return 2
        # A resumed run is found by its data set's name: refuse different data under that name.
        if source is not None:
            expected = {source.data.name: source.data.digest}
        else:
            expected = {
                name: load_bundled(name).digest
                for name in {p.training["dataset"] for p in policies.values()}
                if any(r.get("dataset") == name for r in previous["runs"])
            }
        for name, digest in expected.items():
            other = _conflicting_runs(previous["runs"], name, digest)
            if other:
                print(
                    f"error: {path} holds runs on other data named {name!r} (digest "
                    f"{', '.join(sorted(other))}, this one {digest}); use another --out",
                    file=sys.stderr,
                )
                return 2
        document["runs"] = previous["runs"]
        print(f"resuming: {len(previous['runs'])} runs already in {path}", file=sys.stderr)

    total = len(planned_runs(config, policies, data))
    progress = Progress(total)

    def saved(record: dict[str, Any]) -> None:
        if source is not None:
            record["dataset_file"] = str(source.path)
            record["dataset_file_sha256"] = source.sha256
        document["runs"].append(record)
        document["updated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        save_seed_runs(path, document)
        progress.done(record)

    try:
        execute(
            config,
            existing=list(document["runs"]),
            checkpoint_root=args.out / "checkpoints",
            on_record=saved,
            on_start=lambda spec, index, _: progress.start(spec, index),
            data=data,
        )
    finally:
        progress.close()

    blocked = []
    document["summary"] = {}
    for family in args.families:
        report = family_report(family, document["runs"], steps=args.steps, data=data)
        report_path = write_report(report, args.out, stem=family)
        gates = report["gates"]
        document["summary"][family] = {
            "success_rate": report["success_rate"],
            "gates": {
                "common": {k: gates["common"][k] for k in ("pass", "ci_low", "ci_high")},
                "family_pass": gates["family_pass"],
                "release_pass": gates["release_pass"],
            },
            "failed_gates": report["failed_gates"],
            "report": str(report_path),
            "report_id": report["report_id"],
            "datasets": report["datasets"],
        }
        if not gates["release_pass"]:
            blocked.append(family)
        verdict = (
            "releasable"
            if gates["release_pass"]
            else "BLOCKED: " + ", ".join(report["failed_gates"])
        )
        print(
            f"{family}: success rate {report['success_rate']:.0%} "
            f"(bootstrap 95% CI [{gates['common']['ci_low']:.2f}, "
            f"{gates['common']['ci_high']:.2f}]), {verdict}; report {report_path}"
        )
    save_seed_runs(path, document)
    if source is not None:
        print(f"trained on {source.describe()}")
    print(f"seed runs: {path}")
    return 1 if args.strict and blocked else 0


if __name__ == "__main__":
    sys.exit(main())
