"""``python -m orchestration``: the platform for people.

    demo [--workers N]         the whole lineage on the embedded defaults, then a status table
    sweep [--families F..] [--steps S] [--workers N]
                               the nightly's training and gate reports now (nothing released)
    ui                         the Dagster UI and the MLflow UI on 127.0.0.1 (Ctrl-C stops both)
    status [--verify]          per family: latest gate result and why, champion, last release
                               action, drift; --verify checks the ledger's hash chain
    promote FAMILY --reason R  promote through Dagster (refused when the gates say no)
    rollback FAMILY --reason R champion <- previous-champion, through Dagster
    reconcile FAMILY --reason R  put MLflow aliases and champion.json back as the ledger says
    serve [--host H] [--port P] [--families F..]   the champions over HTTP (docs/serving.md)
    pull FAMILY [--alias A] --to DIR   a released model's files, every sha256 verified
    dataset list | export NAME FILE | add NAME FILE [--spec S] | remove NAME --reason R
                               registered data sets: Parquet tables in, checked, versioned

Release actions run as the login user, who must be a release manager (WORLDFLUX_RELEASE_MANAGERS).

Every command reads the environment through ``orchestration.settings`` (see README).
"""

import argparse
import getpass
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
TOKEN_VARIABLE = "WORLDFLUX_API_TOKEN"
DEMO_FAMILIES = ("tdmpc2", "diffusion")
# Training steps per demo family; None: the family policy's training.steps. tdmpc2 passes every
# gate at 1,000 steps and is released (its nightly policy trains 3,000 to predict Pendulum as
# precisely as issue 10 asks, which the demo does not need). diffusion is trained briefly on
# purpose: it has no held-out skill yet and is honestly blocked, so the demo shows a refusal too.
DEMO_STEPS: dict[str, int | None] = {"tdmpc2": 1000, "diffusion": 100}

# Logs and pipes get wide lines: a table folded at 80 columns splits gate names mid-word.
console = Console(width=None if sys.stdout.isatty() else 160)


def prepare_environment() -> Any:
    """Settings from the environment, with DAGSTER_HOME created and given the project's
    dagster.yaml when it has none (with PostgreSQL storage when DAGSTER_PG_URL is set)."""
    from orchestration.settings import Settings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "creating tables" notices
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # serve, pull
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.write_instance_yaml()
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return settings


def _platform() -> tuple[Any, Any, Any]:
    import dagster as dg

    from orchestration.datasets import ensure_bundled, object_store
    from orchestration.definitions import build_definitions

    settings = prepare_environment()
    defs, instance = build_definitions(settings), dg.DagsterInstance.get()
    ensure_bundled(object_store(defs), instance)
    return settings, defs, instance


# ------------------------------------------------------------------------------------ status
def _gate_summary(report_id: str, report: dict[str, Any]) -> str:
    """PASS / BLOCKED recomputed from the stored report's gate results (never the stored
    flag), or INVALID when the report contradicts itself."""
    from quality.evaluate import verdict
    from quality.report import ReportError, validate_report

    try:
        validate_report(report)
    except ReportError as err:
        return f"[red]INVALID[/red] {escape(report_id)}\n{escape(str(err))}"
    decided = verdict(report["gates"]["results"])
    if decided.release_pass:
        return f"[green]PASS[/green] {escape(report_id)}"
    why = [
        f"{g['name']}: {g['reason']}"
        for g in report["gates"]["results"]
        if g["name"] in decided.failed_gates
    ]
    return f"[red]BLOCKED[/red] {escape(report_id)}\n" + escape("\n".join(why))


