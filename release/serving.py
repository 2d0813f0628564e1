"""Serving what was released: each family's champion loaded from the registry (every file
verified against the release manifest), its inputs and outputs guarded, swapped when the
champion alias moves. No HTTP here: ``orchestration/api.py`` puts this behind FastAPI.

Guards. The pre-guard checks what a caller sends (shapes, finiteness, action bounds, batch and
horizon limits) and raises ``InputRejected``. The post-guard checks every answer before it
leaves: every number finite, predicted observations and rewards inside the range of the
champion's training split widened by the family policy's plausibility margin (the
``prediction.plausibility`` gate's rule and ranges: per channel for frames); a failing answer
raises ``OutputRefused`` and is never returned. A guard that itself fails is a refusal too
(fail closed): callers see an error, never an unchecked answer.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quality.policy import load_policy
from quality.probes import observation_range
from quality.seed_run import split
from quality.skill import observation_predictor
from release.datasets import read_dataset
from release.mlflow import Mlflow, model_name
from release.object_store import ObjectStore
from worldflux.core.model import Capability, WorldModel
from worldflux.core.types import State
from worldflux.data import DatasetSpec, TrajectoryDataset
from worldflux.hub import download_release
from worldflux.planners import CEMPlanner

MAX_BATCH = 64
MAX_HORIZON = 64


class InputRejected(ValueError):
    """The request cannot be served as sent; the message says what to change."""


class OutputRefused(RuntimeError):
    """The model's answer failed the post-guard and was not returned."""


class GuardFailed(OutputRefused):
    """The post-guard itself failed: the answer is refused unchecked (fail closed)."""


class NoChampion(LookupError):
    """The family has no champion that could be loaded."""


@dataclass(frozen=True)
class Bounds:
    """The plausible range of each predicted quantity: the training data's range widened by
    ``margin`` times its width on each side."""

    obs_low: np.ndarray
    obs_high: np.ndarray
    reward_low: float
    reward_high: float
    margin: float

    @classmethod
    def of(cls, train: TrajectoryDataset, margin: float) -> Bounds:
        """The ranges the plausibility gate judges by (``quality.probes.observation_range``:
        per dimension for vectors, per channel for frames) of the training split."""
        low, high = observation_range(train)
        rewards = train.columns()["reward"]
        widen = margin * np.maximum(high - low, 1e-6)
        r_low, r_high = float(rewards.min()), float(rewards.max())
        r_widen = margin * max(r_high - r_low, 1e-6)
        return cls(low - widen, high + widen, r_low - r_widen, r_high + r_widen, margin)


@dataclass(frozen=True)
class Rollout:
    observations: np.ndarray | None  # [B, H, *obs_shape], None when nothing predicts them
    observation_source: str  # "decoder" or "linear read-out"
    rewards: np.ndarray | None  # [B, H], None when the family predicts no reward
    guard_seconds: float = 0.0  # time the post-guard took


@dataclass(frozen=True)
class Plan:
    actions: np.ndarray  # [H, A] continuous, or [H] discrete indices
    guard_seconds: float = 0.0


