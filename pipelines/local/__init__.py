"""Fast start of local multi-process runs — the only code of the project that leans on Beam's private internals.

For ``--direct_running_mode=multi_processing`` on the ``FnApiRunner`` (``--direct_num_workers`` worker
processes on this machine) only:

- the worker processes are started (as standbys) while the job's own process imports Beam, and on Linux one
  of them imports for all and forks the others (``pipelines.local.standby``, taken by the ``FnApiRunner`` of
  ``pipelines.local.multiprocess``);
- the workers and the job's process end without the interpreter's teardown once their exit handlers have
  run (``standby.exit_now``).

Measured on this machine (2 cores, 2026-12-08, two worker processes, on then off): the bundled example 2.7,
2.7, 2.9 s against 4.6, 4.5, 4.8 s; 1M events (``benchmarks.compare``) 7.1, 7.1 s against 8.7, 8.7 s. A
single-process run (the default) gained nothing measurable (example 2.6, 2.4, 2.5 s against 2.4, 2.4, 2.4 s),
so it runs Beam's own code. Dataflow, Flink, Prism and any other runner never import the submodules.

**Switch:** ``BEAMHOUSE_FAST_START=off`` in the environment runs Beam's own start-up and a normal exit. It
is also off, with one warning, when the installed apache-beam is not the version the submodules were checked
against (``TESTED_BEAM``): ``tests/unit/test_local_start.py`` fails when Beam's code they copy or override
changes, and says what to re-check.

Only the standard library is imported here, so entry points use it before they import Beam::

    local.prestart(argv, preload="pipelines.deliver")     # first thing in __main__
    p = beam.Pipeline(runner=local.runner(argv, options), options=options)
    local.finish(argv, status)                            # the way out
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys

SWITCH = "BEAMHOUSE_FAST_START"
TESTED_BEAM = "2.77.0"  # the apache-beam whose internals pipelines/local/{multiprocess,standby}.py were checked against
_warned = []


def installed_beam() -> str | None:
    try:
        return importlib.metadata.version("apache-beam")
    except importlib.metadata.PackageNotFoundError:
        return None


def local_workers(argv) -> int:
    """How many worker processes the Beam arguments ``argv`` will run locally: ``--direct_num_workers``
    (0: one per core; default 1) for ``--direct_running_mode=multi_processing`` on the FnApiRunner (named, or
    the runner left to the job's default), else 0. Read the way Beam reads them (no abbreviations); a job
    whose default turns out to be another runner stops the standbys (``discard_standby``)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner")
    parser.add_argument("--direct_running_mode")
    parser.add_argument("--direct_num_workers", type=int, default=1)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:  # a malformed value: the job's own parsing reports it
        return 0
    if known.direct_running_mode != "multi_processing" or known.runner not in (None, "FnApiRunner"):
        return 0
    if known.direct_num_workers < 0:
        return 0
    return known.direct_num_workers or os.cpu_count() or 1


def fast_start(argv) -> bool:
    """Whether this run, with Beam arguments ``argv``, uses the fast start: a local multi-process run
    (``local_workers``), the switch not ``off``, and the apache-beam it was checked against (else one warning
    on standard error)."""
    if not local_workers(argv):
        return False
    if os.environ.get(SWITCH, "on").strip().lower() in ("off", "0", "false", "no"):
        return False
    version = installed_beam()
    if version != TESTED_BEAM:
        if not _warned:
            _warned.append(version)
            print(f"beamhouse: the fast local start is checked against apache-beam {TESTED_BEAM}, this is {version}: "
                  "using Beam's own start-up", file=sys.stderr)
        return False
    return True


def prestart(argv, preload: str) -> None:
    """Call first in a job's ``__main__``, before Beam is imported: starts the standby workers a
    multi-processing local run will take (``standby.prestart``); nothing otherwise."""
    if fast_start(argv):
        from pipelines.local import standby

        standby.prestart(argv, preload)


def runner(argv, options):
    """The runner object for ``beam.Pipeline(runner=..., options=options)``: the multi-process runner taking
    the standbys when the run is local and multi-processing, else None (Beam makes the runner the options
    name)."""
    if not fast_start(argv):
        return None
    from pipelines.local.multiprocess import local_runner

    return local_runner(options)


def finish(argv, status: int):
    """End the job's process with ``status``: without the interpreter's teardown on a fast local run
    (``standby.exit_now``), else ``sys.exit``."""
    if fast_start(argv):
        from pipelines.local import standby

        standby.exit_now(status)
    sys.exit(status)
