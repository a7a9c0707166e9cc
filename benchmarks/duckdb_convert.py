"""The one-off DuckDB conversion (the other baseline of the benchmark):

    read_ndjson -> consent filter -> COPY ... (FORMAT parquet, PARTITION_BY (year, month, day, hour))

    python -m benchmarks.duckdb_convert --input events.ndjson --output out/duckdb
"""
from __future__ import annotations

import argparse

import duckdb


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    con = duckdb.connect()
    source = args.input.replace("'", "''")
    target = args.output.replace("'", "''")
    con.execute(f"""
        SET TimeZone = 'UTC';
        COPY (
          WITH src AS (
            SELECT *, COALESCE(TRY_CAST("timestamp" AS TIMESTAMPTZ),
                               to_timestamp(TRY_CAST("timestamp" AS DOUBLE) / 1000)) AS ts
            FROM read_ndjson('{source}', format='newline_delimited', ignore_errors=true,
                           columns={{messageId: 'VARCHAR', type: 'VARCHAR', event: 'VARCHAR', anonymousId: 'VARCHAR',
                                     userId: 'VARCHAR', "timestamp": 'VARCHAR', receivedAt: 'VARCHAR',
                                     context: 'JSON', properties: 'JSON', traits: 'JSON'}}))
          SELECT messageId AS event_id, type, event, anonymousId AS anonymous_id, userId AS user_id,
                 ts AS "timestamp", TRY_CAST(receivedAt AS TIMESTAMPTZ) AS received_at,
                 context, properties, traits,
                 year(ts) AS year, month(ts) AS month, day(ts) AS day, hour(ts) AS hour
          FROM src
          WHERE json_extract(context, '$.consent.analytics') = 'true'::JSON
        ) TO '{target}' (FORMAT parquet, PARTITION_BY (year, month, day, hour), OVERWRITE_OR_IGNORE)""")


if __name__ == "__main__":
    main()
