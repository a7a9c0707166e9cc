"""Fetch what a runner needs, once, before any run (never at run time).

    python -m pipelines.runtime fetch prism    # Beam's Prism runner, built by `go install` (Go module proxy)
    python -m pipelines.runtime fetch flink    # Beam's Flink job server jar (Maven Central, via `mvn`)
    python -m pipelines.runtime fetch kafka    # a Kafka broker's jars and Beam's Kafka expansion service jar
    python -m pipelines.runtime status         # what is fetched, and where

Where things go: Prism and the Kafka broker under ``$BEAMHOUSE_RUNTIME_DIR`` (default
``~/.cache/beamhouse/runtime``), one folder per Beam version; Beam's jars where Beam itself looks for them,
``~/.apache_beam/cache/jars``, so ``--runner=FlinkRunner --flink_master=[local]`` and cross-language
transforms find them with no network. ``pipelines.deliver`` and ``pipelines.regenerate`` call
``runner_problems`` at start: ``--runner=PrismRunner`` without ``--prism_location`` uses the fetched binary,
and a runner whose runtime is missing fails at once (exit 2) naming the fetch command, instead of Beam's
download attempt at run time.

Needs: ``go`` (Go 1.22+) for Prism, ``mvn`` and Java 11+ for the jars.
Exit status: 0 fetched (or already there), 1 the fetch failed (the tool's own message is printed), 2 usage.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apache_beam

from pipelines.problems import Parser

BEAM_VERSION = apache_beam.__version__
PRISM_MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
BEAM_JAR_CACHE = Path("~/.apache_beam/cache/jars").expanduser()  # Beam's own (subprocess_server.JAR_CACHE)
KAFKA_VERSION = "4.1.1"  # the broker the tests start (KRaft mode); a client-compatible release line
KAFKA_SCALA = "2.13"
# Beam's Java side of ReadFromKafka. Maven Central as reachable here serves no shaded expansion-service jar
# (beam-sdks-java-io-expansion-service) for the Python SDK's version, but it serves the modules it is built
# from; 2.73.0 is the newest whose io-kafka, expansion-service and harness resolve together. The expansion
# protocol is stable across releases: the Python SDK's ReadFromKafka expands against it (tested on Prism).
BEAM_JAVA_KAFKA = "2.73.0"
JAVA_KAFKA_CLIENTS = "3.9.1"
FETCHABLE = ("prism", "flink", "kafka")


def runtime_dir() -> Path:
    return Path(os.environ.get("BEAMHOUSE_RUNTIME_DIR", "~/.cache/beamhouse/runtime")).expanduser() / BEAM_VERSION


def prism_binary() -> Path:
    return runtime_dir() / "bin" / "prism"


def default_flink_version() -> str:
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    return FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS[-1]


def flink_job_server_jar(flink_version: str | None = None) -> Path:
    """Where Beam looks for the job server of ``flink_version`` (its download cache, named by the URL)."""
    return BEAM_JAR_CACHE / f"beam-runners-flink-{flink_version or default_flink_version()}-job-server-{BEAM_VERSION}.jar"


def kafka_libs() -> Path:
    return runtime_dir() / f"kafka_{KAFKA_SCALA}-{KAFKA_VERSION}" / "libs"


def kafka_expansion_libs() -> Path:
    """The classpath of Beam's Kafka expansion service and Java worker pool (``fetch kafka``)."""
    return runtime_dir() / f"beam-java-kafka-{BEAM_JAVA_KAFKA}" / "libs"


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _tool(name: str) -> str | None:
    path = shutil.which(name)
    if path is None:
        print(f"{name} is not installed: it is needed to fetch this runtime", file=sys.stderr)
    return path


def _failed(done: subprocess.CompletedProcess, what: str) -> int:
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    wanted = ([ln for ln in lines if any(k in ln for k in ("Could not find artifact", "Could not resolve",
                                                          "Unable to find artifact", "was not found"))]
              or [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()])
    print(f"fetching {what} failed (exit {done.returncode}):", file=sys.stderr)
    for line in (wanted or lines)[-8:]:
        print(f"  {line.strip()[:400]}", file=sys.stderr)
    return 1


def fetch_prism() -> int:
    """``go install`` of Prism at the SDK's own version into the runtime folder."""
    target = prism_binary()
    if target.exists():
        print(f"prism {BEAM_VERSION}: already at {target}")
        return 0
    go = _tool("go")
    if go is None:
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target.parent), "CGO_ENABLED": "0"}
    done = _run([go, "install", f"{PRISM_MODULE}@v{BEAM_VERSION}"], env=env)
    if done.returncode != 0 or not target.exists():
        return _failed(done, f"prism {BEAM_VERSION}")
    print(f"prism {BEAM_VERSION}: {target}")
    return 0


