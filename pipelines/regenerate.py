"""Regenerate an export's history from the raw archive, into a separate location (seed 002).

    python -m pipelines.regenerate --integrations integrations.json \\
        --from 2026-01-29T00:00:00Z --to 2026-01-30T00:00:00Z --output out/regenerated [Beam options]

The *archive* is the enabled ``files`` integration writing NDJSON (``file_format`` ``json``); the *export*
is the one other file-writing integration (``files``, ``s3``, ``gcs`` or ``sftp``). Name them with
``--archive ID`` / ``--export ID`` when there are several. The archive's complete files (those its
delivery reports list) are read, the events whose partition time (the export's ``partition_time``) falls in
``[--from, --to)`` are kept, duplicates are dropped by ``event_id``, the export's consent filter and property
selection apply again, and the events are written with the export's format, partitioning and naming under
``--output`` (a path or ``s3://``/``gs://`` URL for ``files``/``s3``/``gcs``; a folder on the same server for
``sftp``), with its own delivery reports. Exit status: 0, 2 on configuration errors, 1 on a failed run.
"""

from __future__ import annotations

import sys

from pipelines import local

if __name__ == "__main__":
    # First, before this process imports Beam: local worker processes import it meanwhile (pipelines.local).
    local.prestart(sys.argv[1:], preload="pipelines.regenerate")

import argparse
import logging

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import cli, memory, runtime
from pipelines.problems import report
from transforms import accounting, coders, ledger, secrets
from transforms.archive import read_lines, reported_files, rows_to_batch
from transforms.deadletter import WriteDeadLetters, count, make_record
from transforms.dedup import DeduplicateEvents
from transforms.integrations import load_integrations
from transforms.parse import split_by_shard
from transforms.routing import PrepareForIntegration
from transforms.sinks import REGISTRY
from transforms.timestamps import parse_timestamp_us

SHARDS = 16


def archive_root(integ) -> str | None:
    """Where ``integ`` keeps an NDJSON archive this job can read back, if it is one."""
    archive = REGISTRY[integ.vendor].archive
    return archive(integ.config) if archive is not None else None


def pick(integrations, wanted: str | None, role: str, accept) -> tuple[object | None, str | None]:
    """The integration playing ``role``: the one named, or the only candidate."""
    candidates = [i for i in integrations if i.enabled and accept(i)]
    if wanted is not None:
        named = [i for i in integrations if i.integration_id == wanted]
        if not named:
            return None, f"--{role}: no integration {wanted!r}"
        if not accept(named[0]):
            return None, f"--{role}: {wanted!r} cannot be the {role}"
        return named[0], None
    if len(candidates) != 1:
        names = ", ".join(i.integration_id for i in candidates) or "none"
        return None, f"--{role}: give the integration id (candidates: {names})"
    return candidates[0], None


def relocate(integ, output: str):
    """A copy of the export integration writing under ``output`` instead of its own location."""
    return integ.model_copy(update={"config": REGISTRY[integ.vendor].relocate(integ.config, output)})


class _ReadArchiveFileFn(beam.DoFn):
    """One archive file -> ``(shard, events in [start, end))``; unreadable lines are dead letters."""

    def __init__(self, purposes, tenant_field, app_field, time_column, start_us, end_us, source_id):
        self._args = (purposes, tenant_field, app_field)
        self._time, self._start, self._end, self._source = time_column, start_us, end_us, source_id

    def process(self, path):
        lines = read_lines(path)
        try:
            table = rows_to_batch(lines, *self._args)
        except ValueError:  # find the bad lines one by one; the rest goes on
            good = []
            for line in lines:
                try:
                    rows_to_batch([line], *self._args)
                    good.append(line)
                except ValueError as exc:
                    count("archive_unreadable")
                    yield beam.pvalue.TaggedOutput("dead_letters", make_record(
                        "archive_unreadable", "parse", f"{path}: {exc}", line.decode("utf-8", "replace"),
                        self._source))
            table = rows_to_batch(good, *self._args)
        ts = table[self._time].cast(pa.int64())
        table = table.filter(pc.and_(pc.greater_equal(ts, self._start), pc.less(ts, self._end)))
        yield from split_by_shard(table, SHARDS)


