"""Streaming delivery on the BundleBasedDirectRunner (and, where a test takes ``runner``, on Prism) with
TestStream: both batch limits (size and interval),
the idle flush, de-duplication, late events into their old partition, too-late events as dead letters."""
from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
import orjson
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines import deliver
from tests.conftest import runner_argv
from transforms.integrations import validate_integrations
from transforms.parse import ParseSettings
from transforms.profiles import statsig

pytestmark = pytest.mark.timeout(600)  # the first Prism test may fetch Prism (go install, about a minute)
T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=timezone.utc)  # arrival of the first events


def event(i: int, at: datetime, received: datetime | None = None, consent: bool = True) -> bytes:
    return orjson.dumps({"type": "track", "event": "Order Completed", "anonymousId": f"anon-{i}",
                         "messageId": f"m-{i}", "timestamp": at.isoformat().replace("+00:00", "Z"),
                         "receivedAt": (received or at).isoformat().replace("+00:00", "Z"),
                         "context": {"tenant_id": "t1", "consent": {"analytics": consent}},
                         "properties": {"total": i}})


def arrive(lines, at: datetime):
    return [TimestampedValue(line, at.timestamp()) for line in lines]


def files_in(root: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted(root.rglob("*.json.gz")):
        rel = path.relative_to(root).as_posix()
        out[rel] = [orjson.loads(x)["event_id"] for x in gzip.decompress(path.read_bytes()).splitlines()]
    return out


def run_stream(tmp_path, stream: TestStream, batch_size=5, interval=10.0, runner=("BundleBasedDirectRunner", None)):
    integrations, errors = validate_integrations([{
        "source_id": "src", "vendor": "files", "name": "Lake", "config": {
            "path": str(tmp_path / "lake"), "file_format": "json", "batch_size": batch_size,
            "batch_interval_seconds": interval, "consent": {"require": ["analytics"]},
            "partition_by": "date={date}/hour={HH}"}}])
    assert not errors
    settings = ParseSettings(source_id="src", consent_purposes=("analytics",))
    options = PipelineOptions(runner_argv(runner[0], runner[1], streaming=True))
    with beam.Pipeline(options=options) as p:
        lines = p | stream
        out = deliver.build_pipeline(p, [], integrations, settings, str(tmp_path / "dead"), stream={
            "source": lines, "dedup_window_seconds": 3600, "allowed_lateness_seconds": 86_400,
            "clock": lambda: 0})  # TestStream's processing time starts at 0
    return out


@pytest.fixture(params=["BundleBasedDirectRunner", "PrismRunner"])
def runner(request):
    """The streaming engines these TestStream tests run on: the DirectRunner's and Prism."""
    location = request.getfixturevalue("prism") if request.param == "PrismRunner" else None
    return request.param, location


def test_batches_obey_size_and_interval_and_flush_when_idle(tmp_path, runner):
    first = [event(i, T0 + timedelta(seconds=i)) for i in range(10)]
    idle = [event(100 + i, T0 + timedelta(minutes=1, seconds=i)) for i in range(2)]
    later = [event(200 + i, T0 + timedelta(minutes=2, seconds=i)) for i in range(3)]
    stream = (TestStream()
              .advance_watermark_to(T0.timestamp())
              .add_elements(arrive(first, T0))                       # 10 events at once: two full batches
              .advance_processing_time(1)
              .add_elements(arrive(idle, T0 + timedelta(minutes=1)))  # 2 events, then nothing...
              .advance_processing_time(30)                            # ...the interval (10 s) flushes them
              .add_elements(arrive(later + [first[0]], T0 + timedelta(minutes=2)))  # + a duplicate
              .advance_processing_time(30)
              .advance_watermark_to_infinity())
    run_stream(tmp_path, stream, runner=runner)
    files = files_in(tmp_path / "lake")
    batches = list(files.values())
    assert all(len(b) <= 5 for b in batches)                           # never more than batch_size per file
    ids = sorted(i for b in batches for i in b)
    assert ids == sorted([f"m-{i}" for i in range(10)] + ["m-100", "m-101"] + [f"m-{200 + i}" for i in range(3)])
    got = sorted(sorted(b) for b in batches)
    reports = [orjson.loads(p.read_bytes()) for p in (tmp_path / "lake" / "_reports").glob("*.report")]
    assert sorted(f["path"] for r in reports for f in r["files"]) == sorted(files)
    if runner[0] == "PrismRunner":
        # Prism 2.77 does not fire GroupIntoBatches' processing-time flush under TestStream's synthetic
        # clock (apache/beam#30083): the idle pair waits for the next events, and the drain flushes the
        # rest. Nothing is lost or doubled and no file exceeds batch_size; the interval is checked on the
        # DirectRunner below (docs/runners.md says so).
        assert sorted(len(b) for b in got) == [5, 5, 5]
        return
    # Size: the first ten made two batches of five at once. Interval: the idle pair was flushed on its own
    # (not held until the next events came), and so were the last three when the stream went quiet.
    assert sorted(len(b) for b in got) == [2, 3, 5, 5]
    assert ["m-100", "m-101"] in got and ["m-200", "m-201", "m-202"] in got
    assert len(reports) >= 3  # each batch firing wrote a delivery report naming its files


def test_drain_delivers_a_batch_still_buffered(tmp_path, runner):
    """Drain (Dataflow's drain, Flink's stop-with-savepoint --drain) advances the watermark to infinity: a
    batch still buffered - under batch_size and inside its interval, with no processing time passing - is
    delivered then, with its report, not lost."""
    lines = [event(i, T0 + timedelta(seconds=i)) for i in range(3)]
    stream = (TestStream()
              .advance_watermark_to(T0.timestamp())
              .add_elements(arrive(lines, T0))
              .advance_watermark_to_infinity())
    run_stream(tmp_path, stream, batch_size=100, interval=3600, runner=runner)
    files = files_in(tmp_path / "lake")
    assert sorted(i for ids in files.values() for i in ids) == ["m-0", "m-1", "m-2"] and len(files) == 1
    assert len(list((tmp_path / "lake" / "_reports").glob("*.report"))) == 1


def test_late_events_land_in_their_old_partition_and_too_late_ones_are_dead_letters(tmp_path, runner):
    on_time = [event(i, T0 + timedelta(seconds=i)) for i in range(3)]
    arrived = T0 + timedelta(minutes=5)
    late = [event(300, T0 - timedelta(hours=5), arrived)]      # received 5 h after it happened: within a day
    too_late = [event(400, T0 - timedelta(days=3), arrived)]   # beyond the allowed lateness
    stream = (TestStream()
              .advance_watermark_to(T0.timestamp())
              .add_elements(arrive(on_time, T0))
              .advance_processing_time(30)
              .add_elements(arrive(late + too_late, T0 + timedelta(minutes=5)))
              .advance_processing_time(30)
              .advance_watermark_to_infinity())
    run_stream(tmp_path, stream, runner=runner)
    files = files_in(tmp_path / "lake")
    by_partition = {}
    for rel, ids in files.items():
        by_partition.setdefault(rel.rsplit("/", 1)[0], []).extend(ids)
    assert by_partition == {"date=2026-03-02/hour=10": ["m-0", "m-1", "m-2"], "date=2026-03-02/hour=05": ["m-300"]}
    dead = [orjson.loads(x) for p in (tmp_path / "dead").rglob("*.ndjson") for x in p.read_bytes().splitlines()]
    assert [(d["reason"], d["event_id"]) for d in dead] == [("too_late", "m-400")]


def test_partitions_and_statsig_days_complete_only_once_received_data_passes_their_end(tmp_path):
    """Completion in streaming (issue 6.5, issue 8's Statsig signal): a partition gets its marker, and a
    Statsig day its finished_date, in the first batch whose data was received past the partition's end
    plus the lateness - not before (a late event inside the lateness still joins the day), and an event
    for a completed partition afterwards is a dead letter, never a file beside the marker."""
    day_end = datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc)  # 2026-03-02 ends at 08:00Z in Los Angeles
    batches = [  # (arrival, events): each arrival is one batch
        (day_end - timedelta(minutes=30), [event(i, day_end - timedelta(minutes=30, seconds=-i)) for i in range(3)]),
        # received past the end of hour 07 and of the day, not past the lateness: nothing completes
        (day_end + timedelta(minutes=15), [event(5, day_end + timedelta(minutes=10), day_end + timedelta(minutes=15))]),
        # a late event inside the lateness still joins hour 07 and the day
        (day_end + timedelta(minutes=30), [event(10, day_end - timedelta(minutes=10), day_end + timedelta(minutes=30))]),
        # received past 09:00Z: hour 07 and the day are complete
        (day_end + timedelta(minutes=90), [event(20, day_end + timedelta(minutes=89), day_end + timedelta(minutes=90))]),
        # now too late for them (not for the stream: 1 day), so dead letters
        (day_end + timedelta(minutes=100), [event(30, day_end - timedelta(minutes=1), day_end + timedelta(minutes=100))]),
    ]
    stream = TestStream().advance_watermark_to(batches[0][0].timestamp())
    for at, lines in batches:
        stream = stream.add_elements(arrive(lines, at)).advance_processing_time(30)
    stream = stream.advance_watermark_to_infinity()
    integrations, errors = validate_integrations([
        {"source_id": "src", "vendor": "files", "name": "Lake", "config": {
            "path": str(tmp_path / "lake"), "file_format": "json", "batch_interval_seconds": 10,
            "partition_by": "date={date}/hour={HH}", "completion_marker": "_SUCCESS",
            "completion_lateness_seconds": 3600}},
        {"source_id": "src", "vendor": "files", "name": "Statsig", "config": {
            "path": str(tmp_path / "statsig"), "profile": "statsig", "batch_interval_seconds": 10,
            "statsig": {"allowed_lateness_seconds": 3600,
                        "metrics": [{"name": "orders", "event": "Order Completed", "aggregate": "count",
                                     "id_type": "stable_id"}]}}}])
    assert not errors
    settings = ParseSettings(source_id="src")
    with beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])) as p:
        deliver.build_pipeline(p, [], integrations, settings, str(tmp_path / "dead"), stream={
            "source": p | stream, "dedup_window_seconds": 3600, "allowed_lateness_seconds": 86_400,
            "clock": lambda: 0})

    lake = tmp_path / "lake"
    markers = {m.parent.relative_to(lake).as_posix(): orjson.loads(m.read_bytes()) for m in lake.rglob("_SUCCESS")}
    assert sorted(markers) == ["date=2026-03-03/hour=07"]  # hours 08 and 09 are still open
    hour7 = lake / "date=2026-03-03" / "hour=07"
    assert markers["date=2026-03-03/hour=07"]["partition"] == "date=2026-03-03/hour=07"
    assert sorted(markers["date=2026-03-03/hour=07"]["files"]) == sorted(p.name for p in hour7.glob("*.json.gz"))
    assert sorted(i for ids in files_in(hour7).values() for i in ids) == ["m-0", "m-1", "m-10", "m-2"]

    statsig_root = tmp_path / "statsig"
    assert [p.parent.name for p in (statsig_root / "signals").rglob("*.parquet")] == ["2026-03-02"]
    day = pq.read_table(statsig_root / "events" / "2026-03-02").to_pylist()
    assert sorted(r["timeuuid"] for r in day) == sorted(statsig.timeuuid(f"m-{i}") for i in (0, 1, 2, 10))
    metrics = pq.read_table(statsig_root / "metrics" / "2026-03-02").to_pylist()
    assert sum(r["metric_value"] for r in metrics) == 4  # the day's metrics include the late event
    assert not (statsig_root / "signals" / "2026-03-03").exists()  # received data has not passed its end

    dead = [orjson.loads(x) for p in (tmp_path / "dead").rglob("*.ndjson") for x in p.read_bytes().splitlines()]
    assert sorted((d["reason"], d["event_id"]) for d in dead) == [
        ("day_already_finished", "m-30"), ("partition_complete", "m-30")]


