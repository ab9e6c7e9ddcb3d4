"""Acknowledged records survive SIGKILL; torn segment tails are recovered without losing earlier
records; SIGTERM is a clean shutdown; topic metadata and configs survive restarts."""

import os
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic

from conftest import RDKAFKA_LOG, consume_confluent, consumer_conf_confluent, produce_confluent, wait_until

N_MILLION = int(os.environ.get("SLUICE_DURABILITY_RECORDS", "1000000"))


def value_for(i: int) -> bytes:
    """100 bytes derived from the index."""
    return b"%010d" % i * 10


def produce_indexed(bootstrap, topic, start, count, conf=None):
    """Produces value_for(i) for i in [start, start+count) to partition 0 with acks=all; asserts
    every record was acknowledged at offset i."""
    c = {
        "logger": RDKAFKA_LOG,
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    c.update(conf or {})
    p = Producer(c)
    state = {"ok": 0, "errors": [], "bad_offsets": []}

    def cb(err, msg):
        if err is not None:
            if len(state["errors"]) < 10:
                state["errors"].append(err)
            return
        state["ok"] += 1
        expect = int(msg.value()[:10])
        if msg.offset() != expect and len(state["bad_offsets"]) < 10:
            state["bad_offsets"].append((expect, msg.offset()))

    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, value_for(i), partition=0, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(300)
    assert left == 0, f"{left} records unacknowledged"
    assert not state["errors"], f"delivery errors: {state['errors']}"
    assert not state["bad_offsets"], f"records acknowledged at unexpected offsets (want, got): {state['bad_offsets']}"
    assert state["ok"] == count


def verify_indexed(bootstrap, topic, count, timeout=300):
    """Reads partition 0 from the beginning and asserts exactly value_for(0..count) in order at
    offsets 0..count-1, and that the high watermark is count."""
    c = Consumer(consumer_conf_confluent(bootstrap, **{"fetch.max.bytes": 52428800,
                                                       "max.partition.fetch.bytes": 10485760}))
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        assert (lo, hi) == (0, count), f"watermarks {(lo, hi)}, want (0, {count})"
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        n = 0
        deadline = time.monotonic() + timeout
        while n < count:
            assert time.monotonic() < deadline, f"read only {n} of {count} records in {timeout}s"
            for m in c.consume(num_messages=10000, timeout=0.5):
                assert not m.error(), m.error()
                assert m.offset() == n, f"offset {m.offset()} where {n} was expected"
                assert m.value() == value_for(n), f"record {n} differs: {m.value()[:40]!r}"
                n += 1
        assert n == count
    finally:
        c.close()


@pytest.mark.timeout(1200)
def test_million_acked_records_survive_sigkill(broker, topic):
    produce_indexed(broker.bootstrap, topic, 0, N_MILLION)
    broker.kill()
    broker.start(timeout=180)
    verify_indexed(broker.bootstrap, topic, N_MILLION)
    # and the log continues after the recovered end
    produce_indexed(broker.bootstrap, topic, N_MILLION, 10)
    consumed = consume_confluent(broker.bootstrap, topic, 0, count=10, offset=N_MILLION)
    assert [m.value() for m in consumed] == [value_for(i) for i in range(N_MILLION, N_MILLION + 10)]


def read_prefix(bootstrap, topic):
    msgs = consume_confluent(bootstrap, topic, 0, count=None)
    return [(m.offset(), m.value()) for m in msgs]


@pytest.mark.parametrize("damage", ["cut", "garbage", "zeros"])
def test_torn_tail_recovered(broker, topic, damage):
    # 10 separate acknowledged produce rounds -> the last batch holds at most 100 records.
    for r in range(10):
        produce_indexed(broker.bootstrap, topic, r * 100, 100, conf={"linger.ms": 0})
    broker.kill()

    seg = broker.segment_files(topic, 0)[-1]
    size = seg.stat().st_size
    assert size > 100, f"last segment {seg} is only {size} bytes"
    with open(seg, "r+b") as f:
        if damage == "cut":  # bytes cut off the end: a torn write
            f.truncate(size - 37)
        elif damage == "garbage":  # the last bytes overwritten: CRC no longer matches
            f.seek(size - 20)
            f.write(os.urandom(20))
        else:  # zeros appended after the last batch (preallocated / partially written block)
            f.seek(size)
            f.write(b"\0" * 4096)

    broker.start(timeout=120)
    got = read_prefix(broker.bootstrap, topic)
    n = len(got)
    if damage == "zeros":
        assert n == 1000, f"recovered {n} records, want all 1000 (only zeros were appended)"
    else:
        assert 900 <= n < 1000, f"recovered {n} records: want the intact batches (>= 900) and not the torn one"
    assert got == [(i, value_for(i)) for i in range(n)], "recovered records are not an intact prefix"

    # new writes continue right after the recovered end
    produce_indexed(broker.bootstrap, topic, n, 50)
    got = read_prefix(broker.bootstrap, topic)
    assert got == [(i, value_for(i)) for i in range(n + 50)]

    # and that state itself survives another unclean restart
    broker.kill()
    broker.start(timeout=120)
    assert read_prefix(broker.bootstrap, topic) == [(i, value_for(i)) for i in range(n + 50)]


def describe(admin, topic):
    fs = admin.describe_configs([ConfigResource("topic", topic)])
    return {k: v.value for k, v in list(fs.values())[0].result(timeout=30).items()}


def partitions(broker, topic):
    parts = broker.topics().get(topic)
    return None if parts is None else len(parts)


@pytest.mark.parametrize("clean", [True, False], ids=["sigterm", "sigkill"])
def test_topics_configs_and_data_survive_restart(broker, topic, clean):
    a = broker.admin()
    a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                              config={"retention.ms": "987654321", "max.message.bytes": "200000"})])[topic].result(30)
    a.create_partitions([NewPartitions(topic, 5)])[topic].result(30)
    wait_until(lambda: partitions(broker, topic) == 5, 15, msg="5 partitions")
    auto = topic + "-auto"
    produce_confluent(broker.bootstrap, auto, [b"auto-created"])  # Metadata auto-create
    for p in range(5):
        produce_confluent(broker.bootstrap, topic, [{"value": b"p%d-%d" % (p, i), "partition": p} for i in range(20)],
                          conf={"acks": "all"})

    if clean:
        broker.stop()  # asserts exit code 0 after SIGTERM
    else:
        broker.kill()
    broker.start()

    a = broker.admin()
    # listing topics must not auto-create anything; both topics are there with their partitions
    assert partitions(broker, topic) == 5
    assert partitions(broker, auto) == 1
    cfg = describe(a, topic)
    assert cfg["retention.ms"] == "987654321"
    assert cfg["max.message.bytes"] == "200000"
    for p in range(5):
        got = [(m.offset(), m.value()) for m in consume_confluent(broker.bootstrap, topic, p, count=None)]
        assert got == [(i, b"p%d-%d" % (p, i)) for i in range(20)]
    assert [m.value() for m in consume_confluent(broker.bootstrap, auto, 0, count=None)] == [b"auto-created"]

    # writes continue where they left off
    reports = produce_confluent(broker.bootstrap, topic, [{"value": b"after", "partition": 4}])
    assert reports == [(None, 4, 20)]