def status_table(defs: Any, families: Sequence[str]) -> tuple[Table, dict[str, list[str]]]:
    """The status table, and per family where its release state disagrees with the ledger."""
    from release.promotion import Services, drift

    drifted: dict[str, list[str]] = {}
    table = Table(title="Release status", show_lines=True)
    for column in ("family", "latest gate report", "champion", "last release action", "drift"):
        table.add_column(column, overflow="fold")
    mlflow = defs.resources["mlflow"].open()
    store = defs.resources["object_store"].open()
    with defs.resources["ledger"].open() as ledger:
        services = Services(store, ledger, mlflow)
        for family in families:
            report = ledger.latest_report(family)
            if report is None:
                gates = "[dim]none yet[/dim]"
            else:
                gates = _gate_summary(report.report_id, report.report)
            aliases = mlflow.aliases(family)
            champion = aliases.get("champion")
            previous = aliases.get("previous-champion")
            champ = f"v{escape(champion)}" if champion else "[dim]none[/dim]"
            if previous:
                champ += f" (previous v{escape(previous)})"
            shown = [p for p in ledger.promotions(family, limit=20) if p.action != "step"]
            promo = "[dim]none[/dim]"
            if shown:
                p = shown[0]
                when = p.created_at.isoformat(timespec="seconds")
                move = f"v{p.from_version or '-'} -> v{p.to_version or '-'}"
                promo = escape(f"{p.action} {move} by {p.actor} at {when}: {p.reason}")
                if p.action in ("refused", "failed"):
                    why = p.details.get("refusal") or p.details.get("fault") or ""
                    promo = f"[red]{p.action}[/red] " + escape(
                        f"{p.details.get('requested', '')} by {p.actor} at {when}: {why}"
                    )
            problems = drift(services, family)
            drifted[family] = problems
            shown_drift = (
                f"[red]{len(problems)} (below)[/red]" if problems else "[green]none[/green]"
            )
            table.add_row(family, gates, champ, promo, shown_drift)
    return table, drifted


def verify_ledger(defs: Any) -> bool:
    """Check the ledger's hash chain; print what was checked or the first bad record."""
    from release.ledger import LedgerTampered

    with defs.resources["ledger"].open() as ledger:
        try:
            chain = ledger.verify()
        except LedgerTampered as err:
            console.print(f"[red]ledger verification FAILED[/red]: {escape(str(err))}")
            return False
    console.print(f"[green]ledger verified[/green]: {escape(chain.describe())}")
    return True


def _unknown_families(names: Sequence[str]) -> bool:
    """Print a clear error (no traceback) naming unknown families and the known ones."""
    from assets.partitions import FAMILIES

    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        console.print(
            f"[red]unknown family[/red] {escape(', '.join(map(repr, unknown)))}; the families "
            f"are: {', '.join(FAMILIES)}"
        )
    return bool(unknown)


def cmd_status(args: argparse.Namespace) -> int:
    if _unknown_families(args.families):
        return 2
    settings, defs, _ = _platform()
    from assets.partitions import FAMILIES

    if args.verify and not verify_ledger(defs):
        return 1
    families = args.families or FAMILIES
    with defs.resources["ledger"].open() as ledger:
        known = {f for f in families if ledger.latest_report(f) or ledger.promotions(f, limit=1)}
    shown = [f for f in families if f in known or args.families]
    if not shown:
        console.print(f"No gate reports under {settings.home}: run `python -m orchestration demo`.")
        return 0
    print_status(defs, shown)
    return 0


def print_status(defs: Any, families: Sequence[str]) -> None:
    table, drifted = status_table(defs, families)
    console.print(table)
    for family, problems in drifted.items():
        for problem in problems:
            console.print(f"[red]drift[/red] {family}: {escape(problem)}")
        if problems:
            console.print(
                f"  -> python -m orchestration reconcile {family} --reason ... puts the "
                "aliases and champion.json back as the ledger records them"
            )


