"""The portable runner path (what Flink uses): the same delivery job submitted to Beam's local job service
with LOOPBACK workers, compared with the FnApiRunner's result on the same input."""
from __future__ import annotations

import gzip

import orjson
import pytest

from pipelines import deliver
from tests.eventgen import consented_ids, prepare_run

pytestmark = pytest.mark.timeout(600)


def lake_ids(root):
    return sorted(orjson.loads(x)["event_id"] for p in root.rglob("*.json.gz")
                  for x in gzip.decompress(p.read_bytes()).splitlines())


def test_portable_runner_delivers_what_the_direct_runner_delivers(tmp_path, job_service):
    out = {}
    for name, runner in (("direct", ["--runner=FnApiRunner"]),
                         ("portable", ["--runner=PortableRunner", f"--job_endpoint={job_service.url}",
                                       "--environment_type=LOOPBACK"])):
        integ = {"source_id": "src_abc123", "vendor": "files", "name": "Lake", "config": {
            "path": str(tmp_path / name / "lake"), "file_format": "json", "consent": {"require": ["analytics"]}}}
        truth, argv = prepare_run(tmp_path / name, [integ], n=200, seed=81, runner=runner[0])
        assert deliver.run(argv + runner[1:]) == 0
        out[name] = lake_ids(tmp_path / name / "lake")
        summary = orjson.loads((tmp_path / name / "summary.json").read_bytes())
        assert summary["balanced"] and summary["integrations"]["lake"]["delivered"] == len(consented_ids(truth))
    assert out["portable"] == out["direct"] == sorted(consented_ids(truth))
    # Same batches, same deterministic names.
    names = {n: sorted(p.name for p in (tmp_path / n / "lake").rglob("*.json.gz")) for n in out}
    assert names["portable"] == names["direct"]
