"""This pipeline against the two things users would otherwise run, on the same generated input:

    python -m benchmarks.compare --events 1000000 --rounds 3 [--tenants 20] [--layout tenant] [--workers N]

- beamhouse: ``python -m pipelines.deliver`` (files destination, Parquet, hourly Hive layout, consent and
  dedup on, FnApiRunner with ``--workers`` processes, default one per core);
- streaming: the same job reading one element per event (``--per_line_input``), as a streaming source
  delivers them;
- plain Beam: ``benchmarks/plain_beam.py`` (ReadFromText -> json.loads -> consent Filter -> normalising
  Map -> WriteToParquet, FnApiRunner);
- DuckDB: ``benchmarks/duckdb_convert.py`` (read_ndjson -> consent filter -> partitioned Parquet COPY).

Rounds are interleaved (beamhouse, plain Beam, DuckDB, then again) so that machine noise hits all three
alike. Each run is a child process; its wall time comes from ``time.perf_counter`` and its peak RSS from
a sampler summing the resident memory of the process tree (workers included). Before each run the
previous run's output is deleted and written-but-unflushed data is flushed (``os.sync``): the kernel
writes dirty pages out about 30 s after they were written, which otherwise landed in the next run's time
(the input, just generated, and each tool's Parquet files alike). Prints events/s, the median wall time and
peak RSS of each, and the ratios.
The input is deterministic (``tests.eventgen``: duplicates, a consent mix, ``--tenants`` tenants); the
event count in the rates is ``--events`` (the input also holds about 8% re-sent duplicates).
"""
from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import orjson


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and all its descendants now (KiB), from /proc.

    Walks only the tree, through each thread's ``/proc/<pid>/task/<tid>/children`` (a process started from
    a thread, or adopted by a subreaper, is listed under that thread), reading one line of ``statm`` a
    process. The sampler runs every 50 ms beside the job it measures, on the same cores: scanning every
    ``/proc/<pid>/status`` cost 2.5 ms of CPU a sample (about 5% of a core) against 0.8 ms for the walk, and
    that cost fell on a job using both cores but not on a single-process one. Kernels built without
    ``children`` files get the full scan of ``/proc/<pid>/stat``."""
    if not _HAS_CHILDREN_FILES:
        return _scanned_tree_rss_kib(root)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1])
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # the process ended since it was listed: it holds no memory now
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                    stack.extend(int(child) for child in fh.read().split())
            except OSError:
                pass  # the thread ended: its children, if any, were handed to another thread or reaper
    return total * _PAGE_KIB


def _scanned_tree_rss_kib(root: int) -> int:
    """``_tree_rss_kib`` by reading every process's ``stat`` (parent and resident pages)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total * _PAGE_KIB


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_HAS_CHILDREN_FILES = os.path.exists("/proc/thread-self/children")


