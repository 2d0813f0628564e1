"""Train JEPA (preset ``ci``) on real CartPole data of any observation size; save, reload and
check exact parity.

    python examples/train_jepa.py [--steps 300] [--batch-size 16] [--obs-dim 4] [--seed 0]
                                  [--out DIR]

``--obs-dim N`` (1..16) builds N-dimensional observations from the bundled CartPole states:
the first N of the 16 features

    x, x_dot, theta, theta_dot,                          the true state (N = 4: the data as is)
    x^2, x_dot^2, theta^2, theta_dot^2,                  their squares
    sin x, sin x_dot, sin theta, sin theta_dot,          their sines
    cos x, cos x_dot, cos theta, cos theta_dot           their cosines

so every size still trains on recorded dynamics, never on noise. Prints the held-out
``world_model_loss`` (1 - cosine to the EMA target's embeddings) before and after training with
the embedding spread (``embedding_std``: 1 for isotropic unit vectors, 0 when collapsed), saves
with ``save_pretrained`` (a temporary directory unless ``--out``), reloads with
``worldflux.from_pretrained`` and exits non-zero unless the reloaded model reproduces every
held-out metric exactly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import reload_and_evaluate

import worldflux
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.data.dataset import DatasetSpec
from worldflux.training import Trainer, TrainerConfig, seed_everything

NUM_FEATURES = 16
SEQ_LEN = 16
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0


def cartpole_features(obs_dim: int) -> TrajectoryDataset:
    """Bundled CartPole with observations replaced by the first ``obs_dim`` features above."""
    data = load_bundled("cartpole")
    state = data.columns()["observation"].astype(np.float64)
    bank = np.concatenate([state, state**2, np.sin(state), np.cos(state)], axis=1)
    columns = dict(data.columns())
    columns["observation"] = bank[:, :obs_dim].astype(np.float32)
    spec = DatasetSpec(
        obs_shape=(obs_dim,),
        action_dim=data.spec.action_dim,
        discrete=data.spec.discrete,
        action_low=data.spec.action_low,
        action_high=data.spec.action_high,
    )
    return TrajectoryDataset(name=f"cartpole_features{obs_dim}", spec=spec, **columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--obs-dim", type=int, default=4, help="1..16 CartPole features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="save_pretrained directory")
    args = parser.parse_args(argv)
    if not 1 <= args.obs_dim <= NUM_FEATURES:
        parser.error(f"--obs-dim must be in 1..{NUM_FEATURES}, got {args.obs_dim}")
    if args.steps < 0 or args.batch_size < 1:
        parser.error("--steps must be >= 0 and --batch-size >= 1")
    torch.set_num_threads(1)  # the ci model is tiny: more threads cost more than they save

    data = cartpole_features(args.obs_dim)
    train, held_out = data.split(HELD_OUT_FRACTION, seed=SPLIT_SEED)
    seed_everything(args.seed)
    model = worldflux.create_world_model(
        "jepa:ci", obs_shape=data.spec.obs_shape, action_dim=data.spec.action_dim
    )
    config = TrainerConfig(
        steps=args.steps, batch_size=args.batch_size, seq_len=SEQ_LEN, seed=args.seed, device="cpu"
    )
    trainer = Trainer(model, train, config, eval_data=held_out)
    print(
        f"jepa:ci on {data.name} (obs {data.spec.obs_shape}): {train.num_episodes} training / "
        f"{held_out.num_episodes} held-out episodes, {args.steps} steps of batch "
        f"{args.batch_size} x {SEQ_LEN}"
    )
    before = trainer.evaluate()
    trainer.fit()
    after = trainer.evaluate()
    for name, values in (("before", before), ("after", after)):
        print(
            f"held-out world_model_loss {name} training: {values['world_model_loss']:.4f} "
            f"(no-change baseline {values['no_change_baseline']:.4f}), "
            f"embedding_std {values['embedding_std']:.3f}"
        )

    with tempfile.TemporaryDirectory(prefix="worldflux-jepa-") as tmp:
        saved = model.save_pretrained(args.out if args.out is not None else Path(tmp))
        again = reload_and_evaluate(saved, train, held_out, config, after)
    if again is None:
        return 1
    print(f"saved to {saved} and reloaded: held-out metrics identical (exact)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
