"""Train the token world model (preset ``ci``) on bundled Pendulum; save, reload, check parity.

    python examples/train_token_model.py [--dataset pendulum] [--steps 300] [--seed 0]
                                         [--batch-size 16] [--seq-len 16] [--vocab-size 64]
                                         [--device auto] [--out DIR] [--test]

Prints the held-out next-token cross-entropy and perplexity before and after training, saves
the model with ``save_pretrained`` (default ``runs/examples/token`` in the repository; a
temporary directory with ``--test``), reloads it with ``worldflux.from_pretrained`` and exits
non-zero unless the reloaded model reproduces every held-out metric exactly. ``--vocab-size``
is the number of bins per observation dimension.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import (
    EVAL_BATCHES,
    HELD_OUT_FRACTION,
    SPLIT_SEED,
    TEST_EVAL_BATCHES,
    output_dir,
    parse_args,
    reload_and_evaluate,
)

import worldflux
from worldflux.data import load_bundled
from worldflux.training import ProgressPrinter, Trainer, TrainerConfig, seed_everything

FAMILY = "token"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """``_common``'s arguments plus the batch shape and the tokenizer's bins."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--batch-size", type=_positive, default=16)
    extra.add_argument("--seq-len", type=_positive, default=16)
    extra.add_argument("--vocab-size", type=_positive, default=None)
    known, rest = extra.parse_known_args(argv)
    description = __doc__ + (
        "\nalso: --batch-size N (default 16), --seq-len N (default 16, >= 2), "
        "--vocab-size N (bins per observation dimension, default: the ci preset's)"
    )
    args = parse_args(description, FAMILY, "pendulum", rest)
    return argparse.Namespace(**vars(args), **vars(known))


def _report(label: str, metrics: dict[str, float]) -> str:
    return (
        f"held-out cross-entropy {label}: {metrics['world_model_loss']:.4f} nats/token "
        f"(perplexity {metrics['perplexity']:.2f}, token accuracy {metrics['token_accuracy']:.1%})"
    )


def train_save_reload(args: argparse.Namespace, out: Path) -> int:
    started = time.perf_counter()
    data = load_bundled(args.dataset)
    train, held_out = data.split(HELD_OUT_FRACTION, seed=SPLIT_SEED)
    overrides = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    seed_everything(args.seed)
    model = worldflux.create_world_model(
        f"{FAMILY}:ci",
        obs_shape=data.spec.obs_shape,
        action_dim=data.spec.action_dim,
        **overrides,
    )
    config = TrainerConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        eval_batches=TEST_EVAL_BATCHES if args.test else EVAL_BATCHES,
        seed=args.seed,
        device=args.device,
    )
    progress = ProgressPrinter(every=max(1, args.steps // 5), label=f"[{FAMILY}] ")
    trainer = Trainer(model, train, config, eval_data=held_out, callbacks=[progress])
    print(
        f"{FAMILY}:ci ({model.config.vocab_size} bins per dimension) on {data.name}: "
        f"{train.num_episodes} training / {held_out.num_episodes} held-out episodes, "
        f"{args.steps} steps of batch {args.batch_size} x {args.seq_len}, seed {args.seed}, "
        f"device {trainer.device}"
    )
    before = trainer.evaluate()
    print(_report("before training", before))
    trainer.fit()
    after = trainer.evaluate()
    drop = 1 - after["world_model_loss"] / before["world_model_loss"]
    print(_report("after training ", after) + f", relative drop {drop:.1%}")

    saved = model.save_pretrained(out)
    print(f"saved with save_pretrained to {saved}")
    again = reload_and_evaluate(saved, train, held_out, config, after)
    if again is None:
        return 1
    print(_report("reloaded       ", again) + ", identical (exact)")
    print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with contextlib.ExitStack() as stack:
            return train_save_reload(args, output_dir(args, FAMILY, stack))
    except worldflux.WorldFluxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
