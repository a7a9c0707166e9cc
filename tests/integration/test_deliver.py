"""End to end on the FnApiRunner: generated events -> Parquet lake, gzip NDJSON archive, CSV tenant
layout, DuckDB. Ends with the delivery invariants (conservation, no duplicate, report integrity, no
overwrite on re-run)."""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pyarrow.dataset as ds
import pytest

from pipelines import deliver
from tests.eventgen import generate
from transforms.partitioning import decode_path_value

REPO = Path(__file__).resolve().parents[2]
RUNNER = "--runner=FnApiRunner"
EVIL_TENANTS = ["../../etc", "%2e%2e", "a/b", "_hidden", "nul\x00byte", ".."]


def integrations(root: Path) -> list[dict]:
    consent = {"require": ["analytics"]}
    return [
        {"source_id": "src_example", "vendor": "files", "name": "Lake", "config": {
            "path": str(root / "lake"), "file_format": "parquet", "consent": consent, "batch_size": 40}},
        {"source_id": "src_example", "vendor": "files", "name": "Archive", "config": {
            "path": str(root / "archive"), "file_format": "json", "compression": "gzip", "consent": consent}},
        {"source_id": "src_example", "vendor": "files", "name": "Tenants", "config": {
            "path": str(root / "tenants"), "file_format": "csv", "compression": "none",
            "partition_by": "tenant_id={tenant_id}/{date}", "properties": {"exclude": ["context.ip"]}}},
        {"source_id": "src_example", "vendor": "duckdb", "name": "Warehouse", "config": {
            "path": str(root / "wh.duckdb"), "table": "analytics.events", "consent": consent}},
        {"source_id": "src_example", "vendor": "files", "name": "Off", "enabled": False, "config": {"path": "x"}},
    ]


def evil_lines():
    out = []
    for n, tenant in enumerate(EVIL_TENANTS):
        out.append(orjson.dumps({"type": "track", "event": "Evil", "anonymousId": "e", "messageId": f"evil-{n}",
                                 "timestamp": "2026-01-29T10:00:00Z", "receivedAt": "2026-01-29T10:00:01Z",
                                 "context": {"tenant_id": tenant}}))
    # No tenant at all: the tenant layout cannot place it -> dead letter for that integration only.
    out.append(b'{"type":"track","event":"NoTenant","anonymousId":"e","messageId":"no-tenant",'
               b'"timestamp":"2026-01-29T10:00:00Z","receivedAt":"2026-01-29T10:00:01Z"}')
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("deliver")
    lines, truth = generate(n=1500, seed=11, tenants=4)
    lines += evil_lines()
    half = len(lines) // 2
    (root / "in").mkdir()
    (root / "in" / "a.ndjson").write_bytes(b"\n".join(lines[:half]) + b"\n\n")  # a blank line too
    with gzip.open(root / "in" / "b.ndjson.gz", "wb") as fh:
        fh.write(b"\r\n".join(lines[half:]) + b"\r\n")
    (root / "integrations.json").write_bytes(orjson.dumps(integrations(root)))
    argv = [f"--integrations={root / 'integrations.json'}", f"--input={root / 'in' / '*.ndjson'}",
            f"--input={root / 'in' / '*.ndjson.gz'}", f"--dead_letter={root / 'dead'}",
            f"--summary={root / 'summary.json'}", RUNNER]
    assert deliver.run(argv) == 0
    summary = orjson.loads((root / "summary.json").read_bytes())
    return {"root": root, "truth": truth, "argv": argv, "summary": summary, "lines": len(lines)}


def expected_consented(truth):
    return {k for k, v in truth["unique"].items() if v["consented"]}


