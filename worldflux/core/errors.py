"""Typed errors: each names what is wrong and what to do about it."""

from __future__ import annotations


class WorldFluxError(Exception):
    """Base class of every error this library raises on purpose."""


class ContractError(WorldFluxError, ValueError):
    """A value does not satisfy the world-model contract (shapes, keys, payloads)."""


class ConfigError(WorldFluxError, ValueError):
    """An unknown family, preset or override, or an invalid configuration value."""


class CapabilityError(WorldFluxError, NotImplementedError):
    """A family was asked for something it does not declare (e.g. reward prediction)."""


class CheckpointError(WorldFluxError):
    """A saved model or training checkpoint is missing, corrupted or does not match."""


class DatasetError(WorldFluxError, ValueError):
    """A trajectory data set is missing, corrupted or malformed."""


class TrainingDivergedError(WorldFluxError, FloatingPointError):
    """A loss component or gradient became NaN/Inf. ``step`` and ``component`` say where."""

    def __init__(self, step: int, component: str, kind: str) -> None:
        self.step = step
        self.component = component
        self.kind = kind
        super().__init__(
            f"non-finite {kind} {component!r} at step {step}; lower the learning rate, "
            "tighten gradient clipping or check the data for extreme values"
        )
