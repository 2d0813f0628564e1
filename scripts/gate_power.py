"""Gate power, as figures: run each injected fault (and the healthy controls) through the real
sweep several times and print which gate caught it.

    python scripts/gate_power.py --repeats 2            # every injection, the policies' steps
    python scripts/gate_power.py --only "frozen lr" --only "healthy tdmpc2" --repeats 3

Each repeat uses fresh seeds (repeat r trains seeds r*n .. r*n+n-1). The table: injection, the
gate(s) meant to catch it, caught k/n (for a control: passed k/n), the median seed skill, and
every other gate that blocked, with how often. The injections are declared once, in
``quality.injections.INJECTIONS``. Results also go to ``--out`` (JSON), rewritten after every
sweep. Exit status 0 when every fault was caught and every control passed in every repeat, 1
otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from quality.injections import INJECTIONS, Injection, Outcome, injection, run

REPO_ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2, help="sweeps per injection")
    parser.add_argument(
        "--only", action="append", default=[], help="run only this injection (repeatable)"
    )
    parser.add_argument("--steps", type=int, default=None, help="default: each policy's steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "gate-power.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        args.items = [injection(n) for n in args.only] if args.only else list(INJECTIONS)
    except KeyError as err:
        parser.error(str(err.args[0]))
    return args


def _row(item: Injection, outcomes: list[Outcome]) -> dict[str, Any]:
    others: Counter[str] = Counter()
    for outcome in outcomes:
        others.update(outcome.others)
    skills = [s for o in outcomes for r in o.report["runs"] if (s := r.get("skill")) is not None]
    return {
        "injection": item.name,
        "family": item.family,
        "what": item.what,
        "gates": list(item.catches) or ["(releasable)"],
        "control": item.expect_pass,
        "caught": sum(o.caught for o in outcomes),
        "repeats": len(outcomes),
        "median_skill": statistics.median(skills) if skills else None,
        "others": dict(sorted(others.items())),
        "seeds": [o.seeds for o in outcomes],
        "report_ids": [o.report["report_id"] for o in outcomes],
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| injection | family | gate meant to catch it | caught | median skill | other gates "
        "that blocked |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        verdict = "passed" if row["control"] else "caught"
        skill = "-" if row["median_skill"] is None else f"{row['median_skill']:.3f}"
        others = ", ".join(f"{g} ({n}/{row['repeats']})" for g, n in row["others"].items())
        print(
            f"| {row['injection']} | {row['family']} | {', '.join(row['gates'])} | "
            f"{verdict} {row['caught']}/{row['repeats']} | {skill} | {others or '-'} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for item in args.items:
        outcomes = []
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            outcome = run(item, first_seed=repeat * item.seeds, steps=args.steps)
            outcomes.append(outcome)
            mark = "ok" if outcome.caught else "MISSED"
            skills = [r.get("skill") for r in outcome.report["runs"]]
            print(
                f"[{time.perf_counter() - started:6.0f}s] {item.name} repeat {repeat + 1}: "
                f"{mark} ({time.perf_counter() - t0:.0f}s; seed skills "
                f"{[None if s is None else round(s, 3) for s in skills]}; blocked by "
                f"{sorted(outcome.blocking) or 'nothing'})",
                file=sys.stderr,
                flush=True,
            )
        rows.append(_row(item, outcomes))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    _print_table(rows)
    elapsed = time.perf_counter() - started
    print(f"\n{len(rows)} injections x {args.repeats} repeats in {elapsed:.0f} s")
    return 0 if all(r["caught"] == r["repeats"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
