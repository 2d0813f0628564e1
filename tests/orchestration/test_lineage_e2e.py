"""The whole lineage in process, on a real Dagster instance, MLflow (SQLite), object store and
ledger: data sets -> checkpoints -> gate reports -> released weights.

tdmpc2, trained at its policy's steps (1000), passes every gate; diffusion, trained for only
DIFFUSION_STEPS, is blocked: a real failure, not an injected one (see FAILING_GATE).
"""

import base64
import getpass
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import pytest
import torch
from PIL import Image

from assets.gate_report import ALL_GATES, check_name
from assets.partitions import SEEDS, checkpoint_key
from orchestration import cli
from orchestration import operations as ops
from orchestration.sensors import gate_report_requests
from quality.evaluate import gate_names
from release.decision import report_key
from release.lineage import checkpoint_prefix
from release.mlflow import MAX_POINTS
from tests.integration.ports import free_port
from tests.orchestration.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
HEALTHY, FAILING = "tdmpc2", "diffusion"
# A third of the nightly policy's steps: tdmpc2 passes every gate at 1,000 (docs/worldflux.md).
HEALTHY_STEPS = 1000
DIFFUSION_STEPS = 100
FAILING_GATE = "common.seed_success_rate"  # diffusion at 100 steps: no held-out skill


@dataclass
class Lineage:
    evaluations: dict[str, ops.Outcome]
    sensor_waiting: list[str]
    sensor_before: list[dg.RunRequest]
    sensor_after: list[str]
    released: ops.Outcome
    blocked: ops.Outcome
    refused: ops.Outcome
    threads: tuple[int, int]  # this process's torch threads before and after the runs


@pytest.fixture(scope="module")
def lineage(platform: Platform) -> Lineage:
    defs, instance = platform.defs, platform.instance
    threads_before = torch.get_num_threads()
    assert ops.materialize_dataset(defs, instance, "pendulum").success
    for family, steps in ((HEALTHY, HEALTHY_STEPS), (FAILING, DIFFUSION_STEPS)):
        for seed in SEEDS:
            outcome = ops.train(defs, instance, family, seed, steps=steps)
            assert outcome.success, outcome.message
    sensor_waiting = [r.partition_key for r in gate_report_requests(instance)]  # no re-runs yet
    for family in (HEALTHY, FAILING):
        outcome = ops.repeat(defs, instance, family)
        assert outcome.success, outcome.message
    sensor_before = gate_report_requests(instance)
    evaluations = {f: ops.evaluate(defs, instance, f) for f in (HEALTHY, FAILING)}
    sensor_after = [r.partition_key for r in gate_report_requests(instance)]
    released = ops.release(
        defs, instance, HEALTHY, action="promote", reason="first release", actor="alice"
    )
    # Gates and release in one run: the failing checks must stop released_weights.
    blocked = ops.release(
        defs, instance, FAILING, action="promote", reason="try", actor="bob", with_gates=True
    )
    refused = ops.release(defs, instance, FAILING, action="promote", reason="again", actor="bob")
    threads = (threads_before, torch.get_num_threads())
    return Lineage(
        evaluations,
        sensor_waiting,
        sensor_before,
        sensor_after,
        released,
        blocked,
        refused,
        threads,
    )


def _materializations(instance: dg.DagsterInstance, asset: str, partition: str) -> list:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=100,
    ).records


def test_gate_report_follows_when_all_seeds_landed(lineage: Lineage) -> None:
    assert not {HEALTHY, FAILING} & set(lineage.sensor_waiting)  # the re-runs had not landed
    assert {HEALTHY, FAILING} <= {r.partition_key for r in lineage.sensor_before}
    assert not {HEALTHY, FAILING} & set(lineage.sensor_after)


def test_a_gate_report_run_checks_its_familys_gates_only(lineage: Lineage) -> None:
    for family in (HEALTHY, FAILING):
        own = {check_name(g) for g in gate_names(family)}
        evaluated = {
            e.check_name for e in lineage.evaluations[family].result.get_asset_check_evaluations()
        }
        assert evaluated == own
        request = next(r for r in lineage.sensor_before if r.partition_key == family)
        assert {k.name for k in request.asset_check_keys or []} == own
    assert set(ALL_GATES) - set(gate_names(HEALTHY))  # the union has checks that are not its own


