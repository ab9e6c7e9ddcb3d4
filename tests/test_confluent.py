"""confluent-kafka (librdkafka) producer, consumer and AdminClient against the broker."""

import logging
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer,
                             KafkaException, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   NewTopic, OffsetSpec)

from conftest import consume_confluent, consumer_conf_confluent, produce_confluent, wait_until

INVALID_TOPIC_EXCEPTION = 17
INVALID_REPLICATION_FACTOR = 38
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PARTITIONS = 37


def admin(broker) -> AdminClient:
    return broker.admin()


def result(fut, timeout=30):
    return fut.result(timeout=timeout)


def error_code(fut, timeout=30):
    """The Kafka error code the future fails with (None when it succeeds)."""
    try:
        fut.result(timeout=timeout)
    except KafkaException as e:
        return e.args[0].code()
    return None


def create(broker, name, partitions=1, config=None, validate_only=False):
    a = admin(broker)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
                         validate_only=validate_only, operation_timeout=10)
    result(fs[name])


def topic_partitions(broker, name):
    """Partition ids of a topic, read on the raw wire (see test_list_topics for the client's view)."""
    return broker.topics().get(name)


# ---------------------------------------------------------------------------------------------
# Producer / consumer
# ---------------------------------------------------------------------------------------------

CASES = [(c, True, "all") for c in ("none", "gzip", "snappy", "lz4", "zstd")] + [
    (c, False, a) for c in ("none", "gzip", "snappy", "lz4", "zstd") for a in ("0", "1", "all")
]


@pytest.mark.parametrize("compression,idempotence,acks", CASES)
def test_round_trip(broker, topic, compression, idempotence, acks):
    n = 2000
    records = [
        {"value": (f"{compression}/{acks}/{i}:".encode() * (1 + i % 5)),
         "key": f"k{i}".encode(),
         "headers": [("i", str(i).encode())],
         "partition": 0}
        for i in range(n)
    ]
    reports = produce_confluent(broker.bootstrap, topic, records, conf={
        "compression.type": compression, "enable.idempotence": idempotence, "acks": acks,
        "linger.ms": 10})
    errors = [r for r in reports if r[0] is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(reports) == n
    if acks != "0":
        assert [off for _e, _p, off in reports] == list(range(n))

    msgs = consume_confluent(broker.bootstrap, topic, 0, count=n)
    assert [m.value() for m in msgs] == [r["value"] for r in records]
    assert [m.key() for m in msgs] == [r["key"] for r in records]
    assert [m.headers() for m in msgs] == [r["headers"] for r in records]
    assert [m.offset() for m in msgs] == list(range(n))
    assert all(m.timestamp()[0] == TIMESTAMP_CREATE_TIME for m in msgs)


def test_log_append_time_topic(broker, topic):
    create(broker, topic, config={"message.timestamp.type": "LogAppendTime"})
    old = int(time.time() * 1000) - 86_400_000
    before = int(time.time() * 1000)
    produce_confluent(broker.bootstrap, topic,
                      [{"value": b"v%d" % i, "timestamp": old, "partition": 0} for i in range(20)])
    after = int(time.time() * 1000)
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=20)
    for m in msgs:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, m.timestamp()
        assert before - 1000 <= ts <= after + 1000, (ts, before, after)


# ---------------------------------------------------------------------------------------------
# AdminClient
# ---------------------------------------------------------------------------------------------


def test_list_topics(broker, topic):
    """AdminClient.list_topics() asks for all topics (librdkafka 2.16 sends Metadata v12 with a
    null topic array, followed by 3 bytes Kafka ignores)."""
    create(broker, topic, partitions=2)
    md = admin(broker).list_topics(timeout=10)
    assert [b.id for b in md.brokers.values()] == [0]
    assert topic in md.topics and sorted(md.topics[topic].partitions) == [0, 1]
    # the per-topic form, as producers use it
    md = admin(broker).list_topics(topic, timeout=10)
    assert sorted(md.topics[topic].partitions) == [0, 1]


def test_create_topics(broker, topic):
    a = admin(broker)
    fs = a.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1,
                                   config={"retention.ms": "123456"})], operation_timeout=10)
    assert result(fs[topic]) is None
    assert topic_partitions(broker, topic) == [0, 1, 2, 3]
    # again: TOPIC_ALREADY_EXISTS
    fs = a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    assert error_code(fs[topic]) == TOPIC_ALREADY_EXISTS


def test_create_topics_validate_only(broker, topic):
    a = admin(broker)
    fs = a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)], validate_only=True)
    assert result(fs[topic]) is None
    # Nothing was created
    assert topic not in broker.topics()
    # validate_only still validates
    fs = a.create_topics([NewTopic("bad topic!", num_partitions=1, replication_factor=1)], validate_only=True)
    assert error_code(fs["bad topic!"]) == INVALID_TOPIC_EXCEPTION


