"""The CLI's run queue: the lineage's runs on N warm worker processes, within the limits of the
Dagster instance's run queue (``concurrency.runs`` in dagster.yaml: the numbers the daemon's
QueuedRunCoordinator applies to scheduled runs, read from the instance, not repeated here).

Why not hand the runs to the daemon: it launches every run in a fresh process, which pays the
imports of torch, Dagster and MLflow (~3 s) before any work; a short demo run is shorter than
that. A worker pays them once, then executes runs one after another in process. Each run is
still a Dagster run on the same instance, tagged with its kind, so the UI shows what ran where.

Order: a task starts once the tasks it names in ``after`` have finished (whatever their
outcome: a release must run after a failing gate report, to be refused). A gate report also
needs the sensor's agreement (``gate_report_requests``): every seed and the re-runs of its
family landed after its last report, exactly what starts one under the daemon.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.jobs import KIND_TAG

# The operations.py function of each task kind, and the job it runs (whose tags give its kind).
OPERATIONS = {
    "materialize_dataset": "dataset_job",
    "train": "checkpoint_job",
    "repeat": "repeatability_job",
    "evaluate": "gate_report_job",
    "release": "release_job",
}
ANSWERING_JOBS = ("gate_report_job", "release_job")
_READY_TIMEOUT = 300.0  # seconds for a worker to import and open the instance


class RunQueueError(RuntimeError):
    """A worker could not start or died; the message names it and where to look."""


@dataclass(frozen=True)
class Task:
    label: str  # for people: "train tdmpc2 seed 0"
    operation: str  # a key of OPERATIONS
    kwargs: Mapping[str, Any]  # its arguments after (defs, instance)
    after: tuple[str, ...] = ()  # labels of tasks that must have finished first
    family: str | None = None  # for gate reports: the family the sensor must agree on


@dataclass(frozen=True)
class Done:
    label: str
    job: str
    success: bool
    run_id: str
    message: str
    seconds: float  # the run, as the worker timed it
    work_seconds: float  # what the run's assets timed as their own work
    worker: int  # the worker process's pid (0: never ran)
    ran: bool = True  # False: not run (the sensor did not agree)

    @property
    def answered(self) -> bool:
        """A gate report or a release that failed as a run gave an answer (blocked, refused);
        any other failure, or a failure outside a Dagster run, is a fault."""
        return self.success or (bool(self.run_id) and self.job in ANSWERING_JOBS)

    @property
    def fault(self) -> bool:
        """Ran and gave no answer: what stops the queue from starting new runs."""
        return self.ran and not self.answered


@dataclass(frozen=True)
class Limits:
    """The instance's run queue limits: runs at once, and at once per value of ``KIND_TAG``."""

    max_runs: int
    per_kind: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, instance: dg.DagsterInstance) -> Limits:
        config = instance.get_concurrency_config().run_queue_config
        assert config is not None, "the instance has no run queue configuration"
        per_kind = {
            str(entry["value"]): int(entry["limit"])
            for entry in config.tag_concurrency_limits
            if entry.get("key") == KIND_TAG and isinstance(entry.get("value"), str)
        }
        # Dagster: a negative max_concurrent_runs means no limit.
        return cls(config.max_concurrent_runs, per_kind)

    def allows(self, kind: str, running: Sequence[str]) -> bool:
        if 0 <= self.max_runs <= len(running):
            return False
        limit = self.per_kind.get(kind)
        return limit is None or running.count(kind) < limit


def _not_run(task: Task, why: str) -> Done:
    return Done(task.label, OPERATIONS[task.operation], False, "", why, 0.0, 0.0, 0, ran=False)


def kind_of(defs: dg.Definitions, operation: str) -> str:
    return str(defs.resolve_job_def(OPERATIONS[operation]).tags.get(KIND_TAG, ""))


def _worker(inbox: Any, outbox: Any) -> None:
    """A worker process: the platform as the environment describes it, imports paid once,
    then one run per task until told to stop (``None``)."""
    import warnings

    from orchestration import operations
    from orchestration.cli import prepare_environment
    from orchestration.definitions import build_definitions

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    settings = prepare_environment()
    defs = build_definitions(settings)
    # What a run would otherwise pay on first use, paid at start-up like the rest of the
    # worker's imports: MLflow's store (engine, schema check) and the loss curve's renderer
    # (matplotlib's first figure with text loads the fonts: ~0.7 s).
    open_tracking(defs, settings.home)
    _draw_a_loss_curve()

    pid = os.getpid()
    with dg.DagsterInstance.get() as instance:
        outbox.put(("ready", pid))
        for task in iter(inbox.get, None):
            t0 = time.perf_counter()
            try:
                outcome = getattr(operations, task.operation)(
                    defs, instance, **task.kwargs, quiet=True
                )
            except Exception as err:  # our code broke outside the run; the run records its own
                why = f"{type(err).__name__}: {err}"
                seconds = time.perf_counter() - t0
                done = Done(
                    task.label, OPERATIONS[task.operation], False, "", why, seconds, 0.0, pid
                )
            else:
                seconds = time.perf_counter() - t0
                job, work = outcome.job, outcome.work_seconds()
                done = Done(
                    task.label,
                    job,
                    outcome.success,
                    outcome.run_id,
                    outcome.message,
                    seconds,
                    work,
                    pid,
                )
            outbox.put(("done", done))


