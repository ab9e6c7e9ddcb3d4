"""Round trips through kafka-python 3.x (pure-Python client; idempotent producer and acks=all by
default), consuming with assign() and explicit offsets (no consumer groups yet)."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

import kafka_wire as wire
from conftest import consume_kafka_python


def make_producer(broker, **conf):
    return KafkaProducer(bootstrap_servers=broker.bootstrap, **conf)


def make_consumer(broker, **conf):
    return KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", **conf)


def create_topic(broker, name, partitions=1, configs=None):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        admin.close()


def test_keys_headers_timestamps_round_trip(broker, topic):
    base_ts = int(time.time() * 1000) - 60_000
    sent = [
        (f"key-{i}".encode() if i % 3 else None,
         f"value-{i}".encode() * (i % 7 + 1),
         [("h1", f"hv{i}".encode()), ("h2", b"")] if i % 2 else [],
         base_ts + i)
        for i in range(200)
    ]
    p = make_producer(broker)
    futures = [p.send(topic, key=k, value=v, headers=h, timestamp_ms=ts, partition=0) for k, v, h, ts in sent]
    p.flush()
    metas = [f.get(timeout=30) for f in futures]
    p.close()
    assert [m.offset for m in metas] == list(range(200))

    recs = consume_kafka_python(broker.bootstrap, topic, 0, count=200)
    got = [(r.key, r.value, list(r.headers), r.timestamp) for r in recs]
    assert got == [(k, v, h, ts) for k, v, h, ts in sent]
    assert [r.offset for r in recs] == list(range(200))
    assert all(r.timestamp_type == 0 for r in recs)  # CreateTime


def test_multiple_partitions(broker, topic):
    create_topic(broker, topic, partitions=3)
    p = make_producer(broker)
    for i in range(90):
        p.send(topic, value=f"p{i % 3}-{i}".encode(), partition=i % 3)
    p.flush()
    assert p.partitions_for(topic) == {0, 1, 2}
    p.close()
    for part in range(3):
        recs = consume_kafka_python(broker.bootstrap, topic, part, count=30)
        assert [r.value for r in recs] == [f"p{part}-{i}".encode() for i in range(part, 90, 3)]
        assert [r.offset for r in recs] == list(range(30))


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks(broker, topic, acks):
    # idempotence needs acks=all; turn it off explicitly for the others.
    conf = {"acks": acks}
    if acks != "all":
        conf["enable_idempotence"] = False
    p = make_producer(broker, **conf)
    futures = [p.send(topic, value=f"acks-{acks}-{i}".encode(), partition=0) for i in range(100)]
    p.flush()
    metas = [f.get(timeout=30) for f in futures]
    p.close()
    if acks != 0:  # with acks=0 there is no response, so no offsets
        assert [m.offset for m in metas] == list(range(100))
    recs = consume_kafka_python(broker.bootstrap, topic, 0, count=100)
    assert [r.value for r in recs] == [f"acks-{acks}-{i}".encode() for i in range(100)]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_codecs(broker, topic, codec):
    values = [(f"{codec}-{i}-".encode() * 20) for i in range(500)]
    p = make_producer(broker, compression_type=codec, linger_ms=20, batch_size=64 * 1024)
    for v in values:
        p.send(topic, value=v, key=v[:8], partition=0)
    p.flush()
    p.close()
    recs = consume_kafka_python(broker.bootstrap, topic, 0, count=len(values))
    assert [r.value for r in recs] == values
    assert [r.key for r in recs] == [v[:8] for v in values]

    # The broker stores the producer's batches untouched: the codec is still in the attributes.
    codec_ids = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    with wire.Conn.to(broker.bootstrap) as c:
        batches = c.fetch_all(topic, 0)
    assert batches, "no batches fetched"
    assert {b.compression for b in batches} == {codec_ids[codec]}
    assert all(b.crc_ok for b in batches)


def test_idempotent_producer_is_the_default(broker, topic):
    p = make_producer(broker)  # kafka-python 3.x: enable_idempotence=True, acks=all
    assert p.config["enable_idempotence"] is True
    assert p.config["acks"] == -1
    for i in range(50):
        p.send(topic, value=f"idem-{i}".encode(), partition=0)
    p.flush()
    pid = p._transaction_manager.producer_id_and_epoch.producer_id
    p.close()
    assert pid >= 0, "the producer got no producer id (InitProducerId)"

    recs = consume_kafka_python(broker.bootstrap, topic, 0, count=50)
    assert [r.value for r in recs] == [f"idem-{i}".encode() for i in range(50)]

    # Batches carry the producer id and sequence numbers starting at 0.
    with wire.Conn.to(broker.bootstrap) as c:
        batches = c.fetch_all(topic, 0)
    assert {b.producer_id for b in batches} == {pid}
    assert batches[0].base_sequence == 0
    seqs = [(b.base_sequence, b.last_offset_delta) for b in batches]
    for (s0, d0), (s1, _d1) in zip(seqs, seqs[1:]):
        assert s1 == s0 + d0 + 1, f"sequence gap: {seqs}"


def test_seek_offsets_and_watermarks(broker, topic):
    p = make_producer(broker)
    for i in range(100):
        p.send(topic, value=str(i).encode(), partition=0)
    p.flush()
    p.close()

    tp = TopicPartition(topic, 0)
    c = make_consumer(broker)
    try:
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 100}
        c.assign([tp])
        for target in (50, 99, 0, 73):
            c.seek(tp, target)
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 1 and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=500, max_records=1).values():
                    got.extend(recs)
            assert got, f"nothing read after seek to {target}"
            assert (got[0].offset, got[0].value) == (target, str(target).encode())
        c.seek_to_end(tp)
        assert c.position(tp) == 100
    finally:
        c.close()


def test_offsets_for_times(broker, topic):
    t0 = int(time.time() * 1000) - 3_600_000
    p = make_producer(broker)
    for i in range(50):
        p.send(topic, value=str(i).encode(), timestamp_ms=t0 + i * 1000, partition=0)
    p.flush()
    p.close()

    tp = TopicPartition(topic, 0)
    c = make_consumer(broker)
    try:
        res = c.offsets_for_times({tp: t0 + 10_500})
        assert res[tp].offset == 11 and res[tp].timestamp == t0 + 11_000
        res = c.offsets_for_times({tp: t0})
        assert res[tp].offset == 0 and res[tp].timestamp == t0
        res = c.offsets_for_times({tp: t0 + 49_000})
        assert res[tp].offset == 49
        res = c.offsets_for_times({tp: t0 + 50_000})  # after the last record
        assert res[tp] is None
    finally:
        c.close()