def _maven_copy(coordinates: str, destination: Path, name: str) -> int:
    """``mvn dependency:copy`` of one artifact into ``destination`` under ``name``."""
    mvn = _tool("mvn")
    if mvn is None:
        return 1
    if (destination / name).exists():
        print(f"{name}: already at {destination}")
        return 0
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        done = _run([mvn, "-B", "-q", "dependency:copy", f"-Dartifact={coordinates}",
                     f"-DoutputDirectory={work}", "-Dmdep.stripVersion=false"], cwd=work)
        jars = list(Path(work).glob("*.jar"))
        if done.returncode != 0 or not jars:
            return _failed(done, coordinates)
        os.replace(jars[0], destination / name)  # whole or not at all: Beam trusts a jar it finds
    print(f"{name}: {destination}")
    return 0


def fetch_flink(flink_version: str | None = None) -> int:
    version = flink_version or default_flink_version()
    jar = flink_job_server_jar(version)
    return _maven_copy(f"org.apache.beam:beam-runners-flink-{version}-job-server:{BEAM_VERSION}", jar.parent, jar.name)


def _maven_libs(dependencies: str, destination: Path, what: str) -> int:
    """``mvn dependency:copy-dependencies`` of ``dependencies`` (pom ``<dependency>`` elements) with what they
    need at run time, into ``destination``, whole or not at all."""
    mvn = _tool("mvn")
    if mvn is None:
        return 1
    if destination.is_dir() and any(destination.glob("*.jar")):
        print(f"{what}: already at {destination}")
        return 0
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "pom.xml").write_text(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beamhouse</groupId><artifactId>runtime</artifactId><version>1</version>
  <dependencies>{dependencies}
  </dependencies>
</project>
""")
        staging = Path(work) / "libs"
        done = _run([mvn, "-B", "-q", "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
                     "-DincludeScope=runtime"], cwd=work)
        if done.returncode != 0 or not any(staging.glob("*.jar")):
            return _failed(done, what)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(destination, ignore_errors=True)
        shutil.move(str(staging), str(destination))
    print(f"{what}: {destination}")
    return 0


def _dependency(group: str, artifact: str, version: str, exclude: str = "") -> str:
    exclusions = f"<exclusions><exclusion><groupId>{exclude}</groupId><artifactId>*</artifactId></exclusion>" \
                 "</exclusions>" if exclude else ""
    return (f"\n    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version>{exclusions}</dependency>")


def fetch_kafka() -> int:
    """A Kafka broker (``kafka_2.13`` and its dependencies, KRaft mode) and Beam's Java side of
    ``ReadFromKafka``: the Kafka IO, the expansion service and the Java SDK harness (run as a worker pool for
    local runners), without Confluent's schema-registry serializers (not on Maven Central)."""
    broker = _maven_libs(_dependency("org.apache.kafka", f"kafka_{KAFKA_SCALA}", KAFKA_VERSION)
                         + _dependency("org.slf4j", "slf4j-simple", "2.0.16"),
                         kafka_libs(), f"kafka {KAFKA_VERSION}")
    beam_java = "org.apache.beam"
    expansion = _maven_libs(_dependency(beam_java, "beam-sdks-java-io-kafka", BEAM_JAVA_KAFKA, exclude="io.confluent")
                            + _dependency(beam_java, "beam-sdks-java-expansion-service", BEAM_JAVA_KAFKA)
                            + _dependency(beam_java, "beam-sdks-java-harness", BEAM_JAVA_KAFKA)
                            + _dependency("org.apache.kafka", "kafka-clients", JAVA_KAFKA_CLIENTS)
                            + _dependency("com.github.jbellis", "jamm", "0.4.0")  # the harness's memory meter
                            + _dependency("org.slf4j", "slf4j-simple", "2.0.16"),
                            kafka_expansion_libs(), f"Beam {BEAM_JAVA_KAFKA} Kafka expansion service")
    return broker or expansion


JAVA_LOG_LEVEL = "warn"  # the Java services' own logging (slf4j-simple), on the job's standard error


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    """Return once ``process`` listens on 127.0.0.1:``port``; raise if it exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start (status {process.returncode}); see its messages above")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def _die_with_parent() -> None:
    """In a child before exec (Linux): be sent SIGTERM when the job's process dies, even by SIGKILL."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


@contextlib.contextmanager
def kafka_expansion_service(local_workers: bool):
    """Beam's Kafka expansion service, started from the fetched classpath (``fetch kafka``) for the time of a
    run; yields its address for ``ReadFromKafka(expansion_service=...)``.

    With ``local_workers`` (Prism: the runner's Java steps run on this machine) it also starts Beam's Java
    worker pool and has the expansion service give ReadFromKafka that pool as its environment (``EXTERNAL``),
    so no Docker is needed. Otherwise the environment is Beam's default (its Java SDK container, as Dataflow
    and a Flink cluster run it). Both processes are stopped when the block ends."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not installed: Kafka's reader is Beam's Java KafkaIO")
    classpath = str(kafka_expansion_libs() / "*")
    started: list[subprocess.Popen] = []

    def start(main_class: str, args: list[str], port: int, what: str, heap: str, **popen) -> None:
        started.append(subprocess.Popen(
            [java, f"-Xmx{heap}", f"-Dorg.slf4j.simpleLogger.defaultLogLevel={JAVA_LOG_LEVEL}", "-cp", classpath,
             main_class, *args], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, **popen))
        wait_for_port(port, started[-1], what)

    try:
        environment = []
        if local_workers:
            pool = _free_port()
            options = json.dumps({"options": {"defaultEnvironmentConfig": f"localhost:{pool}"}})
            start("org.apache.beam.fn.harness.ExternalWorkerService", [], pool, "Beam's Java worker pool", "1g",
                  env={**os.environ, "PIPELINE_OPTIONS": options})
            environment = ["--defaultEnvironmentType=EXTERNAL", f"--defaultEnvironmentConfig=localhost:{pool}"]
        port = _free_port()
        start("org.apache.beam.sdk.expansion.service.ExpansionService", [str(port), *environment], port,
              "Beam's Kafka expansion service", "512m", stdout=subprocess.DEVNULL)
        yield f"localhost:{port}"
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def runner_problems(options) -> list[str]:
    """Start-up check of the chosen runner's runtime; fills in ``--prism_location`` from the fetched binary.
    Returns problems (each names the fetch command), empty when the runner can start without a network."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PrismRunnerOptions, StandardOptions

    runner = str(options.view_as(StandardOptions).runner or "")
    name = runner.rsplit(".", 1)[-1]
    problems = []
    if name == "PrismRunner":
        prism = options.view_as(PrismRunnerOptions)
        if not prism.prism_location:
            if prism_binary().exists():
                prism.prism_location = str(prism_binary())
            else:
                problems.append(f"--runner=PrismRunner: Prism {BEAM_VERSION} is not fetched; run "
                                "python -m pipelines.runtime fetch prism (or give --prism_location)")
    elif name == "FlinkRunner":
        flink = options.view_as(FlinkRunnerOptions)
        embedded = flink.flink_master in ("[local]", "[auto]")
        if embedded and not flink.flink_job_server_jar and not flink_job_server_jar(flink.flink_version).exists():
            problems.append(f"--runner=FlinkRunner: the Flink {flink.flink_version} job server for Beam {BEAM_VERSION} "
                            f"is not fetched; run python -m pipelines.runtime fetch flink"
                            + ("" if flink.flink_version == default_flink_version()
                               else f" --flink_version {flink.flink_version}")
                            + " (or give --flink_job_server_jar)")
    return problems


def kafka_problems(options) -> list[str]:
    """Start-up check of a Kafka source: a runner that runs Beam's Java KafkaIO, and its Java side fetched."""
    from apache_beam.options.pipeline_options import StandardOptions

    name = str(options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1]
    problems = []
    if name in ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "TestDirectRunner", "FnApiRunner"):
        problems.append(f"--kafka_topic: the {name}'s engines cannot run Beam's Java KafkaIO; use --runner=PrismRunner "
                        "(the default for Kafka), FlinkRunner or DataflowRunner")
    if not kafka_expansion_libs().is_dir():
        problems.append(f"--kafka_topic: Beam's Kafka expansion service ({BEAM_JAVA_KAFKA}) is not fetched; run "
                        "python -m pipelines.runtime fetch kafka")
    return problems


