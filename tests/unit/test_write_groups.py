"""Write groups: partitions cross the shuffle in a bounded number of groups per route, and the writer gets
back exactly each partition's events, sorted, with the right file tenant."""
from __future__ import annotations

import random

import pyarrow as pa

from transforms.events import batch_schema
from transforms.integrations import validate_integrations
from transforms.routing import stamp
from transforms.sinks.files.keying import WRITE_GROUPS, _KeyByPartitionFn, split_destinations


def events(n: int, tenants: int, hours: int, seed: int = 1) -> pa.Table:
    rnd = random.Random(seed)
    schema = batch_schema(())
    rows = []
    for i in range(n):
        t = rnd.randrange(tenants + 1)
        rows.append({"event_id": f"e{i}", "type": "track", "event": "E", "anonymous_id": "a",
                     "timestamp": 1769644800_000000 + rnd.randrange(hours * 3600) * 1_000_000,
                     "received_at": 1769644800_000000, "_tenant_id": None if t == tenants else f"t{t}",
                     "_dialect": "segment"})
    return stamp(pa.Table.from_pylist(rows, schema=schema), "s", "lake")


def key_fn(partition_by: str) -> _KeyByPartitionFn:
    [integ], errors = validate_integrations([{"source_id": "s", "vendor": "files", "name": "lake", "config": {
        "path": "/tmp/unused", "partition_by": partition_by}}])
    assert not errors
    fn = _KeyByPartitionFn(integ.integration_id, integ.config)
    fn.setup()
    return fn


def test_many_partitions_cross_in_a_bounded_number_of_elements_and_come_back_whole():
    table = events(3000, tenants=40, hours=30)  # 40 tenants x 30 hours: over 1,000 partitions
    out = list(key_fn("tenant_id={tenant_id}/{date}/{HH}").process(table))
    dead = [o for o in out if not isinstance(o, tuple)]  # events without a tenant cannot be placed
    out = [o for o in out if isinstance(o, tuple)]
    assert len(out) <= WRITE_GROUPS
    seen = {}
    for (_route, _group), rows in out:
        for partition, tenant, part in split_destinations(rows, "timestamp"):
            assert (partition, tenant) not in seen  # a partition lives in one write group
            assert tenant == partition.split("/")[0].removeprefix("tenant_id=")
            keys = list(zip(part["timestamp"].to_pylist(), part["event_id"].to_pylist()))
            assert keys == sorted(keys)
            assert "__partition" not in part.column_names and "__file_tenant" not in part.column_names
            seen[(partition, tenant)] = part.num_rows
    assert len(seen) > 1000 and sum(seen.values()) + len(dead) == table.num_rows and dead


def test_mixed_tenant_files_keep_a_null_file_tenant():
    table = events(500, tenants=3, hours=4)
    out = list(key_fn("{date}/{HH}").process(table))
    dests = [(p, t) for _, rows in out for p, t, _ in split_destinations(rows, "timestamp")]
    assert len(dests) == 4 and all(t is None for _, t in dests)
