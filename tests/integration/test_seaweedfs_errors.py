"""Misconfiguration against a real S3 server ends in an ObjectStoreError that says what to fix,
and the SeaweedFS test helper leaves no process behind."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from dagster_aws.s3 import S3Resource

from assets.resources import S3ObjectStoreResource
from release.object_store import ObjectStore, ObjectStoreError, S3ObjectStore
from tests.integration.seaweedfs import SeaweedServer, start_seaweedfs, stop


def open_store(server: SeaweedServer, bucket: str, access_key: str, secret_key: str) -> ObjectStore:
    return S3ObjectStoreResource(
        s3=S3Resource(
            endpoint_url=server.endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
        ),
        bucket=bucket,
    ).open()


@pytest.fixture
def bucket(seaweedfs: SeaweedServer) -> str:
    """A bucket that exists and holds the key "k"."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    store = open_store(seaweedfs, name, seaweedfs.access_key, seaweedfs.secret_key)
    assert isinstance(store, S3ObjectStore)
    store.ensure_bucket()
    store.put_bytes("k", b"v")
    return name


@pytest.mark.parametrize("wrong", ["secret", "access key"])
def test_wrong_credentials_are_named(seaweedfs: SeaweedServer, bucket: str, wrong: str) -> None:
    access_key = "nobody" if wrong == "access key" else seaweedfs.access_key
    secret_key = "wrong-secret" if wrong == "secret" else seaweedfs.secret_key
    store = open_store(seaweedfs, bucket, access_key, secret_key)
    for call in (lambda: store.get_bytes("k"), lambda: store.put_bytes("k", b"x"), store.list):
        with pytest.raises(ObjectStoreError, match="credentials rejected by") as caught:
            call()
        message = str(caught.value)
        assert seaweedfs.endpoint_url in message
        assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in message
    assert isinstance(store, S3ObjectStore)
    with pytest.raises(ObjectStoreError, match="credentials rejected by"):
        store.ensure_bucket()  # a HEAD: the 403 has no body, only the status


def test_missing_bucket_is_named(seaweedfs: SeaweedServer) -> None:
    store = open_store(seaweedfs, "no-such-bucket", seaweedfs.access_key, seaweedfs.secret_key)
    calls = [
        lambda: store.get_bytes("k"),
        lambda: store.put_bytes("k", b"x"),  # the server does not create it on the fly
        lambda: store.put_bytes("big", os.urandom(6_000_000)),  # multipart upload
        lambda: store.exists("k"),
        store.list,
    ]
    for call in calls:
        with pytest.raises(ObjectStoreError, match="bucket no-such-bucket does not exist") as e:
            call()
        assert seaweedfs.endpoint_url in str(e.value)
        assert "WORLDFLUX_S3_BUCKET" in str(e.value)


def test_unreachable_endpoint_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
        config=Config(connect_timeout=1, retries={"max_attempts": 1}),
    )
    store = S3ObjectStore(client, "bucket")
    (tmp_path / "f").write_bytes(b"x")
    for call in (lambda: store.get_bytes("k"), lambda: store.put_file("k", tmp_path / "f")):
        with pytest.raises(ObjectStoreError, match="cannot reach S3 endpoint") as caught:
            call()
        assert endpoint in str(caught.value)
        assert "WORLDFLUX_S3_ENDPOINT_URL" in str(caught.value)


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path)
    pgid = server.process.pid
    assert os.getpgid(pgid) == pgid  # its own group, apart from pytest's
    stop(server)
    assert server.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    leftovers = [
        path
        for name, port in server.ports.items()
        if (path := Path(f"/tmp/seaweedfs-{name}-grpc-{port + 10000}.sock")).exists()
    ]
    assert leftovers == []
    stop(server)  # stopping twice is harmless
