"""Worker processes for local multi-process runs, started early (part of the fast local start: see
``pipelines.local``).

``--runner=FnApiRunner --direct_running_mode=multi_processing`` (how ``pipelines.deliver`` uses more than one
core when asked, and what the benchmark passes) runs ``--direct_num_workers`` worker processes. Beam starts
them as ``python -m apache_beam.runners.worker.sdk_worker_main`` once the pipeline is built; with the runner of
``pipelines.local.multiprocess`` they run this module instead: Beam's SDK harness, with these changes for a process
that lives for one run only:

- **started early**: ``prestart(argv, preload)``, called by ``pipelines.deliver`` and ``pipelines.regenerate``
  before they import Beam, starts the workers the arguments ask for as *standby* processes that import Beam,
  the job's modules and pyarrow *while the job's own process does the same* (each side takes 1.2-2.5 s,
  on a second core that was idle until now), then wait for the runner's addresses on their standard input.
  The runner hands each new worker to a standby (``take_standby``), or starts one the usual way if none is
  left; unused standbys are stopped (``discard_standby``, and at ``exit_now``), and a standby whose job's
  process has gone reads end-of-file and exits;
- **imported once**: on Linux a single standby does those imports for all the workers. It forks each worker
  but the last from its imported state when the runner asks for it, and then becomes the last worker itself.
  The fork in between leaves at once, so the job's process (a child subreaper, ``adopt_orphans``) becomes
  the worker's parent and waits for it as for any worker (``ForkedWorker``). With one standby per worker,
  three processes imported the same modules on two cores at the start of every run (1M events: start-up
  2.3 s, now 1.6 s; about 1.5 CPU-seconds less);
- the objects of start-up (Beam's, gRPC's and protobuf's modules: about 170,000) are made with the garbage
  collector off and then frozen out of its view (``gc.freeze``, ``memory.collect_after_imports``), so neither the
  collections importing sets off nor the run's full collections walk them again and again (the job's
  process does the same, ``pipelines.deliver``);
- when the harness has finished, the process runs its exit handlers and ends without tearing down its
  interpreter (``os._exit``). Freeing a worker's heap object by object took about 0.55 s, and the runner
  stops its workers one after the other, so every run ended with a second or more of nothing but that.

A harness that fails raises as before (exit status 1, which fails the run). Other runners, and the
single-process FnApiRunner, are untouched. At import this module loads only the standard library (Beam comes
in when a worker runs, pyarrow in ``memory.lean_arrow_pool``), so the job can call ``prestart`` before its own imports.
"""
from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import threading

from pipelines import memory
from pipelines.local import local_workers

WORKER_MODULE = "pipelines.local.standby"
STANDBY_FLAG = "--standby"
_standby: list[_Standby] = []  # started by prestart, not yet handed to the runner


def worker_command() -> str:
    """A worker process's command line (the Python running this job, so the same environment)."""
    return f"{sys.executable} -m {WORKER_MODULE}"


def prestart(argv, preload: str) -> int:
    """Start the worker processes ``argv`` will need (``local_workers``) as standbys importing Beam and the
    module ``preload`` (the job's entry point, which imports what its transforms need). Call it first thing
    in a job's ``__main__``; returns how many workers the standbys will give. Applies the job's memory
    settings first (``memory.memory_settings``): glibc reads the arena cap when a process starts, and Arrow
    its pool when pyarrow is loaded, which the standbys do at once (a pool switched afterwards is not the one
    Arrow's own C++ code allocates from: that cost the two workers about 50 MiB at the peak).

    On Linux one standby does the imports for all of them: it forks each worker but the last from its
    imported state and then becomes the last itself, and this process adopts the forked ones
    (``adopt_orphans``). Elsewhere each worker is a standby of its own."""
    wanted = local_workers(argv)
    if not wanted:
        return 0
    memory.memory_settings()
    forks = wanted - 1 if wanted > 1 and adopt_orphans() else 0
    for _ in range(wanted - forks):
        _standby.append(_Standby(preload, forks))
        forks = 0
    return wanted


class _Standby(subprocess.Popen):
    """A standby worker process: ``forks`` more workers to fork before it becomes one itself, their process
    ids reported on the ``replies`` pipe."""

    def __init__(self, preload: str, forks: int):
        read, write = os.pipe()
        try:
            super().__init__([sys.executable, "-m", WORKER_MODULE, STANDBY_FLAG, preload, str(forks), str(write)],
                             stdin=subprocess.PIPE, pass_fds=(write,))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.forks = forks
        self.replies = os.fdopen(read, "rb")


