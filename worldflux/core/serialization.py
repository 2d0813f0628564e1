"""``save_pretrained`` / ``from_pretrained``: safetensors weights, JSON config and metadata.

Nothing here unpickles: weights are safetensors, everything else is JSON. Loading verifies
the weights' sha256 and the contract fingerprint before a single tensor is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from worldflux.core.errors import CheckpointError
from worldflux.core.files import atomic_write_bytes, atomic_write_json, canonical_json, sha256_file
from worldflux.core.model import ModelSpec, WorldModel
from worldflux.core.registry import build_model, get_family
from worldflux.version import __version__

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "worldflux_metadata.json"


def contract_fingerprint(model: WorldModel) -> str:
    """A digest of what the weights must fit: family, shapes, config, and every tensor's name,
    shape and dtype. Code that changes the architecture changes the fingerprint."""
    tensors = [
        [name, list(t.shape), str(t.dtype)] for name, t in sorted(model.state_dict().items())
    ]
    payload = {
        "format": FORMAT_VERSION,
        "spec": model.spec.to_json(),
        "capabilities": sorted(c.value for c in model.capabilities),
        "tensors": tensors,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def state_dict_bytes(model: WorldModel) -> bytes:
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return safetensors.torch.save(tensors, metadata={"format": "pt"})


def save_pretrained(model: WorldModel, directory: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``worldflux_metadata.json``.

    The metadata is written last, so a directory holding it is complete.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = state_dict_bytes(model)
    atomic_write_bytes(out / WEIGHTS_FILE, weights)
    atomic_write_json(out / CONFIG_FILE, model.spec.to_json())
    atomic_write_json(
        out / METADATA_FILE,
        {
            "format_version": FORMAT_VERSION,
            "family": model.spec.family,
            "preset": model.spec.preset,
            "contract_fingerprint": contract_fingerprint(model),
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "library_version": __version__,
        },
    )
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; a saved model needs {CONFIG_FILE}, {WEIGHTS_FILE} and "
            f"{METADATA_FILE} (write them with model.save_pretrained)"
        )
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return value


def _spec_from_json(data: dict[str, Any], path: Path) -> ModelSpec:
    try:
        info = get_family(data["family"])
        config_cls = type(info.presets["ci"])
        known = {f.name for f in dataclasses.fields(config_cls)}
        unknown = set(data["config"]) - known
        if unknown:
            raise CheckpointError(f"{path}: unknown config keys {sorted(unknown)}")
        return ModelSpec(
            family=info.name,
            preset=str(data["preset"]),
            obs_shape=tuple(int(d) for d in data["obs_shape"]),
            action_dim=int(data["action_dim"]),
            config=config_cls(**data["config"]),
        )
    except KeyError as err:
        raise CheckpointError(f"{path} lacks the field {err}") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} does not describe a valid model: {err}") from None


def from_pretrained(
    directory_or_uri: str | Path,
    *,
    device: str | torch.device = "cpu",
    tracking_uri: str | None = None,
) -> WorldModel:
    """Rebuild a model saved with ``save_pretrained``, verifying integrity first.

    ``directory_or_uri``: a folder written by ``save_pretrained``, or a string
    ``models:/<name>@<alias>`` / ``models:/<name>/<version>`` naming a released version in the
    MLflow model registry (``tracking_uri``, else ``MLFLOW_TRACKING_URI``; ``tracking_uri`` is
    used for such URIs only). Its files are downloaded into a temporary directory, verified
    against the version's ``files_sha256`` tag, loaded, and the directory is removed (see
    ``worldflux.hub.download_release``; needs MLflow, else ``RegistryUnavailable``).
    """
    if isinstance(directory_or_uri, str) and directory_or_uri.startswith("models:/"):
        from worldflux.hub import download_release  # MLflow is imported only on this path

        uri = directory_or_uri
        with tempfile.TemporaryDirectory(
            prefix="worldflux-release-", ignore_cleanup_errors=True
        ) as tmp:
            folder = download_release(uri, Path(tmp), tracking_uri=tracking_uri)
            try:
                return _load_directory(folder, device)
            except CheckpointError as err:
                raise CheckpointError(
                    f"{uri}: its files match the release manifest but do not load: {err}"
                ) from err
    return _load_directory(Path(directory_or_uri), device)


def _load_directory(root: Path, device: str | torch.device) -> WorldModel:
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory holding a saved model")
    meta = _read_json(root / METADATA_FILE)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{root / METADATA_FILE}: format_version {meta.get('format_version')!r} is not "
            f"supported (this library reads version {FORMAT_VERSION})"
        )
    spec = _spec_from_json(_read_json(root / CONFIG_FILE), root / CONFIG_FILE)
    weights_path = root / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing")
    actual = sha256_file(weights_path)
    if actual != meta.get("weights_sha256"):
        raise CheckpointError(
            f"{weights_path}: sha256 {actual} does not match {meta.get('weights_sha256')} "
            f"recorded in {METADATA_FILE}; the file was modified or truncated, do not use it"
        )
    model = build_model(spec)
    fingerprint = contract_fingerprint(model)
    if fingerprint != meta.get("contract_fingerprint"):
        raise CheckpointError(
            f"{root / CONFIG_FILE} does not match the saved weights: the contract fingerprint "
            f"of the rebuilt model is {fingerprint[:12]}..., {METADATA_FILE} records "
            f"{str(meta.get('contract_fingerprint'))[:12]}... (config edited, or saved by "
            f"code with a different architecture; library {meta.get('library_version')})"
        )
    try:
        tensors = safetensors.torch.load_file(str(weights_path), device="cpu")
    except Exception as err:  # safetensors raises several error types for bad files
        raise CheckpointError(f"{weights_path} cannot be read as safetensors: {err}") from None
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{weights_path} does not fit the model: {err}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    return model.to(device)
