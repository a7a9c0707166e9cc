import csv
import gzip
import io
import os

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms import commit, formats, partitioning
from transforms.profiles.warehouse import SCHEMA
from transforms.storage import storage_for
from transforms.storage.local import TMP_DIR

ROW = {"event_id": "e1", "type": "track", "event": "=HYPERLINK(\"x\")", "anonymous_id": "a", "user_id": None,
       "timestamp": 1769697000_000001, "received_at": 1769697000_000002, "sent_at": None,
       "context": '{"ip":"1.2.3.4","n":null}', "properties": '{"total":12.5}', "traits": None,
       "source_id": "s", "integration_id": "i"}


def table():
    return pa.Table.from_pylist([ROW], schema=SCHEMA)


def test_ndjson_nests_json_and_omits_nulls():
    data = gzip.decompress(formats.encode("json", table(), "gzip"))
    [line] = data.splitlines()
    obj = orjson.loads(line)
    assert obj["context"] == {"ip": "1.2.3.4", "n": None} and obj["properties"] == {"total": 12.5}
    assert obj["timestamp"] == "2026-01-29T14:30:00.000001Z"
    assert "user_id" not in obj and "traits" not in obj and "sent_at" not in obj
    assert formats.encode("json", table(), "gzip") == formats.encode("json", table(), "gzip")  # deterministic


def test_csv_is_rfc4180_and_formula_safe():
    text = formats.encode("csv", table(), "none", separator=";").decode()
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert rows[0] == list(SCHEMA.names)
    assert rows[1][2] == "'=HYPERLINK(\"x\")" and rows[1][9] == '{"total":12.5}'
    assert text.endswith("\r\n")


def test_parquet_schema_is_the_profile():
    read = pq.read_table(io.BytesIO(formats.encode("parquet", table(), "snappy")))
    assert read.schema.equals(SCHEMA, check_metadata=False)
    assert read.to_pylist()[0]["properties"] == '{"total":12.5}'


def test_extensions():
    assert formats.extension("json", "gzip") == ".json.gz"
    assert formats.extension("csv", "zstd") == ".csv.zst"
    assert formats.extension("parquet", "snappy") == ".parquet"


def test_publish_never_overwrites(tmp_path):
    storage = storage_for(str(tmp_path))
    first = commit.publish_bytes(storage, "p=1/a.json", b"one\n", records=1)
    second = commit.publish_bytes(storage, "p=1/a.json", b"two, different\n", records=1)
    assert first["status"] == "published" and second["status"] == "already_present"
    assert (tmp_path / "p=1" / "a.json").read_bytes() == b"one\n"
    assert second["sha256"] == first["sha256"] and second["bytes"] == 4
    assert os.listdir(tmp_path / TMP_DIR) == []  # temp files removed either way


def test_publish_failure_raises(tmp_path):
    storage = storage_for(str(tmp_path))
    (tmp_path / "blocked").write_text("a file where a folder is needed")
    with pytest.raises(commit.PublishError):
        commit.publish_bytes(storage, "blocked/x.json", b"x", records=1)
    with pytest.raises(partitioning.InvalidPartitionValue):
        commit.publish_bytes(storage, "../escape.json", b"x", records=1)
    assert not (tmp_path.parent / "escape.json").exists()


def test_report_lists_files_and_is_written_once(tmp_path):
    storage = storage_for(str(tmp_path))
    files = [commit.publish_bytes(storage, f"p/{n}.json", n.encode(), records=1, partition="p") for n in "ba"]
    report = commit.write_report(storage, "i", "files", files, created_at="now")
    body = orjson.loads((tmp_path / report["path"]).read_bytes())
    assert [f["path"] for f in body["files"]] == ["p/a.json", "p/b.json"] and body["record_count"] == 2
    again = commit.write_report(storage, "i", "files", files, created_at="later")
    assert again["status"] == "already_present"
    assert commit.write_report(storage, "i", "files", [], created_at="x") is None


@pytest.mark.parametrize("value", ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", 'a;b "quoted"\r\nnext line'])
def test_csv_cells_are_spreadsheet_safe_and_round_trip(value):
    row = dict(ROW, event=value, anonymous_id="plain")
    text = formats.encode("csv", pa.Table.from_pylist([row], schema=SCHEMA), "none", separator=";").decode()
    [header, cells] = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    got = cells[header.index("event")]
    if value[0] in "=+-@\t\r":
        assert got == "'" + value  # never evaluated as a formula by a spreadsheet
    else:
        assert got == value        # separators, quotes and line breaks quoted per RFC 4180
    assert cells[header.index("anonymous_id")] == "plain"
