"""Collect trajectory data sets from gymnasium environments with documented behaviour policies.

gymnasium is imported inside the functions that step environments: ``import worldflux`` must
work without it. Every random choice comes from explicit seeds, so collection is reproducible:
episode ``e`` resets the environment with ``seed + e`` and the policy draws from
``numpy.random.default_rng([seed, 1])``, a stream distinct from the environment's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worldflux.core.errors import DatasetError
from worldflux.core.files import atomic_write_json
from worldflux.data import pixels
from worldflux.data.bundled import MANIFEST_NAME
from worldflux.data.dataset import TrajectoryDataset
from worldflux.data.schema import DatasetSpec

Observation = npt.NDArray[np.float32]
# A policy for one episode: observation -> action (an int index or a float32 vector).
EpisodePolicy = Callable[[Observation], "int | npt.NDArray[np.float32]"]
# Called at the start of each episode with the collection RNG; draws the episode's parameters.
PolicyFactory = Callable[[np.random.Generator], EpisodePolicy]


def cartpole_policy(rng: np.random.Generator) -> EpisodePolicy:
    """Noisy balancing controller: push right when theta + 0.5 theta_dot + 0.05 x + 0.1 x_dot
    is positive. Without noise it holds the pole for all 500 steps (seeds 0-19 checked); each
    episode draws epsilon ~ U(0.05, 0.6) and takes a uniform random action with probability
    epsilon, so noisy episodes fall early and calm ones reach the time limit."""
    epsilon = rng.uniform(0.05, 0.6)

    def act(obs: Observation) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(2))
        x, x_dot, theta, theta_dot = (float(v) for v in obs)
        return 1 if theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0 else 0

    return act


def pendulum_policy(rng: np.random.Generator) -> EpisodePolicy:
    """Mix of energy pumping and smooth noise: per episode alpha ~ U(0, 1); torque =
    clip(alpha * 2 * sign(theta_dot) + (1 - alpha) * 2 * n_t, -2, 2) with n_t an AR(1) process
    (rho 0.9, stationary N(0, 1)). High alpha swings the pendulum up; low alpha wanders."""
    alpha = rng.uniform(0.0, 1.0)
    rho = 0.9
    noise = rng.standard_normal()

    def act(obs: Observation) -> npt.NDArray[np.float32]:
        nonlocal noise
        noise = rho * noise + math.sqrt(1.0 - rho * rho) * rng.standard_normal()
        torque = alpha * 2.0 * np.sign(float(obs[2])) + (1.0 - alpha) * 2.0 * noise
        return np.array([np.clip(torque, -2.0, 2.0)], dtype=np.float32)

    return act


CARTPOLE_POLICY_TEXT = (
    "per episode epsilon ~ U(0.05, 0.6); with probability epsilon a uniform random action, "
    "else push right iff theta + 0.5*theta_dot + 0.05*x + 0.1*x_dot > 0"
)
PENDULUM_POLICY_TEXT = (
    "per episode alpha ~ U(0, 1); torque = clip(alpha*2*sign(theta_dot) + (1-alpha)*2*n_t, "
    "-2, 2), n_t AR(1) noise with rho 0.9 and stationary N(0, 1)"
)


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a collected data set."""

    name: str
    env_id: str
    episodes: int
    seed: int
    policy: PolicyFactory
    policy_text: str


BUNDLED_RECIPES: dict[str, Recipe] = {
    "cartpole": Recipe("cartpole", "CartPole-v1", 50, 1000, cartpole_policy, CARTPOLE_POLICY_TEXT),
    "pendulum": Recipe("pendulum", "Pendulum-v1", 50, 2000, pendulum_policy, PENDULUM_POLICY_TEXT),
}