def lake_rows(root: Path, name: str):
    if name == "archive":
        rows = []
        for path in sorted((root / "archive").rglob("*.json.gz")):
            rows += [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
        return rows
    return ds.dataset(root / name, format="parquet", partitioning="hive").to_table().to_pylist()


def test_each_destination_holds_exactly_the_unique_consented_events(run):
    want = expected_consented(run["truth"])
    con = duckdb.connect(str(run["root"] / "wh.duckdb"), read_only=True)
    warehouse = [r[0] for r in con.execute("SELECT event_id FROM analytics.events").fetchall()]
    for name, ids in [("lake", [r["event_id"] for r in lake_rows(run["root"], "lake")]),
                      ("archive", [r["event_id"] for r in lake_rows(run["root"], "archive")]),
                      ("duckdb", warehouse)]:
        assert len(ids) == len(set(ids)), f"{name}: duplicate event_id"  # I2
        assert set(ids) == want, name


def test_revenue_by_day_matches_to_the_cent(run):
    expected = defaultdict(Decimal)
    for facts in run["truth"]["unique"].values():
        if facts["consented"] and facts["total"] is not None:
            expected[facts["timestamp"].date().isoformat()] += facts["total"]
    con = duckdb.connect(str(run["root"] / "wh.duckdb"), read_only=True)
    got = dict(con.execute("""
        SELECT CAST("timestamp" AS DATE)::VARCHAR AS day,
               SUM(CAST(properties->>'$.total' AS DECIMAL(18, 2))) AS revenue
        FROM analytics.events WHERE event = 'Order Completed' GROUP BY day""").fetchall())
    assert got == dict(expected)
    lake = defaultdict(Decimal)
    for row in lake_rows(run["root"], "lake"):
        if row["event"] == "Order Completed":
            lake[row["timestamp"].date().isoformat()] += Decimal(str(orjson.loads(row["properties"])["total"]))
    assert dict(lake) == dict(expected)
    pages = con.execute("""SELECT context->>'$.page.url' AS url, COUNT(*) FROM analytics.events
                           WHERE type = 'page' GROUP BY url""").fetchall()
    want = defaultdict(int)
    for facts in run["truth"]["unique"].values():
        if facts["consented"] and facts["type"] == "page":
            want[facts["page_url"]] += 1
    assert dict(pages) == dict(want)


def test_partitions_match_event_time_in_utc(run):
    truth = run["truth"]["unique"]
    rows = lake_rows(run["root"], "lake")
    assert rows
    for row in rows:
        ts = truth[row["event_id"]]["timestamp"]
        assert row["timestamp"] == ts
        assert (int(row["year"]), int(row["month"]), int(row["day"]), int(row["hour"])) == \
               (ts.year, ts.month, ts.day, ts.hour)
    for path in (run["root"] / "lake").rglob("*.parquet"):
        assert re.fullmatch(r"events-\d{10}-[0-9a-f]{16}\.parquet", path.name)


def test_every_file_is_listed_in_a_report_and_matches(run):
    for name, pattern in [("lake", "*.parquet"), ("archive", "*.json.gz"), ("tenants", "*.csv")]:
        base = run["root"] / name
        data_files = {str(p.relative_to(base)) for p in base.rglob(pattern) if "_" != p.relative_to(base).parts[0][0]}
        listed = {}
        for report in (base / "_reports").glob("*_delivery.report"):
            for entry in orjson.loads(report.read_bytes())["files"]:
                listed[entry["path"]] = entry
        assert set(listed) == data_files, name  # I3: nothing unlisted, nothing missing
        for rel, entry in listed.items():
            data = (base / rel).read_bytes()
            assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert not list((base / "_beamhouse_tmp").iterdir())
    # batch_size caps events per file
    counts = [e["records"] for r in (run["root"] / "lake" / "_reports").glob("*") for e in orjson.loads(r.read_bytes())["files"]]
    assert max(counts) <= 40


def test_dead_letters_and_accounting(run):
    records = []
    for path in (run["root"] / "dead").glob("*.ndjson"):
        records += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    by_reason = defaultdict(int)
    for r in records:
        assert r["reason"] and r["stage"] and r["error"] and r["received_at"] and r["source_id"] == "src_example"
        assert "payload" in r or "payload_base64" in r
        by_reason[r["reason"]] += 1
    expected = dict(run["truth"]["bad"])
    expected["invalid_partition_value"] = 1  # the event with no tenant, in the tenant layout only
    assert dict(by_reason) == expected
    s = run["summary"]
    n_unique = len(run["truth"]["unique"]) + len(EVIL_TENANTS) + 1
    assert s["input"] == run["lines"] and s["blank_lines"] == 1
    assert s["duplicates"] == run["truth"]["duplicates"] and s["unique"] == n_unique
    assert s["balanced"] and set(s["integrations"]) == {"lake", "archive", "tenants", "warehouse"}
    for iid, e in s["integrations"].items():  # I1, per destination
        assert e["delivered"] + e["consent_dropped"] + s["duplicates"] + e["dead_lettered"] == s["input"], iid
    assert s["integrations"]["lake"]["delivered"] == len(expected_consented(run["truth"]))
    assert s["integrations"]["tenants"]["delivered"] == n_unique - 1
    assert s["integrations"]["tenants"]["consent_dropped"] == 0


def test_hostile_tenant_ids_stay_under_the_root(run):
    base = run["root"] / "tenants"
    tenants = set()
    for path in base.rglob("*.csv"):
        rel = path.relative_to(base)
        assert os.path.realpath(path).startswith(os.path.realpath(base) + os.sep)
        assert rel.parts[0].startswith("tenant_id=")
        tenants.add(decode_path_value(rel.parts[0][len("tenant_id="):]))
    assert set(EVIL_TENANTS) <= tenants  # encoded reversibly, not dropped
    assert not (run["root"] / "etc").exists()
    text = "".join(p.read_text() for p in base.rglob("*.csv"))
    assert "10.0." not in text  # context.ip excluded by the property selection


def test_second_run_changes_nothing(run):
    def snapshot():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in run["root"].rglob("*")
                      if p.is_file() and p.name not in ("summary.json",) and not p.name.endswith(".wal"))
    before = snapshot()
    assert deliver.run(run["argv"]) == 0
    assert snapshot() == before  # I4: no file rewritten, none added
    s = orjson.loads((run["root"] / "summary.json").read_bytes())
    assert s["integrations"]["warehouse"]["rows_inserted"] == 0
    # every event is in the lake already (the ledger): nothing cut into files again
    lake = s["integrations"]["lake"]
    assert "files" not in lake and lake["already_delivered"] == lake["delivered"] > 0
    con = duckdb.connect(str(run["root"] / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM analytics.events").fetchone()[0] == len(expected_consented(run["truth"]))


def test_invalid_configuration_exits_2_listing_every_problem(tmp_path, capsys):
    bad = [{"source_id": "s", "vendor": "files", "name": "A", "config": {"path": "x", "batch_size": -1}},
           {"source_id": "s", "vendor": "files", "name": "B", "config": {"file_format": "xml"}}]
    (tmp_path / "bad.json").write_bytes(orjson.dumps(bad))
    code = deliver.run([f"--integrations={tmp_path / 'bad.json'}", f"--input={tmp_path / 'none*.ndjson'}", RUNNER])
    assert code == 2
    err = capsys.readouterr().err
    for expected in ["$[0].config.batch_size", "$[1].config.path", "$[1].config.file_format", "no file matches"]:
        assert expected in err


def test_missing_integrations_flag_exits_2_and_other_pipelines_still_run(tmp_path, capsys):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    code = deliver.run([f"--input={tmp_path / 'x.ndjson'}", RUNNER])
    assert code == 2
    assert "--integrations: the integrations file is required" in capsys.readouterr().err
    # The delivery options class is registered with Beam once imported; it must not make an unrelated
    # pipeline in the same process fail its option parsing (it did while --integrations was required).
    with beam.Pipeline(runner="FnApiRunner") as p:
        assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x * 2), equal_to([2, 4]))


