"""Data sets users bring, through the real CLI and Dagster runs: export -> add gives the same
content; a family whose policy names the new data set trains and is gated on it; a table with
a fault fails its own blocking check naming the rows, and the last good version stays the one
checkpoints train on."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quality.policy
from orchestration import cli
from orchestration import operations as ops
from release.datasets import last_check, read_dataset, read_manifest, versions
from release.lineage import checkpoint_prefix
from tests.integration.seaweedfs import SeaweedServer
from tests.orchestration.conftest import Platform
from worldflux.data import load_bundled

NAME = "mypendulum"
FAMILY = "tdmpc2"


@pytest.fixture(scope="module")
def registered(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pendulum exported and added back as ``mypendulum``; returns the exported file."""
    path = tmp_path_factory.mktemp("tables") / "pendulum.parquet"
    assert cli.main(["dataset", "export", "pendulum", str(path)]) == 0
    assert cli.main(["dataset", "add", NAME, str(path)]) == 0
    return path


@pytest.fixture
def policy_on_mypendulum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tdmpc2's gate policy names mypendulum (and trains briefly: this tests the wiring)."""
    policies = tmp_path / "policies"
    shutil.copytree(quality.policy.POLICY_DIR, policies)
    path = policies / f"{FAMILY}.json"
    policy = json.loads(path.read_text())
    policy.setdefault("training", {}).update({"dataset": NAME, "steps": 30, "repeat_steps": 10})
    path.write_text(json.dumps(policy))
    monkeypatch.setattr(quality.policy, "POLICY_DIR", policies)


def test_export_then_add_keeps_the_content(platform: Platform, registered: Path) -> None:
    data, manifest = read_dataset(platform.store(), NAME)
    assert data.digest == load_bundled("pendulum").digest == manifest["digest"]
    assert manifest["expectations"]["success"] is True
    assert NAME in platform.instance.get_dynamic_partitions("datasets")


@pytest.mark.usefixtures("policy_on_mypendulum")
def test_a_family_whose_policy_names_it_trains_and_is_gated_on_it(
    platform: Platform, registered: Path
) -> None:
    defs, instance = platform.defs, platform.instance
    good = read_manifest(platform.store(), NAME)["digest"]
    for seed in (0, 1, 2):
        assert ops.train(defs, instance, FAMILY, seed).success
    assert ops.repeat(defs, instance, FAMILY).success
    ops.evaluate(defs, instance, FAMILY)  # the gates may pass or fail after 30 steps
    with platform.ledger() as ledger:
        report = ledger.latest_report(FAMILY)
    assert report is not None
    assert report.report["datasets"] == [{"name": NAME, "digest": good}]


# ------------------------------------------------------------------------ injected faults
def _column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _nan_observation(table: pa.Table) -> tuple[pa.Table, int]:
    row = 40
    obs = table.column("observation").combine_chunks()
    size = obs.type.list_size
    flat = obs.flatten().to_numpy(zero_copy_only=False).copy()
    flat[row * size] = np.nan
    return _column(table, "observation", pa.FixedSizeListArray.from_arrays(flat, size)), row


def _action_out_of_bounds(table: pa.Table) -> tuple[pa.Table, int]:
    row = 41  # step > 0: pendulum's torque lies in [-2, 2]
    action = table.column("action").combine_chunks()
    size = action.type.list_size
    flat = action.flatten().to_numpy(zero_copy_only=False).copy()
    flat[row * size] = 7.5
    return _column(table, "action", pa.FixedSizeListArray.from_arrays(flat, size)), row


def _duplicated_step(table: pa.Table) -> tuple[pa.Table, int]:
    row = 42
    steps = table.column("step").to_numpy().copy()
    steps[row] = steps[row - 1]
    return _column(table, "step", pa.array(steps, pa.int64())), row


def _two_ends(table: pa.Table) -> tuple[pa.Table, int]:
    row = 43
    ended = table.column("truncated").to_numpy(zero_copy_only=False).copy()
    ended[row] = True
    return _column(table, "truncated", pa.array(ended, pa.bool_())), row


def _missing_column(table: pa.Table) -> tuple[pa.Table, int]:
    return table.drop_columns(["reward"]), -1


def _wrong_dtype(table: pa.Table) -> tuple[pa.Table, int]:
    steps = table.column("step").to_numpy().astype(np.float64) + 0.5
    return _column(table, "step", pa.array(steps, pa.float64())), -1


