"""Shared glue for the skeleton families (dit, ssm, renderer3d, physics, gan).

A skeleton is a minimal but honest model of its family's idea that satisfies the contract:
the state is one latent vector, observations are predicted from it, and the default loss is
next-observation prediction plus reconstruction in symlog space. Each family supplies
``_encode``, ``_step`` and ``_decode`` (and may replace ``loss``). Not a family itself: the
leading underscore keeps the registry's discovery away from this module.
"""

from __future__ import annotations

import dataclasses
import math

from torch import Tensor

from worldflux.core.model import Capability, ModelSpec, WorldModel
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.nn import symexp, symlog


@dataclasses.dataclass(frozen=True)
class SkeletonConfig:
    latent: int = 16
    hidden: int = 32


SKELETON_PRESETS = {"ci": SkeletonConfig(), "small": SkeletonConfig(latent=64, hidden=128)}


class SkeletonModel(WorldModel):
    capabilities = frozenset({Capability.OBSERVATION_DECODER})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.obs_dim = math.prod(spec.obs_shape)

    # Family-specific pieces, all on flattened symlog observations.
    def _encode(self, obs: Tensor) -> Tensor:
        raise NotImplementedError

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        raise NotImplementedError

    def _decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _flat(self, obs: Tensor) -> Tensor:
        return symlog(obs.flatten(-len(self.spec.obs_shape)))

    def encode(self, obs: Tensor) -> State:
        return State({"latent": self._encode(self._flat(obs))})

    def transition(self, state: State, action: Tensor) -> State:
        return State({"latent": self._step(state["latent"], action)})

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        return self.encode(obs)

    def decode(self, state: State) -> ModelOutput:
        obs = symexp(self._decode(state["latent"]))
        return ModelOutput(observation=obs.reshape(*obs.shape[:-1], *self.spec.obs_shape))

    def loss(self, batch: Batch) -> LossOutput:
        obs = self._flat(batch.obs)
        z = self._encode(obs[:, :-1])
        reconstruction = (self._decode(z) - obs[:, :-1]).pow(2).mean()
        prediction = (self._decode(self._step(z, batch.action[:, 1:])) - obs[:, 1:]).pow(2).mean()
        total = reconstruction + prediction
        return LossOutput(
            total,
            {"reconstruction": reconstruction, "prediction": prediction},
            {"world_model_loss": total.item()},
        )
