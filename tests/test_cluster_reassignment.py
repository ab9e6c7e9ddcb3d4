"""Reassigning a partition from brokers {0,1,2} to {1,2,3} (4 brokers up) under continuous
idempotent acks=all produce load: AlterPartitionReassignments is accepted, ListPartitionReassignments
shows it until it is done, then Metadata on every broker shows replicas and ISR {1,2,3}, no
acknowledged record is lost, and broker 0 is no longer needed (SIGKILLed, everything is still
there and writes go on)."""

from __future__ import annotations

import time

import pytest
from kafka import TopicPartition as KTopicPartition

from cluster import verify_acknowledged
from conftest import produce_confluent

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_reassignment(make_cluster, topic):
    c = make_cluster(4, {"min.insync.replicas": 2})
    mds = c.create_topic(topic, assignment=[[0, 1, 2]], config={"min.insync.replicas": "2"})
    for md in mds.values():
        p = md.topics[topic].partitions[0]
        assert p.replicas == [0, 1, 2], f"broker{md.via} reports replicas {p.replicas}, created with [0, 1, 2]"
    print(f"before: {c.partition(topic, 0)}")

    producer = c.producer(topic, 1, rate=2000)
    tail = c.tail_consumer(topic, 1)
    producer.wait_progress(200, timeout=30, what="before the reassignment")

    admin = c.kafka_python_admin()
    tp = KTopicPartition(topic, 0)
    t0 = time.monotonic()
    result = admin.alter_partition_reassignments({tp: [1, 2, 3]}, timeout_ms=30000)
    assert result == {tp: None}, f"AlterPartitionReassignments answered {result}"

    listings = []

    def done():
        ongoing = admin.list_partition_reassignments([tp], timeout_ms=10000)
        if ongoing:
            listings.append(ongoing[tp])
            return False
        p = c.partition(topic, 0)
        return p if p and sorted(p.replicas) == [1, 2, 3] and sorted(p.isr) == [1, 2, 3] and p.leader in (1, 2, 3) \
            else False

    after = c.wait_until(done, 60, 0.1, msg="the reassignment to finish with replicas and ISR {1,2,3}")
    print(f"after {time.monotonic() - t0:.1f}s: {after}; in-progress listings seen: {len(listings)}"
          f"{', first ' + str(listings[0]) if listings else ''}")
    for entry in listings:  # while in progress: target {1,2,3}, adding 3, removing 0
        assert {1, 2, 3} <= set(entry["replicas"]) <= {0, 1, 2, 3}, entry
        assert set(entry["adding_replicas"]) <= {3} and set(entry["removing_replicas"]) <= {0}, entry

    # The data broker 3 copied to catch up is counted as moved.
    status, text = c.brokers[3].http_get("/metrics")
    assert status == 200
    moved = [float(line.split()[-1]) for line in text.splitlines()
             if line.startswith("sluice_replica_catch_up_bytes_total ")]
    assert moved and moved[0] > 0, f"broker 3 reports no catch-up bytes: {moved}"

    # Every broker agrees, and the producer goes on.
    mds = c.wait_topic_healthy(topic, 1, 3, 30)
    for md in mds.values():
        assert sorted(md.topics[topic].partitions[0].replicas) == [1, 2, 3], (md.via, md.topics[topic])
    producer.wait_progress(200, timeout=30, what="after the reassignment")
    producer.stop(flush_timeout=60)
    print(producer.summary())
    assert not producer.failed, f"{len(producer.failed)} deliveries failed, e.g. {producer.failed[:5]}"
    verify_acknowledged(c, topic, 1, producer.acked, tail, label="reassignment")

    # Broker 0 holds no replica any more: without it, all data is there and acks=all works.
    c.kill(0)
    more = [b"%d" % (producer.produced + i) for i in range(100)]
    reports = produce_confluent(c.bootstrap_servers([1, 2, 3]), topic, more, conf={
        "acks": "all", "enable.idempotence": True, "message.timeout.ms": 30000})
    assert all(err is None for err, _, _ in reports), [r for r in reports if r[0]][:5]
    acked = producer.acked + [(p, off, v) for (_e, p, off), v in zip(reports, more)]
    verify_acknowledged(c, topic, 1, acked, label="reassignment, broker0 down")
