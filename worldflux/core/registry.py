"""Family registry: ``"<family>:<preset>"`` ids resolve to a model class and a config.

A family registers itself with ``@register_family`` in its own module under
``worldflux/models/``; that package imports every module it contains, so adding a family
touches nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from worldflux.core.errors import ConfigError
from worldflux.core.model import Maturity, ModelSpec, WorldModel


@dataclasses.dataclass(frozen=True)
class FamilyInfo:
    name: str
    model_cls: type[WorldModel]
    presets: Mapping[str, Any]  # preset name -> frozen config dataclass
    maturity: Maturity
    description: str
    aliases: tuple[str, ...] = ()


_FAMILIES: dict[str, FamilyInfo] = {}
_ALIASES: dict[str, str] = {}
_discovered = False

M = TypeVar("M", bound=type[WorldModel])


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def register_family(
    name: str,
    *,
    presets: Mapping[str, Any],
    maturity: Maturity | str,
    description: str,
    aliases: Iterable[str] = (),
) -> Callable[[M], M]:
    """Class decorator adding a ``WorldModel`` subclass to the registry under ``name``."""
    if "ci" not in presets or "small" not in presets:
        raise ConfigError(f"family {name!r} must define presets 'ci' and 'small'")
    configs = list(presets.values())
    if not all(dataclasses.is_dataclass(c) and type(c) is type(configs[0]) for c in configs):
        raise ConfigError(f"family {name!r}: every preset must be an instance of one dataclass")

    def decorate(cls: M) -> M:
        for key in (name, *aliases):
            owner = _FAMILIES.get(_ALIASES.get(key, key))
            # Re-importing the same module re-registers the same class: allowed.
            same = owner is not None and (
                owner.model_cls.__module__,
                owner.model_cls.__qualname__,
            ) == (cls.__module__, cls.__qualname__)
            if owner is not None and not same:
                raise ConfigError(f"family name {key!r} is already registered")
        cls.family = name
        _FAMILIES[name] = FamilyInfo(
            name=name,
            model_cls=cls,
            presets=dict(presets),
            maturity=Maturity(maturity),
            description=description,
            aliases=tuple(aliases),
        )
        for alias in aliases:
            _ALIASES[alias] = name
        return cls

    return decorate


def _discover() -> None:
    global _discovered
    if not _discovered:
        importlib.import_module("worldflux.models")
        _discovered = True


def canonical_family(name: str) -> str:
    """The family's registered name for a name or alias (``dreamer`` -> ``dreamerv3``)."""
    _discover()
    name = _ALIASES.get(name, name)
    if name not in _FAMILIES:
        choices = sorted(_FAMILIES) + sorted(_ALIASES)
        raise ConfigError(
            f"unknown family {name!r}; valid families: {', '.join(sorted(_FAMILIES))}"
            f"{_suggest(name, choices)}"
        )
    return name


def get_family(name: str) -> FamilyInfo:
    return _FAMILIES[canonical_family(name)]


def parse_model_id(model_id: str) -> tuple[str, str]:
    family, sep, preset = model_id.partition(":")
    if not sep or not family or not preset:
        raise ConfigError(
            f"model id {model_id!r} must look like '<family>:<preset>', e.g. 'dreamerv3:ci'"
        )
    info = get_family(family)
    if preset not in info.presets:
        raise ConfigError(
            f"unknown preset {preset!r} for family {info.name!r}; valid presets: "
            f"{', '.join(info.presets)}{_suggest(preset, info.presets)}"
        )
    return info.name, preset


def _apply_overrides(config: Any, overrides: Mapping[str, Any], family: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config)}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"unknown override {key!r} for family {family!r}; valid keys: "
                f"{', '.join(sorted(fields))}{_suggest(key, fields)}"
            )
        current = getattr(config, key)
        if not _same_kind(current, value):
            raise ConfigError(
                f"override {key!r} for family {family!r} must be {type(current).__name__}, "
                f"got {value!r}"
            )
    return dataclasses.replace(config, **overrides)


def _same_kind(current: Any, value: Any) -> bool:
    # bool is an int subclass; an int where a float is expected is harmless.
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(current))


def build_model(spec: ModelSpec) -> WorldModel:
    """Instantiate a model from a complete spec (used by ``from_pretrained``)."""
    info = get_family(spec.family)
    validate = getattr(spec.config, "validate", None)
    if callable(validate):
        validate()
    return info.model_cls(spec)


def create_world_model(
    model_id: str, *, obs_shape: Iterable[int], action_dim: int, **overrides: Any
) -> WorldModel:
    """Create a fresh model, e.g. ``create_world_model("dreamerv3:ci", obs_shape=(4,),
    action_dim=2, hidden=64)``. Overrides replace fields of the preset's config."""
    family, preset = parse_model_id(model_id)
    shape = tuple(int(d) for d in obs_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"obs_shape must be a non-empty tuple of positive ints, got {shape}")
    if int(action_dim) <= 0:
        raise ConfigError(f"action_dim must be a positive int, got {action_dim}")
    info = _FAMILIES[family]
    config = _apply_overrides(info.presets[preset], overrides, family)
    spec = ModelSpec(family, preset, shape, int(action_dim), config)
    return build_model(spec)


def create_world_model_for(model_id: str, data_spec: Any, **overrides: Any) -> WorldModel:
    """Create a model shaped for a data set's spec (``obs_shape``, ``action_dim``,
    ``discrete``). A family whose config has a ``discrete_actions`` field gets it from the spec
    unless an override says otherwise, so callers never special-case a family."""
    family, preset = parse_model_id(model_id)
    if any(
        f.name == "discrete_actions" for f in dataclasses.fields(_FAMILIES[family].presets[preset])
    ):
        overrides.setdefault("discrete_actions", bool(data_spec.discrete))
    return create_world_model(
        model_id, obs_shape=data_spec.obs_shape, action_dim=data_spec.action_dim, **overrides
    )


def list_models() -> list[dict[str, Any]]:
    """One entry per family: name, maturity, presets, aliases, description."""
    _discover()
    return [
        {
            "family": info.name,
            "maturity": info.maturity.value,
            "presets": list(info.presets),
            "aliases": list(info.aliases),
            "description": info.description,
        }
        for info in sorted(_FAMILIES.values(), key=lambda i: i.name)
    ]
