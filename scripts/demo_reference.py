"""Train both reference families on the bundled data and show what they learned (``make gates``).

    python scripts/demo_reference.py [--families dreamerv3,tdmpc2] [--seeds 0,1,2]
                                     [--steps 1000] [--device auto] [--out runs/demo]

DreamerV3 (``dreamerv3:ci``) trains on CartPole and TD-MPC2 (``tdmpc2:ci``) on Pendulum. For
every seed it prints the held-out world-model loss before and after training and its relative
drop (evidence only: predicting the data's mean already lowers a loss), the held-out prediction
skill over the best trivial baseline (``quality/skill.py``: mean or persistence, over 1, 5 and 10
imagined steps; what the release gates judge) and the wall time, and saves the trained model with
``save_pretrained`` under ``<out>/<family>/seed_<n>`` (default ``<out>``: ``runs/demo`` in the
repository). A summary table per family follows: how many seeds reach the gates' ``min_skill``,
the mean and smallest skill. The held-out episodes (20%, split seed 0) and evaluation batches are
the same for every seed, so the numbers compare exactly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import worldflux
from quality.policy import load_policy
from quality.skill import prediction_skill
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.training import Trainer, TrainerConfig, seed_everything

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"dreamerv3": "cartpole", "tdmpc2": "pendulum"}  # family -> bundled data set
BATCH_SIZE = 16
SEQ_LEN = 16
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0
HORIZONS = [1, 5, 10]


@dataclass(frozen=True)
class SeedResult:
    family: str
    seed: int
    before: float
    after: float
    skill: float
    baseline: str
    seconds: float
    saved: Path

    @property
    def drop(self) -> float:
        """Relative drop of the held-out loss (positive: it went down)."""
        return (self.before - self.after) / self.before if self.before else 0.0


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one seed")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return values


def family_list(text: str) -> list[str]:
    families = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            name = worldflux.canonical_family(part)  # accepts aliases such as "dreamer"
        except worldflux.ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if name not in DATASETS:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a reference family with a demo data set; choose from "
                f"{', '.join(DATASETS)}"
            )
        if name not in families:
            families.append(name)
    if not families:
        raise argparse.ArgumentTypeError("expected at least one family")
    return families


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--families",
        type=family_list,
        default=list(DATASETS),
        help=f"comma-separated families (default: {','.join(DATASETS)})",
    )
    parser.add_argument(
        "--seeds", type=int_list, default=[0, 1, 2], help="comma-separated seeds (default: 0,1,2)"
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps per seed")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ..."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1; the ci presets are so small that more threads "
        "cost more than they save; 0 keeps torch's default)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "runs" / "demo",
        help="where trained models are saved, as <out>/<family>/seed_<n> "
        "(default: runs/demo in the repository)",
    )
    args = parser.parse_args(argv)
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    return args


def train_seed(
    family: str,
    seed: int,
    train: TrajectoryDataset,
    held_out: TrajectoryDataset,
    args: argparse.Namespace,
) -> SeedResult:
    started = time.perf_counter()
    seed_everything(seed)  # the initial weights depend on the seed too
    model = worldflux.create_world_model_for(f"{family}:ci", train.spec)
    config = TrainerConfig(
        steps=args.steps, batch_size=BATCH_SIZE, seq_len=SEQ_LEN, seed=seed, device=args.device
    )
    trainer = Trainer(model, train, config, eval_data=held_out)
    before = trainer.evaluate()[model.gate_metric]
    trainer.fit()
    after = trainer.evaluate()[model.gate_metric]
    measured = prediction_skill(model, train, held_out, HORIZONS)
    baselines = sorted({f["baseline"] for f in measured["horizons"].values()})
    saved = model.save_pretrained(args.out / family / f"seed_{seed}")
    seconds = time.perf_counter() - started
    return SeedResult(
        family, seed, before, after, measured["skill"], "/".join(baselines), seconds, saved
    )


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def summary(results: dict[str, list[SeedResult]]) -> str:
    header = [
        "family",
        "data set",
        "seeds",
        "skill >= min_skill",
        "mean skill",
        "min skill",
        "mean drop",
        "mean before",
        "mean after",
        "wall s",
    ]
    rows = []
    for family, runs in results.items():
        skills = [r.skill for r in runs]
        bar = load_policy(family)["min_skill"]
        passed = sum(s >= bar for s in skills)
        rows.append(
            [
                family,
                DATASETS[family],
                str(len(runs)),
                f"{passed}/{len(runs)} (>= {bar})",
                f"{statistics.fmean(skills):.3f}",
                f"{min(skills):.3f}",
                f"{statistics.fmean(r.drop for r in runs):.1%}",
                f"{statistics.fmean(r.before for r in runs):.4f}",
                f"{statistics.fmean(r.after for r in runs):.4f}",
                f"{sum(r.seconds for r in runs):.1f}",
            ]
        )
    return format_table(header, rows)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    results: dict[str, list[SeedResult]] = {}
    for family in args.families:
        data = load_bundled(DATASETS[family])
        train, held_out = data.split(HELD_OUT_FRACTION, seed=SPLIT_SEED)
        print(
            f"{family}:ci on {data.name}: {train.num_episodes} training / "
            f"{held_out.num_episodes} held-out episodes; {args.steps} steps of batch "
            f"{BATCH_SIZE} x {SEQ_LEN} per seed; device {worldflux.select_device(args.device)}, "
            f"{torch.get_num_threads()} CPU thread(s)",
            flush=True,
        )
        results[family] = []
        for seed in args.seeds:
            result = train_seed(family, seed, train, held_out, args)
            results[family].append(result)
            print(
                f"  seed {seed}: held-out world-model loss {result.before:.4f} -> "
                f"{result.after:.4f} (drop {result.drop:6.1%}), skill {result.skill:6.3f} over "
                f"{result.baseline}, {result.seconds:5.1f}s, "
                f"saved to {result.saved}",
                flush=True,
            )
    print()
    print(summary(results))
    print(f"\ntotal wall time {time.perf_counter() - started:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    except worldflux.WorldFluxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
