"""Where each link of the lineage lives in the object store, and how it is read back.

```
datasets/<name>/...                     registered data sets and their versions (datasets.py)
checkpoints/<family>/seed_<n>/weights/  save_pretrained folder (safetensors, config, metadata)
checkpoints/<family>/seed_<n>/record.json   the seed's run record + where it came from
checkpoints/<family>/repeats/record.json    the two same-seed re-runs' records
reports/<family>/<report_id>.json|.md   gate reports
releases/<family>/<sha256[:16]>/weights/   released weights (release/promotion.py)
releases/<family>/v<version>/model_card.md; releases/<family>/champion.json
```
Everything read back is checked: a weights folder file by file against the manifest
({file: sha256}) its checkpoint recorded when it was published. A mismatch is an error, never
a silent reload.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from quality.visuals import PICTURE_FILES, Picture
from release.object_store import ObjectStore
from worldflux.core.files import sha256_file
from worldflux.training.checkpoint import weights_sha256


class LineageError(RuntimeError):
    """A link of the lineage is missing or does not match what was recorded."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------- checkpoints
def checkpoint_prefix(family: str, seed: int) -> str:
    return f"checkpoints/{family}/seed_{seed}"


ROLLOUT_PICTURE, ROLLOUT_ANIMATION = PICTURE_FILES  # beside a seed's record: PNG; GIF for frames


def read_rollout_pictures(
    store: ObjectStore, family: str, seeds: Iterable[int]
) -> dict[int, Picture]:
    """Each seed's real-versus-imagined picture where its checkpoint run drew one; a seed with
    an animation beside it drew frames."""
    pictures = {}
    for seed in seeds:
        prefix = checkpoint_prefix(family, seed)
        if store.exists(f"{prefix}/{ROLLOUT_PICTURE}"):
            pictures[seed] = Picture(
                store.get_bytes(f"{prefix}/{ROLLOUT_PICTURE}"),
                frames=store.exists(f"{prefix}/{ROLLOUT_ANIMATION}"),
            )
    return pictures


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
