from worldflux.models.dreamerv3.config import DreamerV3Config
from worldflux.models.dreamerv3.model import DreamerV3, DreamerV3Pixels

__all__ = ["DreamerV3", "DreamerV3Config", "DreamerV3Pixels"]
