"""Measurements on a trained model that feed the gates: save/load parity, physical
plausibility, rollout latency, output finiteness, the planner boundary (prediction skill:
``quality.skill``).

Each probe returns plain JSON-able numbers. Probes never decide pass/fail; gates do.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from quality.skill import PROBE_SEED  # every probe imagines the same held-out segments
from worldflux import ActionPayload, Capability, WorldModel, from_pretrained
from worldflux.core.types import Batch, Trajectory
from worldflux.data import TrajectoryDataset
from worldflux.planners import CEMPlanner


def _outputs(model: WorldModel, batch: Batch) -> dict[str, Tensor]:
    """Every output the contract exposes on a batch: loss terms, encoded and imagined states,
    decoded predictions."""
    out = model.loss(batch)
    tensors = {f"loss.{k}": v.reshape(1) for k, v in out.components.items()}
    state = model.encode(batch.obs[:, 0])
    trajectory = model.rollout(state, batch.action[:, 1:].transpose(0, 1))
    for key, value in trajectory.states.tensors.items():
        tensors[f"rollout.{key}"] = value
    for name in ("rewards", "continues", "values"):
        value = getattr(trajectory, name)
        if value is not None:
            tensors[f"rollout.{name}"] = value
    decoded = model.decode(state)
    for name in ("observation", "reward", "continue_prob"):
        value = getattr(decoded, name)
        if value is not None:
            tensors[f"decode.{name}"] = value
    for name, value in model.diagnostics(batch).items():
        tensors[f"diagnostics.{name}"] = value
    return tensors


@torch.no_grad()
def save_load_parity(
    model: WorldModel, checkpoint_dir: str, batches: list[Batch]
) -> dict[str, Any]:
    """Reload the checkpoint and compare every output with the in-memory model's."""
    reloaded = from_pretrained(checkpoint_dir, device=model.device).eval()
    was_training = model.training
    model.eval()
    try:
        worst, worst_name = 0.0, ""
        for batch in batches:
            a, b = _outputs(model, batch), _outputs(reloaded, batch)
            for name, value in a.items():
                diff = float((value - b[name]).abs().max())
                if not math.isfinite(diff) or diff > worst:
                    worst, worst_name = diff, name
    finally:
        model.train(was_training)
    return {"max_abs_diff": worst if math.isfinite(worst) else None, "worst_output": worst_name}


@torch.no_grad()
def outputs_finite(model: WorldModel, batches: list[Batch]) -> dict[str, Any]:
    """Which outputs (loss terms, states, predictions, family diagnostics) hold NaN/Inf."""
    model.eval()
    names: set[str] = set()
    bad: set[str] = set()
    for batch in batches:
        for name, value in _outputs(model, batch).items():
            names.add(name)
            if not bool(torch.isfinite(value).all()):
                bad.add(name)
    model.train()
    return {"finite": not bad, "non_finite_outputs": sorted(bad), "outputs": sorted(names)}


def contract_check(model: WorldModel, batch: Batch) -> dict[str, Any]:
    """Exercise every method of the contract and report what does not hold."""
    problems: list[str] = []
    size = batch.batch_size
    checks: list[tuple[str, Any]] = []
    try:
        with torch.no_grad():
            state = model.encode(batch.obs[:, 0])
            checks.append(("encode batch size", state.batch_size == size))
            nxt = model.transition(state, batch.action[:, 1])
            checks.append(
                ("transition keeps state keys", nxt.tensors.keys() == state.tensors.keys())
            )
            post = model.update(state, batch.action[:, 1], batch.obs[:, 1])
            checks.append(("update keeps state keys", post.tensors.keys() == state.tensors.keys()))
            model.decode(post)
            trajectory = model.rollout(state, batch.action[:, 1:].transpose(0, 1))
            first = next(iter(trajectory.states.tensors.values()))
            checks.append(("rollout has T+1 states", first.shape[0] == batch.seq_len))
        out = model.loss(batch)
        checks.append(("loss is a scalar", out.loss.ndim == 0))
        checks.append(("gate metric reported", model.gate_metric in out.metrics))
        checks.append(
            ("components are tensors", all(isinstance(v, Tensor) for v in out.components.values()))
        )
    except Exception as err:
        problems.append(f"{type(err).__name__}: {err}")
    problems += [name for name, ok in checks if not ok]
    return {"ok": not problems, "problems": problems, "checked": [name for name, _ in checks]}


