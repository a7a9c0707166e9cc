"""Local multi-process runs start ``pipelines.worker`` processes (FnApiRunner, multi_processing): the
workers freeze their start-up objects out of the collector and end without an interpreter teardown."""
import gc
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines import worker

MULTI = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _where(_):
    main = sys.modules["__main__"]
    return getattr(main.__spec__, "name", None), gc.get_freeze_count() > 0


def test_multi_process_workers_run_the_lean_worker_and_the_options_keep_their_mode():
    options = PipelineOptions(MULTI)
    runner = worker.local_runner(options)
    assert isinstance(runner, worker.MultiProcessRunner)
    with beam.Pipeline(runner=runner, options=options) as p:
        seen = p | beam.Create(range(8)) | beam.Map(_where) | beam.Distinct()
        assert_that(seen, equal_to([("pipelines.worker", True)]))
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"


@pytest.mark.parametrize("argv", [["--runner=FnApiRunner"], ["--runner=FnApiRunner", "--direct_num_workers=2"],
                                  ["--runner=DirectRunner", "--direct_running_mode=multi_processing"],
                                  ["--runner=DataflowRunner", "--direct_running_mode=multi_processing"]])
def test_other_runners_and_in_process_runs_keep_beams_runner(argv):
    assert worker.local_runner(PipelineOptions(argv)) is None


def test_exit_now_runs_the_exit_handlers_flushes_and_keeps_the_status():
    code = ("import atexit, sys; from pipelines.worker import exit_now; "
            "atexit.register(lambda: print('handler ran')); print('buffered', end=' '); "
            "sys.stderr.write('to stderr'); exit_now(3)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stdout == "buffered handler ran\n" and result.stderr == "to stderr"