def test_unwritable_dead_letter_path_fails_the_run(tmp_path):
    (tmp_path / "in.ndjson").write_bytes(b"{broken\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps(
        [{"source_id": "s", "vendor": "files", "name": "A", "config": {"path": str(tmp_path / "lake")}}]))
    (tmp_path / "dead").write_text("a file, not a folder")
    code = deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                        f"--dead_letter={tmp_path / 'dead'}", RUNNER])
    assert code == 1


def readme_command(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    for line in text.splitlines():
        if line.startswith("python3 -m venv .venv") and marker in line:
            return line
    raise AssertionError(f"README has no command running {marker}")


def test_readme_example_command_runs_as_written(tmp_path):
    command = readme_command("pipelines.deliver")
    # The install part is what .ci/run just did; run the job part exactly, in a copy of the repo's examples.
    job = command[command.index(".venv/bin/python -m pipelines.deliver"):]
    argv = shlex.split(job)
    argv[0] = sys.executable
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    result = subprocess.run(argv + [RUNNER], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["balanced"] and summary["integrations"]["local_lake"]["delivered"] > 0
    assert list((tmp_path / "out" / "lake").rglob("*.parquet"))
    con = duckdb.connect(str(tmp_path / "out" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == summary["integrations"]["warehouse"]["delivered"]
    # The warehouse integration excludes context.ip and traits.email.
    assert con.execute("SELECT count(*) FROM events WHERE context->>'$.ip' IS NOT NULL "
                       "OR traits->>'$.email' IS NOT NULL").fetchone()[0] == 0
    assert "pytest" in readme_command("pytest") and readme_command("pytest") in (REPO / ".ci" / "run").read_text()


def test_multi_process_workers_and_the_unspilled_shuffle_deliver_the_same(tmp_path):
    """FnApiRunner with two worker processes (which read batches that the other one spilled), and in one
    process with the shuffle kept in memory (``--no_shuffle_spill``): same files, same rows, balanced
    accounting, and nothing left in the spill directory."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    spill = tmp_path / "spill"
    spill.mkdir()
    argv = ["--integrations=examples/integrations.json", "--input=examples/events/*.ndjson",
            "--dead_letter=out/dead_letters", "--summary=out/summary.json", RUNNER, f"--shuffle_spill_dir={spill}"]
    runs = [([], "single"), (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], "multi"),
            (["--no_shuffle_spill"], "unspilled")]
    for extra, name in runs:
        cwd = tmp_path / name
        cwd.mkdir()
        shutil.copytree(tmp_path / "examples", cwd / "examples")
        result = subprocess.run([sys.executable, "-m", "pipelines.deliver", *argv, *extra], cwd=cwd,
                                capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr[-2000:]
        assert list(spill.iterdir()) == []

    def files(root):
        return sorted((str(p.relative_to(root)), p.read_bytes()) for p in (root / "out" / "lake").rglob("*.parquet"))
    assert files(tmp_path / "single") and files(tmp_path / "single") == files(tmp_path / "multi") == files(
        tmp_path / "unspilled")
    for name in ("multi", "unspilled"):
        s = orjson.loads((tmp_path / name / "out" / "summary.json").read_bytes())
        integ = s["integrations"]
        assert s["balanced"] and integ["warehouse"]["rows_inserted"] == integ["local_lake"]["delivered"]


def test_a_local_batch_run_spills_its_shuffles_and_a_remote_one_may_not(tmp_path, monkeypatch, capsys):
    """The local run passes every batch that crosses a shuffle through a file (dedup, and each file
    integration's partition grouping); ``--shuffle_spill_dir`` with a remote runner is a configuration error."""
    from transforms import coders

    spilled = []
    real = coders._SpillFn.process

    def counting(self, kv):
        spilled.append(kv[1].num_rows)
        return real(self, kv)

    monkeypatch.setattr(coders._SpillFn, "process", counting)  # in-process runner: the same class object
    lines, _ = generate(n=300, seed=5, tenants=3)
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    config = [{"source_id": "src_example", "vendor": "files", "name": "Lake", "config": {
        "path": str(tmp_path / "lake"), "file_format": "parquet"}}]
    (tmp_path / "integrations.json").write_bytes(orjson.dumps(config))
    argv = [f"--integrations={tmp_path / 'integrations.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'reports' / 'summary.json'}"]
    assert deliver.run(argv + [RUNNER]) == 0
    summary = orjson.loads((tmp_path / "reports" / "summary.json").read_bytes())  # its folder made on the way
    # Every parsed event crossed the dedup shuffle as a file, every delivered one the partition shuffle, and
    # every dead letter the dead letters' grouping.
    assert sum(spilled) == (summary["unique"] + summary["duplicates"] + summary["integrations"]["lake"]["delivered"]
                            + summary["dead_letters"]["total"])
    assert deliver.run(argv + ["--runner=DataflowRunner", f"--shuffle_spill_dir={tmp_path}"]) == 2
    assert "--shuffle_spill_dir: only local batch runs" in capsys.readouterr().err


def _holds_table(obj, depth=0) -> bool:
    import pyarrow as pa
    if isinstance(obj, pa.Table):
        return True
    return depth < 3 and isinstance(obj, (tuple, list)) and any(_holds_table(x, depth + 1) for x in obj[:4])


def test_event_tables_are_never_pickled(tmp_path, monkeypatch):
    """Every PCollection of tables is typed, so Beam encodes (and sizes, for its metrics) tables with the
    Arrow coder. An untyped one falls back to pickle: a full copy of the table on every encode and on every
    size sample, which cost ~2 s and hundreds of MB per million events."""
    import pickle

    real_dumps = pickle.dumps

    def guarded(obj, *args, **kwargs):
        if _holds_table(obj):
            raise AssertionError(f"an Arrow table was pickled ({type(obj).__name__})")
        return real_dumps(obj, *args, **kwargs)

    lines, _ = generate(n=300, seed=5, tenants=3)
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "integrations.json").write_bytes(orjson.dumps(integrations(tmp_path)))
    monkeypatch.setattr(pickle, "dumps", guarded)
    assert deliver.run([f"--integrations={tmp_path / 'integrations.json'}", f"--input={tmp_path / 'in.ndjson'}",
                        f"--dead_letter={tmp_path / 'dead'}", RUNNER]) == 0


def test_one_element_per_line_delivers_what_blocks_deliver(tmp_path):
    """``--per_line_input`` (Beam's text reader, one element per event) and the block reader deliver the
    same events to the same files, from several inputs (one gzipped) with blank lines and CRLF."""
    lines, _ = generate(n=400, seed=9, tenants=2)
    (tmp_path / "a.ndjson").write_bytes(b"\n".join(lines[:200]) + b"\n\n")
    with gzip.open(tmp_path / "b.ndjson.gz", "wb") as fh:
        fh.write(b"\r\n".join(lines[200:]) + b"\r\n")
    results = {}
    for mode in ("blocks", "lines"):
        root = tmp_path / mode
        config = [{"source_id": "src_example", "vendor": "files", "name": "Lake", "config": {
            "path": str(root / "lake"), "file_format": "json", "compression": "none"}}]
        (tmp_path / f"{mode}.json").write_bytes(orjson.dumps(config))
        argv = [f"--integrations={tmp_path / f'{mode}.json'}", f"--input={tmp_path / '*.ndjson'}",
                f"--input={tmp_path / '*.ndjson.gz'}", f"--dead_letter={root / 'dead'}",
                f"--summary={root / 'summary.json'}", RUNNER] + (["--per_line_input"] if mode == "lines" else [])
        assert deliver.run(argv) == 0
        files = {str(p.relative_to(root / "lake")): p.read_bytes() for p in (root / "lake").rglob("*.json")
                 if "_reports" not in p.parts}
        summary = orjson.loads((root / "summary.json").read_bytes())
        for entry in summary["integrations"].values():
            assert entry.pop("destination") == f"file://{root / 'lake'}/"  # each run's own folder
        results[mode] = (files, summary["input"], summary["integrations"])
    assert results["blocks"][0] and results["blocks"] == results["lines"]
