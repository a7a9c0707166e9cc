"""Dead letters: durable, the same files on a re-run, and memory bounded by the input rather than 25 times
it. Through python -m pipelines.deliver (FnApiRunner), ending with the invariants."""
from __future__ import annotations

import subprocess
import sys

import orjson

from tests.guarantees.invariants import REPO, check_conservation, dead_letters, deliver

_PEAK = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "pipelines.deliver", *sys.argv[1:]], capture_output=True)
assert done.returncode == 0, done.stderr[-2000:]
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _bad_run(root, n: int) -> list[str]:
    root.mkdir()
    # each bad line unterminated (parse_error); one good event, and no limit on the dead letters' share
    (root / "in.ndjson").write_bytes(b"".join(b'{"type":"track","anonymousId":"a%d","pad":"%s"\n' % (i, b"x" * 1000)
                                              for i in range(n)) + b'{"type":"page","anonymousId":"ok"}\n')
    (root / "i.json").write_bytes(orjson.dumps([{"source_id": "s", "vendor": "files", "name": "Lake",
                                                 "config": {"path": str(root / "lake")}}]))
    return [f"--integrations={root / 'i.json'}", f"--input={root / 'in.ndjson'}", f"--dead_letter={root / 'dead'}",
            f"--summary={root / 'summary.json'}", "--runner=FnApiRunner", "--max_dead_letter_fraction=1"]


def _peak_mib(argv) -> float:
    out = subprocess.run([sys.executable, "-c", _PEAK, *argv], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1]) / 1024


def test_memory_for_dead_letters_grows_with_their_bytes_not_25_times(tmp_path):
    small, large = _peak_mib(_bad_run(tmp_path / "small", 4_000)), _peak_mib(_bad_run(tmp_path / "large", 40_000))
    # 36,000 more dead letters of about 1.1 KB each: about 40 MB of records. One in-memory list of dicts
    # took about a gigabyte more here; the batched, spilled grouping a fraction of that.
    assert large - small < 350, (small, large)
    summary = orjson.loads((tmp_path / "large" / "summary.json").read_bytes())
    check_conservation(summary, input_events=40_001)
    assert len(dead_letters(tmp_path / "large" / "dead")) == 40_000


def test_dead_letter_files_are_the_same_on_a_rerun(tmp_path):
    argv = _bad_run(tmp_path / "run", 25_000)  # three files of at most 10,000 records
    assert deliver(*argv).returncode == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "run" / "dead").glob("*.ndjson")}
    assert len(first) == 3 and sum(data.count(b"\n") for data in first.values()) == 25_000
    done = deliver(*argv)
    assert done.returncode == 0, done.stderr
    again = {p.name: p.read_bytes() for p in (tmp_path / "run" / "dead").glob("*.ndjson")}
    assert again == first  # same names, nothing added or rewritten
    records = dead_letters(tmp_path / "run" / "dead")
    assert {r["reason"] for r in records} == {"parse_error"}
    assert len({r["payload"] for r in records}) == 25_000
    check_conservation(orjson.loads((tmp_path / "run" / "summary.json").read_bytes()), input_events=25_001)


def test_a_run_that_cannot_write_its_dead_letters_fails_before_any_report_or_load(tmp_path):
    from tests.eventgen import generate

    lines, _ = generate(300, seed=71)  # bad lines included
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "blocker").write_bytes(b"a file where the dead-letter folder would be")
    (tmp_path / "i.json").write_bytes(orjson.dumps([
        {"source_id": "s", "vendor": "files", "name": "Lake", "config": {"path": str(tmp_path / "lake")}},
        {"source_id": "s", "vendor": "duckdb", "name": "Warehouse", "config": {"path": str(tmp_path / "wh.duckdb")}}]))
    done = deliver(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                   f"--dead_letter={tmp_path / 'blocker' / 'dead'}")
    assert done.returncode == 1 and "run failed" in done.stderr
    assert not list((tmp_path / "lake").rglob("*.report"))  # nothing says the delivery is complete
    assert not list((tmp_path / "lake").rglob("*.parquet"))
    if (tmp_path / "wh.duckdb").exists():
        import duckdb

        con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        assert "events" not in tables or con.execute("SELECT count(*) FROM events").fetchone()[0] == 0
