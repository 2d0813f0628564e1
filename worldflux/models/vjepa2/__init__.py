from worldflux.models.vjepa2.config import PRESETS, VJEPA2Config
from worldflux.models.vjepa2.model import VJEPA2

__all__ = ["PRESETS", "VJEPA2", "VJEPA2Config"]
