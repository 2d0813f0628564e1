"""Train the diffusion world model (preset ``ci``) on the bundled data set whose shapes match;
save, reload and check exact parity.

    python examples/train_diffusion_model.py [--steps 300] [--batch-size 16] [--obs-dim 4]
                                             [--action-dim 2] [--seed 0] [--device auto]
                                             [--out DIR]

``--obs-dim`` / ``--action-dim`` pick the bundled data set with those shapes (4 / 2: CartPole,
3 / 1: Pendulum). There is no fallback to random data: a model trained on noise would show a
"drop" that means nothing, so shapes no bundled data set has are an error listing the shapes
that exist. Prints the held-out denoising error (the gate metric: epsilon MSE at fixed
timesteps with fixed noise) before and after training, saves with ``save_pretrained``, reloads
with ``worldflux.from_pretrained`` and exits non-zero unless the reloaded model reproduces the
trained model's held-out evaluation exactly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import (
    DEFAULT_STEPS,
    EVAL_BATCHES,
    HELD_OUT_FRACTION,
    SEQ_LEN,
    SPLIT_SEED,
    create_model,
    reload_and_evaluate,
)

import worldflux
from worldflux.data import list_bundled, load_bundled
from worldflux.training import ProgressPrinter, Trainer, TrainerConfig

FAMILY = "diffusion"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps")
    parser.add_argument("--batch-size", type=int, default=16, help="segments per batch")
    parser.add_argument("--obs-dim", type=int, default=4, help="observation size (default 4)")
    parser.add_argument("--action-dim", type=int, default=2, help="action size (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--out", type=Path, default=None, help="save directory (default: temp)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "obs_dim", "action_dim"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            parser.error(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    return args


def matching_dataset(obs_dim: int, action_dim: int) -> str | None:
    for entry in list_bundled():
        if entry["obs_shape"] == [obs_dim] and entry["action_dim"] == action_dim:
            return str(entry["name"])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the ci network is tiny: more threads cost more than they save
    name = matching_dataset(args.obs_dim, args.action_dim)
    if name is None:
        shapes = ", ".join(
            f"{e['name']}: --obs-dim {e['obs_shape'][0]} --action-dim {e['action_dim']}"
            for e in list_bundled()
        )
        print(
            f"error: no bundled data set has obs-dim {args.obs_dim} and action-dim "
            f"{args.action_dim} (this example never trains on noise); available: {shapes}",
            file=sys.stderr,
        )
        return 2
    data = load_bundled(name)
    train, held_out = data.split(HELD_OUT_FRACTION, seed=SPLIT_SEED)
    model = create_model(FAMILY, data, args.seed)
    config = TrainerConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=SEQ_LEN,
        eval_batches=EVAL_BATCHES,
        seed=args.seed,
        device=args.device,
    )
    progress = ProgressPrinter(every=max(1, args.steps // 5), label=f"[{FAMILY}] ")
    trainer = Trainer(model, train, config, eval_data=held_out, callbacks=[progress])
    print(
        f"{FAMILY}:ci on {name}: {args.steps} steps of batch {args.batch_size} x {SEQ_LEN}, "
        f"seed {args.seed}, device {trainer.device}"
    )
    metric = model.gate_metric
    before = trainer.evaluate()[metric]
    print(f"held-out denoising error ({metric}) before training: {before:.4f}")
    trainer.fit()
    after_all = trainer.evaluate()
    after = after_all[metric]
    print(
        f"held-out denoising error after training:  {after:.4f} ({(before - after) / before:.1%})"
    )

    with tempfile.TemporaryDirectory(prefix="worldflux-diffusion-") as tmp:
        saved = model.save_pretrained(args.out or Path(tmp))
        again_all = reload_and_evaluate(saved, train, held_out, config, after_all)
        if again_all is None:
            return 1
    print(f"saved to {saved} and reloaded: held-out {metric} {again_all[metric]:.4f}, exact")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except worldflux.WorldFluxError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