@pytest.mark.parametrize("name", ["bad topic!", "x" * 250, ".", "..", "a/b"])
def test_create_topics_invalid_name(broker, name):
    fs = admin(broker).create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    assert error_code(fs[name]) == INVALID_TOPIC_EXCEPTION


def test_create_topics_replication_factor_too_high(broker, topic):
    fs = admin(broker).create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])
    assert error_code(fs[topic]) == INVALID_REPLICATION_FACTOR
    assert topic not in broker.topics()


def test_delete_topics(broker, topic):
    create(broker, topic, partitions=2)
    produce_confluent(broker.bootstrap, topic, [{"value": b"doomed", "partition": 1}])
    a = admin(broker)
    fs = a.delete_topics([topic], operation_timeout=10)
    assert result(fs[topic]) is None
    wait_until(lambda: topic not in broker.topics(), 15, msg="topic to disappear")
    fs = a.delete_topics([topic], operation_timeout=10)
    assert error_code(fs[topic]) == UNKNOWN_TOPIC_OR_PARTITION
    # the name can be reused, and the new topic starts empty
    create(broker, topic, partitions=1)
    c = Consumer(consumer_conf_confluent(broker.bootstrap))
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)
    finally:
        c.close()


def test_create_partitions(broker, topic):
    create(broker, topic, partitions=1)
    a = admin(broker)
    fs = a.create_partitions([NewPartitions(topic, 3)], operation_timeout=10)
    assert result(fs[topic]) is None
    wait_until(lambda: topic_partitions(broker, topic) == [0, 1, 2], 15, msg="3 partitions in metadata")
    reports = produce_confluent(broker.bootstrap, topic, [{"value": b"p2", "partition": 2}])
    assert reports == [(None, 2, 0)]
    assert [m.value() for m in consume_confluent(broker.bootstrap, topic, 2, count=1)] == [b"p2"]
    # shrinking is refused
    fs = a.create_partitions([NewPartitions(topic, 2)], operation_timeout=10)
    assert error_code(fs[topic]) == INVALID_PARTITIONS


def describe_topic_configs(broker, topic):
    a = admin(broker)
    res = ConfigResource("topic", topic)
    fs = a.describe_configs([res])
    entries = result(list(fs.values())[0])
    return {k: v.value for k, v in entries.items()}


def test_describe_configs(broker, topic):
    create(broker, topic, config={"retention.ms": "7777777", "cleanup.policy": "delete"})
    cfg = describe_topic_configs(broker, topic)
    assert cfg["retention.ms"] == "7777777"
    for key in ("retention.bytes", "segment.bytes", "segment.ms", "cleanup.policy", "max.message.bytes",
                "message.timestamp.type"):
        assert key in cfg, f"{key} missing from DescribeConfigs: {sorted(cfg)}"
    assert cfg["message.timestamp.type"] == "CreateTime"

    fs = admin(broker).describe_configs([ConfigResource("broker", "0")])
    broker_cfg = result(list(fs.values())[0])
    assert len(broker_cfg) > 0


def test_alter_configs(broker, topic):
    create(broker, topic)
    a = admin(broker)
    res = ConfigResource("topic", topic, set_config={"retention.ms": "3600000", "segment.bytes": "2097152"})
    fs = a.alter_configs([res])
    assert result(list(fs.values())[0]) is None
    cfg = describe_topic_configs(broker, topic)
    assert cfg["retention.ms"] == "3600000"
    assert cfg["segment.bytes"] == "2097152"


def test_incremental_alter_configs(broker, topic):
    create(broker, topic, config={"retention.ms": "100000"})
    a = admin(broker)
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.bytes", "5000000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    fs = a.incremental_alter_configs([res])
    assert result(list(fs.values())[0]) is None
    cfg = describe_topic_configs(broker, topic)
    assert cfg["retention.bytes"] == "5000000"
    assert cfg["retention.ms"] != "100000"  # back to the default

    # an unknown config name is refused
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)])
    fs = a.incremental_alter_configs([res])
    assert error_code(list(fs.values())[0]) is not None


def test_describe_cluster(broker):
    d = result(admin(broker).describe_cluster(request_timeout=10))
    assert d.cluster_id
    assert [n.id for n in d.nodes] == [0]
    node = d.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", broker.port)
    assert d.controller is not None and d.controller.id == 0


def test_list_offsets(broker, topic):
    t0 = int(time.time() * 1000) - 600_000
    produce_confluent(broker.bootstrap, topic,
                      [{"value": b"%d" % i, "timestamp": t0 + i * 10, "partition": 0} for i in range(100)])
    a = admin(broker)
    tp = TopicPartition(topic, 0)

    def offsets(spec):
        fs = a.list_offsets({tp: spec}, request_timeout=10)
        return result(fs[tp])

    assert offsets(OffsetSpec.earliest()).offset == 0
    assert offsets(OffsetSpec.latest()).offset == 100
    r = offsets(OffsetSpec.for_timestamp(t0 + 505))
    assert (r.offset, r.timestamp) == (51, t0 + 510)
