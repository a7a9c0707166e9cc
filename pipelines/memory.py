"""The job's process settings that every runner's local process shares (the job's own, and local workers):
memory (glibc arenas, Arrow's pool) and the garbage collector after start-up imports. Public APIs only.

    memory.memory_settings()          # before the runner starts its threads
    memory.collect_after_imports()    # once start-up imports ran with gc.disable()

On Dataflow or Flink the worker image sets the same environment variables (see the Dockerfile).
"""
from __future__ import annotations

import ctypes
import gc
import os


def memory_settings() -> None:
    """The job's memory settings, for this process and the workers it starts: ``limit_malloc_arenas`` and
    ``lean_arrow_pool``. Jobs call it before their runner starts; ``prestart`` calls it before the standbys."""
    limit_malloc_arenas()
    lean_arrow_pool()


_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
MALLOC_ARENAS = 2  # the default of MALLOC_ARENA_MAX for the job and its workers (the image sets the same)


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for this process and the worker processes it starts, unless
    ``MALLOC_ARENA_MAX`` is already set. glibc gives threads their own arenas (up to 8 per core), and the
    runner's gRPC and bundle threads each keep freed memory in theirs: with two arenas, 1M events peaked
    about 170 MiB lower over the controller and two workers, in the same time. Workers inherit the variable;
    this process applies it with ``mallopt`` (before the runner starts its threads). Not glibc: no effect.
    On Dataflow or Flink, set the variable in the worker image (the Dockerfile does)."""
    arenas = os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, int(arenas))
    except (AttributeError, OSError, ValueError):  # another C library, or a value glibc would ignore too
        pass


ARROW_POOL = "jemalloc"  # the Arrow memory pool for the job and its workers (the image sets the same)
JEMALLOC_CONF = "narenas:1"  # the default of JE_ARROW_MALLOC_CONF for them (the image sets the same)


def lean_arrow_pool() -> None:
    """Make jemalloc Arrow's memory pool for this process and the worker processes it starts, unless
    ``ARROW_DEFAULT_MEMORY_POOL`` is already set or this pyarrow has no jemalloc (then Arrow's default stays).
    pyarrow's default, mimalloc, kept the batches the dedup and write stages had freed: on 1M events
    jemalloc took the peak from about 1020 to 860 MiB over the controller and two workers, in the same time
    (about 85 MiB less in one process running the same stages alone). Workers started later read the
    variable when they import pyarrow; a process that has imported it (the job's, a standby worker) switches
    its pool. On Dataflow or Flink, set the variable in the worker image (the Dockerfile does).

    jemalloc gets one arena (``JE_ARROW_MALLOC_CONF``, unless set: its options for Arrow's jemalloc, read
    when a process first uses it) instead of one per thread: Beam runs a worker's bundles on whichever
    thread of its pool is free, and the memory the parse stage's thread had freed stayed in that thread's
    arena while the dedup stage's thread took fresh pages for its own. On 1M events the peak fell from
    about 890 to 807 MiB over the job's three processes, in the same time (6.82 s, medians of six
    alternating runs)."""
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", JEMALLOC_CONF)
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # built without jemalloc (Windows wheels)
        return
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = ARROW_POOL
    pa.set_memory_pool(pool)


def collect_after_imports() -> None:
    """Call once the start-up imports are done, with garbage collection turned off for them
    (``gc.disable()``): freezes what they made out of the collector's view (``gc.freeze``; see the module
    docstring) and turns collection back on. Importing Beam makes about 170,000 objects, and the
    collections they set off while importing walked them again and again: about 0.2 s of a 1.1 s import on
    this machine, in the job's process and in the standby worker alike. What the imports left unreachable
    (under 1 MB) stays."""
    gc.freeze()
    gc.enable()