def build_parser() -> argparse.ArgumentParser:
    """This entry point's own options (Beam's are accepted besides)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.regenerate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("--integrations", required=True, help="the integrations file (local or any Beam filesystem)")
    parser.add_argument("--from", dest="start", required=True, help="ISO 8601 start (inclusive), UTC if no zone")
    parser.add_argument("--to", dest="end", required=True, help="ISO 8601 end (exclusive)")
    parser.add_argument("--output", required=True, help="where the regenerated export is written: a path, an "
                        "s3:// or gs:// URL (the export's store), or a folder on the same sFTP server")
    parser.add_argument("--export", default=None, help="integration id of the export to regenerate")
    parser.add_argument("--archive", default=None, help="integration id of the files/NDJSON archive to read")
    parser.add_argument("--dead_letter", default="dead_letters_regenerate",
                        help="folder for dead letters (archive lines that cannot be read back)")
    parser.add_argument("--summary", default=None, help="write the run's accounting as JSON to this local file")
    parser.add_argument("--tenant_id_field", default="context.tenant_id",
                        help="dotted path of the tenant id in an event (for {tenant_id} in layouts)")
    parser.add_argument("--app_id_field", default="context.app_id",
                        help="dotted path of the app id in an event (for {app_id} in layouts)")
    return parser


def run(argv=None) -> int:
    secrets.install_log_redaction()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    integrations, errors = load_integrations(args.integrations)
    errors += cli.unknown_options(beam_args, parser)  # what is left must be Beam's: a misspelling is not silently dropped
    archive = export = None
    if not errors:
        archive, err = pick(integrations, args.archive, "archive", lambda i: archive_root(i) is not None)
        errors += [err] if err else []
        export, err = pick(integrations, args.export, "export",
                           lambda i: REGISTRY[i.vendor].relocate is not None and i is not archive)
        errors += [err] if err else []
    start = end = None
    for name, value in (("from", args.start), ("to", args.end)):
        try:
            us = parse_timestamp_us(value)
        except Exception:  # noqa: BLE001 - any unparsable time
            errors.append(f"--{name}: not an ISO 8601 time ({value!r})")
            continue
        start, end = (us, end) if name == "from" else (start, us)
    if start is not None and end is not None and end <= start:
        errors.append("--to must be after --from")
    if not errors:
        try:
            export = relocate(export, args.output)
        except ValueError as exc:
            errors.append(str(exc))
    if not errors and hasattr(export.config, "preflight"):
        errors += export.config.preflight()
    files = []
    if not errors:
        files = reported_files(archive_root(archive))
        if not files:
            errors.append(f"archive {archive.integration_id}: no delivery report under {archive_root(archive)}")
    if errors:
        return report(errors)
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"
    purposes = tuple(export.config.consent.require) if export.config.consent else ()
    problems = runtime.runner_problems(options) + [e for e in [coders.spill_options_error(options)] if e]
    if problems:
        return report(problems)
    memory.memory_settings()
    try:
        p = beam.Pipeline(runner=local.runner(argv, options), options=options)
        with coders.spill_locally(p), p:  # the pipeline runs when its block ends, before the spill goes
            read = (p | "ArchiveFiles" >> beam.Create(files)
                    | "Reshuffle" >> beam.Reshuffle()
                    | "ReadArchive" >> beam.ParDo(_ReadArchiveFileFn(
                        purposes, args.tenant_id_field, args.app_id_field, export.config.partition_time, start, end,
                        export.source_id)).with_outputs("dead_letters", main="events"))
            unique = read.events | "Deduplicate" >> DeduplicateEvents()
            written = (unique | "Prepare" >> PrepareForIntegration(export)
                       | "Write" >> REGISTRY[export.vendor].write(export))
            dead = (read.dead_letters, written.dead_letters) | "DeadLetters" >> beam.Flatten()
            dead | "WriteDeadLetters" >> WriteDeadLetters(args.dead_letter)
        result = p.result
    except Exception as exc:
        logging.getLogger("beamhouse").debug("regeneration failed", exc_info=True)
        print(f"run failed: {type(exc).__name__}: {secrets.redact(str(exc))}", file=sys.stderr)
        return 1
    finally:
        ledger.end_runs()  # a next run in this process adopts what this one left unreported
    values = accounting.counters(result)
    iid = export.integration_id
    summary = {"from": args.start, "to": args.end, "output": args.output, "export": iid,
               "archive": archive.integration_id, "archive_files": len(files),
               "events": values.get("unique", 0), "duplicates": values.get("duplicates", 0),
               "delivered": values.get(f"{iid}.delivered", 0),
               "consent_dropped": values.get(f"{iid}.consent_dropped", 0),
               "files": values.get(f"{iid}.files", 0), "reports": values.get(f"{iid}.reports", 0)}
    print(orjson.dumps(summary).decode())
    if args.summary:
        with open(args.summary, "wb") as fh:
            fh.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    local.finish(sys.argv[1:], run(sys.argv[1:]))  # as pipelines.deliver: no interpreter teardown after the run


if __name__ == "__main__":
    main()

