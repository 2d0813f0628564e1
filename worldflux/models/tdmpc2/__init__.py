from worldflux.models.tdmpc2.config import TDMPC2Config
from worldflux.models.tdmpc2.model import TDMPC2

__all__ = ["TDMPC2", "TDMPC2Config"]
