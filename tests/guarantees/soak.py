"""Opt-in soak: many events, input growing over rounds, runs killed at random moments and run again;
prints what was lost and what was doubled (both must be 0). Not part of the test suite (minutes to hours).

    python -m tests.guarantees.soak --events 10000000 --rounds 5 --kills 3 --workdir /tmp/soak

Each round adds a file of new events (and re-sends some of the earlier ones), starts
``python -m pipelines.deliver`` over the whole growing glob, kills it (SIGKILL to its process group) after
a random delay up to ``--kills`` times, then lets one run finish. At the end every destination is read back
through its delivery reports (tests/guarantees/invariants.py): lost = expected events missing, duplicated =
events present more than once, plus the report integrity and conservation checks.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.eventgen import consented_ids, generate
from tests.guarantees.invariants import REPO, check_conservation, check_report_integrity, rows_of

SOURCE = "src_example"


def integrations(root: Path) -> list[dict]:
    consent = {"require": ["analytics"]}
    return [
        {"source_id": SOURCE, "vendor": "files", "name": "Lake", "config": {
            "path": str(root / "lake"), "file_format": "parquet", "consent": consent}},
        {"source_id": SOURCE, "vendor": "files", "name": "Archive", "config": {
            "path": str(root / "archive"), "file_format": "json", "compression": "gzip", "partition_by": "{date}"}},
    ]


def delivered_ids(root: Path) -> Counter:
    return Counter(row["event_id"] for path in check_report_integrity(root) for row in rows_of(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in all, over the rounds")
    parser.add_argument("--rounds", type=int, default=4, help="input files added one a round")
    parser.add_argument("--kills", type=int, default=2, help="killed runs per round before the one that finishes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default="/tmp/beamhouse-soak", help="emptied first")
    parser.add_argument("--runner_args", default="", help="extra Beam options for every run, space-separated")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    (root / "in").mkdir(parents=True)
    (root / "i.json").write_bytes(orjson.dumps(integrations(root)))
    cmd = [sys.executable, "-m", "pipelines.deliver", f"--integrations={root / 'i.json'}",
           f"--input={root / 'in' / '*.ndjson'}", f"--dead_letter={root / 'dead'}",
           f"--summary={root / 'summary.json'}", *(args.runner_args.split() or ["--runner=FnApiRunner"])]
    unique: set = set()
    consented: set = set()
    lines_in = 0
    per_round = args.events // args.rounds
    last_run = 2.0 + per_round / 5000  # a first guess at a completing run's time; then the last one's
    for n in range(args.rounds):
        lines, truth = generate(per_round, seed=args.seed * 1000 + n, tenants=4, bad=False, source_id=SOURCE)
        (root / "in" / f"part-{n:04d}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        lines_in += len(lines)
        unique |= set(truth["unique"])
        consented |= consented_ids(truth)
        started = time.monotonic()
        for k in range(args.kills):
            job = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            delay = rng.uniform(1.0, 1.2 * last_run)  # at start-up, mid-way, while publishing or reporting
            try:
                job.wait(timeout=delay)
                print(f"round {n} run {k}: finished before its kill at {delay:.1f} s", flush=True)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
                print(f"round {n} run {k}: killed at {delay:.1f} s", flush=True)
        begun = time.monotonic()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        last_run = time.monotonic() - begun
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        print(f"round {n}: {lines_in} lines so far; the completing run took {last_run:.1f} s "
              f"({time.monotonic() - started:.1f} s with the killed ones)", flush=True)
    summary = orjson.loads((root / "summary.json").read_bytes())
    check_conservation(summary, input_events=lines_in)
    failures = 0
    for name, want in (("lake", consented), ("archive", unique)):
        got = delivered_ids(root / name)
        lost = len(want - set(got))
        duplicated = sum(c - 1 for c in got.values() if c > 1)
        extra = len(set(got) - want)
        print(f"{name}: expected {len(want)}  delivered {len(got)}  lost = {lost}  duplicated = {duplicated}"
              f"  unexpected = {extra}")
        failures += lost + duplicated + extra
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
