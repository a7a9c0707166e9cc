"""sFTP delivery end to end on the FnApiRunner against asyncssh's SFTP server (tests/servers/sftp_server.py,
in-process on a loopback port): seed 002's naming with the partition in the file name, atomic publish by
temporary upload and rename-if-absent, host-key refusal, a connection dropped mid-upload, reports."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import re

import asyncssh
import orjson
import pytest

from pipelines import deliver
from tests.eventgen import consented_ids, generate, prepare_run
from tests.servers.sftp_server import SFTPTestServer
from transforms.storage.sftp import flat_name

RUNNER = "--runner=FnApiRunner"
PASSWORD = "sftp-Passw0rd-for-tests"
NAME = re.compile(r"^myExport_(\d{4}-\d{2}-\d{2})_(\d{2})_data_([0-9a-f]{16,})_(\d+)\.csv\.gz$")


@pytest.fixture
def server(tmp_path, monkeypatch):
    root = tmp_path / "sftp-root"
    (root / "myFolder").mkdir(parents=True)
    monkeypatch.setenv("TEST_SFTP_PASSWORD", PASSWORD)
    srv = SFTPTestServer(str(root), "export", password=PASSWORD).start()
    yield srv
    srv.stop()


def integration(server, **config) -> dict:
    return {"source_id": "src_abc123", "vendor": "sftp", "name": "Data Flow export", "config": {
        "host": "127.0.0.1", "port": server.port, "username": "export", "password": "env:TEST_SFTP_PASSWORD",
        "host_key": server.host_key_line, "path": "myFolder", "export_name": "myExport", "partition": "hour",
        "file_format": "csv", "compression": "gzip", "batch_size": 40, "consent": {"require": ["analytics"]},
        **config}}


def folder(server) -> list[str]:
    return sorted(os.listdir(os.path.join(server.root, "myFolder")))


def delivered_rows(server) -> list[dict]:
    rows = []
    for name in folder(server):
        if NAME.match(name):
            data = gzip.decompress(open(os.path.join(server.root, "myFolder", name), "rb").read()).decode()
            rows += [dict(r, _file=name) for r in csv.DictReader(io.StringIO(data))]
    return rows


def reports(server) -> list[dict]:
    return [orjson.loads(open(os.path.join(server.root, "myFolder", n), "rb").read())
            for n in folder(server) if n.endswith("_delivery.report")]


def test_flat_names():
    assert flat_name("myExport", "2021-04-08_10/data_ab_1.csv.gz") == "myExport_2021-04-08_10_data_ab_1.csv.gz"
    assert flat_name("e", "_reports/0f_delivery.report") == "e_0f_delivery.report"
    for bad in ("a/b/c", "../x", "x", "a//b"):
        with pytest.raises(ValueError):
            flat_name("e", bad)


def test_scheduled_export_names_reports_and_exactly_once(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    truth, argv = prepare_run(tmp_path / "run", [integration(server)], n=300, seed=51)
    assert deliver.run(argv) == 0
    names = folder(server)
    data_files = [n for n in names if NAME.match(n)]
    assert data_files and not [n for n in names if ".tmp-" in n]  # no temporary file left
    visible = [n for n in names if not n.startswith(".")]  # the delivery ledger's entries are hidden files
    assert all(n.startswith(".myExport_ledger_") for n in names if n.startswith("."))
    assert set(visible) == set(data_files) | {n for n in names if re.match(r"^myExport_[0-9a-f]+_delivery\.report$", n)}
    rows = delivered_rows(server)
    want = consented_ids(truth)
    assert sorted(r["event_id"] for r in rows) == sorted(want)
    for r in rows:  # the partition in the name is the event's UTC hour
        date, hour = NAME.match(r["_file"]).groups()[:2]
        assert r["timestamp"].startswith(f"{date}T{hour}:")
    # The reports name the files as the server holds them, with their sizes and digests (read back there).
    listed = [f for rep in reports(server) for f in rep["files"]]
    assert sorted(f["path"] for f in listed) == sorted(data_files)
    for f in listed:
        data = open(os.path.join(server.root, "myFolder", f["path"]), "rb").read()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    # The password never reaches logs or the summary.
    assert PASSWORD not in caplog.text + (tmp_path / "run" / "summary.json").read_text()
    # A re-run publishes nothing new: every name exists and holds the same batch.
    assert deliver.run(argv) == 0
    assert [n for n in folder(server) if NAME.match(n)] == data_files
    assert sorted(r["event_id"] for r in delivered_rows(server)) == sorted(want)
    # A grown input: only the new events are delivered, in new files a new report lists.
    late, late_truth = generate(n=60, seed=58, tenants=2, source_id="src_abc123", bad=False)
    (tmp_path / "run" / "late.ndjson").write_bytes(b"\n".join(late) + b"\n")
    assert deliver.run(argv + [f"--input={tmp_path / 'run' / 'late.ndjson'}"]) == 0
    rows = delivered_rows(server)
    assert sorted(r["event_id"] for r in rows) == sorted(want | consented_ids(late_truth))
    listed = [f["path"] for rep in reports(server) for f in rep["files"]]
    assert sorted(listed) == sorted(n for n in folder(server) if NAME.match(n))


def test_quarter_hour_partitions_and_json(server, tmp_path):
    integ = integration(server, partition="quarter_hour", file_format="json")
    truth, argv = prepare_run(tmp_path / "run", [integ], n=120, seed=52)
    assert deliver.run(argv) == 0
    pattern = re.compile(r"^myExport_\d{4}-\d{2}-\d{2}_(\d{2})_(00-15|15-30|30-45|45-60)_data_[0-9a-f]+_\d+\.json\.gz$")
    files = [n for n in folder(server) if pattern.match(n)]
    seen = []
    for name in files:
        for line in gzip.decompress(open(os.path.join(server.root, "myFolder", name), "rb").read()).splitlines():
            event = orjson.loads(line)
            assert None not in event.values()  # NDJSON omits nulls (seed 002)
            hour, minutes = pattern.match(name).groups()
            start = int(minutes[:2])
            assert event["timestamp"][11:13] == hour and start <= int(event["timestamp"][14:16]) < start + 15
            seen.append(event["event_id"])
    assert sorted(seen) == sorted(consented_ids(truth))


def test_unknown_or_changed_host_key_is_refused(server, tmp_path, capsys):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    truth, argv = prepare_run(tmp_path / "run", [integration(server, host_key=other)], n=20, seed=53)
    assert deliver.run(argv) == 2
    err = capsys.readouterr().err
    assert "host key CHANGED" in err or "host key is UNKNOWN" in err
    assert folder(server) == [] and server.logins == 0  # refused before authenticating


def test_host_key_is_required_unless_verification_is_off(server, tmp_path, capsys):
    integ = integration(server)
    del integ["config"]["host_key"]
    truth, argv = prepare_run(tmp_path / "run", [integ], n=20, seed=54)
    assert deliver.run(argv) == 2
    assert "host_key or known_hosts" in capsys.readouterr().err


def test_dropped_connection_mid_upload_is_retried_without_partial_or_duplicate(server, tmp_path):
    server.drop_after_bytes = 300
    truth, argv = prepare_run(tmp_path / "run", [integration(server)], n=200, seed=55)
    assert deliver.run(argv) == 0
    assert server.drops == 1
    names = folder(server)
    assert not [n for n in names if ".tmp-" in n]  # the interrupted temporary upload was removed
    rows = delivered_rows(server)
    assert sorted(r["event_id"] for r in rows) == sorted(consented_ids(truth))


def test_private_key_authentication(tmp_path):
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "id").write_bytes(key.export_private_key())
    srv = SFTPTestServer(str(root), "export", client_public_key=key.export_public_key().decode()).start()
    try:
        integ = integration(srv, path="out", private_key=f"file:{tmp_path / 'id'}")
        del integ["config"]["password"]
        truth, argv = prepare_run(tmp_path / "run", [integ], n=60, seed=56)
        assert deliver.run(argv) == 0
        assert srv.logins >= 1 and any(n.endswith(".csv.gz") for n in os.listdir(root / "out"))
    finally:
        srv.stop()
