"""EMULATION ONLY: a minimal Redshift stand-in in front of a real PostgreSQL 15, for the Redshift tests.

No Redshift runs offline. PostgreSQL gives the real transaction, locking and merge semantics the loader
depends on; this proxy speaks PostgreSQL's wire protocol between ``redshift_connector`` and PostgreSQL and
covers only what PostgreSQL cannot do:

- the connector parses ``server_version`` as Redshift reports it (``8.0.2``), not PostgreSQL's text;
- the connector's startup packet carries Redshift-only parameters (``client_protocol_version``,
  ``driver_version`` ...) that PostgreSQL refuses: they are dropped;
- ``COPY <table> FROM 's3://...' ... [GZIP] [MANIFEST] FORMAT AS JSON 'auto'`` is Redshift syntax: the
  manifest and files are read from the S3 endpoint (moto) and the statement becomes one INSERT of the
  rows (``jsonb_populate_recordset``, keys matched to column names as ``JSON 'auto'`` does), inside the
  client's transaction. A missing ``mandatory`` file fails the statement as Redshift does;
- Redshift DDL and functions: ``DISTKEY(..)``/``SORTKEY(..)`` are dropped, ``GETDATE()`` is ``now()``,
  ``SUPER`` is a domain over ``jsonb`` (created by the fixture) and ``col.key::TYPE`` navigation on the
  three JSON columns becomes ``(col->>'key')::TYPE``.

Fault injection for the failure tests (each one-shot): ``fail_copy_after_rows`` inserts that many rows
and then fails the COPY mid-way; ``drop_after_commit`` lets PostgreSQL commit and then drops the
connection before the client hears of it (a lost acknowledgement).

It does NOT reproduce Redshift behaviour beyond that (SUPER semantics, DISTKEY/SORTKEY, stl_load_errors,
COPY's own type coercions); the exact SQL sent is checked separately with sqlglot's Redshift dialect.
"""
from __future__ import annotations

import gzip
import re
import socket
import struct
import threading
from urllib.parse import urlparse

import orjson

SSL_REQUEST = 80877103
_COPY = re.compile(r"^\s*COPY\s+(?P<table>\S+)\s*(\((?P<cols>[^)]*)\))?\s+FROM\s+'(?P<url>s3://[^']+)'(?P<rest>.*)$",
                   re.I | re.S)
_SUPER_NAV = re.compile(r"\b(context|properties|traits)\.([A-Za-z_][A-Za-z0-9_]*)::")


