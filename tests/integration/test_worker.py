"""Local multi-process runs (FnApiRunner, multi_processing) run ``pipelines.local.standby`` processes, started as
standbys before the job imports Beam when ``pipelines.local.standby.prestart`` was called (on Linux one standby,
which forks the other workers and becomes the last one itself): the workers freeze their start-up objects out
of the collector (imported with collection off, run with it on) and end without an interpreter teardown."""
import gc
import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
import orjson
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines import memory
from pipelines.local import SWITCH
from pipelines.local import multiprocess as local_runner
from pipelines.local import standby as worker
from tests.guarantees.invariants import deliver

MULTI = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
ONE_WORKER = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=1"]


def _where(_):
    main = sys.modules["__main__"]
    return (getattr(main.__spec__, "name", None), gc.get_freeze_count() > 0, gc.isenabled(),
            worker.STANDBY_FLAG in sys.argv)


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
    options = _run(MULTI, [("pipelines.local.standby", True, True, False)])  # no prestart: the runner starts them
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


def _where_and_parent(_, parent):
    return (*_where(_), os.getppid() == parent)


def _run_taking(argv, expected, monkeypatch):
    """``_run`` with the job's process as the expected parent of every worker; returns the processes the
    runner took from the standbys, in the order it took them."""
    taken, take = [], worker.take_standby
    monkeypatch.setattr(worker, "take_standby", lambda env: taken.append(take(env)) or taken[-1])
    options = PipelineOptions(argv)
    with beam.Pipeline(runner=local_runner.local_runner(options), options=options) as p:
        seen = p | beam.Create(range(8)) | beam.Map(_where_and_parent, os.getpid()) | beam.Distinct()
        assert_that(seen, equal_to(expected))
    return taken


