"""The management API of seed 000: integrations over REST, secrets encrypted at rest.

    export BEAMHOUSE_ADMIN_TOKEN=...     # the bearer token (or --tokens_file with name:token lines)
    export BEAMHOUSE_MASTER_KEY=...      # 32 random bytes, URL-safe base64: how to make one is below
    python -m pipelines.admin --database sqlite:///beamhouse.db --host 127.0.0.1 --port 8084
    python -m pipelines.admin rotate-key --database sqlite:///beamhouse.db   # re-encrypt under the current key

A master key: ``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.

Then ``python -m pipelines.deliver --integrations sqlite:///beamhouse.db ...`` runs the enabled integrations
the database holds and records each run's figures (``GET /v1/admin/integrations/{id}/deliveries``).

Endpoints under ``/v1/admin/integrations``: ``POST`` (a body the integrations file accepts → 201), ``GET``
(``?vendor=``, ``?enabled=``, ``?limit=``, ``?offset=``), ``GET/PUT/PATCH/DELETE /{id}``, ``POST /{id}/test``
(the start-up checks), ``GET /{id}/deliveries``; ``/openapi.json``. Secrets are answered as ``"***"`` (or
the ``env:``/``file:`` reference given); a secret omitted from a PUT/PATCH, or sent back as ``"***"``, keeps
its stored value. Errors: 401 (token), 404, 409 (the id exists), 413 (body over 1 MiB), 422 (every problem by
JSON path, never a value). Exit status 2 when the token, the key or the database is missing or unusable.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import sys
import time

import orjson
import sqlalchemy as sa
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from pipelines.problems import Parser, report
from transforms import configdb, secrets
from transforms.secrets import MASK

TOKEN_ENV = "BEAMHOUSE_ADMIN_TOKEN"
MAX_BODY_BYTES = 1 << 20
PREFIX = "/v1/admin/integrations"
log = logging.getLogger("beamhouse.admin")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens(tokens_file: str | None) -> dict[str, str]:
    """``{token id: SHA-256 of the token}`` from the environment and the tokens file (``name:token`` lines)."""
    tokens = {}
    if os.environ.get(TOKEN_ENV, "").strip():
        tokens["env"] = _digest(os.environ[TOKEN_ENV].strip())
    if tokens_file:
        with open(tokens_file, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, sep, token = line.partition(":")
                if not sep or not name.strip() or not token.strip():
                    raise ValueError(f"{tokens_file}:{number}: expected name:token")
                tokens[name.strip()] = _digest(token.strip())
    return tokens


def _problems(errors: list[str]) -> list[dict]:
    """``"$[0].config.x: msg"`` lines as ``{"loc": "$.config.x", "msg": ...}`` (no values: the validators
    never echo one)."""
    out = []
    for err in errors:
        loc, _, msg = err.partition(": ")
        out.append({"loc": "$" + loc[4:] if loc.startswith("$[0]") else loc, "msg": msg})
    return out


def _changed(old: dict | None, new: dict | None, prefix: str = "") -> list[str]:
    """Field paths whose value differs (names only, for the audit table)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix or "$"] if old != new else []
    out = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}.{key}" if prefix else key
        out += _changed(old.get(key), new.get(key), path) if isinstance(old.get(key), dict) or \
            isinstance(new.get(key), dict) else ([path] if old.get(key) != new.get(key) else [])
    return out


