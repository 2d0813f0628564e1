"""Held-out prediction figures of trained models beside the trivial and linear baselines.

    python scripts/measure_skill.py --runs tdmpc2:ci:1000,dreamerv3:ci:2000 --seeds 0,1,2

Each run (family:preset:steps) trains one model per seed on its policy's data set exactly as a
gate sweep does (``quality.seed_run.run_seed``), then prints, per horizon of the policy, the
normalized open-loop error (NMSE; quality/skill.py) of the model and of the baselines measured on
the same fixed held-out segments: predicting the training mean, persistence (nothing changes), a
least-squares linear model of the next observation from (observation, action), a small residual
MLP of the change of the observation fitted on the training set (vector observations only; "-"
for images), and the model with its action sequences shuffled across the batch; then the skill
over the better trivial baseline, and the posterior reconstruction (the last observed step
decoded, or read out, from the filtered state). Figures are medians over the seeds. Output: a
Markdown table (stdout), progress on stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from quality.policy import load_policy
from quality.seed_run import SeedRunSpec, run_seed

COLUMNS = ("model", "mean", "persistence", "linear", "residual_mlp", "shuffled_actions", "skill")


def _median(values: list[float | None]) -> float | None:
    """None when the figure was not measured (the residual MLP on images)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _runs(text: str) -> list[tuple[str, str, int]]:
    out = []
    for item in text.split(","):
        try:
            family, preset, steps = item.strip().split(":")
            out.append((family, preset, int(steps)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"runs are family:preset:steps, comma-separated; got {item!r}"
            ) from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=_runs, default=_runs("tdmpc2:ci:1000,dreamerv3:ci:1000"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    print(
        "| run | data | horizon | "
        + " | ".join(COLUMNS)
        + " | skill (whole segment) | posterior reconstruction |"
    )
    print("|---|---|---|" + "---|" * (len(COLUMNS) + 2))
    for family, preset, steps in args.runs:
        policy = load_policy(family)
        per_seed = []
        for seed in seeds:
            started = time.perf_counter()
            spec = SeedRunSpec.from_policy(policy, seed, steps, preset=preset)
            record = run_seed(spec, policy)
            probe = record.get("probes", {}).get("skill", {})
            if "horizons" not in probe:
                reason = probe.get("error") or (record.get("failure") or {}).get("message")
                print(
                    f"{family}:{preset} seed {seed}: no skill measured: {reason}", file=sys.stderr
                )
                continue
            per_seed.append(probe)
            print(
                f"{family}:{preset}:{steps} seed {seed}: skill {probe['skill']:.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        if not per_seed:
            continue
        whole = statistics.median(p["skill"] for p in per_seed)
        recon = statistics.median(p["reconstruction"] for p in per_seed)
        for k in per_seed[0]["horizons"]:
            cells = [_median([p["horizons"][k].get(c) for p in per_seed]) for c in COLUMNS]
            print(
                f"| {family}:{preset}, {steps} steps ({per_seed[0]['space']}) | "
                f"{policy.training['dataset']} | {k} | "
                + " | ".join("-" if v is None else f"{v:.3g}" for v in cells)
                + f" | {whole:.3f} | {recon:.3g} |"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
