"""Run fakesnow's server with three fixes to its emulation that the Snowflake tests depend on.

    python -m tests.servers.fakesnow_server --port PORT

fakesnow 0.12.1 (DuckDB behind the Snowflake connector's protocol) differs from Snowflake here; each
fix makes it behave as Snowflake documents (docs.snowflake.com, COPY INTO <table>):

1. ``COPY ... FROM @internal_stage/path FILES = (...)`` fails with "invalid URL prefix": fakesnow only
   resolves ``FILES`` against stages with a URL. Fixed: names resolve under the internal stage's folder.
2. A COPY transformation over JSON (``SELECT $1:col ... FROM @stage``) reads columns that do not exist
   (fakesnow reads JSON as one column). Fixed: ``$1:col`` reads the line's top-level ``col`` (text for
   scalars, JSON text for objects, cast by the target column as Snowflake casts a VARIANT).
3. Data that violates the table (a NULL in a NOT NULL column) answers HTTP 500, and the files of the COPY
   loaded before the failing one stay loaded. Snowflake answers error 100072 "NULL result in a
   non-nullable column" (SQL state 22000), and ON_ERROR = ABORT_STATEMENT loads nothing: fixed by running
   the COPY in a transaction of its own.

Nothing else is changed; everything the tests do not exercise stays fakesnow's own behaviour.
"""
from __future__ import annotations

import argparse
from urllib.parse import urlparse

import duckdb
import snowflake.connector
import sqlglot
from fakesnow import copy_into as ci
from sqlglot import exp

_source_urls = ci._source_urls
_inserts = ci._inserts
_copy_into = ci.copy_into


def source_urls(source: str, files: list[str]) -> list[str]:
    if not urlparse(source).scheme and source.startswith("/"):  # an internal stage's local folder
        return [source.rstrip("/") + "/" + f for f in files]
    return _source_urls(source, files)


def inserts(expr, params, urls, parquet_info=None):
    out = _inserts(expr, params, urls, parquet_info)
    if isinstance(expr.args["files"][0], exp.Subquery) and isinstance(params.file_format, ci.ReadJSON):
        def field(node):
            # fakesnow's _strip_json_extract leaves ``$1:col`` as a bare identifier (or column) ``col``.
            if isinstance(node, (exp.Column, exp.Identifier)) and not isinstance(node.parent, exp.Column):
                return sqlglot.parse_one(f"json ->> '$.{node.name}'", read="duckdb")
            return node
        for insert in out:
            select = insert.expression
            select.set("expressions", [e.transform(field) for e in select.expressions])
    return out


def copy_into(duck_conn, *args, **kwargs):
    try:
        duck_conn.execute("BEGIN TRANSACTION")
        own = True
    except duckdb.TransactionException:
        own = False  # inside the client's transaction: its rollback undoes the statement
    try:
        result = _copy_into(duck_conn, *args, **kwargs)
    except duckdb.ConstraintException as e:
        if own:
            duck_conn.execute("ROLLBACK")
        raise snowflake.connector.errors.ProgrammingError(
            msg=f"NULL result in a non-nullable column ({e.args[0]})", errno=100072, sqlstate="22000") from None
    except BaseException:
        if own:
            duck_conn.execute("ROLLBACK")
        raise
    if own:
        # The result set is the last statement's; re-run it after the commit so the cursor can read it.
        duck_conn.execute("COMMIT")
        duck_conn.execute(result)
    return result


def install() -> None:
    ci._source_urls = source_urls
    ci._inserts = inserts
    ci.copy_into = copy_into
    import fakesnow.cursor

    fakesnow.cursor.copy_into = copy_into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    install()
    import fakesnow.server
    import uvicorn

    uvicorn.run(fakesnow.server.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
