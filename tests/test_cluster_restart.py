"""The whole cluster SIGKILLed and restarted keeps topics (partitions and replica assignments),
topic configs, a consumer group's committed offsets (the group resumes where it committed) and
every acknowledged record."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource

from cluster import read_partitions
from conftest import produce_confluent, rdkafka_conf

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def describe_configs(admin, topic):
    fs = admin.describe_configs([ConfigResource("topic", topic)])
    return {k: v.value for k, v in list(fs.values())[0].result(timeout=30).items()}


def assignment(cluster, topic):
    p = cluster.metadata_all([topic])
    md = next(iter(p.values()))
    return {n: part.replicas for n, part in sorted(md.topics[topic].partitions.items())}


def group_consumer(bootstrap, group, **extra):
    return Consumer(rdkafka_conf({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                                  "reconnect.backoff.max.ms": 1000, **extra}))


def test_full_cluster_restart(make_cluster, topic):
    c = make_cluster(3, {"min.insync.replicas": 2, "group.initial.rebalance.delay.ms": 0})
    t1, t2 = topic, topic + "-two"
    cfg1 = {"retention.ms": "987654321", "max.message.bytes": "200000", "min.insync.replicas": "2"}
    cfg2 = {"retention.bytes": "123456789", "segment.ms": "86400000"}
    c.create_topic(t1, 3, 3, cfg1)
    c.create_topic(t2, 2, 2, cfg2)
    layout = {t1: assignment(c, t1), t2: assignment(c, t2)}
    assert all(len(r) == 3 for r in layout[t1].values()) and all(len(r) == 2 for r in layout[t2].values()), layout

    data = {}  # (topic, partition) -> [(offset, value)]
    for t, parts, n in ((t1, 3, 100), (t2, 2, 50)):
        recs = [{"value": b"%s-%d-%d" % (t.encode(), p, i), "partition": p} for p in range(parts) for i in range(n)]
        reports = produce_confluent(c.bootstrap_servers(), t, recs, conf={"acks": "all", "enable.idempotence": True})
        assert all(err is None for err, _, _ in reports), [r for r in reports if r[0]][:5]
        for p in range(parts):
            data[(t, p)] = [(i, b"%s-%d-%d" % (t.encode(), p, i)) for i in range(n)]

    # A group commits offsets (a plain commit, no membership), checked before the crash.
    group = f"{topic}-group"
    committed = {(t1, 0): 10, (t1, 1): 20, (t1, 2): 30, (t2, 0): 7, (t2, 1): 49}
    tps = [TopicPartition(t, p, o) for (t, p), o in committed.items()]
    cons = group_consumer(c.bootstrap_servers(), group)
    try:
        cons.commit(offsets=tps, asynchronous=False)
        got = {(tp.topic, tp.partition): tp.offset for tp in cons.committed(
            [TopicPartition(t, p) for t, p in committed], timeout=30)}
        assert got == committed, got
    finally:
        cons.close()

    for i in range(3):
        c.kill(i)
    t0 = time.monotonic()
    c.start_all()
    c.wait_all_ready(60)
    c.wait_topic_healthy(t1, 3, 3, 30)
    c.wait_topic_healthy(t2, 2, 2, 30)
    print(f"cluster back after {time.monotonic() - t0:.1f}s")

    # Topics, partitions and replica assignments.
    assert {t1: assignment(c, t1), t2: assignment(c, t2)} == layout
    # Topic configs, through a client made after the restart: what is checked here is that the
    # configs survive. (The cluster's cached AdminClient, connected before the SIGKILL, once
    # waited 30 s on DescribeConfigs under load while the brokers sat idle: an open question
    # about a client's recovery from a full-cluster crash, not about configs.)
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(rdkafka_conf({"bootstrap.servers": c.bootstrap_servers()}))
    for t, cfg in ((t1, cfg1), (t2, cfg2)):
        got = describe_configs(admin, t)
        assert {k: got.get(k) for k in cfg} == cfg, f"{t} configs after restart: {got}"
    # Committed offsets, as stored...
    cons = group_consumer(c.bootstrap_servers(), group)
    try:
        got = {(tp.topic, tp.partition): tp.offset for tp in cons.committed(
            [TopicPartition(t, p) for t, p in committed], timeout=30)}
        assert got == committed, f"committed offsets after restart: {got}, want {committed}"
        # ... and used: the group resumes at them.
        cons.subscribe([t1, t2])
        first = {}
        deadline = time.monotonic() + 60
        while len(first) < len(committed):
            assert time.monotonic() < deadline, f"the group resumed only on {sorted(first)} in 60s"
            for m in cons.consume(num_messages=500, timeout=0.5):
                if m.error():
                    continue
                first.setdefault((m.topic(), m.partition()), (m.offset(), m.value()))
        want = {k: data[k][o] for k, o in committed.items()}
        assert first == want, f"first records the group read after restart: {first}, want {want}"
    finally:
        cons.close()

    # Every acknowledged record, at its offset.
    for t, parts in ((t1, 3), (t2, 2)):
        read = read_partitions(c.bootstrap_servers(), t, parts, timeout=60)
        assert not read.backwards and not read.resets
        for p in range(parts):
            assert read.records[p] == data[(t, p)], f"{t}-{p} after restart: {read.records[p][:5]}..."
        print(f"{t}: read={read.total} high_watermarks={read.high_watermarks}")

    # Writes continue after the recovered ends.
    reports = produce_confluent(c.bootstrap_servers(), t1, [{"value": b"after", "partition": 2}],
                                conf={"acks": "all", "enable.idempotence": True})
    assert reports == [(None, 2, 100)]
