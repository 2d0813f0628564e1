"""Estimate how long quality-gate sweeps take, from a sweep already measured on this machine.

    python scripts/estimate_quality_gate_runtime.py --input reports/quality-gates/seed_runs.json \
        --scenarios 5x5000,7x10000,10x10000,7x20000,10x20000
    python scripts/estimate_quality_gate_runtime.py --models dreamer --json estimates.json

Reads the ``seed_runs.json`` that ``scripts/measure_quality_gates.py`` writes, fits per family
the training seconds per step and the fixed cost of a run (quality/runtime.py), and prints the
fit and one row per scenario (SEEDSxSTEPS): minutes per family, the total, and a low-high band
from the fastest and slowest measured run. The estimate holds for the device and thread count
that measured the runs (printed above the table). ``--models`` limits the families (aliases such
as ``dreamer`` allowed); ``--json OUT`` also writes the fit and the estimates. Exit status: 0
when printed; 2 on bad arguments or a missing or invalid input file. See docs/quality-runtime.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# ``python scripts/...`` puts scripts/ on sys.path, not the repository root; add it so the
# command works from a plain checkout as well as from an installed package.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from quality.runtime import (  # noqa: E402
    Scenario,
    estimate,
    fit_cost_model,
    format_costs,
    format_table,
    parse_scenarios,
)

DEFAULT_INPUT = REPO_ROOT / "reports" / "quality-gates" / "seed_runs.json"
DEFAULT_SCENARIOS = "5x5000,7x10000,10x10000,7x20000,10x20000"
MEASURE_HINT = "run scripts/measure_quality_gates.py first"


def _scenarios(text: str) -> tuple[Scenario, ...]:
    try:
        return parse_scenarios(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _families(text: str) -> tuple[str, ...]:
    # Imported here, not at the top: worldflux imports torch (seconds), which only an alias
    # lookup needs; without --models the estimate reads nothing but JSON.
    from worldflux import WorldFluxError, canonical_family

    try:
        names = [canonical_family(n.strip()) for n in text.split(",") if n.strip()]
    except WorldFluxError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not names:
        raise argparse.ArgumentTypeError(f"no family in --models {text!r}")
    return tuple(dict.fromkeys(names))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input", type=Path, default=DEFAULT_INPUT, help="seed_runs.json of a measured sweep"
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=DEFAULT_SCENARIOS,
        help=f"comma-separated SEEDSxSTEPS (default: {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--models", type=_families, default=None, help="families to include (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write estimates")
    return parser.parse_args(argv)


def _load(path: Path) -> dict[str, Any]:
    """The seed-runs document, or a one-line reason (ValueError) why it cannot be used."""
    if not path.is_file():
        raise ValueError("not found")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err})") from None
    if not isinstance(document, dict):
        raise ValueError("not a seed-runs document (not a JSON object)")
    return document


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        document = _load(args.input)
        costs = fit_cost_model(document, args.models)
    except ValueError as err:  # CostModelError included: a family that never completed a run
        print(f"error: {args.input}: {err}; {MEASURE_HINT}", file=sys.stderr)
        return 2
    estimates = [estimate(costs, s) for s in args.scenarios]

    config = document.get("config") or {}
    print(
        f"Fitted from {args.input} (device {config.get('device', '?')}, "
        f"{config.get('threads', '?')} thread(s)); estimates hold for the same device and threads."
    )
    print()
    print(format_costs(costs))
    print()
    print(format_table(estimates))

    if args.json is not None:
        out = {
            "schema_version": 1,
            "source": str(args.input),
            "measured": {k: config.get(k) for k in ("device", "threads", "steps", "seeds")},
            "costs": {name: cost.to_dict() for name, cost in costs.items()},
            "estimates": [e.to_dict() for e in estimates],
        }
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2, allow_nan=False) + "\n")
        except OSError as err:
            print(f"error: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
