"""Apply retention and archival as bucket lifecycle rules.

    python -m pipelines.retention --integrations integrations.json            # print the plan
    python -m pipelines.retention --integrations integrations.json --apply    # and apply it

For every enabled ``s3``/``gcs`` integration, ``retention`` (on the integration, a ``routing.by_type``
or ``routing.residency.regions`` route, or a ``routing.tenants`` entry)::

    {"archive_after_days": 30, "archive_storage_class": "GLACIER", "delete_after_days": 365}

becomes one lifecycle rule per (bucket, prefix): S3 rules ``beamhouse-<integration>-<hash>`` with a
prefix filter, a transition and an expiration; GCS ``SetStorageClass`` and ``Delete`` rules with
``matchesPrefix``. A tenant's own retention applies to its own bucket or prefix, or, when it shares
the integration's prefix, to ``<prefix>tenant_id=<tenant>/`` (needs a ``partition_by`` starting with
the tenant). Rules of other tools are kept; this tool's rules for the integration are replaced.
Because a bucket deletes an object as soon as any matching rule says so, a tenant rule inside a
shared prefix cannot keep data longer than the integration's own rule: that is refused.

Applying needs lifecycle permissions (S3 ``s3:GetLifecycleConfiguration`` and
``s3:PutLifecycleConfiguration``; GCS ``storage.buckets.get`` and ``storage.buckets.update``), which
delivery itself never needs; the integration's own credentials are used.
Exit status: 0 done, 2 configuration error, 1 applying failed.
"""
from __future__ import annotations

import argparse
import re
import sys

from pipelines.problems import Parser, report
from transforms import partitioning
from transforms.integrations import load_integrations
from transforms.lifecycle import LifecycleRule
from transforms.secrets import install_log_redaction, redact
from transforms.sinks import REGISTRY


def tenant_prefix(partition_by: str, tenant: str) -> str:
    """``tenant_id={tenant_id}/...`` -> ``tenant_id=<encoded tenant>/`` (the tenant's subtree)."""
    first = partition_by.split("/")[0]
    if re.findall(r"\{([^{}]*)\}", first) != ["tenant_id"]:
        raise ValueError("partition_by must start with a component made of literal text and {tenant_id}")
    return first.replace("{tenant_id}", partitioning.encode_path_value(tenant)) + "/"


def plan(integrations) -> tuple[list[LifecycleRule], list[str]]:
    """The lifecycle rules the integrations ask for, and every problem found. Pure."""
    rules: dict[tuple[str, str, str], LifecycleRule] = {}
    errors: list[str] = []
    for integ in integrations:
        lifecycle = REGISTRY[integ.vendor].lifecycle
        if not integ.enabled or lifecycle is None:
            continue
        config = integ.config
        classes = lifecycle.storage_classes
        base_prefix = config.prefix
        for label, route, retention in config.static_routes():
            if retention is None:
                continue
            prefix = route.prefix
            if label.startswith("tenant "):
                tenant = label[len("tenant "):]
                if config.routing.tenants[tenant].retention is None:
                    continue  # the integration's rule for that bucket/prefix already covers it
                if route.bucket == config.bucket and prefix == base_prefix:
                    try:
                        prefix = prefix + tenant_prefix(config.partition_by, tenant)
                    except ValueError as exc:
                        errors.append(f"{integ.integration_id} ({label}): {exc}")
                        continue
                    outer = config.retention
                    if outer and outer.delete_after_days and (
                            not retention.delete_after_days or retention.delete_after_days > outer.delete_after_days):
                        errors.append(f"{integ.integration_id} ({label}): the integration's rule deletes this "
                                      f"tenant's data after {outer.delete_after_days} days; a longer retention "
                                      f"needs the tenant's own bucket or prefix")
                        continue
            if retention.archive_storage_class and retention.archive_storage_class not in classes:
                errors.append(f"{integ.integration_id} ({label}): storage class {retention.archive_storage_class} "
                              f"is not one of {', '.join(sorted(classes))}")
                continue
            key = (integ.integration_id, route.bucket, prefix)
            rules[key] = LifecycleRule(integ.integration_id, lifecycle.scheme, route.bucket, prefix, label,
                                       retention.archive_after_days, retention.archive_storage_class,
                                       retention.delete_after_days)
    return list(rules.values()), errors


def apply(integrations, rules: list[LifecycleRule]) -> None:
    """Apply the plan, bucket by bucket, through each destination's lifecycle hook."""
    by_bucket: dict[tuple[str, str], list[LifecycleRule]] = {}
    for rule in rules:
        by_bucket.setdefault((rule.integration_id, rule.bucket), []).append(rule)
    integs = {i.integration_id: i for i in integrations}
    for (iid, bucket), bucket_rules in sorted(by_bucket.items()):
        integ = integs[iid]
        REGISTRY[integ.vendor].lifecycle.apply(integ.config, iid, bucket, bucket_rules)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pipelines.retention", allow_abbrev=False,
                                     description="Apply retention and archival as bucket lifecycle rules.")
    parser.add_argument("--integrations", required=True, help="the integrations file")
    parser.add_argument("--apply", action="store_true", help="apply the plan (default: print it only)")
    return parser


def main(argv=None) -> int:
    install_log_redaction()
    args = build_parser().parse_args(argv)
    integrations, errors = load_integrations(args.integrations)
    rules, plan_errors = plan(integrations) if not errors else ([], [])
    errors += plan_errors
    if errors:
        return report(errors)
    if not rules:
        print("no retention configured")
        return 0
    for rule in rules:
        print(rule.describe())
    if not args.apply:
        print("(plan only; add --apply to apply)")
        return 0
    try:
        apply(integrations, rules)
    except Exception as exc:  # noqa: BLE001 - one clear line; credentials never appear
        print(redact(f"applying failed: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1
    print(f"applied {len(rules)} rule(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
