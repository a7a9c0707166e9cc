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
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import apache_beam

from pipelines.problems import Parser

BEAM_VERSION = apache_beam.__version__
PRISM_MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
BEAM_JAR_CACHE = Path("~/.apache_beam/cache/jars").expanduser()  # Beam's own (subprocess_server.JAR_CACHE)
KAFKA_VERSION = "4.1.1"  # the broker the tests start (KRaft mode); a client-compatible release line
KAFKA_SCALA = "2.13"
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


def kafka_expansion_jar() -> Path:
    return BEAM_JAR_CACHE / f"beam-sdks-java-io-expansion-service-{BEAM_VERSION}.jar"


def kafka_libs() -> Path:
    return runtime_dir() / f"kafka_{KAFKA_SCALA}-{KAFKA_VERSION}" / "libs"


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


def fetch_kafka() -> int:
    """The broker (``kafka_2.13`` and its dependencies, KRaft mode) and Beam's Kafka expansion service."""
    mvn = _tool("mvn")
    if mvn is None:
        return 1
    libs = kafka_libs()
    status = 0
    if not (libs / f"kafka_{KAFKA_SCALA}-{KAFKA_VERSION}.jar").exists():
        with tempfile.TemporaryDirectory() as work:
            pom = Path(work) / "pom.xml"
            pom.write_text(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beamhouse</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{KAFKA_SCALA}</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId>
      <version>2.0.16</version></dependency>
  </dependencies>
</project>
""")
            staging = Path(work) / "libs"
            done = _run([mvn, "-B", "-q", "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
                         "-DincludeScope=runtime"], cwd=work)
            if done.returncode != 0 or not any(staging.glob("kafka_*.jar")):
                status = _failed(done, f"kafka {KAFKA_VERSION}")
            else:
                libs.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(libs, ignore_errors=True)
                shutil.move(str(staging), str(libs))
                print(f"kafka {KAFKA_VERSION}: {libs}")
    else:
        print(f"kafka {KAFKA_VERSION}: already at {libs}")
    jar = kafka_expansion_jar()
    return _maven_copy(f"org.apache.beam:beam-sdks-java-io-expansion-service:{BEAM_VERSION}", jar.parent,
                       jar.name) or status


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


def submits_only(options) -> bool:
    """Whether the run is a submission to a service that runs it (Dataflow): the command returns once the
    job is submitted, without waiting (a Flex Template launcher must return; a streaming job never ends).
    Its figures are then the job's counters (namespace ``beamhouse``) in the service's console."""
    from apache_beam.options.pipeline_options import StandardOptions

    return str(options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1] == "DataflowRunner"


def status() -> int:
    items = [("prism", prism_binary()), ("flink", flink_job_server_jar()), ("kafka broker", kafka_libs()),
             ("kafka expansion service", kafka_expansion_jar())]
    for what, path in items:
        print(f"{what:<24} {'fetched' if path.exists() else 'missing':<8} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pipelines.runtime", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch a runner's runtime (once; later runs need no network)")
    fetch.add_argument("what", choices=FETCHABLE, help="what to fetch.")
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
    if args.what == "prism":
        return fetch_prism()
    if args.what == "flink":
        return fetch_flink(args.flink_version)
    return fetch_kafka()


if __name__ == "__main__":
    sys.exit(main())