def test_healthy_family_is_released_with_provenance(platform: Platform, lineage: Lineage) -> None:
    assert lineage.released.success, lineage.released.message
    aliases = platform.mlflow.aliases(HEALTHY)
    assert set(aliases) == {"champion"}  # no previous champion yet
    tags = platform.mlflow.version_tags(HEALTHY, aliases["champion"])
    with platform.ledger() as ledger:
        report = ledger.latest_report(HEALTHY)
        promotion = ledger.latest_promotion(HEALTHY)
    assert report is not None
    assert tags["gate_report_id"] == report.report_id
    assert tags["gate_report_sha256"] == report.report_sha256
    shas = {c["sha256"] for c in report.report["checkpoints"]}
    assert tags["checkpoint_sha256"] in shas
    assert tags["dagster_run_id"] == lineage.released.run_id
    assert tags["dataset_digest"] == report.report["datasets"][0]["digest"]
    assert promotion is not None
    assert (promotion.action, promotion.actor, promotion.reason) == (
        "promote",
        "alice",
        "first release",
    )
    assert (promotion.from_version, promotion.to_version) == (None, aliases["champion"])
    store = platform.store()
    card = store.get_bytes(promotion.details["model_card_key"]).decode()
    for section in (
        "Model details",
        "Intended use",
        "Factors",
        "Metrics",
        "Evaluation data",
        "Training data",
        "Quantitative analyses",
        "Ethical considerations",
        "Caveats and recommendations",
    ):
        assert f"## {section}" in card
    assert report.report_id in card
    assert tags["checkpoint_sha256"] in card
    # The released seed's real-versus-imagined plot, inline, as its checkpoint run drew it.
    seed = promotion.details["seed"]
    drawn = store.get_bytes(f"{checkpoint_prefix(HEALTHY, seed)}/rollout.png")
    assert _inline_pngs(card) == [drawn]
    # The gate report shows every seed's, in the object store's Markdown and in the UI.
    markdown = store.get_bytes(report_key(HEALTHY, report.report_id).removesuffix(".json") + ".md")
    pictures = _inline_pngs(markdown.decode())
    assert len(pictures) == len(SEEDS)
    for png in pictures:
        assert Image.open(io.BytesIO(png)).size[0] == 600  # tdmpc2: a plot, 6 in at 100 dpi


def _inline_pngs(markdown: str) -> list[bytes]:
    """The PNGs a Markdown text shows inline (data URIs), decoded."""
    parts = markdown.split("](data:image/png;base64,")[1:]
    return [base64.b64decode(p.split(")", 1)[0]) for p in parts]


