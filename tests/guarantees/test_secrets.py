"""I6: no secret anywhere observable - in the forms clients print them, and not in the pipeline graph.

Real S3 protocol: the moto server fixture on 127.0.0.1. Runner: FnApiRunner (named in each run).
"""
from __future__ import annotations

import logging

import apache_beam as beam
import boto3
import orjson
import pytest

from pipelines import deliver
from tests.eventgen import generate
from tests.guarantees.invariants import check_conservation, check_no_secret
from transforms import secrets
from transforms.integrations import load_integrations

KEY_ID = "AKIAGUARANTEESENTINEL"
SECRET = "guarantee/Sentinel+Secret=Value"  # '/', '+' and '=' change under URL encoding


def _s3_integration(url: str, bucket: str, key_id: str, secret: str) -> dict:
    return {"source_id": "src_abc123", "vendor": "s3", "name": "Archive", "enabled": True,
            "config": {"bucket": bucket, "prefix": "events/", "region": "us-east-1", "endpoint_url": url,
                       "access_key_id": key_id, "secret_access_key": secret, "file_format": "json",
                       "compression": "gzip"}}


def test_printed_forms_are_redacted():
    secrets.register("tok/en+with=odd\nchars")
    secrets.install_log_redaction()
    for form in (repr(b"tok/en+with=odd\nchars"), "tok%2Fen%2Bwith%3Dodd%0Achars", '"tok/en+with=odd\\nchars"',
                 "tok%2Fen%2Bwith%3Dodd%0Achars".replace("%2F", "/")):
        assert "tok" not in secrets.redact(f"header value {form} sent").replace("***", "")


def test_a_reference_drops_one_trailing_line_break(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARANTEE_K8S_SECRET", "k8s-secret-value\n")
    assert secrets.Secret("env:GUARANTEE_K8S_SECRET").get() == "k8s-secret-value"
    (tmp_path / "s").write_text("file-secret-value\r\n")
    assert secrets.Secret(f"file:{tmp_path / 's'}").get() == "file-secret-value"
    (tmp_path / "t").write_text("two-line-breaks\n\n")
    assert secrets.Secret(f"file:{tmp_path / 't'}").get() == "two-line-breaks\n"
    # the escaped form a client prints of the value as given is redacted too
    assert "k8s-secret-value" not in secrets.redact(repr(b"k8s-secret-value\n"))


def _graph_bytes(integrations, tmp_path) -> bytes:
    p = beam.Pipeline(runner="FnApiRunner")
    settings = deliver.parse_settings(deliver.DeliveryOptions([]), integrations)
    deliver.build_pipeline(p, [str(tmp_path / "*.ndjson")], [i for i in integrations if i.enabled], settings,
                           str(tmp_path / "dead"))
    return p.to_runner_api().SerializeToString()


def test_no_inline_or_referenced_secret_in_the_serialised_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARANTEE_REF_SECRET", "referenced-secret-value-123")
    configs = [_s3_integration("http://127.0.0.1:9", "bucket-b", KEY_ID, SECRET),
               {**_s3_integration("http://127.0.0.1:9", "bucket-c", "env:GUARANTEE_REF_SECRET",
                                  "env:GUARANTEE_REF_SECRET"), "name": "Referenced"},
               {"source_id": "src_abc123", "vendor": "sftp", "name": "Partner", "config": {
                   "host": "127.0.0.1", "port": 2222, "username": "u", "password": "sftp-inline-password",
                   "path": "upload", "verify_host_key": False}}]
    (tmp_path / "i.json").write_bytes(orjson.dumps(configs))
    integrations, errors = load_integrations(str(tmp_path / "i.json"))
    assert errors == []
    graph = _graph_bytes(integrations, tmp_path)
    for secret in (KEY_ID, SECRET, "sftp-inline-password", "referenced-secret-value-123"):
        for form in secrets.printed_forms(secret):
            assert form.encode() not in graph


def test_inline_secrets_are_refused_for_remote_workers(tmp_path, capsys):
    (tmp_path / "i.json").write_bytes(orjson.dumps([_s3_integration("http://127.0.0.1:9", "bucket-b", KEY_ID, SECRET)]))
    (tmp_path / "in.ndjson").write_bytes(generate(3, seed=1, bad=False)[0][0] + b"\n")
    status = deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                          "--runner=DataflowRunner", "--project=p", "--region=us-central1",
                          f"--temp_location={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 2
    assert "$[0].config.access_key_id: an inline secret" in err and "$[0].config.secret_access_key" in err
    check_no_secret([KEY_ID, SECRET], err)


@pytest.mark.parametrize("mode", [[], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]])
def test_debug_logs_errors_and_outputs_hold_no_secret_form(moto_server, tmp_path, monkeypatch, caplog, capsys, mode):
    # A Kubernetes-style secret with a trailing newline, by reference, and an inline key id; DEBUG logging on
    # (botocore prints header values escaped); inline secrets resolve in worker processes too.
    monkeypatch.setenv("GUARANTEE_S3_SECRET", SECRET + "\n")
    s3 = boto3.client("s3", endpoint_url=moto_server.url, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    bucket = "guarantee-secrets-" + ("mp" if mode else "sp")
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "i.json").write_bytes(orjson.dumps([_s3_integration(moto_server.url, bucket, KEY_ID,
                                                                    "env:GUARANTEE_S3_SECRET")]))
    lines = generate(40, seed=4)[0]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    caplog.set_level(logging.DEBUG)
    status = deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                          f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}",
                          "--runner=FnApiRunner", *mode])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert any(r.name.startswith("botocore") for r in caplog.records)  # DEBUG logging really was on
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()), input_events=len(lines))
    stored = [s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
              for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert stored
    check_no_secret([SECRET, SECRET + "\n", KEY_ID], out.out, out.err,
                    "\n".join(r.getMessage() for r in caplog.records), *(b.decode("latin-1") for b in stored),
                    paths=(tmp_path / "dead",))
