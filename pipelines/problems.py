"""How every command reports configuration errors: all of them at once, one a line, under their count, on
stderr; exit status 2. Messages name JSON paths and options, never a value."""
from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable


def report(problems: list[str], clean: Callable[[str], str] = lambda text: text) -> int:
    """Print ``problems`` (each through ``clean``, e.g. ``secrets.redact``); returns 2."""
    print(f"{len(problems)} configuration error(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {clean(problem)}", file=sys.stderr)
    return 2


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose unknown options are refused (exit 2) naming the nearest known one, as
    ``pipelines.deliver`` does for its own and Beam's (``pipelines.cli``)."""

    def parse_args(self, args=None, namespace=None):
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            parsers = [self] + [sub for action in self._actions if isinstance(action, argparse._SubParsersAction)
                                for sub in action.choices.values()]
            flags = sorted({o for p in parsers for action in p._actions for o in action.option_strings
                            if o.startswith("--")})
            messages = []
            for token in extra:
                if not token.startswith("-"):
                    continue  # the value of an unknown option, or a stray word: the option is named already
                flag = token.split("=", 1)[0]
                near = difflib.get_close_matches(flag.replace("-", "_").replace("__", "--", 1), flags, n=1, cutoff=0.6)
                messages.append(f"{flag}: unknown option" + (f" (did you mean {near[0]}?)" if near else ""))
            self.error("; ".join(messages) or f"unexpected {' '.join(extra)}")
        return parsed