def collect(recipe: Recipe) -> TrajectoryDataset:
    """Run ``recipe.episodes`` episodes and return them in the flat row convention."""
    import gymnasium as gym
    from gymnasium import spaces

    env = gym.make(recipe.env_id)
    try:
        spec = _spec_of(env.observation_space, env.action_space, spaces)
        rng = np.random.default_rng([recipe.seed, 1])
        columns: dict[str, list[Any]] = {key: [] for key in _COLUMNS}
        for episode in range(recipe.episodes):
            policy = recipe.policy(rng)
            obs, _ = env.reset(seed=recipe.seed + episode)
            zero_action: Any = 0 if spec.discrete else np.zeros(spec.action_dim, np.float32)
            _append(columns, episode, 0, obs, zero_action, 0.0, False, False)
            step = 0
            while True:
                action = policy(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                step += 1
                # A fall on the time limit's last step is a real end: terminated wins.
                truncated = bool(truncated) and not terminated
                _append(columns, episode, step, obs, action, reward, terminated, truncated)
                if terminated or truncated:
                    break
    finally:
        env.close()
    action_dtype = np.int64 if spec.discrete else np.float32
    return TrajectoryDataset(
        name=recipe.name,
        spec=spec,
        observation=np.asarray(columns["observation"], dtype=np.float32),
        action=np.asarray(columns["action"], dtype=action_dtype),
        reward=np.asarray(columns["reward"], dtype=np.float32),
        terminated=np.asarray(columns["terminated"], dtype=np.bool_),
        truncated=np.asarray(columns["truncated"], dtype=np.bool_),
        episode=np.asarray(columns["episode"], dtype=np.int64),
        step=np.asarray(columns["step"], dtype=np.int64),
    )


_COLUMNS = ("observation", "action", "reward", "terminated", "truncated", "episode", "step")


def _append(columns: dict[str, list[Any]], *values: Any) -> None:
    episode, step, obs, action, reward, terminated, truncated = values
    columns["episode"].append(episode)
    columns["step"].append(step)
    columns["observation"].append(np.asarray(obs, dtype=np.float32))
    columns["action"].append(action)
    columns["reward"].append(float(reward))
    columns["terminated"].append(bool(terminated))
    columns["truncated"].append(bool(truncated))


def _spec_of(obs_space: Any, action_space: Any, spaces: Any) -> DatasetSpec:
    if not isinstance(obs_space, spaces.Box):
        raise DatasetError(f"only Box observation spaces are supported, got {obs_space}")
    if isinstance(action_space, spaces.Discrete):
        return DatasetSpec(tuple(obs_space.shape), int(action_space.n), True, 0.0, 1.0)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        low, high = np.unique(action_space.low), np.unique(action_space.high)
        if low.size != 1 or high.size != 1:
            raise DatasetError(f"action bounds must be the same in every dimension: {action_space}")
        return DatasetSpec(
            tuple(obs_space.shape), int(action_space.shape[0]), False, float(low[0]), float(high[0])
        )
    raise DatasetError(f"unsupported action space {action_space}")


def manifest_entry(
    recipe: Recipe, dataset: TrajectoryDataset, sha256: str, size: int
) -> dict[str, Any]:
    """The manifest record of one bundled file: how it was made and what it holds."""
    import gymnasium

    spec = dataset.spec
    return {
        "name": recipe.name,
        "file": f"{recipe.name}.safetensors",
        "env_id": recipe.env_id,
        "gymnasium_version": gymnasium.__version__,
        "numpy_version": np.__version__,
        "safetensors_version": metadata.version("safetensors"),
        "policy": recipe.policy_text,
        "seed": recipe.seed,
        "episodes": dataset.num_episodes,
        "rows": len(dataset),
        "transitions": len(dataset) - dataset.num_episodes,
        "terminated_episodes": dataset.num_terminated,
        "truncated_episodes": dataset.num_truncated,
        "obs_shape": list(spec.obs_shape),
        "action_dim": spec.action_dim,
        "discrete": spec.discrete,
        "action_low": spec.action_low,
        "action_high": spec.action_high,
        "sha256": sha256,
        "bytes": size,
    }


def generate_bundled(out_dir: Path, names: list[str] | None = None) -> dict[str, Any]:
    """Collect the bundled data sets into ``out_dir`` and write their manifest (returned) and
    the record of the data sets rendered from them (``derived.json``).

    With ``names`` only those are collected (the manifest then lists only them).
    """
    chosen = sorted(BUNDLED_RECIPES) if names is None else sorted(names)
    unknown = [name for name in chosen if name not in BUNDLED_RECIPES]
    if unknown:
        raise DatasetError(f"no recipe for {unknown}; available: {sorted(BUNDLED_RECIPES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in chosen:
        recipe = BUNDLED_RECIPES[name]
        dataset = collect(recipe)
        path = out_dir / f"{name}.safetensors"
        sha256 = dataset.save(path)
        entries[name] = manifest_entry(recipe, dataset, sha256, path.stat().st_size)
    manifest = {"format": 1, "datasets": entries}
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)  # sorted keys, indent 2, final newline
    derived = {}
    for rendering in pixels.RENDERINGS.values():
        if rendering.source in entries:
            sha256 = str(entries[rendering.source]["sha256"])
            # Rendered from the file as written, as ``load_derived`` will render it on load.
            source = TrajectoryDataset.load(
                out_dir / str(entries[rendering.source]["file"]), expected_sha256=sha256
            )
            derived[rendering.name] = pixels.derived_entry(rendering.build(source), sha256)
    if derived:
        atomic_write_json(out_dir / pixels.DERIVED_NAME, {"format": 1, "datasets": derived})
    return manifest