def test_one_prestarted_standby_forks_the_runs_workers_with_the_jobs_memory_settings_from_its_start(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.delenv("JE_ARROW_MALLOC_CONF", raising=False)
    before = pa.default_memory_pool()
    try:
        assert worker.prestart(MULTI, preload="pipelines.deliver") == 2
    finally:
        pa.set_memory_pool(before)
    standbys = list(worker._standby)
    assert [s.forks for s in standbys] == [1]  # Linux: one standby imports for both workers
    env = _start_environment(standbys[0].pid)  # read when it started: before pyarrow and glibc's malloc set up
    assert env[b"MALLOC_ARENA_MAX"] == str(memory.MALLOC_ARENAS).encode()
    assert env[b"ARROW_DEFAULT_MEMORY_POOL"] == memory.ARROW_POOL.encode()
    assert env[b"JE_ARROW_MALLOC_CONF"] == memory.JEMALLOC_CONF.encode()
    taken = _run_taking(MULTI, [("pipelines.local.standby", True, True, True, True)], monkeypatch)
    # the first worker is forked from the standby, which then becomes the second; both are the job's children
    assert [type(p) for p in taken] == [worker.ForkedWorker, worker._Standby]
    assert worker._standby == [] and [p.returncode for p in taken] == [0, 0]


def test_without_adoption_each_worker_is_a_standby_of_its_own(monkeypatch):
    monkeypatch.setattr(worker, "adopt_orphans", lambda: False)  # as where there is no child subreaper
    assert worker.prestart(MULTI, preload="pipelines.deliver") == 2
    assert [s.forks for s in worker._standby] == [0, 0]
    taken = _run_taking(MULTI, [("pipelines.local.standby", True, True, True, True)], monkeypatch)
    assert [type(p) for p in taken] == [worker._Standby] * 2 and [p.returncode for p in taken] == [0, 0]


def test_a_forked_worker_is_the_jobs_child_and_its_exit_status_reaches_the_job():
    assert worker.prestart(MULTI, preload="pipelines.deliver") == 2
    forked = worker.take_standby({})  # no control address: Beam's harness fails at once
    assert isinstance(forked, worker.ForkedWorker)
    with open(f"/proc/{forked.pid}/stat") as fh:  # still there until reaped, even once it has exited
        assert int(fh.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    assert forked.wait() == 1 and forked.poll() == 1
    forked.kill()  # a no-op once reaped


def test_a_forked_worker_can_be_stopped():
    pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ)
    handle = worker.ForkedWorker(pid)
    assert handle.poll() is None
    handle.kill()
    assert handle.wait() == -signal.SIGKILL and handle.poll() == -signal.SIGKILL


@pytest.mark.parametrize("argv", [ONE_WORKER, MULTI])
def test_a_dead_standby_is_replaced_by_workers_started_the_usual_way(argv):
    assert worker.prestart(argv, preload="pipelines.deliver") == worker.local_workers(argv)
    for standby in worker._standby:
        standby.kill()
        standby.wait()
    _run(argv, [("pipelines.local.standby", True, True, False)])
    assert worker._standby == []


def test_standbys_another_runner_does_not_use_are_stopped():
    worker.prestart(MULTI, preload="pipelines.deliver")
    standbys = list(worker._standby)
    assert local_runner.local_runner(PipelineOptions(["--runner=DirectRunner"])) is None
    assert worker._standby == [] and all(s.poll() is not None for s in standbys)


@pytest.mark.parametrize("forks", [0, 1])
def test_a_standby_whose_job_has_gone_exits_quietly(forks):
    read, write = os.pipe()
    standby = subprocess.Popen([sys.executable, "-m", "pipelines.local.standby", worker.STANDBY_FLAG, "pipelines.deliver",
                                str(forks), str(write)], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                               pass_fds=(write,))
    os.close(write)
    _, err = standby.communicate(b"", timeout=120)  # end of file, as when the job's process exits
    with os.fdopen(read, "rb") as replies:
        assert replies.read() == b""  # no worker was forked
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
    code = ("import atexit, sys; from pipelines.local.standby import exit_now; "
            "atexit.register(lambda: print('handler ran')); print('buffered', end=' '); "
            "sys.stderr.write('to stderr'); exit_now(3)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stdout == "buffered handler ran\n" and result.stderr == "to stderr"


def test_the_jobs_process_imports_with_collection_off_and_runs_with_it_on():
    # The job's own process (python -m pipelines.deliver) loads Beam with the collector off, then freezes
    # what loading made and turns collection back on before the run: a full collection while importing
    # would walk every object Beam made so far.
    code = ("import atexit, gc, runpy, sys; "
            "atexit.register(lambda: print(gc.isenabled(), gc.get_freeze_count() > 0, "
            "gc.get_stats()[2]['collections'])); "
            "sys.argv = ['deliver', '--integrations=/nonexistent/i.json', '--input=/nonexistent/*.ndjson']; "
            "runpy.run_module('pipelines.deliver', run_name='__main__', alter_sys=True)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # the configuration error, reported as such
    assert done.stdout.split() == ["True", "True", "0"]  # collecting, frozen, and no full collection so far


def _lake(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not {"_reports", "_ledger"} & set(p.parts)}  # the ledger's id files hold ids in arrival order


def test_switched_off_a_multi_process_run_delivers_what_the_fast_start_delivers(tmp_path):
    from tests import eventgen

    lines, _truth = eventgen.generate(n=400, seed=11)
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    lakes = {}
    for switch in ("on", "off"):
        root = tmp_path / switch
        (tmp_path / f"{switch}.json").write_bytes(orjson.dumps([{"source_id": "src_example", "vendor": "files",
                                                                  "name": "Lake",
                                                                  "config": {"path": str(root / "lake")}}]))
        done = deliver(f"--integrations={tmp_path / f'{switch}.json'}", f"--input={tmp_path / 'in.ndjson'}",
                       f"--dead_letter={root / 'dead'}", "--runner=FnApiRunner",
                       "--direct_running_mode=multi_processing", "--direct_num_workers=2",
                       env={SWITCH: switch})
        assert done.returncode == 0, done.stderr
        lakes[switch] = _lake(root / "lake")
    assert lakes["on"] and lakes["on"] == lakes["off"]