def test_failing_family_is_blocked_in_the_same_run(platform: Platform, lineage: Lineage) -> None:
    assert not lineage.evaluations[FAILING].success  # failing blocking checks fail the run
    failed = {e.check_name for e in lineage.evaluations[FAILING].failed_checks()}
    assert check_name(FAILING_GATE) in failed
    assert lineage.evaluations[HEALTHY].success
    assert not lineage.blocked.success
    assert _materializations(platform.instance, "released_weights", FAILING) == []
    assert platform.mlflow.aliases(FAILING) == {}
    # The check's verdict and reason are in the instance's check history.
    history = platform.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("gate_report"), check_name(FAILING_GATE)), limit=10
    )
    assert history
    evaluation = history[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
    # Once seen in a fresh-clone run, not reproduced: the newest execution was only planned.
    # Say which run it was and how that run ended, should it happen again.
    assert isinstance(evaluation, dg.AssetCheckEvaluation), (
        [(h.run_id, h.status) for h in history],
        {name: (o.run_id, o.success, o.message) for name, o in lineage.evaluations.items()},
        (lineage.blocked.run_id, lineage.blocked.message),
    )
    assert evaluation.passed is False
    assert evaluation.metadata["status"].value == "fail"
    assert evaluation.description == evaluation.metadata["reason"].value != ""


def test_later_standalone_release_of_failed_family_is_refused(
    platform: Platform, lineage: Lineage
) -> None:
    assert not lineage.refused.success
    assert "FAILED" in lineage.refused.message
    assert FAILING_GATE in lineage.refused.message
    assert platform.mlflow.aliases(FAILING) == {}
    with platform.ledger() as ledger:
        refusals = [p for p in ledger.promotions(FAILING) if p.action == "refused"]
    assert refusals
    assert refusals[0].actor == "bob"


@contextmanager
def tampered_report(
    platform: Platform, family: str, change: Callable[[dict[str, Any]], None]
) -> Iterator[None]:
    """Edit the family's latest report in the SQLite ledger, as the issue's user did with
    ``UPDATE gate_reports ...``, and put it back afterwards."""
    assert platform.settings.mongodb_uri is None, "the e2e platform keeps its ledger in SQLite"
    with closing(sqlite3.connect(platform.settings.home / "ledger.db")) as conn:
        seq, text = conn.execute(
            "SELECT seq, report FROM gate_reports WHERE family = ? ORDER BY seq DESC LIMIT 1",
            (family,),
        ).fetchone()
        report = json.loads(text)
        change(report)
        with conn:
            conn.execute(
                "UPDATE gate_reports SET report = ? WHERE seq = ?", (json.dumps(report), seq)
            )
        try:
            yield
        finally:
            with conn:
                conn.execute("UPDATE gate_reports SET report = ? WHERE seq = ?", (text, seq))


def _flip_release_pass(report: dict[str, Any]) -> None:
    report["gates"]["release_pass"] = True


def _drop_failing_gate(report: dict[str, Any]) -> None:
    results = report["gates"]["results"]
    report["gates"]["results"] = [g for g in results if g["name"] != FAILING_GATE]


@pytest.mark.parametrize(
    "change", [_flip_release_pass, _drop_failing_gate], ids=["release-pass", "gate-removed"]
)
def test_a_tampered_ledger_report_is_refused_and_recorded(
    platform: Platform, lineage: Lineage, change: Callable[[dict[str, Any]], None]
) -> None:
    """An edited report in the ledger breaks its hash chain: every release action refuses,
    naming the record, until the ledger is restored; the refusal is recorded."""
    with platform.ledger() as ledger:
        before = len(ledger.promotions(FAILING, limit=1000))
    with tampered_report(platform, FAILING, change):
        outcome = ops.release(
            platform.defs, platform.instance, FAILING, action="promote", reason="t", actor="mal"
        )
        assert cli.main(["status", "--verify"]) == 1
    assert not outcome.success
    assert "failed verification" in outcome.message
    assert "gate_reports record" in outcome.message
    assert platform.mlflow.aliases(FAILING) == {}
    assert _materializations(platform.instance, "released_weights", FAILING) == []
    with platform.ledger() as ledger:
        ledger.verify()  # restored: the chain holds again, the refusal appended to it
        promotions = ledger.promotions(FAILING, limit=1000)
    assert len(promotions) == before + 1
    latest = promotions[0]
    assert (latest.action, latest.actor, latest.to_version) == ("refused", "mal", None)
    assert "failed verification" in latest.details["refusal"]


def test_the_stored_weights_were_reloaded_and_re_measured(lineage: Lineage) -> None:
    [report] = [
        e.materialization.metadata
        for e in lineage.evaluations[HEALTHY].result.get_asset_materialization_events()
    ]
    gates = {r.data["gate"]: r.data for r in report["gates"].records}  # type: ignore[attr-defined]
    assert gates["reproducibility.stored_weights"]["status"] == "pass"


def test_runs_set_their_torch_threads_and_hand_them_back(
    platform: Platform, lineage: Lineage
) -> None:
    records = [
        record
        for seed in SEEDS
        for record in _materializations(
            platform.instance, "checkpoint", checkpoint_key(HEALTHY, seed)
        )
    ]
    assert len(records) >= len(SEEDS)
    for record in records:  # other tests may train more; every run used the default
        event = record.event_log_entry.asset_materialization
        assert event is not None
        assert event.metadata["torch_threads"].value == 1  # WORLDFLUX_TORCH_THREADS' default
    before, after = lineage.threads
    assert after == before  # the runs ran in this process and restored its threads


def test_checkpoint_run_is_tracked_in_mlflow(
    platform: Platform, lineage: Lineage, tmp_path: Path
) -> None:
    record = platform.store().get_json(f"{checkpoint_prefix(HEALTHY, 0)}/record.json")
    client = platform.mlflow.client()
    run = client.get_run(record["mlflow_run_id"])
    assert run.data.params["family"] == HEALTHY
    assert run.data.params["steps"] == str(HEALTHY_STEPS)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    stride = math.ceil(HEALTHY_STEPS / MAX_POINTS)  # a long curve is thinned to MAX_POINTS
    assert sorted(m.step for m in history) == list(range(1, HEALTHY_STEPS + 1, stride))
    assert run.inputs.dataset_inputs[0].dataset.digest == record["dataset_digest"][:36]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "seed_run.json", "rollout.png"} <= artifacts
    # Real versus imagined: tdmpc2's 3 observation dimensions over 10 imagined steps, a plot
    # 6 inches wide at 100 dpi (frames get a strip and a GIF instead: tests/quality/test_visuals).
    local = client.download_artifacts(run.info.run_id, "rollout.png", str(tmp_path))
    image = Image.open(local)
    assert (image.format, image.size[0]) == ("PNG", 600)


