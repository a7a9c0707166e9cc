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
    # the run says where each integration delivered, and where the dead letters went when there are any
    assert f"  -> file://{tmp_path / 'lake'}/" in done.stdout and "dead letters ->" not in done.stdout
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines + [b"{broken"]) + b"\n")
    done = deliver(*_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}")
    assert done.returncode == 0 and f"dead letters -> {tmp_path / 'dead'}" in done.stdout, done.stderr


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


def test_validate_check_secrets_parses_keys_without_the_network(tmp_path):
    """The seed's placeholder keys pass plain validation (which says secrets were not checked) and fail
    --check-secrets, naming the field and never the value; real-looking keys pass."""
    import json
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.guarantees.invariants import REPO
    from tests.seed000 import seed_bodies

    bodies = seed_bodies()
    (tmp_path / "seed.json").write_text(json.dumps(bodies))

    def validate(*args):
        return subprocess.run([sys.executable, "-m", "pipelines.validate", *args], cwd=REPO, capture_output=True,
                              text=True, env={**__import__("os").environ, "AWS_SECRET": "from-the-env"})

    plain = validate(str(tmp_path / "seed.json"))
    assert plain.returncode == 0 and plain.stdout.count("secrets not checked") == 4
    checked = validate(str(tmp_path / "seed.json"), "--check-secrets")
    assert checked.returncode == 2
    assert "$[0].config.service_account_json (bigquery_events): not JSON" in checked.stderr
    assert "$[1].config.private_key (snowflake_events): the key is not a readable PEM private key" in checked.stderr
    assert "BEGIN PRIVATE KEY" not in checked.stderr and "service_account\\" not in checked.stderr
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    bodies[0]["config"]["service_account_json"] = json.dumps(
        {"type": "service_account", "project_id": "p", "private_key": pem, "client_email": "sa@p.iam.gserviceaccount.com"})
    (tmp_path / "key.p8").write_text(pem)
    bodies[1]["config"]["private_key"] = f"file:{tmp_path / 'key.p8'}"
    (tmp_path / "real.json").write_text(json.dumps(bodies))
    checked = validate(str(tmp_path / "real.json"), "--check-secrets")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("secrets resolved and parsed") == 4


def test_a_terminal_gets_a_progress_line_and_a_pipe_does_not(tmp_path):
    """Under a pseudo-terminal the command shows lines and bytes read (with the share of the input); with
    its output piped (CI, cron) it prints none of that."""
    import os
    import pty
    import sys

    from tests.guarantees.invariants import REPO

    lines = [b'{"type":"track","event":"e","anonymousId":"a%d","messageId":"m%d"}' % (i, i) for i in range(3000)]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    argv = [sys.executable, "-m", "pipelines.deliver", *_files(tmp_path), f"--input={tmp_path / 'in.ndjson'}",
            "--runner=FnApiRunner"]
    piped = deliver(*argv[3:])
    assert piped.returncode == 0 and "lines/s" not in piped.stdout + piped.stderr
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal
        os.chdir(REPO)
        os.execv(argv[0], argv)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    size = len(b"\n".join(lines) + b"\n") / 1000
    assert f"read all 3,000 lines ({size:.1f} KB)" in text, text[-2000:]
    assert "delivered 3000" in text


def test_every_entry_point_refuses_an_unknown_option_naming_the_nearest(tmp_path):
    import subprocess
    import sys

    from tests.guarantees.invariants import REPO

    for argv, near in ((["pipelines.validate", "x.json", "--check-secret"], "--check"),
                       (["pipelines.ddl", "--integrations", "x.json", "--integration=y"], "--integrations"),
                       (["pipelines.retention", "--integrations", "x.json", "--aply"], "--apply"),
                       (["pipelines.admin", "--database", "sqlite:///x.db", "--tokens-file=t"], "--tokens_file"),
                       (["pipelines.runtime", "fetch", "prism", "--flink_versoin", "2"], "--flink_version")):
        done = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "unknown option" in done.stderr and f"did you mean {near}" in done.stderr, \
            (argv, done.stderr[-500:])
