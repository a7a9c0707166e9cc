"""CSV (RFC 4180): header row, columns in profile order, CRLF line ends, quoting where needed.

JSON columns are JSON text; timestamps ISO 8601 UTC; nulls are empty cells. Cells that a spreadsheet
would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) get a leading ``'``."""
from __future__ import annotations

import csv
import io

from transforms.formats.ndjson import column_values

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guard(value):
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def encode(table, separator: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(table.column_names)
    columns = [column_values(table, n) for n in table.column_names]
    for values in zip(*columns):
        writer.writerow(["" if v is None else guard(v) for v in values])
    return out.getvalue().encode("utf-8")
