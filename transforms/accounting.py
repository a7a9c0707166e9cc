"""The run's accounting, from Beam metrics: every input event is delivered, consent-dropped, a
duplicate or dead-lettered, per integration.

Per integration: ``input = delivered + consent_dropped + duplicates + dead_lettered`` where
``dead_lettered`` counts the parse/normalise dead letters (shared by all integrations) plus the
integration's own sink-stage dead letters.
"""
from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter

from transforms.deadletter import NAMESPACE


def counters(result) -> dict[str, int]:
    """Committed counter values of the run, by name."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def summarise(values: dict[str, int], integrations) -> dict:
    """Build the summary document (what ``--summary`` writes)."""
    shared_dead = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("dead_letter.")}
    total_input = values.get("input", 0)
    duplicates = values.get("duplicates", 0)
    summary = {
        "input": total_input,
        "blank_lines": values.get("blank_lines", 0),
        "duplicates": duplicates,
        "unique": values.get("unique", 0),
        "dead_letters": {"total": sum(shared_dead.values()), "by_reason": dict(sorted(shared_dead.items()))},
        "integrations": {},
        "balanced": True,
    }
    for integ in integrations:
        iid = integ.integration_id
        prefix = f"{iid}."
        own = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
        own_dead = {k.split(".", 1)[1]: v for k, v in own.items() if k.startswith("dead_letter.")}
        where = integ.config.destination() if hasattr(integ.config, "destination") else None
        entry = {
            "vendor": integ.vendor,
            **({"destination": where} if where else {}),
            "delivered": own.get("delivered", 0),
            "consent_dropped": own.get("consent_dropped", 0),
            "dead_lettered": sum(shared_dead.values()) + sum(own_dead.values()),
            "sink_dead_letters": dict(sorted(own_dead.items())),
        }
        for key in ("files", "files_already_present", "already_delivered", "files_adopted", "ledger_unavailable",
                    "files_differ", "files_of_concurrent_run", "reports",
                    "rows_inserted", "rows_already_present", "partitions_completed"):
            if key in own:
                entry[key] = own[key]
        usage = tenant_usage(own)
        if usage:
            entry["tenants"] = usage
        quota = getattr(integ.config, "quota", None)
        if quota is not None:
            entry["quota"] = check_quota(quota, usage)
        accounted = entry["delivered"] + entry["consent_dropped"] + duplicates + entry["dead_lettered"]
        entry["balanced"] = accounted == total_input
        summary["balanced"] &= entry["balanced"]
        summary["integrations"][iid] = entry
    return summary


USAGE_METRICS = ("events", "files", "bytes", "bytes_written")


def tenant_usage(own: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per-tenant usage from an integration's counters ``tenant.<tenant>.<metric>``."""
    usage: dict[str, dict[str, int]] = {}
    for key, value in own.items():
        if key.startswith("tenant."):
            tenant, metric = key[len("tenant."):].rsplit(".", 1)
            usage.setdefault(tenant, dict.fromkeys(USAGE_METRICS, 0))[metric] = value
    return dict(sorted(usage.items()))


def check_quota(quota, usage: dict[str, dict[str, int]]) -> dict:
    """Tenants whose bytes written in this run (one UTC day of delivery) exceed their daily quota."""
    exceeded = []
    for tenant, u in usage.items():
        limit = quota.limit(tenant)
        if limit is not None and u["bytes_written"] > limit:
            exceeded.append({"tenant": tenant, "bytes_written": u["bytes_written"], "daily_bytes": limit})
    return {"action": quota.action, "exceeded": exceeded}


def format_summary(summary: dict) -> str:
    lines = [f"input {summary['input']}  duplicates {summary['duplicates']}  "
             f"dead letters {summary['dead_letters']['total']}"]
    for reason, n in summary["dead_letters"]["by_reason"].items():
        lines.append(f"  dead letter {reason}: {n}")
    for iid, e in summary["integrations"].items():
        extra = "".join(f"  {k} {e[k]}" for k in ("already_delivered", "files", "files_already_present", "files_adopted",
                                                   "files_of_concurrent_run", "rows_inserted") if k in e)
        lines.append(f"{iid} ({e['vendor']}): delivered {e['delivered']}  consent_dropped {e['consent_dropped']}"
                     f"  dead_lettered {e['dead_lettered']}{extra}  {'balanced' if e['balanced'] else 'NOT BALANCED'}")
        if e.get("destination"):
            lines.append(f"  -> {e['destination']}")
        if e.get("files_differ"):
            lines.append(f"  WARNING {iid}: {e['files_differ']} files already present hold these events written "
                         "with other settings (format, selection, profile ...); they were not rewritten and the "
                         "report lists what they hold. Regenerate to apply the new settings to them")
        if e.get("ledger_unavailable"):
            lines.append(f"  WARNING {iid}: the destination refused listing or reading its _ledger/ folder "
                         f"({e['ledger_unavailable']} partitions): a re-run over grown input may deliver their "
                         "events again; grant list and read access there (docs/guarantees.md, Exactly once)")
        for q in e.get("quota", {}).get("exceeded", []):
            lines.append(f"  quota exceeded for tenant {q['tenant']!r}: {q['bytes_written']} bytes written, "
                         f"daily quota {q['daily_bytes']} ({e['quota']['action']})")
    return "\n".join(lines)