def run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process and its workers; raises if it fails.

    Peak RSS is the larger of the child's own high-water mark (``os.wait4``) and the highest sum over the
    process tree sampled every 50 ms, so a job that fans out to worker processes is charged for all of
    them together."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss_kib(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = child.stderr.read()  # drained while waiting, so a chatty child cannot block on a full pipe
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{argv[2]} failed ({child.returncode}): {stderr.decode()[-1500:]}")
    return wall, max(usage.ru_maxrss, peak[0]) / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="worker processes for this pipeline (DirectRunner multi-processing); 1 = in-process")
    parser.add_argument("--layout", choices=["hourly", "tenant"], default="hourly",
                        help="hourly: year=/month=/day=/hour=; tenant: tenant_id=<t>/ in front of that (one "
                             "partition per tenant and hour, to see memory against the number of tenants)")
    parser.add_argument("--only", action="append", choices=["beamhouse", "streaming", "plain", "duckdb"],
                        help="run only these (repeatable)")
    args = parser.parse_args(argv)
    # Every run starts from compiled modules, as the image's (and any non-editable) install has them and as
    # Python leaves them after a first run, unless PYTHONDONTWRITEBYTECODE is set (it is on the machine the
    # README's figures come from): each of the job's three processes would compile the project's modules
    # again, about 0.15-0.2 s apiece, on every run.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("pipelines", "transforms", "benchmarks"):
        compileall.compile_dir(os.path.join(root, package), quiet=1)
    work = tempfile.mkdtemp(prefix="beamhouse-compare-")
    try:
        # Generated in a child: this process stays small, so no child inherits a large memory high-water
        # mark (Linux keeps ru_maxrss across fork and exec).
        data = os.path.join(work, "events.ndjson")
        subprocess.run([sys.executable, "-m", "tests.eventgen", f"--events={args.events}", "--seed=1",
                        f"--tenants={args.tenants}", "--no_bad", "--source_id=bench", f"--out={data}"], check=True)
        config = os.path.join(work, "integrations.json")
        py = sys.executable
        workers = [] if args.workers <= 1 else ["--direct_running_mode=multi_processing",
                                                 f"--direct_num_workers={args.workers}"]
        layout = "year={yyyy}/month={MM}/day={dd}/hour={HH}"
        if args.layout == "tenant":
            layout = "tenant_id={tenant_id}/" + layout
        tools = {
            "beamhouse": lambda out: [py, "-m", "pipelines.deliver", f"--integrations={config}", f"--input={data}",
                                      f"--dead_letter={out}/dead", "--runner=FnApiRunner", *workers],
            # The same job fed one element per event, as a streaming source delivers them.
            "streaming": lambda out: [py, "-m", "pipelines.deliver", f"--integrations={config}", f"--input={data}",
                                      f"--dead_letter={out}/dead", "--runner=FnApiRunner", "--per_line_input",
                                      *workers],
            "plain": lambda out: [py, "-m", "benchmarks.plain_beam", f"--input={data}", f"--output={out}",
                                  "--runner=FnApiRunner"],
            "duckdb": lambda out: [py, "-m", "benchmarks.duckdb_convert", f"--input={data}", f"--output={out}"],
        }
        chosen = args.only or list(tools)
        results = {name: ([], []) for name in chosen}
        for r in range(args.rounds):
            for name in chosen:
                if name in ("beamhouse", "streaming"):  # a fresh lake each run: a re-run finds every file present
                    with open(config, "wb") as fh:
                        fh.write(orjson.dumps([{"source_id": "bench", "vendor": "files", "name": "lake", "config": {
                            "path": os.path.join(work, f"lake-{name}{r}"), "file_format": "parquet",
                            "batch_size": 100_000, "partition_by": layout, "consent": {"require": ["analytics"]}}}]))
                os.sync()  # the previous run's writes (and the input's) are on disk before the clock starts
                wall, rss = run(tools[name](os.path.join(work, f"{name}{r}")))
                for leftover in (f"{name}{r}", f"lake-{name}{r}"):
                    shutil.rmtree(os.path.join(work, leftover), ignore_errors=True)
                results[name][0].append(wall)
                results[name][1].append(rss)
        n = args.events
        size_mb = os.path.getsize(data) / 1e6
        print(f"input: {n:,} events ({size_mb:.0f} MB NDJSON), {args.tenants} tenants, {args.layout} layout; "
              f"rounds: {args.rounds}; cores: {os.cpu_count()}; beamhouse workers: {args.workers}")
        medians = {}
        for name, (walls, rss) in results.items():
            medians[name] = statistics.median(walls)
            print(f"{name:10s} median {medians[name]:7.2f} s  {n / medians[name]:>10,.0f} events/s  "
                  f"peak RSS {max(rss):6.0f} MiB  (runs: {', '.join(f'{w:.1f}' for w in walls)})")
        for ours in ("beamhouse", "streaming"):
            for other in ("plain", "duckdb"):
                if ours in medians and other in medians:
                    print(f"{ours} vs {other}: {medians[other] / medians[ours]:.2f}x the throughput "
                          f"({medians[ours] / medians[other]:.2f}x the time)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
