"""A registry that cannot be read is a fault, not a model without aliases (issue 11: with the
server unreachable, a rollback was recorded as "no previous champion")."""

from __future__ import annotations

from pathlib import Path

import pytest

from release.mlflow import Mlflow, MlflowError
from tests.integration.ports import free_port


def test_an_unreachable_server_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowError, match=r"cannot read the aliases .*is running and reachable"):
        Mlflow(tracking_uri=uri).aliases("tdmpc2")


def test_a_model_never_registered_has_no_aliases(tmp_path: Path) -> None:
    resource = Mlflow(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert resource.aliases("tdmpc2") == {}
