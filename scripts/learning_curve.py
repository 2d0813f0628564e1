"""Held-out skill over training: one model, probed every ``--every`` steps.

    python scripts/learning_curve.py --model dreamerv3_pixels:xxs --dataset cartpole_pixels \
        --steps 5000 --every 1000
    python scripts/learning_curve.py --model dreamerv3:ci --dataset cartpole --keep 0,2 \
        --override stoch=8 --override classes=8 --override hidden=128

Trains on the training split of a bundled data set (the gates' split, ``quality.seed_run.split``)
and prints, at each probe, the mean training loss terms since the last probe, then the skill
probe the gates use (``quality.skill.prediction_skill``, policy-free: horizons 1, 5, 10, 15):
segment skill, reconstruction and, per horizon, skill and, for decoded frames, PSNR and SSIM with
persistence's beside them. ``--keep 0,2`` keeps only those observation dimensions of a vector
data set (CartPole without its velocities: a model must infer them from consecutive steps, as
from frames). ``--override key=value`` changes one model hyper-parameter of the preset. A
diagnostic, not a gate: one seed, one probe batch of 32 held-out segments per point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

import numpy as np
import torch

import worldflux
from quality.seed_run import split
from quality.skill import prediction_skill
from worldflux import WorldFluxError
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.training import LR_SCHEDULES, Trainer, TrainerConfig

HORIZONS = [1, 5, 10, 15]
LOSS_TERMS = ("loss", "reconstruction", "kl_raw")


def _override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"overrides are key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not a number or JSON") from None


def keep_dimensions(data: TrajectoryDataset, keep: list[int]) -> TrajectoryDataset:
    """The data set with only observation dimensions ``keep`` (vector observations only)."""
    if len(data.spec.obs_shape) != 1 or not all(0 <= k < data.spec.obs_shape[0] for k in keep):
        raise ValueError(
            f"--keep {keep}: needs indices into a vector observation, {data.name} has shape "
            f"{data.spec.obs_shape}"
        )
    columns = data.columns()
    spec = dataclasses.replace(data.spec, obs_shape=(len(keep),))
    observation = np.ascontiguousarray(columns.pop("observation")[:, keep])
    return TrajectoryDataset(name=data.name, spec=spec, observation=observation, **columns)


def _probe_line(figures: dict[str, Any]) -> str:
    parts = [f"skill {figures['skill']:.3f}", f"recon {figures['reconstruction']:.4f}"]
    for k, h in figures["horizons"].items():
        text = f"k{k} {h['skill']:+.2f}"
        if "psnr" in h:
            text += (
                f" psnr {h['psnr']:.1f}/{h['psnr_persistence']:.1f}"
                f" ssim {h['ssim']:.3f}/{h['ssim_persistence']:.3f}"
            )
        parts.append(text)
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="family:preset")
    parser.add_argument("--dataset", required=True, help="a bundled data set")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--lr-floor", type=float, default=0.1, help="cosine: final lr / lr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="observation dimensions to keep, e.g. 0,2")
    parser.add_argument("--override", type=_override, action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        parser.error("--steps and --every must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        data = load_bundled(args.dataset)
    except WorldFluxError as err:
        parser.error(f"--dataset {args.dataset!r}: {err}")
    if args.keep is not None:
        try:
            keep = [int(k) for k in args.keep.split(",")]
        except ValueError:
            parser.error(f"--keep takes comma-separated indices, e.g. 0,2; got {args.keep!r}")
        try:
            data = keep_dimensions(data, keep)
        except ValueError as err:
            parser.error(str(err))
    train, held_out = split(data)
    torch.manual_seed(args.seed)
    try:
        model = worldflux.create_world_model_for(args.model, data.spec, **dict(args.override))
    except WorldFluxError as err:
        parser.error(f"--model {args.model!r} with {dict(args.override)}: {err}")
    config = TrainerConfig(
        steps=args.steps,
        batch_size=16,
        seq_len=16,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        lr_floor=args.lr_floor,
        seed=args.seed,
        eval_batches=1,
    )
    try:
        config.validate()
    except WorldFluxError as err:
        parser.error(str(err))
    trainer = Trainer(model, train, config)
    print(f"{args.model} on {args.dataset} {dict(args.override)}", flush=True)
    sums: dict[str, float] = {}
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        for key, value in trainer.train_step().items():
            if key in LOSS_TERMS:
                sums[key] = sums.get(key, 0.0) + value
        if step % args.every == 0 or step == args.steps:
            count = args.every if step % args.every == 0 else step % args.every
            losses = " ".join(f"{k} {v / count:.3g}" for k, v in sums.items())
            figures = prediction_skill(model, train, held_out, HORIZONS)
            print(
                f"step {step} ({time.perf_counter() - started:.0f} s) [{losses}] "
                + _probe_line(figures),
                flush=True,
            )
            sums = {}
    return 0


if __name__ == "__main__":
    sys.exit(main())
