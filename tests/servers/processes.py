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


BQEMULATOR_PINS = ["bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy"]


def bqemulator_venv(cache_dir: str) -> str:
    """A virtualenv of its own for bqemulator (its duckdb and sqlglot pins clash with the project's),
    created once under ``cache_dir``. Returns its ``bin`` directory."""
    import hashlib as _hashlib

    tag = _hashlib.sha256(" ".join(BQEMULATOR_PINS).encode()).hexdigest()[:12]
    venv = os.path.join(cache_dir, f"bqemulator-{tag}")
    done = os.path.join(venv, ".installed")
    if not os.path.exists(done):
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, timeout=120)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", *BQEMULATOR_PINS], check=True,
                       timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        open(done, "w").close()
    return os.path.join(venv, "bin")


def start_bqemulator(cache_dir: str, project: str = "test-proj") -> Server:
    """bqemulator on free ports. It loads DuckDB's spatial extension at start-up and cannot download it
    offline: the wheel's copy is placed where DuckDB looks, under a HOME of its own."""
    import glob
    import shutil

    bin_dir = bqemulator_venv(cache_dir)
    home = os.path.join(cache_dir, "bqemulator-home")
    target = os.path.join(home, ".duckdb", "extensions", "v1.5.5", "linux_amd64")
    if not os.path.exists(os.path.join(target, "spatial.duckdb_extension")):
        os.makedirs(target, exist_ok=True)
        [wheel_copy] = glob.glob(os.path.join(os.path.dirname(bin_dir), "lib", "python*", "site-packages",
                                              "duckdb_extension_spatial", "extensions", "v1.5.5",
                                              "spatial.duckdb_extension"))
        shutil.copy(wheel_copy, target)
    rest, grpc = free_port(), free_port()
    return start("bqemulator", [os.path.join(bin_dir, "bqemulator"), "start", "--rest-port", str(rest),
                                "--grpc-port", str(grpc), "--project", project, "--log-level", "warning"],
                 f"http://127.0.0.1:{rest}", probe_path=f"/bigquery/v2/projects/{project}/datasets",
                 timeout=60, env={"HOME": home})


def start_fakesnow() -> Server:
    """fakesnow's server with the emulation fixes of ``tests.servers.fakesnow_server``."""
    port = free_port()
    return start("fakesnow", [sys.executable, "-m", "tests.servers.fakesnow_server", "--port", str(port)],
                 f"http://127.0.0.1:{port}", timeout=60)


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on a loopback port (trust authentication, one test database)."""

    port: int
    data_dir: str
    as_user: list

    def stop(self) -> None:
        import shutil

        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", self.data_dir, "-m", "immediate", "-w", "-t", "30",
                        "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(os.path.dirname(self.data_dir), ignore_errors=True)


def _pg_bin(name: str) -> str:
    import glob
    import shutil

    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (.ci/run installs the postgresql package)")
    return found if isinstance(found, str) else found[0]


def start_postgres(database: str = "analytics") -> Postgres:
    """initdb + pg_ctl start on a free port; as the ``postgres`` user when running as root (PostgreSQL
    refuses to run as root). Creates ``database``."""
    root = tempfile.mkdtemp(prefix="beamhouse-pg-")
    data = os.path.join(root, "data")
    as_user = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120, check=True)
    subprocess.run([*as_user, _pg_bin("initdb"), "-A", "trust", "-U", "postgres", "-D", data, "-E", "UTF8",
                    "--no-sync"], **quiet)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w",
                    "-t", "60", "start"], **quiet)
    server = Postgres(port, data, as_user)
    subprocess.run([*as_user, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
                   **quiet)
    return server


def start_pubsub(project: str = "test-proj") -> Server:
    """gcloud's Pub/Sub emulator (Java; about 10 s). Its java child is in the same process group, which
    ``Server.stop`` ends as a whole. Clients find it through ``PUBSUB_EMULATOR_HOST``."""
    port = free_port()
    return start("pubsub-emulator", ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}",
                                     f"--project={project}", "--quiet"], f"http://127.0.0.1:{port}", timeout=90)


def start_job_service() -> Server:
    """Beam's local job service (the portable path Flink uses), on a free port. Jobs submitted to it run on
    the portable FnApiRunner; with ``--environment_type=LOOPBACK`` the SDK workers run in the submitting
    process."""
    import socket as _socket

    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("job-service", f"localhost:{port}", process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"job service exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            _socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("job service did not start")
