"""Throughput and peak memory of the delivery job on generated events (this pipeline only; the
comparison with a plain Beam pipeline and DuckDB belongs to the benchmark issue).

    python -m benchmarks.throughput --events 200000 --rounds 3

Each round runs ``python -m pipelines.deliver`` in a child process (files destination, Parquet, hourly
Hive layout, consent and dedup on) and reads the child's wall time and peak RSS from ``resource``.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

from tests.eventgen import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="beamhouse-bench-")
    try:
        lines, _ = generate(args.events, seed=1, tenants=args.tenants, bad=False)
        data = os.path.join(work, "events.ndjson")
        with open(data, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")
        walls, rss = [], []
        for r in range(args.rounds):
            out = os.path.join(work, f"out{r}")
            config = os.path.join(work, f"integrations{r}.json")
            with open(config, "wb") as fh:
                fh.write(orjson.dumps([{"source_id": "bench", "vendor": "files", "name": "lake", "config": {
                    "path": out, "file_format": "parquet", "batch_size": 100_000,
                    "consent": {"require": ["analytics"]}}}]))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipelines.deliver", f"--integrations={config}",
                            f"--input={data}", f"--dead_letter={out}/dead", "--runner=FnApiRunner"],
                           check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
            rss.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        size_mb = os.path.getsize(data) / 1e6
        median = statistics.median(walls)
        print(f"input: {len(lines)} lines, {size_mb:.0f} MB NDJSON; rounds: {args.rounds}; cores: {os.cpu_count()}")
        print(f"beamhouse (files, parquet, hourly, consent+dedup): median {median:.2f} s, "
              f"{len(lines) / median:,.0f} events/s, peak RSS {max(rss):.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
