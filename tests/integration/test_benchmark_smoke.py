"""The benchmark command keeps working (tiny input; the figures themselves are not checked here)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_compare_runs_all_three_and_prints_ratios():
    out = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--events", "300", "--rounds", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=240, check=True).stdout
    for name in ("beamhouse", "streaming", "plain", "duckdb"):
        assert re.search(rf"^{name}\s+median\s+[\d.]+ s\s+[\d,]+ events/s\s+peak RSS\s+\d+ MiB", out, re.M), out
    assert "beamhouse vs plain:" in out and "beamhouse vs duckdb:" in out and "streaming vs plain:" in out
