"""Where each link of the lineage lives in the object store, and how it is read back.

```
datasets/<name>/data.safetensors        the data set's bytes
datasets/<name>/manifest.json           source, counts, sha256, digest, expectation results
checkpoints/<family>/seed_<n>/weights/  save_pretrained folder (safetensors, config, metadata)
checkpoints/<family>/seed_<n>/record.json   the seed's run record + where it came from
checkpoints/<family>/repeats/record.json    the two same-seed re-runs' records
reports/<family>/<report_id>.json|.md   gate reports
releases/<family>/v<version>/           released weights + model_card.md
```
Everything read back is checked: a data set against its manifest's sha256 and digest, a weights
folder file by file against the manifest ({file: sha256}) its checkpoint recorded when it was
published. A mismatch is an error, never a silent reload.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from release.object_store import ObjectStore
from worldflux.core.files import sha256_file
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


def file_manifest(directory: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file in a folder (the weights folder's manifest)."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def publish_checkpoint(
    store: ObjectStore, family: str, seed: int, record: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """Upload the seed's weights (when it produced any) and its record; the record's
    ``checkpoint`` then names the object-store URI instead of the local folder, and holds the
    manifest ``files`` ({file: sha256}) of every file uploaded, which ``download_weights``
    verifies."""
    prefix = checkpoint_prefix(family, seed)
    record = {**record, **provenance, "landed_at": utc_now()}
    local = record.get("checkpoint")
    if local is not None:
        folder = Path(local["path"])
        files = file_manifest(folder)
        if weights_sha256(folder) != local["sha256"]:
            raise LineageError(
                f"{family} seed {seed}: the weights in {folder} do not match the sha256 the "
                "training step recorded"
            )
        for key in store.list(f"{prefix}/weights"):  # no file of an older upload may linger
            if key[len(prefix) + len("/weights/") :] not in files:
                store.delete(key)
        uri = store.put_dir(f"{prefix}/weights", folder)
        record["checkpoint"] = {
            "path": uri,  # the report schema's location field; here the object-store URI
            "uri": uri,
            "key": f"{prefix}/weights",
            "sha256": local["sha256"],
            "files": files,
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


def repeats_key(family: str) -> str:
    return f"checkpoints/{family}/repeats/record.json"


def publish_repeats(
    store: ObjectStore, family: str, records: list[dict[str, Any]], provenance: dict[str, Any]
) -> str:
    """The same-seed re-runs' records (no weights: their digests are the evidence)."""
    return store.put_json(
        repeats_key(family), {"runs": records, **provenance, "landed_at": utc_now()}
    )


def read_repeats(store: ObjectStore, family: str) -> list[dict[str, Any]]:
    key = repeats_key(family)
    if not store.exists(key):
        raise LineageError(
            f"{family} has no repeatability re-runs yet: materialize repeatability_runs[{family}] "
            "first"
        )
    runs: list[dict[str, Any]] = store.get_json(key)["runs"]
    return runs


def download_weights(store: ObjectStore, checkpoint: dict[str, Any], dest: Path) -> Path:
    """Download a checkpoint's weights folder and verify every file against the manifest the
    checkpoint recorded (a missing, extra or changed file is refused, named), and the weights
    file against the checkpoint's sha256. A store that cannot be read raises its
    ``ObjectStoreError``: that is a fault of the store, not evidence about the weights."""
    uri = checkpoint["uri"]
    expected: dict[str, str] | None = checkpoint.get("files")
    if not expected:
        raise LineageError(
            f"the checkpoint at {uri} recorded no file manifest, so its files cannot be "
            "verified: re-materialize the checkpoint"
        )
    store.get_dir(checkpoint["key"], dest)  # ObjectStoreError: a fault, not a mismatch
    actual = file_manifest(dest)
    redo = "they were changed after training; re-materialize the checkpoint"
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise LineageError(f"the weights at {uri} lack {', '.join(missing)}: {redo}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise LineageError(
            f"the weights at {uri} hold {', '.join(extra)}, which the checkpoint did not "
            f"record: {redo}"
        )
    for name, sha in sorted(expected.items()):
        if actual[name] != sha:
            raise LineageError(
                f"{name} of the weights at {uri} has sha256 {actual[name][:12]}..., but the "
                f"checkpoint recorded {sha[:12]}...: {redo}"
            )
    weights = weights_sha256(dest)
    if weights != checkpoint["sha256"]:
        raise LineageError(
            f"the weights at {uri} have sha256 {weights[:12]}..., but the checkpoint recorded "
            f"{checkpoint['sha256'][:12]}...: {redo}"
        )
    return dest


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"worldflux-{prefix}-")