# ------------------------------------------------------------------- promote/rollback/...
def cmd_release(args: argparse.Namespace) -> int:
    from orchestration import operations as ops
    from release.promotion import ReleaseRequest, record_refusal

    if _unknown_families([args.family]):
        return 2
    _, defs, instance = _platform()
    login = getpass.getuser()
    if args.actor and args.actor != login:
        refusal = (
            f"--actor {args.actor!r} is not who runs this command ({login!r}): the CLI acts as "
            "the login user; ask that person to run it"
        )
        request = ReleaseRequest(args.family, args.command, login, args.reason, "cli")
        with defs.resources["ledger"].open() as ledger:
            record_refusal(request, ledger, refusal)
        console.print(f"[red]{args.command} refused[/red]: {escape(refusal)}")
        return 1
    with console.status(f"{args.command} {args.family} (Dagster run)..."):
        outcome = ops.release(
            defs,
            instance,
            args.family,
            action=args.command,
            reason=args.reason,
            actor=login,
            quiet=True,
        )
    if not outcome.success:  # the message can quote the actor and the reason: user text
        console.print(
            f"[red]{args.command} not done[/red] (Dagster run {outcome.run_id}): "
            f"{escape(outcome.message)}"
        )
        return 1
    aliases = defs.resources["mlflow"].open().aliases(args.family)
    console.print(
        f"[green]{args.command} done[/green] by {escape(login)}: {args.family} champion is now "
        f"v{aliases.get('champion', '-')} (previous-champion "
        f"v{aliases.get('previous-champion', '-')}); Dagster run {outcome.run_id}"
    )
    return 0


