"""Per-tenant usage and the quota's fail action on the files destination (FnApiRunner)."""
from __future__ import annotations

import orjson

from pipelines import deliver
from tests.eventgen import generate


def test_quota_fail_action_exits_1_after_delivering(tmp_path, capsys):
    integration = {"source_id": "src_example", "vendor": "files", "name": "Per tenant", "config": {
        "path": str(tmp_path / "lake"), "partition_by": "tenant_id={tenant_id}/{date}",
        "quota": {"tenants": {"tenant-0": 1}, "action": "fail"}}}
    (tmp_path / "i.json").write_bytes(orjson.dumps([integration]))
    lines, truth = generate(n=120, seed=8, tenants=3, bad=False)
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 's.json'}", "--runner=FnApiRunner"]
    assert deliver.run(argv) == 1
    assert "exceeded its daily byte quota" in capsys.readouterr().err
    entry = orjson.loads((tmp_path / "s.json").read_bytes())["integrations"]["per_tenant"]
    assert entry["balanced"] and entry["delivered"] == len(truth["unique"])  # delivered, nothing dropped
    [exceeded] = entry["quota"]["exceeded"]
    assert exceeded["tenant"] == "tenant-0" and exceeded["daily_bytes"] == 1
    files = [p for p in (tmp_path / "lake").rglob("*.json.gz")]
    on_disk = {}
    for p in files:
        tenant = p.relative_to(tmp_path / "lake").parts[0][len("tenant_id="):]
        on_disk[tenant] = on_disk.get(tenant, 0) + p.stat().st_size
    assert {t: u["bytes"] for t, u in entry["tenants"].items()} == on_disk  # exact per tenant
    assert {t: u["events"] for t, u in entry["tenants"].items()} == {
        f"tenant-{i}": sum(1 for v in truth["unique"].values() if v["tenant"] == f"tenant-{i}") for i in range(3)}
