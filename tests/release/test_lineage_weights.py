"""A checkpoint's weights folder is published with a manifest of every file ({file: sha256}),
and read back only when every file matches it: a missing, extra or changed file is refused,
named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from release.lineage import (
    LineageError,
    checkpoint_prefix,
    download_weights,
    publish_checkpoint,
)
from release.object_store import LocalObjectStore
from worldflux.training.checkpoint import weights_sha256

FILES = {
    "model.safetensors": b"weights",
    "config.json": b'{"family": "tdmpc2"}',
    "nested/metadata.json": b"{}",
}


def _published(tmp_path: Path) -> tuple[LocalObjectStore, dict[str, Any]]:
    folder = tmp_path / "trained"
    for name, data in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    record = {"seed": 0, "checkpoint": {"path": str(folder), "sha256": weights_sha256(folder)}}
    store = LocalObjectStore(tmp_path / "store")
    published = publish_checkpoint(store, "tdmpc2", 0, record, {"mlflow_run_id": "r"})
    return store, published["checkpoint"]


def test_the_manifest_names_every_file_and_a_clean_download_passes(tmp_path: Path) -> None:
    store, checkpoint = _published(tmp_path)
    assert set(checkpoint["files"]) == set(FILES)
    dest = download_weights(store, checkpoint, tmp_path / "down")
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == set(FILES)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda s, k: s.delete(f"{k}/config.json"), "lack config.json"),
        (lambda s, k: s.put_bytes(f"{k}/extra.bin", b"x"), "extra.bin"),
        (lambda s, k: s.put_bytes(f"{k}/nested/metadata.json", b"[]"), "nested/metadata.json"),
        (lambda s, k: s.put_bytes(f"{k}/model.safetensors", b"other"), "model.safetensors"),
    ],
    ids=["missing", "extra", "changed", "changed-weights"],
)
def test_a_missing_extra_or_changed_file_is_refused_by_name(
    tmp_path: Path, tamper: Any, named: str
) -> None:
    store, checkpoint = _published(tmp_path)
    tamper(store, f"{checkpoint_prefix('tdmpc2', 0)}/weights")
    with pytest.raises(LineageError, match=named):
        download_weights(store, checkpoint, tmp_path / "down")


def test_a_checkpoint_without_a_manifest_is_refused(tmp_path: Path) -> None:
    store, checkpoint = _published(tmp_path)
    legacy = {k: v for k, v in checkpoint.items() if k != "files"}
    with pytest.raises(LineageError, match="no file manifest"):
        download_weights(store, legacy, tmp_path / "down")


def test_republishing_leaves_no_file_of_the_older_upload(tmp_path: Path) -> None:
    store, _ = _published(tmp_path)
    key = f"{checkpoint_prefix('tdmpc2', 0)}/weights"
    store.put_bytes(f"{key}/stale.bin", b"old")
    _, again = _published(tmp_path)
    assert not store.exists(f"{key}/stale.bin")
    download_weights(store, again, tmp_path / "down")
