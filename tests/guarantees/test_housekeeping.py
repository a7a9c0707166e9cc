"""Killed runs leave nothing behind for ever: their shuffle spill folders and temporary files are swept by
the next run - only our own, and only once their run is gone. Through python -m pipelines.deliver
(FnApiRunner), ending with the invariants."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson

from tests.eventgen import generate
from tests.guarantees.invariants import REPO, check_conservation, check_no_duplicate, deliver
from transforms import coders
from transforms.storage.local import STALE_TMP_SECONDS, TMP_DIR


def _config(root):
    return [{"source_id": "s", "vendor": "files", "name": "Lake", "config": {
        "path": str(root / "lake"), "file_format": "parquet", "batch_size": 50}}]


def test_a_killed_runs_spill_folder_is_swept_by_the_next_run(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    lines = generate(20000, seed=41, bad=False)[0]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps(_config(tmp_path)))
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}",
            f"--shuffle_spill_dir={spill}", "--runner=FnApiRunner"]
    job = subprocess.Popen([sys.executable, "-m", "pipelines.deliver", *argv], cwd=REPO, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.is_file() and p.name != coders.SPILL_OWNER
                                                  for p in spill.rglob("*")):
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    left = [p for p in spill.iterdir() if p.name.startswith(coders.SPILL_PREFIX)]
    assert left, "the killed run left no spill folder to sweep (killed too late?)"
    # Another folder of ours whose run still lives, and someone else's folder: both kept.
    alive = spill / f"{coders.SPILL_PREFIX}alive"
    alive.mkdir()
    (alive / coders.SPILL_OWNER).write_text(coders.process_identity(os.getpid()))
    (spill / "not-ours").mkdir()
    done = deliver(*argv)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in spill.iterdir()) == sorted([alive.name, "not-ours"])
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()), input_events=len(lines))
    check_no_duplicate(tmp_path / "lake")


def test_stale_temporary_files_are_swept_and_fresh_ones_kept(tmp_path):
    lines = generate(50, seed=42, bad=False)[0]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps(_config(tmp_path)))
    tmp_dir = tmp_path / "lake" / TMP_DIR
    tmp_dir.mkdir(parents=True)
    stale = tmp_dir / f"events-1-ab.parquet.tmp-{uuid.uuid4().hex}"
    fresh = tmp_dir / f"events-2-cd.parquet.tmp-{uuid.uuid4().hex}"  # a concurrent run's, being written
    other = tmp_dir / "notes.txt"
    for f in (stale, fresh, other):
        f.write_bytes(b"partial")
    old = time.time() - STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    done = deliver(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                   f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}")
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and fresh.exists() and other.exists()
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()), input_events=len(lines))
    check_no_duplicate(tmp_path / "lake")
