"""A real Kafka broker for the tests: Apache Kafka's own jars (``python -m pipelines.runtime fetch kafka``) in
KRaft mode, one node acting as broker and controller, on free 127.0.0.1 ports, its log in a temporary folder."""
from __future__ import annotations

import base64
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass

from pipelines.runtime import wait_for_port
from tests.servers.processes import Server, free_port

PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
"""


@dataclass
class KafkaBroker:
    server: Server
    bootstrap: str
    folder: tempfile.TemporaryDirectory

    def stop(self) -> None:
        self.server.stop()
        self.folder.cleanup()

    def create_topic(self, name: str, partitions: int = 3) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)

    def publish(self, topic: str, values: list[bytes], headers: list | None = None) -> None:
        """Publish ``values`` (keyless: spread over the partitions), waiting for every acknowledgement."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5,
                             "partitioner": "random"})
        failed = []
        for i, value in enumerate(values):
            producer.produce(topic, value, headers=(headers[i] if headers else None),
                             on_delivery=lambda err, _msg: failed.append(err) if err else None)
            producer.poll(0)
        assert producer.flush(60) == 0 and not failed, failed


def start_kafka(libs: str, timeout: float = 90.0) -> KafkaBroker:
    """Format a KRaft log folder and start the broker from the jars in ``libs``."""
    folder = tempfile.TemporaryDirectory(prefix="kafka-")
    port, controller = free_port(), free_port()
    config = os.path.join(folder.name, "server.properties")
    with open(config, "w") as fh:
        fh.write(PROPERTIES.format(port=port, controller=controller, data=os.path.join(folder.name, "data")))
    classpath = ["java", "-Xmx512m", "-cp", os.path.join(libs, "*")]
    cluster = "-"
    while cluster.startswith("-"):  # the tool would read a leading "-" as an option
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    subprocess.run([*classpath, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", config, "--standalone"],
                   check=True, capture_output=True, timeout=120)
    log = open(os.path.join(folder.name, "broker.log"), "wb")
    process = subprocess.Popen([*classpath, "kafka.Kafka", config], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = Server("kafka", f"127.0.0.1:{port}", process)
    try:
        wait_for_port(port, process, f"the Kafka broker (its log: {log.name})", timeout)
    except RuntimeError:
        server.stop()
        raise
    return KafkaBroker(server, f"127.0.0.1:{port}", folder)
