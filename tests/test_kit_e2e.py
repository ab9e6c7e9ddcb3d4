"""End to end with the real binaries: the kit's API server and kubelet, sluice-operator and
sluice-broker. The operator reaches the brokers through the kit's bootstrap annotation
(tests/kit/shims.py); clients bootstrap from a pod address."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from conftest import BROKER_BIN, TARGET_DIR
from kit import Kit, wait_for
from kitutil import KC, apply_crds, load_example

pytestmark = [pytest.mark.kit, pytest.mark.timeout(300)]

OPERATOR_BIN = Path(os.environ.get("SLUICE_OPERATOR_BIN", TARGET_DIR / "release" / "sluice-operator"))
NS = "default"


@pytest.fixture
def kit(request, tmp_path):
    for b in (BROKER_BIN, OPERATOR_BIN):
        if not b.exists():
            pytest.fail(f"{b} not found (cargo build --release -p sluice-broker -p sluice-operator)")
    k = Kit(tmp_path / "kit", binaries={"sluice-broker": str(BROKER_BIN)}, max_grace=20).start()
    apply_crds(k.kube)
    k.start_operator(OPERATOR_BIN)
    yield k
    rc = k.stop_operator()
    k.stop()
    assert rc == 0, f"operator exited with {rc}:\n{k.operator_log.read_text()[-3000:]}"


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def wait_cluster_ready(kit: Kit, name: str, replicas: int, timeout: float = 150) -> dict:
    def ready():
        kc = kit.kube.get(KC, "kafkaclusters", name, NS)
        c = condition(kc, "Ready")
        st = kc.get("status") or {}
        return (c and c["status"] == "True" and st.get("readyReplicas") == replicas
                and st.get("observedGeneration") == kc["metadata"]["generation"]) and kc
    try:
        return wait_for(ready, timeout=timeout, interval=0.5, msg=f"KafkaCluster {name} Ready")
    except AssertionError:
        kc = kit.kube.get(KC, "kafkaclusters", name, NS)
        raise AssertionError(f"status: {kc.get('status')}\noperator log:\n"
                             f"{kit.operator_log.read_text()[-4000:]}") from None


def test_cluster_and_topic_from_the_examples(kit):
    kit.kube.create(load_example("kafkacluster.yaml"), NS)
    kc = wait_cluster_ready(kit, "demo", 3)
    assert kc["status"]["clusterId"]
    assert kc["status"]["bootstrapServers"] == f"demo-kafka-bootstrap.{NS}.svc:9092"
    sts = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
    assert sts["metadata"]["ownerReferences"][0]["uid"] == kc["metadata"]["uid"]
    for kind, plural, name in (("v1", "configmaps", "demo-kafka-config"), ("v1", "services", "demo-kafka-brokers"),
                               ("v1", "services", "demo-kafka-bootstrap"),
                               ("policy/v1", "poddisruptionbudgets", "demo-kafka")):
        assert kit.kube.get(kind, plural, name, NS)["metadata"]["labels"]["app.kubernetes.io/managed-by"] == \
            "sluice-operator"

    kit.kube.create(load_example("kafkatopic.yaml"), NS)

    def topic_ready():
        kt = kit.kube.get(KC, "kafkatopics", "orders", NS)
        c = condition(kt, "Ready")
        return c and c["status"] == "True" and kt
    kt = wait_for(topic_ready, timeout=90, interval=0.5, msg="KafkaTopic orders Ready")
    assert kt["metadata"]["finalizers"] == ["kafka.sluice.dev/topic"]

    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    bootstrap = f"{kit.pod_ip(NS, 'demo-kafka', 1)}:9092"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        desc = admin.describe_topics(["orders"])[0]
        assert desc["error_code"] == 0
        assert len(desc["partitions"]) == 6
        replicas = [p["replica_nodes"] for p in desc["partitions"]]
        assert all(len(set(r)) == 3 for r in replicas), replicas
    finally:
        admin.close()
    from confluent_kafka.admin import AdminClient, ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, "orders")
    confluent_admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = confluent_admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "604800000"
    assert configs["min.insync.replicas"].value == "2"

    # The quick-start producer and a group consumer round-trip a record.
    value = f"hello-{uuid.uuid4().hex}".encode()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send("orders", key=b"k", value=value).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer("orders", bootstrap_servers=bootstrap, group_id=f"kit-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        got = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=1000).values():
                got += [r.value for r in recs]
        assert value in got
    finally:
        consumer.close()
