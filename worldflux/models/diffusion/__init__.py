from worldflux.models.diffusion.config import DiffusionConfig
from worldflux.models.diffusion.model import DiffusionWorldModel

__all__ = ["DiffusionConfig", "DiffusionWorldModel"]
