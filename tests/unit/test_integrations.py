import orjson

from pipelines import validate
from transforms.integrations import validate_integrations


def files(**config):
    return {"source_id": "s", "vendor": "files", "name": "Lake", "config": {"path": "out", **config}}


def test_example_file_is_valid():
    integrations, errors = validate_integrations(orjson.loads(open("examples/integrations.json", "rb").read()))
    assert errors == []
    assert [i.integration_id for i in integrations] == ["local_lake", "raw_archive", "warehouse"]
    lake = integrations[0].config
    assert (lake.batch_size, lake.compression, lake.consent.require) == (500, "snappy", ["analytics"])


def test_defaults():
    [integ], errors = validate_integrations([files()])
    assert errors == []
    c = integ.config
    assert (c.batch_size, c.batch_interval_seconds, c.file_format, c.compression) == (500, 60, "json", "gzip")
    assert c.partition_by == "year={yyyy}/month={MM}/day={dd}/hour={HH}" and integ.enabled


def test_every_problem_is_listed_with_its_path():
    data = [
        files(batch_size=0, compression="snappy"),  # two errors in one config? compression checked after fields
        {"source_id": "s", "vendor": "nope", "name": "X", "config": {}},
        {"vendor": "files", "name": "Y", "config": {"path": "p", "partition_by": "{bad}"}},
        files(consent={"require": []}, typo_key=1),
        {"source_id": "s", "vendor": "duckdb", "name": "W", "config": {"path": "w.db", "table": "x; DROP TABLE y"}},
        files(properties={"include": ["a.b"], "exclude": ["context.ip"]}),
    ]
    _, errors = validate_integrations(data)
    joined = "\n".join(errors)
    for expected in ["$[0].config.batch_size", "$[1].vendor", "$[2].source_id", "$[3].config.consent.require",
                     "$[3].config.typo_key", "$[4].config.table", "$[5].config.properties"]:
        assert expected in joined, (expected, joined)


def test_duplicate_ids_and_nothing_enabled():
    _, errors = validate_integrations([files(), files()])
    assert any("duplicate integration_id" in e for e in errors)
    _, errors = validate_integrations([{**files(), "enabled": False}])
    assert errors == ["$: no enabled integration"]


def test_errors_never_echo_values(tmp_path, capsys):
    secret = "sk-very-secret-value"
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps([files(batch_size=secret, file_format=secret, password=secret)]))
    assert validate.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "password" in err and secret not in err


def test_validate_cli_ok_and_bad_json(tmp_path, capsys):
    assert validate.main(["examples/integrations.json"]) == 0
    bad = tmp_path / "x.json"
    bad.write_text("[{")
    assert validate.main([str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_completion_marker_settings():
    [integ], errors = validate_integrations([files(completion_marker="_SUCCESS", partition_by="{date}")])
    assert errors == [] and integ.config.completes_partitions()
    assert integ.config.completion_lateness_us() == 3_600_000_000  # default: an hour
    for bad, says in [(files(completion_marker="_SUCCESS", partition_by="tenant={tenant_id}"), "time placeholder"),
                      (files(completion_marker="SUCCESS"), "completion_marker"),      # readers would read it
                      (files(completion_marker="_a/b"), "completion_marker"),
                      (files(completion_marker="_S", completion_lateness_seconds=-1), "completion_lateness")]:
        _, errors = validate_integrations([bad])
        assert len(errors) == 1 and says in errors[0], errors
    sftp = {"source_id": "s", "vendor": "sftp", "name": "Drop", "config": {
        "host": "127.0.0.1", "username": "u", "password": "p", "verify_host_key": False,
        "completion_marker": "_SUCCESS"}}
    _, errors = validate_integrations([sftp])
    assert len(errors) == 1 and "need a files, s3 or gcs destination" in errors[0]


def test_output_profiles_come_from_their_registry_and_no_sink_switches_on_their_names():
    import re
    import typing
    from pathlib import Path

    from transforms.profiles.base import Profile
    from transforms.profiles.registry import PROFILES
    from transforms.sinks.files.config import FileOutputConfig

    assert typing.get_args(FileOutputConfig.model_fields["profile"].annotation) == tuple(PROFILES)
    assert all(isinstance(p, Profile) and p.name == name for name, p in PROFILES.items())
    sinks = Path(__file__).resolve().parents[2] / "transforms" / "sinks"
    for path in sinks.rglob("*.py"):
        text = path.read_text()
        for name in PROFILES:
            assert not re.search(rf"""(==|!=|\bin\b)\s*\(?["']{name}["']""", text), (path, name)
