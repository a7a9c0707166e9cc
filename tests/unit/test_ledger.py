"""The delivery ledger (transforms/ledger.py) against a local destination root, no runner."""
from transforms import commit, ledger
from transforms.storage.local import LocalStorage

PARTITION = "dt=2026-01-01/hr=00"


def _publish(storage, book, batch: str, ids: list[str]) -> dict:
    record = {"path": f"{PARTITION}/{batch}.ndjson", "bytes": 1, "records": len(ids), "sha256": "0" * 64,
              "partition": PARTITION}
    storage.put_if_absent(record["path"], b"x", {})
    book.record(PARTITION, batch, record, ids)
    return record


def test_a_running_run_seen_between_its_report_and_its_last_marker_is_subtracted_whole(tmp_path):
    """Markers follow the report one by one: a concurrent run listing the partition meanwhile sees some
    marked. Subtracting only those would re-cut the rest into new batches (the CI failure of stop 34)."""
    storage = LocalStorage(str(tmp_path))
    other = ledger.Ledger(storage, run_id="first")
    batches = {"b1": ["a", "b"], "b2": ["c", "d"], "b3": ["e"]}
    records = [_publish(storage, other, b, ids) for b, ids in batches.items()]

    late = ledger.Ledger(storage, run_id="second")
    assert late._reported() == set()  # read before the first run's report existed: stale from here on
    commit.write_report(storage, "lake", "files", records, created_at="2026-01-01T00:00:00Z")
    other.mark_reported(PARTITION, "b2")  # the first run stopped marking after one

    held, adopt = late.delivered(PARTITION)
    assert sorted(held.to_pylist()) == ["a", "b", "c", "d", "e"]
    assert adopt == []
    # and the missing markers were written for the next reader
    assert {n.rsplit("/", 1)[-1] for n in storage.list_names(ledger.folder(PARTITION))} >= {
        "b1.reported", "b2.reported", "b3.reported"}


def test_a_running_runs_unreported_entries_are_left_alone(tmp_path):
    """In flight (no report yet, its process alive): neither subtracted nor adopted, so the same input is
    cut into the same batches and found under the same names."""
    storage = LocalStorage(str(tmp_path))
    other = ledger.Ledger(storage, run_id="first")
    _publish(storage, other, "b1", ["a", "b"])
    held, adopt = ledger.Ledger(storage, run_id="second").delivered(PARTITION)
    assert held.to_pylist() == [] and adopt == []


def test_an_over_runs_unreported_file_is_adopted(tmp_path, monkeypatch):
    storage = LocalStorage(str(tmp_path))
    other = ledger.Ledger(storage, run_id="first")
    monkeypatch.setattr("transforms.coders.process_identity", lambda pid: "1 1")  # the writer as recorded
    record = _publish(storage, other, "b1", ["a"])
    monkeypatch.setattr("transforms.coders.process_identity", lambda pid: None)  # ... and now gone
    held, adopt = ledger.Ledger(storage, run_id="second").delivered(PARTITION)
    assert held.to_pylist() == ["a"]
    assert [a["path"] for a in adopt] == [record["path"]]


def test_a_file_found_written_by_a_running_run_is_left_to_that_runs_report(tmp_path):
    """Two runs of the same input at once cut the same files: one report lists each (I2 across reports)."""
    storage = LocalStorage(str(tmp_path))
    first, second = ledger.Ledger(storage, run_id="first"), ledger.Ledger(storage, run_id="second")
    record = {"path": f"{PARTITION}/b1.ndjson", "records": 1, "partition": PARTITION}
    assert first.record(PARTITION, "b1", record, ["a"]) is True
    assert first.record(PARTITION, "b1", record, ["a"]) is True  # its own retried bundle
    assert second.record(PARTITION, "b1", record, ["a"]) is False  # the first run still runs
    commit.write_report(storage, "lake", "files", [{**record, "bytes": 1, "sha256": "0" * 64}], created_at="x")
    assert second.record(PARTITION, "b1", record, ["a"]) is False  # ... and has listed it


def test_a_file_of_a_run_that_stopped_before_its_report_is_listed_by_the_next(tmp_path, monkeypatch):
    storage = LocalStorage(str(tmp_path))
    monkeypatch.setattr("transforms.coders.process_identity", lambda pid: "1 1")
    record = {"path": f"{PARTITION}/b1.ndjson", "records": 1, "partition": PARTITION}
    ledger.Ledger(storage, run_id="first").record(PARTITION, "b1", record, ["a"])
    monkeypatch.setattr("transforms.coders.process_identity", lambda pid: None)
    assert ledger.Ledger(storage, run_id="second").record(PARTITION, "b1", record, ["a"]) is True


def test_an_ended_runs_unreported_file_is_adopted_by_the_next_run_in_the_same_process(tmp_path):
    """An in-process runner runs run after run in one process, which stays alive: a run the entry point ended
    (failed before its report) is over, and the next adopts its files, as it would a dead process's."""
    storage = LocalStorage(str(tmp_path))
    record = _publish(storage, ledger.Ledger(storage, run_id="failed"), "b1", ["a"])
    held, adopt = ledger.Ledger(storage, run_id="concurrent").delivered(PARTITION)
    assert held.to_pylist() == [] and adopt == []  # not ended: still running, left alone
    ledger.end_runs()
    held, adopt = ledger.Ledger(storage, run_id="next").delivered(PARTITION)
    assert held.to_pylist() == ["a"] and [a["path"] for a in adopt] == [record["path"]]
