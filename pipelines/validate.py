"""Check an integrations file without running anything.

    python -m pipelines.validate examples/integrations.json

Exit 0 when valid; exit 2 listing every problem with its JSON path (values are never echoed, so a
secret in a wrong place does not reach the terminal).
"""
from __future__ import annotations

import argparse
import sys

from transforms.integrations import load_integrations


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.validate", allow_abbrev=False,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("integrations", metavar="INTEGRATIONS_FILE", help="the integrations file to check")
    return parser


def main(argv=None) -> int:
    try:
        path = build_parser().parse_args(sys.argv[1:] if argv is None else argv).integrations
    except SystemExit as exc:  # argparse: 0 after --help, 2 after a usage error
        return int(exc.code or 0)
    integrations, errors = load_integrations(path)
    if errors:
        print(f"{path}: {len(errors)} problem(s):", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    for integ in integrations:
        state = "enabled" if integ.enabled else "disabled"
        print(f"ok  {integ.integration_id}  vendor={integ.vendor}  source_id={integ.source_id}  ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