def test_the_ui_gets_tables_and_plots(platform: Platform, lineage: Lineage) -> None:
    [ckpt] = _materializations(platform.instance, "checkpoint", checkpoint_key(HEALTHY, 0))[:1]
    metadata = ckpt.asset_materialization.metadata  # type: ignore[union-attr]
    png = platform.store().get_bytes(f"{checkpoint_prefix(HEALTHY, 0)}/loss_curve.png")
    assert png.startswith(b"\x89PNG")
    assert metadata["loss_curve"].value.endswith("loss_curve.png")
    # The rollout picture inline (a data URI in Markdown), the same bytes as the stored one.
    stored = platform.store().get_bytes(f"{checkpoint_prefix(HEALTHY, 0)}/rollout.png")
    inline = metadata["rollout"].value.split("data:image/png;base64,")[1].rstrip(")")
    assert base64.b64decode(inline) == stored
    assert Image.open(io.BytesIO(stored)).format == "PNG"
    assert metadata["rollout_png_uri"].value.endswith("rollout.png")
    rows = {r.data["metric"]: r.data for r in metadata["held_out"].records}
    assert float(rows["world_model_loss"]["after"]) < float(rows["world_model_loss"]["before"])
    [report] = _materializations(platform.instance, "gate_report", HEALTHY)[:1]
    gates = report.asset_materialization.metadata["gates"].records  # type: ignore[union-attr]
    assert {r.data["status"] for r in gates} == {"pass", "not_applicable"}
    assert "Gate report: tdmpc2" in report.asset_materialization.metadata["report"].value  # type: ignore[union-attr]


def test_diverged_seed_is_a_failed_seed_not_a_crashed_run(platform: Platform) -> None:
    outcome = ops.train(platform.defs, platform.instance, "token", 0, steps=20, lr=1e12)
    assert outcome.success, outcome.message
    record = platform.store().get_json(f"{checkpoint_prefix('token', 0)}/record.json")
    assert record["status"] == "failed"
    assert record["failure"]["kind"] in ("diverged", "non_finite_eval")
    [event] = _materializations(platform.instance, "checkpoint", checkpoint_key("token", 0))
    metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["status"].value == "failed"
    assert metadata["failure"].value


def test_rollback_restores_the_previous_champion(platform: Platform, lineage: Lineage) -> None:
    defs, instance = platform.defs, platform.instance
    first = platform.mlflow.aliases(HEALTHY)["champion"]
    again = ops.release(defs, instance, HEALTHY, action="promote", reason="second", actor="alice")
    assert again.success, again.message
    second = platform.mlflow.aliases(HEALTHY)
    assert second["previous-champion"] == first
    assert second["champion"] != first
    back = ops.release(defs, instance, HEALTHY, action="rollback", reason="bad", actor="carol")
    assert back.success, back.message
    after = platform.mlflow.aliases(HEALTHY)
    assert after["champion"] == first
    assert after["previous-champion"] == second["champion"]
    with platform.ledger() as ledger:
        latest = ledger.latest_promotion(HEALTHY)
    assert latest is not None
    assert (latest.action, latest.actor, latest.reason) == ("rollback", "carol", "bad")
    assert (latest.from_version, latest.to_version) == (second["champion"], first)


