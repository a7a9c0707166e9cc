"""The runner for local multi-process runs: Beam's ``FnApiRunner`` with ``pipelines.local.standby`` processes.

    p = beam.Pipeline(runner=local_runner(options), options=options)

``local_runner`` returns None (so the pipeline makes the runner its options name) unless the options ask
for ``--runner=FnApiRunner --direct_running_mode=multi_processing``. Then its workers run
``pipelines.local.standby``, and each one the runner starts is a standby that ``pipelines.local.standby.prestart`` began
before the job imported Beam (on Linux, or a worker that standby forked), when there is one left (see that
module for why).

How: the pipeline's default environment is ``PrestartedEnvironment`` (Beam's subprocess environment under its
own URN, the same command line), and the runner makes that URN's workers with ``PrestartedWorkerHandler``,
which gives the new worker's environment to a standby instead of starting a process.
"""
from __future__ import annotations

import os
import subprocess
import threading

import grpc
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers
from apache_beam.transforms.environments import Environment, SubprocessSDKEnvironment
from apache_beam.utils import thread_pool_executor
from google.protobuf import json_format, text_format

from pipelines.local import standby

PRESTARTED_URN = "beamhouse:env:prestarted_python:v1"


@Environment.register_urn(PRESTARTED_URN, bytes)
class PrestartedEnvironment(SubprocessSDKEnvironment):
    """Beam's subprocess environment (``command_string`` starts a worker) whose workers may be standbys."""

    def to_runner_api_parameter(self, context):
        return PRESTARTED_URN, self.command_string.encode("utf-8")

    @staticmethod
    def from_runner_api_parameter(payload, capabilities, artifacts, resource_hints, context):
        return PrestartedEnvironment(payload.decode("utf-8"), capabilities, artifacts, resource_hints)


class _PrestartedSdkWorker(local_job_service.SubprocessSdkWorker):
    """One worker process for the runner, as Beam's ``SubprocessSdkWorker`` runs it (a logging service for it,
    its environment, its exit status failing the run), but taken from the standbys when one is left."""

    def run(self):
        logging_server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                                     options=[("grpc.http2.max_pings_without_data", 0),
                                              ("grpc.http2.max_ping_strikes", 0)])
        logging_port = logging_server.add_insecure_port("[::]:0")
        logging_server.start()
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(local_job_service.BeamFnLoggingServicer(),
                                                                 logging_server)
        env = dict(os.environ,
                   CONTROL_API_SERVICE_DESCRIPTOR=_descriptor(self._control_address),
                   LOGGING_API_SERVICE_DESCRIPTOR=_descriptor(f"localhost:{logging_port}"),
                   PIPELINE_OPTIONS=json_format.MessageToJson(self._provision_info.provision_info.pipeline_options))
        if self._worker_id:
            env["WORKER_ID"] = self._worker_id
        process = standby.take_standby(env)
        if process is None:
            with worker_handlers.SUBPROCESS_LOCK:  # Beam's lock: no two workers inherit each other's pipes
                process = subprocess.Popen(self._worker_command_line, shell=True, env=env)
        try:
            process.wait()
            if process.returncode:
                raise RuntimeError(f"Worker subprocess exited with return code {process.returncode}")
        finally:
            if process.poll() is None:
                process.kill()
            logging_server.stop(0)


def _descriptor(url: str) -> str:
    return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))


@worker_handlers.WorkerHandler.register_environment(PRESTARTED_URN, bytes)
class PrestartedWorkerHandler(worker_handlers.SubprocessSdkWorkerHandler):
    """Beam's handler of subprocess workers, running ``_PrestartedSdkWorker``."""

    def start_worker(self):
        self.worker = _PrestartedSdkWorker(self._worker_command_line, self.control_address, self.provision_info,
                                           self.worker_id)
        self.worker_thread = threading.Thread(name="run_worker", target=self.worker.run)
        self.worker_thread.start()


class MultiProcessRunner(FnApiRunner):
    """FnApiRunner whose worker processes run ``pipelines.local.standby``, standbys first."""

    def run_pipeline(self, pipeline, options):
        direct = options.view_as(DirectOptions)
        self._default_environment = PrestartedEnvironment(command_string=standby.worker_command())
        # In multi-processing mode run_pipeline would put Beam's own worker command back: let it see no mode
        # (the number of workers still comes from --direct_num_workers), then give the options theirs back.
        mode, direct.direct_running_mode = direct.direct_running_mode, None
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            direct.direct_running_mode = mode
            standby.discard_standby()  # more were started than the run used


def local_runner(options):
    """A ``MultiProcessRunner`` when ``options`` ask for the FnApiRunner in multi-processing mode; None
    otherwise (the pipeline then makes the runner its options name, and standbys are stopped)."""
    if (options.view_as(StandardOptions).runner != "FnApiRunner"
            or options.view_as(DirectOptions).direct_running_mode != "multi_processing"):
        standby.discard_standby()
        return None
    return MultiProcessRunner()
