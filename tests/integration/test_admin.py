"""The management API (python -m pipelines.admin) as a real server on 127.0.0.1, over SQLite and over the
PostgreSQL the fixtures start: the seed's four bodies, secrets never readable (responses, DEBUG logs, the
database), tokens, errors, concurrent PATCHes, key rotation, a delivery run driven from the database, and a
bounded schemathesis run against /openapi.json."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.guarantees.invariants import REPO, check_conservation
from tests.seed000 import seed_bodies
from tests.servers.processes import free_port

pytestmark = pytest.mark.timeout(600)

TOKEN = "admin-token-5f1c9e"
OTHER_TOKEN = "ops-token-77aa01"
# Inline values planted in the bodies: none may be readable anywhere but through the jobs.
PLANTED = {"bigquery": ("service_account_json", '{"type": "service_account", "private_key": "PLANTED-BQ-KEY-91f3"}'),
           "s3": ("access_key_id", "AKIAPLANTED0000S3KEY"),
           "redshift": ("password", "PLANTED-rs-password-4c2d")}


class Admin:
    def __init__(self, database: str, tmp: Path, key: str):
        from cryptography.fernet import Fernet

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key or Fernet.generate_key().decode()
        self.log = tmp / f"admin-{self.port}.log"
        (tmp / "tokens").write_text(f"ops:{OTHER_TOKEN}\n")
        self.env = {**os.environ, "BEAMHOUSE_ADMIN_TOKEN": TOKEN, "BEAMHOUSE_MASTER_KEY": self.key}
        self.database = database
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.admin", "--database", database, "--port", str(self.port),
             "--log_level", "debug", "--tokens_file", str(tmp / "tokens")], cwd=REPO, env=self.env,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert self.process.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the admin server did not start"
                time.sleep(0.2)
        self.client = httpx.Client(base_url=self.url + "/v1/admin/integrations",
                                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def stop(self):
        self.client.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgresql"])
def admin(request, tmp_path):
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'config.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"admin_{free_port()}"
        subprocess.run([*server.as_user, "createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
                        name], check=True, capture_output=True,
                       env={**os.environ, "PATH": os.path.dirname(_pg("createdb")) + os.pathsep + os.environ["PATH"]})
        database = f"postgresql://postgres@127.0.0.1:{server.port}/{name}"
    server = Admin(database, tmp_path, key="")
    yield server
    server.stop()


def _pg(name: str) -> str:
    from tests.servers.processes import _pg_bin

    return _pg_bin(name)


def planted(body: dict) -> dict:
    body = json.loads(json.dumps(body))
    if body["vendor"] in PLANTED:
        field, value = PLANTED[body["vendor"]]
        body["config"][field] = value
    return body


def everything_readable(admin: Admin) -> str:
    """All a reader of the server can see: its log, and the database's files (SQLite) or a dump (PostgreSQL)."""
    text = admin.log.read_text(errors="replace")
    if admin.database.startswith("sqlite"):
        path = Path(admin.database[len("sqlite:///"):])
        for p in path.parent.glob(path.name + "*"):  # the database, its WAL and journal
            text += p.read_bytes().decode("latin-1")
    else:
        import sqlalchemy as sa

        from transforms.configdb import engine_for

        engine = engine_for(admin.database)
        with engine.connect() as conn:
            for table in ("integrations", "secrets", "audit", "deliveries", "tokens"):
                text += repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all())
        engine.dispose()
    return text


def test_the_seed_bodies_round_trip_and_no_secret_is_readable(admin):
    bodies = [planted(b) for b in seed_bodies()]
    assert [b["vendor"] for b in bodies] == ["bigquery", "snowflake", "s3", "redshift"]
    for body in bodies:
        done = admin.client.post("", json=body)
        assert done.status_code == 201, done.text
        stored = done.json()
        assert stored["integration_id"] and stored["vendor"] == body["vendor"] and stored["name"] == body["name"]
        for key, value in body["config"].items():
            expected = "***" if (body["vendor"], key) in {(v, f) for v, (f, _) in PLANTED.items()} else value
            if isinstance(value, str) and not value.startswith(("env:", "file:")) and key in (
                    "private_key", "password", "secret_access_key", "service_account_json", "access_key_id"):
                expected = "***"
            assert stored["config"][key] == expected, key
    listed = admin.client.get("").json()
    assert listed["total"] == 4 and [i["vendor"] for i in listed["items"]] == sorted(b["vendor"] for b in bodies)
    assert admin.client.get("", params={"vendor": "s3"}).json()["total"] == 1
    assert admin.client.get("", params={"limit": 1, "offset": 1}).json()["items"][0]["integration_id"] == \
        listed["items"][1]["integration_id"]
    readable = everything_readable(admin) + json.dumps(listed)
    for _, value in PLANTED.values():
        assert value not in readable
    assert "PLANTED-BQ-KEY-91f3" not in readable
    # the audit names who changed what, never a value
    import sqlalchemy as sa

    from transforms.configdb import engine_for

    engine = engine_for(admin.database)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT token_id, action, integration_id, fields FROM audit")).all()
    engine.dispose()
    assert len(rows) == 4 and {r[0] for r in rows} == {"env"} and {r[1] for r in rows} == {"create"}