def submits_only(options) -> bool:
    """Whether the run is a submission to a service that runs it (Dataflow): the command returns once the
    job is submitted, without waiting (a Flex Template launcher must return; a streaming job never ends).
    Its figures are then the job's counters (namespace ``beamhouse``) in the service's console."""
    from apache_beam.options.pipeline_options import StandardOptions

    return str(options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1] == "DataflowRunner"


def status() -> int:
    items = [("prism", prism_binary()), ("flink", flink_job_server_jar()), ("kafka broker", kafka_libs()),
             ("kafka expansion service", kafka_expansion_libs())]
    for what, path in items:
        print(f"{what:<24} {'fetched' if path.exists() else 'missing':<8} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pipelines.runtime", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch a runner's runtime (once; later runs need no network)")
    fetch.add_argument("what", choices=FETCHABLE, nargs="+", help="what to fetch (one or more).")
    fetch.add_argument("--flink_version", default=None,
                       help="Flink version of the job server (default: the newest Beam publishes)")
    sub.add_parser("status", help="what is fetched, and where")
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command == "status":
        return status()
    fetchers = {"prism": fetch_prism, "flink": lambda: fetch_flink(args.flink_version), "kafka": fetch_kafka}
    failed = [what for what in dict.fromkeys(args.what) if fetchers[what]() != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
