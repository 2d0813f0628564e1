"""The release path without Dagster: decisions derived from evidence, bytes verified at every
hop, one action per family at a time, a crash at any step resolved, drift refused, named release
managers, faults recorded as faults. Each fault is injected through the real storage."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from release.decision import PromotionRefused, report_key
from release.ledger import MAX_REASON_CHARS, PromotionEntry
from release.mlflow import Mlflow
from release.object_store import S3ObjectStore
from release.promotion import (
    ReleaseFault,
    ReleaseRequest,
    Services,
    champion_key,
    champion_state,
    drift,
    open_intent,
    run_release,
)
from tests.integration.ports import free_port
from tests.release.world import (
    FAMILY,
    MANAGERS,
    SEEDS,
    World,
    make_world,
    publish_dataset_version,
    train_and_evaluate,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Two promotions done (v1, then v2 with v1 as previous champion)."""
    world = make_world(tmp_path_factory.mktemp("base"))
    world.act("promote")
    train_and_evaluate(world, "second")
    world.act("promote")
    return world


@pytest.fixture
def world(base: World, tmp_path: Path) -> World:
    """A private copy of the base world (files, ledger, MLflow database)."""
    shutil.copytree(base.root, tmp_path / "w")
    return World(tmp_path / "w")


def promotions(world: World) -> list[PromotionEntry]:
    with world.services().ledger as ledger:
        return ledger.promotions(FAMILY, limit=1000)


def assert_consistent(world: World) -> None:
    """The invariant: aliases, champion.json and the ledger agree; nothing is pending; the
    chain verifies."""
    services = world.services()
    with services.ledger as ledger:
        ledger.verify()
        assert open_intent(ledger, FAMILY) is None
        assert drift(services, FAMILY) == []
        state = champion_state(ledger, FAMILY)
    aliases = services.mlflow.aliases(FAMILY)
    assert aliases.get("champion") == state.champion
    assert aliases.get("previous-champion") == state.previous
    assert services.store.get_json(champion_key(FAMILY))["version"] == state.champion


def test_promotions_and_a_rollback_keep_every_place_in_agreement(world: World) -> None:
    assert_consistent(world)
    assert world.mlflow().aliases(FAMILY) == {"champion": "2", "previous-champion": "1"}
    back = world.act("rollback", actor="bob", reason="regression")
    assert (back.previous, back.version) == ("2", "1")
    assert_consistent(world)
    newest = promotions(world)[0]
    assert (newest.action, newest.actor, newest.from_version, newest.to_version) == (
        "rollback",
        "bob",
        "2",
        "1",
    )
    steps = [p.details.get("step") for p in promotions(world) if p.action == "step"]
    assert steps[:4] == ["aliases moved", "aliases moved", "version registered", "weights copied"]


# --------------------------------------------------------------------------- crash safety
KILLS = [("promote", s) for s in ("weights copied", "version registered", "aliases moved")]
KILLS += [("promote", "committed"), ("rollback", "aliases moved"), ("rollback", "committed")]


