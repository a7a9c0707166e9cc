"""The fast local start (``pipelines.local``) is the one place that leans on Beam's private internals. These
tests fail loudly when Beam changes underneath it, check that it switches off cleanly (another runner, the
switch, another Beam), and that the production path never imports it (a switched-off run:
tests/integration/test_worker.py). No Beam runner runs here."""
from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys

import pytest

from pipelines import local
from tests.guarantees.invariants import REPO

# What pipelines/local/multiprocess.py and standby.py copy, override or rely on, with the sha256 (first 16 hex
# digits) of its source in the apache-beam named by local.TESTED_BEAM. When Beam is upgraded and one differs:
# read the new source, bring multiprocess.py/standby.py in line with it (or drop what no longer pays), then
# update local.TESTED_BEAM and these digests.
BEAM_INTERNALS = {
    "apache_beam.runners.portability.local_job_service:SubprocessSdkWorker.__init__": "07531c4c96136f85",
    "apache_beam.runners.portability.local_job_service:SubprocessSdkWorker.run": "e6aa3e5430e191ab",
    "apache_beam.runners.portability.fn_api_runner.worker_handlers:SubprocessSdkWorkerHandler.__init__":
        "37f09bf76852ce2a",
    "apache_beam.runners.portability.fn_api_runner.worker_handlers:SubprocessSdkWorkerHandler.start_worker":
        "eb622509cbc26327",
    "apache_beam.runners.portability.fn_api_runner.fn_runner:FnApiRunner.run_pipeline": "57b095d879a6b7a8",
    "apache_beam.transforms.environments:SubprocessSDKEnvironment.__init__": "83abefbaa707e6c2",
    "apache_beam.runners.worker.sdk_worker_main:main": "fea9481fce5034ee",
}


def _resolve(name: str):
    import importlib

    module, _, path = name.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_the_installed_beam_is_the_one_the_fast_start_was_checked_against():
    assert local.installed_beam() == local.TESTED_BEAM, (
        f"apache-beam is {local.installed_beam()}, the fast local start was checked against {local.TESTED_BEAM}: "
        "re-check pipelines/local/ against the new Beam (see BEAM_INTERNALS in this file)")


@pytest.mark.parametrize("name", sorted(BEAM_INTERNALS))
def test_beams_code_under_the_fast_start_has_not_changed(name):
    digest = hashlib.sha256(inspect.getsource(_resolve(name)).encode()).hexdigest()[:16]
    assert digest == BEAM_INTERNALS[name], (
        f"{name} changed in apache-beam {local.installed_beam()}: re-read it, bring pipelines/local/ in line, "
        "then update local.TESTED_BEAM and BEAM_INTERNALS")


def test_beams_names_the_fast_start_uses_are_there():
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    assert hasattr(local_job_service, "BeamFnLoggingServicer")
    assert hasattr(worker_handlers, "SUBPROCESS_LOCK")
    assert callable(worker_handlers.WorkerHandler.register_environment)


MP = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.mark.parametrize(("argv", "env", "beam", "expected"), [
    (MP, {}, local.TESTED_BEAM, True),
    (["--runner=FnApiRunner", *MP], {}, local.TESTED_BEAM, True),
    (["--runner=FnApiRunner", *MP], {local.SWITCH: "on"}, local.TESTED_BEAM, True),
    ([], {}, local.TESTED_BEAM, False),  # in process: nothing measurable to gain
    (["--runner=FnApiRunner", "--direct_running_mode=in_memory"], {}, local.TESTED_BEAM, False),
    (["--runner=PrismRunner", *MP], {}, local.TESTED_BEAM, False),
    (["--runner=DataflowRunner", *MP], {}, local.TESTED_BEAM, False),
    (["--runner=FlinkRunner", *MP], {}, local.TESTED_BEAM, False),
    (["--runner=FnApiRunner", *MP], {local.SWITCH: "off"}, local.TESTED_BEAM, False),
    (["--runner=FnApiRunner", *MP], {}, "9.99.0", False),
])
def test_the_fast_start_is_for_local_multi_process_runs_with_the_switch_on_and_the_checked_beam(argv, env, beam, expected,
                                                                                          monkeypatch):
    monkeypatch.delenv(local.SWITCH, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(local, "installed_beam", lambda: beam)
    assert local.fast_start(argv) is expected


def test_the_production_path_imports_none_of_it():
    # A Dataflow/Flink launch, and a local run with the switch off, build their runner without loading the
    # modules that hold Beam's internals.
    code = ("import os, sys; from apache_beam.options.pipeline_options import PipelineOptions; "
            "import pipelines.deliver, pipelines.regenerate; from pipelines import local; "
            "argv = ['--runner=DataflowRunner', '--direct_running_mode=multi_processing']; "
            "assert local.runner(argv, PipelineOptions(argv)) is None; "
            "os.environ['BEAMHOUSE_FAST_START'] = 'off'; "
            "argv = ['--runner=FnApiRunner', '--direct_running_mode=multi_processing']; "
            "assert local.runner(argv, PipelineOptions(argv)) is None; "
            "print(sorted(m for m in sys.modules if m.startswith('pipelines.local.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
