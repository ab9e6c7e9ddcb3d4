"""Hand-built Kafka wire-protocol frames for tests that must send exactly the bytes they mean.

Only what the tests need: request headers v1/v2, ApiVersions, Produce (v3..v8, non-flexible),
Fetch (v4..v11, non-flexible), CreateTopics v0..v4, Metadata v1..v8, a magic v2 RecordBatch
builder/parser with CRC-32C, and a small blocking connection that reads size-prefixed responses.
Independent of any Kafka client library on purpose.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli)
# ----------------------------------------------------------------------------------------------


def _make_crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c_py(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation when available, the table version otherwise
    from crc32c import crc32c as _crc32c_c

    def crc32c(data: bytes) -> int:
        return _crc32c_c(bytes(data))

except ImportError:  # pragma: no cover
    crc32c = crc32c_py

assert crc32c_py(b"123456789") == 0xE3069283

# ----------------------------------------------------------------------------------------------
# API keys and error codes used by the tests
# ----------------------------------------------------------------------------------------------

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18
CREATE_TOPICS = 19
INIT_PRODUCER_ID = 22

NONE = 0
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
RECORD_LIST_TOO_LARGE = 18
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
INVALID_RECORD = 87

# ----------------------------------------------------------------------------------------------
# Primitive encoders
# ----------------------------------------------------------------------------------------------


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def u32(v):
    return struct.pack(">I", v)


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v: int) -> bytes:
    """Zig-zag signed varint (records use these)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def compact_array(items: list[bytes]) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


EMPTY_TAGS = uvarint(0)

# ----------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"short read: want {n} at {self.pos}, have {len(self.data)}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def _unpack(self, fmt, n):
        return struct.unpack(fmt, self.take(n))[0]

    def i8(self):
        return self._unpack(">b", 1)

    def i16(self):
        return self._unpack(">h", 2)

    def i32(self):
        return self._unpack(">i", 4)

    def u32(self):
        return self._unpack(">I", 4)

    def i64(self):
        return self._unpack(">q", 8)

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def nbytes(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def array(self, fn):
        n = self.i32()
        return None if n < 0 else [fn(self) for _ in range(n)]

    def uvarint(self):
        shift = 0
        v = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def varint(self):
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def compact_array(self, fn):
        n = self.uvarint()
        return None if n == 0 else [fn(self) for _ in range(n - 1)]

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


# ----------------------------------------------------------------------------------------------
# Request framing
# ----------------------------------------------------------------------------------------------


def request_header(api_key, api_version, correlation_id, client_id="sluice-wire-test", flexible=False):
    """Request header v1 (non-flexible) or v2 (flexible: adds an empty tagged-field section)."""
    h = i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)
    if flexible:
        h += EMPTY_TAGS
    return h


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


# ----------------------------------------------------------------------------------------------
# Record batches (magic v2)
# ----------------------------------------------------------------------------------------------


@dataclass
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0
    offset_delta: int | None = None


