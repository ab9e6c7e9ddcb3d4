"""Bad input on the wire, built by hand (kafka_wire): the broker answers with Kafka's error code or
closes the connection where Kafka closes one, never crashes, never damages stored data. After
each bad input the broker process must be alive and serving normal clients."""

import os
import socket
import struct
import uuid

import pytest

import kafka_wire as wire
from conftest import consume_confluent, produce_confluent


def assert_serving(broker):
    """The process is alive and a normal produce/consume round trip works."""
    assert broker.alive(), "broker process died\n" + broker.stderr_tail()
    t = f"alive-{uuid.uuid4().hex[:8]}"
    reports = produce_confluent(broker.bootstrap, t, [b"still here"], conf={"acks": "all"})
    assert reports == [(None, 0, 0)]
    assert [m.value() for m in consume_confluent(broker.bootstrap, t, 0, count=1)] == [b"still here"]


def good_batch(values, **kw):
    return wire.record_batch([wire.Record(v) for v in values], **kw)


def seed(broker, topic, n=5):
    """Creates a topic with n records through the raw protocol; returns the stored batches."""
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(topic)[0] == wire.NONE
        for i in range(n):
            res = c.produce(topic, 0, good_batch([b"seed-%d" % i]))
            assert res["error_code"] == wire.NONE and res["base_offset"] == i, res
        return c.fetch_all(topic, 0)


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


@pytest.mark.broker_settings(**{"socket.request.max.bytes": "1048576"})
@pytest.mark.parametrize("size", [1048577, 100_000_000, 0x7FFFFFFF, -1, -100])
def test_oversized_or_negative_frame_closes_connection(broker, size):
    with wire.Conn.to(broker.bootstrap) as c:
        c.send_raw(struct.pack(">i", size) + b"\0" * 64)
        assert c.wait_closed(10), f"connection not closed after a frame size of {size}"
    assert_serving(broker)


@pytest.mark.broker_settings(**{"socket.request.max.bytes": "1048576"})
def test_oversized_frame_does_not_disturb_other_connections(broker, topic):
    before = seed(broker, topic, 3)
    with wire.Conn.to(broker.bootstrap) as other:
        other.versions()
        with wire.Conn.to(broker.bootstrap) as bad:
            bad.send_raw(struct.pack(">i", 50_000_000))
            assert bad.wait_closed(10)
        # the other connection still works
        res = other.produce(topic, 0, good_batch([b"after"]))
        assert res["error_code"] == wire.NONE and res["base_offset"] == 3
        after = other.fetch_all(topic, 0)
    assert [b.raw for b in after[:3]] == [b.raw for b in before]
    assert_serving(broker)


def test_unknown_api_key(broker):
    with wire.Conn.to(broker.bootstrap) as c:
        c.send_raw(wire.frame(wire.request_header(1000, 0, 7) + b"\0" * 16))
        # Kafka closes the connection; an error response for correlation id 7 is acceptable too.
        c.sock.settimeout(10)
        try:
            resp = c.recv_frame()
            assert struct.unpack(">i", resp[:4])[0] == 7, f"unexpected response {resp[:16]!r}"
        except wire.Closed:
            pass
        except socket.timeout:
            pytest.fail("connection neither closed nor answered within 10s after an unknown API key")
    assert_serving(broker)


@pytest.mark.parametrize("api_key,version", [(wire.PRODUCE, 999), (wire.METADATA, 200), (wire.FETCH, 500)])
def test_unsupported_version_of_other_apis(broker, api_key, version):
    with wire.Conn.to(broker.bootstrap) as c:
        c.send_raw(wire.frame(wire.request_header(api_key, version, 9) + b"\0" * 16))
        # Kafka answers these by closing the connection (the body cannot be parsed) or with
        # UNSUPPORTED_VERSION; either way the broker keeps serving.
        c.wait_closed(5)
    assert_serving(broker)


def test_api_versions_unsupported_version_gets_v0_error_35(broker):
    """KIP-511: an ApiVersions request in a version the broker does not support is answered with
    a v0 response: error 35 and the supported ranges, so the client can retry."""
    with wire.Conn.to(broker.bootstrap) as c:
        body = wire.compact_string("future-client") + wire.compact_string("9.9") + wire.EMPTY_TAGS
        r = c.request(wire.API_VERSIONS, 127, body, flexible_header=True)
        err, apis = wire.parse_api_versions_body(r, 0)
        assert err == wire.UNSUPPORTED_VERSION
        assert wire.API_VERSIONS in apis, apis
        lo, hi = apis[wire.API_VERSIONS]
        assert lo == 0 and 3 <= hi < 127
        assert wire.PRODUCE in apis and wire.FETCH in apis and wire.METADATA in apis
        # the same connection then works with a supported version
        err, apis3 = c.api_versions(3)
        assert err == 0 and apis3 == apis
    assert_serving(broker)


