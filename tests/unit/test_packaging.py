"""The Dockerfile and the Flex Template metadata stay in step with the code (no Docker engine here, so the
image itself is not built in CI; what it installs is what CI installs)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import orjson

from pipelines.options import DeliveryOptions

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_matches_the_beam_pin_and_installs_the_project():
    docker = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "setup.py").read_text()
    beam = re.search(r'"apache-beam\[gcp,aws\]==([\d.]+)"', setup).group(1)
    base = re.search(r"^FROM apache/beam_python(\d)\.(\d+)_sdk:([\d.]+)$", docker, re.M)
    assert base, "the image must start from Beam's Python SDK image"
    assert base.group(3) == beam
    assert (int(base.group(1)), int(base.group(2))) >= (3, 10)  # setup.py: python_requires >= 3.10
    assert "RUN pip install --no-cache-dir -c constraints.txt .\n" in docker  # the project, pinned versions, one install
    for path in ("pipelines", "transforms", "setup.py"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", docker, re.M)
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in docker
    assert ":latest" not in docker  # every base image pinned
    assert re.search(r"^ARG LAUNCHER_TAG=\d{8}_RC\d\d$", docker, re.M)
    entry = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/beamhouse/(\S+)", docker).group(1)
    assert (ROOT / entry).exists()


def test_the_image_constraints_pin_every_requirement_within_setup_py():
    """constraints.txt pins exact versions for the image; each must satisfy setup.py's own range, and every
    install requirement must be pinned there."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version.strip()
    setup = (ROOT / "setup.py").read_text()
    block = setup[setup.index("INSTALL_REQUIRES = ["):setup.index("]", setup.index("INSTALL_REQUIRES = ["))]
    for spec in re.findall(r'^\s*"([^"]+)",', block, re.M):
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req.specifier}"


def test_flex_template_parameters_are_options_of_the_job():
    metadata = orjson.loads((ROOT / "metadata.json").read_bytes())
    import argparse

    parser = argparse.ArgumentParser()
    DeliveryOptions._add_argparse_args(parser)
    known = {a.dest for a in parser._actions}
    for parameter in metadata["parameters"]:
        assert parameter["name"] in known, parameter["name"]
    assert sys.version_info >= (3, 10)


def test_malloc_arena_cap_reaches_workers_and_keeps_a_users_setting(monkeypatch):
    """Worker processes the job starts inherit MALLOC_ARENA_MAX (2 by default, as in the image); a value the
    user set is kept."""
    import subprocess

    from pipelines.memory import MALLOC_ARENAS, limit_malloc_arenas

    assert re.search(rf"^ENV MALLOC_ARENA_MAX={MALLOC_ARENAS}$", (ROOT / "Dockerfile").read_text(), re.M)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    limit_malloc_arenas()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_ARENA_MAX'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(MALLOC_ARENAS)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == "4"


def test_jemalloc_has_one_arena_for_the_job_and_its_workers_unless_set(monkeypatch):
    """Worker processes inherit JE_ARROW_MALLOC_CONF (one arena, as in the image), and Arrow's jemalloc in
    a process started with it reads it; a value the user set is kept."""
    import subprocess

    from pipelines.memory import JEMALLOC_CONF, lean_arrow_pool

    assert re.search(rf"^ENV JE_ARROW_MALLOC_CONF={JEMALLOC_CONF}$", (ROOT / "Dockerfile").read_text(), re.M)
    monkeypatch.delenv("JE_ARROW_MALLOC_CONF", raising=False)
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")  # this process's pool stays as it is
    lean_arrow_pool()
    # jemalloc reports a malformed option on standard error when it reads its options: a real option
    # passes silently, and the child sees exactly the default
    probe = ("import os, pyarrow as pa; pa.jemalloc_memory_pool(); pa.array(range(1000)); "
             "print(os.environ['JE_ARROW_MALLOC_CONF'])")
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == JEMALLOC_CONF and "Invalid conf" not in child.stderr
    monkeypatch.setenv("JE_ARROW_MALLOC_CONF", "narenas:2")
    lean_arrow_pool()
    assert os.environ["JE_ARROW_MALLOC_CONF"] == "narenas:2"


def test_arrow_pool_is_jemalloc_for_the_job_and_its_workers_unless_set(monkeypatch):
    """The job switches its own Arrow pool to jemalloc and its worker processes inherit
    ARROW_DEFAULT_MEMORY_POOL (as in the image); a value the user set is kept."""
    import subprocess

    import pyarrow as pa

    from pipelines.memory import ARROW_POOL, lean_arrow_pool

    assert re.search(rf"^ENV ARROW_DEFAULT_MEMORY_POOL={ARROW_POOL}$", (ROOT / "Dockerfile").read_text(), re.M)
    before = pa.default_memory_pool()
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    try:
        lean_arrow_pool()
        assert pa.default_memory_pool().backend_name == ARROW_POOL
        probe = "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
        child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        assert child.stdout.strip() == ARROW_POOL
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
        pa.set_memory_pool(before)
        lean_arrow_pool()
        assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system"
        assert pa.default_memory_pool().backend_name == before.backend_name
    finally:
        pa.set_memory_pool(before)


def test_only_a_dataflow_launch_returns_without_waiting():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.runtime import submits_only

    assert submits_only(PipelineOptions(["--runner=DataflowRunner"]))
    assert submits_only(PipelineOptions(["--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"]))
    for runner in ("FnApiRunner", "PrismRunner", "FlinkRunner", "DirectRunner", None):
        assert not submits_only(PipelineOptions([f"--runner={runner}"] if runner else []))