@pytest.mark.parametrize(("action", "step"), KILLS, ids=[f"{a}-{s}" for a, s in KILLS])
def test_a_killed_release_is_resolved_by_the_next_call(
    world: World, action: str, step: str
) -> None:
    """A real subprocess is killed (SIGKILL) when its action reaches ``step`` (the step done,
    the ledger not yet told). The next call resolves it; the invariant holds."""
    if action == "promote":
        train_and_evaluate(world, "third")
    before = champion_state(world.services().ledger, FAMILY)
    killed = subprocess.run(
        [sys.executable, "-m", "tests.release.world", str(world.root), action, step],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    services = world.services()
    with services.ledger as ledger:
        intent = open_intent(ledger, FAMILY)
        assert intent is not None
        assert drift(services, FAMILY)  # status shows the interrupted action
    again = world.act(action, reason="after the crash")  # resolves, then acts
    assert_consistent(world)
    records = promotions(world)
    aborted = [p for p in records if p.action == "aborted"]
    assert len(aborted) == 1
    assert aborted[0].details["intent"] == intent.id
    assert champion_state(world.services().ledger, FAMILY).champion == again.version
    # The first committed action after the crash started from the state before it.
    assert again.previous == before.champion


def test_two_promotions_at_once_are_serialized(world: World) -> None:
    train_and_evaluate(world, "third")
    command = [sys.executable, "-m", "tests.release.world", str(world.root), "promote"]
    both = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    commits = [p for p in promotions(world) if p.action == "promote"][:2]
    # The audit trail does not fork: the later one starts where the earlier one ended.
    assert commits[0].from_version == commits[1].to_version
    assert commits[1].from_version == "2"
    assert_consistent(world)


def test_a_held_lease_makes_a_second_action_wait_then_fail_as_a_fault(world: World) -> None:
    services = world.services()
    request = ReleaseRequest(FAMILY, "rollback", "alice", "busy", "r")
    with (
        services.ledger as ledger,
        ledger.lease(FAMILY, "someone else"),
        pytest.raises(ReleaseFault, match="report ledger"),
    ):
        run_release(request, services, seeds=SEEDS, managers=MANAGERS, lease_wait=0.3)
    latest = promotions(world)[0]
    assert (latest.action, latest.details["service"]) == ("failed", "the report ledger")
    assert world.mlflow().aliases(FAMILY)["champion"] == "2"


# ------------------------------------------------------------------- derived decisions
def test_an_edited_ledger_record_refuses_every_action(world: World) -> None:
    with closing(sqlite3.connect(world.root / "ledger.db")) as conn, conn:
        conn.execute("UPDATE promotions SET actor = 'mallory' WHERE seq = 3")
    for action in ("promote", "rollback"):
        with pytest.raises(PromotionRefused, match=r"failed verification.*promotions record 3"):
            world.act(action)
    assert world.mlflow().aliases(FAMILY)["champion"] == "2"
    refusals = [p for p in promotions(world)[:2]]
    assert {p.action for p in refusals} == {"refused"}


def _latest_report_id(world: World) -> str:
    with world.services().ledger as ledger:
        entry = ledger.latest_report(FAMILY)
    assert entry is not None
    return entry.report_id


def test_a_report_edited_in_the_object_store_is_refused_naming_both_hashes(world: World) -> None:
    train_and_evaluate(world, "third")
    store = world.services().store
    key = report_key(FAMILY, _latest_report_id(world))
    report = store.get_json(key)
    report["gates"]["results"][0]["reason"] = "edited"
    store.put_json(key, report)
    with pytest.raises(PromotionRefused, match=r"differs between the ledger \(sha256 [0-9a-f]{64}"):
        world.act("promote")
    latest = promotions(world)[0]
    assert (latest.action, latest.report_id) == ("refused", _latest_report_id(world))


def test_a_report_hash_edited_in_mlflow_is_refused(world: World) -> None:
    train_and_evaluate(world, "third")
    mlflow = world.mlflow()
    [run] = mlflow.client().search_runs(
        [mlflow.experiment_id("worldflux-gate-reports")],
        filter_string=f"tags.report_id = '{_latest_report_id(world)}'",
    )
    mlflow.client().set_tag(run.info.run_id, "report_sha256", "0" * 64)
    with pytest.raises(PromotionRefused, match="MLflow run"):
        world.act("promote")


def test_a_data_set_whose_newest_version_failed_refuses(world: World) -> None:
    train_and_evaluate(world, "third")
    publish_dataset_version(world, "e" * 64, failures=("action out of bounds: row 7",))
    with pytest.raises(
        PromotionRefused,
        match=r"failed its latest expectation suite \(version e+: action out of bounds: row 7\)",
    ):
        world.act("promote")
    assert world.mlflow().aliases(FAMILY)["champion"] == "2"


def test_a_data_set_with_a_newer_good_version_refuses(world: World) -> None:
    train_and_evaluate(world, "third")
    publish_dataset_version(world, "f" * 64)
    with pytest.raises(PromotionRefused, match=r"but its latest good version has digest f+"):
        world.act("promote")
    assert world.mlflow().aliases(FAMILY)["champion"] == "2"


def test_a_changed_gate_policy_refuses(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import quality.policy

    train_and_evaluate(world, "third")
    policies = world.root / "policies"
    shutil.copytree(quality.policy.POLICY_DIR, policies)
    path = policies / "default.json"
    policy = json.loads(path.read_text())
    policy["thresholds"]["min_skill"] = 0.1  # a looser gate than the report was measured under
    path.write_text(json.dumps(policy))
    monkeypatch.setattr(quality.policy, "POLICY_DIR", policies)
    with pytest.raises(PromotionRefused, match="measured under gate policy digest"):
        world.act("promote")


# ------------------------------------------------------------------------ verified bytes
def test_an_edited_checkpoint_config_is_refused_and_recorded(world: World) -> None:
    train_and_evaluate(world, "third")
    store = world.services().store
    for seed in SEEDS:  # whichever seed is best, its config was edited
        store.put_bytes(f"checkpoints/{FAMILY}/seed_{seed}/weights/config.json", b"{}")
    with pytest.raises(PromotionRefused, match=r"config\.json of the weights"):
        world.act("promote")
    assert promotions(world)[0].action == "refused"
    assert_consistent(world)


def test_an_edited_release_copy_refuses_the_rollback(world: World) -> None:
    services = world.services()
    with services.ledger as ledger:
        first = next(p for p in ledger.promotions(FAMILY) if p.to_version == "1")
    services.store.put_bytes(f"{first.details['weights_key']}/model.safetensors", b"swapped")
    with pytest.raises(PromotionRefused, match=r"model\.safetensors of the weights"):
        world.act("rollback")
    assert world.mlflow().aliases(FAMILY) == {"champion": "2", "previous-champion": "1"}
    assert_consistent(world)


# ---------------------------------------------------------------------------------- drift
def test_an_alias_moved_by_hand_is_drift_until_reconciled(world: World) -> None:
    world.mlflow().set_alias(FAMILY, "champion", "1")
    services = world.services()
    with services.ledger:
        [problem] = drift(services, FAMILY)
    assert "alias champion of worldflux-tdmpc2 is v1, the ledger says v2" in problem
    with pytest.raises(PromotionRefused, match="orchestration reconcile tdmpc2"):
        world.act("rollback")
    done = world.act("reconcile", reason="alias moved by hand")
    assert done.details["drift"] == [problem]
    assert_consistent(world)
    assert world.mlflow().aliases(FAMILY)["champion"] == "2"


# ----------------------------------------------------------------------- who may release
def test_only_release_managers_may_act_and_refusals_are_recorded(world: World) -> None:
    with pytest.raises(PromotionRefused, match="'mallory' is not a release manager"):
        world.act("rollback", actor="mallory")
    with pytest.raises(PromotionRefused, match=f"at most {MAX_REASON_CHARS} are kept"):
        world.act("rollback", reason="x" * (MAX_REASON_CHARS + 1))
    capped, refused = promotions(world)[:2]
    assert (refused.action, refused.actor) == ("refused", "mallory")
    assert capped.action == "refused"
    assert len(capped.reason) <= MAX_REASON_CHARS
    assert capped.reason.endswith("...[cut]")
    assert world.mlflow().aliases(FAMILY)["champion"] == "2"


# ---------------------------------------------------------------------------------- faults
@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.mark.usefixtures("no_retries")
@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_an_unreachable_registry_is_a_fault_not_a_refusal(world: World, action: str) -> None:
    train_and_evaluate(world, "third")
    services = world.services()
    down = Services(services.store, services.ledger, Mlflow(f"http://127.0.0.1:{free_port()}"))
    request = ReleaseRequest(FAMILY, action, "alice", "while MLflow is down", "r")
    with down.ledger, pytest.raises(ReleaseFault, match="the MLflow registry failed"):
        run_release(request, down, seeds=SEEDS, managers=MANAGERS)
    latest = promotions(world)[0]
    assert latest.action == "failed"
    assert latest.details["service"] == "the MLflow registry"
    assert not [
        p for p in promotions(world) if p.reason == "while MLflow is down" and p.action == "refused"
    ]
    assert_consistent(world)


def test_an_unreachable_object_store_is_a_fault_naming_it(world: World) -> None:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    services = world.services()
    down = Services(S3ObjectStore(client, "releases"), services.ledger, services.mlflow)
    request = ReleaseRequest(FAMILY, "promote", "alice", "while S3 is down", "r")
    with down.ledger, pytest.raises(ReleaseFault, match="the object store failed"):
        run_release(request, down, seeds=SEEDS, managers=MANAGERS)
    latest = promotions(world)[0]
    assert (latest.action, latest.details["service"]) == ("failed", "the object store")
    assert latest.report_id is not None
    assert world.mlflow().aliases(FAMILY) == {"champion": "2", "previous-champion": "1"}