def test_api_versions_advertises_the_complete_apis(broker):
    with wire.Conn.to(broker.bootstrap) as c:
        err, v0 = c.api_versions(0)
        assert err == 0
        r = c.request(wire.API_VERSIONS, 3, wire.compact_string("t") + wire.compact_string("1") + wire.EMPTY_TAGS,
                      flexible_header=True)
        # response header v0 for ApiVersions, then the flexible v3 body
        err3, v3 = wire.parse_api_versions_body(r, 3)
        r.i32()  # throttle
        r.tags()
        assert r.remaining() == 0, "trailing bytes after the ApiVersions v3 body"
    assert err3 == 0 and v3 == v0
    expected = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions", 19: "CreateTopics",
                20: "DeleteTopics", 22: "InitProducerId", 32: "DescribeConfigs", 33: "AlterConfigs",
                37: "CreatePartitions", 44: "IncrementalAlterConfigs", 60: "DescribeCluster",
                8: "OffsetCommit", 9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
                13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups", 42: "DeleteGroups",
                47: "OffsetDelete"}
    missing = [name for k, name in expected.items() if k not in v0]
    assert not missing, f"not advertised: {missing}"
    # transactions are not implemented and must not be advertised
    txn = {24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 28: "TxnOffsetCommit"}
    advertised = [name for k, name in txn.items() if k in v0]
    assert not advertised, f"advertised but not implemented: {advertised}"
    for k, (lo, hi) in v0.items():
        assert 0 <= lo <= hi, (k, lo, hi)


@pytest.mark.parametrize("kind", ["garbage", "zero_length", "truncated_header", "truncated_body",
                                  "short_then_eof"])
def test_garbage_and_truncated_requests(broker, topic, kind):
    before = seed(broker, topic, 3)
    with wire.Conn.to(broker.bootstrap) as c:
        if kind == "garbage":
            c.send_raw(wire.frame(os.urandom(200)))
        elif kind == "zero_length":
            c.send_raw(struct.pack(">i", 0))
        elif kind == "truncated_header":
            c.send_raw(wire.frame(struct.pack(">hh", 0, 3)))  # api key + version, no correlation id
        elif kind == "truncated_body":
            body = wire.string(None) + wire.i16(-1) + wire.i32(10000) + wire.i32(1) + wire.string(topic)
            c.send_raw(wire.frame(wire.request_header(wire.PRODUCE, 3, 1) + body))  # arrays cut short
        else:  # a frame announcing more bytes than ever arrive, then the client goes away
            c.send_raw(struct.pack(">i", 1000) + b"\0\0\0\3")
            c.sock.shutdown(socket.SHUT_WR)
        assert c.wait_closed(10), f"connection not closed after {kind}"
    with wire.Conn.to(broker.bootstrap) as c:
        after = c.fetch_all(topic, 0)
    assert [b.raw for b in after] == [b.raw for b in before], "stored data changed"
    assert_serving(broker)


def test_many_bad_connections_in_a_row(broker):
    for i in range(50):
        with wire.Conn.to(broker.bootstrap) as c:
            c.send_raw(wire.frame(os.urandom(10 + i * 7)))
            c.wait_closed(5)
    assert_serving(broker)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def test_corrupt_crc_rejected_and_data_intact(broker, topic):
    before = seed(broker, topic, 5)
    assert len(before) == 5 and all(b.crc_ok for b in before)
    with wire.Conn.to(broker.bootstrap) as c:
        res = c.produce(topic, 0, good_batch([b"corrupt-1", b"corrupt-2"], corrupt_crc=True))
        assert res["error_code"] == wire.CORRUPT_MESSAGE, res
        # a valid batch whose payload bytes were flipped after the CRC was computed
        bad = bytearray(good_batch([b"flipped-payload"]))
        bad[-5] ^= 0xFF
        res = c.produce(topic, 0, bytes(bad))
        assert res["error_code"] == wire.CORRUPT_MESSAGE, res
        after = c.fetch_all(topic, 0)
        assert [b.raw for b in after] == [b.raw for b in before], "stored data changed"
        assert c.fetch(topic, 0, 0)["high_watermark"] == 5
        # the connection is still usable and the next good batch lands at offset 5
        res = c.produce(topic, 0, good_batch([b"good"]))
        assert res["error_code"] == wire.NONE and res["base_offset"] == 5
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=None)
    assert [m.value() for m in msgs] == [b"seed-%d" % i for i in range(5)] + [b"good"]
    assert_serving(broker)


