"""beamhouse: deliver analytics events to warehouses and lakes with one Apache Beam pipeline.

Install for use:            pip install -e .
Install for development:    pip install -e '.[test]'
"""
from setuptools import find_packages, setup

# Pins that must hold together (resolved in one install):
# - apache-beam 2.77 supports pyarrow < 26.
# - duckdb >= 1.1 for JSON columns and Arrow scans.
# - snowflake-connector-python < 5 while fakesnow 0.12 is the test server (it fails to import with 5.x).
# - redshift-connector needs scramp < 1.5 (its SCRAM API changed).
INSTALL_REQUIRES = [
    "apache-beam[gcp,aws]==2.77.0",
    "pyarrow>=14,<26",
    "google-cloud-bigquery>=3.20,<4",
    "boto3>=1.34",
    "duckdb>=1.1,<3",
    "orjson>=3.10,<4",
    "msgspec>=0.18,<1",
    "pydantic>=2.7,<3",
    "zstandard>=0.22",
    # Snowflake: the connector (PUT, COPY, key-pair auth) and the official Snowpipe REST client.
    "snowflake-connector-python>=3.12,<5",
    "snowflake-ingest>=1.0.9,<2",
    # Redshift: AWS's official driver.
    "redshift-connector>=2.1,<3",
    "scramp>=1.4,<1.5",
    # sFTP: paramiko (host-key verification, standard rename that never overwrites).
    "paramiko>=3.4,<6",
    # The management API (pipelines.admin) and its configuration database (transforms.configdb):
    # PostgreSQL through pg8000 (pure Python, already required by the Redshift driver's stack).
    "fastapi>=0.115,<1",
    "uvicorn>=0.30,<1",
    "sqlalchemy>=2.0,<3",
    "pg8000>=1.30,<2",
    "cryptography>=42",
    # One retry policy for the hand-written clients (transforms/retry.py).
    "tenacity>=8.2,<10",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "ruff>=0.8,<1",  # lint settings in pyproject.toml, run by tests/unit/test_hygiene.py
        "hypothesis>=6.100",
        "sqlglot>=25",
        # Local servers the tests start (tests/servers): S3 and KMS, and GCS.
        "moto[server,s3,kms]>=5.1,<6",
        "gcp-storage-emulator>=2024.8",
        # Snowflake stand-in (DuckDB behind the Snowflake connector's wire protocol).
        "fakesnow[server]>=0.12.1,<0.13",
        # Publishes to the local Kafka broker the tests start (tests/servers/kafka.py).
        "confluent-kafka>=2.6,<3",
        # sFTP server run in-process by the tests.
        "asyncssh>=2.14,<3",
        # The management API's OpenAPI contract is fuzzed (bounded) by schemathesis.
        "schemathesis>=3.30,<5",
        # The vendors' own SDKs, whose real output the dialect tests capture (tests/servers/capture.py).
        "snowplow-tracker>=1.0,<2",
        "snowplow-analytics-sdk>=0.2.3,<0.3",
        "cloudevents>=2.1,<3",
        "opentelemetry-sdk>=1.30,<2",
        "opentelemetry-exporter-otlp-proto-http>=1.30,<2",
        "segment-analytics-python>=2.3,<3",
        "rudder-sdk-python>=2.1,<3",  # its identify puts the traits in context.traits
    ],
    # Destinations that need nothing beyond the core install today; kept as named
    # extras so `pip install beamhouse[duckdb]` keeps working as destinations grow.
    "duckdb": [],
    "files": [],
}

setup(
    name="beamhouse",
    version="0.1.0",
    description="Deliver analytics events to warehouses and lakes with one Apache Beam pipeline.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "beamhouse-deliver=pipelines.deliver:main",
            "beamhouse-validate=pipelines.validate:main",
            "beamhouse-retention=pipelines.retention:main",
            "beamhouse-ddl=pipelines.ddl:main",
            "beamhouse-regenerate=pipelines.regenerate:main",
            "beamhouse-runtime=pipelines.runtime:main",
            "beamhouse-admin=pipelines.admin:main",
        ]
    },
)
