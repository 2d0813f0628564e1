"""Plan actions with the cross-entropy method in a world model's imagination.

    python examples/plan_cem.py --horizon 3 --action-dim 2
    python examples/plan_cem.py [--family tdmpc2|dreamerv3] [--horizon 5] [--obs-dim 3]
                                [--action-dim 1] [--discrete] [--train-steps 0] [--seed 0]
                                [--device auto]

Builds ``<family>:ci`` for observations of size ``--obs-dim`` and ``--action-dim`` actions and
runs ``CEMPlanner`` from one encoded start observation. When the shapes match a bundled data
set (Pendulum: ``--obs-dim 3 --action-dim 1``; CartPole: ``--obs-dim 4 --action-dim 2
--discrete``) the model first trains on it for ``--train-steps`` steps and the start
observation comes from its held-out episodes; otherwise the model stays untrained, starts from
a zero observation, and the plan only demonstrates the contract. The planner touches the model
only through the capability contract (``rollout`` with predicted rewards), so either family
plans with the same code. Exits non-zero unless the payload has the requested horizon and
shape.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

import worldflux
from worldflux.data import TrajectoryDataset, list_bundled, load_bundled
from worldflux.planners import CEMPlanner
from worldflux.training import ProgressPrinter, Trainer, TrainerConfig, seed_everything

FAMILIES = ("tdmpc2", "dreamerv3")
BATCH_SIZE = 16
SEQ_LEN = 16


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=FAMILIES, default="tdmpc2")
    parser.add_argument("--horizon", type=positive_int, default=5, help="plan length")
    parser.add_argument("--obs-dim", type=positive_int, default=3, help="observation size")
    parser.add_argument("--action-dim", type=positive_int, default=1, help="action size")
    parser.add_argument(
        "--discrete", action="store_true", help="discrete actions (one-hot rows in the plan)"
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="training steps on the matching bundled data set (default: 0; ignored when no "
        "data set matches the shapes)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model, training and planner seed")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ..."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1; 0 keeps torch's default)",
    )
    args = parser.parse_args(argv)
    if args.train_steps < 0:
        parser.error(f"--train-steps must be >= 0, got {args.train_steps}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    return args


def matching_dataset(obs_dim: int, action_dim: int, discrete: bool) -> str | None:
    """The first bundled data set whose observations and actions have these shapes."""
    for entry in list_bundled():
        if (
            list(entry["obs_shape"]) == [obs_dim]
            and entry["action_dim"] == action_dim
            and entry["discrete"] == discrete
        ):
            return str(entry["name"])
    return None


def train_briefly(
    model: worldflux.WorldModel, data: TrajectoryDataset, args: argparse.Namespace
) -> TrajectoryDataset:
    """Train on ``data`` for ``--train-steps`` steps; return the held-out episodes."""
    train, held_out = data.split(0.2, seed=0)
    config = TrainerConfig(
        steps=args.train_steps,
        batch_size=BATCH_SIZE,
        seq_len=SEQ_LEN,
        seed=args.seed,
        device=args.device,
    )
    if args.train_steps:
        printer = ProgressPrinter(every=max(1, args.train_steps // 5), label="[train] ")
        trainer = Trainer(model, train, config, eval_data=held_out, callbacks=[printer])
        metric = model.gate_metric
        before = trainer.evaluate()[metric]
        trainer.fit()
        after = trainer.evaluate()[metric]
        print(
            f"trained {args.train_steps} steps on {data.name}: held-out {metric} "
            f"{before:.4f} -> {after:.4f}"
        )
    return held_out


def plan(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.family == "tdmpc2" and args.discrete:
        overrides["discrete_actions"] = True
    seed_everything(args.seed)
    model = worldflux.create_world_model(
        f"{args.family}:ci", obs_shape=(args.obs_dim,), action_dim=args.action_dim, **overrides
    )
    model.to(worldflux.select_device(args.device))
    kind = "discrete" if args.discrete else "continuous"
    print(
        f"model {args.family}:ci: obs_shape ({args.obs_dim},), {args.action_dim} {kind} "
        f"action(s), device {model.device}"
    )

    name = matching_dataset(args.obs_dim, args.action_dim, args.discrete)
    data: TrajectoryDataset | None = None
    if name is None:
        print(
            "note: no bundled data set has these shapes (pendulum: --obs-dim 3 --action-dim 1; "
            "cartpole: --obs-dim 4 --action-dim 2 --discrete), so the model is UNTRAINED and "
            "starts from a zero observation; the plan only demonstrates the contract"
        )
        if args.train_steps:
            print(f"note: --train-steps {args.train_steps} ignored (nothing to train on)")
        start_obs = torch.zeros(1, args.obs_dim)
    else:
        data = load_bundled(name)
        held_out = train_briefly(model, data, args)
        if not args.train_steps:
            print(
                f"note: --train-steps 0, so the model is UNTRAINED (shapes match {name}; pass "
                "e.g. --train-steps 300 to train first); the plan only demonstrates the contract"
            )
        start_obs = held_out.fixed_batches(1, 1, 2, seed=args.seed)[0].obs[:, 0]
        shown = [round(x, 4) for x in start_obs[0].tolist()]
        print(f"start observation from {name}'s held-out episodes: {shown}")

    model.eval()
    with torch.no_grad():
        state = model.encode(start_obs.to(model.device))
    planner = CEMPlanner(args.horizon, args.action_dim, discrete=args.discrete, seed=args.seed)
    payload = planner.plan(model, state)

    torch.set_printoptions(precision=4, sci_mode=False)
    print(f"payload.kind: {payload.kind}")
    print(f"payload.tensor (shape {tuple(payload.tensor.shape)}):\n{payload.tensor}")
    print(f'payload.extras["wf.planner.horizon"]: {payload.extras["wf.planner.horizon"]}')
    expected_return = cast(float, payload.extras["wf.planner.expected_return"])
    # "+ 0.0" prints an exact zero (the untrained heads predict 0) as 0.0000, not -0.0000.
    print(f'payload.extras["wf.planner.expected_return"]: {expected_return + 0.0:.4f}')
    if data is not None:
        env_actions = np.round(data.spec.env_action(payload.tensor.cpu().numpy()), 4)
        print(f"actions in {data.name}'s units (DatasetSpec.env_action): {env_actions.tolist()}")

    problems = []
    if payload.extras["wf.planner.horizon"] != args.horizon:
        problems.append(
            f'extras["wf.planner.horizon"] is {payload.extras["wf.planner.horizon"]!r}, '
            f"expected {args.horizon}"
        )
    if tuple(payload.tensor.shape) != (args.horizon, args.action_dim):
        problems.append(
            f"tensor shape is {tuple(payload.tensor.shape)}, "
            f"expected (horizon, action_dim) = ({args.horizon}, {args.action_dim})"
        )
    if payload.kind != kind:
        problems.append(f"kind is {payload.kind!r}, expected {kind!r}")
    if problems:
        print("error: the planner broke its contract: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("ok: payload has the requested horizon and shape (horizon, action_dim)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return plan(args)
    except worldflux.WorldFluxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