def test_cli_status_promote_and_rollback(
    platform: Platform, lineage: Lineage, capsys: pytest.CaptureFixture[str]
) -> None:
    login = getpass.getuser()
    assert cli.main(["status", HEALTHY, FAILING]) == 0
    out = capsys.readouterr().out
    assert "BLOCKED" in out
    assert FAILING_GATE in out
    assert "PASS" in out

    assert cli.main(["promote", FAILING, "--reason", "please"]) == 1
    assert "refused" in capsys.readouterr().out
    assert platform.mlflow.aliases(FAILING) == {}

    # A promotion through the CLI, so a previous champion exists whatever ran before.
    assert cli.main(["promote", HEALTHY, "--reason", "cli promote"]) == 0
    assert "promote done" in capsys.readouterr().out
    before = platform.mlflow.aliases(HEALTHY)
    assert cli.main(["rollback", HEALTHY, "--reason", "cli rollback", "--actor", login]) == 0
    after = platform.mlflow.aliases(HEALTHY)
    assert after["champion"] == before["previous-champion"]
    with platform.ledger() as ledger:
        latest = ledger.latest_promotion(HEALTHY)
    assert latest is not None
    assert (latest.action, latest.actor, latest.reason) == ("rollback", login, "cli rollback")
    # Through Dagster: the run that did it is in the instance.
    assert platform.instance.get_run_by_id(latest.dagster_run_id) is not None


def test_cli_refuses_and_records_another_actor_and_escapes_it(
    platform: Platform, lineage: Lineage, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's ``rollback diffusion --reason x --actor "[/oops]"``: refused (the CLI acts
    as the login user), recorded, and every later status prints the text, not markup."""
    assert cli.main(["rollback", FAILING, "--reason", "[b]x", "--actor", "[/oops]"]) == 1
    out = capsys.readouterr().out
    assert "refused" in out
    assert "[/oops]" in out
    with platform.ledger() as ledger:
        [latest] = ledger.promotions(FAILING, limit=1)
    assert (latest.action, latest.actor) == ("refused", getpass.getuser())
    assert "'[/oops]' is not who runs this command" in latest.details["refusal"]
    assert cli.main(["status", FAILING]) == 0
    assert "[/oops]" in capsys.readouterr().out


def test_someone_not_on_the_release_managers_list_is_refused_and_recorded(
    platform: Platform, lineage: Lineage, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = platform.mlflow.aliases(HEALTHY)["champion"]
    with mock.patch.dict(os.environ, {"WORLDFLUX_RELEASE_MANAGERS": "someone-else"}):
        assert cli.main(["promote", HEALTHY, "--reason", "x"]) == 1
    assert "is not a release manager" in capsys.readouterr().out
    with platform.ledger() as ledger:
        [latest] = ledger.promotions(HEALTHY, limit=1)
    assert (latest.action, latest.actor) == ("refused", getpass.getuser())
    assert "the release managers are: someone-else" in latest.details["refusal"]
    assert platform.mlflow.aliases(HEALTHY)["champion"] == champion


def test_a_data_set_whose_expectations_failed_blocks_promotion(
    platform: Platform, lineage: Lineage
) -> None:
    """The issue's edit: ``"success": false`` under ``expectations`` in the manifest of the
    data set's latest good version in the object store, then ``promote``."""
    store = platform.store()
    good = store.get_json("datasets/pendulum/latest.json")["digest"]
    key = f"datasets/pendulum/versions/{good}/manifest.json"
    manifest = store.get_json(key)
    store.put_json(key, {**manifest, "expectations": {"success": False, "failures": ["x"]}})
    try:
        outcome = ops.release(
            platform.defs, platform.instance, HEALTHY, action="promote", reason="t", actor="alice"
        )
    finally:
        store.put_json(key, manifest)
    assert not outcome.success
    assert "failed its latest expectation suite" in outcome.message
    with platform.ledger() as ledger:
        [latest] = ledger.promotions(HEALTHY, limit=1)
    assert latest.action == "refused"
    assert latest.report_id is not None


