"""Check an integrations file without running anything.

    python -m pipelines.validate examples/integrations.json

Exit 0 when valid; exit 2 listing every problem with its JSON path (values are never echoed, so a
secret in a wrong place does not reach the terminal).
"""
from __future__ import annotations

import sys

from transforms.integrations import load_integrations


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m pipelines.validate INTEGRATIONS_FILE", file=sys.stderr)
        return 2
    integrations, errors = load_integrations(args[0])
    if errors:
        print(f"{args[0]}: {len(errors)} problem(s):", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    for integ in integrations:
        state = "enabled" if integ.enabled else "disabled"
        print(f"ok  {integ.integration_id}  vendor={integ.vendor}  source_id={integ.source_id}  ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