@dataclass
class Champion:
    """One family's served champion: the model in memory and what its guards need."""

    family: str
    version: str
    tags: dict[str, str]
    model: WorldModel
    spec: DatasetSpec
    bounds: Bounds
    observation_source: str
    predict_observation: Callable[[State], torch.Tensor] | None
    loaded_at: str

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model": model_name(self.family),
            "version": self.version,
            "gate_report_id": self.tags.get("gate_report_id"),
            "checkpoint_sha256": self.tags.get("checkpoint_sha256"),
            "model_card": self.tags.get("model_card_uri"),
            "dataset": self.tags.get("dataset"),
            "observation_shape": list(self.spec.obs_shape),
            "action": {
                "discrete": self.spec.discrete,
                "dim": self.spec.action_dim,
                "low": self.spec.action_low,
                "high": self.spec.action_high,
            },
            "predicts": {
                "observations": self.observation_source,
                "rewards": Capability.REWARD_PREDICTION in self.model.capabilities,
            },
            "loaded_at": self.loaded_at,
        }

    # ------------------------------------------------------------------------- pre-guard
    def check_rollout(self, observations: Any, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        obs = _finite_array(observations, "observations")
        shape = tuple(self.spec.obs_shape)
        if obs.shape[1:] != shape:
            raise InputRejected(
                f"observations must have shape [batch, {', '.join(map(str, shape))}] for "
                f"{self.family}; got {list(obs.shape)}"
            )
        batch = obs.shape[0]
        if not 1 <= batch <= MAX_BATCH:
            raise InputRejected(f"batch size must be 1..{MAX_BATCH}, got {batch}")
        act = _finite_array(actions, "actions")
        if self.spec.discrete:
            if act.ndim != 2 or act.shape[0] != batch:
                raise InputRejected(
                    f"actions must have shape [batch={batch}, horizon] (discrete indices); got "
                    f"{list(act.shape)}"
                )
            if (
                not np.all(act == np.round(act))
                or act.min() < 0
                or act.max() >= self.spec.action_dim
            ):
                raise InputRejected(
                    f"discrete actions must be integers 0..{self.spec.action_dim - 1}"
                )
        else:
            if act.ndim != 3 or act.shape[0] != batch or act.shape[2] != self.spec.action_dim:
                raise InputRejected(
                    f"actions must have shape [batch={batch}, horizon, {self.spec.action_dim}]; "
                    f"got {list(act.shape)}"
                )
            low, high = self.spec.action_low, self.spec.action_high
            outside = _first((act < low) | (act > high))
            if outside is not None:
                (b, t, a), count = outside
                raise InputRejected(
                    f"actions[{b}][{t}][{a}] = {act[b, t, a]:g} is outside the action space "
                    f"[{low:g}, {high:g}] ({count} value(s) outside)"
                )
        horizon = act.shape[1]
        if not 1 <= horizon <= MAX_HORIZON:
            raise InputRejected(
                f"the horizon (actions per row) must be 1..{MAX_HORIZON}, got {horizon}"
            )
        return obs.astype(np.float32), act

    # --------------------------------------------------------------------------- inference
    def rollout(self, observations: Any, actions: Any) -> Rollout:
        obs, act = self.check_rollout(observations, actions)
        with torch.no_grad():
            state = self.model.encode(torch.as_tensor(obs, device=self.model.device))
            model_actions = torch.as_tensor(self._model_actions(act), device=self.model.device)
            trajectory = self.model.rollout(state, model_actions.transpose(0, 1))
            horizon = act.shape[1]
            predicted = None
            if self.predict_observation is not None:
                steps = [
                    self.predict_observation(trajectory.state_at(k)).reshape(
                        obs.shape[0], *self.spec.obs_shape
                    )
                    for k in range(1, horizon + 1)
                ]
                predicted = torch.stack(steps, dim=1).cpu().numpy()
            rewards = None
            if trajectory.rewards is not None:
                per_row = trajectory.rewards.transpose(0, 1).reshape(obs.shape[0], horizon)
                rewards = per_row.cpu().numpy()
        result = Rollout(predicted, self.observation_source, rewards)
        seconds = guarded(lambda: self.check_rollout_output(result))
        return Rollout(predicted, self.observation_source, rewards, seconds)

    def plan(self, observation: Any, horizon: int, seed: int = 0) -> Plan:
        """A CEM plan from one observation, in the environment's action space."""
        self.model.require(Capability.REWARD_PREDICTION)
        if not 1 <= horizon <= MAX_HORIZON:
            raise InputRejected(f"horizon must be 1..{MAX_HORIZON}, got {horizon}")
        obs = _finite_array(observation, "observation")
        if obs.shape != tuple(self.spec.obs_shape):
            raise InputRejected(
                f"observation must have shape {list(self.spec.obs_shape)} for {self.family}; "
                f"got {list(obs.shape)}"
            )
        planner = CEMPlanner(
            horizon=horizon,
            action_dim=self.spec.action_dim,
            discrete=self.spec.discrete,
            seed=seed,
        )
        with torch.no_grad():
            state = self.model.encode(
                torch.as_tensor(obs[None].astype(np.float32), device=self.model.device)
            )
            payload = planner.plan(self.model, state)
        actions = np.asarray(self.spec.env_action(payload.tensor.cpu().numpy()))
        return Plan(actions, guarded(lambda: self.check_plan_output(actions)))

    def _model_actions(self, act: np.ndarray) -> np.ndarray:
        """Environment actions as the model saw them in training: one-hot, or scaled to
        [-1, 1] (the data set's ``sample`` convention)."""
        if self.spec.discrete:
            return np.eye(self.spec.action_dim, dtype=np.float32)[act.astype(np.int64)]
        low, high = self.spec.action_low, self.spec.action_high
        return ((act - low) / (high - low) * 2.0 - 1.0).astype(np.float32)

    # ------------------------------------------------------------------------ post-guard
    def check_rollout_output(self, result: Rollout) -> None:
        if result.observations is not None:
            obs = result.observations
            flat = obs.reshape(obs.shape[0], obs.shape[1], -1)
            _refuse_non_finite(flat, "predicted observations")
            low, high = self.bounds.obs_low, self.bounds.obs_high
            outside = _first((flat < low) | (flat > high))
            if outside is not None:
                (b, t, d), count = outside
                raise OutputRefused(
                    f"implausible prediction: observation[{b}][{t}] dimension {d} = "
                    f"{flat[b, t, d]:.4g} is outside [{low[d]:.4g}, {high[d]:.4g}] (the training "
                    f"data's range plus a {self.bounds.margin:g} margin); {count} value(s) "
                    "outside. Try a shorter horizon"
                )
        if result.rewards is not None:
            _refuse_non_finite(result.rewards, "predicted rewards")
            low_r, high_r = self.bounds.reward_low, self.bounds.reward_high
            outside = _first((result.rewards < low_r) | (result.rewards > high_r))
            if outside is not None:
                (b, t), _ = outside
                raise OutputRefused(
                    f"implausible prediction: reward[{b}][{t}] = {result.rewards[b, t]:.4g} is "
                    f"outside [{low_r:.4g}, {high_r:.4g}] (the training data's range plus a "
                    f"{self.bounds.margin:g} margin)"
                )

    def check_plan_output(self, actions: np.ndarray) -> None:
        _refuse_non_finite(actions.astype(np.float64), "planned actions")
        if self.spec.discrete:
            if actions.min() < 0 or actions.max() >= self.spec.action_dim:
                raise OutputRefused("planned discrete actions are outside the action space")
        elif actions.min() < self.spec.action_low or actions.max() > self.spec.action_high:
            raise OutputRefused("planned actions are outside the action space")


def guarded(check: Callable[[], None]) -> float:
    """Run a post-guard and return its seconds; a failure of the guard itself refuses the
    answer (fail closed: an unchecked answer is never returned)."""
    started = time.perf_counter()
    try:
        check()
    except OutputRefused:
        raise
    except Exception as err:
        raise GuardFailed(f"the output guard failed ({type(err).__name__}: {err})") from err
    return time.perf_counter() - started


def _finite_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputRejected(
            f"{what} must be a rectangular array of numbers (nested lists of equal length)"
        ) from err
    if array.size == 0:
        raise InputRejected(f"{what} is empty")
    bad = _first(~np.isfinite(array))
    if bad is not None:
        raise InputRejected(
            f"{what}{list(bad[0])} is not a finite number ({bad[1]} value(s) are not)"
        )
    return array


def _refuse_non_finite(values: np.ndarray, what: str) -> None:
    bad = _first(~np.isfinite(values))
    if bad is not None:
        raise OutputRefused(f"{what} hold a non-finite value at {list(bad[0])}")


def _first(mask: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """The index of the first True in ``mask`` and how many there are; None when there is none
    (every guard names the first offending value and counts the rest)."""
    where = np.argwhere(mask)
    return (tuple(int(i) for i in where[0]), len(where)) if len(where) else None


# ------------------------------------------------------------------------------- loading
def load_champion(
    family: str, version: str, mlflow: Mlflow, store: ObjectStore, device: str = "cpu"
) -> Champion:
    """Version ``version`` of the family's registered model, downloaded through the registry
    (every file verified against its ``files_sha256`` tag) with the data set it was trained on
    (the exact version, verified) for its guards and, for decoder-free families, the linear
    read-out the gates measured it with."""
    import worldflux

    tags = mlflow.version_tags(family, version)
    name, digest = tags.get("dataset"), tags.get("dataset_digest")
    if not name or not digest:
        raise NoChampion(
            f"{model_name(family)} v{version} has no dataset/dataset_digest tags (released "
            "before serving existed?): promote a current gate report to serve it"
        )
    data, _ = read_dataset(store, name, digest)
    with tempfile.TemporaryDirectory(prefix="worldflux-serve-") as tmp:
        folder = download_release(
            f"models:/{model_name(family)}/{version}",
            Path(tmp) / "weights",
            tracking_uri=mlflow.tracking_uri,
        )
        model = worldflux.from_pretrained(folder, device=device)
    model.eval()
    train, _ = split(data)
    source, predict = observation_predictor(model, train)
    margin = float(load_policy(family).thresholds["plausibility_margin"])
    return Champion(
        family=family,
        version=version,
        tags=tags,
        model=model,
        spec=data.spec,
        bounds=Bounds.of(train, margin),
        observation_source=source,
        predict_observation=predict,
        loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


class Champions:
    """The served champions, kept current: ``refresh`` reads each family's champion alias and,
    when it moved, loads the new version and swaps it in (requests in flight keep the object
    they started with). A version that fails to load leaves the old one serving and is
    reported in ``errors``."""

    def __init__(
        self,
        families: Sequence[str],
        mlflow: Mlflow,
        store: ObjectStore,
        loader: Callable[..., Champion] = load_champion,
    ) -> None:
        self.families = list(families)
        self.mlflow, self.store, self.loader = mlflow, store, loader
        self.current: dict[str, Champion] = {}
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, family: str) -> Champion:
        champion = self.current.get(family)
        if champion is None:
            why = self.errors.get(family, "it has no champion")
            raise NoChampion(f"no {family} model is being served: {why}")
        return champion

    def refresh(self) -> list[str]:
        """Load every family whose champion alias moved; returns what changed."""
        changed = []
        for family in self.families:
            try:
                version = self.mlflow.aliases(family).get("champion")
            except Exception as err:  # the registry is down: keep serving what we have
                self.errors[family] = f"cannot read the champion alias: {err}"
                continue
            served = self.current.get(family)
            if version is None or (served is not None and served.version == version):
                continue
            try:
                self.current[family] = self.loader(family, version, self.mlflow, self.store)
            except Exception as err:  # keep the old champion; say why the new one is not served
                kept = f"v{served.version} still served" if served else "nothing served"
                self.errors[family] = f"v{version} failed to load ({err}); {kept}"
                continue
            self.errors.pop(family, None)
            changed.append(f"{family} v{version}")
        return changed

    def start(self, poll_seconds: float) -> None:
        def poll() -> None:
            while not self._stop.wait(poll_seconds):
                self.refresh()

        self._thread = threading.Thread(target=poll, name="champion-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
