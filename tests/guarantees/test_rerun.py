"""Exactly once across runs: re-runs over a grown input, events without any time, and runs killed at any
point then run again. Through python -m pipelines.deliver on the FnApiRunner; every test ends with the
invariants (I1 conservation, I2 no duplicate, I3 report integrity, I4 no overwrite), read back through the
files and reports on disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import duckdb
import orjson

from tests.eventgen import consented_ids, generate
from tests.guarantees.invariants import REPO, check_conservation, check_no_duplicate, deliver, reports
from transforms import ledger

SOURCE = "src_example"


def integrations(root):
    consent = {"require": ["analytics"]}
    return [
        {"source_id": SOURCE, "vendor": "files", "name": "Lake", "config": {
            "path": str(root / "lake"), "file_format": "parquet", "consent": consent, "batch_size": 40}},
        {"source_id": SOURCE, "vendor": "files", "name": "Archive", "config": {
            "path": str(root / "archive"), "file_format": "json", "compression": "gzip", "partition_by": "{date}"}},
        {"source_id": SOURCE, "vendor": "files", "name": "Tenants", "config": {
            "path": str(root / "tenants"), "file_format": "csv", "compression": "none", "batch_size": 100,
            "partition_by": "tenant_id={tenant_id}/{date}", "properties": {"exclude": ["context.ip"]}}},
        {"source_id": SOURCE, "vendor": "duckdb", "name": "Warehouse", "config": {
            "path": str(root / "wh.duckdb"), "table": "events", "consent": consent}},
    ]


def untimed(n: int) -> list[bytes]:
    """Events with neither timestamp nor receivedAt (their time is the input file's)."""
    return [orjson.dumps({"type": "track", "event": "Untimed", "anonymousId": f"u{i}", "messageId": f"untimed-{i}",
                          "context": {"tenant_id": "tenant-0", "consent": {"analytics": True}}}) for i in range(n)]


def snapshot(root):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.endswith((".wal", ".duckdb")) and p.name != "summary.json"}


def prepare(root, n: int, seed: int, tenants: int):
    """The integrations file and a first input file of ``n`` generated events; returns ``(lines, truth)``."""
    (root / "in").mkdir()
    (root / "i.json").write_bytes(orjson.dumps(integrations(root)))
    lines, truth = generate(n, seed=seed, tenants=tenants, bad=False, source_id=SOURCE)
    (root / "in" / "a.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return lines, truth


def deliver_argv(root, dead: str = "dead", summary: str = "summary.json") -> list[str]:
    return [sys.executable, "-m", "pipelines.deliver", f"--integrations={root / 'i.json'}",
            f"--input={root / 'in' / '*.ndjson'}", f"--dead_letter={root / dead}", f"--summary={root / summary}",
            "--runner=FnApiRunner"]


def run(root, *extra):
    argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in' / '*.ndjson'}",
            f"--dead_letter={root / 'dead'}", f"--summary={root / 'summary.json'}", *extra]
    done = deliver(*argv)
    assert done.returncode == 0, done.stderr
    return orjson.loads((root / "summary.json").read_bytes())


def check_all(root, truth_ids, consented, lines: int):
    summary = orjson.loads((root / "summary.json").read_bytes())
    check_conservation(summary, input_events=lines)
    assert set(check_no_duplicate(root / "lake")) == consented
    assert set(check_no_duplicate(root / "archive")) == truth_ids
    assert set(check_no_duplicate(root / "tenants")) == truth_ids
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    rows = con.execute("SELECT event_id FROM events").fetchall()
    con.close()
    assert len(rows) == len({r[0] for r in rows}) and {r[0] for r in rows} == consented
    return summary


