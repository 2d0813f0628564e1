"""Faults injected on purpose, to prove that each gate can fail (scripts/gate_power.py, and a
small version of each in tests/quality/test_gate_power.py).

Every injection goes through the real path: real training runs on real data (or a data set
made unlearnable), real checkpoints written and re-measured, the real gate evaluation. A fault
lives in a model subclass, a training setting, a data transform or a patched planner; nothing
edits the evidence after the fact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import Tensor

import worldflux
from quality import probes
from quality.evaluate import build_report, evaluate_gates
from quality.policy import Policy, load_policy
from quality.report import validate_report
from quality.seed_run import SeedRunSpec, run_seed, with_stored_measurements
from quality.sweep import repeat_runs
from worldflux import WorldModel
from worldflux.core.types import State, Trajectory
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.planners import CEMPlanner

Factory = Callable[[SeedRunSpec, TrajectoryDataset], WorldModel]


def noise_dataset(data: TrajectoryDataset, seed: int = 0) -> TrajectoryDataset:
    """The same episodes, steps and actions, but observations and rewards replaced by i.i.d.
    Gaussian noise with each dimension's mean and spread: a data set whose dynamics cannot be
    learned, although its marginal statistics (what a "drop from initial weights" rewards) are
    those of the real data."""
    rng = np.random.default_rng(seed)
    columns = data.columns()
    obs = data.observations().astype(np.float64)
    flat = obs.reshape(len(data), -1)
    noisy = rng.normal(flat.mean(0), flat.std(0), size=flat.shape).reshape(obs.shape)
    reward = columns["reward"].astype(np.float64)
    noisy_reward = rng.normal(reward.mean(), reward.std(), size=reward.shape)
    noisy_reward[columns["step"] == 0] = 0.0  # the row convention: no reward before acting
    return TrajectoryDataset(
        name=f"{data.name}_noise",
        spec=data.spec,
        observation=noisy.astype(np.float32),
        action=columns["action"],
        reward=noisy_reward.astype(columns["reward"].dtype),
        terminated=columns["terminated"],
        truncated=columns["truncated"],
        episode=columns["episode"],
        step=columns["step"],
    )


# ----------------------------------------------------------------------- faulty model classes
def _subclass_factory(mixin: type) -> Factory:
    """A factory building the family's own class with ``mixin`` in front of it."""

    def factory(spec: SeedRunSpec, data: TrajectoryDataset) -> WorldModel:
        family = worldflux.canonical_family(spec.family)
        base = worldflux.create_world_model_for(f"{family}:{spec.preset}", data.spec)
        cls = type(f"{mixin.__name__}{type(base).__name__}", (mixin, type(base)), {})
        model: WorldModel = cls(base.spec)
        return model

    return factory


class DropsBufferOnSave:
    """Learns an input shift kept in a non-persistent buffer: the save omits it, so a reloaded
    copy predicts differently."""

    obs_shift: Tensor

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)  # type: ignore[call-arg]
        self.register_buffer("obs_shift", torch.zeros(spec.obs_shape), persistent=False)  # type: ignore[attr-defined]

    def encode(self, obs: Tensor) -> State:
        return super().encode(obs - self.obs_shift)  # type: ignore[misc]

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()  # type: ignore[misc]
        self.obs_shift += 1e-5


class UnloadableSave:
    """Saves a tensor that the family's class does not have: reloading raises."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)  # type: ignore[call-arg]
        self.register_buffer("stray", torch.ones(3))  # type: ignore[attr-defined]


class NaNOutputsInEval:
    """Trains normally, but its imagined rewards are NaN in evaluation: no divergence, yet
    outputs that must not ship."""

    def rollout(self, state: State, actions: Tensor) -> Trajectory:
        trajectory: Trajectory = super().rollout(state, actions)  # type: ignore[misc]
        if self.training or trajectory.rewards is None:  # type: ignore[attr-defined]
            return trajectory
        return dataclasses.replace(trajectory, rewards=trajectory.rewards * float("nan"))


class UnseededNoise:
    """Perturbs its weights after every step with an unseeded generator: two runs of the same
    seed differ."""

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()  # type: ignore[misc]
        generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        with torch.no_grad():
            first = next(self.parameters())  # type: ignore[attr-defined]
            first.add_(1e-6 * torch.randn(first.shape, generator=generator))


class NoisyFrames:
    """Trains normally, but the frames it decodes in evaluation carry Gaussian noise (std 0.1):
    what a release manager would see as snow flickering over every imagined frame. The noise is
    seeded by the frames themselves, so the same state always gets the same noise (the probes
    of one model agree) and the next state other noise. The noise is not in the weights: the
    checkpoint reloads as the family's class, without it, so parity and the stored-weights
    re-measurement fail too."""

    def decode(self, state: State) -> Any:
        out = super().decode(state)  # type: ignore[misc]
        if self.training or out.observation is None:  # type: ignore[attr-defined]
            return out
        frames = out.observation
        seed = int(frames.double().sum().item() * 1e4) % 2**31
        generator = torch.Generator(device=frames.device).manual_seed(seed)
        noise = torch.randn(frames.shape, generator=generator, device=frames.device)
        return dataclasses.replace(out, observation=frames + 0.1 * noise)


class CollapsedEmbedding:
    """Every observation maps to one learned point: a collapsed joint-embedding encoder."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)  # type: ignore[call-arg]
        self.point = torch.nn.Parameter(torch.randn(spec.config.embed))

    def _raw(self, obs: Tensor) -> Tensor:
        raw: Tensor = super()._raw(obs)  # type: ignore[misc]
        return 0 * raw + self.point


