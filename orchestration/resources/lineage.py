"""Where each link of the lineage lives in the object store, and how it is read back.

```
datasets/<name>/data.safetensors        the data set's bytes
datasets/<name>/manifest.json           source, counts, sha256, digest, expectation results
checkpoints/<family>/seed_<n>/weights/  save_pretrained folder (safetensors, config, metadata)
checkpoints/<family>/seed_<n>/record.json   the seed's run record + where it came from
reports/<family>/<report_id>.json|.md   gate reports
releases/<family>/v<version>/           released weights + model_card.md
```
Everything read back is checked: a data set against its manifest's sha256 and digest, weights
against the sha256 their checkpoint recorded. A mismatch is an error, never a silent reload.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from orchestration.resources.object_store import ObjectStore, ObjectStoreError
from worldflux.data import TrajectoryDataset
from worldflux.training.checkpoint import weights_sha256


class LineageError(RuntimeError):
    """A link of the lineage is missing or does not match what was recorded."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------- data sets
def dataset_prefix(name: str) -> str:
    return f"datasets/{name}"


def publish_dataset(
    store: ObjectStore, data: TrajectoryDataset, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write the data set and its manifest (data first, so a manifest never names missing
    bytes). Returns the manifest as written."""
    payload = data.to_bytes()
    prefix = dataset_prefix(data.name)
    uri = store.put_bytes(f"{prefix}/data.safetensors", payload)
    written = {
        **manifest,
        "name": data.name,
        "uri": uri,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "digest": data.digest,
        "rows": len(data),
        "episodes": data.num_episodes,
        "materialized_at": utc_now(),
    }
    store.put_json(f"{prefix}/manifest.json", written)
    return written


def read_dataset_manifest(store: ObjectStore, name: str) -> dict[str, Any]:
    key = f"{dataset_prefix(name)}/manifest.json"
    if not store.exists(key):
        raise LineageError(
            f"data set {name!r} has not been materialized into the object store ({store.uri(key)} "
            f"is missing): materialize dataset[{name}] first"
        )
    manifest: dict[str, Any] = store.get_json(key)
    return manifest


def read_dataset(store: ObjectStore, name: str) -> tuple[TrajectoryDataset, dict[str, Any]]:
    """The validated copy of a data set. Refused when its expectation suite failed or its
    bytes do not match the manifest."""
    manifest = read_dataset_manifest(store, name)
    expectations = manifest.get("expectations", {})
    if not expectations.get("success", False):
        failed = "; ".join(expectations.get("failures", [])) or "no expectation results recorded"
        raise LineageError(
            f"data set {name!r} failed its expectation suite ({failed}): fix the data and "
            f"re-materialize dataset[{name}] before training on it"
        )
    payload = store.get_bytes(f"{dataset_prefix(name)}/data.safetensors")
    if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
        raise LineageError(
            f"data set {name!r} in the object store does not match its manifest's sha256: "
            f"re-materialize dataset[{name}]"
        )
    data = TrajectoryDataset.from_bytes(payload)
    if data.digest != manifest["digest"]:
        raise LineageError(f"data set {name!r} decodes to a different digest than its manifest")
    return data, manifest


# --------------------------------------------------------------------------- checkpoints
def checkpoint_prefix(family: str, seed: int) -> str:
    return f"checkpoints/{family}/seed_{seed}"


def publish_checkpoint(
    store: ObjectStore, family: str, seed: int, record: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """Upload the seed's weights (when it produced any) and its record; the record's
    ``checkpoint`` then names the object-store URI instead of the local folder."""
    prefix = checkpoint_prefix(family, seed)
    record = {**record, **provenance, "landed_at": utc_now()}
    local = record.get("checkpoint")
    if local is not None:
        uri = store.put_dir(f"{prefix}/weights", Path(local["path"]))
        record["checkpoint"] = {
            "path": uri,  # the report schema's location field; here the object-store URI
            "uri": uri,
            "key": f"{prefix}/weights",
            "sha256": local["sha256"],
        }
    elif store.exists(f"{prefix}/record.json"):
        # A failed seed must not leave an older seed's weights looking current.
        for key in store.list(f"{prefix}/weights"):
            store.delete(key)
    store.put_json(f"{prefix}/record.json", record)
    return record


def read_checkpoint_records(
    store: ObjectStore, family: str, seeds: list[int]
) -> list[dict[str, Any]]:
    missing = [s for s in seeds if not store.exists(f"{checkpoint_prefix(family, s)}/record.json")]
    if missing:
        keys = ", ".join(f"checkpoint[{family}|{s}]" for s in missing)
        raise LineageError(
            f"{family}: seeds {missing} have no checkpoint yet: materialize {keys} first"
        )
    return [store.get_json(f"{checkpoint_prefix(family, s)}/record.json") for s in seeds]


def download_weights(store: ObjectStore, checkpoint: dict[str, Any], dest: Path) -> Path:
    """Download a checkpoint's weights folder and verify its sha256."""
    try:
        store.get_dir(checkpoint["key"], dest)
    except ObjectStoreError as err:
        raise LineageError(f"the weights at {checkpoint['uri']} cannot be read: {err}") from err
    actual = weights_sha256(dest)
    if actual != checkpoint["sha256"]:
        raise LineageError(
            f"the weights at {checkpoint['uri']} have sha256 {actual[:12]}..., but the "
            f"checkpoint recorded {checkpoint['sha256'][:12]}...: they were changed after "
            "training; re-materialize the checkpoint"
        )
    return dest


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"worldflux-{prefix}-")