@pytest.mark.parametrize("damage", ["length_too_long", "length_too_short", "bad_magic", "record_count"])
def test_malformed_batches_rejected(broker, topic, damage):
    before = seed(broker, topic, 3)
    batch = bytearray(good_batch([b"a", b"b", b"c"]))
    if damage == "length_too_long":
        struct.pack_into(">i", batch, 8, len(batch) - 12 + 100)
    elif damage == "length_too_short":
        struct.pack_into(">i", batch, 8, 20)
    elif damage == "bad_magic":
        batch[16] = 7
    else:  # claims 5 records, carries 3 (CRC recomputed so only the structure is wrong)
        struct.pack_into(">i", batch, 57, 5)
        struct.pack_into(">I", batch, 17, wire.crc32c(bytes(batch[21:])))
    with wire.Conn.to(broker.bootstrap) as c:
        try:
            res = c.produce(topic, 0, bytes(batch))
        except wire.Closed:
            res = None  # closing the connection is acceptable for a request that cannot be parsed
        if res is not None:
            assert res["error_code"] in (wire.CORRUPT_MESSAGE, wire.INVALID_RECORD, 43), res
    with wire.Conn.to(broker.bootstrap) as c:
        after = c.fetch_all(topic, 0)
    assert [b.raw for b in after] == [b.raw for b in before], "stored data changed"
    assert_serving(broker)


# ---------------------------------------------------------------------------------------------
# Topic names and sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad topic!", "x" * 250, ".", "..", "", "tab\tname", "ünïcode"])
def test_invalid_topic_names(broker, name):
    with wire.Conn.to(broker.bootstrap) as c:
        code, _msg = c.create_topic(name)
        assert code == wire.INVALID_TOPIC_EXCEPTION, (name, code, _msg)
        code, _msg = c.create_topic(name, validate_only=True)
        assert code == wire.INVALID_TOPIC_EXCEPTION
        # nor can Metadata auto-create it
        if name:
            md = c.metadata([name])
            assert md[name][0] == wire.INVALID_TOPIC_EXCEPTION, md
        assert name not in c.metadata(None)
    assert_serving(broker)


def test_longest_valid_topic_name(broker):
    name = "y" * 249
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(name)[0] == wire.NONE
        assert c.produce(name, 0, good_batch([b"ok"]))["error_code"] == wire.NONE


def test_record_over_topic_max_message_bytes(broker, topic):
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(topic, configs={"max.message.bytes": "1000"})[0] == wire.NONE
        assert c.produce(topic, 0, good_batch([b"small"]))["error_code"] == wire.NONE
        res = c.produce(topic, 0, good_batch([b"L" * 5000]))
        assert res["error_code"] == wire.MESSAGE_TOO_LARGE, res
        res = c.produce(topic, 0, good_batch([b"small again"]))
        assert res["error_code"] == wire.NONE and res["base_offset"] == 1
    # a real client sees MSG_SIZE_TOO_LARGE too
    reports = produce_confluent(broker.bootstrap, topic, [{"value": b"C" * 5000, "partition": 0}],
                                conf={"acks": "all", "retries": 0})
    assert reports[0][0] is not None and reports[0][0].code() == wire.MESSAGE_TOO_LARGE, reports
    msgs = consume_confluent(broker.bootstrap, topic, 0, count=None)
    assert [m.value() for m in msgs] == [b"small", b"small again"]
    assert_serving(broker)


@pytest.mark.broker_settings(**{"message.max.bytes": "2000"})
def test_record_over_broker_message_max_bytes(broker, topic):
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(topic)[0] == wire.NONE
        res = c.produce(topic, 0, good_batch([b"B" * 5000]))
        assert res["error_code"] == wire.MESSAGE_TOO_LARGE, res
        assert c.produce(topic, 0, good_batch([b"fits"]))["error_code"] == wire.NONE
    assert_serving(broker)


def test_produce_to_unknown_topic_or_partition(broker, topic):
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(topic)[0] == wire.NONE
        res = c.produce(topic, 7, good_batch([b"nowhere"]))
        assert res["error_code"] == 3, res  # UNKNOWN_TOPIC_OR_PARTITION
        res = c.produce(topic + "-missing", 0, good_batch([b"nowhere"]))
        assert res["error_code"] == 3, res
    assert_serving(broker)
