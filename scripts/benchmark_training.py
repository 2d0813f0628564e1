"""Training throughput benchmark (a script, not a test: machines are noisy).

    python scripts/benchmark_training.py                       # both families, preset ci
    python scripts/benchmark_training.py --families tdmpc2 --presets ci,small --threads 2
    python scripts/benchmark_training.py --families all --steps 50 --repeats 1

Per family and preset it prints training throughput (samples/s = batch x sequence per second
of sampling + model step; best and median of several timing windows), the share of that time
spent sampling batches, the median step time, and peak memory (peak RSS of a fresh process on
CPU; peak allocated memory on CUDA). Each configuration runs in its own process so peaks do not
mix.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import worldflux
    from quality.policy import load_policy
    from worldflux.data import load_bundled
    from worldflux.training import Trainer, TrainerConfig

    torch.set_num_threads(args.threads)
    # Each family trains on the data set its gate policy names (quality/policies/<family>.json).
    data = load_bundled(args.dataset or load_policy(args.family).training["dataset"])
    model = worldflux.create_world_model_for(f"{args.family}:{args.preset}", data.spec)
    config = TrainerConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        eval_batches=1,
        device=args.device,
    )
    trainer = Trainer(model, data, config)
    for _ in range(args.warmup):
        trainer.train_step()
    # Repeated timing windows: this machine shares its cores with neighbours, so a single
    # window can be slowed by others. Report the best window (the machine's capability, as
    # timeit does) and the median.
    step_times: list[float] = []
    windows: list[tuple[float, float, float]] = []  # (samples/s, sampling share, seconds)
    for _ in range(args.repeats):
        trainer.sample_seconds = trainer.train_seconds = 0.0
        for _ in range(args.steps):
            started = time.perf_counter()
            trainer.train_step()
            step_times.append(time.perf_counter() - started)
        samples = args.steps * args.batch_size * args.seq_len
        windows.append(
            (
                samples / trainer.train_seconds,
                trainer.sample_seconds / trainer.train_seconds,
                trainer.train_seconds,
            )
        )
    rates = sorted(w[0] for w in windows)
    if trainer.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "family": args.family,
        "preset": args.preset,
        "dataset": data.name,
        "device": str(trainer.device),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "repeats": args.repeats,
        "samples_per_second": rates[-1],
        "samples_per_second_median": statistics.median(rates),
        "sampling_share": statistics.median(w[1] for w in windows),
        "median_step_ms": 1000 * statistics.median(step_times),
        "peak_memory_mb": peak_mb,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--families", default="dreamerv3,tdmpc2", help="comma-separated, or 'all' registered"
    )
    parser.add_argument("--presets", default="ci")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timing windows per config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dataset", default=None, help="default: the data set of the family's gate policy"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.family:  # worker mode: one configuration, result as JSON on stdout
        print(json.dumps(run_one(args)))
        return 0

    results = []
    header = (
        f"{'family':<17} {'preset':<7} {'params':>9} {'best sps':>10} {'median sps':>11} "
        f"{'step ms':>8} {'sampling':>9} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    families = args.families.split(",")
    if args.families == "all":
        import worldflux

        families = [entry["family"] for entry in worldflux.list_models()]
    for family in families:
        for preset in args.presets.split(","):
            cmd = [sys.executable, __file__, "--family", family, "--preset", preset]
            for flag in (
                "batch_size",
                "seq_len",
                "steps",
                "warmup",
                "threads",
                "device",
                "dataset",
            ):
                value = getattr(args, flag)
                if value is not None:
                    cmd += [f"--{flag.replace('_', '-')}", str(value)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{family}:{preset} failed:\n{proc.stderr}", file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(row)
            print(
                f"{family:<17} {preset:<7} {row['params']:>9,} "
                f"{row['samples_per_second']:>10,.0f} {row['samples_per_second_median']:>11,.0f} "
                f"{row['median_step_ms']:>8.1f} "
                f"{row['sampling_share']:>9.1%} {row['peak_memory_mb']:>8.0f}"
            )
    print(
        f"\nsamples/s = batch {args.batch_size} x sequence {args.seq_len} per second of sampling "
        f"+ model step; {args.repeats} windows of {args.steps} steps after {args.warmup} "
        f"warm-up steps; torch threads {args.threads}; device {args.device}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
