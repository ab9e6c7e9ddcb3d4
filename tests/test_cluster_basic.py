"""Three broker processes form one cluster: every broker answers Metadata with the same view, a
topic with replication factor 3 is spread over all of them, and records produced through one
broker (kafka-python, quick-start style, and confluent-kafka) are read back through another."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from cluster import INVALID_REPLICATION_FACTOR, read_partitions
from conftest import consume_kafka_python, produce_confluent

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_cluster_basic(cluster3, topic):
    c = cluster3
    ids = {0, 1, 2}

    # Every broker knows all three (at their own addresses), the cluster id it was given and the
    # same controller.
    def one_view():
        mds = c.metadata_all()
        if sorted(mds) != [0, 1, 2]:
            return False
        for md in mds.values():
            if set(md.brokers) != ids or md.controller_id not in ids:
                return False
        if len({md.controller_id for md in mds.values()}) != 1:
            return False
        return mds

    mds = c.wait_until(one_view, 30, 0.1, msg="all brokers listing 3 brokers and one controller",
                       detail=c.describe)
    for i, md in mds.items():
        assert md.cluster_id == c.cluster_id, f"broker{i} reports cluster id {md.cluster_id}, want {c.cluster_id}"
        for b in c.brokers:
            assert md.brokers[b.node_id][:2] == ("127.0.0.1", b.port), (i, md.brokers)
    print(f"controller: broker{mds[0].controller_id}")
    # Ready follows: a broker may still be catching up (metadata log, a follower's partitions)
    # for a moment after the views agree.
    for i in range(3):
        c.wait_until(lambda: c[i].http_get("/readyz")[0] == 200, 30, 0.1, msg=f"broker{i} /readyz 200",
                     detail=lambda: c[i].http_get("/readyz"))

    # rf=3 on 3 live brokers: every partition on every broker, leaders balanced.
    mds = c.create_topic(topic, partitions=3, rf=3, config={"min.insync.replicas": "2"})
    for md in mds.values():
        parts = md.topics[topic].partitions
        for p in parts.values():
            assert sorted(p.replicas) == [0, 1, 2] and sorted(p.isr) == [0, 1, 2], p
        assert sorted(p.leader for p in parts.values()) == [0, 1, 2], f"leaders not balanced: {parts}"
        assert sorted(p.replicas[0] for p in parts.values()) == [0, 1, 2], f"preferred leaders not balanced: {parts}"

    # A replication factor larger than the live brokers fails clearly.
    res = c.admin().create_topics([NewTopic(topic + "-rf4", num_partitions=1, replication_factor=4)])
    with pytest.raises(KafkaException) as e:
        res[topic + "-rf4"].result(30)
    assert e.value.args[0].code() == INVALID_REPLICATION_FACTOR, e.value

    # Produce through broker 0 with kafka-python, the way the quick start does.
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=c[0].bootstrap)
    futures = [producer.send(topic, b"kp-%d" % i) for i in range(300)]
    producer.flush(timeout=60)
    acked = []
    for i, f in enumerate(futures):
        md = f.get(timeout=30)
        acked.append((md.partition, md.offset, b"kp-%d" % i))
    producer.close()

    # ... and through broker 1 with confluent-kafka, to each partition explicitly.
    recs = [{"value": b"ck-%d" % i, "partition": i % 3} for i in range(300)]
    reports = produce_confluent(c[1].bootstrap, topic, recs, conf={"acks": "all", "enable.idempotence": True})
    assert all(err is None for err, _, _ in reports), [r for r in reports if r[0] is not None][:5]
    by_partition = {p: [] for p in range(3)}
    for r in recs:  # librdkafka reports each partition's deliveries in produce order
        by_partition[r["partition"]].append(r["value"])
    for (err, p, off) in reports:
        acked.append((p, off, by_partition[p].pop(0)))
    assert len(acked) == 600

    # Read everything back through broker 2 only.
    read = read_partitions(c[2].bootstrap, topic, 3, timeout=60)
    got = {(p, off): v for p, recs in read.records.items() for off, v in recs}
    print(f"acknowledged={len(acked)} read={read.total} high_watermarks={read.high_watermarks}")
    assert read.total == 600 and not read.backwards and not read.resets
    wrong = [(p, off, v, got.get((p, off))) for p, off, v in acked if got.get((p, off)) != v]
    assert not wrong, f"records not read back at their acknowledged offsets: {wrong[:10]}"

    # kafka-python reads the same through broker 2.
    for p in range(3):
        recs = consume_kafka_python(c[2].bootstrap, topic, p, count=read.high_watermarks[p], timeout=60)
        assert [(r.offset, r.value) for r in recs] == read.records[p]

    # Every broker's metrics agree with the metadata: one controller, leaders as assigned, no
    # under-replicated partition once the ISR is full.
    def metric(i: int, name: str) -> float:
        status, text = c[i].http_get("/metrics")
        assert status == 200
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
        assert len(values) == 1, f"{name} on broker {i}: {values}"
        return values[0]

    controller = c.controller()
    assert [metric(i, "sluice_is_controller") for i in range(3)] == [float(i == controller) for i in range(3)]
    leaders = c.leaders(topic, 3)
    c.wait_until(lambda: all(metric(i, "sluice_under_replicated_partitions") == 0 for i in range(3)),
                 30, msg="no under-replicated partitions")
    for i in range(3):
        led_here = sum(1 for b in leaders.values() if b == i)
        # __consumer_offsets partitions are led here too; the test topic's share is a floor.
        assert metric(i, "sluice_leader_partitions") >= led_here
