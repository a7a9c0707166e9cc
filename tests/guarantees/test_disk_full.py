"""A disk that fills up mid-run: the run fails (exit 1) saying so, leaves no partial or temporary file, and the
next run, with room again, delivers everything once (the invariants). ``python -m pipelines.deliver`` on the
FnApiRunner, each run its own process as users run it.

Why a fault injected at ``fsync`` and not a full filesystem: filling a real one needs a small mount (tmpfs or a
loop device), which needs root privileges the test machines do not give. The storage's own code runs
unchanged; only ``fsync``, where a full disk reports ENOSPC for buffered writes, fails after a number of
successful calls."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import orjson
import pytest

from tests.eventgen import consented_ids, generate
from tests.guarantees.invariants import REPO, check_conservation, check_no_duplicate, check_report_integrity, deliver
from transforms.storage.local import TMP_DIR


class _FillingDisk:
    """``os`` as the local storage sees it, except that ``fsync`` fails with ENOSPC after ``room`` calls."""

    def __init__(self, room: int):
        self.room = room

    def fsync(self, fd):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        return os.fsync(fd)

    def __getattr__(self, name):
        return getattr(os, name)


def _run_on_a_filling_disk(room: int, argv: list[str]) -> subprocess.CompletedProcess:
    code = (f"import sys; from transforms.storage import local; from tests.guarantees.test_disk_full import _FillingDisk; "
            f"local.os = _FillingDisk({room}); from pipelines import deliver; sys.exit(deliver.run(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def _prepare(tmp_path):
    """1500 events to a Parquet lake in batches of 40: ``(lines, truth, argv)``."""
    lines, truth = generate(n=1500, seed=61, tenants=3, bad=False, source_id="s")
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "s", "vendor": "files", "name": "Lake", "config": {
        "path": str(tmp_path / "lake"), "file_format": "parquet", "batch_size": 40,
        "consent": {"require": ["analytics"]}}}]))
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}", "--runner=FnApiRunner"]
    return lines, truth, argv


# The room runs out at a data file's write, or just after it, at its ledger entry's.
@pytest.mark.parametrize("room", [24, 25])
def test_a_disk_filling_up_fails_the_run_cleanly_and_the_next_run_delivers_everything_once(tmp_path, room):
    lines, truth, argv = _prepare(tmp_path)
    failed = _run_on_a_filling_disk(room, argv)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "No space left on device" in failed.stderr
    lake = tmp_path / "lake"
    assert not [p for p in (lake / TMP_DIR).iterdir()] if (lake / TMP_DIR).exists() else True  # no temp file left
    check_report_integrity(lake)  # whatever a report lists is whole
    partial = [p for p in lake.rglob("*.parquet") if not p.relative_to(lake).parts[0].startswith("_")]
    assert partial, "nothing was published before the disk filled up"

    done = deliver(*argv)  # room again
    assert done.returncode == 0, done.stderr[-2000:]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    check_conservation(summary, input_events=len(lines))
    ids = check_no_duplicate(lake)
    assert set(ids) == consented_ids(truth)
    listed = check_report_integrity(lake)
    on_disk = [p for p in lake.rglob("*.parquet") if not p.relative_to(lake).parts[0].startswith("_")]
    assert sorted(listed) == sorted(on_disk)  # the failed run's files were adopted into a report


def test_in_one_process_the_run_after_a_failed_one_lists_the_failed_runs_files(tmp_path, monkeypatch, capsys):
    """An in-process runner (a process that runs run after run: an embedding, a notebook) outlives a failed
    run: the next run must still take that run as over and list its files (before, five data files were left
    in no report)."""
    from pipelines import deliver as deliver_module
    from transforms.storage import local

    _, truth, argv = _prepare(tmp_path)
    monkeypatch.setattr(local, "os", _FillingDisk(25))
    assert deliver_module.run(argv) == 1
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(local, "os", os)
    assert deliver_module.run(argv) == 0
    assert set(check_no_duplicate(tmp_path / "lake")) == consented_ids(truth)  # every data file in a report
