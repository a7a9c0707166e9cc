"""CSV (RFC 4180): header row, columns in profile order, CRLF line ends, quoting where needed.

JSON columns are JSON text; timestamps ISO 8601 UTC; nulls are empty cells. Cells that a spreadsheet
would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) get a leading ``'``."""
from __future__ import annotations

import csv
import io

import pyarrow as pa
import pyarrow.compute as pc

from transforms.formats.ndjson import ISO_FORMAT
from transforms.profiles.warehouse import TIME_COLUMNS

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_PATTERN = "^[=+\\-@\t\r]"


def guard(value):
    """One cell, guarded (what ``guarded`` does to a whole column)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def guarded(column):
    """A string column with ``'`` in front of every cell a spreadsheet would run as a formula (vectorised)."""
    risky = pc.match_substring_regex(column, _FORMULA_PATTERN)
    return pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)


def _cells(table, name) -> list:
    column = table[name]
    if name in TIME_COLUMNS:
        column = pc.strftime(column, format=ISO_FORMAT)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = guarded(column)
    return pc.fill_null(column.cast(pa.string()), "").to_pylist() if column.null_count else column.to_pylist()


def encode(table, separator: str = ",") -> bytes:
    """Python's csv writer (RFC 4180: CRLF line ends, quoting only where needed; pyarrow's CSV writer has
    neither), fed columns converted and guarded by Arrow."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(table.column_names)
    writer.writerows(zip(*(_cells(table, n) for n in table.column_names)))
    return out.getvalue().encode("utf-8")