def open_tracking(defs: dg.Definitions, home: Path) -> None:
    """Open MLflow's store and the checkpoint experiment, one process at a time: processes that
    open a fresh SQLite store at once race to create its tables ("table experiments already
    exists")."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".tracking-init.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        defs.resources["mlflow"].open().experiment_id()  # type: ignore[index]


def _draw_a_loss_curve() -> None:
    from release.tracking import loss_curve_png
    from worldflux.training.callbacks import History

    history = History()
    history.steps, history.metrics = [1, 2], {"loss": [1.0, 0.5]}
    loss_curve_png(history, None)


class RunQueue:
    """N worker processes (spawned: a fresh interpreter each, nothing inherited from a parent
    that may hold torch threads or open connections). Each run sets its torch threads itself
    (the ``compute`` resource). Use as a context manager."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        context = mp.get_context("spawn")
        self._outbox: Any = context.Queue()
        self._inboxes: list[Any] = [context.Queue() for _ in range(workers)]
        self._processes = [
            context.Process(
                target=_worker, args=(inbox, self._outbox), name=f"worldflux-worker-{i}"
            )
            for i, inbox in enumerate(self._inboxes)
        ]
        for process in self._processes:
            process.start()
        self.pids: list[int] = []

    def __enter__(self) -> RunQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while len(self.pids) < len(self._processes):
            self._check_alive()
            try:
                kind, pid = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RunQueueError(
                        f"workers did not start within {_READY_TIMEOUT:.0f} s"
                    ) from None
                continue
            assert kind == "ready", f"unexpected message before start-up ended: {kind}"
            self.pids.append(pid)

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.exitcode is not None:
                raise RunQueueError(
                    f"worker {process.name} (pid {process.pid}) exited with code "
                    f"{process.exitcode}; its error is printed above"
                )

    def run(
        self,
        tasks: Sequence[Task],
        limits: Limits,
        kinds: Mapping[str, str],
        ready: Callable[[Task], str],
        on_start: Callable[[Task], None] = lambda task: None,
        on_done: Callable[[Done], bool] = lambda done: True,
    ) -> list[Done]:
        """Run ``tasks`` in order of readiness. ``kinds``: operation -> run kind (for the
        limits). ``ready(task)``: "" when it may start once its ``after`` tasks finished, else
        why not (it is then recorded as not run). ``on_done`` returning False stops starting
        new tasks; running ones finish. Returns what finished, in finishing order."""
        self.wait_ready()
        pending = list(tasks)
        labels = {t.label for t in tasks}
        unknown = [a for t in tasks for a in t.after if a not in labels]
        assert not unknown, f"tasks wait for tasks that are not in the plan: {unknown}"
        finished: dict[str, Done] = {}
        busy: dict[int, Task] = {}  # worker index -> its task
        stopping = False
        while (pending and not stopping) or busy:
            if not stopping:
                for index in [i for i in range(len(self._processes)) if i not in busy]:
                    task = self._next(pending, finished, busy, limits, kinds)
                    if task is None:
                        break
                    pending.remove(task)
                    why_not = ready(task)
                    if why_not:
                        done = _not_run(task, why_not)
                        finished[task.label] = done
                        stopping = not on_done(done)
                        continue
                    busy[index] = task
                    on_start(task)
                    self._inboxes[index].put(task)
            if not busy:
                if pending and not stopping:  # nothing runs and nothing may start: a cycle
                    raise RunQueueError(
                        f"no task can start: {[t.label for t in pending]} wait for each other"
                    )
                continue
            done = self._receive()
            index = next(i for i, t in busy.items() if t.label == done.label)
            del busy[index]
            finished[done.label] = done
            if not on_done(done):
                stopping = True
        return list(finished.values())

    @staticmethod
    def _next(
        pending: list[Task],
        finished: Mapping[str, Done],
        busy: Mapping[int, Task],
        limits: Limits,
        kinds: Mapping[str, str],
    ) -> Task | None:
        running = [kinds[t.operation] for t in busy.values()]
        for task in pending:
            if all(a in finished for a in task.after) and limits.allows(
                kinds[task.operation], running
            ):
                return task
        return None

    def _receive(self) -> Done:
        while True:
            try:
                kind, done = self._outbox.get(timeout=1.0)
            except queue.Empty:
                self._check_alive()
                continue
            assert kind == "done", f"unexpected message from a worker: {kind}"
            return done

    def close(self) -> None:
        for inbox, process in zip(self._inboxes, self._processes, strict=True):
            if process.is_alive():
                inbox.put(None)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
