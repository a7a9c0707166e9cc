"""History regeneration (seed 002) on the FnApiRunner: live delivery to an NDJSON archive and an export,
then ``pipelines.regenerate`` over one day into a separate location; the result must match the live
export's events for that day, each exactly once, with its own reports."""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import orjson

from pipelines import deliver, regenerate
from tests.eventgen import generate
from tests.servers.sftp_server import SFTPTestServer
from transforms import ledger

RUNNER = "--runner=FnApiRunner"
DAY = "2026-01-29"


def integrations(root: Path, export: dict) -> list[dict]:
    return [{"source_id": "src_abc123", "vendor": "files", "name": "Archive",
             "config": {"path": str(root / "archive"), "file_format": "json", "compression": "gzip"}}, export]


def files_export(root: Path) -> dict:
    return {"source_id": "src_abc123", "vendor": "files", "name": "Export", "config": {
        "path": str(root / "export"), "file_format": "csv", "compression": "gzip",
        "partition_by": "date={date}/hour={HH}/min={min15}", "consent": {"require": ["analytics"]},
        "properties": {"exclude": ["context.ip"]}, "batch_size": 50}}


def deliver_twice(root: Path, integ: list[dict]):
    """Run 1 delivers input A; run 2 delivers A plus more events. The delivery ledger is removed between
    them, as for destinations written before it existed: the archive then holds A's events twice (in
    differently composed files), which regeneration must read back once each."""
    a, _ = generate(n=200, seed=61, tenants=2, source_id="src_abc123")
    b, _ = generate(n=150, seed=62, tenants=2, source_id="src_abc123")
    (root / "i.json").write_bytes(orjson.dumps(integ))
    for name, lines in (("a.ndjson", a), ("ab.ndjson", a + b)):
        (root / name).write_bytes(b"\n".join(lines) + b"\n")
        assert deliver.run([f"--integrations={root / 'i.json'}", f"--input={root / name}",
                            f"--dead_letter={root / 'dead'}", RUNNER]) == 0
        for folder in [p for p in root.rglob(ledger.LEDGER_DIR) if p.is_dir()]:
            shutil.rmtree(folder)
        for entry in root.rglob(".*_ledger_*"):  # an sFTP folder's ledger entries
            entry.unlink()


def csv_events(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.rglob("*.csv.gz")):
        rel = path.relative_to(folder).as_posix()
        for r in csv.DictReader(io.StringIO(gzip.decompress(path.read_bytes()).decode())):
            rows.append({**r, "_path": rel})
    return rows


def test_regenerating_a_day_reproduces_the_live_export(tmp_path):
    deliver_twice(tmp_path, integrations(tmp_path, files_export(tmp_path)))
    live = [r for r in csv_events(tmp_path / "export") if r["_path"].startswith(f"date={DAY}/")]
    assert max(Counter(r["event_id"] for r in live).values()) > 1  # the live export got the re-sent events again
    out = tmp_path / "regen"
    code = regenerate.run([f"--integrations={tmp_path / 'i.json'}", f"--from={DAY}T00:00:00Z",
                           "--to=2026-01-30T00:00:00Z", f"--output={out}", f"--summary={tmp_path / 's.json'}",
                           f"--dead_letter={tmp_path / 'regen_dead'}", RUNNER])
    assert code == 0
    regen = csv_events(out)
    ids = [r["event_id"] for r in regen]
    assert len(ids) == len(set(ids))  # each event once
    assert set(ids) == {r["event_id"] for r in live}  # no missing, no extra
    assert all(r["_path"].startswith(f"date={DAY}/") for r in regen)
    # Same partitioning, same content per event (format, selection, consent applied again).
    by_id = {r["event_id"]: r for r in live}
    for r in regen:
        assert re.sub(r"/[^/]+$", "", r["_path"]) == re.sub(r"/[^/]+$", "", by_id[r["event_id"]]["_path"])
        assert {k: v for k, v in r.items() if k != "_path"} == {k: v for k, v in by_id[r["event_id"]].items()
                                                               if k != "_path"}
        assert '"ip"' not in r["context"]
    # Its own delivery reports list exactly the regenerated files.
    listed = {f["path"] for p in (out / "_reports").glob("*.report") for f in orjson.loads(p.read_bytes())["files"]}
    assert listed == {r["_path"] for r in regen}
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["delivered"] == len(ids) and summary["export"] == "export"


def test_regeneration_into_an_sftp_folder(tmp_path, monkeypatch):
    root = tmp_path / "sftp"
    (root / "live").mkdir(parents=True)
    (root / "regen").mkdir()
    monkeypatch.setenv("TEST_SFTP_PASSWORD", "pw-regenerate")
    server = SFTPTestServer(str(root), "export", password="pw-regenerate").start()
    try:
        export = {"source_id": "src_abc123", "vendor": "sftp", "name": "Export", "config": {
            "host": "127.0.0.1", "port": server.port, "username": "export", "password": "env:TEST_SFTP_PASSWORD",
            "host_key": server.host_key_line, "path": "live", "export_name": "myExport", "partition": "half_hour",
            "file_format": "json", "consent": {"require": ["analytics"]}}}
        deliver_twice(tmp_path, integrations(tmp_path, export))
        code = regenerate.run([f"--integrations={tmp_path / 'i.json'}", f"--from={DAY}T00:00:00Z",
                               "--to=2026-01-30T00:00:00Z", "--output=regen", RUNNER])
        assert code == 0

        def events(folder):
            out = []
            for name in sorted(os.listdir(root / folder)):
                if name.endswith(".json.gz") and name.startswith(f"myExport_{DAY}_"):
                    data = gzip.decompress((root / folder / name).read_bytes())
                    out += [orjson.loads(x)["event_id"] for x in data.splitlines()]
            return out

        regen = events("regen")
        assert regen and len(regen) == len(set(regen)) and set(regen) == set(events("live"))
        assert any(n.endswith("_delivery.report") for n in os.listdir(root / "regen"))
    finally:
        server.stop()


def test_configuration_errors_are_listed(tmp_path, capsys):
    (tmp_path / "i.json").write_bytes(orjson.dumps([files_export(tmp_path)]))
    code = regenerate.run([f"--integrations={tmp_path / 'i.json'}", "--from=yesterday", "--to=2026-01-30T00:00:00Z",
                           f"--output={tmp_path / 'o'}", RUNNER])
    assert code == 2
    err = capsys.readouterr().err
    assert "--archive" in err and "--from" in err