class ForkedWorker:
    """A worker a standby forked, adopted by this process: ``wait``, ``poll``, ``kill`` and ``returncode``
    as on a ``subprocess.Popen``."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None

    def _reap(self, flags: int):
        pid, status = os.waitpid(self.pid, flags)
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self):
        return self.returncode if self.returncode is not None else self._reap(os.WNOHANG)

    def wait(self):
        return self.returncode if self.returncode is not None else self._reap(0)

    def kill(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_PR_SET_CHILD_SUBREAPER = 36  # prctl option number (linux/prctl.h)


def adopt_orphans() -> bool:
    """Make this process the parent of any orphaned descendant (Linux's child subreaper), so the workers a
    standby forks (and leaves at once) become its own children, which it can wait for as the runner does for
    any worker. False where that is not possible (not Linux): each worker is then a standby of its own."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (AttributeError, OSError):
        return False


_handoff_lock = threading.Lock()  # the runner starts its workers from one thread each


def take_standby(env: dict):
    """Hand ``env`` (the environment Beam would give a new worker process: its control, logging and options
    variables) to a standby and return that worker's process (a ``subprocess.Popen``, or a ``ForkedWorker``),
    or None when no live standby is left."""
    payload = json.dumps(dict(env)).encode() + b"\n"
    with _handoff_lock:
        while _standby:
            process = _standby[0]
            try:
                process.stdin.write(payload)
                process.stdin.flush()
                if process.forks:
                    reply = process.replies.readline()  # once the worker is forked and this process's child
                    if not reply:
                        raise OSError("the standby ended")
                    process.forks -= 1
                    return ForkedWorker(int(reply))
                _standby.pop(0)
                process.stdin.close()
                process.replies.close()
                return process
            except (BrokenPipeError, OSError, ValueError):  # it has died: try the next, or the caller starts one
                _standby.remove(process)
                _stop(process)
        return None


def _stop(process: _Standby) -> None:
    process.kill()
    process.wait()
    process.replies.close()


def discard_standby() -> None:
    """Stop the standbys no run took (another runner after all, or a run that did not start)."""
    while _standby:
        _stop(_standby.pop())


def exit_now(status: int) -> None:
    """End this process with ``status`` the way a normal exit would, minus the interpreter's teardown: the
    exit handlers run (logging's flush, any runner's clean-up) and the standard streams are flushed. Unused
    standby workers are stopped."""
    discard_standby()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written anyway
            pass
    os._exit(status)


def _await_handoff(preload: str, forks: int, replies: int) -> None:
    """A standby's wait: import what the job's transforms will need, then fork ``forks`` workers, each when
    the runner's environment for it arrives on standard input, and take the next environment for this
    process; end quietly if the job's process closes standard input first. Returns in the process that is
    to run as a worker."""
    importlib.import_module(preload)
    gc.freeze()  # before forking: the workers' collections then leave these objects' shared pages alone
    for _ in range(forks):
        handoff = sys.stdin.buffer.readline()
        if not handoff:
            exit_now(0)
        if _fork_worker(handoff, replies):
            return
    os.close(replies)
    handoff = sys.stdin.buffer.readline()
    if not handoff:
        exit_now(0)
    os.environ.update(json.loads(handoff))


def _fork_worker(handoff: bytes, replies: int) -> bool:
    """Fork a worker with the environment ``handoff`` and report its process id on ``replies`` once the job's
    process has adopted it (the fork in between exits at once). True in the new worker, False here.

    Forking is safe at this point: the standby has run none of Beam's harness and opened no gRPC channel,
    and its only other threads are native pools whose libraries re-make or drop them in a child (a forked
    worker runs without jemalloc's background purging thread; its peak memory was no higher)."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read)
        pid = os.fork()
        if pid:
            os.write(write, str(pid).encode())
            os._exit(0)
        os.close(write)
        os.close(replies)
        devnull = os.open(os.devnull, os.O_RDONLY)  # the next worker's environment is not for this one
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.update(json.loads(handoff))
        return True
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        pid = int(fh.read())
    os.waitpid(middle, 0)  # now the job's process is the worker's parent
    os.write(replies, b"%d\n" % pid)
    return False


def main(argv=None) -> None:
    argv = sys.argv if argv is None else argv
    gc.disable()  # until the imports are done: see collect_after_imports
    from apache_beam.runners.worker import sdk_worker_main  # here: the job's own process never needs it

    if len(argv) > 4 and argv[1] == STANDBY_FLAG:
        _await_handoff(argv[2], int(argv[3]), int(argv[4]))
    memory.collect_after_imports()  # after the imports above and at the top: Beam, gRPC and protobuf are loaded by now
    sdk_worker_main.main(argv)
    exit_now(0)


if __name__ == "__main__":
    main()
