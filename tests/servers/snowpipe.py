"""CONTRACT TEST SERVER: Snowpipe's REST API as documented, in front of fakesnow (which has no pipes).

Implements the two calls the Snowflake loader makes, with the documented request and response shapes
(docs.snowflake.com, "Snowpipe REST API"):

- ``POST /v1/data/pipes/<db.schema.pipe>/insertFiles?requestId=<uuid>``, body ``{"files": [{"path",
  "size"}]}``, answered ``{"requestId", "responseCode": "SUCCESS"}``;
- ``GET /v1/data/pipes/<pipe>/insertReport?requestId=&beginMark=``, answered ``{"pipe", "completeResult",
  "nextBeginMark", "files": [{"path", "stageLocation", "fileSize", "timeReceived", "lastInsertTime",
  "rowsInserted", "rowsParsed", "errorsSeen", "errorLimit", "firstError", "complete", "status"}]}``.

Every request must carry ``Authorization: Bearer <JWT>`` signed RS256 by the user's registered key, with
``iss = ACCOUNT.USER.SHA256:<base64 sha256 of the public key>``, ``sub = ACCOUNT.USER`` and an ``exp`` at
most an hour after ``iat``; anything else is answered 401 as Snowflake does.

Loading: the pipe's ``COPY`` (given by the test, as ``CREATE PIPE ... AS COPY ...`` would define it) runs
on fakesnow for each newly named file (a file the pipe loaded before is ignored, as Snowpipe's load
history does); a file the COPY refuses is reported ``LOAD_FAILED`` with the error (a pipe's default
``ON_ERROR`` is ``SKIP_FILE``). Loads happen on a background thread, so reports arrive after the call.
"""
from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
import orjson
from cryptography.hazmat.primitives import serialization


def fingerprint(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


class SnowpipeContractServer:
    def __init__(self, account: str, user: str, public_key, pipe: str, pipe_copy: str, connect):
        self.account, self.user = account.upper(), user.upper()
        self.public_key = public_key
        self.pipe = pipe.upper()
        self.pipe_copy = pipe_copy
        self._connect = connect  # -> a Snowflake connection to fakesnow
        self.loaded: set[str] = set()
        self.reports: list[dict] = []
        self.requests: list[dict] = []
        self.rejected_auth = 0
        self._lock = threading.Lock()
        self._queue: list[tuple[str, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                server._handle(self, "POST")

            def do_GET(self):
                server._handle(self, "GET")

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._stop = False
        self._loader = threading.Thread(target=self._load_loop, daemon=True)
        self._loader.start()

    def stop(self):
        self._stop = True
        self._http.shutdown()
        self._http.server_close()

    # -- requests ----------------------------------------------------------------------------------
    def _authorised(self, handler) -> bool:
        header = handler.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        qualified = f"{self.account}.{self.user}"
        try:
            claims = jwt.decode(header[7:], self.public_key, algorithms=["RS256"],
                                options={"require": ["iss", "sub", "iat", "exp"]})
        except jwt.PyJWTError:
            return False
        return (claims["iss"] == f"{qualified}.{fingerprint(self.public_key)}" and claims["sub"] == qualified
                and claims["exp"] - claims["iat"] <= 3600)

    def _handle(self, handler, method: str):
        url = urlparse(handler.path)
        query = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if not self._authorised(handler):
            self.rejected_auth += 1
            return handler._reply(401, {"code": "390144", "message": "JWT token is invalid.", "success": False})
        if len(parts) != 5 or parts[:3] != ["v1", "data", "pipes"] or parts[3].upper() != self.pipe:
            return handler._reply(404, {"code": "390404", "message": "Specified object does not exist or not authorized."})
        request_id = query.get("requestId", [str(uuid.uuid4())])[0]
        if method == "POST" and parts[4] == "insertFiles":
            body = orjson.loads(handler.rfile.read(int(handler.headers.get("Content-Length", 0))))
            files = body.get("files")
            if not isinstance(files, list) or not files or not all(isinstance(f.get("path"), str) for f in files):
                return handler._reply(400, {"code": "390400", "message": "files must list {path, size}"})
            self.requests.append({"requestId": request_id, "files": files})
            with self._lock:
                self._queue += [(f["path"], int(f.get("size") or 0)) for f in files]
            return handler._reply(200, {"requestId": request_id, "responseCode": "SUCCESS"})
        if method == "GET" and parts[4] == "insertReport":
            mark = int(query.get("beginMark", ["0"])[0] or 0)
            with self._lock:
                files = self.reports[mark:]
                nxt = len(self.reports)
            return handler._reply(200, {"pipe": self.pipe, "completeResult": True, "nextBeginMark": str(nxt),
                                        "files": files, "statistics": {"activeFilesCount": len(self._queue)}})
        return handler._reply(404, {"code": "390404", "message": "unknown endpoint"})

    # -- the pipe ----------------------------------------------------------------------------------
    def _load_loop(self):
        con = None
        while not self._stop:
            with self._lock:
                batch, self._queue = self._queue, []
            if not batch:
                time.sleep(0.05)
                continue
            con = con or self._connect()
            for path, size in batch:
                if path in self.loaded:
                    continue  # load history: the pipe never loads a file twice
                received = datetime.now(timezone.utc).isoformat()
                sql = self.pipe_copy.replace("\nFILE_FORMAT", f"\nFILES = ('{path}')\nFILE_FORMAT", 1)
                report = {"path": path, "stageLocation": "internal", "fileSize": size, "timeReceived": received,
                          "errorLimit": 1, "complete": True}
                try:
                    rows = con.cursor().execute(sql).fetchall()
                    loaded = int(rows[0][3]) if rows and len(rows[0]) > 3 else 0
                    report.update(status="LOADED", rowsInserted=loaded, rowsParsed=loaded, errorsSeen=0,
                                  lastInsertTime=datetime.now(timezone.utc).isoformat())
                    self.loaded.add(path)
                except Exception as exc:  # noqa: BLE001 - reported as the pipe would
                    report.update(status="LOAD_FAILED", rowsInserted=0, rowsParsed=0, errorsSeen=1,
                                  firstError=getattr(exc, "msg", str(exc)))
                with self._lock:
                    self.reports.append(report)
