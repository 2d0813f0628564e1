"""``python -m orchestration status --verify`` on a real embedded platform: an untouched ledger
verifies; an edited, deleted or reordered record is named and the command exits 1."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

from orchestration import cli
from release.ledger import PromotionEntry
from release.ledger_sqlite import SqliteLedger
from tests.release.ledger_faults import Storage


def _edit(storage: Storage) -> None:
    storage.update("promotions", 2, to_version="9")


def _delete(storage: Storage) -> None:
    storage.delete("promotions", 2)


def _reorder(storage: Storage) -> None:
    storage.swap("promotions", 2, 3)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_edit, "promotions record 2 was edited"),
        (_delete, "promotions record 2 is missing"),
        (_reorder, "promotions record 2 does not follow record 1"),
    ],
    ids=["edited", "deleted", "reordered"],
)
def test_status_verify_names_the_first_bad_record(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Storage], None],
    named: str,
) -> None:
    home = tmp_path / "home"
    # The embedded defaults under tmp_path, whatever the caller's environment configures.
    ours = ("WORLDFLUX_", "MLFLOW_", "DAGSTER_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env |= {"WORLDFLUX_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dagster")}
    with mock.patch.dict(os.environ, env, clear=True):
        with SqliteLedger(home / "ledger.db") as ledger:
            for version in ("1", "2", "3", "4"):
                ledger.add_promotion(
                    PromotionEntry(
                        family="tdmpc2",
                        action="promote",
                        from_version=None,
                        to_version=version,
                        actor="alice",
                        reason=f"v{version}",
                        report_id=None,
                        dagster_run_id="r",
                        created_at=dt.datetime.now(dt.UTC),
                    )
                )
        assert cli.main(["status", "--verify"]) == 0
        assert "ledger verified" in capsys.readouterr().out
        tamper(Storage("sqlite", path=home / "ledger.db"))
        assert cli.main(["status", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "ledger verification FAILED" in out
    assert named in out
    assert "Traceback" not in out