# ------------------------------------------------------------------------------ serve, pull
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from assets.partitions import FAMILIES
    from orchestration.api import create_app
    from release.serving import Champions

    if _unknown_families(args.families or []):
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_VARIABLE):
        console.print(
            f"[red]refusing to listen on {escape(args.host)} without {TOKEN_VARIABLE}[/red]: set "
            "a bearer token, or serve on 127.0.0.1"
        )
        return 2
    import torch

    # Requests are small: concurrency comes from serving several at once, one thread each.
    torch.set_num_threads(1)
    _, defs, _ = _platform()
    champions = Champions(
        args.families or FAMILIES,
        defs.resources["mlflow"].open(),
        defs.resources["object_store"].open(),
    )
    console.print(f"loading champions: {', '.join(champions.refresh()) or 'none yet'}")
    for family, error in champions.errors.items():
        console.print(f"[yellow]{family}[/yellow]: {escape(error)}")
    champions.start(args.poll)
    app = create_app(champions, token=os.environ.get(TOKEN_VARIABLE) or None, workers=args.workers)
    console.print(
        f"serving on http://{args.host}:{args.port} (API docs at /docs; the champion aliases "
        f"are polled every {args.poll:g} s)"
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        champions.stop()
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from release.mlflow import model_name
    from worldflux.hub import RegistryError, download_release

    if _unknown_families([args.family]):
        return 2
    settings = prepare_environment()
    uri = f"models:/{model_name(args.family)}@{args.alias}"
    target = Path(args.to)
    if target.exists() and any(target.iterdir()):
        console.print(f"[red]{escape(str(target))} is not empty[/red]: pull into a new folder")
        return 2
    try:
        folder = download_release(
            uri, target, tracking_uri=settings.mlflow_registry_uri or settings.mlflow_tracking_uri
        )
    except RegistryError as err:
        console.print(f"[red]pull failed[/red]: {escape(str(err))}")
        return 1
    console.print(f"{uri} -> {escape(str(folder))} (every file's sha256 verified)")
    return 0


# ----------------------------------------------------------------------------------- dataset
def cmd_dataset(args: argparse.Namespace) -> int:
    from orchestration import datasets as ds
    from quality.table import TableError
    from release.datasets import last_check, read_registration, versions
    from release.lineage import LineageError, scratch_dir

    _, defs, instance = _platform()
    try:
        if args.action == "list":
            store = defs.resources["object_store"].open()
            table = Table(title="Data sets", show_lines=True)
            for column in ("name", "source", "latest good", "last check", "versions"):
                table.add_column(column, overflow="fold")
            for name in sorted(instance.get_dynamic_partitions(ds.PARTITIONS)):
                registration = read_registration(store, name)
                kept = versions(store, name)
                good = [v for v in kept if v.get("expectations", {}).get("success")]
                check = last_check(store, name)
                shown = "[dim]never checked[/dim]"
                if check is not None:
                    verdict = "[green]passed[/green]" if check["success"] else "[red]FAILED[/red]"
                    shown = f"{verdict} {escape(str(check['digest'])[:16])}"
                latest = escape(str(good[-1]["digest"])[:16]) if good else "[dim]none[/dim]"
                table.add_row(name, escape(registration.source), latest, shown, str(len(kept)))
            console.print(table)
            return 0
        if args.action == "export":
            manifest = ds.export(defs, args.name, Path(args.file))
            console.print(
                f"exported {args.name} ({manifest.get('rows')} rows, digest "
                f"{manifest.get('digest')}) to {escape(args.file)}"
            )
            return 0
        if args.action == "remove":
            ds.remove(defs, instance, args.name, actor=getpass.getuser(), reason=args.reason)
            console.print(f"removed {args.name}: no longer checked nightly; its versions are kept")
            return 0
        spec = Path(args.spec) if args.spec else None
        with (
            scratch_dir("dataset-add") as tmp,
            console.status(f"checking {args.name} (Dagster run)..."),
        ):
            added = ds.add(
                defs,
                instance,
                args.name,
                ds.fetch_source(args.file, Path(tmp)),
                actor=getpass.getuser(),
                spec_file=spec,
                quiet=True,
            )
    except (TableError, LineageError, FileNotFoundError) as err:
        console.print(f"[red]dataset {args.action} failed[/red]: {escape(str(err))}")
        return 2
    if not added.outcome.success and not added.failed_checks:
        console.print(f"[red]dataset add failed[/red]: {escape(added.outcome.message)}")
        return 1
    if added.good:
        console.print(
            f"[green]{args.name} version {added.digest} passed[/green] every expectation and "
            "is the latest good version"
        )
        return 0
    console.print(
        f"[red]{args.name} version {added.digest} FAILED[/red] its expectations; it is kept "
        "for inspection and the latest good version (if any) stays what checkpoints use:"
    )
    for failed in added.failed_checks:
        console.print(f"  {failed.check_name}: {escape(failed.description or '')}")
    return 1


# -------------------------------------------------------------------------------------- demo
def demo_steps(family: str, override: int | None = None) -> int:
    """The steps a demo family trains: ``--steps`` when given, else ``DEMO_STEPS``, else (and
    for None) the family policy's ``training.steps``."""
    from quality.policy import load_policy

    steps = override if override is not None else DEMO_STEPS.get(family)
    return int(steps if steps is not None else load_policy(family).training["steps"])


def lineage_tasks(
    families: Sequence[str], steps: Mapping[str, int | None], seeds: Sequence[int], release: bool
) -> list[Any]:
    """The runs of a lineage sweep for the run queue, in the order they are started when
    several may: the data sets, every family's seeds and same-seed re-runs, each family's gate
    report once those landed, and (``release``) a promotion after it, which the gates may
    refuse."""
    from assets.partitions import dataset_of
    from orchestration.runqueue import Task

    datasets = sorted({dataset_of(f) for f in families})
    tasks = [Task(f"dataset {d}", "materialize_dataset", {"name": d}) for d in datasets]
    training: dict[str, list[str]] = {}
    for family in families:
        after = (f"dataset {dataset_of(family)}",)
        runs = [
            Task(
                f"train {family} seed {s}",
                "train",
                {"family": family, "seed": s, "steps": steps[family]},
                after,
            )
            for s in seeds
        ]
        runs.append(Task(f"re-runs {family}", "repeat", {"family": family}, after))
        training[family] = [t.label for t in runs]
        tasks += runs
    for family in families:
        label = f"gate report {family}"
        tasks.append(Task(label, "evaluate", {"family": family}, tuple(training[family]), family))
        if release:
            who = getpass.getuser()
            promote = {"family": family, "action": "promote", "reason": "demo", "actor": who}
            tasks.append(Task(f"release {family}", "release", promote, (label,)))
    return tasks


@dataclass(frozen=True)
class LineageRun:
    settings: Any
    defs: Any
    finished: list[Any]  # runqueue.Done, in finishing order
    startup: float  # seconds until every worker was ready
    runs: float  # seconds from the first run's start to the last one's end

    @property
    def faults(self) -> list[Any]:
        return [d for d in self.finished if d.fault]


def run_lineage(tasks: Sequence[Any], workers: int) -> LineageRun:
    """Run ``tasks`` on the run queue with ``workers`` warm processes (fewer run at once when
    the instance's run queue allows fewer); stop starting new runs after a fault (a blocked
    gate report or a refused release is an answer, not a fault)."""
    from orchestration.runqueue import OPERATIONS, Limits, RunQueue, kind_of, open_tracking
    from orchestration.sensors import gate_report_requests

    started = time.perf_counter()
    prepare_environment()  # dagster.yaml exists before the workers open the instance
    with RunQueue(workers) as run_queue:  # the workers import while this process does
        settings, defs, instance = _platform()
        limits = Limits.of(instance)
        if 0 <= limits.max_runs < workers:
            config = settings.dagster_home / "dagster.yaml"
            console.print(
                f"[yellow]{workers} workers asked; the run queue in {escape(str(config))} allows "
                f"{limits.max_runs} run(s) at once[/yellow]: raise "
                "concurrency.runs.max_concurrent_runs there (or delete the file to get the "
                "project's dagster.yaml again)"
            )
        open_tracking(defs, settings.home)
        kinds = {op: kind_of(defs, op) for op in OPERATIONS}

        def ready(task: Any) -> str:
            if task.family is None:
                return ""
            wanted = {r.partition_key for r in gate_report_requests(instance)}
            if task.family in wanted:
                return ""
            return f"not every seed of {task.family} landed, so the sensor asks for no report"

        with _progress() as progress:
            bar = progress.add_task("starting workers", total=len(tasks))
            running: list[str] = []
            failures: list[Any] = []

            def on_start(task: Any) -> None:
                running.append(task.label)
                progress.update(bar, description=" | ".join(running))

            def on_done(done: Any) -> bool:
                if done.label in running:
                    running.remove(done.label)
                progress.update(bar, description=" | ".join(running), advance=1)
                if done.fault:
                    failures.append(done)
                    progress.console.print(
                        f"[red]{escape(done.label)} failed[/red] (run {done.run_id or '-'}): "
                        f"{escape(done.message)}"
                    )
                return not failures

            run_queue.wait_ready()
            startup = time.perf_counter() - started
            finished = run_queue.run(tasks, limits, kinds, ready, on_start, on_done)
            runs = time.perf_counter() - started - startup
    return LineageRun(settings, defs, finished, startup, runs)


def cmd_demo(args: argparse.Namespace) -> int:
    from assets.partitions import SEEDS, dataset_of

    started = time.perf_counter()
    families = list(args.families or DEMO_FAMILIES)
    if _unknown_families(families):
        return 2
    steps: dict[str, int | None] = {f: demo_steps(f, args.steps) for f in families}
    console.print(
        f"[bold]Demo[/bold]: {', '.join(f'{f} ({n} steps)' for f, n in steps.items())} x "
        f"{len(SEEDS)} seeds on {', '.join(sorted({dataset_of(f) for f in families}))}, "
        f"{args.workers} worker(s)"
    )
    tasks = lineage_tasks(families, steps, SEEDS, release=True)
    lineage = run_lineage(tasks, args.workers)
    if lineage.faults:
        return 1
    print_status(lineage.defs, families)
    for done in lineage.finished:
        if done.job == "release_job" and not done.success:
            console.print(f"[yellow]{done.label} not done[/yellow]: {escape(done.message)}")
    _print_timing(lineage, families, SEEDS, time.perf_counter() - started)
    console.print(
        "\nWhere to look:\n"
        "  python -m orchestration ui      Dagster UI (lineage, checks, runs) and MLflow UI\n"
        "  python -m orchestration status  the table above, any time\n"
        + "".join(f"  {k:<17} {v}\n" for k, v in lineage.settings.describe().items())
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """The nightly's work now: every data set checked, every family x seed trained, the
    re-runs, and each family's gate report once its seeds landed; nothing is released."""
    from assets.partitions import FAMILIES, SEEDS

    started = time.perf_counter()
    families = list(args.families or FAMILIES)
    if _unknown_families(families):
        return 2
    steps: dict[str, int | None] = {f: args.steps for f in families}
    console.print(
        f"[bold]Sweep[/bold]: {len(families)} families x {len(SEEDS)} seeds, "
        f"{args.steps or 'policy'} steps, {args.workers} worker(s)"
    )
    tasks = lineage_tasks(families, steps, SEEDS, release=False)
    lineage = run_lineage(tasks, args.workers)
    for done in lineage.finished:
        if done.job == "gate_report_job":
            verdict = "[green]PASS[/green]" if done.success else "[red]BLOCKED[/red]"
            if not done.ran:
                verdict = "not run"
            why = "" if done.success else f": {escape(done.message)}"
            console.print(f"{done.label}: {verdict}{why}")
    _print_timing(lineage, families, SEEDS, time.perf_counter() - started)
    return 1 if lineage.faults else 0


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


def _print_timing(lineage: LineageRun, families: list[str], seeds: list[int], wall: float) -> None:
    """Where the wall time went. ``work``: what the assets timed as their own work (seed runs
    with evaluation, probes and the real-versus-imagined picture, the expectation suite, gate
    evaluation with its re-runs, a promotion); the rest of a run's time (Dagster bookkeeping,
    MLflow logging, object store, ledger) is orchestration overhead. With several workers, run
    time adds up across workers."""
    from release.lineage import read_checkpoint_records

    defs = lineage.defs
    store = defs.resources["object_store"].open()
    train = 0.0
    with defs.resources["ledger"].open() as ledger:
        for family in families:
            report = ledger.latest_report(family)
            repeats = report.report["repeatability_runs"] if report else []
            for r in [*read_checkpoint_records(store, family, seeds), *repeats]:
                train += r["timings"]["train_seconds"]
    ran = [d for d in lineage.finished if d.ran]
    runs = sum(d.seconds for d in ran)
    work = sum(d.work_seconds for d in ran)
    overhead = runs - work
    workers = len({d.worker for d in ran})
    console.print(
        f"Timing: wall {wall:.1f} s = start-up {lineage.startup:.1f} s (workers' imports, "
        f"instance) + {lineage.runs:.1f} s of {len(ran)} Dagster runs on {workers} worker(s) + "
        f"{wall - lineage.startup - lineage.runs:.1f} s reporting. Run time {runs:.1f} s in all: "
        f"work {work:.1f} s (training loops alone {train:.1f} s), orchestration overhead "
        f"{overhead:.1f} s = {overhead / max(runs, 1e-9):.1%} of run time."
    )
    per_job: dict[str, list[float]] = {}
    for done in ran:
        per_job.setdefault(done.job, []).append(done.seconds - done.work_seconds)
    console.print(
        "Overhead per run: "
        + "; ".join(
            f"{job} " + ", ".join(f"{v:.2f}" for v in values) + " s"
            for job, values in per_job.items()
        )
    )


# ---------------------------------------------------------------------------------------- ui
def cmd_ui(args: argparse.Namespace) -> int:
    from orchestration.servers import serve_uis

    settings = prepare_environment()
    return serve_uis(settings, REPO, args.dagster_port, args.mlflow_port, console)


WORKERS_HELP = (
    "runs at once, each in a warm worker process (default 1; at most what the run queue in "
    "dagster.yaml allows); every run uses WORLDFLUX_TORCH_THREADS torch threads (default 1)"
)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole lineage on the embedded defaults")
    demo.add_argument("--families", nargs="+", help=f"default: {' '.join(DEMO_FAMILIES)}")
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per seed for every family (default: "
        + ", ".join(f"{f} {n or 'policy'}" for f, n in DEMO_STEPS.items())
        + "; other families: their policy's steps)",
    )
    demo.add_argument("--workers", type=_positive, default=1, help=WORKERS_HELP)
    demo.set_defaults(func=cmd_demo)
    sweep = sub.add_parser("sweep", help="the nightly's training and gates now, nothing released")
    sweep.add_argument("--families", nargs="+", help="default: every family")
    sweep.add_argument(
        "--steps", type=_positive, default=None, help="steps per seed (default: each policy's)"
    )
    sweep.add_argument("--workers", type=_positive, default=1, help=WORKERS_HELP)
    sweep.set_defaults(func=cmd_sweep)
    ui = sub.add_parser("ui", help="Dagster UI + MLflow UI on 127.0.0.1 until Ctrl-C")
    ui.add_argument("--dagster-port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    status = sub.add_parser("status", help="latest gate result, champion, last action, drift")
    status.add_argument("families", nargs="*")
    status.add_argument(
        "--verify", action="store_true", help="check the ledger's hash chain first (exit 1 if bad)"
    )
    status.set_defaults(func=cmd_status)
    for name, text in (
        ("promote", "promote a family's best passing seed"),
        ("rollback", "make the previous champion the champion again"),
        ("reconcile", "put MLflow aliases and champion.json back as the ledger records them"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("family")
        cmd.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        cmd.add_argument(
            "--actor", default="", help="must be the login user if given (the CLI acts as it)"
        )
        cmd.set_defaults(func=cmd_release)
    serve = sub.add_parser("serve", help="serve every family's champion over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--families", nargs="+", help="default: every family with a champion")
    serve.add_argument(
        "--poll", type=float, default=5.0, help="seconds between champion alias checks"
    )
    serve.add_argument(
        "--workers", type=int, default=None, help="requests computed at once (default: CPUs)"
    )
    serve.set_defaults(func=cmd_serve)
    pull = sub.add_parser("pull", help="download a released model, every file verified")
    pull.add_argument("family")
    pull.add_argument("--alias", default="champion")
    pull.add_argument("--to", required=True, help="a new or empty folder")
    pull.set_defaults(func=cmd_pull)
    dataset = sub.add_parser("dataset", help="registered data sets: list, export, add, remove")
    actions = dataset.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="registered data sets, latest good and last checked version")
    export = actions.add_parser("export", help="write a data set as a Parquet table")
    export.add_argument("name")
    export.add_argument("file")
    add = actions.add_parser("add", help="register a Parquet table and check it (a new version)")
    add.add_argument("name")
    add.add_argument("file", help="a local path or s3://bucket/key (AWS_ENDPOINT_URL for MinIO)")
    add.add_argument("--spec", help="JSON spec, for a table whose file does not carry one")
    remove = actions.add_parser("remove", help="stop checking a data set; its history stays")
    remove.add_argument("name")
    remove.add_argument("--reason", required=True)
    dataset.set_defaults(func=cmd_dataset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    import dagster as dg

    # Beta/preview notices about Dagster APIs are for this project's developers, not its users.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    args = build_parser().parse_args(argv)
    from orchestration.runqueue import RunQueueError
    from orchestration.settings import SettingsError
    from release.ledger import LedgerError
    from release.mlflow import MlflowError
    from release.object_store import ObjectStoreError

    try:
        return int(args.func(args))
    except SettingsError as err:
        console.print(f"[red]configuration error[/red]: {escape(str(err))}")
        return 2
    except (LedgerError, MlflowError, ObjectStoreError) as err:  # a service is down or refuses
        console.print(f"[red]{type(err).__name__}[/red]: {escape(str(err))}")
        return 1
    except RunQueueError as err:  # a worker process could not start or died
        console.print(f"[red]run queue[/red]: {escape(str(err))}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