def test_watched_prefix_is_refused_on_the_local_streaming_engine(tmp_path, capsys):
    """--input_watch is built on fileio.MatchContinuously (a splittable DoFn): Dataflow, Flink and Prism (its
    default) run it; the DirectRunner's streaming engine cannot, so the job says so at start instead of failing
    in Beam. Likewise Pub/Sub's reader is runner-native, which Prism lacks."""
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "src", "vendor": "files", "name": "Lake",
                                                     "config": {"path": str(tmp_path / "lake")}}]))
    code = deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input_watch={tmp_path / 'in' / '*.ndjson'}",
                        "--runner=BundleBasedDirectRunner"])
    assert code == 2
    assert "--input_watch needs a runner with splittable DoFns" in capsys.readouterr().err
    code = deliver.run([f"--integrations={tmp_path / 'i.json'}", "--runner=PrismRunner",
                        "--input_subscription=projects/p/subscriptions/s"])
    assert code == 2
    assert "--input_subscription: Prism has no Pub/Sub reader" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_scheduled_sftp_export_sends_what_arrived_per_period_late_events_in_their_old_partition(tmp_path):
    """Seed 002's schedule: every 15 minutes everything that arrived since the previous export, split by
    event-time partition; a late event becomes a new file of its old partition, in the next generation."""
    import os
    import re

    from tests.servers.sftp_server import SFTPTestServer

    root = tmp_path / "sftp"
    (root / "out").mkdir(parents=True)
    server = SFTPTestServer(str(root), "export", password="pw-schedule").start()
    try:
        integrations, errors = validate_integrations([{"source_id": "src", "vendor": "sftp", "name": "Flow", "config": {
            "host": "127.0.0.1", "port": server.port, "username": "export", "password": "pw-schedule",
            "host_key": server.host_key_line, "path": "out", "export_name": "myExport", "partition": "hour",
            "file_format": "csv", "schedule_minutes": 15}}])
        assert not errors and integrations[0].config.batch_interval_seconds == 900
        first = [event(i, T0 + timedelta(minutes=i)) for i in range(6)]            # 10:00-10:05
        later = [event(50 + i, T0 + timedelta(minutes=20 + i)) for i in range(3)]  # 10:20-10:22
        late = [event(99, T0 - timedelta(minutes=30), T0 + timedelta(minutes=21))]  # belongs to 09:xx
        stream = (TestStream()
                  .advance_watermark_to(T0.timestamp())
                  .add_elements(arrive(first, T0))
                  .advance_processing_time(16 * 60)                          # first export
                  .add_elements(arrive(later + late, T0 + timedelta(minutes=21)))
                  .advance_processing_time(16 * 60)                          # second export
                  .advance_watermark_to_infinity())
        settings = ParseSettings(source_id="src", consent_purposes=())
        with beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])) as p:
            deliver.build_pipeline(p, [], integrations, settings, str(tmp_path / "dead"), stream={
                "source": p | stream, "dedup_window_seconds": 3600, "allowed_lateness_seconds": 86_400,
                "clock": lambda: 0})
        names = sorted(os.listdir(root / "out"))
        data = [n for n in names if n.endswith(".csv.gz")]
        reports = [orjson.loads((root / "out" / n).read_bytes()) for n in names if n.endswith("_delivery.report")]
        assert len(reports) == 2  # one generation per scheduled export
        hours = sorted(re.match(r"myExport_2026-03-02_(\d\d)_data_", n).group(1) for n in data)
        assert hours == ["09", "10", "10"]  # the late event: a new file in its old hour
        assert {f["path"] for r in reports for f in r["files"]} == set(data)  # as the server holds them
        per_report = sorted(sorted(re.match(r"^myExport_(\d{4}-\d\d-\d\d_\d\d)_data_", f["path"]).group(1)
                                   for f in r["files"]) for r in reports)
        assert per_report == [["2026-03-02_09", "2026-03-02_10"], ["2026-03-02_10"]]
    finally:
        server.stop()
