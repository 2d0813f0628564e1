"""The deployment files under deploy/ agree with the platform they deploy.

Nothing here starts a container or reaches a network (the development machines have neither
Docker nor Kubernetes): the files are parsed and compared with what the code reads. Each
variable a file sets or references must be read by someone, the platform's settings or a named
third-party program, so a misspelled name fails here instead of being silently ignored in
production; the run queue's limits must use the tag the jobs carry; Dagster's own schema checks
the instance file.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from assets.partitions import SEEDS_VARIABLE
from orchestration.cli import TOKEN_VARIABLE
from orchestration.jobs import JOBS, KIND_TAG
from orchestration.settings import CELERY_BROKER_VARIABLE, PG_VARIABLE, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CODE_LOCATION = "orchestration.definitions"
ENV_SECRET = "worldflux-env"  # the Secret of deploy/kubernetes/worldflux-env.example

# Variables that programs other than the platform read, with the program. The platform's own
# come from the code (platform_variables), never from a list here.
THIRD_PARTY = {
    "POSTGRES_USER": "the postgres image",
    "POSTGRES_PASSWORD": "the postgres image",
    "POSTGRES_DB": "the postgres image",
    "MLFLOW_DB": "deploy/postgres/create-databases.sh",
    "REDISCLI_AUTH": "redis-cli (the redis service's health check and command)",
    "AWS_ACCESS_KEY_ID": "boto3, and SeaweedFS as its admin identity",
    "AWS_SECRET_ACCESS_KEY": "boto3, and SeaweedFS as its admin identity",
    "AWS_DEFAULT_REGION": "botocore (MLflow's S3 client)",
    "MLFLOW_BACKEND_STORE_URI": "mlflow server (--backend-store-uri)",
    "MLFLOW_S3_ENDPOINT_URL": "MLflow's S3 artifact store",
    "OMP_NUM_THREADS": "torch (threads per process)",
    "MLFLOW_DISABLE_TELEMETRY": "MLflow",
    "DAGSTER_DISABLE_TELEMETRY": "Dagster",
}
# Variables compose.yaml itself interpolates (not passed to any container under that name).
COMPOSE_ONLY = {
    "IMAGE_TAG": "the image tag",
    "CELERY_WORKERS": "celery-worker replicas",
    "REDIS_PASSWORD": "Redis's password, in REDISCLI_AUTH and the broker URL",
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; `$$` is a literal `$`.
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_SHELL_REFERENCE = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)")


class _Recorder(dict[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def platform_variables() -> set[str]:
    """Every variable the platform reads: those Settings.from_env looks up (recorded, not
    listed), plus the two read outside the settings module."""
    recorder = _Recorder()
    Settings.from_env(recorder)
    return recorder.read | {SEEDS_VARIABLE, TOKEN_VARIABLE}


def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        return yaml.safe_load(handle)


def strings(node: Any) -> Iterator[str]:
    """Every string anywhere in a parsed YAML document (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def env_references(node: Any) -> Iterator[str]:
    """Names in Dagster's `{env: NAME}` config sources anywhere in a document."""
    if isinstance(node, Mapping):
        if set(node) == {"env"} and isinstance(node["env"], str):
            yield node["env"]
        for value in node.values():
            yield from env_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_references(item)


def values_named(node: Any, key: str) -> Iterator[Any]:
    """The value of every mapping entry called `key`, at any depth."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            if name == key:
                yield value
            yield from values_named(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from values_named(item, key)


def interpolated_names(text: str) -> set[str]:
    return {m.group(1) for m in _INTERPOLATION.finditer(text.replace("$$", ""))}


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Compose's interpolation, for the forms compose.yaml uses."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = values.get(name)
        if op.startswith(":") and not value:
            value = None
        if value is None:
            assert "?" not in op, f"{name} is required by compose.yaml: {arg}"
            return arg if "-" in op else ""
        return value

    return _INTERPOLATION.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (compose's .env and kubectl's --from-env-file share this form)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            pairs[name.strip()] = value.strip()
    return pairs


def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def unknown_variables(names: set[str], also: Mapping[str, str] | None = None) -> set[str]:
    known = platform_variables() | set(THIRD_PARTY) | set(also or {})
    return names - known


def tag_limits(limits: list[Mapping[str, Any]]) -> dict[str, int]:
    """Kind -> limit, after checking every limit is on the project's kind tag."""
    assert {entry["key"] for entry in limits} == {KIND_TAG}
    return {entry["value"]: entry["limit"] for entry in limits}


def job_kinds() -> set[str]:
    return {job.tags[KIND_TAG] for job in JOBS}


def command_text(service: Mapping[str, Any]) -> str:
    command = service.get("command", [])
    return command if isinstance(command, str) else " ".join(map(str, command))


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize(
    "name",
    ["compose.yaml", "dagster.yaml", "workspace.yaml", "kubernetes/values.yaml"],
)
def test_every_yaml_file_parses_to_a_mapping(name: str) -> None:
    assert isinstance(load_yaml(DEPLOY / name), dict)


def test_compose_runs_every_server_and_process() -> None:
    assert set(services()) >= {
        "postgres",
        "redis",
        "seaweedfs",
        "mlflow",
        "user-code",
        "webserver",
        "daemon",
        "celery-worker",
    }


def test_compose_sets_only_variables_that_something_reads() -> None:
    names = {name for service in services().values() for name in service.get("environment", {})}
    assert not unknown_variables(names), "set in compose.yaml but read by nothing"


def test_compose_interpolates_only_documented_variables() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    documented = env_file(DEPLOY / ".env.example")
    assert interpolated_names(text) == set(documented), (
        "compose.yaml's ${...} and deploy/.env.example must name the same variables"
    )
    assert not unknown_variables(set(documented), also=COMPOSE_ONLY)


def test_a_shell_reference_names_a_variable_of_its_own_service() -> None:
    for name, service in services().items():
        used = {m for text in strings(service) for m in _SHELL_REFERENCE.findall(text)}
        missing = used - set(service.get("environment", {}))
        assert not missing, f"{name} refers to {missing} but does not set them"


def _service_env(name: str) -> dict[str, str]:
    """A service's environment as its container would see it, with deploy/.env.example's
    values and a stand-in for each secret left empty there."""
    values = {k: v or f"secret-{k.lower()}" for k, v in env_file(DEPLOY / ".env.example").items()}
    values["WORLDFLUX_MONGODB_URI"] = ""  # optional: empty means the SQLite ledger
    environment = services()[name].get("environment", {})
    return {key: interpolate(str(value), values) for key, value in environment.items()}


@pytest.mark.parametrize("name", ["user-code", "celery-worker", "serve"])
def test_platform_processes_get_the_production_backends(name: str) -> None:
    settings = Settings.from_env(_service_env(name))
    assert str(settings.dagster_pg_url).startswith("postgresql://")
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.s3_bucket == "worldflux"
    assert settings.s3_endpoint_url == "http://seaweedfs:8333"
    assert str(settings.celery_broker).startswith("redis://")
    assert settings.mongodb_uri is None
    assert settings.release_managers()


def test_every_dagster_process_opens_the_same_instance() -> None:
    instances = {
        name: (env.get("DAGSTER_HOME"), env.get(PG_VARIABLE))
        for name in ("user-code", "webserver", "daemon", "celery-worker", "serve")
        for env in [_service_env(name)]
    }
    assert len(set(instances.values())) == 1, instances
    assert None not in next(iter(instances.values()))


def test_compose_commands_name_the_code_location_and_the_broker() -> None:
    code_server = command_text(services()["user-code"])
    assert f"-m {CODE_LOCATION}" in code_server
    assert importlib.util.find_spec(CODE_LOCATION) is not None
    port = re.search(r"-p (\d+)", code_server)
    assert port, code_server
    (location,) = load_yaml(DEPLOY / "workspace.yaml")["load_from"]
    assert location["grpc_server"]["host"] == "user-code"
    assert location["grpc_server"]["port"] == int(port.group(1))
    worker = command_text(services()["celery-worker"])
    # The worker command of orchestration/distributed.py: dagster_celery's app and queue, and
    # the broker (also the result backend) from the platform's variable.
    assert "-A dagster_celery.app" in worker
    assert "-Q dagster" in worker
    assert worker.count(f"$${CELERY_BROKER_VARIABLE}") == 2


def test_kubernetes_values_use_only_variables_that_something_reads() -> None:
    values = load_yaml(DEPLOY / "kubernetes" / "values.yaml")
    secret = env_file(DEPLOY / "kubernetes" / "worldflux-env.example")
    assert not unknown_variables(set(secret)), "in worldflux-env.example but read by nothing"
    referenced = set(env_references(values))
    assert referenced <= set(secret), "values.yaml reads variables the Secret does not hold"
    deployments = values["dagster-user-deployments"]["deployments"]
    env_names = {item["name"] for deployment in deployments for item in deployment["env"]}
    assert not unknown_variables(env_names | referenced)
    secret_names = {item["name"] for node in values_named(values, "envSecrets") for item in node}
    assert secret_names == {ENV_SECRET}


def test_kubernetes_values_run_the_code_location_one_cpu_per_run() -> None:
    values = load_yaml(DEPLOY / "kubernetes" / "values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", CODE_LOCATION]
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    resources = launcher["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    assert resources["resources"]["requests"]["cpu"] == resources["resources"]["limits"]["cpu"]
    assert resources["resources"]["limits"]["cpu"] == "1"
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in deployment["env"]


def test_run_queues_limit_every_kind_by_the_jobs_tag() -> None:
    instance = load_yaml(DEPLOY / "dagster.yaml")["concurrency"]["runs"]
    values = load_yaml(DEPLOY / "kubernetes" / "values.yaml")
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    for limits, total in (
        (tag_limits(instance["tag_concurrency_limits"]), instance["max_concurrent_runs"]),
        (tag_limits(queued["tagConcurrencyLimits"]), queued["maxConcurrentRuns"]),
    ):
        assert set(limits) == job_kinds(), "a kind the jobs carry has no limit, or vice versa"
        assert limits["release"] == 1
        assert max(limits.values()) <= total


def test_instance_file_is_valid_dagster_config_and_keeps_the_retry_policy(
    tmp_path: Path,
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path), "dagster.yaml")
    assert config["storage"]["postgres"]["postgres_url"] == {"env": PG_VARIABLE}
    assert config["run_retries"] == load_yaml(REPO / "dagster.yaml")["run_retries"]
    helm_retries = load_yaml(DEPLOY / "kubernetes" / "values.yaml")["dagsterDaemon"]["runRetries"]
    assert helm_retries["retryOnAssetOrOpFailure"] is False


def test_dockerfile_pins_what_the_project_pins() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (torch,) = [d for d in pyproject["dependencies"] if d.startswith("torch==")]
    assert f"pip install {torch} --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    # Dagster's libraries move in lockstep: dagster-k8s and dagster-celery at dagster-aws's pin.
    (aws,) = [d for d in pyproject["optional-dependencies"]["orchestration"] if "dagster-aws" in d]
    version = aws.split("==")[1]
    for library in ("dagster-k8s", "dagster-celery"):
        assert f"{library}=={version}" in dockerfile
