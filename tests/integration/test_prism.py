"""The job on Beam's Prism runner (fetched by `python -m pipelines.runtime fetch prism`): the bundled example
delivers byte-for-byte what the FnApiRunner delivers, a re-run over a grown input ends with the invariants,
and a runner whose runtime is missing is refused at start naming the fetch command."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import orjson
import pytest

from tests.eventgen import consented_ids, generate
from tests.guarantees.invariants import REPO, deliver
from tests.guarantees.test_rerun import SOURCE, check_all, integrations, untimed

pytestmark = pytest.mark.timeout(600)


def example_run(root: Path, runner: str) -> dict:
    """The README's example command into ``root`` on ``runner``; returns the summary."""
    shutil.copytree(REPO / "examples", root / "examples")
    config = json.loads((root / "examples" / "integrations.json").read_text())
    for integ in config:
        integ["config"]["path"] = str(root / integ["config"]["path"])
    (root / "i.json").write_text(json.dumps(config))
    done = deliver(f"--integrations={root / 'i.json'}", f"--input={root / 'examples' / 'events' / '*.ndjson'}",
                   f"--dead_letter={root / 'out' / 'dead_letters'}", f"--summary={root / 'summary.json'}",
                   f"--runner={runner}")
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads((root / "summary.json").read_bytes())


def data_files(root: Path) -> dict[str, str]:
    """Every delivered file (not bookkeeping) under ``root/out`` by path, with its SHA-256."""
    out = {}
    for path in sorted((root / "out").rglob("*")):
        rel = path.relative_to(root / "out")
        if path.is_file() and not any(p.startswith("_") for p in rel.parts) and rel.parts[0] != "dead_letters" \
                and not path.name.endswith((".duckdb", ".wal")):
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_the_example_on_prism_delivers_exactly_what_the_fnapirunner_delivers(tmp_path, prism):
    """No --prism_location: the fetched binary is found by pipelines.runtime."""
    direct = example_run(tmp_path / "direct", "FnApiRunner")
    on_prism = example_run(tmp_path / "prism", "PrismRunner")
    for summary in (direct, on_prism):  # where each delivered: its own folder
        for entry in summary["integrations"].values():
            assert entry.pop("destination").startswith(("file://" + str(tmp_path), "duckdb:" + str(tmp_path)))
    assert on_prism == direct and on_prism["balanced"]
    files = data_files(tmp_path / "prism")
    assert files and files == data_files(tmp_path / "direct")  # same names, same bytes
    for name in ("lake", "archive"):
        listed = [{k: f[k] for k in ("path", "sha256", "records")} for d in ("direct", "prism")
                  for r in sorted((tmp_path / d / "out" / name / "_reports").glob("*.report"))
                  for f in orjson.loads(r.read_bytes())["files"]]
        assert listed[:len(listed) // 2] == listed[len(listed) // 2:]  # the reports list the same files
    import duckdb

    rows = {}
    for d in ("direct", "prism"):
        con = duckdb.connect(str(tmp_path / d / "out" / "warehouse.duckdb"), read_only=True)
        rows[d] = con.execute("SELECT * FROM events ORDER BY event_id").fetchall()
        con.close()
    assert rows["prism"] == rows["direct"] and len(rows["prism"]) == direct["integrations"]["warehouse"]["delivered"]


def test_a_rerun_over_a_grown_input_on_prism_delivers_only_the_new_events(tmp_path, prism):
    root = tmp_path
    (root / "in").mkdir()
    (root / "i.json").write_bytes(orjson.dumps(integrations(root)))
    first, truth = generate(800, seed=21, tenants=3, bad=False, source_id=SOURCE)
    (root / "in" / "a.ndjson").write_bytes(b"\n".join(first + untimed(3)) + b"\n")
    argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in' / '*.ndjson'}",
            f"--dead_letter={root / 'dead'}", f"--summary={root / 'summary.json'}", "--runner=PrismRunner"]
    assert deliver(*argv).returncode == 0
    late, late_truth = generate(60, seed=22, tenants=3, bad=False, source_id=SOURCE)
    (root / "in" / "b.ndjson").write_bytes(b"\n".join(late) + b"\n")
    done = deliver(*argv)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = set(truth["unique"]) | set(late_truth["unique"]) | {f"untimed-{i}" for i in range(3)}
    consented = consented_ids(truth) | consented_ids(late_truth) | {f"untimed-{i}" for i in range(3)}
    summary = check_all(root, ids, consented, len(first) + 3 + len(late))
    assert summary["integrations"]["lake"]["already_delivered"] > 0


