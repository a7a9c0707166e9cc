"""Worker processes for local multi-process runs, and the runner that starts them.

``--runner=FnApiRunner --direct_running_mode=multi_processing`` (how ``pipelines.deliver`` uses more than one
core when asked, and what the benchmark passes) starts ``--direct_num_workers`` worker processes. Beam starts them as
``python -m apache_beam.runners.worker.sdk_worker_main``; ``local_runner(options)`` gives the job an
``FnApiRunner`` that starts ``python -m pipelines.worker`` instead: the same SDK harness, with two changes
for a process that lives for one run only:

- the objects of start-up (Beam's, gRPC's and protobuf's modules: about 170,000) are frozen out of the
  garbage collector's view (``gc.freeze``), so its full collections stop walking them again and again;
- when the harness has finished, the process runs its exit handlers and ends without tearing down its
  interpreter (``os._exit``). Freeing a worker's heap object by object took about 0.55 s, and the runner
  stops its workers one after the other, so every run ended with a second or more of nothing but that.

A harness that fails raises as before (exit status 1, which fails the run). Other runners, and the
single-process FnApiRunner, are untouched.
"""
from __future__ import annotations

import atexit
import gc
import os
import sys

from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

WORKER_MODULE = "pipelines.worker"


class MultiProcessRunner(FnApiRunner):
    """FnApiRunner whose worker processes run ``pipelines.worker``."""

    def run_pipeline(self, pipeline, options):
        direct = options.view_as(DirectOptions)
        self._default_environment = SubprocessSDKEnvironment(command_string=worker_command())
        # In multi-processing mode run_pipeline would put Beam's own worker command back: let it see no mode
        # (the number of workers still comes from --direct_num_workers), then give the options theirs back.
        mode, direct.direct_running_mode = direct.direct_running_mode, None
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            direct.direct_running_mode = mode


def local_runner(options):
    """A ``MultiProcessRunner`` when ``options`` ask for the FnApiRunner in multi-processing mode; None
    otherwise (the pipeline then makes the runner its options name)."""
    if (options.view_as(StandardOptions).runner != "FnApiRunner"
            or options.view_as(DirectOptions).direct_running_mode != "multi_processing"):
        return None
    return MultiProcessRunner()


def worker_command() -> str:
    """A worker process's command line (the Python running this job, so the same environment)."""
    return f"{sys.executable} -m {WORKER_MODULE}"


def exit_now(status: int) -> None:
    """End this process with ``status`` the way a normal exit would, minus the interpreter's teardown: the
    exit handlers run (logging's flush, any runner's clean-up) and the standard streams are flushed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written anyway
            pass
    os._exit(status)


def main() -> None:
    from apache_beam.runners.worker import sdk_worker_main  # here: the job's own process never needs it

    gc.freeze()  # after the imports above and at the top: Beam, gRPC and protobuf are loaded by now
    sdk_worker_main.main(sys.argv)
    exit_now(0)


if __name__ == "__main__":
    main()