def test_a_rerun_over_a_grown_input_delivers_only_the_new_events(tmp_path):
    root = tmp_path
    (root / "in").mkdir()
    (root / "i.json").write_bytes(orjson.dumps(integrations(root)))
    first, truth = generate(1500, seed=11, tenants=3, bad=False, source_id=SOURCE)
    (root / "in" / "a.ndjson").write_bytes(b"\n".join(first + untimed(5)) + b"\n")
    run(root)
    before = snapshot(root)
    # a late file: 100 events over the same three days (the partitions the first run wrote), and more untimed
    late, late_truth = generate(100, seed=12, tenants=3, bad=False, source_id=SOURCE)
    (root / "in" / "b.ndjson").write_bytes(b"\n".join(late + untimed(8)) + b"\n")
    ids = set(truth["unique"]) | set(late_truth["unique"]) | {f"untimed-{i}" for i in range(8)}
    consented = consented_ids(truth) | consented_ids(late_truth) | {f"untimed-{i}" for i in range(8)}
    lines = len(first) + len(late) + 5 + 8
    summary = run(root)
    check_all(root, ids, consented, lines)
    after = snapshot(root)
    assert {p: after[p] for p in before} == before  # I4: nothing the first run wrote was rewritten
    assert summary["integrations"]["lake"]["already_delivered"] > 0
    # and once more, a day later for the untimed events' sake: nothing at all is written
    summary = run(root)
    assert snapshot(root) == after
    check_all(root, ids, consented, lines)
    for iid in ("lake", "archive", "tenants"):
        assert "files" not in summary["integrations"][iid]


def test_a_run_stopped_between_publishing_and_its_report_is_adopted_not_repeated(tmp_path):
    # The state a kill leaves between a file's publication and the delivery report: files and their ledger
    # entries present, no report and no markers. The next run lists those files in its report once.
    root = tmp_path
    first, truth = prepare(root, 600, seed=21, tenants=2)
    run(root)
    for dest in ("lake", "archive", "tenants"):
        for report in (root / dest / "_reports").glob("*"):
            report.unlink()
        for marker in (root / dest / ledger.LEDGER_DIR).rglob("*.reported"):
            marker.unlink()
    late, late_truth = generate(50, seed=22, tenants=2, bad=False, source_id=SOURCE)
    (root / "in" / "b.ndjson").write_bytes(b"\n".join(late) + b"\n")
    summary = run(root)
    assert summary["integrations"]["lake"]["files_adopted"] > 0
    check_all(root, set(truth["unique"]) | set(late_truth["unique"]),
              consented_ids(truth) | consented_ids(late_truth), len(first) + len(late))
    listed = [f["path"] for r in reports(root / "lake") for f in r["files"]]
    assert len(listed) == len(set(listed))  # each file in exactly one report


def test_killed_runs_then_a_rerun_lose_and_double_nothing(tmp_path):
    root = tmp_path
    lines, truth = prepare(root, 6000, seed=31, tenants=3)
    argv = deliver_argv(root)
    # Kill at three points of a run: as the first lake file appears, with some published, and mid-reports.
    for wait_for in (1, 40, 120):
        job = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            if sum(1 for _ in (root / "lake").rglob("*.parquet")) >= wait_for:
                break
            time.sleep(0.02)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    run(root)
    check_all(root, set(truth["unique"]), consented_ids(truth), len(lines))


def test_two_runs_of_the_same_input_at_once_deliver_each_event_once(tmp_path):
    root = tmp_path
    lines, truth = prepare(root, 3000, seed=41, tenants=3)
    jobs = [subprocess.Popen(deliver_argv(root, f"dead{n}", f"summary{n}.json"), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in (1, 2)]
    for job in jobs:
        assert job.wait(timeout=600) == 0, job.stderr.read().decode()[-2000:]
    for n in (1, 2):
        check_conservation(orjson.loads((root / f"summary{n}.json").read_bytes()), input_events=len(lines))
    (root / "summary.json").write_bytes((root / "summary1.json").read_bytes())
    check_all(root, set(truth["unique"]), consented_ids(truth), len(lines))
