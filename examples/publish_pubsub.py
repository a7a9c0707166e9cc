"""Publish NDJSON event files to a Pub/Sub topic, one message per line (for the streaming quickstart).

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python examples/publish_pubsub.py \\
        --topic projects/test-proj/topics/events --create_subscription beamhouse 'examples/events/*.ndjson'

With ``--create_subscription NAME`` the topic and a subscription ``projects/P/subscriptions/NAME`` are created
first when missing. Prints how many messages were published.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import sys


def publish(topic: str, paths: list[str], create_subscription: str | None = None) -> int:
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    if create_subscription:
        project = topic.split("/")[1]
        subscriber = pubsub_v1.SubscriberClient()
        try:
            publisher.create_topic(name=topic)
        except exceptions.AlreadyExists:
            pass
        try:
            subscriber.create_subscription(name=f"projects/{project}/subscriptions/{create_subscription}", topic=topic)
        except exceptions.AlreadyExists:
            pass
    futures = []
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    futures.append(publisher.publish(topic, line.rstrip(b"\r\n")))
    for future in futures:
        future.result(timeout=60)
    return len(futures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True, help="projects/PROJECT/topics/NAME")
    parser.add_argument("--create_subscription", default=None)
    parser.add_argument("files", nargs="+", help="NDJSON files or globs (.gz by extension)")
    args = parser.parse_args()
    paths = sorted(p for pattern in args.files for p in glob.glob(pattern))
    if not paths:
        sys.exit("no file matches")
    print(f"published {publish(args.topic, paths, args.create_subscription)} messages to {args.topic}")


if __name__ == "__main__":
    main()
