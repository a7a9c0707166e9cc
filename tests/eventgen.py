"""Deterministic Segment-style test events: duplicates, a consent mix, several tenants, bad lines.

    python -m tests.eventgen --events 300 --seed 7 --out examples/events/sample.ndjson

``generate(n, seed)`` returns ``(lines, truth)``: the raw lines (bytes, shuffled) and what a correct run
must produce: ``truth["unique"]`` maps each unique event_id to its expected facts, ``truth["bad"]``
counts bad lines by expected dead-letter reason, ``truth["duplicates"]`` the copies to drop.
"""
from __future__ import annotations

import argparse
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson

from transforms.dialects.segment import derive_event_id

PAGES = ["https://shop.example/", "https://shop.example/cart", "https://shop.example/p/1",
         "https://shop.example/p/2", "https://shop.example/checkout"]
START = datetime(2026, 1, 28, 0, 0, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CONSENT_CHOICES = [(True, True)] * 14 + [(False, False)] * 2 + [("true", False), (None, False), ("missing", False), (1, False)]

BAD_LINES = [
    (b"{not json", "parse_error"),
    (b'{"type":"track","event":"x","anonymousId":"a","properties":{"v":NaN}}', "parse_error"),
    (b'{"type":"track","event":"x","anonymousId":"a","properties":{"v":Infinity}}', "parse_error"),
    (b'{"type":"track","event":"x","anonymousId":"a\\ud800"}', "parse_error"),
    (b"[1,2,3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b'{"type":"track","event":"caf\xe9","anonymousId":"a"}', "invalid_utf8"),
    (b'{"type":"bogus","anonymousId":"a"}', "unknown_type"),
    (b'{"event":"No type","anonymousId":"a"}', "unknown_type"),
    (b'{"type":"track","anonymousId":"a"}', "missing_event_name"),
    (b'{"type":"page","properties":{}}', "missing_identity"),
    (b'{"type":"track","event":"x","anonymousId":"a","timestamp":"yesterday"}', "invalid_timestamp"),
    (b'{"type":"track","event":"x","anonymousId":"a","timestamp":"1999-01-01T00:00:00Z",'
     b'"receivedAt":"2026-01-28T00:00:00Z"}', "timestamp_out_of_range"),
    (b'{"type":"track","event":"x","anonymousId":"a","properties":[]}', "invalid_field"),
    (b'{"type":"track","event":"x","anonymousId":"a","messageId":"m1","event_id":"m2"}', "conflicting_event_id"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, "too_deep"),
]


def _fmt_time(rng: random.Random, ts: datetime) -> object:
    style = rng.randrange(4)
    if style == 0:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if style == 1:
        return ts.astimezone(timezone(timedelta(hours=2))).isoformat()
    if style == 2:
        return (ts - EPOCH) // timedelta(milliseconds=1)
    return ts.isoformat().replace("+00:00", "Z")


def generate(n: int = 300, seed: int = 7, tenants: int = 3, bad: bool = True, source_id: str = "src_example"):
    rng = random.Random(seed)
    lines: list[bytes] = []
    unique: dict[str, dict] = {}
    duplicates = 0
    for i in range(n):
        ts = START + timedelta(seconds=rng.randrange(0, 3 * 86400), milliseconds=rng.randrange(1000))
        received = ts + timedelta(seconds=rng.randrange(1, 30))
        kind = rng.choices(["page", "track", "identify", "group", "screen", "alias"], [40, 30, 10, 8, 7, 5])[0]
        consent_value, consented = rng.choice(CONSENT_CHOICES)
        context = {"ip": f"10.0.{i % 256}.{(i * 7) % 256}", "tenant_id": f"tenant-{i % tenants}",
                   "app_id": f"app{i % 2}", "library": {"name": "analytics.js", "version": "2.0"}}
        if consent_value != "missing":
            context["consent"] = {"analytics": consent_value, "marketing": rng.random() < 0.5}
        event = {"type": kind, "anonymousId": f"anon-{rng.randrange(50)}", "context": context,
                 "timestamp": _fmt_time(rng, ts), "receivedAt": received.isoformat().replace("+00:00", "Z")}
        has_id = rng.random() > 0.05
        if has_id:
            event["messageId"] = f"msg-{seed}-{i}"
        if rng.random() < 0.4:
            event["userId"] = f"user-{rng.randrange(20)}"
        total = None
        if kind == "page":
            url = rng.choice(PAGES)
            context["page"] = {"url": url}
            event["name"] = "Home" if url.endswith("/") else "Other"
            event["properties"] = {"url": url}
        elif kind == "track":
            if rng.random() < 0.6:
                event["event"] = "Order Completed"
                total = Decimal(rng.randrange(100, 50000)) / 100
                event["properties"] = {"order_id": f"ORD-{i}", "total": float(total), "currency": "EUR"}
            else:
                event["event"] = "Product Viewed"
                event["properties"] = {"sku": f"SKU-{rng.randrange(30)}"}
        elif kind == "identify":
            event["traits"] = {"email": f"user{i}@example.com", "plan": "pro"}
        elif kind == "group":
            event["groupId"] = f"org-{rng.randrange(5)}"
            event["traits"] = {"name": "Org"}
        elif kind == "screen":
            event["name"] = "Settings"
        else:
            event["previousId"] = f"anon-{rng.randrange(50)}"
            event["userId"] = f"user-{rng.randrange(20)}"
        line = orjson.dumps(event)
        lines.append(line)
        copies = 1 if rng.random() < 0.08 else 0
        for _ in range(copies):
            lines.append(line)  # an exact re-send (same messageId, or same content when none)
            duplicates += 1
        key = event.get("messageId") or derive_event_id(orjson.loads(line), source_id)
        unique[key] = {"type": kind, "timestamp": ts.replace(microsecond=(ts.microsecond // 1000) * 1000),
                       "consented": consented, "total": total, "tenant": context["tenant_id"], "app": context["app_id"],
                       "page_url": context.get("page", {}).get("url"), "has_id": has_id}
    truth = {"unique": unique, "duplicates": duplicates, "bad": {}}
    if bad:
        for raw, reason in BAD_LINES:
            lines.append(raw)
            truth["bad"][reason] = truth["bad"].get(reason, 0) + 1
    rng.shuffle(lines)
    return lines, truth


def prepare_run(root, integrations: list, n: int, seed: int, tenants: int = 2, source_id: str = "src_abc123",
                runner: str = "--runner=FnApiRunner"):
    """Write generated events and an integrations file under ``root`` (created); returns ``(truth, argv)``
    for ``pipelines.deliver.run`` with dead letters and the summary under ``root``."""
    root.mkdir(parents=True)
    lines, truth = generate(n=n, seed=seed, tenants=tenants, source_id=source_id)
    (root / "i.json").write_bytes(orjson.dumps(integrations))
    (root / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in.ndjson'}", f"--dead_letter={root / 'dead'}",
            f"--summary={root / 'summary.json'}", runner]
    return truth, argv


def consented_ids(truth) -> set[str]:
    """The unique events a consent-requiring integration must deliver."""
    return {k for k, v in truth["unique"].items() if v["consented"]}


CHUNK = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--source_id", default="src_example")
    parser.add_argument("--no_bad", action="store_true", help="leave out the malformed lines")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # In chunks of CHUNK events (seed, seed + 1, ...: ids stay unique), so 10M events fit in memory; up to
    # CHUNK events the output is generate()'s as it was.
    with open(args.out, "wb") as fh:
        for number, start in enumerate(range(0, args.events, CHUNK)):
            lines, _ = generate(min(CHUNK, args.events - start), args.seed + number, args.tenants,
                                bad=not args.no_bad, source_id=args.source_id)
            fh.write(b"\n".join(lines) + b"\n")


if __name__ == "__main__":
    main()
