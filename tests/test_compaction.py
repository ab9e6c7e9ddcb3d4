"""Log compaction (`cleanup.policy=compact`) end to end: many updates of a few keys plus
tombstones, small segments, an eager cleaner; after cleaning, every inactive segment holds only
the latest record of each key (read from the segment files themselves), and consumers read the
same latest value per key as before cleaning. Keyless records are refused by compacted topics."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

import kafka_wire as wire
from conftest import consumer_conf_confluent, rdkafka_conf, wait_until

CORRUPT_MESSAGE = 2
INVALID_RECORD = 87

CLEANER_SETTINGS = {"log.cleaner.backoff.ms": "100"}

COMPACT_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "1024",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
}

KEYS = [f"key{i}".encode() for i in range(5)]


def create_topic(broker, name, config, partitions=1):
    fs = broker.admin().create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)], operation_timeout=10)
    fs[name].result(timeout=30)


def produce_updates(broker, topic, rounds=150, tombstones=True):
    """rounds x len(KEYS) updates in small batches; key3 is deleted midway and set again, key4 ends
    with a tombstone (followed by more updates of the other keys so it lands in an inactive
    segment). Returns the ordered list of (key, value) produced."""
    p = Producer(rdkafka_conf({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 4,
                               "enable.idempotence": True}))
    sent = []
    errors = []

    def cb(err, msg):
        if err is not None:
            errors.append(err)

    def send(k, v):
        p.produce(topic, key=k, value=v, partition=0, on_delivery=cb)
        sent.append((k, v))
        p.poll(0)

    for r in range(rounds):
        for k in KEYS:
            send(k, f"{k.decode()}-{r}".encode())
        if tombstones and r == rounds // 2:
            send(b"key3", None)
    if tombstones:
        send(b"key4", None)
        for r in range(rounds, rounds + 20):
            for k in KEYS[:3]:
                send(k, f"{k.decode()}-{r}".encode())
    assert p.flush(60) == 0
    assert not errors, errors[:5]
    return sent


def latest(pairs):
    out = {}
    for k, v in pairs:
        out[k] = v
    return out


def read_all(broker, topic):
    """All records (offset, key, value) up to the high watermark on the raw wire."""
    with wire.Conn.to(broker.bootstrap) as c:
        batches = c.fetch_all(topic, 0)
    recs = [(r["offset"], r["key"], r["value"]) for b in batches for r in b.records]
    offsets = [o for o, _, _ in recs]
    assert offsets == sorted(set(offsets)), "offsets not strictly increasing"
    return recs


def segment_records(broker, topic):
    """{segment base offset: [(offset, key, value)]} parsed from the partition's .log files."""
    out = {}
    for f in broker.segment_files(topic, 0):
        try:
            data = f.read_bytes()
        except FileNotFoundError:  # swapped away under us
            return None
        out[int(f.stem)] = [(r["offset"], r["key"], r["value"]) for b in wire.parse_batches(data) for r in b.records]
    return out


def log_bytes(broker, topic):
    return sum(f.stat().st_size for f in broker.segment_files(topic, 0))


def cleaned(broker, topic, latest_offsets, drop_tombstones=False):
    """True once every inactive segment holds only records that are the latest of their key (and,
    with drop_tombstones, no tombstones)."""
    segs = segment_records(broker, topic)
    if not segs or len(segs) < 2:
        return False
    bases = sorted(segs)
    for base in bases[:-1]:
        for off, key, value in segs[base]:
            if latest_offsets.get(key) != off:
                return False
            if drop_tombstones and value is None:
                return False
    return True


