"""Local multi-process runs (FnApiRunner, multi_processing) run ``pipelines.worker`` processes, started as
standbys before the job imports Beam when ``pipelines.worker.prestart`` was called: the workers freeze their
start-up objects out of the collector and end without an interpreter teardown."""
import gc
import subprocess
import sys
import time

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines import local_runner, worker

MULTI = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
ONE_WORKER = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=1"]


def _where(_):
    main = sys.modules["__main__"]
    return getattr(main.__spec__, "name", None), gc.get_freeze_count() > 0, worker.STANDBY_FLAG in sys.argv


def _run(argv, expected):
    options = PipelineOptions(argv)
    runner = local_runner.local_runner(options)
    assert isinstance(runner, local_runner.MultiProcessRunner)
    with beam.Pipeline(runner=runner, options=options) as p:
        seen = p | beam.Create(range(8)) | beam.Map(_where) | beam.Distinct()
        assert_that(seen, equal_to(expected))
    return options


@pytest.fixture(autouse=True)
def no_standby_left():
    yield
    worker.discard_standby()


def test_multi_process_workers_run_the_lean_worker_and_the_options_keep_their_mode():
    options = _run(MULTI, [("pipelines.worker", True, False)])  # no prestart: the runner starts them
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"


def _start_environment(pid: int) -> dict:
    """The environment ``pid`` was started with. Until the child has exec'd, /proc shows its parent's
    start-up block instead (a fork's copy), so wait for the standby's own command line first."""
    deadline = time.monotonic() + 60
    while True:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if worker.STANDBY_FLAG.encode() in fh.read().split(b"\0"):
                break
        assert time.monotonic() < deadline, "the standby never started"
        time.sleep(0.01)
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)


def test_prestarted_standbys_become_the_runs_workers_with_the_jobs_memory_settings_from_their_start(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool()
    try:
        assert worker.prestart(MULTI, preload="pipelines.deliver") == 2
    finally:
        pa.set_memory_pool(before)
    standbys = list(worker._standby)
    for standby in standbys:  # read when each process started: before pyarrow and glibc's malloc set up
        env = _start_environment(standby.pid)
        assert env[b"MALLOC_ARENA_MAX"] == str(worker.MALLOC_ARENAS).encode()
        assert env[b"ARROW_DEFAULT_MEMORY_POOL"] == worker.ARROW_POOL.encode()
    _run(MULTI, [("pipelines.worker", True, True)])
    assert worker._standby == [] and [s.returncode for s in standbys] == [0, 0]


def test_a_dead_standby_is_replaced_by_a_worker_started_the_usual_way():
    assert worker.prestart(ONE_WORKER, preload="pipelines.deliver") == 1
    worker._standby[0].kill()
    worker._standby[0].wait()
    _run(ONE_WORKER, [("pipelines.worker", True, False)])
    assert worker._standby == []


def test_standbys_another_runner_does_not_use_are_stopped():
    worker.prestart(MULTI, preload="pipelines.deliver")
    standbys = list(worker._standby)
    assert local_runner.local_runner(PipelineOptions(["--runner=DirectRunner"])) is None
    assert worker._standby == [] and all(s.poll() is not None for s in standbys)


def test_a_standby_whose_job_has_gone_exits_quietly():
    standby = subprocess.Popen([sys.executable, "-m", "pipelines.worker", worker.STANDBY_FLAG, "pipelines.deliver"],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = standby.communicate(b"", timeout=120)  # end of file, as when the job's process exits
    assert standby.returncode == 0 and b"Traceback" not in err


@pytest.mark.parametrize("argv, workers", [
    (MULTI, 2), (["--direct_running_mode", "multi_processing", "--direct_num_workers", "3"], 3),
    (["--direct_running_mode=multi_processing"], 1), (["--direct_running_mode=multi_processing", "--direct_num_workers=0"],
                                                      worker.os.cpu_count()),
    (["--runner=FnApiRunner", "--direct_num_workers=2"], 0), (["--runner=DataflowRunner", *MULTI[1:]], 0),
    (["--direct_running_mode=multi_processing", "--direct_num_workers=two"], 0),
    (["--direct_running_mode=multi_processing", "--direct_num_work=2"], 1)])  # no abbreviations, as Beam
def test_the_workers_to_prestart_are_read_as_beam_reads_the_options(argv, workers):
    assert worker.local_workers(argv) == workers


@pytest.mark.parametrize("argv", [["--runner=FnApiRunner"], ["--runner=FnApiRunner", "--direct_num_workers=2"],
                                  ["--runner=DirectRunner", "--direct_running_mode=multi_processing"],
                                  ["--runner=DataflowRunner", "--direct_running_mode=multi_processing"]])
def test_other_runners_and_in_process_runs_keep_beams_runner(argv):
    assert local_runner.local_runner(PipelineOptions(argv)) is None


def test_exit_now_runs_the_exit_handlers_flushes_and_keeps_the_status():
    code = ("import atexit, sys; from pipelines.worker import exit_now; "
            "atexit.register(lambda: print('handler ran')); print('buffered', end=' '); "
            "sys.stderr.write('to stderr'); exit_now(3)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stdout == "buffered handler ran\n" and result.stderr == "to stderr"
