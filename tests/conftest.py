"""Session fixtures for the local servers (started on first use, stopped at the end)."""
from __future__ import annotations

import pytest

from tests.servers import processes

GCS_UNUSABLE_KEY = "projects/test-proj/locations/global/keyRings/ring/cryptoKeys/disabled-key"
TIERS = ("unit", "guarantees", "integration")


def pytest_collection_modifyitems(config, items):
    """Each test's tier marker from its folder (pytest.ini lists them): pytest -m unit runs the fast tier."""
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def moto_server():
    server = processes.start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    server = processes.start_gcs(unusable_kms_keys=[GCS_UNUSABLE_KEY])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bq_server():
    """bqemulator in its own virtualenv (created once under .cache/, about a minute)."""
    import os

    cache = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache")
    server = processes.start_bqemulator(cache)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fakesnow_server():
    server = processes.start_fakesnow()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    server = processes.start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pubsub_server():
    server = processes.start_pubsub()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def job_service():
    server = processes.start_job_service()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prism():
    """Beam's Prism runner, fetched once by the project's own command (pipelines.runtime; `go install`
    from the Go module proxy, about a minute the first time); its path."""
    from pipelines import runtime

    if not runtime.prism_binary().exists():
        assert runtime.fetch_prism() == 0, "python -m pipelines.runtime fetch prism failed"
    return str(runtime.prism_binary())


@pytest.fixture(scope="session")
def kafka_runtime():
    """Kafka's jars and Beam's Java side of ReadFromKafka, fetched once by the project's own command
    (``python -m pipelines.runtime fetch kafka``: Maven Central, about a minute the first time)."""
    from pipelines import runtime

    if not (runtime.kafka_libs().is_dir() and runtime.kafka_expansion_libs().is_dir()):
        assert runtime.fetch_kafka() == 0, "python -m pipelines.runtime fetch kafka failed"
    return runtime


@pytest.fixture(scope="module")
def kafka_broker(kafka_runtime):
    """A real Kafka broker (KRaft) on 127.0.0.1, stopped after the module."""
    from tests.servers.kafka import start_kafka

    broker = start_kafka(str(kafka_runtime.kafka_libs()))
    yield broker
    broker.stop()


def runner_argv(runner: str, prism_location: str | None = None, streaming: bool = False) -> list[str]:
    """Beam options naming ``runner`` (with the fetched Prism where it is Prism)."""
    argv = [f"--runner={runner}"] + (["--streaming"] if streaming else [])
    if runner == "PrismRunner":
        argv.append(f"--prism_location={prism_location}")
    return argv