def observation_range(data: TrajectoryDataset) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest value of every flattened observation dimension in ``data``.

    Vectors: per dimension (each is its own physical quantity). Frames [C, H, W]: per channel,
    pooled over pixels: a pixel is no quantity of its own, and the background pixels that never
    lit up in training (range width 0) light up whenever the cart goes somewhere new."""
    shape = data.spec.obs_shape
    if len(shape) == 3:
        low, high = data.observation_bounds(axis=(0, 2, 3))
        pixels = shape[1] * shape[2]
        return np.repeat(low.astype(np.float64), pixels), np.repeat(high.astype(np.float64), pixels)
    low, high = data.observation_bounds()
    return low.reshape(-1).astype(np.float64), high.reshape(-1).astype(np.float64)


def _imagine_recorded(
    model: WorldModel, held_out: TrajectoryDataset, context: int, horizon: int, batch_size: int
) -> tuple[Batch, Trajectory]:
    """Filter ``context`` observed steps of fixed held-out segments (``encode`` then
    ``update``: recurrent families need a history to know velocities), then imagine the next
    ``horizon`` recorded actions."""
    length = context + horizon
    batch = held_out.fixed_batches(1, batch_size, length, seed=PROBE_SEED)[0].to(model.device)
    state = model.encode(batch.obs[:, 0])
    for t in range(1, context):
        state = model.update(state, batch.action[:, t], batch.obs[:, t])
    return batch, model.rollout(state, batch.action[:, context:].transpose(0, 1))


@torch.no_grad()
def plausibility(
    model: WorldModel,
    held_out: TrajectoryDataset,
    train: TrajectoryDataset,
    horizon: int,
    margin: float,
    batch_size: int = 32,
    context: int = 5,
) -> dict[str, Any]:
    """Fraction of imagined values outside the training data's observed range
    (``observation_range``) widened by ``margin`` times its width: decoded observations when
    the family decodes them, else predicted rewards. The model imagines recorded held-out action
    sequences (after filtering ``context`` steps), whose true outcomes are physical, so leaving
    the range is the model's doing."""
    model.eval()
    _, trajectory = _imagine_recorded(model, held_out, context, horizon, batch_size)
    if Capability.OBSERVATION_DECODER in model.capabilities:
        low, high = observation_range(train)
        decoded = [model.decode(trajectory.state_at(t)).observation for t in range(1, horizon + 1)]
        values = torch.stack([d for d in decoded if d is not None]).flatten(2)
        quantity = "observation"
    elif trajectory.rewards is not None:
        rewards = train.columns()["reward"].astype(np.float64)
        low, high = np.array([rewards.min()]), np.array([rewards.max()])
        values = trajectory.rewards.unsqueeze(-1)
        quantity = "reward"
    else:
        raise ValueError("the family predicts neither observations nor rewards")
    width = np.maximum(high - low, 1e-6)
    lo = torch.as_tensor(low - margin * width, dtype=values.dtype, device=values.device)
    hi = torch.as_tensor(high + margin * width, dtype=values.dtype, device=values.device)
    outside = (values < lo) | (values > hi) | ~torch.isfinite(values)
    model.train()
    return {
        "quantity": quantity,
        "horizon": horizon,
        "violation_fraction": float(outside.float().mean()),
        "max_value": float(values.max()),
        "min_value": float(values.min()),
    }


@torch.no_grad()
def rollout_latency(
    model: WorldModel,
    held_out: TrajectoryDataset,
    horizon: int,
    repeats: int = 30,
    windows: int = 3,
) -> dict[str, Any]:
    """Wall time of one imagined rollout of ``horizon`` steps from one state (batch 1).

    Timed in ``windows`` windows of ``repeats`` rollouts; the window with the lowest p95 is
    reported (with all windows as evidence): a shared machine's neighbours can stall one
    window, and the gate is about the model, not about them.
    """
    model.eval()
    obs = held_out.fixed_batches(1, 1, 2, seed=PROBE_SEED)[0].obs[:, 0].to(model.device)
    actions = torch.zeros(horizon, 1, held_out.spec.action_dim, device=model.device)
    for _ in range(3):  # warm-up
        model.rollout(model.encode(obs), actions)
    results = []
    for _ in range(windows):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.rollout(model.encode(obs), actions)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - started))
        times.sort()
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        results.append({"p50_ms": statistics.median(times), "p95_ms": p95})
    model.train()
    best = min(results, key=lambda r: r["p95_ms"])
    return {"horizon": horizon, **best, "windows": results}


@torch.no_grad()
def planner_boundary(
    model: WorldModel, held_out: TrajectoryDataset, horizon: int
) -> dict[str, Any]:
    """Plan through the capability contract and check the payload it returns."""
    if Capability.REWARD_PREDICTION not in model.capabilities:
        return {"applicable": False}
    obs = held_out.fixed_batches(1, 1, 2, seed=PROBE_SEED)[0].obs[:, 0].to(model.device)
    planner = CEMPlanner(
        horizon,
        held_out.spec.action_dim,
        discrete=held_out.spec.discrete,
        num_samples=64,
        num_elites=8,
        iterations=2,
        seed=PROBE_SEED,
    )
    payload = planner.plan(model, model.encode(obs))
    return {
        "applicable": True,
        "is_action_payload": isinstance(payload, ActionPayload),
        "horizon_extra": payload.extras.get("wf.planner.horizon"),
        "shape": list(payload.tensor.shape),
        "kind": payload.kind,
        "finite": bool(torch.isfinite(payload.tensor).all()),
    }
