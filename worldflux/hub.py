"""Released weights from the MLflow model registry: ``models:/<name>@<alias>`` and
``models:/<name>/<version>``.

``worldflux.from_pretrained("models:/worldflux-tdmpc2@champion")`` resolves the URI in the
registry, downloads the version's files from its ``source`` (the object-store folder the
release copied the weights to: ``file://...`` or ``s3://...``), checks that exactly the files of
the version's ``files_sha256`` tag are there with those sha256, then loads them (the loader
checks the weights' sha256 and the contract fingerprint once more).

MLflow is optional: it is imported only when a URI is resolved, and a missing MLflow raises
``RegistryUnavailable`` naming what to install. ``import worldflux`` never imports it.

Where the registry is: ``tracking_uri`` when given (it is then the registry too), else MLflow's
own resolution: ``MLFLOW_REGISTRY_URI``, else ``MLFLOW_TRACKING_URI`` (credentials from
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``). S3
sources are read with the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``...) and ``MLFLOW_S3_ENDPOINT_URL`` for an
S3-compatible store. An unreachable tracking server is retried by MLflow itself
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` bound the wait).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from worldflux.core.errors import WorldFluxError
from worldflux.core.files import sha256_file
from worldflux.core.serialization import WEIGHTS_FILE

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

SCHEME = "models:/"
MLFLOW_REQUIREMENT = "mlflow==3.17.2"  # the pin of the project's orchestration extra
FILES_TAG = "files_sha256"
CHECKPOINT_TAG = "checkpoint_sha256"
_INSTALL = (
    f"pip install '{MLFLOW_REQUIREMENT}' (or the project's orchestration extra: "
    "pip install 'worldflux-platform[orchestration]')"
)
_FORMS = "models:/<name>@<alias> or models:/<name>/<version>"
_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")  # MLflow's rule for alias names
_VERSION = re.compile(r"^[0-9]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(WorldFluxError, RuntimeError):
    """A ``models:/`` URI cannot be resolved, downloaded or verified: a malformed URI, an
    unknown model, alias or version, a missing tag, a registry that cannot be read, or files that
    do not match the release manifest. The message names the URI and what to do."""


class RegistryUnavailable(WorldFluxError, ImportError):
    """MLflow, which resolving a ``models:/`` URI needs, is not installed."""


# ------------------------------------------------------------------------------ URIs
def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>@<alias>`` -> (name, alias, None); ``models:/<name>/<version>`` ->
    (name, None, version), the version a string of digits as MLflow uses. Anything else (an
    empty name, alias or version, a version that is not a number, a stage such as
    ``Production`` or ``latest``, a path inside the version, a ``models://<profile>`` registry)
    raises ``RegistryError`` saying which form is expected."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise RegistryError(f"{uri!r} is not a models:/ URI: write {_FORMS}")
    rest = uri[len(SCHEME) :]

    def bad(why: str) -> RegistryError:
        return RegistryError(f"{uri!r} is not a valid models:/ URI: {why}; write {_FORMS}")

    if not rest:
        raise bad("it names no model")
    if rest.startswith("/"):
        raise bad(
            "a registry named inside the URI (models://...) is not supported; pass "
            "tracking_uri= or set MLFLOW_TRACKING_URI to choose the registry"
        )
    if "@" in rest:
        name, alias = rest.split("@", 1)
        _check_name(name, bad)
        if not alias:
            raise bad(f"the alias after '@' is empty (e.g. models:/{name}@champion)")
        if "/" in alias:
            raise bad("a path inside the version is not supported (the whole folder is loaded)")
        if not _ALIAS.match(alias):
            raise bad(f"the alias {alias!r} may hold only letters, digits, '_' and '-'")
        return name, alias, None
    parts = rest.split("/")
    name = parts[0]
    _check_name(name, bad)
    if len(parts) == 1:
        raise bad(f"it names no alias or version (e.g. models:/{name}@champion)")
    if len(parts) > 2:
        raise bad("a path inside the version is not supported (the whole folder is loaded)")
    version = parts[1]
    if not version:
        raise bad("the version after '/' is empty")
    if not _VERSION.match(version):
        raise bad(
            f"the version {version!r} is not a number (stages such as 'Production' or 'latest' "
            f"are not supported: use an alias, e.g. models:/{name}@champion)"
        )
    if int(version) < 1:
        raise bad("versions are numbered from 1")
    return name, None, str(int(version))


def _check_name(name: str, bad: Callable[[str], RegistryError]) -> None:
    if not name:
        raise bad("the model name is empty")
    if name != name.strip():
        raise bad(f"the model name {name!r} has leading or trailing spaces")
    if "/" in name:
        raise bad(f"the model name {name!r} may not contain '/'")


# ------------------------------------------------------------------------------ MLflow
def _import_mlflow() -> ModuleType:
    """MLflow, imported only now; ``RegistryUnavailable`` naming what to install if missing."""
    try:
        import mlflow
        import mlflow.artifacts
        import mlflow.exceptions
    except ImportError as err:
        if err.name in ("mlflow", None) or str(err.name).startswith("mlflow."):
            what = "MLflow is not installed"
        else:
            what = f"MLflow is installed but cannot be imported ({err})"
        raise RegistryUnavailable(
            f"resolving a models:/ URI needs MLflow: {what}. Install it: {_INSTALL}. Without "
            "MLflow, load a downloaded folder with worldflux.from_pretrained(path)"
        ) from err
    return mlflow


def _redact(uri: str) -> str:
    """A URI without the password it may embed (https://user:secret@host -> https://user:***@host)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _scrub(text: str, uri: str) -> str:
    """``text`` (an MLflow message may quote the URL it called) without ``uri``'s password."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        return text
    return text.replace(f":{password}@", ":***@") if password else text


def _registry_uri(mlflow: ModuleType, tracking_uri: str | None, uri: str) -> str:
    """Where the registry is; refuses when nothing names one (MLflow would otherwise create an
    empty ``./mlflow.db`` and report every model missing) or a SQLite file does not exist."""
    if tracking_uri is not None:
        registry = tracking_uri
    else:
        registry = str(mlflow.get_registry_uri())
        named = mlflow.is_tracking_uri_set() or registry != str(mlflow.get_tracking_uri())
        if not named:
            raise RegistryError(
                f"cannot resolve {uri}: no MLflow registry is configured. Set "
                "MLFLOW_TRACKING_URI (e.g. http://mlflow.example:5000 or "
                "sqlite:////path/mlflow.db) or pass tracking_uri="
            )
    if registry.startswith("sqlite:///"):
        path = Path(registry[len("sqlite:///") :].split("?", 1)[0])
        if not path.is_file():
            raise RegistryError(
                f"cannot resolve {uri}: the registry {registry} names a SQLite file that does "
                "not exist; check the path (MLFLOW_TRACKING_URI or tracking_uri=)"
            )
    return registry


def _fault(err: Exception, uri: str, registry: str, mlflow: ModuleType) -> RegistryError:
    """A registry failure that is not a missing model/alias/version."""
    code = getattr(err, "error_code", None)
    where = f"the registry at {_redact(registry)}"
    if isinstance(err, mlflow.exceptions.MlflowException) and code in (
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
    ):
        return RegistryError(
            f"cannot resolve {uri}: {where} refused the request ({code}); check "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    detail = f"{code}: {getattr(err, 'message', err)}" if code else f"{type(err).__name__}: {err}"
    return RegistryError(
        f"cannot resolve {uri}: cannot reach {where} ({_scrub(detail, registry)}); check that "
        "the server is running and reachable and that MLFLOW_TRACKING_URI (or tracking_uri=) "
        "names it, then retry"
    )


def _not_found(
    client: MlflowClient,
    mlflow: ModuleType,
    uri: str,
    registry: str,
    name: str,
    alias: str | None,
    version: str | None,
) -> RegistryError:
    """Which of model, alias or version is missing, with what the registry does hold."""
    where = f"the registry at {_redact(registry)}"
    try:
        model = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            return _fault(err, uri, registry, mlflow)
        return RegistryError(
            f"cannot resolve {uri}: there is no registered model {name!r} in {where}; check the "
            "name (released families are registered as worldflux-<family>, e.g. "
            "worldflux-tdmpc2) and that MLFLOW_TRACKING_URI (or tracking_uri=) names the "
            "right registry"
        )
    except Exception as err:
        return _fault(err, uri, registry, mlflow)
    if alias is not None:
        held = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
        return RegistryError(
            f"cannot resolve {uri}: the model {name!r} has no alias {alias!r} in {where} (its "
            f"aliases: {held}); use one of them or a version number (models:/{name}/<version>)"
        )
    latest = max((int(v.version) for v in model.latest_versions or []), default=None)
    newest = f"the newest is v{latest}" if latest is not None else "it has no versions"
    return RegistryError(
        f"cannot resolve {uri}: the model {name!r} has no version {version} in {where} "
        f"({newest}); use an existing version or an alias (models:/{name}@champion)"
    )


def resolve_version(uri: str, *, tracking_uri: str | None = None) -> ModelVersion:
    """The registered model version a ``models:/`` URI names (``RegistryError`` if none)."""
    name, alias, version = parse_models_uri(uri)
    mlflow = _import_mlflow()
    registry = _registry_uri(mlflow, tracking_uri, uri)
    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except Exception as err:  # e.g. a URI scheme MLflow has no store for
        raise _fault(err, uri, registry, mlflow) from err
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as err:
        missing = err.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in err.message.lower()
        if missing:
            raise _not_found(client, mlflow, uri, registry, name, alias, version) from err
        raise _fault(err, uri, registry, mlflow) from err
    except Exception as err:  # the store's own errors (SQLAlchemy, requests) are faults too
        raise _fault(err, uri, registry, mlflow) from err


# ------------------------------------------------------------------------------ manifest
def _manifest(found: ModelVersion, uri: str) -> dict[str, str]:
    """The version's ``files_sha256`` tag: {relative posix path: sha256}, checked for form."""
    where = f"{uri} (v{found.version} of {found.name}, source {_redact(str(found.source))})"
    raw = (found.tags or {}).get(FILES_TAG)
    if raw is None:
        raise RegistryError(
            f"{where} carries no {FILES_TAG} tag, so its files cannot be verified and it is not "
            f"loaded; it was registered without a file manifest (before manifests were recorded, "
            f"or by hand): ask the release managers to tag it with {FILES_TAG} (the JSON "
            f"{{file: sha256}} of its weights folder) or to release it again"
        )
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as err:
        raise RegistryError(f"{where}: the {FILES_TAG} tag is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or not manifest:
        raise RegistryError(
            f"{where}: the {FILES_TAG} tag must be a non-empty JSON object {{file: sha256}}"
        )
    for path, sha in manifest.items():
        parts = path.split("/")
        if path.startswith("/") or "" in parts or "." in parts or ".." in parts or "\\" in path:
            raise RegistryError(
                f"{where}: the {FILES_TAG} tag lists {path!r}, which is not a relative posix "
                "path inside the weights folder"
            )
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise RegistryError(
                f"{where}: the {FILES_TAG} tag gives {path!r} the hash {sha!r}, which is not a "
                "lowercase hex sha256"
            )
    checkpoint = (found.tags or {}).get(CHECKPOINT_TAG)
    if checkpoint is not None and manifest.get(WEIGHTS_FILE) != checkpoint:
        raise RegistryError(
            f"{where}: its tags disagree: {CHECKPOINT_TAG} is {checkpoint}, but {FILES_TAG} "
            f"gives {WEIGHTS_FILE} {manifest.get(WEIGHTS_FILE) or 'no hash (not listed)'}; the "
            "registry entry was edited or written wrongly: do not use it, tell the release "
            "managers"
        )
    return manifest


def _verify(folder: Path, manifest: dict[str, str], uri: str, found: ModelVersion) -> None:
    """Exactly the manifest's files, each with its sha256; every discrepancy is named."""
    actual = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    problems = []
    missing = sorted(set(manifest) - set(actual))
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    extra = sorted(set(actual) - set(manifest))
    if extra:
        problems.append(f"not in the release manifest: {', '.join(extra)}")
    for path in sorted(set(manifest) & set(actual)):
        sha = sha256_file(actual[path])
        if sha != manifest[path]:
            problems.append(
                f"{path} has sha256 {sha}, the release manifest records {manifest[path]}"
            )
    if problems:
        raise RegistryError(
            f"the files of {uri} (v{found.version} of {found.name}, downloaded from "
            f"{_redact(str(found.source))}) do not match the version's {FILES_TAG} tag: "
            f"{'; '.join(problems)}. Nothing was loaded; do not use these files. "
            "Retry once (a broken download); if it persists the released copy was changed after "
            "registration: tell the release managers (the version must be rolled back or "
            "released again)"
        )


# ------------------------------------------------------------------------------ download
@contextlib.contextmanager
def _target(dest: Path | None) -> Iterator[Path]:
    """The folder the files end up in, removed again if anything fails (an existing empty
    ``dest`` is kept, emptied)."""
    if dest is None:
        root = Path(tempfile.mkdtemp(prefix="worldflux-release-"))
        created = True
    else:
        root = Path(dest)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(
                f"{root} already exists and is not an empty directory; download_release writes "
                "into a new or empty directory only"
            )
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    except BaseException:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def download_release(
    uri: str, dest: str | Path | None = None, *, tracking_uri: str | None = None
) -> Path:
    """Resolve ``uri`` (``models:/<name>@<alias>`` or ``models:/<name>/<version>``) in the
    MLflow registry, download the version's files and verify them against its
    ``files_sha256`` tag: exactly the files listed, each with its sha256 (and the tag
    ``checkpoint_sha256``, when present, must agree with it for ``model.safetensors``).

    Returns the folder holding the verified files, directly inside it: ``dest`` (created if
    needed; it must be new or an empty directory), or, when ``dest`` is None, a new temporary
    directory that the caller owns and must remove (``shutil.rmtree``). On any error nothing is
    left behind: a folder this call created is removed, an empty ``dest`` is emptied again.

    ``tracking_uri``: the registry to ask (None: ``MLFLOW_REGISTRY_URI`` / ``MLFLOW_TRACKING_URI``
    from the environment). Raises ``RegistryError`` (what is wrong and what to do) and
    ``RegistryUnavailable`` (MLflow not installed).
    """
    found = resolve_version(uri, tracking_uri=tracking_uri)
    manifest = _manifest(found, uri)
    mlflow = _import_mlflow()
    source = str(found.source)
    with _target(None if dest is None else Path(dest)) as root:
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
        try:
            try:
                got = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=source, dst_path=str(staging), tracking_uri=tracking_uri
                    )
                )
            except Exception as err:
                raise _download_error(err, uri, source) from err
            if not got.is_dir():
                raise RegistryError(
                    f"the source of {uri}, {_redact(source)}, is a single file, not the weights "
                    "folder; the version was registered wrongly: tell the release managers"
                )
            _verify(got, manifest, uri, found)
            for child in got.iterdir():
                os.replace(child, root / child.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _download_error(err: Exception, uri: str, source: str) -> RegistryError:
    if isinstance(err, ImportError):
        hint = (
            f"a package the store needs is missing ({err}): install it (for s3://, boto3; the "
            "orchestration extra has it)"
        )
    elif source.startswith("s3://"):
        hint = (
            "check the S3 credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE) "
            "and, for an S3-compatible store, MLFLOW_S3_ENDPOINT_URL; then retry in a new "
            "process (boto3 and MLflow keep the credentials a process first read)"
        )
    elif source.startswith("file:"):
        hint = (
            "the version's source is a local folder: it must exist and be readable on this "
            "machine (a file:// registry is usable only where its store is)"
        )
    else:
        hint = "check that the object store is reachable and your credentials, then retry"
    return RegistryError(
        f"cannot download the files of {uri} from {_redact(source)} "
        f"({type(err).__name__}: {err}); {hint}"
    )
