"""Command-line options of the delivery pipeline (every Beam option is accepted as well)."""
from apache_beam.options.pipeline_options import PipelineOptions

from transforms import dialects
from transforms.parse import ParseSettings

_PARSE = ParseSettings(source_id="")  # the parse stage's defaults, so the flags cannot drift from them


class DeliveryOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        # Not argparse-required: Beam parses every registered options class for every pipeline in
        # the process, so a required flag here would break unrelated pipelines; run() checks it.
        parser.add_argument("--integrations", default=None,
                            help="Integrations file (required): a JSON list of integration objects, local or on any "
                                 "Beam filesystem (docs/configuration.md).")
        parser.add_argument("--input", action="append", default=None,
                            help="Input glob on any Beam filesystem; NDJSON, compressed by extension (.gz, .bz2, .xz, .zst and "
                                 ".deflate are checked to their end marker: a damaged file's readable lines are "
                                 "delivered, the rest is a corrupt_input dead letter). Repeat for several globs.")
        parser.add_argument("--dead_letter", default="dead_letters",
                            help="Directory (any Beam filesystem) for dead-letter NDJSON files.")
        parser.add_argument("--summary", default=None,
                            help="Write the run's accounting as JSON to this local file.")
        parser.add_argument("--source_id", default=None,
                            help="Source id for dead letters and derived event ids; defaults to the "
                                 "integrations' source_id when they share one.")
        parser.add_argument("--tenant_id_field", default="context.tenant_id",
                            help="Dotted path of the tenant id in an event (for partition templates).")
        parser.add_argument("--app_id_field", default="context.app_id",
                            help="Dotted path of the app id in an event (for partition templates).")
        parser.add_argument("--input_dialect", default="auto",
                            choices=["auto", *dialects.NAMES],
                            help="The records' dialect; auto detects it per record (docs/events.md, Input dialects).")
        parser.add_argument("--max_event_bytes", type=int, default=_PARSE.max_event_bytes,
                            help="Longer lines are dead-lettered as too_large; a line holding many events (a batch, an "
                                 "OTLP export) may be up to 4 MiB, each event checked alone.")
        parser.add_argument("--max_nesting_depth", type=int, default=_PARSE.max_nesting_depth,
                            help="Deeper events are dead-lettered as too_deep (1 to 200: the JSON encoders write at most "
                                 "254 levels back).")
        parser.add_argument("--max_past_days", type=float, default=_PARSE.max_past_days,
                            help="Events timed more than this before received_at, and receivedAt more than this "
                                 "before the processing time, are timestamp_out_of_range.")
        parser.add_argument("--max_future_hours", type=float, default=_PARSE.max_future_hours,
                            help="Events timed more than this after received_at, and receivedAt more than this "
                                 "after the processing time, are timestamp_out_of_range.")
        # 16, not one per core: a worker holds one shard's events several times over while deduplicating
        # them (decoded, filtered, regrouped), so smaller shards cap its memory (1M events: 2.4 -> 1.9 GiB
        # summed over the local runner's processes, same time).
        parser.add_argument("--shards", type=int, default=_PARSE.shards,
                            help="Dedup shards: how many parallel groups duplicates are removed in.")
        parser.add_argument("--skip_preflight", action="store_true", default=False,
                            help="Skip the start-up checks of destinations (buckets exist, secrets resolve); "
                                 "use when the launcher cannot reach them but the workers can.")
        # Streaming sources (any one of them runs the job in streaming mode).
        parser.add_argument("--input_subscription", default=None,
                            help="Pub/Sub subscription projects/P/subscriptions/S to read events from (streaming).")
        parser.add_argument("--input_watch", default=None,
                            help="Glob watched for new files on any Beam filesystem (streaming).")
        parser.add_argument("--watch_interval_seconds", type=float, default=10.0,
                            help="How often --input_watch looks for new files.")
        parser.add_argument("--kafka_bootstrap_servers", default=None,
                            help="Kafka bootstrap servers (with --kafka_topic; Beam's Java ReadFromKafka).")
        parser.add_argument("--kafka_topic", default=None, help="Kafka topic to read events from (streaming).")
        parser.add_argument("--dedup_window_seconds", type=float, default=86_400,
                            help="Streaming: an event_id seen again within this window is a duplicate.")
        parser.add_argument("--allowed_lateness_seconds", type=float, default=7 * 86_400,
                            help="Streaming: events timed more than this before their arrival are dead letters "
                                 "too_late; later ones go to their old partition as new files.")
        parser.add_argument("--max_dead_letter_fraction", type=float, default=0.5,
                            help="Exit 1 (after writing everything) when more than this fraction of the input's "
                                 "events are dead letters; a run with input lines of which none yielded an "
                                 "event fails whatever this is. 1 turns the fraction check off.")
        parser.add_argument("--per_line_input", action="store_true", default=False,
                            help="Parse inputs one element per line instead of in blocks: how a "
                                 "streaming source delivers events; slower, kept for comparison.")


# The Dataflow Flex Template (metadata.json, written by ``python -m pipelines.reference``): which options a
# template user sets in the console, with their label and the check the console applies; the help text
# is the option's own, so the two cannot drift.
FLEX_TEMPLATE = {
    "name": "beamhouse-deliver",
    "description": "Deliver analytics events to warehouses and lakes (batch from files, or streaming from "
                   "Pub/Sub or Kafka).",
    "streaming": True,
    "supportsAtLeastOnce": False,
    "supportsExactlyOnce": True,
}
FLEX_TEMPLATE_PARAMETERS = (  # (option, label, optional, regexes)
    ("integrations", "Integrations file", False, ["^gs://.+$"]),
    ("input", "Input glob (batch)", True, []),
    ("input_subscription", "Pub/Sub subscription (streaming)", True, ["^projects/[^/]+/subscriptions/[^/]+$"]),
    ("kafka_bootstrap_servers", "Kafka bootstrap servers (streaming)", True, []),
    ("kafka_topic", "Kafka topic (streaming)", True, []),
    ("dead_letter", "Dead-letter folder", False, ["^gs://.+$"]),
    ("input_dialect", "Input dialect", True, ["^(" + "|".join(("auto", *dialects.NAMES)) + ")$"]),
    ("dedup_window_seconds", "De-duplication window (s)", True, ["^[0-9]+(\\.[0-9]+)?$"]),
    ("allowed_lateness_seconds", "Allowed lateness (s)", True, ["^[0-9]+(\\.[0-9]+)?$"]),
    ("shards", "Dedup shards (batch)", True, ["^[0-9]+$"]),
    ("max_dead_letter_fraction", "Dead-letter fraction that fails the run", True, ["^(0(\\.[0-9]+)?|1(\\.0+)?)$"]),
)
