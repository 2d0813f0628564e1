"""The object store that keeps data sets, weights and reports: a local folder or an S3 bucket.

Plain Python (no Dagster), usable from a script or a test; `assets/resources.py` holds the thin
Dagster resources that build one. Both backends share one contract, run by
`tests/release/test_object_store.py` against a folder and a real SeaweedFS server.

Keys are "/"-separated relative paths ("datasets/cartpole/data.safetensors"), validated once in
the base class so that a key that works locally also works on S3 and cannot escape the local root.
A prefix names a folder: `list("a/b")` lists "a/b/..." but not "a/bc"; a trailing "/" is accepted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

_KEY_EXAMPLE = "'datasets/cartpole/data.safetensors'"

# In-flight local writes carry this suffix; list() skips them and keys may not use it, so a reader
# never sees a half-written file as an object.
_TMP_SUFFIX = ".objstore-tmp"

# 5 MiB is the smallest part S3 accepts. Using it as both threshold and part size means objects
# of a few MB already take the multipart path, so the contract test's 6 MB object exercises it
# (s3transfer raises the part size by itself when a file would need more than 10,000 parts).
_TRANSFER = TransferConfig(multipart_threshold=5 * 1024**2, multipart_chunksize=5 * 1024**2)

_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}
)
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class ObjectStoreError(RuntimeError):
    """An object store operation failed; the message names the key or URI and what to do."""


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"it is a {type(key).__name__}, not a str"
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it starts with '/'"
    if "\\" in key:
        return "it contains a backslash"
    if "\x00" in key:
        return "it contains a NUL character"
    segments = key.split("/")
    if "" in segments:
        return "it has an empty segment ('//' or a trailing '/')"
    if "." in segments or ".." in segments:
        return "it has a '.' or '..' segment"
    return None


def _check_key(key: str, what: str = "key") -> str:
    problem = _key_problem(key)
    if problem is not None:
        raise ObjectStoreError(
            f"invalid object {what} {key!r}: {problem}; use a '/'-separated relative path "
            f"such as {_KEY_EXAMPLE}"
        )
    return key


def _check_prefix(prefix: str) -> str:
    """A non-empty folder prefix without its optional trailing '/'."""
    if isinstance(prefix, str) and prefix.endswith("/"):
        prefix = prefix[:-1]
    return _check_key(prefix, "prefix")


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary sibling and os.replace, so readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            # Without fsync a crash after os.replace can leave an empty file under the final name.
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class ObjectStore(ABC):
    """Keys map to immutable-by-convention byte blobs; subclasses implement the `_` methods.

    Public methods validate keys and prefixes, then call the backend hooks with clean values.
    `delete` of a missing key is not an error (as on S3), so clean-ups can be repeated.
    """

    # -- backend hooks (keys and prefixes already validated) ------------------------------------
    @abstractmethod
    def _uri(self, key: str) -> str: ...

    @abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def _put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def _get_file(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Sorted keys under the folder `prefix` ("" for everything)."""

    @abstractmethod
    def _copy(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    # -- public API -----------------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return self._uri(_check_key(key))

    def put_bytes(self, key: str, data: bytes) -> str:
        self._put_bytes(_check_key(key), bytes(data))
        return self._uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self._get_bytes(_check_key(key))

    def put_json(self, key: str, obj: Any) -> str:
        try:
            text = json.dumps(obj, sort_keys=True, indent=2, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ObjectStoreError(
                f"cannot store {self.uri(key)} as JSON: {err}; replace NaN/inf and non-JSON "
                "values (sets, tuples as keys, numpy scalars, datetimes) first"
            ) from err
        return self.put_bytes(key, (text + "\n").encode("utf-8"))

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as err:
            raise ObjectStoreError(
                f"object at {self.uri(key)} is not valid JSON ({err}); was it written by put_json?"
            ) from err

    def put_file(self, key: str, path: Path) -> str:
        path = Path(path)
        if not path.is_file():
            raise ObjectStoreError(
                f"cannot upload {path} to {self.uri(key)}: it is not a file; check the path"
            )
        self._put_file(_check_key(key), path)
        return self._uri(key)

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        self._get_file(_check_key(key), dest)
        return dest

    def put_dir(self, prefix: str, directory: Path) -> str:
        prefix = _check_prefix(prefix)
        directory = Path(directory)
        if not directory.is_dir():
            raise ObjectStoreError(
                f"cannot upload {directory} to {self._uri(prefix)}: it is not a directory"
            )
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        if not files:
            # An empty upload would make the later get_dir fail far from the cause.
            raise ObjectStoreError(
                f"cannot upload {directory} to {self._uri(prefix)}: it holds no files"
            )
        for path in files:
            self.put_file(f"{prefix}/{path.relative_to(directory).as_posix()}", path)
        return self._uri(prefix)

    def get_dir(self, prefix: str, dest: Path) -> Path:
        prefix = _check_prefix(prefix)
        dest = Path(dest)
        keys = self._list(prefix)
        if not keys:
            raise ObjectStoreError(
                f"nothing under {self._uri(prefix)}/ to download; check the prefix, or "
                "materialize the asset that writes it"
            )
        # Listed keys come from the store, not from us: every one is checked before anything is
        # written, so a key such as "<prefix>/../../x" cannot place a file outside ``dest``.
        relatives = [key[len(prefix) + 1 :] for key in keys]
        for key, relative in zip(keys, relatives, strict=True):
            problem = _key_problem(relative)
            if problem is not None:
                raise ObjectStoreError(
                    f"refusing to download {self._uri(prefix)}/: the listed object {key!r} would "
                    f"be written outside {dest} ({problem}); nothing was downloaded; remove or "
                    "rename that object in the store"
                )
        for key, relative in zip(keys, relatives, strict=True):
            self._get_file(key, dest / relative)
        return dest

    def exists(self, key: str) -> bool:
        return self._exists(_check_key(key))

    def list(self, prefix: str = "") -> list[str]:
        return self._list(_check_prefix(prefix) if prefix else "")

    def copy_prefix(self, src_prefix: str, dst_prefix: str) -> str:
        src, dst = _check_prefix(src_prefix), _check_prefix(dst_prefix)
        if src == dst:
            raise ObjectStoreError(f"cannot copy {self._uri(src)}/ onto itself; pick another")
        keys = self._list(src)
        if not keys:
            raise ObjectStoreError(
                f"nothing under {self._uri(src)}/ to copy to {self._uri(dst)}/; check the prefix"
            )
        for key in keys:
            self._copy(key, f"{dst}/{key[len(src) + 1 :]}")
        return self._uri(dst)

    def delete(self, key: str) -> None:
        self._delete(_check_key(key))


class LocalObjectStore(ObjectStore):
    """Objects are files under `root` (created on the first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def _path(self, key: str) -> Path:
        if any(segment.endswith(_TMP_SUFFIX) for segment in key.split("/")):
            raise ObjectStoreError(
                f"invalid object key {key!r}: the suffix {_TMP_SUFFIX!r} is reserved for "
                "in-flight writes; rename it"
            )
        return self.root / key

    def _uri(self, key: str) -> str:
        return "file://" + (self.root / key).as_posix()

    @contextmanager
    def _writing(self, key: str) -> Iterator[Path]:
        try:
            yield self._path(key)
        except OSError as err:
            raise ObjectStoreError(
                f"cannot write {self._uri(key)}: {err.strerror or err}; check that {self.root} "
                "is writable and that no parent folder of the key is already an object"
            ) from err

    @contextmanager
    def _reading(self, key: str) -> Iterator[Path]:
        try:
            yield self._path(key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise ObjectStoreError(
                f"no object at {self._uri(key)}; check the key, or write it first"
            ) from err
        except OSError as err:
            raise ObjectStoreError(
                f"cannot read {self._uri(key)}: {err.strerror or err}; check its permissions"
            ) from err

    def _put_bytes(self, key: str, data: bytes) -> None:
        with self._writing(key) as path:
            _atomic_write(path, lambda handle: handle.write(data))

    def _get_bytes(self, key: str) -> bytes:
        with self._reading(key) as path:
            return path.read_bytes()

    def _put_file(self, key: str, path: Path) -> None:
        with self._writing(key) as target, path.open("rb") as source:
            _atomic_write(target, lambda handle: shutil.copyfileobj(source, handle))

    def _get_file(self, key: str, dest: Path) -> None:
        with self._reading(key) as path:
            source = path.open("rb")
        # Outside _reading: a failure to write dest is the caller's problem, not a missing object.
        with source:
            _atomic_write(dest, lambda handle: shutil.copyfileobj(source, handle))

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        for folder, _dirs, names in os.walk(base):
            relative = Path(folder).relative_to(self.root)
            keys.extend(
                (relative / name).as_posix() for name in names if not name.endswith(_TMP_SUFFIX)
            )
        return sorted(keys)

    def _copy(self, src: str, dst: str) -> None:
        self._put_file(dst, self._path(src))

    def _delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            # S3 has no folders, so deleting a "folder key" deletes no object there either.
            return
        path.unlink(missing_ok=True)
        # Drop folders left empty so a deleted prefix does not linger as a directory.
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


class S3ObjectStore(ObjectStore):
    """Objects in an S3 (or S3-compatible) bucket, optionally under a key prefix.

    Objects are stored without folder markers; keys ending in "/" written by other tools are
    skipped by list(), because they are folder placeholders, not data.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        if not bucket or not isinstance(bucket, str):
            raise ObjectStoreError(f"S3 bucket name is empty ({bucket!r}): set WORLDFLUX_S3_BUCKET")
        self.client = client
        self.bucket = bucket
        self.prefix = _check_prefix(prefix) if prefix else ""

    @property
    def endpoint_url(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    @contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Turn botocore errors into ObjectStoreErrors that say what to fix."""
        endpoint = self.endpoint_url
        try:
            yield
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            message = str(err.response.get("Error", {}).get("Message", ""))
            if code == "NoSuchBucket":
                raise ObjectStoreError(
                    f"bucket {self.bucket} does not exist at {endpoint}; create it or set "
                    f"WORLDFLUX_S3_BUCKET (while accessing {uri})"
                ) from err
            if code in _AUTH_CODES:
                raise ObjectStoreError(
                    f"credentials rejected by {endpoint} ({code} on {uri}): check "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and that this identity may use "
                    f"bucket {self.bucket}"
                ) from err
            if code in _MISSING_KEY_CODES:
                raise ObjectStoreError(
                    f"no object at {uri}; check the key, or write it first"
                ) from err
            raise ObjectStoreError(
                f"S3 request for {uri} failed at {endpoint}: {code} {message}; check the "
                "server's log"
            ) from err
        except BotoConnectionError as err:
            raise ObjectStoreError(
                f"cannot reach S3 endpoint {endpoint} (for {uri}): is the server running? "
                f"(WORLDFLUX_S3_ENDPOINT_URL) [{err}]"
            ) from err
        except NoCredentialsError as err:
            raise ObjectStoreError(
                f"no AWS credentials found for {endpoint} (for {uri}): set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ) from err
        except BotoCoreError as err:
            raise ObjectStoreError(
                f"S3 request for {uri} failed at {endpoint}: {err}; check the endpoint and "
                "credentials"
            ) from err

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (demo and tests; production buckets pre-exist)."""
        with self._errors(f"s3://{self.bucket}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as err:
                # HEAD responses have no body, so a missing bucket shows up as a bare 404.
                if str(err.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket"}:
                    raise
            extra: dict[str, Any] = {}
            region = self.client.meta.region_name
            if region and region != "us-east-1":
                # AWS rejects a CreateBucket outside us-east-1 that does not name its region.
                extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self.client.create_bucket(Bucket=self.bucket, **extra)
            except ClientError as err:
                # Another process created it between our HEAD and CREATE: that is success.
                if err.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

    def _put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(self._uri(key)):
            # upload_fileobj (unlike upload_file) re-raises the ClientError itself, keeping the
            # error code that _errors needs.
            self.client.upload_fileobj(
                io.BytesIO(data), self.bucket, self._full(key), Config=_TRANSFER
            )

    def _get_bytes(self, key: str) -> bytes:
        with self._errors(self._uri(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            return bytes(response["Body"].read())

    def _put_file(self, key: str, path: Path) -> None:
        with self._errors(self._uri(key)), path.open("rb") as source:
            self.client.upload_fileobj(source, self.bucket, self._full(key), Config=_TRANSFER)

    def _get_file(self, key: str, dest: Path) -> None:
        # get_object rather than download_file: the latter starts with a HEAD, whose body-less
        # 404 cannot tell a missing key from a missing bucket.
        with self._errors(self._uri(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            _atomic_write(dest, lambda handle: shutil.copyfileobj(response["Body"], handle))

    def _exists(self, key: str) -> bool:
        # A listing rather than HEAD, so that a missing bucket is reported instead of read as
        # "no such key". The key itself sorts first among keys it prefixes, so one result is enough.
        full = self._full(key)
        with self._errors(self._uri(key)):
            response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=1)
        contents = response.get("Contents", [])
        return bool(contents) and contents[0]["Key"] == full

    def _list(self, prefix: str) -> list[str]:
        folder = f"{self._full(prefix)}/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        uri = f"s3://{self.bucket}/{folder}"
        with self._errors(uri):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
                keys.extend(
                    item["Key"][strip:]
                    for item in page.get("Contents", [])
                    if not item["Key"].endswith("/")
                )
        return sorted(keys)

    def _copy(self, src: str, dst: str) -> None:
        # copy_object is a single server-side request (no bytes pass through this process); S3
        # caps it at 5 GB per object, far above this project's weights.
        with self._errors(self._uri(src)):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self._full(dst),
                CopySource={"Bucket": self.bucket, "Key": self._full(src)},
            )

    def _delete(self, key: str) -> None:
        with self._errors(self._uri(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
