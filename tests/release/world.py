"""A release world in a folder, without Dagster or training: a local object store, an SQLite
ledger and MLflow on SQLite, holding a published data set, three published tdmpc2 checkpoints
(small real files) and a gate report evaluated on them by the real gates (synthetic seed
evidence from tests/quality/records.py), recorded where ``gate_report`` records it. Release
tests act on it through ``release.promotion`` exactly as the asset does.

Run as a module (``python -m tests.release.world ROOT ACTION [KILL_AT]``) it performs one release
action on the world at ROOT in a fresh process, and kills itself with SIGKILL when the action
reaches step KILL_AT: the crash tests' subprocess.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from quality.evaluate import build_report, evaluate_gates
from quality.policy import load_policy
from release.datasets import prefix, version_prefix
from release.ledger_sqlite import SqliteLedger
from release.lineage import publish_checkpoint, read_checkpoint_records, utc_now
from release.mlflow import Mlflow
from release.object_store import LocalObjectStore
from release.promotion import Observer, Release, ReleaseRequest, Services, run_release
from release.reports import record_report
from tests.quality.records import digest, repeat_pair, seed_record
from tests.quality.records import digest as digest_of
from worldflux.training.checkpoint import weights_sha256

FAMILY = "tdmpc2"
DATASET = "pendulum"
SEEDS = [0, 1, 2]
MANAGERS = frozenset({"alice", "bob"})


@dataclass(frozen=True)
class World:
    root: Path

    def services(self) -> Services:
        return Services(
            LocalObjectStore(self.root / "objects"),
            SqliteLedger(self.root / "ledger.db"),
            self.mlflow(),
        )

    def mlflow(self) -> Mlflow:
        return Mlflow(
            tracking_uri=f"sqlite:///{self.root / 'mlflow.db'}",
            artifact_root=str(self.root / "mlflow-artifacts"),
        )

    def act(
        self,
        action: str,
        actor: str = "alice",
        reason: str = "test",
        observer: Observer | None = None,
        managers: frozenset[str] = MANAGERS,
    ) -> Release:
        request = ReleaseRequest(FAMILY, action, actor, reason, f"run-{action}")
        services = self.services()
        with services.ledger:
            return run_release(request, services, seeds=SEEDS, managers=managers, observer=observer)


def publish_dataset_version(
    world: World, digest: str = digest(DATASET), failures: tuple[str, ...] = ()
) -> None:
    """Record a checked version of the data set as ``dataset`` does: its manifest, the last
    check and, when it passed, the latest-good pointer. The default digest is the one
    seed_record says every run trained on."""
    store = world.services().store
    at = version_prefix(DATASET, digest)
    manifest = {
        "name": DATASET,
        "digest": digest,
        "uri": store.uri(f"{at}/data.safetensors"),
        "sha256": digest_of("bytes"),
        "rows": 1000,
        "episodes": 10,
        "expectations": {"success": not failures, "failures": list(failures)},
        "checked_at": utc_now(),
    }
    store.put_json(f"{at}/manifest.json", manifest)
    store.put_json(
        f"{prefix(DATASET)}/last_check.json",
        {"digest": digest, "success": not failures, "checked_at": manifest["checked_at"]},
    )
    if not failures:
        store.put_json(f"{prefix(DATASET)}/latest.json", {"digest": digest})


def train_and_evaluate(world: World, label: str = "v") -> str:
    """Publish three checkpoints (their bytes depend on ``label``) and record a passing gate
    report on them; returns its report id."""
    services = world.services()
    store, mlflow = services.store, services.mlflow
    for seed in SEEDS:
        folder = world.root / "trained" / label / f"seed_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(f"{label}-{seed} weights".encode())
        (folder / "config.json").write_text(f'{{"family": "{FAMILY}", "seed": {seed}}}')
        run_id = mlflow.start_run(f"{FAMILY}-seed{seed}", {"family": FAMILY})
        record = seed_record(
            seed, checkpoint={"path": str(folder), "sha256": weights_sha256(folder)}
        )
        publish_checkpoint(
            store, FAMILY, seed, record, {"mlflow_run_id": run_id, "dagster_run_id": "t"}
        )
    runs = read_checkpoint_records(store, FAMILY, SEEDS)
    policy = load_policy(FAMILY)
    repeats = repeat_pair()
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(3,))
    report = build_report(runs, policy, gates, repeats=repeats)
    assert report["gates"]["release_pass"], report["failed_gates"]
    with services.ledger as ledger:
        return record_report(report, store, ledger, mlflow, "t").report_id


def make_world(root: Path) -> World:
    world = World(root)
    publish_dataset_version(world)
    train_and_evaluate(world)
    return world


def _kill_at(step: str) -> Observer:
    def observe(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return observe


if __name__ == "__main__":
    root, action = Path(sys.argv[1]), sys.argv[2]
    observer = _kill_at(sys.argv[3]) if len(sys.argv) > 3 else None
    release = World(root).act(action, reason=f"subprocess {action}", observer=observer)
    print(f"{release.action} {release.previous} -> {release.version}")
