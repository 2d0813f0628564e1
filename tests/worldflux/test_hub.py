"""``from_pretrained("models:/...")`` through a real MLflow registry (SQLite in a temporary
folder), with the release side's contract: every version carries ``files_sha256`` (sorted-key
JSON {file: sha256} of its weights folder) and ``checkpoint_sha256``, and its ``source`` is the
weights folder's object-store URI (``file://`` here; ``s3://`` against a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import safetensors.torch
import torch

import worldflux
from worldflux import CheckpointError, WorldModel
from worldflux.hub import (
    MLFLOW_REQUIREMENT,
    RegistryError,
    download_release,
    parse_models_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from tests.integration.seaweedfs import SeaweedServer

NAME = "worldflux-tdmpc2"
ROOT = Path(__file__).resolve().parents[2]


def manifest(folder: Path) -> dict[str, str]:
    """What the release side records: {relative posix path: sha256} of every file."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def release_tags(folder: Path) -> dict[str, str]:
    files = manifest(folder)
    return {
        "files_sha256": json.dumps(files, sort_keys=True),
        "checkpoint_sha256": files["model.safetensors"],
    }


@dataclass
class Registry:
    uri: str
    client: MlflowClient
    model: WorldModel
    folder: Path  # version 1's source, alias champion

    def release(
        self, folder: Path, tags: dict[str, str] | None = None, source: str = "", save: bool = True
    ) -> str:
        """save_pretrained into ``folder`` (unless ``save`` is False) and register the folder as
        a new version of NAME, with the release tags of its files unless ``tags`` are given."""
        if save:
            self.model.save_pretrained(folder)
        version = self.client.create_model_version(
            NAME,
            source=source or folder.as_uri(),
            tags=release_tags(folder) if tags is None else tags,
        )
        return str(version.version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    mlflow = pytest.importorskip("mlflow", reason="the registry tests need MLflow")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    torch.manual_seed(0)
    model = worldflux.create_world_model("tdmpc2:ci", obs_shape=(3,), action_dim=1)
    reg = Registry(uri, client, model, root / "releases" / "v1" / "weights")
    version = reg.release(reg.folder)
    client.set_registered_model_alias(NAME, "champion", version)
    yield reg
    torch.set_num_threads(threads)


def assert_same_weights(a: WorldModel, b: WorldModel) -> None:
    """Same keys, dtypes and values, bit for bit (bytes compared too: torch.equal alone would
    take -0.0 for 0.0)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key
        assert sa[key].cpu().numpy().tobytes() == sb[key].cpu().numpy().tobytes(), key


# --------------------------------------------------------------------------- loading
@pytest.mark.parametrize("ref", ["@champion", "/1"])
def test_models_uri_loads_bit_identical_weights_and_leaves_no_files(
    registry: Registry, ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where from_pretrained downloads
    loaded = worldflux.from_pretrained(f"models:/{NAME}{ref}", tracking_uri=registry.uri)
    assert_same_weights(registry.model, loaded)
    saved = safetensors.torch.load_file(str(registry.folder / "model.safetensors"))
    assert saved.keys() == loaded.state_dict().keys()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, saved[key]), key
    assert list(scratch.iterdir()) == []  # the download was removed after loading


def test_environment_names_the_registry(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert_same_weights(registry.model, worldflux.from_pretrained(f"models:/{NAME}@champion"))


def test_explicit_tracking_uri_beats_the_environment(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", elsewhere)
    loaded = worldflux.from_pretrained(f"models:/{NAME}@champion", tracking_uri=registry.uri)
    assert_same_weights(registry.model, loaded)


def test_download_release_puts_exactly_the_verified_files_in_dest(
    registry: Registry, tmp_path: Path
) -> None:
    dest = download_release(f"models:/{NAME}@champion", tmp_path / "a", tracking_uri=registry.uri)
    assert dest == tmp_path / "a"
    assert manifest(dest) == manifest(registry.folder)
    assert set(manifest(dest)) == {"model.safetensors", "config.json", "worldflux_metadata.json"}
    owned = download_release(f"models:/{NAME}/1", tracking_uri=registry.uri)
    try:  # no dest: a new temporary folder the caller owns
        assert manifest(owned) == manifest(registry.folder)
    finally:
        shutil.rmtree(owned)
    with pytest.raises(FileExistsError, match="not an empty directory"):
        download_release(f"models:/{NAME}/1", dest, tracking_uri=registry.uri)


# --------------------------------------------------------------------------- tampering
def _edit_config(folder: Path) -> str:
    path = folder / "config.json"
    path.write_text(path.read_text() + " ")
    return "config.json"


def _edit_weights(folder: Path) -> str:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    return "model.safetensors"


def _add_file(folder: Path) -> str:
    (folder / "notes.txt").write_text("added after registration")
    return "notes.txt"


def _remove_file(folder: Path) -> str:
    (folder / "worldflux_metadata.json").unlink()
    return "worldflux_metadata.json"


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_edit_config, "config.json has sha256"),
        (_edit_weights, "model.safetensors has sha256"),
        (_add_file, "not in the release manifest: notes.txt"),
        (_remove_file, "missing worldflux_metadata.json"),
    ],
)
def test_files_changed_after_registration_are_refused(
    registry: Registry, tmp_path: Path, tamper: Any, says: str
) -> None:
    folder = tmp_path / "weights"
    version = registry.release(folder)
    before = manifest(folder)
    name = tamper(folder)
    uri = f"models:/{NAME}/{version}"
    dest = tmp_path / "dest"
    with pytest.raises(RegistryError, match="do not match") as caught:
        download_release(uri, dest, tracking_uri=registry.uri)
    message = str(caught.value)
    assert says in message
    assert uri in message
    assert "release managers" in message  # what to do
    if name in before and name in manifest(folder):  # a changed file: both hashes named
        assert before[name] in message
        assert manifest(folder)[name] in message
    assert not dest.exists()  # nothing of a refused download is left
    with pytest.raises(RegistryError, match=name.replace(".", r"\.")):
        worldflux.from_pretrained(uri, tracking_uri=registry.uri)


def test_version_without_files_tag_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A version registered before the manifest was recorded: checkpoint_sha256 only."""
    folder = tmp_path / "weights"
    registry.model.save_pretrained(folder)
    tags = {"checkpoint_sha256": manifest(folder)["model.safetensors"]}
    version = registry.release(folder, tags=tags, save=False)
    with pytest.raises(RegistryError, match="carries no files_sha256 tag") as caught:
        worldflux.from_pretrained(f"models:/{NAME}/{version}", tracking_uri=registry.uri)
    assert f"v{version} of {NAME}" in str(caught.value)
    assert "release managers" in str(caught.value)


def test_checkpoint_tag_that_disagrees_with_the_manifest_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "weights"
    registry.model.save_pretrained(folder)
    tags = {**release_tags(folder), "checkpoint_sha256": "0" * 64}
    version = registry.release(folder, tags=tags, save=False)
    with pytest.raises(RegistryError, match="tags disagree"):
        download_release(f"models:/{NAME}/{version}", tmp_path / "d", tracking_uri=registry.uri)


def test_files_that_match_the_manifest_but_do_not_load_name_the_uri(
    registry: Registry, tmp_path: Path
) -> None:
    """A version registered from an edited folder (its manifest matches, the files do not fit
    each other): the loader's own fingerprint check still refuses, naming the models:/ URI."""
    folder = tmp_path / "weights"
    registry.model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["obs_shape"] = [4]
    (folder / "config.json").write_text(json.dumps(config))
    version = registry.release(folder, save=False)
    uri = f"models:/{NAME}/{version}"
    with pytest.raises(CheckpointError, match="match the release manifest but do not load") as e:
        worldflux.from_pretrained(uri, tracking_uri=registry.uri)
    assert uri in str(e.value)
    assert "contract fingerprint" in str(e.value)


# --------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (f"models:/{NAME}@nope", f"the model '{NAME}' has no alias 'nope'"),
        (f"models:/{NAME}/999", f"the model '{NAME}' has no version 999"),
        ("models:/worldflux-nope@champion", "there is no registered model 'worldflux-nope'"),
        ("models:/worldflux-nope/1", "there is no registered model 'worldflux-nope'"),
    ],
)
def test_unknown_model_alias_or_version_is_named(registry: Registry, uri: str, says: str) -> None:
    with pytest.raises(RegistryError) as caught:
        worldflux.from_pretrained(uri, tracking_uri=registry.uri)
    message = str(caught.value)
    assert says in message
    assert uri in message
    assert registry.uri in message
    if "alias" in says:
        assert "champion -> v1" in message  # the aliases that do exist


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("models:/", "it names no model"),
        ("models:/x@", "the alias after '@' is empty"),
        ("models:/x/notanumber", "the version 'notanumber' is not a number"),
        ("models:/x/Production", "stages such as 'Production'"),
        ("models:/x", "it names no alias or version"),
        ("models:/@champion", "the model name is empty"),
        ("models:/x/", "the version after '/' is empty"),
        ("models:/x/0", "numbered from 1"),
        ("models:/x/1/model.safetensors", "a path inside the version"),
        ("models:/x@a b", "may hold only letters"),
        ("models:/a/b@champion", "may not contain '/'"),
        ("models://profile/x/1", "models://"),
        ("runs:/abc/model", "is not a models:/ URI"),
    ],
)
def test_malformed_uris_are_refused_clearly(uri: str, says: str) -> None:
    with pytest.raises(RegistryError, match="models:/<name>@<alias> or models:/<name>/<version>"):
        parse_models_uri(uri)
    with pytest.raises(RegistryError) as caught:
        download_release(uri, tracking_uri="sqlite:////never/used.db")
    assert says in str(caught.value)


