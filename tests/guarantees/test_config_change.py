"""Reports never lie after a configuration change. An earlier run's files hold the events under the old
settings; nothing is rewritten, and what a report lists is what the store holds. Through python -m
pipelines.deliver (FnApiRunner), ending with the invariants."""
from __future__ import annotations

import shutil

import orjson

from tests.eventgen import generate
from tests.guarantees.invariants import check_conservation, check_no_duplicate, check_report_integrity, deliver, reports, rows_of
from transforms import ledger


def _run(tmp_path, exclude):
    config = {"path": str(tmp_path / "lake"), "file_format": "json", "compression": "none", "batch_size": 50}
    if exclude:
        config["properties"] = {"exclude": exclude}
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "src_example", "vendor": "files", "name": "Lake",
                                                     "config": config}]))
    done = deliver(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in' / '*.ndjson'}",
                   f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}")
    assert done.returncode == 0, done.stderr
    return done, orjson.loads((tmp_path / "summary.json").read_bytes())


def test_a_changed_exclusion_applies_to_new_events_and_old_files_are_reported_as_they_are(tmp_path):
    (tmp_path / "in").mkdir()
    lines, _ = generate(400, seed=81, bad=False)
    (tmp_path / "in" / "a.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    _run(tmp_path, None)
    # One more event, and the IP now excluded. With the ledger: old events are not cut again, the new one
    # is delivered without its IP, every report matches the store.
    extra = orjson.dumps({"type": "track", "event": "Late", "anonymousId": "z", "messageId": "late-1",
                          "timestamp": "2026-01-28T10:00:00Z", "receivedAt": "2026-01-28T10:00:01Z",
                          "context": {"ip": "198.51.100.7"}})
    (tmp_path / "in" / "b.ndjson").write_bytes(extra + b"\n")
    done, summary = _run(tmp_path, ["context.ip"])
    check_conservation(summary, input_events=len(lines) + 1)
    check_report_integrity(tmp_path / "lake")
    ids = check_no_duplicate(tmp_path / "lake")
    assert "late-1" in ids
    new_rows = [row for path in check_report_integrity(tmp_path / "lake") for row in rows_of(path)
                if row["event_id"] == "late-1"]
    assert len(new_rows) == 1 and "ip" not in new_rows[0].get("context", {})
    # Without the ledger (an older version's data): the re-cut batches find their names taken by files the
    # old settings wrote. They are not rewritten; the report lists their true size and digest, flags them
    # and the run warns.
    for folder in (tmp_path / "lake").rglob(ledger.LEDGER_DIR):
        shutil.rmtree(folder)
    for report in (tmp_path / "lake" / "_reports").glob("*"):
        report.unlink()
    done, summary = _run(tmp_path, ["context.ip", "context.library"])
    assert summary["integrations"]["lake"]["files_differ"] > 0
    assert "were not rewritten" in done.stdout
    check_report_integrity(tmp_path / "lake")  # every listed size and digest is the stored file's
    flagged = [f for r in reports(tmp_path / "lake") for f in r["files"] if f.get("differs")]
    assert flagged and all("sha256" in f for f in flagged)


def test_on_a_putobject_only_bucket_a_config_change_gives_no_report_that_lies(moto_server, tmp_path):
    """The probe's case: S3 under the seed's PutObject-only policy (through the suite's proxy), the
    exclusion changed and one event added. Files found already there are listed as unverified (the store
    allows no reading), never with this run's digest; every listed digest is the stored object's."""
    import boto3

    from tests.integration.test_s3 import seed_s3_config
    from tests.servers.faultproxy import FaultProxy

    bucket = "config-change-bucket"  # its own: the moto server is shared by the session's tests

    def least_privilege(method: str, path: str) -> bool:  # the seed's policy on this bucket
        return (method == "GET" and path.endswith("?location")) or (
            method == "PUT" and path.startswith(f"/{bucket}/datafly/events/"))

    s3 = boto3.client("s3", endpoint_url=moto_server.url, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    proxy = FaultProxy(moto_server.url, allow=least_privilege).start()
    try:
        (tmp_path / "in").mkdir()
        lines, _ = generate(300, seed=82, bad=False, source_id="src_abc123")
        (tmp_path / "in" / "a.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        config = seed_s3_config(proxy.url)
        config["config"]["bucket"] = bucket
        argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in' / '*.ndjson'}",
                f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}"]
        (tmp_path / "i.json").write_bytes(orjson.dumps([config]))
        assert deliver(*argv).returncode == 0
        config["config"]["properties"] = {"exclude": ["context.ip"]}
        (tmp_path / "i.json").write_bytes(orjson.dumps([config]))
        (tmp_path / "in" / "b.ndjson").write_bytes(orjson.dumps(
            {"type": "track", "event": "Late", "anonymousId": "z", "messageId": "late-1",
             "timestamp": "2026-01-28T10:00:00Z", "receivedAt": "2026-01-28T10:00:01Z"}) + b"\n")
        done = deliver(*argv)
        assert done.returncode == 0, done.stderr
        assert "WARNING" in done.stdout  # the ledger could not be read: the run said so
    finally:
        proxy.stop()
    prefix = "datafly/events/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    unverified = 0
    for key in (k for k in keys if k.startswith(prefix + "_reports/")):
        for f in orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["files"]:
            if f.get("verified") is False:
                unverified += 1
                assert "sha256" not in f and "bytes" not in f
                continue
            body = s3.get_object(Bucket=bucket, Key=prefix + f["path"])["Body"].read()
            assert len(body) == f["bytes"] and __import__("hashlib").sha256(body).hexdigest() == f["sha256"]
    assert unverified > 0  # the re-run found names taken and did not pretend to know their bytes