class WrongHorizonPlanner(CEMPlanner):
    """Returns one action fewer than its horizon."""

    def plan(self, model: WorldModel, state: State) -> Any:
        payload = super().plan(model, state)
        return dataclasses.replace(payload, tensor=payload.tensor[:-1])


@contextlib.contextmanager
def _wrong_horizon_planner() -> Iterator[None]:
    with mock.patch.object(probes, "CEMPlanner", WrongHorizonPlanner):
        yield


# ------------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Injection:
    """One fault and the gate(s) meant to catch it. ``expect_pass``: a control that the named
    gates must *pass* (healthy runs, the 4/5 side of the success boundary)."""

    name: str
    family: str
    catches: tuple[str, ...]
    what: str
    seeds: int = 3
    per_seed: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed index -> changes
    transform: Callable[[TrajectoryDataset], TrajectoryDataset] | None = None
    factory: Factory | None = None
    repeat_factory: Factory | None = None
    patch: Callable[[], contextlib.AbstractContextManager[None]] | None = None
    expect_pass: bool = False


LEARNING_FAMILIES = ("dreamerv3", "tdmpc2", "token", "diffusion", "jepa", "vjepa2")
FROZEN = {"lr": 1e-12}

INJECTIONS: tuple[Injection, ...] = (
    # Controls: the families releasable on their real data at the nightly policy
    # (docs/quality-gates.md); a blocked sweep of theirs is a false block.
    *(
        Injection(f"healthy {family}", family, (), "control: real data", expect_pass=True)
        for family in ("tdmpc2", "token", "diffusion", "dreamerv3_pixels")
    ),
    *(
        Injection(
            f"unlearnable data ({family})",
            family,
            ("common.seed_success_rate",),
            "observations and rewards replaced by noise with the data's marginal statistics",
            transform=noise_dataset,
        )
        for family in LEARNING_FAMILIES
    ),
    Injection(
        "diverging lr",
        "tdmpc2",
        ("benchmark.numerical_stability", "common.finite_runs"),
        "lr 1e12",
        per_seed={i: {"lr": 1e12} for i in range(3)},
    ),
    Injection(
        "frozen lr",
        "tdmpc2",
        ("common.seed_success_rate", "benchmark.loss_trend"),
        "lr 1e-12",
        per_seed={i: FROZEN for i in range(3)},
    ),
    Injection(
        "save drops a tensor",
        "tdmpc2",
        ("reproducibility.save_load_parity", "reproducibility.stored_weights"),
        "a learned buffer the save omits",
        factory=_subclass_factory(DropsBufferOnSave),
    ),
    Injection(
        "reload raises",
        "tdmpc2",
        ("reproducibility.save_load_parity", "reproducibility.stored_weights"),
        "a saved tensor the family's class does not have",
        factory=_subclass_factory(UnloadableSave),
    ),
    Injection(
        "seeds disagree",
        "tdmpc2",
        ("reproducibility.seed_stability",),
        "one seed's reward and value losses weighted 10x (its held-out metric is on another "
        "scale, while it still learns the dynamics)",
        per_seed={2: {"overrides": {"reward_coef": 1.0, "value_coef": 1.0}}},
    ),
    Injection(
        "non-deterministic re-run",
        "tdmpc2",
        ("reproducibility.repeatability",),
        "re-runs perturbed by an unseeded generator",
        repeat_factory=_subclass_factory(UnseededNoise),
    ),
    Injection(
        "planner wrong horizon",
        "tdmpc2",
        ("planner.boundary",),
        "the CEM planner returns horizon - 1 actions",
        patch=_wrong_horizon_planner,
    ),
    Injection(
        "NaN outputs without divergence",
        "tdmpc2",
        ("benchmark.numerical_stability", "family.reference.finite_components"),
        "imagined rewards are NaN in evaluation only",
        factory=_subclass_factory(NaNOutputsInEval),
    ),
    Injection(
        "frozen lr (frames)",
        "dreamerv3_pixels",
        ("prediction.psnr_5", "prediction.ssim_10"),
        "lr 1e-12: the decoder keeps its initial mid-grey frames, which the last real frame "
        "held still beats",
        per_seed={i: FROZEN for i in range(3)},
    ),
    Injection(
        "noisy frames",
        "dreamerv3_pixels",
        ("prediction.psnr_5", "prediction.ssim_10", "prediction.temporal_consistency"),
        "decoded frames carry Gaussian noise (std 0.1) in evaluation",
        factory=_subclass_factory(NoisyFrames),
    ),
    Injection(
        "embedding collapse",
        "jepa",
        ("family.jepa.embedding_spread", "prediction.output_spread"),
        "every observation encodes to one learned point",
        factory=_subclass_factory(CollapsedEmbedding),
    ),
    Injection(
        "success boundary 4/5",
        "tdmpc2",
        ("common.seed_success_rate",),
        "5 seeds, one frozen: 4/5 succeed = ceil(0.8 x 5)",
        seeds=5,
        per_seed={4: FROZEN},
        expect_pass=True,
    ),
    Injection(
        "success boundary 3/5",
        "tdmpc2",
        ("common.seed_success_rate",),
        "5 seeds, two frozen: 3/5 succeed < ceil(0.8 x 5)",
        seeds=5,
        per_seed={3: FROZEN, 4: FROZEN},
    ),
)


