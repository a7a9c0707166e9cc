"""Streaming from a real Kafka broker (KRaft, started by a fixture on 127.0.0.1) through Beam's Java
ReadFromKafka on the PrismRunner, the job run as users run it (``python -m pipelines.deliver --kafka_topic``,
which starts Beam's Kafka expansion service and Java worker pool from ``fetch kafka``): events, with re-sends
and bad lines, arrive once each in the lake and in DuckDB; a job killed mid-stream and started again neither
loses nor doubles anything, and every data file ends up in a report (the invariants)."""
from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pytest

from tests.eventgen import consented_ids, generate
from tests.guarantees.invariants import REPO, check_report_integrity, dead_letters

pytestmark = pytest.mark.timeout(900)
SOURCE = "src_kafka"


def _integrations(root: Path, duckdb_too: bool = False) -> Path:
    lake = {"source_id": SOURCE, "vendor": "files", "name": "Lake", "config": {
        "path": str(root / "lake"), "file_format": "json", "batch_size": 150, "batch_interval_seconds": 2,
        "consent": {"require": ["analytics"]}}}
    wh = {"source_id": SOURCE, "vendor": "duckdb", "name": "Warehouse", "config": {
        "path": str(root / "wh.duckdb"), "batch_size": 150, "batch_interval_seconds": 2,
        "consent": {"require": ["analytics"]}}}
    path = root / "i.json"
    path.write_bytes(orjson.dumps([lake, wh] if duckdb_too else [lake]))
    return path