def test_alias_drift_is_shown_refused_and_reconciled(
    platform: Platform, lineage: Lineage, capsys: pytest.CaptureFixture[str]
) -> None:
    aliases = platform.mlflow.aliases(HEALTHY)
    if "previous-champion" not in aliases:
        assert cli.main(["promote", HEALTHY, "--reason", "a second version"]) == 0
        aliases = platform.mlflow.aliases(HEALTHY)
    platform.mlflow.set_alias(HEALTHY, "champion", aliases["previous-champion"])  # by hand
    capsys.readouterr()
    assert cli.main(["status", HEALTHY]) == 0
    out = capsys.readouterr().out
    assert "drift tdmpc2: MLflow alias champion of worldflux-tdmpc2 is v" in out
    assert "reconcile tdmpc2" in out
    assert cli.main(["rollback", HEALTHY, "--reason", "x"]) == 1
    assert "reconcile tdmpc2" in capsys.readouterr().out
    assert cli.main(["reconcile", HEALTHY, "--reason", "alias moved by hand"]) == 0
    assert platform.mlflow.aliases(HEALTHY) == aliases


def test_an_unreachable_registry_is_reported_as_a_fault(
    platform: Platform, lineage: Lineage, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's rollback with the MLflow server down: a fault, recorded as one."""
    down = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    with mock.patch.dict(os.environ, down):
        assert cli.main(["rollback", HEALTHY, "--reason", "mlflow down"]) == 1
        out = capsys.readouterr().out
        assert cli.main(["status", HEALTHY]) == 1  # status says so too, without a traceback
    assert "not done" in out
    assert "the MLflow registry failed" in out
    status = capsys.readouterr().out
    assert "MlflowError" in status
    assert "is running and reachable" in status
    assert "Traceback" not in status
    with platform.ledger() as ledger:
        [latest] = ledger.promotions(HEALTHY, limit=1)
    assert (latest.action, latest.details["service"]) == ("failed", "the MLflow registry")
    assert "no previous champion" not in json.dumps(latest.details)


def test_two_cli_promotions_at_once_do_not_fork_the_audit_trail(
    platform: Platform, lineage: Lineage
) -> None:
    """The issue's two ``promote tdmpc2`` started at the same moment, as real processes."""
    command = [sys.executable, "-m", "orchestration", "promote", HEALTHY, "--reason", "race"]
    both = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    with platform.ledger() as ledger:
        ledger.verify()
        commits = [p for p in ledger.promotions(HEALTHY, limit=100) if p.reason == "race"]
    promoted = [p for p in commits if p.action == "promote"]
    assert len(promoted) == 2
    newer, older = promoted
    assert newer.from_version == older.to_version  # the second starts where the first ended
    assert platform.mlflow.aliases(HEALTHY) == {
        "champion": newer.to_version,
        "previous-champion": older.to_version,
    }


def test_promotion_needs_a_reason_and_a_named_actor(platform: Platform, lineage: Lineage) -> None:
    defs, instance = platform.defs, platform.instance
    outcome = ops.release(defs, instance, HEALTHY, action="promote", reason="", actor="alice")
    assert not outcome.success
    assert "needs a reason" in outcome.message
    # A run launched without an actor (e.g. from the Dagster UI with the default config).
    outcome = ops.release(defs, instance, HEALTHY, action="promote", reason="ui")
    assert not outcome.success
    assert "no actor named" in outcome.message
    with platform.ledger() as ledger:
        [latest] = ledger.promotions(HEALTHY, limit=1)
    assert (latest.action, latest.reason) == ("refused", "ui")
    assert latest.report_id == ledger.latest_report(HEALTHY).report_id  # type: ignore[union-attr]


def test_rollback_without_a_previous_champion_is_refused_and_recorded(
    platform: Platform, lineage: Lineage
) -> None:
    outcome = ops.release(
        platform.defs, platform.instance, FAILING, action="rollback", reason="x", actor="fay"
    )
    assert not outcome.success
    assert "no previous champion" in outcome.message
    with platform.ledger() as ledger:
        [latest] = ledger.promotions(FAILING, limit=1)
    assert (latest.action, latest.actor) == ("refused", "fay")
    assert latest.details["requested"] == "rollback"


def test_release_refuses_a_report_older_than_the_checkpoints(
    platform: Platform, lineage: Lineage
) -> None:
    defs, instance = platform.defs, platform.instance
    champion = platform.mlflow.aliases(HEALTHY)["champion"]
    assert ops.train(defs, instance, HEALTHY, 1, steps=10).success  # any newer checkpoint
    stale = ops.release(defs, instance, HEALTHY, action="promote", reason="stale", actor="alice")
    assert not stale.success
    assert "older than the checkpoints of seeds [1]" in stale.message
    assert platform.mlflow.aliases(HEALTHY)["champion"] == champion


def test_the_champion_loads_from_the_registry_bit_identically(
    platform: Platform, lineage: Lineage, tmp_path: Path
) -> None:
    """``worldflux.from_pretrained("models:/worldflux-tdmpc2@champion")``: every file verified
    against the release manifest, and the weights equal to the release copy the ledger records
    (itself verified against the gated checkpoint's manifest when it was promoted)."""
    import torch

    import worldflux
    from release.lineage import download_weights

    uri = "models:/worldflux-tdmpc2@champion"
    served = worldflux.from_pretrained(uri, tracking_uri=platform.settings.mlflow_tracking_uri)
    champion = platform.mlflow.aliases(HEALTHY)["champion"]
    with platform.ledger() as ledger:
        released = next(
            p
            for p in ledger.promotions(HEALTHY, limit=1000)
            if p.action == "promote" and p.to_version == champion
        )
    copy = {
        "uri": released.details["weights_uri"],
        "key": released.details["weights_key"],
        "files": released.details["files"],
        "sha256": released.details["checkpoint_sha256"],
    }
    gated = worldflux.from_pretrained(download_weights(platform.store(), copy, tmp_path / "rel"))
    assert served.state_dict().keys() == gated.state_dict().keys()
    for key, value in gated.state_dict().items():
        assert torch.equal(served.state_dict()[key], value), key
    assert cli.main(["pull", HEALTHY, "--to", str(tmp_path / "pulled")]) == 0
    assert (tmp_path / "pulled" / "model.safetensors").is_file()


def test_a_rollback_while_clients_send_requests_drops_none(
    platform: Platform, lineage: Lineage, tmp_path: Path
) -> None:
    """A served champion, a real rollback through the release path, four clients sending
    rollouts all the while: the served version switches and no request fails."""
    import threading

    import requests

    from tests.integration.serving import serving

    defs, instance = platform.defs, platform.instance
    if "previous-champion" not in platform.mlflow.aliases(HEALTHY):  # order-independent
        ops.evaluate(defs, instance, HEALTHY)  # a fresh report, whatever retrained since
        again = ops.release(defs, instance, HEALTHY, action="promote", reason="two", actor="alice")
        assert again.success, again.message
    before = platform.mlflow.aliases(HEALTHY)
    body = {"family": HEALTHY, "observations": [[1.0, 0.0, 0.0]], "actions": [[[0.5]] * 5]}
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()
    with serving(tmp_path, [HEALTHY]) as server:

        def client() -> None:
            while not stop.is_set():
                answer = requests.post(
                    server.url + "/api/v1/rollout", json=body, headers=server.headers(), timeout=60
                )
                if answer.status_code == 200:
                    seen.add(answer.json()["version"])
                else:
                    failures.append(f"{answer.status_code}: {answer.text[:300]}")

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            back = ops.release(
                defs, instance, HEALTHY, action="rollback", reason="r", actor="carol"
            )
            assert back.success, back.message
            deadline = time.monotonic() + 60
            target = before["previous-champion"]
            while time.monotonic() < deadline and target not in seen:
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    assert failures == []
    assert {before["champion"], before["previous-champion"]} <= seen
