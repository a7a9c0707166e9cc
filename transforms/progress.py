"""Progress of a long local batch run, on a terminal only: lines and bytes read, rate, elapsed time.

How: the command (``pipelines.deliver``'s ``__main__``) makes a folder and names it in ``BEAMHOUSE_PROGRESS_DIR``
before any worker starts, so local workers (in-process, forked or spawned) inherit it; each worker process
writes its running totals there (one small file per process, replaced at most twice a second); the command's
``Reporter`` thread sums them and redraws one status line on stderr. Without a terminal, or on a runner whose
workers run elsewhere, nothing is set up and ``add`` costs one dictionary lookup.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time

ENV = "BEAMHOUSE_PROGRESS_DIR"
_WRITE_EVERY = 0.5
_lock = threading.Lock()
_totals = {"lines": 0, "bytes": 0, "written": 0.0}


def prepare() -> str | None:
    """In the command, before workers start: a progress folder when stderr is a terminal (else None)."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    if not sys.stderr.isatty():
        return None
    os.environ[ENV] = tempfile.mkdtemp(prefix="beamhouse-progress-")
    return os.environ[ENV]


def add(lines: int, nbytes: int) -> None:
    """Count what a worker read (called per block by the reader)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    with _lock:
        _totals["lines"] += lines
        _totals["bytes"] += nbytes
        now = time.monotonic()
        if now - _totals["written"] < _WRITE_EVERY:
            return
        _totals["written"] = now
        text = f"{_totals['lines']} {_totals['bytes']}"
    try:
        tmp = os.path.join(folder, f".{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(folder, str(os.getpid())))
    except OSError:  # the folder went away with the run: progress is best effort
        pass


def flush() -> None:
    """Write this process's totals now (end of a bundle)."""
    with _lock:
        _totals["written"] = 0.0
    add(0, 0)


def totals(folder: str) -> tuple[int, int]:
    lines = nbytes = 0
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
    except OSError:
        return 0, 0
    for name in names:
        try:
            with open(os.path.join(folder, name)) as fh:
                a, b = fh.read().split()
            lines, nbytes = lines + int(a), nbytes + int(b)
        except (OSError, ValueError):
            continue
    return lines, nbytes


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Reporter:
    """Redraws ``read N lines, X MB of Y MB (P%), R lines/s, T s`` on stderr every second until ``stop``."""

    def __init__(self, folder: str, input_bytes: int | None, stream=None):
        self._folder, self._total, self._stream = folder, input_bytes, stream or sys.stderr
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="beamhouse-progress", daemon=True)
        self._read_all_at = None  # when the whole input had been read (then the rest is delivery)

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def line(self) -> str:
        lines, nbytes = totals(self._folder)
        now = time.monotonic()
        elapsed = now - self._start
        if self._total and nbytes >= self._total * 0.999:  # line breaks dropped by the reader: within a hair
            self._read_all_at = self._read_all_at or now
            reading = self._read_all_at - self._start
            return (f"read all {lines:,} lines ({_size(nbytes)}) in {reading:.0f} s, "
                    f"{lines / max(reading, 1e-3):,.0f} lines/s; delivering, {elapsed:.0f} s")
        share = f" of {_size(self._total)} ({100 * nbytes / self._total:.0f}%)" if self._total else ""
        rate = lines / elapsed if elapsed > 0 else 0
        return f"read {lines:,} lines, {_size(nbytes)}{share}, {rate:,.0f} lines/s, {elapsed:.0f} s"

    def _run(self):
        while not self._stop.wait(1.0):
            self._stream.write("\r\x1b[K" + self.line())
            self._stream.flush()

    def stop(self) -> None:
        """The last state on its own line, then the folder removed."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._stream.write("\r\x1b[K" + self.line() + "\n")
        self._stream.flush()
        shutil.rmtree(self._folder, ignore_errors=True)
        os.environ.pop(ENV, None)