def test_tokens_errors_and_partial_updates(admin):
    body = planted(seed_bodies()[2])  # s3
    assert httpx.post(admin.client.base_url, json=body).status_code == 401
    assert httpx.post(admin.client.base_url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    other = httpx.Client(base_url=str(admin.client.base_url), headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    created = other.post("", json=body)
    assert created.status_code == 201
    iid = created.json()["integration_id"]
    assert admin.client.post("", json=body).status_code == 409
    assert admin.client.get("/nope").status_code == 404
    big = {**body, "config": {**body["config"], "prefix": "x" * (2 << 20)}}
    assert admin.client.post("", json=big).status_code == 413
    bad = admin.client.post("", json={"source_id": "", "vendor": "s3", "name": "B",
                                      "config": {"bucket": "Not_A_Bucket", "batch_size": True,
                                                 "secret_access_key": "TOPSECRET-value-1"}})
    assert bad.status_code == 422
    locs = {p["loc"] for p in bad.json()["detail"]}
    assert "$.source_id" in locs and "TOPSECRET" not in bad.text
    bad = admin.client.post("", json={"source_id": "s", "vendor": "s3", "name": "B",
                                      "config": {"bucket": "Not_A_Bucket", "batch_size": True, "prefix": 5,
                                                 "secret_access_key": "TOPSECRET-value-1"}})
    assert len(bad.json()["detail"]) >= 3 and "TOPSECRET" not in bad.text  # every problem, no value
    # PATCH: partial; a secret omitted or sent back masked keeps its stored value
    patched = admin.client.patch(f"/{iid}", json={"enabled": False, "config": {"access_key_id": "***",
                                                                                "batch_size": 250}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False and patched.json()["config"]["batch_size"] == 250
    assert patched.json()["version"] == 2
    import sqlalchemy as sa

    from transforms.configdb import engine_for

    engine = engine_for(admin.database)
    with engine.connect() as conn:
        who, fields = conn.execute(sa.text("SELECT token_id, fields FROM audit WHERE action = 'patch'")).one()
    engine.dispose()
    # the masked secret sent back is no change; the audit names the token and the fields, not values
    assert who == "env" and json.loads(fields) == ["config.batch_size", "enabled"]
    put_body = {k: v for k, v in body.items()}
    put_body["config"] = {k: v for k, v in body["config"].items() if k != "access_key_id"}
    assert admin.client.put(f"/{iid}", json=put_body).status_code == 200
    from transforms.configdb import Keyring, stored_bodies

    stored = {b["integration_id"]: b for b in stored_bodies(admin.database, Keyring(admin.key))}
    assert stored[iid]["config"]["access_key_id"] == PLANTED["s3"][1]  # kept through PATCH and PUT
    tested = admin.client.post(f"/{iid}/test")
    assert tested.status_code == 200 and tested.json()["ok"] is False  # the seed's bucket does not exist here
    assert PLANTED["s3"][1] not in tested.text
    assert admin.client.delete(f"/{iid}").status_code == 204
    assert admin.client.get(f"/{iid}").status_code == 404


def test_concurrent_patches_lose_no_update(admin):
    body = planted(seed_bodies()[2])
    iid = admin.client.post("", json=body).json()["integration_id"]
    errors = []

    def bump(n):
        with httpx.Client(base_url=str(admin.client.base_url), headers=admin.client.headers, timeout=60) as c:
            done = c.patch(f"/{iid}", json={"config": {"routing": {"tenants": {f"t{n}": {"prefix": f"t{n}/"}}}}})
            if done.status_code != 200:
                errors.append(done.text)

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = admin.client.get(f"/{iid}").json()
    assert sorted(final["config"]["routing"]["tenants"]) == sorted(f"t{n}" for n in range(12))
    assert final["version"] == 13


def test_rotate_key_re_encrypts_and_a_run_from_the_database_delivers(admin, tmp_path):
    from cryptography.fernet import Fernet

    lake = tmp_path / "lake"
    body = {"source_id": "src_abc123", "vendor": "files", "name": "Lake", "config": {"path": str(lake),
                                                                                      "file_format": "json"}}
    iid = admin.client.post("", json=body).json()["integration_id"]
    admin.client.post("", json=planted(seed_bodies()[3]) | {"enabled": False})  # a disabled one with a secret
    new_key = Fernet.generate_key().decode()
    env = {**admin.env, "BEAMHOUSE_MASTER_KEY": new_key, "BEAMHOUSE_PREVIOUS_MASTER_KEYS": admin.key}
    done = subprocess.run([sys.executable, "-m", "pipelines.admin", "rotate-key", "--database", admin.database],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "re-encrypted 1 secret" in done.stdout, done.stderr
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(orjson.dumps(
        {"type": "track", "event": "E", "anonymousId": f"a{i}", "messageId": f"m{i}",
         "timestamp": "2026-01-29T10:00:00Z"}) for i in range(30)) + b"\n")
    run = subprocess.run([sys.executable, "-m", "pipelines.deliver", f"--integrations={admin.database}",
                          f"--input={tmp_path / 'in.ndjson'}", f"--dead_letter={tmp_path / 'dead'}",
                          f"--summary={tmp_path / 'summary.json'}", "--runner=FnApiRunner"],
                         cwd=REPO, env={**os.environ, "BEAMHOUSE_MASTER_KEY": new_key}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    check_conservation(summary, input_events=30)
    assert summary["integrations"][iid]["delivered"] == 30
    deliveries = admin.client.get(f"/{iid}/deliveries").json()["items"]
    assert len(deliveries) == 1 and deliveries[0]["delivered"] == 30 and deliveries[0]["balanced"]
    # the old key alone no longer opens the secrets
    stale = subprocess.run([sys.executable, "-m", "pipelines.validate", admin.database, "--check-secrets"], cwd=REPO,
                           env={**os.environ, "BEAMHOUSE_MASTER_KEY": admin.key}, capture_output=True, text=True)
    assert stale.returncode == 2 and "neither BEAMHOUSE_MASTER_KEY" in stale.stderr, stale.stderr


def test_a_job_carries_stored_secrets_encrypted_and_opens_them_with_its_own_key(admin, monkeypatch):
    """What a job reads from the database: each secret an encrypted reference; pickled into the pipeline it
    stays ciphertext (so workers elsewhere may take it, given BEAMHOUSE_MASTER_KEY); opened where used."""
    import pickle

    from transforms.integrations import load_integrations

    admin.client.post("", json=planted(seed_bodies()[3]))  # redshift, with an inline password
    integrations, errors = load_integrations(admin.database)
    assert not errors
    config = integrations[0].config
    graph = pickle.dumps(config)
    assert PLANTED["redshift"][1].encode() not in graph and b"encrypted:" in graph
    assert repr(config.password) == "Secret(encrypted (management API))"
    monkeypatch.setenv("BEAMHOUSE_MASTER_KEY", admin.key)
    assert pickle.loads(graph).password.get() == PLANTED["redshift"][1]
    from pipelines.deliver import inline_secret_errors

    assert inline_secret_errors(integrations) == []  # not refused for workers on other machines


def test_refuses_to_start_without_token_or_key(tmp_path):
    base = [sys.executable, "-m", "pipelines.admin", "--database", f"sqlite:///{tmp_path / 'c.db'}",
            "--port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if k not in ("BEAMHOUSE_ADMIN_TOKEN", "BEAMHOUSE_MASTER_KEY")}
    done = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "BEAMHOUSE_MASTER_KEY" in done.stderr
    done = subprocess.run(base, cwd=REPO, env={**env, "BEAMHOUSE_MASTER_KEY": "not-a-key"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "not 32 bytes" in done.stderr and "not-a-key" not in done.stderr
    from cryptography.fernet import Fernet

    done = subprocess.run(base, cwd=REPO, env={**env, "BEAMHOUSE_MASTER_KEY": Fernet.generate_key().decode()},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "BEAMHOUSE_ADMIN_TOKEN" in done.stderr


def test_schemathesis_finds_no_server_error(tmp_path):
    """A bounded property-based run of every operation in /openapi.json: no 5xx, whatever the input."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    server = Admin(f"sqlite:///{tmp_path / 'fuzz.db'}", tmp_path, key="")
    try:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        failures = []
        def checker(op):
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def check(case):
                response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
                if response.status_code >= 500:
                    failures.append(f"{op.method.upper()} {op.path}: {response.status_code}")
            return check

        for operation in schema.get_all_operations():
            checker(operation.ok())()
        assert not failures, failures[:5]
    finally:
        server.stop()