FAULTS: list[tuple[Callable[[pa.Table], tuple[pa.Table, int]], str, str]] = [
    (_nan_observation, "expect_finite_values", "observation"),
    (_action_out_of_bounds, "expect_action_bounds", "action"),
    (_duplicated_step, "expect_unique_episode_step", "step"),
    (_two_ends, "expect_one_end_per_episode", "truncated"),
    (_missing_column, "expect_schema", "reward"),
    (_wrong_dtype, "expect_schema", "step"),
]


@pytest.mark.parametrize(
    ("fault", "check", "named"), FAULTS, ids=[f.__name__.strip("_") for f, _, _ in FAULTS]
)
def test_a_fault_fails_its_own_check_and_the_good_version_stays(
    platform: Platform,
    registered: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fault: Callable[[pa.Table], tuple[pa.Table, int]],
    check: str,
    named: str,
) -> None:
    store = platform.store()
    good = read_manifest(store, NAME)["digest"]
    table = pq.read_table(registered)
    broken, row = fault(table)
    path = tmp_path / "broken.parquet"
    pq.write_table(broken.replace_schema_metadata(table.schema.metadata), path)
    capsys.readouterr()
    assert cli.main(["dataset", "add", NAME, str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert check in out
    # The check failed in the Dagster instance, naming the column and (for row faults) the row.
    history = platform.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("dataset"), check), limit=1
    )
    evaluation = history[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
    assert evaluation.passed is False
    assert named in (evaluation.description or "")
    if row >= 0:
        assert f"row {row}" in (evaluation.description or "")
    # The failing version is kept under its digest; the good one is still what training reads.
    failed = last_check(store, NAME)
    assert failed is not None
    assert failed["success"] is False
    assert failed["digest"] != good
    assert failed["digest"] in {v["digest"] for v in versions(store, NAME)}
    assert read_manifest(store, NAME)["digest"] == good
    assert read_dataset(store, NAME)[0].digest == good


@pytest.mark.usefixtures("policy_on_mypendulum")
def test_checkpoints_train_on_the_last_good_version_after_a_bad_one(
    platform: Platform, registered: Path, tmp_path: Path
) -> None:
    store = platform.store()
    good = read_manifest(store, NAME)["digest"]
    broken, _ = _two_ends(pq.read_table(registered))
    path = tmp_path / "broken.parquet"
    pq.write_table(broken, path)
    assert cli.main(["dataset", "add", NAME, str(path)]) == 1
    assert ops.train(platform.defs, platform.instance, FAMILY, 0, steps=5).success
    record = store.get_json(f"{checkpoint_prefix(FAMILY, 0)}/record.json")
    assert record["dataset_digest"] == good


def test_a_file_that_is_not_a_table_is_refused_before_registering(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.parquet"
    path.write_text("not parquet")
    assert cli.main(["dataset", "add", "notatable", str(path)]) == 2
    out = capsys.readouterr().out
    assert "dataset add failed" in out
    assert "notatable" not in platform.instance.get_dynamic_partitions("datasets")


def test_removing_keeps_the_history(
    platform: Platform, registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dataset", "add", "tmpcopy", str(registered)]) == 0
    assert cli.main(["dataset", "remove", "tmpcopy", "--reason", "done with it"]) == 0
    assert "tmpcopy" not in platform.instance.get_dynamic_partitions("datasets")
    store = platform.store()
    assert read_manifest(store, "tmpcopy")["expectations"]["success"] is True  # kept
    capsys.readouterr()
    assert cli.main(["dataset", "list"]) == 0
    assert "tmpcopy" not in capsys.readouterr().out


def test_a_table_in_s3_is_added_by_its_uri(
    platform: Platform,
    registered: Path,
    seaweedfs: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dataset add NAME s3://bucket/key`` against a real S3 server (SeaweedFS)."""
    import boto3  # type: ignore[import-untyped]

    bucket = f"t-{uuid.uuid4().hex[:20]}"
    for variable, value in {
        "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(variable, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    client.upload_file(str(registered), bucket, "tables/pendulum.parquet")
    assert cli.main(["dataset", "add", "froms3", f"s3://{bucket}/tables/pendulum.parquet"]) == 0
    data, _ = read_dataset(platform.store(), "froms3")
    assert data.digest == load_bundled("pendulum").digest
    assert cli.main(["dataset", "add", "missing", f"s3://{bucket}/tables/nothing.parquet"]) == 2