def encode_record(rec: Record, offset_delta: int) -> bytes:
    body = bytearray()
    body += i8(0)  # attributes
    body += varint(rec.timestamp_delta)
    body += varint(offset_delta)
    if rec.key is None:
        body += varint(-1)
    else:
        body += varint(len(rec.key)) + rec.key
    if rec.value is None:
        body += varint(-1)
    else:
        body += varint(len(rec.value)) + rec.value
    body += varint(len(rec.headers))
    for hk, hv in rec.headers:
        kb = hk.encode()
        body += varint(len(kb)) + kb
        if hv is None:
            body += varint(-1)
        else:
            body += varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def record_batch(
    records: list[Record],
    base_offset=0,
    base_timestamp: int | None = None,
    producer_id=-1,
    producer_epoch=-1,
    base_sequence=-1,
    attributes=0,
    partition_leader_epoch=-1,
    corrupt_crc=False,
) -> bytes:
    """A magic v2 RecordBatch with a correct CRC-32C (unless corrupt_crc)."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = b"".join(
        encode_record(r, r.offset_delta if r.offset_delta is not None else i) for i, r in enumerate(records)
    )
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = (
        i16(attributes)
        + i32(len(records) - 1)  # lastOffsetDelta
        + i64(base_timestamp)
        + i64(max_ts)
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(len(records))
        + recs
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_len = i32(partition_leader_epoch) + i8(2) + u32(crc) + after_crc
    return i64(base_offset) + i32(len(after_len)) + after_len


@dataclass
class Batch:
    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    crc_ok: bool
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[dict]
    raw: bytes

    @property
    def compression(self):
        return self.attributes & 0x7

    @property
    def timestamp_type(self):
        return (self.attributes >> 3) & 1


def parse_batches(data: bytes) -> list[Batch]:
    """Parses a record set (as returned by Fetch) into batches; a partial trailing batch is dropped
    (brokers may return one when limited by max_bytes). Records are decoded only when the batch is
    uncompressed."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if pos + 12 + length > len(data):
            break
        raw = data[pos : pos + 12 + length]
        r = Reader(raw)
        r.i64()
        r.i32()
        ple = r.i32()
        magic = r.i8()
        crc = r.u32()
        crc_ok = crc32c(raw[21:]) == crc
        attrs = r.i16()
        lod = r.i32()
        bts = r.i64()
        mts = r.i64()
        pid = r.i64()
        pep = r.i16()
        bseq = r.i32()
        n = r.i32()
        records = []
        if attrs & 0x7 == 0:
            for _ in range(n):
                r.varint()  # length
                r.i8()  # attributes
                tsd = r.varint()
                od = r.varint()
                kl = r.varint()
                key = None if kl < 0 else r.take(kl)
                vl = r.varint()
                value = None if vl < 0 else r.take(vl)
                headers = []
                for _ in range(r.varint()):
                    hk = r.take(r.varint()).decode()
                    hl = r.varint()
                    headers.append((hk, None if hl < 0 else r.take(hl)))
                records.append(
                    {
                        "offset": base_offset + od,
                        "timestamp": bts + tsd,
                        "key": key,
                        "value": value,
                        "headers": headers,
                    }
                )
        out.append(Batch(base_offset, ple, magic, crc, crc_ok, attrs, lod, bts, mts, pid, pep, bseq, records, raw))
        pos += 12 + length
    return out


# ----------------------------------------------------------------------------------------------
# Connection
# ----------------------------------------------------------------------------------------------


class Closed(Exception):
    """The broker closed the connection."""


