"""The ``WorldModel`` contract every family implements."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from worldflux.core.errors import CapabilityError
from worldflux.core.types import Batch, LossOutput, ModelOutput, State, Trajectory, stack_states
from worldflux.nn import ObservationScaler

if TYPE_CHECKING:
    from pathlib import Path


class Capability(enum.StrEnum):
    OBSERVATION_DECODER = "observation_decoder"
    REWARD_PREDICTION = "reward_prediction"
    CONTINUE_PREDICTION = "continue_prediction"
    VALUE_ESTIMATE = "value_estimate"
    POLICY_PRIOR = "policy_prior"


class Maturity(enum.StrEnum):
    REFERENCE = "reference"
    EXPERIMENTAL = "experimental"
    SKELETON = "skeleton"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: the family, the preset it started from, the data
    shapes and the family's resolved hyper-parameters."""

    family: str
    preset: str
    obs_shape: tuple[int, ...]
    action_dim: int
    config: Any  # the family's frozen config dataclass

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "preset": self.preset,
            "obs_shape": list(self.obs_shape),
            "action_dim": self.action_dim,
            "config": dataclasses.asdict(self.config),
        }


class WorldModel(nn.Module):
    """A latent dynamics model of trajectories.

    Families implement ``encode``, ``transition``, ``update``, ``decode`` and ``loss``; the
    default ``rollout`` chains ``transition`` and ``decode``. A family states what it can do in
    ``capabilities``; asking for anything else raises ``CapabilityError``.
    """

    family: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # The non-negative held-out metric the release gates compare before and after training.
    gate_metric: ClassVar[str] = "world_model_loss"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec

    @property
    def config(self) -> Any:
        return self.spec.config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            have = sorted(c.value for c in self.capabilities) or ["none"]
            raise CapabilityError(
                f"family {self.family!r} has no capability {capability.value!r} "
                f"(it declares: {', '.join(have)}); pick a family that does, see "
                "worldflux.list_models()"
            )

    # --- the contract -------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        """Posterior state from a single observation [B, *obs_shape] with no history."""
        raise NotImplementedError

    def transition(self, state: State, action: Tensor) -> State:
        """Prior step: the next state predicted from state and action [B, A]."""
        raise NotImplementedError

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        """Posterior step: the next state given the action taken and the observation seen."""
        raise NotImplementedError

    def decode(self, state: State) -> ModelOutput:
        raise NotImplementedError

    def loss(self, batch: Batch) -> LossOutput:
        raise NotImplementedError

    def rollout(self, state: State, actions: Tensor) -> Trajectory:
        """Imagine ``actions`` [T, B, A] from ``state``; rewards come from decoding each new
        state when the family predicts them."""
        states = [state]
        rewards: list[Tensor] = []
        continues: list[Tensor] = []
        for action in actions:
            state = self.transition(state, action)
            states.append(state)
            if Capability.REWARD_PREDICTION in self.capabilities:
                out = self.decode(state)
                assert out.reward is not None
                rewards.append(out.reward)
                if out.continue_prob is not None:
                    continues.append(out.continue_prob)
        return Trajectory(
            states=stack_states(states),
            actions=actions,
            rewards=torch.stack(rewards) if rewards else None,
            continues=torch.stack(continues) if continues else None,
        )

    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        """Named internal tensors that health gates check for NaN/Inf (logits, projections,
        masks, scheduler states). Families override this; the default exposes none."""
        return {}

    def after_optimizer_step(self) -> None:
        """Called by the trainer after every optimizer step (EMA targets live here)."""

    def fit_observation_statistics(self, observations: Callable[[], Tensor]) -> bool:
        """Fit every not yet fitted ``ObservationScaler`` of the model on training observations
        [N, *obs_shape], which ``observations()`` returns (called only if one needs them). The
        trainer calls this before the first step; a model that was already fitted (loaded
        weights being fine-tuned) keeps its statistics, so its inputs keep their meaning.
        Returns whether anything was fitted."""
        scalers = [
            m for m in self.modules() if isinstance(m, ObservationScaler) and int(m.rows) == 0
        ]
        if scalers:
            rows = observations()
            for scaler in scalers:
                scaler.fit(rows.to(scaler.loc.device))
        return bool(scalers)

    # --- persistence (implemented in worldflux.core.serialization) ----------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        from worldflux.core.serialization import save_pretrained

        return save_pretrained(self, directory)
