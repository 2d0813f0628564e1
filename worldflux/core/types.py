"""The small value types that flow through the world-model contract."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor

from worldflux.core.errors import ContractError

EXTRAS_KEY = re.compile(r"^wf\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
ACTION_KINDS = ("continuous", "discrete")
ActionKind = Literal["continuous", "discrete"]


def validate_extras(extras: Mapping[str, object]) -> dict[str, object]:
    """Extras keys are namespaced ``wf.<domain>.<name>`` so producers cannot collide."""
    bad = [key for key in extras if not isinstance(key, str) or not EXTRAS_KEY.match(key)]
    if bad:
        raise ContractError(
            f"payload extras keys must look like 'wf.<domain>.<name>' (lowercase, e.g. "
            f"'wf.planner.horizon'); invalid: {sorted(map(str, bad))}"
        )
    return dict(extras)


@dataclass(frozen=True)
class State:
    """A latent state: a dict of named tensors, all with the same leading batch dimension."""

    tensors: dict[str, Tensor]

    def __getitem__(self, key: str) -> Tensor:
        try:
            return self.tensors[key]
        except KeyError:
            raise ContractError(
                f"state has no tensor {key!r}; it holds {sorted(self.tensors)}"
            ) from None

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> State:
        return State({k: fn(v) for k, v in self.tensors.items()})

    def detach(self) -> State:
        return State({k: v.detach() for k, v in self.tensors.items()})


def stack_states(states: list[State]) -> State:
    """Stack states along a new leading time dimension."""
    keys = states[0].tensors.keys()
    return State({k: torch.stack([s.tensors[k] for s in states]) for k in keys})


@dataclass(frozen=True)
class ModelOutput:
    """What a state decodes to. Fields a family cannot predict are None."""

    observation: Tensor | None = None
    reward: Tensor | None = None
    continue_prob: Tensor | None = None


@dataclass(frozen=True)
class Trajectory:
    """An imagined rollout: ``states`` has a leading time dimension of T+1 (the start included).

    ``rewards`` and ``continues`` ([T, B]) are present when the family predicts them; ``values``
    ([B]) is the family's estimate of the return after the last state, when it has one.
    """

    states: State
    actions: Tensor
    rewards: Tensor | None = None
    continues: Tensor | None = None
    values: Tensor | None = None

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def state_at(self, t: int) -> State:
        return State({k: v[t] for k, v in self.states.tensors.items()})


@dataclass(frozen=True)
class LossOutput:
    """``loss`` is what the optimizer minimizes; ``components`` are its named terms (tensors, so a
    trainer can check each for NaN); ``metrics`` are detached diagnostics (floats)."""

    loss: Tensor
    components: dict[str, Tensor]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A batch of trajectory segments, shape [B, L, ...].

    Row t holds observation t, the action that led to it (zeros at an episode's first step),
    the reward received on arriving at it, and whether the episode terminated (a true end: no
    bootstrap) or was truncated (a time limit: the future still exists) at it. Discrete actions
    arrive one-hot.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    terminated: Tensor
    truncated: Tensor
    is_first: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.obs.shape[1])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class ActionPayload:
    """Actions handed from a planner or policy to an environment.

    ``tensor`` is [horizon, action_dim]: continuous values, or one-hot rows when kind is discrete.
    """

    kind: ActionKind
    tensor: Tensor
    extras: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ContractError(f"action kind must be one of {ACTION_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "extras", validate_extras(self.extras))


@dataclass(frozen=True)
class ConditionPayload:
    """Conditioning beyond the action (a goal observation, for instance)."""

    goal: Tensor | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extras", validate_extras(self.extras))
