"""Validation refuses what would break a run: reserved names, destinations shared by integrations,
values wider than the target's columns, booleans taken as counts. Through python -m pipelines.validate
(and one run through python -m pipelines.deliver, FnApiRunner, ending with the invariants)."""
from __future__ import annotations

import subprocess
import sys

import orjson

from tests.eventgen import generate
from tests.guarantees.invariants import REPO, check_conservation, check_no_duplicate, deliver

REDSHIFT = {"host": "h.example.com", "database": "dev", "schema": "public", "table": "events", "user": "u",
            "password": "env:NOT_NEEDED_HERE", "s3_bucket": "staging-bucket", "s3_region": "us-east-1",
            "iam_role_arn": "arn:aws:iam::123456789012:role/R"}


def validate(tmp_path, integrations) -> subprocess.CompletedProcess:
    (tmp_path / "i.json").write_bytes(orjson.dumps(integrations))
    return subprocess.run([sys.executable, "-m", "pipelines.validate", str(tmp_path / "i.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def files(name, path, **config):
    return {"source_id": "s", "vendor": "files", "name": name, "config": {"path": str(path), **config}}


def test_every_breaking_config_is_refused_at_once_by_json_path(tmp_path):
    done = validate(tmp_path, [
        files("Dead letter", tmp_path / "a"),                                          # reserved id
        files("Lake", tmp_path / "lake", batch_size=True),                             # a boolean count
        files("Lake two", tmp_path / "lake2", batch_interval_seconds=False),
        {"source_id": "s", "vendor": "duckdb", "name": "Consented", "config": {
            "path": str(tmp_path / "w.duckdb"), "table": "events", "consent": {"require": ["analytics"]}}},
        {"source_id": "s", "vendor": "duckdb", "name": "Everything", "config": {        # same table, other rules
            "path": str(tmp_path / "." / "w.duckdb"), "table": "main.events"}},
        files("Outer", tmp_path / "out"),
        files("Inner", tmp_path / "out" / "inner"),                                    # inside another's path
        {"source_id": "x" * 100, "vendor": "redshift", "name": "Redshift", "config": REDSHIFT},  # too wide
    ])
    assert done.returncode == 2
    err = done.stderr
    assert "$[0]: integration_id 'dead_letter'" in err and "is reserved" in err
    assert "$[1].config.batch_size: expected a number, not true/false" in err
    assert "$[2].config.batch_interval_seconds: expected a number, not true/false" in err
    assert "$[4].config: writes where integration 'consented' writes" in err
    assert "$[6].config: writes where integration 'outer' writes" in err
    assert "$[7].source_id: at most 64 bytes" in err
    assert "x" * 20 not in err  # values never echoed
    assert "6 problem(s)" in err


def test_the_same_configs_apart_are_valid(tmp_path):
    done = validate(tmp_path, [files("Lake", tmp_path / "lake", batch_size=40), files("Lake two", tmp_path / "lake2"),
                               {"source_id": "s", "vendor": "redshift", "name": "Redshift", "config": REDSHIFT}])
    assert done.returncode == 0, done.stderr


def test_a_run_with_an_integration_named_dead_letter_is_refused_before_any_work(tmp_path):
    lines = generate(20, seed=2, bad=False)[0]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines))
    (tmp_path / "i.json").write_bytes(orjson.dumps([files("Dead letter", tmp_path / "dl-lake"),
                                                    files("Lake", tmp_path / "lake")]))
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}"]
    done = deliver(*argv)
    assert done.returncode == 2 and "reserved" in done.stderr
    assert not (tmp_path / "lake").exists() and not (tmp_path / "dl-lake").exists()
    (tmp_path / "i.json").write_bytes(orjson.dumps([files("Lake", tmp_path / "lake")]))
    done = deliver(*argv)
    assert done.returncode == 0, done.stderr
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()), input_events=len(lines))
    check_no_duplicate(tmp_path / "lake")
