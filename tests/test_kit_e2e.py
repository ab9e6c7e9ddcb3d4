"""End to end with the real binaries: the kit's API server and kubelet, sluice-operator and
sluice-broker. The operator reaches the brokers through the kit's bootstrap annotation
(tests/kit/shims.py); clients bootstrap from a pod address."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from kit import OPERATOR_NS, Kit, wait_for
from kit.client import KubeError
from kitutil import INTERNAL_PORT, KC, WatchRecorder, condition, load_example, operator_kit, operator_pod

pytestmark = [pytest.mark.kit, pytest.mark.timeout(300)]

NS = "default"


@pytest.fixture
def kit(request, tmp_path):
    yield from operator_kit(request, tmp_path)


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
                             f"{kit.operator_log()[-4000:]}") from None


def test_cluster_and_topic_from_the_examples(kit):
    # The API server enforces the CRD's CEL rules, naming the field.
    long_name = load_example("kafkacluster.yaml")
    long_name["metadata"]["name"] = "x" * 47
    with pytest.raises(KubeError) as refused:
        kit.kube.create(long_name, NS)
    assert refused.value.code == 422
    assert "metadata.name: Invalid value" in str(refused.value) and "<nil>" not in str(refused.value), \
        refused.value

    rec = WatchRecorder(kit.kube, f"/apis/{KC}/namespaces/{NS}/kafkaclusters")
    try:
        kit.kube.create(load_example("kafkacluster.yaml"), NS)
        kc = wait_cluster_ready(kit, "demo", 3)
    finally:
        rec.stop()
    # A new cluster coming up is no rolling update.
    reasons = {(c["type"], c["reason"]) for _, _, o in rec.events
               for c in (o.get("status") or {}).get("conditions") or []}
    assert ("Progressing", "RollingUpdate") not in reasons, reasons
    assert kc["status"]["clusterId"]
    assert kc["status"]["bootstrapServers"] == f"demo-kafka-bootstrap.{NS}.svc:{INTERNAL_PORT}"
    assert kc["status"]["listeners"] == [
        {"name": "local", "type": "forwarding", "bootstrapServers": "localhost:9092"},
        {"name": "internal", "type": "internal", "bootstrapServers": f"demo-kafka-bootstrap.{NS}.svc:{INTERNAL_PORT}"},
    ]
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

    # In-cluster clients use the internal listener (the kit's pod addresses stand in for DNS).
    bootstrap = f"{kit.pod_ip(NS, 'demo-kafka', 1)}:{INTERNAL_PORT}"
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


def topic_ready(kit: Kit, name: str, generation: int | None = None):
    def ok():
        kt = kit.kube.get(KC, "kafkatopics", name, NS)
        c = condition(kt, "Ready")
        gen_ok = generation is None or (kt.get("status") or {}).get("observedGeneration") == generation
        return c and c["status"] == "True" and gen_ok and kt
    try:
        return wait_for(ok, timeout=60, interval=0.3, msg=f"KafkaTopic {name} Ready")
    except AssertionError:
        kt = kit.kube.get(KC, "kafkatopics", name, NS)
        raise AssertionError(f"{name} status: {kt.get('status')}\noperator log:\n"
                             f"{kit.operator_log()[-3000:]}") from None


def bootstrap_of(kit: Kit, replicas: int = 3) -> str:
    return ",".join(f"{kit.pod_ip(NS, 'demo-kafka', i)}:{INTERNAL_PORT}" for i in range(replicas))


def kafka_topics(bootstrap: str) -> dict[str, int]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if not name.startswith("__")}


def topic_config(bootstrap: str, topic: str, key: str) -> str | None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(30)[key].value


def topic_resource(name: str, partitions: int, replicas: int, policy: str = "Delete", config=None) -> dict:
    return {"apiVersion": KC, "kind": "KafkaTopic", "metadata": {"name": name},
            "spec": {"cluster": "demo", "partitions": partitions, "replicas": replicas,
                     "config": config or {}, "deletionPolicy": policy}}


def test_topic_grows_syncs_config_and_is_deleted_per_policy(kit):
    kit.kube.create(load_example("kafkacluster.yaml"), NS)
    wait_cluster_ready(kit, "demo", 3)
    bootstrap = bootstrap_of(kit)
    kit.kube.create(load_example("kafkatopic.yaml"), NS)
    kit.kube.create(topic_resource("kept", 1, 3, "Retain"), NS)
    topic_ready(kit, "orders")
    topic_ready(kit, "kept")
    assert kafka_topics(bootstrap) == {"orders": 6, "kept": 1}

    kit.kube.patch(KC, "kafkatopics", "orders",
                   {"spec": {"partitions": 12, "config": {"retention.ms": "3600000"}}}, NS)
    kt = topic_ready(kit, "orders", generation=2)
    assert kt["status"]["partitions"] == 12
    assert kafka_topics(bootstrap)["orders"] == 12
    assert topic_config(bootstrap, "orders", "retention.ms") == "3600000"

    kit.kube.delete(KC, "kafkatopics", "orders", NS)
    kit.kube.delete(KC, "kafkatopics", "kept", NS)
    wait_for(lambda: not kit.kube.list(KC, "kafkatopics", NS)["items"], timeout=30, msg="KafkaTopics gone")
    wait_for(lambda: kafka_topics(bootstrap) == {"kept": 1}, timeout=30,
             msg="orders deleted (Delete), kept kept (Retain)")


def test_config_change_rolls_brokers_one_at_a_time_without_losing_acked_records(kit):
    from cluster import ContinuousProducer, check_acknowledged, read_partitions
    from kitutil import WatchRecorder

    kit.kube.create(load_example("kafkacluster.yaml"), NS)
    wait_cluster_ready(kit, "demo", 3)
    bootstrap = bootstrap_of(kit)
    kit.kube.create(topic_resource("rolling", 3, 3, config={"min.insync.replicas": "2"}), NS)
    topic_ready(kit, "rolling")
    old = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
    rec = WatchRecorder(kit.kube, f"/api/v1/namespaces/{NS}/pods")
    producer = ContinuousProducer(bootstrap, "rolling", 3, rate=300, conf={"acks": "all"}).start()
    try:
        producer.wait_progress(20, timeout=30, what="before the roll")
        kit.kube.patch(KC, "kafkaclusters", "demo", {"spec": {"config": {"log.retention.check.interval.ms": "60000"}}},
                       NS)

        def rolled():
            sts = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
            st = sts.get("status") or {}
            return (st.get("updateRevision") != old["status"]["updateRevision"]
                    and st.get("currentRevision") == st.get("updateRevision")
                    and st.get("updatedReplicas") == 3 and st.get("readyReplicas") == 3) and sts
        wait_for(rolled, timeout=150, interval=0.5, msg="brokers rolled to the new config")
        wait_cluster_ready(kit, "demo", 3)
        producer.wait_progress(20, timeout=60, what="after the roll")
        producer.stop()
    finally:
        producer.close()
        rec.stop()
    deleted = [o["metadata"]["name"] for _, t, o in rec.events if t == "DELETED"]
    assert deleted == ["demo-kafka-2", "demo-kafka-1", "demo-kafka-0"]
    cm = kit.kube.get("v1", "configmaps", "demo-kafka-config", NS)
    assert "log.retention.check.interval.ms=60000" in cm["data"]["server.properties"]
    check = check_acknowledged(producer.acked, read_partitions(bootstrap, "rolling", 3))
    check.assert_ok()
    assert check.acknowledged > 40


def test_operator_restarted_mid_reconcile_picks_up(kit):
    kit.kube.create(load_example("kafkacluster.yaml"), NS)
    # Freeze the operator (SIGSTOP) once it has applied the StatefulSet, before the cluster is
    # Ready; later SIGKILL it (no clean shutdown) and its container restarts, as after a crash.
    wait_for(lambda: kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS, ok_404=True), timeout=30,
             interval=0.05, msg="StatefulSet applied")
    pod = operator_pod(kit)
    kit.pause(OPERATOR_NS, pod)
    kc = kit.kube.get(KC, "kafkaclusters", "demo", NS)
    cluster_id = kc["status"]["clusterId"]
    # While it is down: a topic appears and the cluster grows.
    kit.kube.create(topic_resource("late", 2, 3), NS)
    kit.kube.patch(KC, "kafkaclusters", "demo", {"spec": {"replicas": 4}}, NS)
    kit.kill(OPERATOR_NS, pod)
    kc = wait_cluster_ready(kit, "demo", 4)
    assert kc["status"]["clusterId"] == cluster_id, "the cluster id survives the restart"
    topic_ready(kit, "late")
    assert kafka_topics(bootstrap_of(kit, 4))["late"] == 2
    sts = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
    assert sts["spec"]["replicas"] == 4
    managers = {m["manager"] for m in sts["metadata"]["managedFields"] if m["operation"] == "Apply"}
    assert managers == {"sluice-operator"}
    restarts = kit.kube.get("v1", "pods", pod, OPERATOR_NS)["status"]["containerStatuses"][0]["restartCount"]
    assert restarts == 1, f"the operator container restarted {restarts} times"


def test_operator_stands_down_in_a_terminating_namespace(kit):
    ns = "doomed"
    kit.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    wait_for(lambda: kit.kube.get("v1", "serviceaccounts", "default", ns, ok_404=True), timeout=30,
             msg="the namespace's default ServiceAccount")
    kit.kube.create(load_example("kafkacluster-dev.yaml"), ns)
    topic = topic_resource("doomed-topic", 1, 1)
    topic["spec"]["cluster"] = "dev"
    kit.kube.create(topic, ns)

    def settled():
        kc = kit.kube.get(KC, "kafkaclusters", "dev", ns)
        kt = kit.kube.get(KC, "kafkatopics", "doomed-topic", ns)
        return all((condition(o, "Ready") or {}).get("status") == "True" for o in (kc, kt))
    wait_for(settled, timeout=120, interval=0.5, msg="cluster and topic Ready")
    log_before = len(kit.operator_log())

    kit.kube.delete("v1", "namespaces", ns)
    wait_for(lambda: kit.kube.get("v1", "namespaces", ns, ok_404=True) is None, timeout=120, interval=0.5,
             msg="namespace gone")
    # Everything in it went with it, and the operator did not fight the deletion: no attempt to
    # re-create objects in it (403 NamespaceTerminating), no status writes to objects already gone.
    after = kit.operator_log()[log_before:]
    # (a 404 as a status code: a timestamp such as 23:35:04.121404Z is no 404)
    fights = [line for line in after.splitlines()
              if "WARN" in line and ns in line
              and ("being terminated" in line or "NamespaceTerminating" in line
                   or re.search(r"\b404\b", line))]
    assert not fights, "\n".join(fights[:20])
    assert not kit.kube.list("v1", "persistentvolumeclaims", ns)["items"]
