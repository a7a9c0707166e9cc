"""This pipeline against the two things users would otherwise run, on the same generated input:

    python -m benchmarks.compare --events 1000000 --rounds 3 [--tenants 20]

- beamhouse: ``python -m pipelines.deliver`` (files destination, Parquet, hourly Hive layout, consent and
  dedup on, FnApiRunner);
- plain Beam: ``benchmarks/plain_beam.py`` (ReadFromText -> json.loads -> consent Filter -> normalising
  Map -> WriteToParquet, FnApiRunner);
- DuckDB: ``benchmarks/duckdb_convert.py`` (read_ndjson -> consent filter -> partitioned Parquet COPY).

Rounds are interleaved (beamhouse, plain Beam, DuckDB, then again) so that machine noise hits all three
alike. Each run is a child process; its wall time comes from ``time.perf_counter`` and its peak RSS from
``os.wait4``'s resource usage. Prints events/s, the median wall time and peak RSS of each, and the ratios.
The input is deterministic (``tests.eventgen``: duplicates, a consent mix, ``--tenants`` tenants); the
event count in the rates is ``--events`` (the input also holds about 8% re-sent duplicates).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import orjson


def run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process; raises if it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{argv[2]} failed ({child.returncode}): {child.stderr.read().decode()[-1500:]}")
    return wall, usage.ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--only", action="append", choices=["beamhouse", "plain", "duckdb"],
                        help="run only these (repeatable)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="beamhouse-compare-")
    try:
        # Generated in a child: this process stays small, so no child inherits a large memory high-water
        # mark (Linux keeps ru_maxrss across fork and exec).
        data = os.path.join(work, "events.ndjson")
        subprocess.run([sys.executable, "-m", "tests.eventgen", f"--events={args.events}", "--seed=1",
                        f"--tenants={args.tenants}", "--no_bad", "--source_id=bench", f"--out={data}"], check=True)
        config = os.path.join(work, "integrations.json")
        py = sys.executable
        tools = {
            "beamhouse": lambda out: [py, "-m", "pipelines.deliver", f"--integrations={config}", f"--input={data}",
                                      f"--dead_letter={out}/dead", "--runner=FnApiRunner"],
            "plain": lambda out: [py, "-m", "benchmarks.plain_beam", f"--input={data}", f"--output={out}",
                                  "--runner=FnApiRunner"],
            "duckdb": lambda out: [py, "-m", "benchmarks.duckdb_convert", f"--input={data}", f"--output={out}"],
        }
        chosen = args.only or list(tools)
        results = {name: ([], []) for name in chosen}
        for r in range(args.rounds):
            for name in chosen:
                if name == "beamhouse":  # a fresh lake each round: a re-run would find every file present
                    with open(config, "wb") as fh:
                        fh.write(orjson.dumps([{"source_id": "bench", "vendor": "files", "name": "lake", "config": {
                            "path": os.path.join(work, f"lake{r}"), "file_format": "parquet", "batch_size": 100_000,
                            "consent": {"require": ["analytics"]}}}]))
                wall, rss = run(tools[name](os.path.join(work, f"{name}{r}")))
                results[name][0].append(wall)
                results[name][1].append(rss)
        n = args.events
        size_mb = os.path.getsize(data) / 1e6
        print(f"input: {n:,} events ({size_mb:.0f} MB NDJSON), {args.tenants} tenants; rounds: {args.rounds}; "
              f"cores: {os.cpu_count()}")
        medians = {}
        for name, (walls, rss) in results.items():
            medians[name] = statistics.median(walls)
            print(f"{name:10s} median {medians[name]:7.2f} s  {n / medians[name]:>10,.0f} events/s  "
                  f"peak RSS {max(rss):6.0f} MiB  (runs: {', '.join(f'{w:.1f}' for w in walls)})")
        if "beamhouse" in medians:
            for other in ("plain", "duckdb"):
                if other in medians:
                    print(f"beamhouse vs {other}: {medians[other] / medians['beamhouse']:.2f}x the throughput "
                          f"({medians['beamhouse'] / medians[other]:.2f}x the time)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
