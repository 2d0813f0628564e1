"""One contract for every object store: a local folder, and a real SeaweedFS bucket reached
through the dagster-aws S3Resource, as production does (a fresh bucket per test)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from assets.resources import (
    LocalObjectStoreResource,
    ObjectStoreResource,
    S3ObjectStoreResource,
)
from release.object_store import LocalObjectStore, ObjectStore, ObjectStoreError, S3ObjectStore
from tests.integration.seaweedfs import SeaweedServer

BAD_KEYS = ["", "/abs", "..", "a/../b", "./a", "a/./b", "a\\b", "a//b", "a/", "a\x00b"]


def s3_resource(server: SeaweedServer, bucket: str, prefix: str = "") -> S3ObjectStoreResource:
    return S3ObjectStoreResource(
        s3=S3Resource(
            endpoint_url=server.endpoint_url,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name="us-east-1",
        ),
        bucket=bucket,
        prefix=prefix,
    )


def fresh_bucket(server: SeaweedServer, prefix: str = "") -> S3ObjectStore:
    opened = s3_resource(server, f"t-{uuid.uuid4().hex[:20]}", prefix).open()
    assert isinstance(opened, S3ObjectStore)
    opened.ensure_bucket()
    return opened


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStoreResource(root=str(tmp_path / "objects")).open()
        return
    opened = fresh_bucket(request.getfixturevalue("seaweedfs"))
    yield opened
    opened.client.delete_bucket(Bucket=opened.bucket)  # SeaweedFS deletes non-empty buckets


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


TREE = {
    "weights.safetensors": os.urandom(70_000),
    "config.json": b'{"family": "dreamer"}\n',
    "empty.bin": b"",
    "nested/deeper/still/data.npy": os.urandom(1234),
    "nested/with space.txt": b"spaces survive",
}


def test_bytes_round_trip_and_uri(store: ObjectStore) -> None:
    uri = store.put_bytes("reports/dreamer/r1.bin", b"\x00\x01payload\xff")
    assert uri == store.uri("reports/dreamer/r1.bin")
    assert store.get_bytes("reports/dreamer/r1.bin") == b"\x00\x01payload\xff"
    if isinstance(store, S3ObjectStore):
        root = f"{store.prefix}/" if store.prefix else ""
        assert uri == f"s3://{store.bucket}/{root}reports/dreamer/r1.bin"
    else:
        assert isinstance(store, LocalObjectStore)
        assert uri == f"file://{store.root}/reports/dreamer/r1.bin"
        assert (store.root / "reports/dreamer/r1.bin").read_bytes() == b"\x00\x01payload\xff"


def test_json_round_trip_is_sorted_and_indented(store: ObjectStore) -> None:
    report = {"z": [1, 2.5, None, True], "a": {"ci_low": 0.25, "name": "ü"}, "n": -3}
    store.put_json("reports/r.json", report)
    assert store.get_json("reports/r.json") == report
    text = store.get_bytes("reports/r.json").decode()
    assert text == json.dumps(report, sort_keys=True, indent=2) + "\n"


def test_put_json_refuses_non_json(store: ObjectStore) -> None:
    for value in [float("nan"), float("inf"), {1, 2}]:
        with pytest.raises(ObjectStoreError, match="as JSON") as caught:
            store.put_json("reports/bad.json", {"metric": value})
        assert store.uri("reports/bad.json") in str(caught.value)
    assert not store.exists("reports/bad.json")


def test_get_json_of_non_json_names_the_uri(store: ObjectStore) -> None:
    store.put_bytes("blob.json", b"\x89PNG not json")
    with pytest.raises(ObjectStoreError, match="not valid JSON") as caught:
        store.get_json("blob.json")
    assert store.uri("blob.json") in str(caught.value)


def test_missing_key_error_names_the_uri(store: ObjectStore, tmp_path: Path) -> None:
    expected = f"no object at {store.uri('no/such/key')}"
    with pytest.raises(ObjectStoreError, match="no object at") as caught:
        store.get_bytes("no/such/key")
    assert expected in str(caught.value)
    with pytest.raises(ObjectStoreError, match="no object at"):
        store.get_file("no/such/key", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    # A "folder" is not an object.
    store.put_bytes("folder/inside", b"x")
    with pytest.raises(ObjectStoreError, match="no object at"):
        store.get_bytes("folder")
    assert not store.exists("folder")


def test_bad_keys_are_refused(store: ObjectStore, tmp_path: Path) -> None:
    # One store per backend for all keys: a fresh bucket per key would cost ~0.3 s each.
    for key in BAD_KEYS:
        calls: list[Callable[[], object]] = [
            partial(store.uri, key),
            partial(store.put_bytes, key, b"x"),
            partial(store.get_bytes, key),
            partial(store.put_json, key, {}),
            partial(store.exists, key),
            partial(store.delete, key),
            partial(store.get_file, key, tmp_path / "f"),
            partial(store.put_file, key, Path(__file__)),
        ]
        for call in calls:
            with pytest.raises(ObjectStoreError, match="invalid object key") as caught:
                call()
            assert repr(key) in str(caught.value)
    assert store.list() == []


def test_bad_prefixes_are_refused(store: ObjectStore, tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", {"f.txt": b"x"})
    for prefix in ["/abs", "a/../b", "a//", "..", "a\\b", "/"]:
        calls: list[Callable[[], object]] = [
            partial(store.put_dir, prefix, tmp_path / "tree"),
            partial(store.get_dir, prefix, tmp_path / "out"),
            partial(store.list, prefix),
            partial(store.copy_prefix, prefix, "dst"),
            partial(store.copy_prefix, "src", prefix),
        ]
        for call in calls:
            with pytest.raises(ObjectStoreError, match="invalid object prefix"):
                call()
    assert store.list() == []


def test_put_dir_get_dir_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    write_tree(tmp_path / "src", TREE)
    uri = store.put_dir("checkpoints/dreamer/seed-0/", tmp_path / "src")
    assert uri == store.uri("checkpoints/dreamer/seed-0")
    assert store.list("checkpoints/dreamer/seed-0") == sorted(
        f"checkpoints/dreamer/seed-0/{name}" for name in TREE
    )
    dest = store.get_dir("checkpoints/dreamer/seed-0", tmp_path / "out" / "new")
    assert dest == tmp_path / "out" / "new"
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == TREE


def test_put_dir_refuses_missing_or_empty_directory(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectStoreError, match="not a directory"):
        store.put_dir("ds", tmp_path / "absent")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ObjectStoreError, match="holds no files") as caught:
        store.put_dir("ds", tmp_path / "empty")
    assert store.uri("ds") in str(caught.value)


def test_get_dir_of_nothing_names_the_prefix(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("ds/v10/file", b"x")  # "ds/v1" is not a folder of it
    with pytest.raises(ObjectStoreError, match="nothing under") as caught:
        store.get_dir("ds/v1", tmp_path / "out")
    assert store.uri("ds/v1") in str(caught.value)


def test_list_treats_the_prefix_as_a_folder(store: ObjectStore) -> None:
    for key in ["a/b/1", "a/b/2/x", "a/bc", "a/b.txt", "z"]:
        store.put_bytes(key, key.encode())
    assert store.list() == ["a/b.txt", "a/b/1", "a/b/2/x", "a/bc", "z"]
    assert store.list("a/b") == ["a/b/1", "a/b/2/x"]
    assert store.list("a/b/") == ["a/b/1", "a/b/2/x"]
    assert store.list("a") == ["a/b.txt", "a/b/1", "a/b/2/x", "a/bc"]
    assert store.list("a/b/1") == []  # an object is not a folder
    assert store.list("nothing") == []


def test_copy_prefix(store: ObjectStore, tmp_path: Path) -> None:
    write_tree(tmp_path / "src", TREE)
    store.put_dir("runs/r1", tmp_path / "src")
    store.put_bytes("runs/r10/other", b"not copied")
    uri = store.copy_prefix("runs/r1/", "release/dreamer/v3")
    assert uri == store.uri("release/dreamer/v3")
    assert store.list("release") == sorted(f"release/dreamer/v3/{name}" for name in TREE)
    for name, data in TREE.items():
        assert store.get_bytes(f"release/dreamer/v3/{name}") == data
        assert store.get_bytes(f"runs/r1/{name}") == data
    with pytest.raises(ObjectStoreError, match="onto itself"):
        store.copy_prefix("runs/r1", "runs/r1/")
    with pytest.raises(ObjectStoreError, match="nothing under") as caught:
        store.copy_prefix("runs/absent", "release/x")
    assert store.uri("runs/absent") in str(caught.value)


def test_exists_and_delete(store: ObjectStore) -> None:
    assert not store.exists("d/k")
    store.put_bytes("d/k", b"1")
    store.put_bytes("d/k2", b"2")
    assert store.exists("d/k")
    assert not store.exists("d")
    store.delete("d/k")
    assert not store.exists("d/k")
    assert store.exists("d/k2")
    store.delete("d/k")  # deleting twice is fine, as on S3
    store.delete("d/k2")
    assert store.list() == []
    if isinstance(store, LocalObjectStore):
        assert not (store.root / "d").exists()  # no empty folders left behind


def test_overwrite_replaces_content(store: ObjectStore) -> None:
    store.put_bytes("k", b"a much longer first version")
    store.put_bytes("k", b"short")
    assert store.get_bytes("k") == b"short"
    store.put_json("k", {"v": 2})
    assert store.get_json("k") == {"v": 2}


def test_put_file_get_file(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "w.safetensors"
    source.write_bytes(b"weights")
    assert store.put_file("w/model.safetensors", source) == store.uri("w/model.safetensors")
    dest = store.get_file("w/model.safetensors", tmp_path / "a" / "b" / "copy.safetensors")
    assert dest.read_bytes() == b"weights"
    assert [p.name for p in dest.parent.iterdir()] == ["copy.safetensors"]  # no temp files left
    with pytest.raises(ObjectStoreError, match="not a file") as caught:
        store.put_file("w/other", tmp_path / "absent")
    assert "absent" in str(caught.value)
    assert store.uri("w/other") in str(caught.value)


def test_six_megabyte_object_round_trips(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(6_000_000)
    store.put_bytes("big/bytes", data)
    assert store.get_bytes("big/bytes") == data
    (tmp_path / "big.bin").write_bytes(data)
    store.put_file("big/file", tmp_path / "big.bin")
    assert store.get_file("big/file", tmp_path / "back.bin").read_bytes() == data
    if isinstance(store, S3ObjectStore):
        # A multipart ETag ends in "-<parts>": 6 MB went up as a 5 MiB part and a remainder.
        root = f"{store.prefix}/" if store.prefix else ""
        for key in ("big/bytes", "big/file"):
            head = store.client.head_object(Bucket=store.bucket, Key=f"{root}{key}")
            assert head["ETag"].strip('"').endswith("-2")


def test_local_list_ignores_in_flight_writes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("ds/a", b"1")
    (tmp_path / "objects" / "ds" / ".b.x1y2.objstore-tmp").write_bytes(b"half")
    assert store.list() == ["ds/a"]
    with pytest.raises(ObjectStoreError, match="reserved for in-flight writes"):
        store.put_bytes("ds/b.objstore-tmp", b"x")


def test_local_root_is_created_on_first_write(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "not" / "yet")
    assert store.list() == []
    assert not (tmp_path / "not").exists()
    store.put_bytes("k", b"v")
    assert (tmp_path / "not" / "yet" / "k").read_bytes() == b"v"


def test_local_key_and_folder_clash_is_explained(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b", b"object")
    with pytest.raises(ObjectStoreError, match="cannot write") as caught:
        store.put_bytes("a/b/c", b"under an object")
    assert store.uri("a/b/c") in str(caught.value)


def test_base_resource_has_no_store() -> None:
    with pytest.raises(NotImplementedError, match="LocalObjectStoreResource"):
        ObjectStoreResource().open()


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_an_asset_reaches_the_store_through_the_resource(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    resource: ObjectStoreResource
    if backend == "local":
        resource = LocalObjectStoreResource(root=str(tmp_path))
    else:
        server: SeaweedServer = request.getfixturevalue("seaweedfs")
        # The nested S3Resource must be configured by Dagster itself inside the run.
        resource = s3_resource(server, fresh_bucket(server).bucket, "p")

    @dg.asset
    def report(object_store: ObjectStoreResource) -> str:
        return object_store.open().put_json("reports/r.json", {"ok": True})

    result = dg.materialize([report], resources={"object_store": resource})
    assert result.success
    assert result.output_for_node("report") == resource.open().uri("reports/r.json")
    assert resource.open().get_json("reports/r.json") == {"ok": True}


def test_s3_prefix_scopes_every_operation(seaweedfs: SeaweedServer, tmp_path: Path) -> None:
    outside = fresh_bucket(seaweedfs)
    inside = s3_resource(seaweedfs, outside.bucket, "team/run-7/").open()
    assert isinstance(inside, S3ObjectStore)
    assert inside.prefix == "team/run-7"
    outside.put_bytes("ds/outside", b"not in the prefix")
    outside.put_bytes("team/run-70/ds/x", b"a sibling, not inside")
    write_tree(tmp_path / "src", TREE)

    assert inside.put_dir("ds", tmp_path / "src") == f"s3://{outside.bucket}/team/run-7/ds"
    assert inside.list() == sorted(f"ds/{name}" for name in TREE)
    assert inside.uri("ds/config.json") == f"s3://{outside.bucket}/team/run-7/ds/config.json"
    assert outside.get_bytes("team/run-7/ds/config.json") == TREE["config.json"]
    assert not inside.exists("ds/outside")
    inside.copy_prefix("ds", "release")
    got = inside.get_dir("release", tmp_path / "out")
    assert {p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()} == set(TREE)
    assert outside.list("ds") == ["ds/outside"]
    assert outside.list("team/run-70") == ["team/run-70/ds/x"]
    outside.client.delete_bucket(Bucket=outside.bucket)


class _HostileListing(LocalObjectStore):
    """A store whose listing also returns a key someone else wrote (S3 allows '..' and empty
    segments in keys; SeaweedFS normalizes them, so the fault is injected in the listing)."""

    def __init__(self, root: Path, extra: str) -> None:
        super().__init__(root)
        self.extra = extra

    def _list(self, prefix: str) -> list[str]:
        return [*super()._list(prefix), self.extra]


@pytest.mark.parametrize("suffix", ["../../escaped.txt", "/escaped-abs.txt", "a/./b"])
def test_get_dir_refuses_a_listed_key_that_escapes_the_destination(
    tmp_path: Path, suffix: str
) -> None:
    """A hostile listed key must not place a file outside the destination (``dest / key`` with
    '..' or an absolute part), and nothing is downloaded when one is listed."""
    store = _HostileListing(tmp_path / "objects", f"ckpt/{suffix}")
    store.put_bytes("ckpt/weights.bin", b"good")
    dest = tmp_path / "a" / "out"
    with pytest.raises(ObjectStoreError, match=r"written outside .*nothing was downloaded"):
        store.get_dir("ckpt", dest)
    assert not dest.exists()
    assert not (tmp_path / "escaped.txt").exists()
