"""The benchmark's peak-memory sampler counts a job's whole process tree, however its workers were started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from benchmarks import compare

# A child that holds 200 MiB itself, starts a grandchild from a second thread (listed under that thread's
# ``children`` file, not the main thread's) that holds 150 MiB, and then waits.
TREE = r"""
import subprocess, sys, threading, time
held = bytearray(200 << 20)
for i in range(0, len(held), 4096): held[i] = 1
def start():
    subprocess.Popen([sys.executable, "-c",
        "import time\nb = bytearray(150 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "print('ready', flush=True)\ntime.sleep(60)"], stdout=sys.stdout).wait()
threading.Thread(target=start, daemon=True).start()
time.sleep(60)
"""


def _statm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * compare._PAGE_KIB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_sampler_counts_a_grandchild_started_from_another_thread():
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    grandchildren: list[str] = []
    try:
        assert child.stdout.readline().strip() == "ready"
        grandchildren = subprocess.run(["pgrep", "-P", str(child.pid)], capture_output=True, text=True,
                                       check=True).stdout.split()
        assert len(grandchildren) == 1
        expected = _statm_kib(child.pid) + _statm_kib(int(grandchildren[0]))
        walked = compare._tree_rss_kib(child.pid)
        scanned = compare._scanned_tree_rss_kib(child.pid)
        assert walked >= (350 << 10)  # both processes' touched buffers, in KiB
        # the same tree by both methods (read moments apart: allow a few MiB of drift)
        assert abs(walked - expected) < (8 << 10) and abs(scanned - expected) < (8 << 10)
        # the walk does not count this process or anything outside the tree
        assert walked < expected + (8 << 10)
    finally:
        for pid in grandchildren:
            os.kill(int(pid), signal.SIGKILL)
        child.kill()
        child.wait()
