"""The pipeline users write first with Beam's built-in transforms (the baseline of the benchmark):

    ReadFromText -> json.loads -> consent Filter -> normalising Map -> WriteToParquet   (FnApiRunner)

    python -m benchmarks.plain_beam --input events.ndjson --output out/plain

No dedup, no dead letters, no reports: bad lines would crash it. Kept deliberately simple.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

SCHEMA = pa.schema([
    ("event_id", pa.string()), ("type", pa.string()), ("event", pa.string()), ("anonymous_id", pa.string()),
    ("user_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
    ("received_at", pa.timestamp("us", tz="UTC")), ("sent_at", pa.timestamp("us", tz="UTC")),
    ("context", pa.string()), ("properties", pa.string()), ("traits", pa.string()), ("source_id", pa.string()),
    ("integration_id", pa.string()),
])
NAMES = {"page": "Page Viewed", "screen": "Screen Viewed", "identify": "Identify", "group": "Group", "alias": "Alias"}


def parse_time(value):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def consented(event) -> bool:
    return (event.get("context") or {}).get("consent", {}).get("analytics") is True


def normalise(event) -> dict:
    kind = event.get("type")
    return {
        "event_id": event.get("messageId"), "type": kind, "event": event.get("event") or NAMES.get(kind),
        "anonymous_id": event.get("anonymousId"), "user_id": event.get("userId"),
        "timestamp": parse_time(event.get("timestamp")), "received_at": parse_time(event.get("receivedAt")),
        "sent_at": parse_time(event.get("sentAt")), "context": json.dumps(event.get("context") or {}),
        "properties": json.dumps(event.get("properties") or {}), "traits": json.dumps(event.get("traits") or {}),
        "source_id": "bench", "integration_id": "plain",
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args or ["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        (p
         | beam.io.ReadFromText(args.input)
         | beam.Map(json.loads)
         | beam.Filter(consented)
         | beam.Map(normalise)
         | beam.io.WriteToParquet(args.output + "/events", SCHEMA, file_name_suffix=".parquet"))


if __name__ == "__main__":
    main()
