"""Held-out prediction skill: how much better a model imagines the future than trivial baselines.

A falling loss is no evidence of learning the dynamics: predicting the data's mean already lowers
it. Skill compares the model with the best trivial predictor on the same fixed held-out segments:

    skill_k = 1 - NMSE_model(k) / min(NMSE_mean(k), NMSE_persistence(k))
    skill   = 1 - sum_k NMSE_model(k) / sum_k min(NMSE_mean(k), NMSE_persistence(k))

where k runs over the policy's horizons (the model filters ``context`` observed steps, then
imagines the recorded actions), ``mean`` predicts the training observations' mean and
``persistence`` predicts that nothing changes after the last observed step. 1 is perfect, 0 is
no better than the better baseline, below 0 is worse. Everything is measured in observation
space: families with an observation decoder through ``decode``; decoder-free families through a
*linear read-out*, a least-squares map from the state of a true observation (``encode``) to that
observation fitted on training rows and applied to imagined states. A read-out cannot be gamed
by a shrinking latent: a constant state reads out as a constant observation, which is the mean
baseline at best.

NMSE is the squared error over the training variance: averaged over dimensions for vector
observations, pooled over pixels for images (a background pixel with no variance must not weigh
as much as the cart). Also reported, as reference figures: a least-squares linear model of the
next observation from (observation, action) rolled forward with the recorded actions (None
for observations of more than 4,096 values, e.g. 3 x 64 x 64 frames, whose normal equations
would not fit a small machine); for vector observations a small residual MLP of the change of
the observation, fitted here in a second or two and rolled forward the same way (what a
nonlinear model fitted to this data reaches; None for images); and the model's own error when
the action sequences are shuffled across the batch (an action-conditioned model that uses its
actions gets worse). Decoded frames are also measured as images (PSNR, SSIM, frame-to-frame
change; quality/frames.py) for the frame gates.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from quality import frames
from worldflux import Capability, WorldModel
from worldflux.core.types import Batch, State
from worldflux.data import TrajectoryDataset

PROBE_SEED = 7  # every seed and every evaluation probes the same held-out segments
READOUT_ROWS = 4096  # training rows the linear read-out is fitted on
RIDGE = 1e-3  # the read-out's ridge term, relative to the mean feature variance (see LinearMap)
LINEAR_RIDGE = 1e-9  # the linear dynamics reference on vectors: plain least squares
LINEAR_MAX_DIMS = 4096  # larger observations get no linear reference (``linear_dynamics``)
# The residual MLP reference (``ResidualMLP``): 2,000 steps take 1-2 s on one CPU thread.
MLP_HIDDEN = 128
MLP_STEPS = 2000
MLP_BATCH = 256
MLP_LR = 1e-3
MLP_CACHE_SIZE = 4  # training sets whose fit a process keeps (see ``_FitCache``)


def _flat(x: Tensor) -> Tensor:
    return x.flatten(1).double()


class LinearMap:
    """Ridge least squares on centred features: y ~ (x - x_mean) @ W + y_mean.

    The ridge term is ``ridge`` times the mean feature variance. For the read-out it is
    ``RIDGE``: without it, directions in which the fitted states barely vary get huge weights,
    and an imagined state that moves a little off the states the map was fitted on reads out as
    nonsense. Fixed in advance for every family, never tuned to a model's score."""

    def __init__(self, features: Tensor, targets: Tensor, ridge: float = RIDGE) -> None:
        self.x_mean, self.y_mean = features.mean(0), targets.mean(0)
        x = features - self.x_mean
        gram = x.T @ x
        scale = ridge * (torch.trace(gram) / gram.shape[0]).clamp_min(1e-12)
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        self.weights = torch.linalg.solve(gram + scale * eye, x.T @ (targets - self.y_mean))

    def __call__(self, features: Tensor) -> Tensor:
        return (features - self.x_mean) @ self.weights + self.y_mean

    def to(self, device: torch.device) -> LinearMap:
        for name in ("x_mean", "y_mean", "weights"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def state_features(state: State) -> Tensor:
    """Every tensor of a state, flattened and concatenated in key order: [B, F]."""
    return torch.cat([_flat(state.tensors[k]) for k in sorted(state.tensors)], 1)


def _train_rows(train: TrajectoryDataset, rows: int) -> np.ndarray:
    rng = np.random.default_rng(PROBE_SEED)
    return np.sort(rng.choice(len(train), size=min(rows, len(train)), replace=False))


@torch.no_grad()
def fit_readout(model: WorldModel, train: TrajectoryDataset, rows: int = READOUT_ROWS) -> LinearMap:
    """Least-squares map from ``encode(observation)`` to the observation, on training rows."""
    obs = torch.from_numpy(train.observations(_train_rows(train, rows)))
    features = [
        state_features(model.encode(chunk.to(model.device)))
        for chunk in obs.split(512)  # bounded memory for pixel observations
    ]
    return LinearMap(torch.cat(features), _flat(obs).to(model.device))


def training_transitions(train: TrajectoryDataset, rows: int | None = None) -> Batch:
    """Training transitions as a [N, 2] batch: observation t, then the action that led to
    observation t+1 (``action[:, 1]``) and that observation (``obs[:, 1]``). Only pairs inside
    one episode: row t+1 has step > 0, so row t is of the same episode and is not its last row
    (the only row that can be terminated or truncated). ``rows`` of them at random (fixed by
    ``PROBE_SEED``), in data-set order; all of them when None."""
    after = np.flatnonzero(train.columns()["step"] > 0)
    if rows is not None:
        rng = np.random.default_rng(PROBE_SEED)
        after = np.sort(rng.choice(after, size=min(rows, after.shape[0]), replace=False))
    return train.batch_at(np.stack([after - 1, after], 1))


def fit_linear_dynamics(train: TrajectoryDataset, rows: int = 8 * READOUT_ROWS) -> LinearMap:
    """Least-squares linear model of the next observation from (observation, action), fitted on
    training transitions (row t's action led to observation t)."""
    batch = training_transitions(train, rows)
    features = torch.cat([_flat(batch.obs[:, 0]), batch.action[:, 1].double()], 1)
    # On frames (a thousand pixels per feature row) plain least squares overfits and its rollout
    # explodes; there the reference is as regularized as the read-out.
    ridge = RIDGE if len(train.spec.obs_shape) > 1 else LINEAR_RIDGE
    return LinearMap(features, _flat(batch.obs[:, 1]), ridge=ridge)


def linear_dynamics(train: TrajectoryDataset) -> LinearMap | None:
    """The linear reference, or None for observations of more than ``LINEAR_MAX_DIMS`` values:
    its normal equations are D x D (a 3 x 64 x 64 frame: 12,288^2 float64 = 1.2 GB, minutes to
    solve), and on frames it is a reference figure only, never a baseline a gate uses."""
    if math.prod(train.spec.obs_shape) > LINEAR_MAX_DIMS:
        return None
    return fit_linear_dynamics(train)


Layers = list[tuple[Tensor, Tensor]]  # (weight, bias) per linear layer


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    weights = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
    return weights.requires_grad_()


def _mlp(layers: Layers, x: Tensor) -> Tensor:
    for i, (weight, bias) in enumerate(layers):
        x = torch.nn.functional.linear(x, weight, bias)
        if i < len(layers) - 1:
            x = torch.nn.functional.silu(x)
    return x


def _fit_mlp(inputs: Tensor, targets: Tensor, steps: int) -> Layers:
    """Adam on mean squared error, ``MLP_BATCH`` random rows per step. Initialization (PyTorch's
    default for ``nn.Linear``) and minibatches come from a generator seeded with ``PROBE_SEED``,
    so the fit is deterministic and never reads or advances the global RNG."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    sizes = [inputs.shape[1], MLP_HIDDEN, MLP_HIDDEN, targets.shape[1]]
    layers = [
        (_uniform((n_out, n_in), n_in**-0.5, generator), _uniform((n_out,), n_in**-0.5, generator))
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    parameters = [p for layer in layers for p in layer]
    optimizer = torch.optim.Adam(parameters, lr=MLP_LR, fused=True)  # ~20% faster on a CPU
    # One thread: ops this small only wait on each other with two, and on a loaded machine
    # that turned a 2 s fit into minutes. The weights are the same with any thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            index = torch.randint(inputs.shape[0], (MLP_BATCH,), generator=generator)
            loss = (_mlp(layers, inputs[index]) - targets[index]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return [(weight.detach(), bias.detach()) for weight, bias in layers]


class ResidualMLP:
    """The nonlinear reference: x' = x + d_mean + d_std * f((x - x_mean) / x_std, a), where f
    is a small MLP (two hidden layers of ``MLP_HIDDEN`` SiLU units) fitted to the standardized
    change of the observation on every training transition (``training_transitions``), and
    x_mean / x_std and d_mean / d_std are the training observations' and changes' per-dimension
    statistics. Vector observations only. Fitted on the CPU, deterministically (``_fit_mlp``)."""

    def __init__(self, train: TrajectoryDataset, steps: int = MLP_STEPS) -> None:
        batch = training_transitions(train)
        obs, action = _flat(batch.obs[:, 0]), batch.action[:, 1].double()
        delta = _flat(batch.obs[:, 1]) - obs
        observations = train.observations().reshape(len(train), -1).astype(np.float64)
        self.x_mean = torch.from_numpy(observations.mean(0))
        self.x_std = torch.from_numpy(observations.std(0)).clamp_min(1e-6)
        self.d_mean, self.d_std = delta.mean(0), delta.std(0).clamp_min(1e-12)
        inputs = torch.cat([(obs - self.x_mean) / self.x_std, action], 1).float()
        targets = ((delta - self.d_mean) / self.d_std).float()
        with torch.inference_mode(False), torch.enable_grad():  # the probe runs without grad
            self.layers = _fit_mlp(inputs, targets, steps)

    @torch.no_grad()
    def __call__(self, obs: Tensor, action: Tensor) -> Tensor:
        """The next observation ([B, D], float64 on ``obs``'s device) from flat observations
        [B, D] and action features [B, A] (computed on the CPU: the fit is not moved)."""
        x = obs.detach().cpu().double()
        features = torch.cat([(x - self.x_mean) / self.x_std, action.cpu().double()], 1)
        change = _mlp(self.layers, features.float()).double() * self.d_std + self.d_mean
        return (x + change).to(obs.device)


class _FitCache:
    """The residual MLP per training data set, keyed by its content digest and bounded to
    ``size`` entries (least recently used dropped). Fitting costs seconds and the probe runs
    for every seed of every sweep (and again on each stored checkpoint), always on the same
    training split: the cache fits once per data set per process, and since the fit is
    deterministic every seed sees the same reference. Bounded because a process may probe a
    few data sets (tests, the demo's families) but must not keep every one alive."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fits: OrderedDict[str, ResidualMLP] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, train: TrajectoryDataset) -> ResidualMLP:
        key = train.digest
        with self._lock:
            if key in self._fits:
                self._fits.move_to_end(key)
                return self._fits[key]
        fit = ResidualMLP(train)  # outside the lock: a rare duplicate fit gives the same result
        with self._lock:
            self._fits[key] = fit
            self._fits.move_to_end(key)
            while len(self._fits) > self.size:
                self._fits.popitem(last=False)
        return fit

    def clear(self) -> None:
        with self._lock:
            self._fits.clear()


_MLP_FITS = _FitCache(MLP_CACHE_SIZE)


def residual_mlp(train: TrajectoryDataset) -> ResidualMLP | None:
    """The (cached) residual MLP reference of a training set; None for image observations,
    where a per-pixel MLP says nothing the linear reference does not."""
    if len(train.spec.obs_shape) > 1:
        return None
    return _MLP_FITS.get(train)


class _Scale:
    """NMSE: per-dimension normalized and averaged for vectors, pooled for images."""

    def __init__(self, train: TrajectoryDataset, device: torch.device) -> None:
        mean, var, low, high = _moments(train)
        self.mean = torch.as_tensor(mean, device=device)
        self.pooled = len(train.spec.obs_shape) > 1
        self.var = torch.as_tensor(np.maximum(var, 1e-8), device=device)
        self.total_var = float(var.sum())
        self.peak = float(high.max() - low.min())

    def nmse(self, predicted: Tensor, truth: Tensor) -> float:
        squared = (predicted.double() - truth.double()) ** 2
        if self.pooled:
            return float(squared.sum(1).mean() / max(self.total_var, 1e-12))
        return float((squared / self.var).mean())


def _moments(
    data: TrajectoryDataset, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per flattened dimension: mean, variance, lowest and highest of ``data``'s observations,
    in float64, ``chunk`` rows at a time (two passes: the variance around the mean; a float64
    copy of 50 episodes of 3 x 64 x 64 frames would take 1.5 GB)."""
    rows = len(data)
    parts = [slice(start, min(start + chunk, rows)) for start in range(0, rows, chunk)]

    def flat(part: slice) -> np.ndarray:
        return data.observations(part).reshape(part.stop - part.start, -1).astype(np.float64)

    total = sum(flat(part).sum(0) for part in parts)
    mean = np.asarray(total) / rows
    squares = sum(((flat(part) - mean) ** 2).sum(0) for part in parts)
    low, high = (bound.reshape(-1).astype(np.float64) for bound in data.observation_bounds())
    return mean, np.asarray(squares) / rows, low, high


def imagine(
    model: WorldModel, batch: Batch, context: int, actions: Tensor
) -> tuple[State, list[State]]:
    """Filter ``context`` observed steps, then imagine ``actions`` ([T, B, A]): the filtered
    state (the posterior of the last observed step) and the states after 1..T imagined steps."""
    state = model.encode(batch.obs[:, 0])
    for t in range(1, context):
        state = model.update(state, batch.action[:, t], batch.obs[:, t])
    trajectory = model.rollout(state, actions)
    return state, [trajectory.state_at(k) for k in range(1, actions.shape[0] + 1)]


def observation_predictor(
    model: WorldModel, train: TrajectoryDataset
) -> tuple[str, Callable[[State], Tensor]]:
    """How a state becomes a predicted observation: the decoder, else the linear read-out."""
    if Capability.OBSERVATION_DECODER in model.capabilities:

        def decode(state: State) -> Tensor:
            observation = model.decode(state).observation
            if observation is None:
                raise ValueError("the family declares a decoder but decoded no observation")
            return _flat(observation)

        return "decoder", decode
    readout = fit_readout(model, train)
    return "linear read-out", lambda state: readout(state_features(state))


@torch.no_grad()
def prediction_skill(
    model: WorldModel,
    train: TrajectoryDataset,
    held_out: TrajectoryDataset,
    horizons: list[int],
    *,
    context: int = 5,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Skill per horizon and on average, with every baseline's NMSE as evidence."""
    if not horizons or min(horizons) < 1:
        raise ValueError(f"horizons must be positive step counts, got {horizons}")
    was_training = model.training
    model.eval()
    try:
        horizon = max(horizons)
        batch = held_out.fixed_batches(1, batch_size, context + horizon, seed=PROBE_SEED)[0]
        batch = batch.to(model.device)
        start = context - 1  # imagined state k corresponds to observation start + k
        actions = batch.action[:, context:].transpose(0, 1)
        generator = torch.Generator().manual_seed(PROBE_SEED)
        permutation = torch.randperm(batch.batch_size, generator=generator).to(model.device)
        scale = _Scale(train, model.device)
        space, predict = observation_predictor(model, train)
        # Frames the family itself predicts (decoded, not read out) are also judged as images.
        frames_shape = train.spec.obs_shape if scale.pooled and space == "decoder" else None
        filtered, imagined = imagine(model, batch, context, actions)
        _, shuffled = imagine(model, batch, context, actions[:, permutation])
        linear = linear_dynamics(train)
        linear = linear.to(model.device) if linear is not None else None
        mlp = residual_mlp(train)  # None for images
        last = _flat(batch.obs[:, start])
        # How much of the last observed step the filtered state keeps (decoded or read out):
        # imagination cannot be more precise than this.
        reconstruction = scale.nmse(predict(filtered), last)
        linear_obs, mlp_obs, per_horizon = last, last, {}  # horizon -> figures
        for k in range(1, horizon + 1):
            if linear is not None:
                linear_obs = linear(torch.cat([linear_obs, actions[k - 1].double()], 1))
            if mlp is not None:
                mlp_obs = mlp(mlp_obs, actions[k - 1])
            if k not in horizons:
                continue
            truth = _flat(batch.obs[:, start + k])
            predicted = predict(imagined[k - 1])
            figures: dict[str, Any] = {
                "model": scale.nmse(predicted, truth),
                "mean": scale.nmse(scale.mean.expand_as(truth), truth),
                "persistence": scale.nmse(last, truth),
                "linear": None if linear is None else scale.nmse(linear_obs, truth),
                "residual_mlp": None if mlp is None else scale.nmse(mlp_obs, truth),
                "shuffled_actions": scale.nmse(predict(shuffled[k - 1]), truth),
            }
            baseline = "mean" if figures["mean"] <= figures["persistence"] else "persistence"
            figures["baseline"] = baseline
            figures["skill"] = 1.0 - figures["model"] / max(figures[baseline], 1e-12)
            spread = float(predicted.std(0).mean() / truth.std(0).mean().clamp_min(1e-12))
            figures["spread_ratio"] = spread
            if frames_shape is not None:
                figures.update(_frame_figures(predicted, truth, last, frames_shape, scale.peak))
            per_horizon[str(k)] = figures
        if frames_shape is not None:  # decoded in evaluation mode, as every figure above
            temporal = {
                "imagined": frames.rms_change(
                    torch.stack([predict(filtered), *(predict(state) for state in imagined)])
                ),
                "real": frames.rms_change(batch.obs[:, start:].transpose(0, 1)),
            }
    finally:
        model.train(was_training)
    model_total = sum(f["model"] for f in per_horizon.values())
    baseline_total = sum(f[f["baseline"]] for f in per_horizon.values())
    return {
        "space": space,
        "normalization": "pooled over pixels" if scale.pooled else "per dimension",
        "context": context,
        "batch_size": batch_size,
        "reconstruction": reconstruction,
        "horizons": per_horizon,
        # Over the whole imagined segment: 1 - total model error / total baseline error.
        "skill": 1.0 - model_total / max(baseline_total, 1e-12),
        # Frames: the RMS change from each frame to the next, imagined (from the filtered
        # frame on) and real (the same segments' recorded frames).
        **({"temporal": temporal} if frames_shape is not None else {}),
    }


def _frame_figures(
    predicted: Tensor, truth: Tensor, last: Tensor, shape: tuple[int, ...], peak: float
) -> dict[str, float]:
    """PSNR and SSIM of the predicted frames and of persistence (the last observed frame),
    from flat [B, D] rows."""
    as_frames = [x.reshape(-1, *shape) for x in (predicted, truth, last)]
    prediction, real, unchanged = as_frames
    return {
        "psnr": frames.psnr(prediction, real, peak),
        "psnr_persistence": frames.psnr(unchanged, real, peak),
        "ssim": frames.ssim(prediction, real, peak),
        "ssim_persistence": frames.ssim(unchanged, real, peak),
    }