def test_parse_models_uri() -> None:
    assert parse_models_uri(f"models:/{NAME}@champion") == (NAME, "champion", None)
    assert parse_models_uri(f"models:/{NAME}@previous-champion") == (
        NAME,
        "previous-champion",
        None,
    )
    assert parse_models_uri(f"models:/{NAME}/12") == (NAME, None, "12")


def test_paths_that_look_like_uris_are_still_paths(tmp_path: Path) -> None:
    """Only a str starting with models:/ is a registry URI; a Path is always a folder."""
    with pytest.raises(CheckpointError, match="is not a directory"):
        worldflux.from_pretrained(Path("models:/x@champion"))


def test_unreachable_registry_is_a_clear_error(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://reader:s3cret@127.0.0.1:{port}"
    with pytest.raises(RegistryError, match="cannot reach the registry at") as caught:
        worldflux.from_pretrained(f"models:/{NAME}@champion", tracking_uri=server)
    message = str(caught.value)
    assert "MLFLOW_TRACKING_URI" in message
    assert "s3cret" not in message  # a password in the URI is not repeated


def test_missing_sqlite_registry_is_refused_not_created(registry: Registry, tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    with pytest.raises(RegistryError, match="SQLite file that does not exist"):
        worldflux.from_pretrained(f"models:/{NAME}@champion", tracking_uri=f"sqlite:///{db}")
    assert not db.exists()


def test_no_configured_registry_is_refused(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    if mlflow.is_tracking_uri_set():
        pytest.skip("this process set an MLflow tracking URI with mlflow.set_tracking_uri")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError, match="no MLflow registry is configured"):
        worldflux.from_pretrained(f"models:/{NAME}@champion")
    assert list(tmp_path.iterdir()) == []  # MLflow's default ./mlflow.db was not created


# --------------------------------------------------------------------------- S3 sources
_WRONG_S3_SECRET = """
import sys
from worldflux.hub import RegistryError, download_release
try:
    download_release(sys.argv[1], sys.argv[2], tracking_uri=sys.argv[3])
except RegistryError as err:
    print(err)
"""


def test_s3_source_with_the_standard_aws_variables(
    registry: Registry,
    seaweedfs: SeaweedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A version whose source is s3://: read with AWS_* and MLFLOW_S3_ENDPOINT_URL. A wrong
    secret runs in its own process: boto3 and MLflow keep the credentials a process first read."""
    import boto3  # type: ignore[import-untyped]

    folder = tmp_path / "weights"
    registry.model.save_pretrained(folder)
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweedfs.endpoint_url,
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
        region_name="us-east-1",
    )
    bucket = f"hub-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    for path in folder.iterdir():
        s3.upload_file(str(path), bucket, f"releases/tdmpc2/abc/weights/{path.name}")
    source = f"s3://{bucket}/releases/tdmpc2/abc/weights"
    version = registry.release(folder, source=source, save=False)
    uri = f"models:/{NAME}/{version}"
    env = {
        "MLFLOW_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": "wrong",
    }
    refused = subprocess.run(
        [sys.executable, "-c", _WRONG_S3_SECRET, uri, str(tmp_path / "refused"), registry.uri],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, **env},
    ).stdout
    assert f"cannot download the files of {uri} from {source}" in refused
    assert "AWS_SECRET_ACCESS_KEY" in refused
    assert "MLFLOW_S3_ENDPOINT_URL" in refused
    assert not (tmp_path / "refused").exists()
    for key, value in {**env, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}.items():
        monkeypatch.setenv(key, value)
    assert_same_weights(registry.model, worldflux.from_pretrained(uri, tracking_uri=registry.uri))


# --------------------------------------------------------------------------- without MLflow
_WITHOUT_MLFLOW = """
import sys, tempfile
import worldflux, worldflux.hub
print("imported:", sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")))
sys.modules["mlflow"] = None  # as if MLflow were not installed
try:
    worldflux.from_pretrained("models:/worldflux-tdmpc2@champion", tracking_uri="sqlite:///x.db")
except worldflux.RegistryUnavailable as err:
    print("is ImportError:", isinstance(err, ImportError))
    print("message:", err)
try:
    worldflux.from_pretrained("models:/x@")
except worldflux.RegistryError as err:
    print("malformed:", err)
model = worldflux.create_world_model("tdmpc2:ci", obs_shape=(3,), action_dim=1)
with tempfile.TemporaryDirectory() as tmp:
    worldflux.from_pretrained(model.save_pretrained(tmp))
print("folder loads without mlflow")
"""


def test_without_mlflow_models_uris_name_what_to_install() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_MLFLOW],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "imported: []" in out  # import worldflux, worldflux.hub pulls in no mlflow
    assert "is ImportError: True" in out
    assert f"pip install '{MLFLOW_REQUIREMENT}'" in out
    assert "orchestration extra" in out
    assert "malformed: 'models:/x@' is not a valid models:/ URI" in out
    assert "folder loads without mlflow" in out


def test_install_hint_matches_the_orchestration_pin() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["orchestration"]
    pins = [d for d in extra if d.startswith("mlflow")]
    assert len(pins) == 1
    assert pins[0].split("==")[1] == MLFLOW_REQUIREMENT.split("==")[1]
