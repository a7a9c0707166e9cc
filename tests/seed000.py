"""Seed 000's four management-API bodies (the curl -d payloads), copied exactly as the seed writes them."""
from __future__ import annotations

import json

BODIES = [
    r'''{
    "source_id": "src_abc123",
    "vendor": "bigquery",
    "name": "BigQuery Events",
    "enabled": true,
    "config": {
      "project_id": "my-gcp-project",
      "dataset": "datafly_events",
      "table": "events",
      "service_account_json": "{\"type\": \"service_account\", \"project_id\": \"...\", ...}",
      "batch_size": 500,
      "batch_interval_seconds": 60
    }
  }''',
    r'''{
    "source_id": "src_abc123",
    "vendor": "snowflake",
    "name": "Snowflake Events",
    "enabled": true,
    "config": {
      "account": "abc12345.us-east-1",
      "warehouse": "DATAFLY_WH",
      "database": "ANALYTICS",
      "schema": "DATAFLY",
      "table": "EVENTS",
      "stage": "DATAFLY_STAGE",
      "pipe": "DATAFLY_PIPE",
      "user": "DATAFLY_SERVICE",
      "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
      "batch_size": 1000,
      "batch_interval_seconds": 60
    }
  }''',
    r'''{
    "source_id": "src_abc123",
    "vendor": "s3",
    "name": "S3 Event Archive",
    "enabled": true,
    "config": {
      "bucket": "my-analytics-bucket",
      "prefix": "datafly/events/",
      "region": "us-east-1",
      "access_key_id": "AKIAIOSFODNN7EXAMPLE",
      "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      "file_format": "json",
      "compression": "gzip",
      "batch_size": 1000,
      "batch_interval_seconds": 300
    }
  }''',
    r'''{
    "source_id": "src_abc123",
    "vendor": "redshift",
    "name": "Redshift Events",
    "enabled": true,
    "config": {
      "host": "my-cluster.abc123.us-east-1.redshift.amazonaws.com",
      "port": 5439,
      "database": "analytics",
      "schema": "datafly",
      "table": "events",
      "user": "datafly_service",
      "password": "your_password",
      "s3_bucket": "my-redshift-staging",
      "s3_prefix": "datafly/staging/",
      "s3_region": "us-east-1",
      "iam_role_arn": "arn:aws:iam::123456789012:role/RedshiftS3Access",
      "batch_size": 1000,
      "batch_interval_seconds": 120
    }
  }''',
]


def seed_bodies() -> list[dict]:
    return [json.loads(b) for b in BODIES]
