"""Print the table DDL of every warehouse integration, for users who create tables themselves.

    python -m pipelines.ddl --integrations integrations.json

BigQuery: the seed's table (JSON columns, ``PARTITION BY DATE(timestamp)``, ``CLUSTER BY type, event``).
DuckDB: the embedded warehouse's table.
Snowflake: the seed's table (VARIANT columns), the internal stage and, with ``pipe``, the pipe.
Redshift: the seed's table (SUPER columns, DISTKEY/SORTKEY) and the load-record table.
Exit status 0, or 2 on configuration errors.
"""
from __future__ import annotations

import argparse
import sys

from pipelines.problems import Parser, report
from transforms.integrations import load_integrations


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pipelines.ddl", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--integrations", required=True, help="the integrations file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    integrations, errors = load_integrations(args.integrations)
    if errors:
        return report(errors)
    from transforms.sinks import REGISTRY

    printed = 0
    for integ in integrations:
        ddl = REGISTRY[integ.vendor].ddl
        if ddl is None:
            continue
        print(f"-- {integ.integration_id} ({integ.vendor})\n{ddl(integ.config)}\n")
        printed += 1
    if not printed:
        print("no warehouse integration in the file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
