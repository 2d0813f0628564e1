"""The code location as a whole: loads from workspace.yaml, and its asset graph matches the
reviewed snapshot (keys, partitions, dependencies, checks with their blocking flag, jobs,
schedules, sensors). Regenerate after an intended change with
``UPDATE_SNAPSHOTS=1 python -m pytest tests/orchestration/test_code_location.py``."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg

import worldflux
from assets.partitions import BUNDLED_DATASETS, FAMILIES, SEEDS
from assets.resources import LocalObjectStoreResource
from orchestration.definitions import defs
from orchestration.jobs import KIND_TAG
from release.datasets import read_registration
from worldflux.core.registry import get_family

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("snapshots") / "code_location.json"


def _partitions(spec: Any) -> Any:
    pdef = spec.partitions_def
    if pdef is None:
        return None
    if isinstance(pdef, dg.DynamicPartitionsDefinition):
        return {"dynamic": pdef.name}
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return {d.name: d.partitions_def.get_partition_keys() for d in pdef.partitions_defs}
    return pdef.get_partition_keys()


def _check_specs() -> list[dg.AssetCheckSpec]:
    graph = defs.resolve_asset_graph()
    return [graph.get_check_spec(k) for k in graph.asset_check_keys]


def snapshot() -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        spec = next(s for s in defs.resolve_all_asset_specs() if s.key == key)
        assets[key.to_user_string()] = {
            "group": spec.group_name,
            "partitions": _partitions(spec),
            "deps": {
                d.asset_key.to_user_string(): type(d.partition_mapping).__name__
                if d.partition_mapping is not None
                else None
                for d in spec.deps
            },
            "checks": {
                c.name: {"blocking": c.blocking}
                for c in sorted(_check_specs(), key=lambda c: c.name)
                if c.asset_key == key
            },
            "kinds": sorted(node.kinds) if hasattr(node, "kinds") else [],
        }
    jobs = {
        job.name: {
            "assets": sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys),
            "kind": job.tags.get(KIND_TAG),  # the run queue's limits apply per kind
        }
        for job in defs.resolve_all_job_defs()
        if not job.name.startswith("__")
    }
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "job": s.job_name,
            "default_status": s.default_status.value,
        }
        for s in defs.schedules or []
    }
    sensors = {
        s.name: {"jobs": sorted(j.name for j in s.jobs), "default_status": s.default_status.value}
        for s in defs.sensors or []
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_asset_graph_matches_the_snapshot() -> None:
    current = snapshot()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_partitions_come_from_the_library() -> None:
    # Other test modules register toy families once collected: compare with the library's own.
    library = [
        m["family"]
        for m in worldflux.list_models()
        if get_family(m["family"]).model_cls.__module__.startswith("worldflux.models.")
    ]
    assert library == FAMILIES
    assert [d["name"] for d in worldflux.data.list_bundled()] == BUNDLED_DATASETS
    assert SEEDS == [0, 1, 2]


def test_gate_checks_block_and_every_gate_has_one() -> None:
    from quality.evaluate import gate_names

    checks = {c.name: c for c in _check_specs()}
    for family in FAMILIES:
        for gate in gate_names(family):
            assert checks[gate.replace(".", "__")].blocking


def test_nightly_schedule_requests_every_family_and_seed_with_stable_run_keys() -> None:
    schedule = next(s for s in defs.schedules or [] if s.name == "nightly_gates")
    when = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    repo = defs.get_repository_def()

    def tick() -> Any:
        context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=repo)
        return schedule.evaluate_tick(context)

    first, again = tick(), tick()
    keys = [r.run_key for r in first.run_requests or []]
    assert len(keys) == len(set(keys)) == len(FAMILIES) * len(SEEDS)
    assert keys == [r.run_key for r in again.run_requests or []]
    assert all("2026-11-23" in k for k in keys)
    assert not any("released_weights" in str(r.asset_selection) for r in first.run_requests or [])


def test_nightly_datasets_registers_the_bundled_ones_and_requests_every_registered(
    tmp_path: Path,
) -> None:
    schedule = next(s for s in defs.schedules or [] if s.name == "nightly_datasets")
    when = dt.datetime(2026, 11, 23, 1, 45, tzinfo=dt.UTC)
    store = LocalObjectStoreResource(root=str(tmp_path / "objects"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("datasets", ["theirs"])  # registered by dataset add
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            repository_def=defs.get_repository_def(),
            resources={"object_store": store},
        )
        requests = schedule.evaluate_tick(context).run_requests or []
        registered = instance.get_dynamic_partitions("datasets")
    assert sorted(r.partition_key for r in requests) == sorted([*BUNDLED_DATASETS, "theirs"])
    assert sorted(registered) == sorted([*BUNDLED_DATASETS, "theirs"])
    for name in BUNDLED_DATASETS:  # pre-registered as the bundled source
        assert read_registration(store.open(), name).source == f"bundled:{name}"


def test_dagster_validates_the_workspace() -> None:
    env = {**os.environ, "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
