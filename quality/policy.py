"""Gate policy: one JSON file of thresholds (and the training recipe) per family.

``quality/policies/default.json`` holds the seed documents' defaults; ``<family>.json``
overrides keys of it. Every report records the resolved policy and its sha256 digest, so a
report can be re-checked against exactly the thresholds it was judged by.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICY_DIR = Path(__file__).parent / "policies"


class PolicyError(ValueError):
    """A policy file is missing, malformed, or sets an unknown key."""


@dataclass(frozen=True)
class Policy:
    family: str
    thresholds: dict[str, Any]
    training: dict[str, Any]
    sources: tuple[str, ...]  # the files merged, in order
    kind: str | None = None  # which family-specific gates apply (quality/gates/family.py)
    required_gates: tuple[str, ...] = ()  # gates that may never be not-applicable

    def __getitem__(self, key: str) -> Any:
        try:
            return self.thresholds[key]
        except KeyError:
            raise PolicyError(
                f"policy for {self.family!r} has no threshold {key!r}; known: "
                f"{sorted(self.thresholds)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "kind": self.kind,
            "required_gates": list(self.required_gates),
            "thresholds": self.thresholds,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], sources: tuple[str, ...] = ()) -> Policy:
        """The policy a report recorded (``to_dict``), to re-check the report against it."""
        return cls(
            family=data["family"],
            thresholds=dict(data["thresholds"]),
            training=dict(data["training"]),
            sources=sources,
            kind=data.get("kind"),
            required_gates=tuple(data.get("required_gates", ())),
        )

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PolicyError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path} must hold a JSON object")
    return data


def load_policy(family: str, directory: Path | None = None) -> Policy:
    """The default policy with ``<family>.json`` (if present) merged over it."""
    root = directory or POLICY_DIR
    default_path = root / "default.json"
    if not default_path.is_file():
        raise PolicyError(f"{default_path} is missing; it holds the default thresholds")
    base = _read(default_path)
    thresholds = dict(base.get("thresholds", {}))
    training = dict(base.get("training", {}))
    sources = [default_path.name]
    family_path = root / f"{family}.json"
    kind, required = base.get("kind"), base.get("required_gates", [])
    if family_path.is_file():
        override = _read(family_path)
        kind = override.get("kind", kind)
        required = override.get("required_gates", required)
        for section, target in (("thresholds", thresholds), ("training", training)):
            unknown = set(override.get(section, {})) - set(target)
            if unknown:
                raise PolicyError(
                    f"{family_path}: unknown {section} keys {sorted(unknown)}; valid keys are "
                    f"those of default.json: {sorted(target)}"
                )
            target.update(override.get(section, {}))
        sources.append(family_path.name)
    if not isinstance(required, list) or not all(isinstance(g, str) for g in required):
        raise PolicyError(f"{family}: required_gates must be a list of gate names")
    return Policy(family, thresholds, training, tuple(sources), kind, tuple(required))
