"""WorldFlux: world models with one API over many families.

model = worldflux.create_world_model("dreamerv3:ci", obs_shape=(4,), action_dim=2)
out = model.loss(batch)
model.save_pretrained("out/"); same = worldflux.from_pretrained("out/")
"""

from worldflux.core.errors import (
    CapabilityError,
    CheckpointError,
    ConfigError,
    ContractError,
    DatasetError,
    TrainingDivergedError,
    WorldFluxError,
)
from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import (
    canonical_family,
    create_world_model,
    create_world_model_for,
    list_models,
    register_family,
)
from worldflux.core.serialization import contract_fingerprint, from_pretrained
from worldflux.core.types import (
    ActionPayload,
    Batch,
    ConditionPayload,
    LossOutput,
    ModelOutput,
    State,
    Trajectory,
)
from worldflux.device import select_device
from worldflux.hub import RegistryError, RegistryUnavailable
from worldflux.version import __version__

__all__ = [
    "ActionPayload",
    "Batch",
    "Capability",
    "CapabilityError",
    "CheckpointError",
    "ConditionPayload",
    "ConfigError",
    "ContractError",
    "DatasetError",
    "LossOutput",
    "Maturity",
    "ModelOutput",
    "ModelSpec",
    "RegistryError",
    "RegistryUnavailable",
    "State",
    "TrainingDivergedError",
    "Trajectory",
    "WorldFluxError",
    "WorldModel",
    "__version__",
    "canonical_family",
    "contract_fingerprint",
    "create_world_model",
    "create_world_model_for",
    "from_pretrained",
    "list_models",
    "register_family",
    "select_device",
]