def _value_at(body: dict, path: str):
    try:
        return configdb.get_path(body, path)
    except (KeyError, TypeError):
        return None


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def create_app(database_url: str, tokens: dict[str, str], keyring: configdb.Keyring):
    """The FastAPI application (no server): ``tokens`` as ``read_tokens`` returns them."""
    from transforms.integrations import shared_destination_errors, validate_integrations

    engine = configdb.engine_for(database_url)
    with engine.begin() as conn:  # the tokens file's tokens, hashed, so the database says who may write
        for token_id, digest in tokens.items():
            conn.execute(sa.delete(configdb.tokens_table).where(configdb.tokens_table.c.token_id == token_id))
            conn.execute(sa.insert(configdb.tokens_table).values(token_id=token_id, digest=digest))
    app = FastAPI(title="beamhouse management API", version="1",
                  description="Integrations of the beamhouse delivery job; secrets encrypted at rest.")
    table = configdb.integrations_table

    class Problem(Exception):
        def __init__(self, status: int, detail):
            self.status, self.detail = status, detail

    @app.exception_handler(Problem)
    async def _problem(request, exc: Problem):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        # FastAPI's own message would echo the input (a secret, possibly): locations and messages only.
        detail = [{"loc": "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"][1:]),
                   "msg": e["msg"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        if request.url.path.startswith(PREFIX):
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            who = None
            if scheme.lower() == "bearer" and token:
                digest = _digest(token.strip())
                with engine.connect() as conn:
                    rows = conn.execute(sa.select(configdb.tokens_table)).all()
                for row in rows:
                    if hmac.compare_digest(row.digest, digest):
                        who = row.token_id
            if who is None:
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            request.state.token_id = who
        return await call_next(request)

    def shown(row) -> dict:
        body = orjson.loads(row.body)
        return {**body, "integration_id": row.integration_id, "version": row.version,
                "created_at": row.created_at, "updated_at": row.updated_at}

    def validated(body) -> tuple[object, dict, dict[str, str]]:
        """The integration, its masked body and its inline secrets; raises 422 listing every problem."""
        if not isinstance(body, dict):
            raise Problem(422, [{"loc": "$", "msg": "expected one integration object"}])
        integrations, errors = validate_integrations([body])
        errors = [e for e in errors if e != "$: no enabled integration"]
        if errors:
            raise Problem(422, _problems(errors))
        integ = integrations[0]
        masked, inline = configdb.split_secrets(body, integ)
        masked["integration_id"] = integ.integration_id
        return integ, masked, inline

    def shared_place(conn, integ, except_id: str | None) -> list[dict]:
        if not integ.enabled:
            return []
        others = []
        for row in conn.execute(sa.select(table.c.integration_id, table.c.body).where(table.c.enabled)).all():
            if row.integration_id == except_id:
                continue
            others += validate_integrations([orjson.loads(row.body)])[0]
        errors = shared_destination_errors([(i, o) for i, o in enumerate(others)] + [(len(others), integ)])
        return [{"loc": "$.config", "msg": e.split(": ", 1)[1]} for e in errors if e.startswith(f"$[{len(others)}]")]

    def restore_secrets(conn, integration_id: str, body: dict) -> dict:
        """A PUT/PATCH body with every stored secret it omits or sends back masked put back."""
        body = orjson.loads(orjson.dumps(body))
        for path, (key_id, ciphertext) in configdb.stored_secrets(conn, integration_id).items():
            try:
                current = configdb.get_path(body, path)
            except (KeyError, TypeError):
                current = None
            if current in (None, MASK):
                try:
                    configdb.set_path(body, path, keyring.decrypt(key_id, ciphertext))
                except (KeyError, TypeError):
                    pass  # its parent object was removed: the secret goes with it
        return body

    @app.post(PREFIX, status_code=201)
    @app.post(PREFIX + "/", status_code=201, include_in_schema=False)  # the same with a trailing slash
    def create(request: Request, body: dict = Body(...)):
        integ, masked, inline = validated(body)
        now = time.time()
        with engine.begin() as conn:
            if conn.execute(sa.select(table.c.integration_id).where(
                    table.c.integration_id == integ.integration_id)).first():
                raise Problem(409, f"integration {integ.integration_id!r} exists (PUT or PATCH it, or choose another "
                                   "name or integration_id)")
            problems = shared_place(conn, integ, None)
            if problems:
                raise Problem(422, problems)
            conn.execute(sa.insert(table).values(integration_id=integ.integration_id, vendor=integ.vendor,
                                                 enabled=integ.enabled, body=orjson.dumps(masked).decode(),
                                                 version=1, created_at=now, updated_at=now))
            configdb.write_secrets(conn, keyring, integ.integration_id, inline)
            configdb.audit(conn, request.state.token_id, "create", integ.integration_id, list(masked))
            row = conn.execute(sa.select(table).where(table.c.integration_id == integ.integration_id)).one()
        return shown(row)

    @app.get(PREFIX)
    @app.get(PREFIX + "/", include_in_schema=False)
    def list_integrations(vendor: str | None = None, enabled: bool | None = None,
                          limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**31 - 1)):
        query = sa.select(table)
        if vendor is not None:
            query = query.where(table.c.vendor == vendor)
        if enabled is not None:
            query = query.where(table.c.enabled == enabled)
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(query.order_by(table.c.integration_id).limit(limit).offset(offset)).all()
        return {"items": [shown(r) for r in rows], "total": total, "limit": limit, "offset": offset}

    def fetch(conn, integration_id: str):
        row = conn.execute(sa.select(table).where(table.c.integration_id == integration_id)).first()
        if row is None:
            raise Problem(404, f"no integration {integration_id!r}")
        return row

    @app.get(PREFIX + "/{integration_id}")
    def get_one(integration_id: str):
        with engine.connect() as conn:
            return shown(fetch(conn, integration_id))

    def replace(request: Request, integration_id: str, make_body, action: str):
        """Read, build the new body from the stored one, write if nobody wrote meanwhile (else again)."""
        for _ in range(20):
            with engine.begin() as conn:
                row = fetch(conn, integration_id)
                stored = orjson.loads(row.body)
                requested = make_body(stored)
                body = restore_secrets(conn, integration_id, requested) if isinstance(requested, dict) else requested
                if not isinstance(body, dict):
                    raise Problem(422, [{"loc": "$", "msg": "expected one integration object"}])
                body["integration_id"] = integration_id
                integ, masked, inline = validated(body)
                problems = shared_place(conn, integ, integration_id)
                if problems:
                    raise Problem(422, problems)
                done = conn.execute(sa.update(table).where(
                    (table.c.integration_id == integration_id) & (table.c.version == row.version)).values(
                    vendor=integ.vendor, enabled=integ.enabled, body=orjson.dumps(masked).decode(),
                    version=row.version + 1, updated_at=time.time()))
                if done.rowcount != 1:
                    continue  # another request updated it first: rebuild from its result
                configdb.write_secrets(conn, keyring, integration_id, inline)
                # A secret counts as changed when the request gave a value for it (not omitted, not "***").
                given = [p for p in inline if _value_at(requested, p) not in (None, MASK)]
                configdb.audit(conn, request.state.token_id, action, integration_id,
                               sorted(set(_changed(stored, masked) + given)))
                return shown(conn.execute(sa.select(table).where(table.c.integration_id == integration_id)).one())
        raise Problem(409, "the integration kept changing; try again")

    @app.put(PREFIX + "/{integration_id}")
    def put(request: Request, integration_id: str, body: dict = Body(...)):
        return replace(request, integration_id, lambda stored: body, "replace")

    @app.patch(PREFIX + "/{integration_id}")
    def patch(request: Request, integration_id: str, body: dict = Body(...)):
        return replace(request, integration_id, lambda stored: merge_patch(stored, body), "patch")

    @app.delete(PREFIX + "/{integration_id}", status_code=204)
    def delete(request: Request, integration_id: str):
        with engine.begin() as conn:
            fetch(conn, integration_id)
            conn.execute(sa.delete(configdb.secrets_table).where(
                configdb.secrets_table.c.integration_id == integration_id))
            conn.execute(sa.delete(table).where(table.c.integration_id == integration_id))
            configdb.audit(conn, request.state.token_id, "delete", integration_id, [])
        return Response(status_code=204)

    @app.post(PREFIX + "/{integration_id}/test")
    def test(integration_id: str):
        with engine.connect() as conn:
            row = fetch(conn, integration_id)
            body = restore_secrets(conn, integration_id, orjson.loads(row.body))
        integrations, errors = validate_integrations([body])
        errors = [e for e in errors if e != "$: no enabled integration"]
        if errors:
            return {"ok": False, "problems": [secrets.redact(e) for e in errors]}
        check = getattr(integrations[0].config, "preflight", None)
        problems = [secrets.redact(p) for p in (check() if check else [])]
        return {"ok": not problems, "problems": problems}

    @app.get(PREFIX + "/{integration_id}/deliveries")
    def deliveries(integration_id: str, limit: int = Query(50, ge=1, le=1000)):
        d = configdb.deliveries_table
        with engine.connect() as conn:
            fetch(conn, integration_id)
            rows = conn.execute(sa.select(d).where(d.c.integration_id == integration_id)
                                .order_by(d.c.at.desc(), d.c.id.desc()).limit(limit)).all()
        return {"items": [{"at": r.at, **orjson.loads(r.summary)} for r in rows]}

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pipelines.admin", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("command", nargs="?", choices=["serve", "rotate-key"], default="serve",
                        help="serve the API (default), or re-encrypt every secret under the current master key")
    parser.add_argument("--database", required=True,
                        help="sqlite:///PATH (embedded) or postgresql://USER:PASSWORD@HOST/DB")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8084, help="port to listen on")
    parser.add_argument("--log_level", default="info", choices=["debug", "info", "warning"],
                        help="log level of the server (secrets are redacted at every level)")
    parser.add_argument("--tokens_file", default=None,
                        help="file of name:token lines, each a bearer token (besides BEAMHOUSE_ADMIN_TOKEN)")
    return parser