def _start(root: Path, broker, topic: str, integrations: Path) -> subprocess.Popen:
    # Output to a file: a pipe nobody reads until the end fills up and stalls the job.
    log = open(root / f"job-{time.monotonic_ns()}.log", "w")
    job = subprocess.Popen([sys.executable, "-m", "pipelines.deliver", f"--integrations={integrations}",
                            f"--kafka_bootstrap_servers={broker.bootstrap}", f"--kafka_topic={topic}",
                            f"--dead_letter={root / 'dead'}"],  # no --runner: Prism is the default for Kafka
                           cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    job.log = log.name
    return job


def _output(job: subprocess.Popen) -> str:
    return Path(job.log).read_text()[-3000:]


def _lake_ids(root: Path) -> list[str]:
    lake = root / "lake"
    if not lake.exists():
        return []
    return [orjson.loads(x)["event_id"] for p in sorted(lake.rglob("*.json.gz"))
            if not p.relative_to(lake).parts[0].startswith("_") for x in gzip.decompress(p.read_bytes()).splitlines()]


def _wait_for(job: subprocess.Popen, root: Path, ids: set[str], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    got: list[str] = []
    while time.monotonic() < deadline:
        got = _lake_ids(root)
        if set(got) >= ids:
            return
        if job.poll() is not None:
            raise AssertionError(f"the job ended ({job.returncode}): {_output(job)}")
        time.sleep(1)
    raise AssertionError(f"not delivered within {seconds} s: {len(ids - set(got))} of {len(ids)} events")


def _reported(job: subprocess.Popen, root: Path, seconds: float = 60) -> None:
    """Wait until every data file is in a report (a batch's report follows its files)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lake = root / "lake"
        listed = {entry["path"] for p in (lake / "_reports").glob("*.report") for entry in orjson.loads(p.read_bytes())["files"]}
        on_disk = {p.relative_to(lake).as_posix() for p in lake.rglob("*.json.gz")
                   if not p.relative_to(lake).parts[0].startswith("_")}
        if on_disk <= listed:
            return
        time.sleep(1)
    raise AssertionError(f"{len(on_disk - listed)} data files in no report after {seconds} s: {_output(job)}")


def _stop(job: subprocess.Popen, sig=signal.SIGINT) -> str:
    job.send_signal(sig)
    try:
        job.wait(timeout=90)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()
    return _output(job)


def _every_data_file_reported(root: Path) -> None:
    lake = root / "lake"
    listed = check_report_integrity(lake)  # I3: each listed file exists with its size and sha256
    on_disk = sorted(p for p in lake.rglob("*.json.gz") if not p.relative_to(lake).parts[0].startswith("_"))
    assert sorted(listed) == on_disk  # and each data file is listed once (I2/I4: nothing unaccounted)


def test_events_published_to_kafka_reach_the_lake_and_duckdb_once_on_prism(tmp_path, kafka_broker):
    topic = f"events-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic)
    lines, truth = generate(n=300, seed=81, tenants=2, bad=True, source_id=SOURCE)
    kafka_broker.publish(topic, lines)
    want = consented_ids(truth)
    job = _start(tmp_path, kafka_broker, topic, _integrations(tmp_path, duckdb_too=True))
    try:
        _wait_for(job, tmp_path, want)
        _reported(job, tmp_path)
        time.sleep(4)  # two more batch intervals: nothing more, nothing twice
    finally:
        stderr = _stop(job)
    ids = _lake_ids(tmp_path)
    assert len(ids) == len(set(ids)) and set(ids) == want, stderr[-2000:]  # I1 + I2 over the lake
    _every_data_file_reported(tmp_path)
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        rows = [r[0] for r in con.execute("SELECT event_id FROM main.events").fetchall()]
    assert len(rows) == len(set(rows)) and set(rows) <= want  # what DuckDB holds, it holds once
    # every bad line is a dead letter with its reason (nothing bad silently dropped, nothing good dead-lettered)
    assert Counter(d["reason"] for d in dead_letters(tmp_path / "dead")) == truth["bad"]


def test_a_job_killed_mid_stream_and_started_again_neither_loses_nor_doubles(tmp_path, kafka_broker):
    topic = f"events-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic)
    parts = [generate(n=n, seed=seed, tenants=2, bad=False, source_id=SOURCE) for n, seed in
             ((200, 91), (200, 92), (150, 93))]
    integrations = _integrations(tmp_path)
    kafka_broker.publish(topic, parts[0][0])
    first = _start(tmp_path, kafka_broker, topic, integrations)
    try:
        _wait_for(first, tmp_path, consented_ids(parts[0][1]))
        kafka_broker.publish(topic, parts[1][0])
        time.sleep(3)  # part of it read, buffered or being written
    finally:
        first.send_signal(signal.SIGKILL)  # no drain, no clean-up: a crash
        first.wait()
    kafka_broker.publish(topic, parts[2][0])
    want = set().union(*(consented_ids(truth) for _, truth in parts))
    second = _start(tmp_path, kafka_broker, topic, integrations)
    try:
        _wait_for(second, tmp_path, want)
        _reported(second, tmp_path)
        time.sleep(4)
    finally:
        stderr = _stop(second)
    ids = _lake_ids(tmp_path)
    assert set(ids) == want, stderr[-2000:]  # I1: nothing lost
    assert len(ids) == len(set(ids))  # I2: nothing doubled, though the second job read the topic again
    _every_data_file_reported(tmp_path)  # the crashed job's files were adopted into a report


@pytest.mark.parametrize("runner, expected", [
    ("--runner=PrismRunner", "python -m pipelines.runtime fetch kafka"),
    ("--runner=BundleBasedDirectRunner", "cannot run Beam's Java KafkaIO; use --runner=PrismRunner"),
])
def test_a_kafka_job_that_cannot_run_is_refused_at_start_saying_why(tmp_path, runner, expected):
    from tests.guarantees.invariants import deliver

    done = deliver(f"--integrations={_integrations(tmp_path)}", "--kafka_bootstrap_servers=127.0.0.1:9",
                   "--kafka_topic=events", f"--dead_letter={tmp_path / 'dead'}", runner,
                   env={"BEAMHOUSE_RUNTIME_DIR": str(tmp_path / "empty"), "HOME": str(tmp_path / "home")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in done.stderr
    assert not (tmp_path / "lake").exists()  # refused before any work
