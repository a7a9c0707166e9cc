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

from transforms.integrations import load_integrations


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", required=True)
    args = parser.parse_args(argv)
    integrations, errors = load_integrations(args.integrations)
    if errors:
        print(f"{len(errors)} configuration error(s):", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    printed = 0
    for integ in integrations:
        c = integ.config
        if integ.vendor == "bigquery":
            from transforms.sinks.bigquery import create_table_ddl

            print(f"-- {integ.integration_id} (bigquery)\n{create_table_ddl(c.project_id, c.dataset, c.table)}\n")
        elif integ.vendor == "snowflake":
            from transforms.sinks import snowflake as sf

            parts = [sf.create_table_sql(c.database, c.schema_name, c.table)]
            if c.stage_url is None:
                parts.append(sf.create_stage_sql(c.database, c.schema_name, c.stage))
            if c.pipe:
                parts.append(sf.create_pipe_sql(c.database, c.schema_name, c.pipe, c.table, c.stage, c.file_format))
            print(f"-- {integ.integration_id} (snowflake)\n" + ";\n\n".join(parts) + ";\n")
        elif integ.vendor == "redshift":
            from transforms.sinks import redshift as rs

            print(f"-- {integ.integration_id} (redshift)\n{rs.create_table_sql(c.schema_name, c.table)};\n\n"
                  f"{rs.create_loads_table_sql(c.schema_name)};\n")
        elif integ.vendor == "duckdb":
            from transforms.sinks.duckdb import create_table_sql

            print(f"-- {integ.integration_id} (duckdb)\n{create_table_sql(c.table)};\n")
        else:
            continue
        printed += 1
    if not printed:
        print("no warehouse integration in the file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
