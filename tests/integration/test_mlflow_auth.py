"""Against a real `mlflow server --app-name basic-auth`: only the platform's service account moves
the aliases of the `worldflux-*` registered models it created; a default (READ) user reads them
and is refused every alias change, through MLflow's client and through `release.mlflow.Mlflow`.

Credentials reach MLflow the way production passes them, through MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, which MLflow reads again on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.server.auth.client import AuthServiceClient

import release.mlflow
from release.mlflow import Mlflow, MlflowError, model_name
from tests.integration.mlflow_auth import MlflowAuthServer, start_mlflow_auth, stop

SERVICE_ACCOUNT = "worldflux-release"
FAMILY = "tdmpc2"
MODEL = model_name(FAMILY)  # worldflux-tdmpc2
# Variables that would change how MLflow authenticates if the caller's environment set them.
_CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_ENABLE_WORKSPACES",
)


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass(frozen=True)
class Registry:
    server: MlflowAuthServer
    admin: Account
    service: Account
    alice: Account
    versions: tuple[str, str]  # two versions of worldflux-tdmpc2; "champion" starts on the first

    @property
    def url(self) -> str:
        return self.server.url


def use(monkeypatch: pytest.MonkeyPatch, account: Account) -> None:
    """Every MLflow request from now on authenticates as `account` (MLflow reads these per
    request: the clients need not be rebuilt)."""
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", account.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", account.password)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A server on which the admin created the service account and alice, and the service
    account registered two versions of worldflux-tdmpc2 with the production code and put
    "champion" on the first one."""
    server = start_mlflow_auth(tmp_path_factory.mktemp("mlflow-auth"))
    try:
        admin = Account(server.admin_username, server.admin_password)
        service = Account(SERVICE_ACCOUNT, "service-account-password")
        alice = Account("alice", "alice-password-123")
        with pytest.MonkeyPatch.context() as monkeypatch:
            use(monkeypatch, admin)
            auth = get_app_client("basic-auth", tracking_uri=server.url)
            assert isinstance(auth, AuthServiceClient)
            for account in (service, alice):
                auth.create_user(account.username, account.password)

            use(monkeypatch, service)
            platform = Mlflow(tracking_uri=server.url)
            run_id = platform.start_run("train-tdmpc2", tags={"family": FAMILY})
            source = f"{platform.client().get_run(run_id).info.artifact_uri}/weights"
            versions = tuple(
                platform.register_version(FAMILY, source, run_id, {}, f"seed {seed}")
                for seed in (0, 1)
            )
            platform.set_alias(FAMILY, "champion", versions[0])
        assert len(versions) == 2
        yield Registry(server, admin, service, alice, (versions[0], versions[1]))
    finally:
        release.mlflow._client.cache_clear()  # no client left pointing at a stopped server
        stop(server)


def refused(call: Callable[[], object], code: str, status: int) -> MlflowException:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == code, caught.value.message
    assert caught.value.get_http_status_code() == status
    return caught.value


