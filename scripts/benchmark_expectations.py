"""Throughput of the streaming expectation suite on a large Parquet trajectory table.

    python scripts/benchmark_expectations.py                  # 10,000,000 rows (a few minutes)
    python scripts/benchmark_expectations.py --rows 1000000   # smaller
    python scripts/benchmark_expectations.py --rows-per-chunk 262144

Writes a synthetic pendulum-like table (3 float observations, 1 continuous action in [-2, 2],
episodes of 201 rows, the last one cut short) to a temporary Parquet file one row group at a
time (the table is never whole in memory), runs ``quality.expectations.validate_table`` on it
and prints rows, file size, seconds, rows/s, peak RSS (``resource.getrusage``) and the chunk
size. Exits 1 if the clean table does not pass. A script, not a test: machines are noisy.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from quality.expectations import validate_table
from quality.table import TableSpec, TableWriter, table_schema

EPISODE_ROWS = 201  # Pendulum-v1: 200 steps + the first observation


def synthetic_batch(
    spec: TableSpec, schema: pa.Schema, start: int, stop: int, total: int
) -> pa.RecordBatch:
    """Rows [start, stop) of a valid ``total``-row table, deterministic per row group."""
    rows = stop - start
    rng = np.random.default_rng(start)
    index = np.arange(start, stop, dtype=np.int64)
    episode, step = index // EPISODE_ROWS, index % EPISODE_ROWS
    first = step == 0
    last = (step == EPISODE_ROWS - 1) | (index == total - 1)
    observation = rng.standard_normal((rows, 3), dtype=np.float32)
    action = rng.uniform(spec.action_low, spec.action_high, rows).astype(np.float32)
    action[first] = 0.0
    reward = -rng.random(rows, dtype=np.float32)
    reward[first] = 0.0
    arrays = [
        pa.array(episode),
        pa.array(step),
        pa.FixedSizeListArray.from_arrays(
            pa.array(observation.reshape(-1)), type=schema.field("observation").type
        ),
        pa.FixedSizeListArray.from_arrays(pa.array(action), type=schema.field("action").type),
        pa.array(reward),
        pa.array(np.zeros(rows, dtype=bool)),
        pa.array(last),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--row-group-rows", type=int, default=65_536)
    parser.add_argument("--rows-per-chunk", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary file goes")
    args = parser.parse_args()
    if args.rows < 2 or args.row_group_rows < 1:
        parser.error("need --rows >= 2 and --row-group-rows >= 1")

    spec = TableSpec(
        name="synthetic_pendulum",
        obs_shape=(3,),
        discrete=False,
        action_dim=1,
        action_low=-2.0,
        action_high=2.0,
        source="scripts/benchmark_expectations.py",
        licence="CC0-1.0",
    )
    schema = table_schema(spec)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "synthetic.parquet"
        started = time.perf_counter()
        with TableWriter(path, schema) as writer:
            for start in range(0, args.rows, args.row_group_rows):
                stop = min(start + args.row_group_rows, args.rows)
                writer.write(synthetic_batch(spec, schema, start, stop, args.rows))
        write_seconds = time.perf_counter() - started
        write_rss = peak_rss_mib()

        started = time.perf_counter()
        report = validate_table(path, spec, rows_per_chunk=args.rows_per_chunk)
        seconds = time.perf_counter() - started
        size = path.stat().st_size

    print(f"rows:            {report.rows:,}")
    print(f"file size:       {size / 2**20:,.1f} MiB ({size:,} bytes)")
    print(f"row groups:      {-(-args.rows // args.row_group_rows):,} of {args.row_group_rows:,}")
    print(f"chunk size:      {report.chunk_rows:,} rows ({report.chunks} chunks)")
    print(f"write seconds:   {write_seconds:.1f}")
    print(f"validate seconds:{seconds:8.1f}")
    print(f"rows/s:          {report.rows / seconds:,.0f}")
    print(f"peak RSS:        {peak_rss_mib():,.0f} MiB (after writing: {write_rss:,.0f} MiB)")
    print(f"success:         {report.success}")
    if not report.success:
        print(report.summary())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
