"""Fetch semantics on the wire: long poll woken by appends, max_wait honoured, byte limits (with
KIP-74's "at least one batch"), high watermark, log start offset, out-of-range offsets."""

import threading
import time

import kafka_wire as wire

OFFSET_OUT_OF_RANGE = 1


def setup_topic(broker, topic, batches):
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(topic)[0] == wire.NONE
        for i, values in enumerate(batches):
            res = c.produce(topic, 0, wire.record_batch([wire.Record(v) for v in values]))
            assert res["error_code"] == wire.NONE, res


def test_long_poll_is_woken_by_an_append(broker, topic):
    setup_topic(broker, topic, [[b"first"]])

    def produce_later():
        time.sleep(0.3)  # the fetch below must already be waiting
        with wire.Conn.to(broker.bootstrap) as p:
            p.produce(topic, 0, wire.record_batch([wire.Record(b"second")]))

    t = threading.Thread(target=produce_later)
    with wire.Conn.to(broker.bootstrap, timeout=30) as c:
        t.start()
        start = time.monotonic()
        res = c.fetch(topic, 0, 1, max_wait_ms=10_000, min_bytes=1)
        took = time.monotonic() - start
    t.join()
    assert res["error_code"] == 0
    recs = [r["value"] for b in wire.parse_batches(res["records"]) for r in b.records]
    assert recs == [b"second"]
    assert took < 5, f"fetch returned after {took:.1f}s: not woken by the append"


def test_long_poll_honours_max_wait(broker, topic):
    setup_topic(broker, topic, [[b"only"]])
    with wire.Conn.to(broker.bootstrap, timeout=30) as c:
        start = time.monotonic()
        res = c.fetch(topic, 0, 1, max_wait_ms=700, min_bytes=1)
        took = time.monotonic() - start
    assert res["error_code"] == 0 and res["records"] == b""
    assert res["high_watermark"] == 1
    assert 0.5 <= took < 5, f"empty long poll took {took:.2f}s for max_wait_ms=700"


def test_fetch_without_wait_returns_immediately(broker, topic):
    setup_topic(broker, topic, [[b"a"]])
    with wire.Conn.to(broker.bootstrap) as c:
        start = time.monotonic()
        res = c.fetch(topic, 0, 1, max_wait_ms=0, min_bytes=0)
        assert time.monotonic() - start < 1
        assert res["records"] == b"" and res["high_watermark"] == 1


def test_byte_limits_and_at_least_one_batch(broker, topic):
    big = [b"x" * 20_000]
    setup_topic(broker, topic, [big, [b"small-1"], [b"small-2"], big])
    with wire.Conn.to(broker.bootstrap) as c:
        # a limit smaller than the first batch still returns that whole batch (KIP-74)
        res = c.fetch(topic, 0, 0, max_bytes=100)
        batches = wire.parse_batches(res["records"])
        assert len(batches) == 1 and batches[0].records[0]["value"] == big[0]
        assert all(b.crc_ok for b in batches)
        # a limit that covers the small batches but not the next big one stops before it
        res = c.fetch(topic, 0, 1, max_bytes=1_000)
        batches = wire.parse_batches(res["records"])
        vals = [r["value"] for b in batches for r in b.records]
        assert vals[:1] == [b"small-1"] and big[0] not in vals
        assert len(res["records"]) <= 1_000 or len(batches) == 1
        # everything with a large limit
        res = c.fetch(topic, 0, 0, max_bytes=1 << 20)
        assert [b.base_offset for b in wire.parse_batches(res["records"])] == [0, 1, 2, 3]
        assert res["high_watermark"] == 4 and res["log_start_offset"] == 0


def test_fetch_from_the_middle_of_a_batch(broker, topic):
    setup_topic(broker, topic, [[b"a", b"b", b"c", b"d"]])
    with wire.Conn.to(broker.bootstrap) as c:
        res = c.fetch(topic, 0, 2)
    batches = wire.parse_batches(res["records"])
    # whole batches are served; the client skips records below its fetch offset
    assert batches[0].base_offset == 0 and batches[0].last_offset_delta == 3


def test_out_of_range_offsets(broker, topic):
    setup_topic(broker, topic, [[b"a"], [b"b"]])
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.fetch(topic, 0, 2)["error_code"] == 0  # == high watermark: fine, empty
        assert c.fetch(topic, 0, 3)["error_code"] == OFFSET_OUT_OF_RANGE
        assert c.fetch(topic, 0, 1000)["error_code"] == OFFSET_OUT_OF_RANGE
        # the connection stays usable
        assert c.fetch(topic, 0, 0)["error_code"] == 0


def test_unknown_partition(broker, topic):
    setup_topic(broker, topic, [[b"a"]])
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.fetch(topic, 5, 0)["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
