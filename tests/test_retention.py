"""Retention deletes old segments in the background: by size (retention.bytes) and by time
(retention.ms). The earliest offset moves forward, segment files disappear, later records stay
readable."""

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from conftest import consume_confluent, consumer_conf_confluent, produce_confluent, wait_until

SEGMENT = 1_048_576  # 1 MiB: Kafka's smallest segment.bytes for topics since 4.0
FAST_RETENTION = {"log.retention.check.interval.ms": "200"}


def create(broker, topic, config):
    a = broker.admin()
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config=config)])[topic].result(30)
    return a


def earliest_latest(broker, topic):
    c = Consumer(consumer_conf_confluent(broker.bootstrap))
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def value(i, size=1000):
    return (b"%08d" % i).ljust(size, b".")


def produce_range(broker, topic, start, count, timestamp=None):
    recs = [{"value": value(i), "partition": 0, "timestamp": timestamp} for i in range(start, start + count)]
    reports = produce_confluent(broker.bootstrap, topic, recs, conf={"acks": "all", "linger.ms": 20})
    assert [r[2] for r in reports] == list(range(start, start + count))


@pytest.mark.broker_settings(**FAST_RETENTION)
def test_retention_bytes_deletes_old_segments(broker, topic):
    create(broker, topic, {"segment.bytes": str(SEGMENT), "retention.bytes": str(2 * SEGMENT)})
    n = 6000  # ~6 MB of 1000-byte records: 6+ segments
    produce_range(broker, topic, 0, n)
    segs_before = broker.segment_files(topic)
    # The broker may already be deleting; but at least some rolling must have happened.
    assert len(segs_before) >= 2, f"segments did not roll at segment.bytes={SEGMENT}: {segs_before}"

    def retained():
        lo, hi = earliest_latest(broker, topic)
        size = sum(p.stat().st_size for p in broker.segment_files(topic))
        # Kafka keeps at most retention.bytes plus the active segment
        return lo > 0 and size <= 3 * SEGMENT + 64 * 1024 and (lo, hi, size)

    lo, hi, size = wait_until(retained, 30, 0.2, "retention.bytes to delete old segments")
    assert hi == n
    assert 0 < lo < n
    segs_after = broker.segment_files(topic)
    assert len(segs_after) < 6, f"still {len(segs_after)} segments"
    assert int(segs_after[0].stem) == lo, f"first segment {segs_after[0].name} but log start offset {lo}"

    # the retained tail is readable from the new start, intact
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=None)
    assert [m.offset() for m in msgs] == list(range(lo, n))
    assert [m.value() for m in msgs] == [value(i) for i in range(lo, n)]
    # reading below the log start offset is OUT_OF_RANGE; auto.offset.reset=earliest lands on lo
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=1, offset=0)
    assert msgs[0].offset() >= lo


@pytest.mark.broker_settings(**FAST_RETENTION)
def test_retention_ms_deletes_expired_segments(broker, topic):
    create(broker, topic, {"segment.bytes": str(SEGMENT), "retention.ms": "600000"})
    old = int(time.time() * 1000) - 3_600_000  # an hour ago: past retention.ms=10min
    produce_range(broker, topic, 0, 3000, timestamp=old)
    produce_range(broker, topic, 3000, 1500)  # current timestamps: kept

    def moved():
        lo, hi = earliest_latest(broker, topic)
        return lo >= 1000 and (lo, hi)

    lo, hi = wait_until(moved, 30, 0.2, "retention.ms to delete expired segments")
    assert hi == 4500
    assert lo <= 3000, f"log start {lo}: records with current timestamps were deleted"
    assert int(broker.segment_files(topic)[0].stem) == lo
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=None)
    assert [m.value() for m in msgs] == [value(i) for i in range(lo, 4500)]


@pytest.mark.broker_settings(**FAST_RETENTION)
def test_retention_applies_after_alter_configs(broker, topic):
    a = create(broker, topic, {"segment.bytes": str(SEGMENT)})
    produce_range(broker, topic, 0, 4000)
    assert earliest_latest(broker, topic) == (0, 4000)
    res = ConfigResource("topic", topic, set_config={"segment.bytes": str(SEGMENT),
                                                      "retention.bytes": str(SEGMENT)})
    list(a.alter_configs([res]).values())[0].result(30)
    lo, hi = wait_until(lambda: (lambda lh: lh[0] > 0 and lh)(earliest_latest(broker, topic)), 30, 0.2,
                        "retention after AlterConfigs")
    assert hi == 4000 and lo > 0


@pytest.mark.broker_settings(**FAST_RETENTION)
def test_segment_ms_rolls_segments(broker, topic):
    create(broker, topic, {"segment.ms": "1000"})
    produce_range(broker, topic, 0, 10)
    first = len(broker.segment_files(topic))
    next_i = [10]

    def rolled():
        # segment.ms rolls on the next append once the active segment is older than 1s
        produce_range(broker, topic, next_i[0], 1)
        next_i[0] += 1
        return len(broker.segment_files(topic)) > first

    wait_until(rolled, 20, 0.5, "a new segment after segment.ms")
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=None)
    assert [m.value() for m in msgs] == [value(i) for i in range(next_i[0])]