def consume_all_confluent(broker, topic, timeout=30.0):
    """Reads partition 0 from the beginning to the high watermark with librdkafka (which must
    cope with the offset gaps compaction leaves)."""
    c = Consumer(consumer_conf_confluent(broker.bootstrap))
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + timeout
        while not out or out[-1][0] < hi - 1:
            assert time.monotonic() < deadline, f"read up to {out[-1][0] if out else None} of {hi}"
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                out.append((m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


def test_compacted_topic_keeps_latest_value_per_key(broker_factory, topic):
    b = broker_factory(settings=CLEANER_SETTINGS)
    create_topic(b, topic, COMPACT_CONFIG)
    sent = produce_updates(b, topic)
    want = latest(sent)
    assert want[b"key4"] is None and want[b"key3"] is not None

    before = read_all(b, topic)  # the cleaner may already be at work: compare per key
    assert latest((k, v) for _, k, v in before) == want
    latest_offsets = {}
    for off, k, _ in before:
        latest_offsets[k] = off
    hw_before = before[-1][0] + 1
    assert hw_before == len(sent)

    wait_until(lambda: cleaned(b, topic, latest_offsets), timeout=45, interval=0.2,
               msg="every inactive segment holds only the latest record of each key")
    after = read_all(b, topic)
    assert latest((k, v) for _, k, v in after) == want
    assert after[-1][0] == hw_before - 1, "the last record (and the log end) must stay"
    # Older versions are gone: at most one record per key outside the active segment, so the log
    # is a small fraction of what was written.
    assert len(after) < len(sent) // 5, (len(after), len(sent))
    for k, off in latest_offsets.items():
        assert [o for o, kk, _ in after if kk == k][-1] == off
    # Each surviving record keeps its offset and value.
    by_offset = {o: (k, v) for o, k, v in before}
    for o, k, v in after:
        assert by_offset[o] == (k, v)
    # librdkafka reads across the gaps and sees the same.
    got = consume_all_confluent(b, topic)
    assert got == after
    assert latest((k, v) for _, k, v in got) == want

    # After kill -9 and restart the cleaned log is intact.
    b.kill()
    b.start()
    assert read_all(b, topic) == after


def test_switching_to_compact_cleans_existing_log(broker_factory, topic):
    """A delete-policy topic is read in full, then switched to compact at runtime: the cleaner
    rewrites it and readers get the same latest value per key as before cleaning."""
    b = broker_factory(settings=CLEANER_SETTINGS)
    cfg = {**COMPACT_CONFIG, "cleanup.policy": "delete", "retention.ms": "-1"}
    create_topic(b, topic, cfg)
    sent = produce_updates(b, topic, rounds=100)
    before = read_all(b, topic)
    assert len(before) == len(sent), "nothing may be cleaned under cleanup.policy=delete"
    want = latest((k, v) for _, k, v in before)
    assert want == latest(sent)
    size_before = log_bytes(b, topic)
    latest_offsets = {k: o for o, k, _ in before}

    res = ConfigResource(ResourceType.TOPIC, topic,
                         incremental_configs=[ConfigEntry("cleanup.policy", "compact",
                                                          incremental_operation=AlterConfigOpType.SET)])
    b.admin().incremental_alter_configs([res])[res].result(timeout=30)

    wait_until(lambda: cleaned(b, topic, latest_offsets), timeout=45, interval=0.2, msg="cleaned")
    assert log_bytes(b, topic) < size_before // 2, (log_bytes(b, topic), size_before)
    after = read_all(b, topic)
    assert latest((k, v) for _, k, v in after) == want
    assert len(after) < len(before) // 5


def test_expired_tombstones_are_removed(broker_factory, topic):
    b = broker_factory(settings=CLEANER_SETTINGS)
    create_topic(b, topic, {**COMPACT_CONFIG, "delete.retention.ms": "0"})
    sent = produce_updates(b, topic)
    before = read_all(b, topic)
    latest_offsets = {k: o for o, k, _ in before}
    wait_until(lambda: cleaned(b, topic, latest_offsets, drop_tombstones=True), timeout=45, interval=0.2,
               msg="cleaned without tombstones")
    after = read_all(b, topic)
    want = {k: v for k, v in latest(sent).items() if v is not None}
    got = latest((k, v) for _, k, v in after)
    # key4's tombstone (in an inactive segment) is gone with every older key4 record.
    assert b"key4" not in got, got.get(b"key4")
    assert {k: v for k, v in got.items() if v is not None} == want


def test_keyless_record_refused_by_compacted_topic(broker_factory, topic):
    b = broker_factory(settings=CLEANER_SETTINGS)
    create_topic(b, topic, COMPACT_CONFIG)
    # librdkafka: the delivery report carries the broker's error.
    p = Producer(rdkafka_conf({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "message.send.max.retries": 0}))
    reports = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda err, msg: reports.append(err))
    p.produce(topic, key=b"k", value=b"with key", partition=0, on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0
    errs = [e for e in reports if e is not None]
    assert errs, f"a keyless record was accepted by a compacted topic: {reports}"
    assert errs[0].code() in (KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG), errs[0]

    # Raw wire: a batch with one keyless record among keyed ones is refused as a whole.
    with wire.Conn.to(b.bootstrap) as c:
        mixed = wire.record_batch([wire.Record(b"v1", key=b"a"), wire.Record(b"v2"), wire.Record(b"v3", key=b"c")])
        res = c.produce(topic, 0, mixed)
        assert res["error_code"] in (CORRUPT_MESSAGE, INVALID_RECORD), res
        ok = c.produce(topic, 0, wire.record_batch([wire.Record(b"v4", key=b"d")]))
        assert ok["error_code"] == 0, ok
        values = [r["value"] for bt in c.fetch_all(topic, 0) for r in bt.records]
    assert b"v1" not in values and b"v2" not in values and b"no key" not in values
    assert b"v4" in values
    assert b.alive()


@pytest.mark.parametrize("bad", [{"cleanup.policy": "compacted"}, {"min.cleanable.dirty.ratio": "1.5"}])
def test_bad_compaction_configs_refused(broker, topic, bad):
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException) as ei:
        create_topic(broker, topic, bad)
    assert ei.value.args[0].code() in (KafkaError.INVALID_CONFIG, KafkaError.POLICY_VIOLATION), ei.value


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_idempotent_batches_compacted(broker_factory, topic, codec):
    """Compressed batches from an idempotent producer are rebuilt by the cleaner (same codec,
    producer fields): librdkafka reads the latest value per key afterwards, and the same producer
    keeps writing to the partition after cleaning."""
    b = broker_factory(settings=CLEANER_SETTINGS)
    create_topic(b, topic, COMPACT_CONFIG)
    p = Producer(rdkafka_conf({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "batch.num.messages": 8,
                               "enable.idempotence": True, "compression.type": codec}))
    errors = []
    sent = []

    def send(k, v):
        p.produce(topic, key=k, value=v, partition=0, on_delivery=lambda err, msg: err and errors.append(err))
        sent.append((k, v))
        p.poll(0)

    for r in range(150):
        for k in KEYS:
            send(k, f"{k.decode()}-{r}-{'x' * 20}".encode())
    assert p.flush(60) == 0 and not errors, errors[:5]
    want = latest(sent)
    size_before = log_bytes(b, topic)

    def compacted():
        got = consume_all_confluent(b, topic)
        return len(got) < len(sent) // 5 and got

    got = wait_until(compacted, timeout=45, interval=0.3, msg="the compressed log compacted")
    assert latest((k, v) for _, k, v in got) == want
    assert got[-1][0] == len(sent) - 1
    assert log_bytes(b, topic) < size_before
    # The stored batches keep their codec and producer id.
    with wire.Conn.to(b.bootstrap) as c:
        batches = c.fetch_all(topic, 0)
    assert {bt.compression for bt in batches} == {{"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[codec]}
    assert all(bt.crc_ok for bt in batches)
    assert len({bt.producer_id for bt in batches}) == 1 and batches[0].producer_id >= 0
    # The same idempotent producer goes on writing after the cleaning.
    for k in KEYS:
        send(k, b"final-" + k)
    assert p.flush(30) == 0 and not errors, errors[:5]
    got = wait_until(lambda: (lambda g: g[-1][0] == len(sent) - 1 and g)(consume_all_confluent(b, topic)),
                     timeout=30, msg="the final values")
    assert latest((k, v) for _, k, v in got) == {k: b"final-" + k for k in KEYS}
