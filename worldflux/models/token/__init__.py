from worldflux.models.token.config import TokenConfig
from worldflux.models.token.model import TokenWorldModel
from worldflux.models.token.tokenizer import BinTokenizer

__all__ = ["BinTokenizer", "TokenConfig", "TokenWorldModel"]