def test_admin_created_the_accounts_and_only_the_admin_manages_them(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = get_app_client("basic-auth", tracking_uri=registry.url)
    use(monkeypatch, registry.admin)
    for account in (registry.service, registry.alice):
        user = auth.get_user(account.username)
        assert user.username == account.username
        assert not user.is_admin
    # Creating the model gave the service account MANAGE on it; alice holds no grant at all
    # and so gets default_permission.
    granted = auth.get_user_permission(SERVICE_ACCOUNT, "registered_model", MODEL)
    assert granted.permission == "MANAGE"
    assert auth.get_user_permission("alice", "registered_model", MODEL).permission == "READ"

    use(monkeypatch, registry.alice)
    refused(
        lambda: auth.grant_user_permission("alice", "registered_model", MODEL, "MANAGE"),
        "PERMISSION_DENIED",
        403,
    )
    refused(lambda: auth.update_user_admin("alice", True), "PERMISSION_DENIED", 403)
    refused(lambda: auth.create_user("mallory", "mallory-password"), "PERMISSION_DENIED", 403)


def test_service_account_moves_aliases(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, registry.service)
    client = MlflowClient(tracking_uri=registry.url)
    first, second = registry.versions
    try:
        client.set_registered_model_alias(MODEL, "champion", second)
        client.set_registered_model_alias(MODEL, "previous-champion", first)
        assert client.get_registered_model(MODEL).aliases == {
            "champion": second,
            "previous-champion": first,
        }
        client.delete_registered_model_alias(MODEL, "previous-champion")
    finally:
        client.set_registered_model_alias(MODEL, "champion", first)
    assert client.get_registered_model(MODEL).aliases == {"champion": first}


def test_default_user_reads_but_cannot_move_aliases(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, registry.alice)
    client = MlflowClient(tracking_uri=registry.url)
    first, second = registry.versions
    assert client.get_registered_model(MODEL).aliases == {"champion": first}
    assert client.get_model_version_by_alias(MODEL, "champion").version == first
    for call in (
        lambda: client.set_registered_model_alias(MODEL, "champion", second),
        lambda: client.set_registered_model_alias(MODEL, "candidate", second),
        lambda: client.delete_registered_model_alias(MODEL, "champion"),
    ):
        error = refused(call, "PERMISSION_DENIED", 403)
        assert "Permission denied" in error.message
    assert client.get_registered_model(MODEL).aliases == {"champion": first}


def test_release_wrapper_acts_as_whoever_the_environment_names(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release.mlflow` keeps one cached MlflowClient per tracking URI; the identity still
    follows the environment variables on every call, without clearing the cache."""
    platform = Mlflow(tracking_uri=registry.url)
    first, second = registry.versions
    cached = platform.client()

    use(monkeypatch, registry.alice)
    assert platform.aliases(FAMILY) == {"champion": first}
    for call in (
        lambda: platform.set_alias(FAMILY, "candidate", second),
        lambda: platform.set_alias(FAMILY, "champion", second),
        lambda: platform.delete_alias(FAMILY, "champion"),
    ):
        refused(call, "PERMISSION_DENIED", 403)
    assert platform.client() is cached

    use(monkeypatch, registry.service)
    platform.set_alias(FAMILY, "candidate", second)
    assert platform.aliases(FAMILY) == {"champion": first, "candidate": second}

    use(monkeypatch, registry.alice)  # and back: the same client is refused again
    refused(lambda: platform.delete_alias(FAMILY, "candidate"), "PERMISSION_DENIED", 403)

    use(monkeypatch, registry.service)
    platform.delete_alias(FAMILY, "candidate")
    assert platform.aliases(FAMILY) == {"champion": first}
    assert platform.client() is cached


def test_wrong_password_is_refused(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Account(SERVICE_ACCOUNT, "not-the-password"))
    client = MlflowClient(tracking_uri=registry.url)
    for call in (
        lambda: client.get_registered_model(MODEL),
        lambda: client.set_registered_model_alias(MODEL, "champion", registry.versions[1]),
    ):
        error = refused(call, "UNAUTHENTICATED", 401)
        assert "You are not authenticated" in error.message
    # Through the platform: a refused login is a fault, not "no aliases".
    with pytest.raises(MlflowError, match="You are not authenticated") as caught:
        Mlflow(tracking_uri=registry.url).aliases(FAMILY)
    assert MODEL in str(caught.value)
    assert registry.url in str(caught.value)

    use(monkeypatch, registry.service)  # nothing moved
    assert client.get_registered_model(MODEL).aliases == {"champion": registry.versions[0]}


def test_a_worldflux_name_nobody_registered_yet_can_be_claimed_by_any_user(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit of the guarantee (MLflow 3.17.2, workspaces off): creating a registered model
    needs no grant, and its creator gets MANAGE on it. The platform owns a family's aliases only
    once its service account has created `worldflux-<family>`; a user who creates the name first
    owns it, and the platform can then no longer register versions there."""
    squatted = model_name("squatted")
    source = "s3://worldflux-weights/squatted/weights"  # a local path would need a run
    use(monkeypatch, registry.alice)
    client = MlflowClient(tracking_uri=registry.url)
    client.create_registered_model(squatted)
    version = client.create_model_version(squatted, source=source, await_creation_for=0)
    client.set_registered_model_alias(squatted, "champion", version.version)

    use(monkeypatch, registry.service)
    refused(
        lambda: client.set_registered_model_alias(squatted, "champion", version.version),
        "PERMISSION_DENIED",
        403,
    )
    refused(
        lambda: client.create_model_version(squatted, source=source, await_creation_for=0),
        "PERMISSION_DENIED",
        403,
    )