def _recv_exact(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _message(sock) -> tuple[bytes, bytes]:
    kind = _recv_exact(sock, 1)
    (length,) = struct.unpack("!I", _recv_exact(sock, 4))
    return kind, _recv_exact(sock, length - 4)


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


class RedshiftShim:
    def __init__(self, pg_port: int, s3_client):
        self.pg_port = pg_port
        self.s3 = s3_client
        self.fail_copy_after_rows: int | None = None
        self.drop_after_commit = False
        self.copies: list[str] = []
        self.statements: list[str] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop = True
        self._sock.close()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    # -- one client connection ---------------------------------------------------------------------
    def _serve(self, client):
        server = socket.create_connection(("127.0.0.1", self.pg_port))
        for s in (client, server):  # small protocol messages: no Nagle delay on loopback
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            (length,) = struct.unpack("!I", _recv_exact(client, 4))
            body = _recv_exact(client, length - 4)
            if struct.unpack("!I", body[:4])[0] == SSL_REQUEST:
                client.sendall(b"N")  # no TLS on the loopback stand-in
                (length,) = struct.unpack("!I", _recv_exact(client, 4))
                body = _recv_exact(client, length - 4)
            server.sendall(self._startup(body))
            state = {"copied": False}  # a COPY ran in the current transaction (the fault targets loads)
            threading.Thread(target=self._server_to_client, args=(server, client, state), daemon=True).start()
            while True:
                kind, payload = _message(client)
                if kind == b"P":
                    name, rest = payload.split(b"\x00", 1)
                    query, params = rest.split(b"\x00", 1)
                    payload = name + b"\x00" + self._rewrite(query.decode(), state).encode() + b"\x00" + params
                elif kind == b"Q":
                    payload = self._rewrite(payload.rstrip(b"\x00").decode(), state).encode() + b"\x00"
                server.sendall(_frame(kind, payload))
        except (ConnectionError, OSError):
            pass
        finally:
            for s in (client, server):
                try:
                    s.close()
                except OSError:
                    pass

    def _server_to_client(self, server, client, state):
        try:
            while True:
                kind, payload = _message(server)
                if kind == b"C" and payload.startswith(b"COMMIT"):
                    copied, state["copied"] = state["copied"], False
                    if copied and self.drop_after_commit:
                        self.drop_after_commit = False  # committed in PostgreSQL; the client never hears it
                        raise ConnectionError("dropped after commit")
                if kind == b"S" and payload.startswith(b"server_version\x00"):
                    payload = b"server_version\x008.0.2\x00"  # what Redshift reports; the driver parses it
                client.sendall(_frame(kind, payload))
        except (ConnectionError, OSError):
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    @staticmethod
    def _startup(body: bytes) -> bytes:
        protocol = body[:4]
        parts = body[4:].split(b"\x00")
        pairs = dict(zip(parts[0::2], parts[1::2]))
        keep = {k: v for k, v in pairs.items() if k in (b"user", b"database", b"application_name") and k}
        payload = protocol + b"".join(k + b"\x00" + v + b"\x00" for k, v in keep.items()) + b"\x00"
        return struct.pack("!I", len(payload) + 4) + payload

    # -- Redshift -> PostgreSQL ----------------------------------------------------------------------
    def _rewrite(self, sql: str, state: dict) -> str:
        self.statements.append(sql)
        m = _COPY.match(sql)
        if m:
            self.copies.append(sql)
            state["copied"] = True
            return self._copy(m)
        sql = re.sub(r"\bDISTKEY\s*\([^)]*\)|\bSORTKEY\s*\([^)]*\)", "", sql, flags=re.I)
        sql = re.sub(r"\bGETDATE\(\)", "now()", sql, flags=re.I)
        return _SUPER_NAV.sub(lambda mm: f"({mm.group(1)}->>'{mm.group(2)}')::", sql)

    def _read(self, url: str) -> bytes | None:
        u = urlparse(url)
        try:
            return self.s3.get_object(Bucket=u.netloc, Key=u.path.lstrip("/"))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def _copy(self, m) -> str:
        rest = m.group("rest").upper()
        urls = [m.group("url")]
        if "MANIFEST" in rest:
            data = self._read(m.group("url"))
            if data is None:
                return _fail(f"S3ServiceException:The specified key does not exist (manifest {m.group('url')})")
            entries = orjson.loads(data)["entries"]
            urls = []
            for entry in entries:
                if self._read(entry["url"]) is None:
                    if entry.get("mandatory"):
                        return _fail(f"Manifest file is mandatory but the file was not found: {entry['url']}")
                    continue
                urls.append(entry["url"])
        rows = []
        for url in urls:
            data = self._read(url) or b""
            if "GZIP" in rest:
                data = gzip.decompress(data)
            rows += [orjson.loads(line) for line in data.splitlines() if line.strip()]
        table = m.group("table")
        cols = m.group("cols")
        target = f"{table} ({cols})" if cols else table
        select = cols if cols else "*"

        def insert(batch):
            doc = orjson.dumps(batch).decode().replace("$bh$", "")
            return (f"INSERT INTO {target} SELECT {select} FROM "
                    f"jsonb_populate_recordset(NULL::{table}, $bh${doc}$bh$::jsonb)")

        if self.fail_copy_after_rows is not None:
            n, self.fail_copy_after_rows = self.fail_copy_after_rows, None
            return (f"DO $do$ BEGIN {insert(rows[:n])}; RAISE EXCEPTION 'S3ServiceException: connection reset "
                    f"while reading the files (injected mid-way failure)' USING ERRCODE = 'XX000'; END $do$")
        return insert(rows)


def _fail(message: str) -> str:
    text = message.replace("'", "''")
    return f"DO $do$ BEGIN RAISE EXCEPTION '{text}' USING ERRCODE = 'XX000'; END $do$"
