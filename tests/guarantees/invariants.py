"""The invariants of shared/docs/reliability.md (I1-I7) as checks over what a run left on local storage.

Every guarantee test ends with these. They read the destination back *through the store* (the files and
reports on disk), never through the sink's own naming functions, so a report naming a file that is not
there, or a file holding other bytes than its report says, is found.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def deliver(*argv: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m pipelines.deliver ARGV`` (the real entry point) on the FnApiRunner unless ARGV names one."""
    args = [sys.executable, "-m", "pipelines.deliver", *argv]
    if not any(a.startswith("--runner") for a in argv):
        args.append("--runner=FnApiRunner")
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def reports(root: Path) -> list[dict]:
    return [orjson.loads(p.read_bytes()) for p in sorted((root / "_reports").glob("*.report"))]


def check_report_integrity(root: Path) -> list[Path]:
    """I3: every file a report lists exists under ``root`` with the listed size and sha256. Returns them."""
    listed = []
    for report in reports(root):
        assert report["file_count"] == len(report["files"])
        for entry in report["files"]:
            path = root / entry["path"]
            assert path.is_file(), f"report {report['generation']} lists {entry['path']}, which is not there"
            data = path.read_bytes()
            assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
            listed.append(path)
    return listed


def rows_of(path: Path) -> list[dict]:
    """The rows a delivered file holds (Parquet, NDJSON or gzip NDJSON)."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv" or path.name.endswith(".csv.gz"):
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
            column_types={"event_id": "string"})).to_pylist()
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in io.BytesIO(data).read().splitlines() if line.strip()]


def check_no_duplicate(root: Path) -> list[str]:
    """I2 (and I3): at most one row per event_id among the files the reports list; every data file on the
    store outside the temp folder is listed (a file in no report would be read by a lake reader)."""
    listed = check_report_integrity(root)
    on_store = {p for p in root.rglob("*") if p.is_file() and not any(part.startswith("_") for part in
                                                                      p.relative_to(root).parts)}
    assert on_store == set(listed), sorted(map(str, on_store ^ set(listed)))[:5]
    ids = [row["event_id"] for path in listed for row in rows_of(path)]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"{len(dupes)} event ids delivered more than once, e.g. {dupes[:3]}"
    return ids


def check_conservation(summary: dict, input_events: int | None = None) -> None:
    """I1: every integration balances (input = delivered + consent-dropped + duplicates + dead letters)."""
    if input_events is not None:
        assert summary["input"] == input_events, (summary["input"], input_events)
    for iid, entry in summary["integrations"].items():
        assert entry["balanced"], iid
    assert summary["balanced"]


def dead_letters(path: Path) -> list[dict]:
    return [orjson.loads(line) for f in sorted(path.glob("*.ndjson")) for line in f.read_bytes().splitlines()]


def check_no_secret(secrets: list[str], *texts: str, paths: tuple[Path, ...] = ()) -> None:
    """I6: no secret (nor its escaped, quoted or URL-encoded forms) in any text or any file under ``paths``."""
    from transforms.secrets import printed_forms

    forms = {form.encode() for s in secrets for form in printed_forms(s)}
    for text in texts:
        for form in forms:
            assert form not in text.encode(), "a secret is in the output"
    for root in paths:
        for f in (p for p in Path(root).rglob("*") if p.is_file()):
            data = f.read_bytes()
            for form in forms:
                assert form not in data, f"a secret is in {f}"
