"""A reverse proxy of the test suite's own that injects faults between a client and a local server.

moto cannot return 5xx or throttle, so the S3 tests put this proxy in front of it::

    proxy = FaultProxy("http://127.0.0.1:5000").start()     # proxy.url -> give it as endpoint_url
    proxy.add_rule(method="PUT", path_contains="/hour=", status=503, code="SlowDown", times=3)
    proxy.add_rule(method="PUT", path_contains="/hour=", status=503, times=2, after_forward=True)

A rule answers ``times`` matching requests with ``status`` and an S3-style XML error. With
``after_forward=True`` the request first reaches the server (the write happens) and only the response
is replaced: the client sees a failure for a write that succeeded, as when a connection drops after
the server committed. ``status=None`` with ``delay`` only slows responses. ``allow=lambda method, path:
...`` stands in for an IAM policy: anything it refuses gets 403 AccessDenied. Thread-safe; records
every request in ``proxy.seen``.
"""
from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Rule:
    method: str | None = None
    path_contains: str | None = None
    status: int | None = 503
    code: str = "SlowDown"
    times: int = 1
    after_forward: bool = False
    delay: float = 0.0
    hits: int = 0


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    # When set, a request it returns False for is answered 403 AccessDenied (an IAM policy stand-in).
    allow: Callable[[str, str], bool] | None = None
    # When set: rewrite(method, path, body) -> (body to forward, fn(status, response body) -> response body),
    # or (None, status, response body) to answer without forwarding, or None to leave the request alone.
    # Lets a test stand in for server behaviour an emulator lacks.
    rewrite: Callable | None = None

    def __post_init__(self):
        self._lock = threading.Lock()
        up = urlparse(self.upstream)
        self._up_host, self._up_port = up.hostname, up.port
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.allow is not None and not proxy.allow(self.command, unquote(self.path)):
                    return self._fault(Rule(status=403, code="AccessDenied"))
                rule = proxy._match(self.command, unquote(self.path))
                if rule is not None and rule.delay:
                    time.sleep(rule.delay)
                if rule is not None and rule.status is not None and not rule.after_forward:
                    return self._fault(rule)
                on_response = None
                if proxy.rewrite is not None:
                    changed = proxy.rewrite(self.command, unquote(self.path), body)
                    if changed is not None and changed[0] is None:
                        _, status, data = changed
                        return self._reply(status, [("Content-Type", "application/json")], data)
                    if changed is not None:
                        body, on_response = changed
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                if on_response is not None:
                    data = on_response(status, data)
                if rule is not None and rule.status is not None and rule.after_forward:
                    return self._fault(rule)
                self._reply(status, headers, data)

            def _reply(self, status, headers, data):
                with proxy._lock:
                    proxy.seen.append((self.command, self.path, status))
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _fault(self, rule):
                with proxy._lock:
                    proxy.seen.append((self.command, self.path, rule.status))
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                        f"<Message>injected by the test proxy</Message></Error>").encode()
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD response has no body; bytes here would corrupt the connection
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_rule(self, **kwargs) -> Rule:
        rule = Rule(**kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.hits >= rule.times:
                    continue
                if rule.method and rule.method != method:
                    continue
                if rule.path_contains and rule.path_contains not in path:
                    continue
                rule.hits += 1
                return rule
        return None

    def _forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP and k.lower() != "content-length"}
            fwd["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()