class Conn:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corr = 0
        self._versions = None

    @classmethod
    def to(cls, bootstrap: str, timeout: float = 10.0) -> "Conn":
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed(str(e)) from e
            if not chunk:
                raise Closed(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (n,) = struct.unpack(">i", self._recv_exact(4))
        return self._recv_exact(n)

    def request(self, api_key, api_version, body: bytes, flexible_header=False, expect_response=True):
        """Sends one request; returns a Reader positioned after the correlation id (response header
        v0). For flexible responses the caller reads the header's tagged fields (`r.tags()`)."""
        self.corr += 1
        corr = self.corr
        self.send_raw(frame(request_header(api_key, api_version, corr, flexible=flexible_header) + body))
        if not expect_response:
            return None
        r = Reader(self.recv_frame())
        got = r.i32()
        assert got == corr, f"correlation id {got} != {corr}"
        return r

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True when the broker closes the connection (EOF or reset) within timeout; any bytes the
        broker sends before closing are discarded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
        return False

    # --- ApiVersions -------------------------------------------------------------------------

    def api_versions(self, version=0):
        """Returns (error_code, {api_key: (min, max)}). v3+ uses a flexible request; the response
        header is always v0 (KIP-511)."""
        flexible = version >= 3
        body = b""
        if flexible:
            body = compact_string("sluice-wire-test") + compact_string("0.1") + EMPTY_TAGS
        r = self.request(API_VERSIONS, version, body, flexible_header=flexible)
        return parse_api_versions_body(r, version)

    def versions(self):
        if self._versions is None:
            err, self._versions = self.api_versions(0)
            assert err == 0, f"ApiVersions v0 error {err}"
        return self._versions

    def pick_version(self, api_key, lo, hi):
        """Highest version in [lo, hi] that the broker advertises."""
        rng = self.versions().get(api_key)
        assert rng is not None, f"broker does not advertise api {api_key}"
        v = min(hi, rng[1])
        assert v >= max(lo, rng[0]), f"api {api_key}: broker range {rng}, helper supports {lo}..{hi}"
        return v

    # --- Produce ----------------------------------------------------------------------------

    def produce(self, topic, partition, records: bytes, acks=-1, timeout_ms=10000, version=None):
        """Produce one record set to one partition. Returns a dict with error_code, base_offset,
        log_append_time, log_start_offset (v5+), error_message (v8+)."""
        if version is None:
            version = self.pick_version(PRODUCE, 3, 8)
        body = (
            string(None)  # transactional_id
            + i16(acks)
            + i32(timeout_ms)
            + array([string(topic) + array([i32(partition) + nbytes(records)])])
        )
        r = self.request(PRODUCE, version, body)
        if acks == 0:
            return None
        res = None
        for _ in range(r.i32()):
            name = r.string()
            for _ in range(r.i32()):
                p = {"topic": name, "partition": r.i32(), "error_code": r.i16(), "base_offset": r.i64()}
                p["log_append_time"] = r.i64()
                if version >= 5:
                    p["log_start_offset"] = r.i64()
                if version >= 8:
                    p["record_errors"] = r.array(lambda rr: (rr.i32(), rr.string()))
                    p["error_message"] = r.string()
                if name == topic and p["partition"] == partition:
                    res = p
        assert res is not None, "no response for the partition produced to"
        return res

    # --- Fetch ------------------------------------------------------------------------------

    def fetch(self, topic, partition, offset, max_bytes=1 << 20, max_wait_ms=0, min_bytes=0, version=None):
        """Fetch one partition. Returns dict(error_code, high_watermark, log_start_offset, records)."""
        if version is None:
            version = self.pick_version(FETCH, 4, 11)
        body = i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
        if version >= 7:
            body += i32(0) + i32(-1)  # session id, session epoch (-1: no session)
        part = i32(partition)
        if version >= 9:
            part += i32(-1)  # current leader epoch
        part += i64(offset)
        if version >= 5:
            part += i64(-1)  # log start offset (follower only)
        part += i32(max_bytes)
        body += array([string(topic) + array([part])])
        if version >= 7:
            body += array([])  # forgotten topics
        if version >= 11:
            body += string("")  # rack id
        r = self.request(FETCH, version, body)
        r.i32()  # throttle
        if version >= 7:
            top_err = r.i16()
            r.i32()  # session id
            assert top_err == 0, f"fetch top-level error {top_err}"
        res = None
        for _ in range(r.i32()):
            name = r.string()
            for _ in range(r.i32()):
                p = {"partition": r.i32(), "error_code": r.i16(), "high_watermark": r.i64()}
                p["last_stable_offset"] = r.i64()
                if version >= 5:
                    p["log_start_offset"] = r.i64()
                r.array(lambda rr: (rr.i64(), rr.i64()))
                if version >= 11:
                    r.i32()  # preferred read replica
                p["records"] = r.nbytes() or b""
                if name == topic and p["partition"] == partition:
                    res = p
        assert res is not None, "no fetch response for the partition"
        return res

    def fetch_all(self, topic, partition, start=0, deadline_s=30.0) -> list[Batch]:
        """All batches from `start` up to the high watermark."""
        batches = []
        offset = start
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            res = self.fetch(topic, partition, offset)
            assert res["error_code"] == 0, f"fetch error {res['error_code']}"
            got = parse_batches(res["records"])
            got = [b for b in got if b.base_offset + b.last_offset_delta >= offset]
            batches += got
            if got:
                offset = got[-1].base_offset + got[-1].last_offset_delta + 1
            if offset >= res["high_watermark"]:
                return batches
            if not got:
                time.sleep(0.05)
        raise AssertionError(f"fetch_all did not reach the high watermark by the deadline (at {offset})")

    # --- CreateTopics -----------------------------------------------------------------------

    def create_topic(self, name, partitions=1, replication=1, configs=None, validate_only=False, version=None):
        """Returns (error_code, error_message or None)."""
        if version is None:
            version = self.pick_version(CREATE_TOPICS, 1, 4)
        cfgs = [string(k) + string(v) for k, v in (configs or {}).items()]
        topic = string(name) + i32(partitions) + i16(replication) + array([]) + array(cfgs)
        body = array([topic]) + i32(10000)
        if version >= 1:
            body += i8(1 if validate_only else 0)
        r = self.request(CREATE_TOPICS, version, body)
        if version >= 2:
            r.i32()  # throttle
        for _ in range(r.i32()):
            n = r.string()
            code = r.i16()
            msg = r.string() if version >= 1 else None
            if n == name:
                return code, msg
        raise AssertionError("no CreateTopics result for the topic")

    # --- Metadata ---------------------------------------------------------------------------

    def metadata(self, topics=None, allow_auto_create=True, version=None):
        """Returns {topic: (error_code, [partition ids])} for the requested topics (None = all)."""
        if version is None:
            version = self.pick_version(METADATA, 4, 8)
        body = i32(-1) if topics is None else array([string(t) for t in topics])
        body += i8(1 if allow_auto_create else 0)
        if version >= 8:
            body += i8(0) + i8(0)
        r = self.request(METADATA, version, body)
        r.i32()  # throttle
        r.array(lambda rr: (rr.i32(), rr.string(), rr.i32(), rr.string()))  # brokers
        r.string()  # cluster id
        r.i32()  # controller
        out = {}

        def part(rr):
            rr.i16()
            pid = rr.i32()
            rr.i32()
            if version >= 7:
                rr.i32()
            rr.array(lambda x: x.i32())
            rr.array(lambda x: x.i32())
            if version >= 5:
                rr.array(lambda x: x.i32())
            return pid

        for _ in range(r.i32()):
            code = r.i16()
            name = r.string()
            r.i8()  # internal
            parts = r.array(part)
            if version >= 8:
                r.i32()
            out[name] = (code, parts)
        return out


def parse_api_versions_body(r: Reader, version: int):
    err = r.i16()
    apis = {}
    # An error response (e.g. 35 for an unsupported version) always has a v0 body (KIP-511).
    if version >= 3 and err == 0:
        for _ in range(r.uvarint() - 1):
            k, lo, hi = r.i16(), r.i16(), r.i16()
            r.tags()
            apis[k] = (lo, hi)
    else:
        for _ in range(r.i32()):
            k, lo, hi = r.i16(), r.i16(), r.i16()
            apis[k] = (lo, hi)
    return err, apis


# ----------------------------------------------------------------------------------------------
# Consumer group APIs (non-flexible versions): JoinGroup v5, SyncGroup v3, Heartbeat v3,
# LeaveGroup v2, OffsetCommit v7, OffsetFetch v5, ListGroups v2
# ----------------------------------------------------------------------------------------------

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
LIST_GROUPS = 16


def consumer_subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: the metadata of a "consumer" protocol."""
    return i16(0) + array([string(t) for t in topics]) + nbytes(None)


def _join_group(self, group, session_ms=6000, rebalance_ms=10000, member_id="", instance_id=None,
                protocol_type="consumer", protocols=None):
    """JoinGroup v5. Returns dict(error_code, generation_id, protocol_name, leader, member_id,
    members=[(member_id, instance_id, metadata)])."""
    if protocols is None:
        protocols = [("range", consumer_subscription(["t"]))]
    body = (string(group) + i32(session_ms) + i32(rebalance_ms) + string(member_id) + string(instance_id)
            + string(protocol_type) + array([string(n) + nbytes(m) for n, m in protocols]))
    r = self.request(JOIN_GROUP, 5, body)
    r.i32()  # throttle
    out = {"error_code": r.i16(), "generation_id": r.i32(), "protocol_name": r.string(),
           "leader": r.string(), "member_id": r.string()}
    out["members"] = r.array(lambda rr: (rr.string(), rr.string(), rr.nbytes()))
    return out


def _sync_group(self, group, generation, member_id, assignments, instance_id=None):
    """SyncGroup v3; assignments = [(member_id, bytes)]. Returns dict(error_code, assignment)."""
    body = (string(group) + i32(generation) + string(member_id) + string(instance_id)
            + array([string(m) + nbytes(a) for m, a in assignments]))
    r = self.request(SYNC_GROUP, 3, body)
    r.i32()
    return {"error_code": r.i16(), "assignment": r.nbytes()}


def _heartbeat(self, group, generation, member_id, instance_id=None):
    """Heartbeat v3; returns the error code."""
    r = self.request(HEARTBEAT, 3, string(group) + i32(generation) + string(member_id) + string(instance_id))
    r.i32()
    return r.i16()


def _leave_group(self, group, member_id):
    """LeaveGroup v2 (one member); returns the error code."""
    r = self.request(LEAVE_GROUP, 2, string(group) + string(member_id))
    r.i32()
    return r.i16()


def _offset_commit(self, group, offsets, generation=-1, member_id="", instance_id=None):
    """OffsetCommit v7; offsets = {(topic, partition): (offset, metadata or None)}. Returns
    {(topic, partition): error_code}."""
    by_topic: dict[str, list[bytes]] = {}
    for (t, p), (o, meta) in offsets.items():
        by_topic.setdefault(t, []).append(i32(p) + i64(o) + i32(-1) + string(meta))
    body = (string(group) + i32(generation) + string(member_id) + string(instance_id)
            + array([string(t) + array(ps) for t, ps in by_topic.items()]))
    r = self.request(OFFSET_COMMIT, 7, body)
    r.i32()
    out = {}
    for _ in range(r.i32()):
        t = r.string()
        for _ in range(r.i32()):
            p = r.i32()
            out[(t, p)] = r.i16()
    return out


def _offset_fetch(self, group, partitions=None):
    """OffsetFetch v5; partitions = [(topic, partition)] or None for all. Returns
    {(topic, partition): (offset, metadata, error_code)}; a top-level error raises."""
    if partitions is None:
        topics = i32(-1)
    else:
        by_topic: dict[str, list[int]] = {}
        for t, p in partitions:
            by_topic.setdefault(t, []).append(p)
        topics = array([string(t) + array([i32(p) for p in ps]) for t, ps in by_topic.items()])
    r = self.request(OFFSET_FETCH, 5, string(group) + topics)
    r.i32()
    out = {}
    for _ in range(r.i32()):
        t = r.string()
        for _ in range(r.i32()):
            p = r.i32()
            o = r.i64()
            r.i32()  # leader epoch
            meta = r.string()
            out[(t, p)] = (o, meta, r.i16())
    err = r.i16()
    assert err == 0, f"OffsetFetch top-level error {err}"
    return out


def _list_groups(self):
    """ListGroups v2; returns (error_code, [(group_id, protocol_type)])."""
    r = self.request(LIST_GROUPS, 2, b"")
    r.i32()
    err = r.i16()
    return err, r.array(lambda rr: (rr.string(), rr.string()))


Conn.join_group = _join_group
Conn.sync_group = _sync_group
Conn.heartbeat = _heartbeat
Conn.leave_group = _leave_group
Conn.offset_commit = _offset_commit
Conn.offset_fetch = _offset_fetch
Conn.list_groups = _list_groups
