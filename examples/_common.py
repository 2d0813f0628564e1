"""Shared by ``train_dreamer.py`` and ``train_tdmpc2.py``: argument parsing and the
train / evaluate / save / reload routine. Not an example on its own.

The routine: split a bundled data set by episodes, measure the held-out world-model loss,
train, measure it again, ``save_pretrained``, reload with ``worldflux.from_pretrained`` and
require the reloaded model's held-out loss to equal the trained model's exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import worldflux
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.training import ProgressPrinter, Trainer, TrainerConfig, seed_everything

# Defaults that do not depend on the working directory: the repository this file lives in.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STEPS = 300
TEST_STEPS = 25  # --test: a smoke run that still trains, evaluates, saves and reloads
BATCH_SIZE = 16
SEQ_LEN = 16
EVAL_BATCHES = 8
TEST_EVAL_BATCHES = 2
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0  # the same held-out episodes for every training seed


def parse_args(
    description: str, family: str, default_dataset: str, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        default=default_dataset,
        help=f"bundled data set to train on (default: {default_dataset}; see "
        "worldflux.data.list_bundled())",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps (default: {DEFAULT_STEPS}, or {TEST_STEPS} with --test)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
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
        default=None,
        help="directory for save_pretrained (default: a temporary directory with --test, "
        f"else {REPO_ROOT / 'runs' / 'examples' / family})",
    )
    parser.add_argument(
        "--test",
        action="store_true",
        help=f"smoke run: {TEST_STEPS} steps, {TEST_EVAL_BATCHES} evaluation batches, "
        "still trains, evaluates, saves and reloads",
    )
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = TEST_STEPS if args.test else DEFAULT_STEPS
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    return args


def create_model(family: str, data: TrajectoryDataset, seed: int) -> worldflux.WorldModel:
    """``<family>:ci`` sized for ``data``; the initial weights depend on ``seed``."""
    seed_everything(seed)
    return worldflux.create_world_model_for(f"{family}:ci", data.spec)


def train_save_reload(family: str, args: argparse.Namespace, out: Path) -> int:
    """The whole example; returns the process exit code."""
    started = time.perf_counter()
    data = load_bundled(args.dataset)
    train, held_out = data.split(HELD_OUT_FRACTION, seed=SPLIT_SEED)
    model = create_model(family, data, args.seed)
    metric = model.gate_metric
    config = TrainerConfig(
        steps=args.steps,
        batch_size=BATCH_SIZE,
        seq_len=SEQ_LEN,
        eval_batches=TEST_EVAL_BATCHES if args.test else EVAL_BATCHES,
        seed=args.seed,
        device=args.device,
    )
    progress = ProgressPrinter(every=max(1, args.steps // 5), label=f"[{family}] ")
    trainer = Trainer(model, train, config, eval_data=held_out, callbacks=[progress])
    print(
        f"{family}:ci on {data.name}: {train.num_episodes} training / {held_out.num_episodes} "
        f"held-out episodes, {args.steps} steps of batch {BATCH_SIZE} x {SEQ_LEN}, "
        f"seed {args.seed}, device {trainer.device}"
    )

    before = trainer.evaluate()[metric]
    print(f"held-out {metric} before training: {before:.4f}")
    trainer.fit()
    after_all = trainer.evaluate()
    after = after_all[metric]
    drop = (before - after) / before if before else 0.0
    print(f"held-out {metric} after training:  {after:.4f} (relative drop {drop:.1%})")

    saved = model.save_pretrained(out)
    print(f"saved with save_pretrained to {saved}")
    again_all = reload_and_evaluate(saved, train, held_out, config, after_all)
    if again_all is None:
        return 1
    again = again_all[metric]
    print(f"reloaded with from_pretrained: held-out {metric} {again:.4f}, identical (exact)")
    print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def reload_and_evaluate(
    saved: Path,
    train: TrajectoryDataset,
    held_out: TrajectoryDataset,
    config: TrainerConfig,
    trained: dict[str, float],
) -> dict[str, float] | None:
    """Reload ``saved`` with ``from_pretrained`` and evaluate it on the same held-out batches;
    return its metrics when they equal ``trained`` exactly, else print what differs and return
    None."""
    reloaded = worldflux.from_pretrained(saved, device=worldflux.select_device(config.device))
    again = Trainer(reloaded, train, config, eval_data=held_out).evaluate()
    if again == trained:
        return again
    differing = ", ".join(
        f"{key} {again.get(key)!r} (reloaded) != {trained.get(key)!r} (trained)"
        for key in sorted(trained.keys() | again.keys())
        if again.get(key) != trained.get(key)
    )
    print(
        f"error: the model reloaded from {saved} does not reproduce the trained model on the "
        f"held-out batches: {differing}; save_pretrained/from_pretrained lost or changed state",
        file=sys.stderr,
    )
    return None


def output_dir(args: argparse.Namespace, family: str, stack: contextlib.ExitStack) -> Path:
    """``--out`` when given; with ``--test`` a temporary folder removed when ``stack`` closes;
    otherwise runs/examples/<family>."""
    if args.out is not None:
        return Path(args.out)
    if args.test:
        prefix = f"worldflux-{family}-"
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    return REPO_ROOT / "runs" / "examples" / family


def run_example(
    family: str, default_dataset: str, description: str, argv: Sequence[str] | None = None
) -> int:
    """Parse arguments, run the routine, and turn library errors into a clear message."""
    args = parse_args(description, family, default_dataset, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with contextlib.ExitStack() as stack:
            return train_save_reload(family, args, output_dir(args, family, stack))
    except worldflux.WorldFluxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
