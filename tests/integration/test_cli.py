"""The delivery command as a new user meets it: --help, misspelled options, runs that deliver nothing.
Through python -m pipelines.deliver (FnApiRunner where a run happens)."""
from __future__ import annotations

import orjson

from pipelines.options import DeliveryOptions
from tests.guarantees.invariants import check_conservation, deliver
from transforms.coders import ShuffleOptions

SNOWPLOW_GET = (b"e=pv&url=https%%3A%%2F%%2Fshop.example%%2F&page=Home&aid=shop&p=web&tv=js-3.0.0&duid=d1"
                b"&eid=00000000-0000-4000-8000-%012d&dtm=1769601600000")


def _our_flags() -> set[str]:
    from pipelines.cli import _parser

    parser = _parser([DeliveryOptions, ShuffleOptions], add_help=False)
    return {o for action in parser._actions for o in action.option_strings}


def test_help_lists_every_option_with_its_default_and_mentions_beam_options():
    done = deliver("--help")
    assert done.returncode == 0
    for flag in _our_flags():
        assert flag in done.stdout, flag
    assert "(default: 65536)" in done.stdout and "(default: dead_letters)" in done.stdout
    assert "Beam options are accepted" in done.stdout and "--direct_num_workers" in done.stdout


def test_a_misspelled_option_is_refused_naming_the_nearest_one(tmp_path):
    done = deliver("--integrations=examples/integrations.json", "--input=examples/events/*.ndjson",
                   f"--dead-letter={tmp_path / 'dl'}", "--summry", str(tmp_path / "s.json"))
    assert done.returncode == 2
    assert "--dead-letter: unknown option (did you mean --dead_letter?)" in done.stderr
    assert "--summry: unknown option (did you mean --summary?)" in done.stderr
    assert not (tmp_path / "dl").exists()


def _files(tmp_path):
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "s", "vendor": "files", "name": "Lake",
                                                     "config": {"path": str(tmp_path / "lake")}}]))
    return [f"--integrations={tmp_path / 'i.json'}", f"--dead_letter={tmp_path / 'dead'}",
            f"--summary={tmp_path / 'summary.json'}"]


def test_beam_options_pass(tmp_path):
    lines = [b'{"type":"track","event":"e","anonymousId":"a","messageId":"m1"}']
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    done = deliver(*_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}", "--runner=FnApiRunner",
                   "--direct_running_mode=in_memory", "--direct_num_workers=1", "--no_pipeline_type_check")
    assert done.returncode == 0, done.stderr


def test_snowplow_lines_read_as_segment_fail_the_run_after_writing_the_dead_letters(tmp_path):
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(SNOWPLOW_GET % i for i in range(20)) + b"\n")
    done = deliver(*_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}", "--input_dialect=segment")
    assert done.returncode == 1
    assert "none of the input's 20 lines yielded an event" in done.stderr and "--input_dialect" in done.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    check_conservation(summary, input_events=20)
    assert summary["dead_letters"]["total"] == 20 and list((tmp_path / "dead").glob("*.ndjson"))
    # the same lines as auto-detected Snowplow deliver
    done = deliver(*_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}")
    assert done.returncode == 0, done.stderr


def test_more_dead_letters_than_the_threshold_fail_the_run(tmp_path):
    good = [b'{"type":"track","event":"e","anonymousId":"a","messageId":"m%d"}' % i for i in range(4)]
    bad = [b"{not json %d" % i for i in range(6)]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(good + bad) + b"\n")
    done = deliver(*_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}")
    assert done.returncode == 1 and "6 of 10 events (60%) are dead letters" in done.stderr
    done = deliver(*_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}", "--max_dead_letter_fraction=0.7")
    assert done.returncode == 0, done.stderr
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()), input_events=10)


def test_a_locked_or_unplaceable_duckdb_fails_at_start_before_anything_is_published(tmp_path):
    import subprocess
    import sys
    import time

    lines = [b'{"type":"track","event":"e","anonymousId":"a","messageId":"m%d"}' % i for i in range(5)]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")

    def config(db):
        (tmp_path / "i.json").write_bytes(orjson.dumps([
            {"source_id": "s", "vendor": "files", "name": "Lake", "config": {"path": str(tmp_path / "lake")}},
            {"source_id": "s", "vendor": "duckdb", "name": "Warehouse", "config": {"path": str(db)}}]))
        return [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                f"--dead_letter={tmp_path / 'dead'}"]

    (tmp_path / "a-file").write_bytes(b"")
    done = deliver(*config(tmp_path / "a-file" / "w.duckdb"))  # a folder that cannot be made
    assert done.returncode == 2 and "$[1].config (warehouse): path: the folder" in done.stderr
    assert "cannot be made" in done.stderr and not (tmp_path / "lake").exists()
    db = tmp_path / "w.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "c.execute('create table t(x int)'); print('held', flush=True); time.sleep(120)",
                               str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = deliver(*config(db))
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2 and "another process holds it open" in done.stderr
    assert not (tmp_path / "lake").exists()  # nothing was published before the check
    time.sleep(0.1)
    done = deliver(*config(db))
    assert done.returncode == 0, done.stderr
    done = deliver(*config(tmp_path / "new" / "folder" / "w.duckdb"))  # a missing folder is made, as for files
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "new" / "folder" / "w.duckdb").is_file()


def test_regenerate_refuses_an_unknown_option_too(tmp_path):
    import subprocess
    import sys

    from tests.guarantees.invariants import REPO

    done = subprocess.run([sys.executable, "-m", "pipelines.regenerate", "--integrations=examples/integrations.json",
                           "--from=2026-01-28", "--to=2026-01-29", f"--output={tmp_path / 'x'}", "--dead-letter=x"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--dead-letter: unknown option (did you mean --dead_letter?)" in done.stderr