def main(argv=None) -> int:
    secrets.install_log_redaction()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    problems = []
    if not configdb.is_database_url(args.database):
        problems.append("--database: expected sqlite:///PATH or postgresql://...")
    try:
        keyring = configdb.Keyring.from_environment()
    except configdb.ConfigDBError as exc:
        problems.append(str(exc))
        keyring = None
    tokens = {}
    if args.command == "serve":
        try:
            tokens = read_tokens(args.tokens_file)
        except (OSError, ValueError) as exc:
            problems.append(f"--tokens_file: {exc}")
        if not tokens and not problems:
            problems.append(f"no token: set {TOKEN_ENV} or give --tokens_file")
    if problems:
        return report(problems)
    if args.command == "rotate-key":
        try:
            count = configdb.rotate(args.database, keyring)
        except Exception as exc:  # noqa: BLE001 - one clear line; no key or password in it
            print(f"rotation failed: {type(exc).__name__}: {secrets.redact(str(exc))}", file=sys.stderr)
            return 1
        print(f"re-encrypted {count} secret(s) under key {keyring.current_id}")
        return 0
    import uvicorn

    try:
        app = create_app(args.database, tokens, keyring)
    except Exception as exc:  # noqa: BLE001 - an unreachable or unusable database
        return report([f"--database {configdb.display_url(args.database)}: {type(exc).__name__}"])
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