@pytest.mark.parametrize("runner, fetch", [(["--runner=PrismRunner"], "fetch prism"),
                                           (["--runner=FlinkRunner", "--flink_master=[local]"], "fetch flink")])
def test_a_runner_without_its_runtime_is_refused_at_start_naming_the_fetch_command(tmp_path, runner, fetch):
    (tmp_path / "in.ndjson").write_bytes(b'{"type":"track","event":"E","anonymousId":"a","messageId":"m1"}\n')
    (tmp_path / "i.json").write_bytes(orjson.dumps(
        [{"source_id": "s", "vendor": "files", "name": "Lake", "config": {"path": str(tmp_path / "lake")}}]))
    done = deliver(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                   f"--dead_letter={tmp_path / 'dead'}", *runner,
                   env={"BEAMHOUSE_RUNTIME_DIR": str(tmp_path / "empty"), "HOME": str(tmp_path / "home")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"python -m pipelines.runtime {fetch}" in done.stderr
    assert not (tmp_path / "lake").exists()  # refused before any work


def _lake_ids(root: Path) -> list[str]:
    import gzip

    return [orjson.loads(x)["event_id"] for p in sorted(root.rglob("*.json.gz")) if "_" not in p.parts[-2][:1]
            for x in gzip.decompress(p.read_bytes()).splitlines()]


def test_a_watched_folder_on_prism_delivers_each_file_added_while_the_job_runs_once(tmp_path, prism):
    """--input_watch needs splittable DoFns (refused on the DirectRunner's streaming engine): on Prism, its
    default runner, files written while the job runs are delivered once each, with their reports."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "in").mkdir()
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": SOURCE, "vendor": "files", "name": "Lake",
                                                     "config": {"path": str(tmp_path / "lake"), "file_format": "json",
                                                                "batch_size": 200, "batch_interval_seconds": 1}}]))
    first, truth = generate(120, seed=31, tenants=2, bad=False, source_id=SOURCE)
    second, truth2 = generate(80, seed=32, tenants=2, bad=False, source_id=SOURCE)
    (tmp_path / "in" / "a.ndjson").write_bytes(b"\n".join(first) + b"\n")
    log = open(tmp_path / "job.log", "w")
    job = subprocess.Popen([sys.executable, "-m", "pipelines.deliver", f"--integrations={tmp_path / 'i.json'}",
                            f"--input_watch={tmp_path / 'in' / '*.ndjson'}", "--watch_interval_seconds=1",
                            f"--dead_letter={tmp_path / 'dead'}"], cwd=REPO,  # Prism: the default for it
                           # to a file: a pipe nobody reads until the end fills up and stalls the job
                           stdout=log, stderr=subprocess.STDOUT, text=True)

    def wait_for(ids: set[str], seconds: float = 120) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = _lake_ids(tmp_path / "lake") if (tmp_path / "lake").exists() else []
            if set(got) >= ids:
                return got
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(1)
        raise AssertionError(f"not delivered within {seconds} s: {len(ids - set(got))} events")

    try:
        wait_for(set(truth["unique"]))
        (tmp_path / "in" / "b.ndjson").write_bytes(b"\n".join(second) + b"\n")
        expected = set(truth["unique"]) | set(truth2["unique"])
        wait_for(expected)
        time.sleep(3)  # another few watch rounds: nothing is matched, so nothing is delivered, twice
    finally:
        job.send_signal(signal.SIGINT)
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
    ids = _lake_ids(tmp_path / "lake")
    assert len(ids) == len(set(ids)) and set(ids) == expected
    listed = [f["path"] for r in (tmp_path / "lake" / "_reports").glob("*.report")
              for f in orjson.loads(r.read_bytes())["files"]]
    on_disk = sorted(p.relative_to(tmp_path / "lake").as_posix() for p in (tmp_path / "lake").rglob("*.json.gz")
                     if not p.relative_to(tmp_path / "lake").parts[0].startswith("_"))
    assert sorted(listed) == on_disk  # every delivered file is in a report, once
