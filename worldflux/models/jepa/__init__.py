from worldflux.models.jepa.config import JEPAConfig
from worldflux.models.jepa.model import JEPA

__all__ = ["JEPA", "JEPAConfig"]
