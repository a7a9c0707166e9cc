"""Opt-in fuzzing of the parser's one meaning (not in CI): the differential test of
tests/guarantees/test_parse_paths.py - joined block, list of lines and per-event rules must give the same
rows and dead letters - run with hypothesis for a time budget instead of a fixed number of examples.

    python -m tests.guarantees.fuzz --minutes 10 [--seed N]

Prints the number of blocks tried; any difference fails with hypothesis's shrunk example (exit 1).
"""
from __future__ import annotations

import argparse
import sys
import time

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.guarantees.test_parse_paths import GOOD, _assert_one_meaning, _mutate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.minutes * 60
    tried = 0

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_meaning(data):  # 200 blocks a call; called again until the time is up
        nonlocal tried
        start = data.draw(st.integers(0, len(GOOD) - 60))
        size = data.draw(st.integers(1, 60))
        _assert_one_meaning(_mutate(GOOD[start:start + size], data))
        tried += 1

    test = one_meaning if args.seed is None else seed(args.seed)(one_meaning)
    try:
        while time.monotonic() < deadline:
            test()
    except Exception as exc:  # noqa: BLE001 - any difference or crash, with hypothesis's shrunk example
        print(f"difference found after {tried} blocks: {exc}", file=sys.stderr)
        return 1
    print(f"{tried} mutated blocks: the fast and per-event paths agreed on every one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
