"""The small data sets shipped inside the package, verified against ``manifest.json``.

The manifest records each file's sha256; ``load_bundled`` checks it before parsing a byte, so a
truncated download or a hand-edited file fails loudly instead of training on wrong data.
Regenerate the files with ``python scripts/generate_datasets.py``.

Derived data sets (``cartpole_pixels``) are listed in ``derived.json`` instead: they are
re-rendered from a bundled source on load and verified field by field (see ``pixels.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldflux.core.errors import DatasetError
from worldflux.data import pixels
from worldflux.data.dataset import TrajectoryDataset

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
MANIFEST_NAME = "manifest.json"


def _read_manifest(root: Path) -> dict[str, dict[str, Any]]:
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        datasets = manifest["datasets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read the data set manifest {path}: {exc!r}") from exc
    if not isinstance(datasets, dict):
        raise DatasetError(f"manifest {path}: 'datasets' must be an object")
    return datasets


def _read_derived(root: Path) -> dict[str, dict[str, Any]]:
    """``derived.json``'s entries (name -> entry); none when the file is absent."""
    path = root / pixels.DERIVED_NAME
    if not path.exists():
        return {}
    try:
        datasets = json.loads(path.read_text(encoding="utf-8"))["datasets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read the derived data set list {path}: {exc!r}") from exc
    if not isinstance(datasets, dict):
        raise DatasetError(f"{path}: 'datasets' must be an object")
    return datasets


def list_bundled(root: Path | None = None) -> list[dict[str, Any]]:
    """The manifest entries of the bundled data sets, sorted by name; derived data sets carry
    ``"derived": true``."""
    directory = BUNDLED_DIR if root is None else root
    datasets = {**_read_manifest(directory), **_read_derived(directory)}
    return [dict(datasets[name]) for name in sorted(datasets)]


def load_bundled(name: str, root: Path | None = None) -> TrajectoryDataset:
    """Load a bundled data set by name after verifying its sha256 against the manifest.

    ``root`` defaults to the package's bundled directory (tests point it at copies).
    """
    directory = BUNDLED_DIR if root is None else root
    datasets = _read_manifest(directory)
    derived = _read_derived(directory)
    if name in derived and name not in datasets:
        entry = derived[name]
        source = str(entry.get("source"))
        return pixels.load_derived(
            entry, load_bundled(source, root), str(datasets.get(source, {}).get("sha256"))
        )
    if name not in datasets:
        available = sorted({*datasets, *derived})
        raise DatasetError(f"unknown bundled data set {name!r}; available: {available}")
    entry = datasets[name]
    try:
        path = directory / str(entry["file"])
        expected = str(entry["sha256"])
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"manifest entry {name!r} lacks 'file' or 'sha256'") from exc
    dataset = TrajectoryDataset.load(path, expected_sha256=expected)
    # The sha matched, so a disagreement here means the manifest itself was edited wrongly.
    recorded = (entry.get("rows"), entry.get("episodes"))
    if (dataset.name, (len(dataset), dataset.num_episodes)) != (name, recorded):
        raise DatasetError(
            f"data set file {path} holds {dataset.name!r} with {len(dataset)} rows and "
            f"{dataset.num_episodes} episodes; the manifest says {name!r} with {recorded[0]} "
            f"rows and {recorded[1]} episodes"
        )
    return dataset
