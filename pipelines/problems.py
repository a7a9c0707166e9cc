"""How every command reports configuration errors: all of them at once, one a line, under their count, on
stderr; exit status 2. Messages name JSON paths and options, never a value."""
from __future__ import annotations

import sys
from collections.abc import Callable


def report(problems: list[str], clean: Callable[[str], str] = lambda text: text) -> int:
    """Print ``problems`` (each through ``clean``, e.g. ``secrets.redact``); returns 2."""
    print(f"{len(problems)} configuration error(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {clean(problem)}", file=sys.stderr)
    return 2