def injection(name: str) -> Injection:
    for item in INJECTIONS:
        if item.name == name:
            return item
    raise KeyError(f"no injection {name!r}; known: {[i.name for i in INJECTIONS]}")


@dataclass(frozen=True)
class Outcome:
    injection: Injection
    seeds: list[int]
    report: dict[str, Any]

    @property
    def statuses(self) -> dict[str, str]:
        return {g["name"]: g["status"] for g in self.report["gates"]["results"]}

    @property
    def blocking(self) -> set[str]:
        return {n for n, s in self.statuses.items() if s in ("fail", "skipped")}

    @property
    def caught(self) -> bool:
        """The intended gates did what they must: all fail (a fault), or all pass (a control,
        which must also be releasable)."""
        if self.injection.expect_pass:
            passed = all(self.statuses.get(g) == "pass" for g in self.injection.catches)
            return passed and (bool(self.injection.catches) or not self.blocking)
        return all(self.statuses.get(g) == "fail" for g in self.injection.catches)

    @property
    def others(self) -> set[str]:
        return self.blocking - set(self.injection.catches)


def run(
    item: Injection,
    first_seed: int = 0,
    *,
    steps: int | None = None,
    policy: Policy | None = None,
    device: str = "cpu",
) -> Outcome:
    """One sweep of the injection through the real path: train each seed (checkpoint saved),
    re-measure the stored weights, two same-seed re-runs, evaluate every gate, build and
    validate the report. ``steps`` defaults to the policy's."""
    policy = policy or load_policy(item.family)
    steps = steps or int(policy.training["steps"])
    data = load_bundled(policy.training["dataset"])
    if item.transform is not None:
        data = item.transform(data)
    seeds = list(range(first_seed, first_seed + item.seeds))
    patch = item.patch() if item.patch is not None else contextlib.nullcontext()
    with patch, tempfile.TemporaryDirectory(prefix="worldflux-gate-power-") as tmp:
        runs = []
        for index, seed in enumerate(seeds):
            changes = {"dataset": data.name, "device": device, **item.per_seed.get(index, {})}
            spec = SeedRunSpec.from_policy(policy, seed, steps, **changes)
            runs.append(
                run_seed(
                    spec, policy, checkpoint_root=Path(tmp), data=data, model_factory=item.factory
                )
            )
        runs = with_stored_measurements(runs, policy, data, device=device)
        repeats = repeat_runs(
            policy, seeds[0], data=data, device=device, model_factory=item.repeat_factory
        )
        gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=data.spec.obs_shape)
        report = build_report(runs, policy, gates, repeats=repeats)
    validate_report(report)
    return Outcome(item, seeds, report)
