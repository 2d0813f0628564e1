"""User mistakes on the command line get a clear error, not a traceback, before anything starts
(no Dagster instance, no servers)."""

from __future__ import annotations

import pytest

from assets.partitions import FAMILIES
from orchestration import cli


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["promote", "nosuch", "--reason", "x"], "nosuch"),
        (["rollback", "[/oops]", "--reason", "x"], "[/oops]"),
        (["status", "tdmpc2", "nosuch"], "nosuch"),
    ],
)
def test_an_unknown_family_is_named_with_the_known_ones(
    argv: list[str], unknown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    out = capsys.readouterr().out
    assert "unknown family" in out
    assert repr(unknown) in out  # printed as given: markup in it is escaped, not interpreted
    assert all(family in out for family in FAMILIES)
    assert "Traceback" not in out


def test_serving_beyond_loopback_needs_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORLDFLUX_API_TOKEN", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    out = capsys.readouterr().out
    assert "refusing to listen on 0.0.0.0 without WORLDFLUX_API_TOKEN" in out
