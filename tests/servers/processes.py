"""Start and stop the local servers the tests talk to: each on 127.0.0.1, on a free port, in its own
process group, with every wait bounded."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start(name: str, argv: list[str], url: str, probe_path: str = "/", timeout: float = 30.0, env=None) -> Server:
    """Run ``argv`` and wait until ``url + probe_path`` answers any HTTP status."""
    # The server's log goes to a file: a pipe nobody reads fills up and blocks the server mid-request.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    server = Server(name, url, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            err = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {process.returncode}: {err}")
        try:
            urllib.request.urlopen(url + probe_path, timeout=2).close()
            return server
        except urllib.error.HTTPError:
            return server  # it answers
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer on {url} within {timeout} s")


def start_moto() -> Server:
    port = free_port()
    return start("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 f"http://127.0.0.1:{port}", probe_path="/moto-api/")


def start_gcs(unusable_kms_keys=()) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "tests.servers.gcs_emulator", "--port", str(port)]
    for key in unusable_kms_keys:
        argv += ["--unusable-kms-key", key]
    return start("gcs-emulator", argv, f"http://127.0.0.1:{port}", probe_path="/storage/v1/b")
