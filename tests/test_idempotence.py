"""Idempotent producers end to end: connections cut mid-stream by a TCP proxy (including cuts
that swallow a produce response after the broker appended the batch, so the client must retry
what is already in the log), the broker killed -9 and restarted mid-stream, kafka-python 3.x
defaults, and the broker's producer state after a crash on the raw wire."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

import kafka_wire as wire
from conftest import consume_confluent, rdkafka_conf, wait_until

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


class Proxy:
    """A TCP proxy on 127.0.0.1:<free port> forwarding every accepted connection to `target`.
    cut_all() closes every proxied connection; cut_next_response() makes the next chunk the broker
    sends on any connection be dropped and that connection closed (the request was processed,
    the client never hears about it)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.swallowed = 0
        self._swallow = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self.lock:
                self.pairs.append(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream, pair, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair, True), daemon=True).start()

    def _pump(self, src, dst, pair, from_broker):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_broker:
                    with self.lock:
                        swallow = self._swallow > 0
                        if swallow:
                            self._swallow -= 1
                            self.swallowed += 1
                    if swallow:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(pair)

    def _close_pair(self, pair):
        with self.lock:
            if pair in self.pairs:
                self.pairs.remove(pair)
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def cut_all(self) -> int:
        with self.lock:
            pairs = list(self.pairs)
        for p in pairs:
            self._close_pair(p)
        return len(pairs)

    def cut_next_response(self):
        with self.lock:
            self._swallow += 1

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
        self.cut_all()


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.close()


def create_topic(broker, name, partitions=1):
    fs = broker.admin().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                      operation_timeout=10)
    fs[name].result(timeout=30)


def read_values(broker, topic, partition=0):
    return [m.value() for m in consume_confluent(broker.bootstrap, topic, partition, count=None, timeout=60)]


def assert_exactly_in_order(values, n):
    want = [str(i).encode() for i in range(n)]
    if values == want:
        return
    seen = set()
    dups = [v for v in values if v in seen or seen.add(v)]
    missing = sorted(set(want) - set(values), key=int)
    raise AssertionError(f"read back {len(values)} records for {n} produced: duplicates {dups[:10]} "
                         f"(total {len(dups)}), missing {missing[:10]} (total {len(missing)}), "
                         f"in order: {sorted(values, key=int) == values}")


def produce_with_disruptions(bootstrap, topic, n, disrupt, disruptions, conf=None, deadline_s=50.0):
    """Produces str(0..n-1) to partition 0 with an idempotent librdkafka producer, at most ~2000
    messages unacknowledged at a time; calls disrupt(k) once the k-th of `disruptions` equally
    spaced points is passed (while messages are in flight). Returns the numbers of messages
    produced but not yet acknowledged at each disruption."""
    c = rdkafka_conf({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2,
                      "batch.num.messages": 100, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
                      "retry.backoff.ms": 50})
    c.update(conf or {})
    p = Producer(c)
    reports: list = [None] * n
    delivered = [0]

    def cb(err, msg):
        i = int(msg.value())
        reports[i] = (err, msg.offset())
        delivered[0] += 1

    points = [n * (k + 1) // (disruptions + 1) for k in range(disruptions)]
    deadline = time.monotonic() + deadline_s
    k = 0
    outstanding = []
    for i in range(n):
        while True:
            try:
                p.produce(topic, str(i).encode(), partition=0, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        while i - delivered[0] > 2000:
            assert time.monotonic() < deadline, f"stuck at {delivered[0]} of {i} delivered"
            p.poll(0.05)
        p.poll(0)
        if k < len(points) and i >= points[k]:
            outstanding.append(i + 1 - delivered[0])
            disrupt(k)
            k += 1
    left = p.flush(max(1.0, deadline - time.monotonic()))
    assert left == 0, f"{left} messages undelivered"
    errors = [(i, r) for i, r in enumerate(reports) if r is None or r[0] is not None]
    assert not errors, f"delivery failures: {errors[:10]}"
    offsets = [r[1] for r in reports]
    assert offsets == list(range(n)), "delivery report offsets are not 0..n-1 in produce order"
    assert max(outstanding) > 0, f"no disruption hit messages in flight: {outstanding}"
    return outstanding


def test_confluent_idempotent_producer_through_cut_connections(broker_factory, proxy, topic):
    b = broker_factory(settings={"advertised.listeners": proxy.address})
    proxy.target = ("127.0.0.1", b.port)
    create_topic(b, topic)
    n = 20000
    cuts = []

    def disrupt(k):
        if k % 2 == 0:
            cuts.append(("all", proxy.cut_all()))
        else:
            proxy.cut_next_response()
            cuts.append(("response", None))

    produce_with_disruptions(proxy.address, topic, n, disrupt, disruptions=8)
    assert sum(c for kind, c in cuts if kind == "all") >= 4, f"the cuts hit no connection: {cuts}"
    assert proxy.swallowed >= 1, "no produce response was swallowed"
    assert proxy.accepted > 1, "the producer never reconnected (did it bypass the proxy?)"
    assert_exactly_in_order(read_values(b, topic), n)


def test_confluent_idempotent_producer_across_broker_kill9(broker_factory, topic):
    b = broker_factory()
    create_topic(b, topic)
    n = 20000

    def disrupt(k):
        b.kill()
        b.start()

    produce_with_disruptions(b.bootstrap, topic, n, disrupt, disruptions=2)
    assert b.starts == 3
    assert_exactly_in_order(read_values(b, topic), n)


def test_kafka_python_defaults_are_idempotent(broker, topic):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert producer.config["enable_idempotence"] is True and producer.config["acks"] in (-1, "all")
    n = 3000
    futures = [producer.send(topic, str(i).encode(), partition=0) for i in range(n)]
    producer.flush(timeout=60)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close()
    assert offsets == list(range(n))
    assert_exactly_in_order(read_values(broker, topic), n)
    # The batches in the log carry a producer id and consecutive sequences.
    with wire.Conn.to(broker.bootstrap) as c:
        batches = c.fetch_all(topic, 0)
    assert {bt.producer_id for bt in batches} != {-1} and len({bt.producer_id for bt in batches}) == 1
    seq = 0
    for bt in batches:
        assert bt.base_sequence == seq, (bt.base_offset, bt.base_sequence, seq)
        seq += bt.last_offset_delta + 1


def test_kafka_python_idempotent_producer_through_cut_connections(broker_factory, proxy, topic):
    from kafka import KafkaProducer

    b = broker_factory(settings={"advertised.listeners": proxy.address})
    proxy.target = ("127.0.0.1", b.port)
    create_topic(b, topic)
    producer = KafkaProducer(bootstrap_servers=proxy.address, linger_ms=2, batch_size=2000,
                             reconnect_backoff_ms=50, retry_backoff_ms=50)
    n = 5000
    futures = []
    for i in range(n):
        futures.append(producer.send(topic, str(i).encode(), partition=0))
        if i % 1000 == 500:
            if (i // 1000) % 2:
                proxy.cut_next_response()
            else:
                proxy.cut_all()
    producer.flush(timeout=60)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close()
    assert proxy.accepted > 1
    assert offsets == list(range(n)), "acknowledged offsets are not 0..n-1 in order"
    assert_exactly_in_order(read_values(b, topic), n)


# ---------------------------------------------------------------------------------------------
# Raw wire: producer state after a crash
# ---------------------------------------------------------------------------------------------


def init_producer_id(conn):
    """InitProducerId v1 (non-transactional); returns (error, producer_id, epoch)."""
    r = conn.request(wire.INIT_PRODUCER_ID, 1, wire.string(None) + wire.i32(60000))
    r.i32()
    return r.i16(), r.i64(), r.i16()


def batch(pid, epoch, seq, values):
    return wire.record_batch([wire.Record(v) for v in values], producer_id=pid, producer_epoch=epoch,
                             base_sequence=seq)


@pytest.mark.parametrize("clean", [False, True], ids=["kill9", "sigterm"])
def test_producer_state_survives_restart(broker, topic, clean):
    with wire.Conn.to(broker.bootstrap) as c:
        assert c.create_topic(topic, 1)[0] == 0
        err, pid, epoch = init_producer_id(c)
        assert err == 0 and pid >= 0, (err, pid)
        base = []
        for k in range(6):
            res = c.produce(topic, 0, batch(pid, epoch, 3 * k, [f"{k}-{j}".encode() for j in range(3)]))
            assert res["error_code"] == 0, res
            base.append(res["base_offset"])
        assert base == [0, 3, 6, 9, 12, 15]

    broker.restart(clean=clean)

    with wire.Conn.to(broker.bootstrap) as c:
        # A retry of one of the last five batches: answered with its original offset, not appended.
        res = c.produce(topic, 0, batch(pid, epoch, 12, [b"4-0", b"4-1", b"4-2"]))
        assert (res["error_code"], res["base_offset"]) == (0, 12), res
        res = c.produce(topic, 0, batch(pid, epoch, 15, [b"5-0", b"5-1", b"5-2"]))
        assert (res["error_code"], res["base_offset"]) == (0, 15), res
        # A gap: OUT_OF_ORDER_SEQUENCE_NUMBER.
        res = c.produce(topic, 0, batch(pid, epoch, 25, [b"gap"]))
        assert res["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER, res
        # The next sequence is appended at the end.
        res = c.produce(topic, 0, batch(pid, epoch, 18, [b"6-0"]))
        assert (res["error_code"], res["base_offset"]) == (0, 18), res
        # A newer epoch must start at sequence 0; once it has written, the old epoch is fenced.
        res = c.produce(topic, 0, batch(pid, epoch + 1, 5, [b"new-epoch-bad-seq"]))
        assert res["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER, res
        res = c.produce(topic, 0, batch(pid, epoch + 1, 0, [b"7-0"]))
        assert (res["error_code"], res["base_offset"]) == (0, 19), res
        res = c.produce(topic, 0, batch(pid, epoch, 19, [b"old-epoch"]))
        assert res["error_code"] == INVALID_PRODUCER_EPOCH, res
        values = [r["value"] for bt in c.fetch_all(topic, 0) for r in bt.records]
        assert values == [f"{k}-{j}".encode() for k in range(6) for j in range(3)] + [b"6-0", b"7-0"]
        # Producer ids never repeat across restarts.
        err, pid2, _ = init_producer_id(c)
        assert err == 0 and pid2 >= 0 and pid2 != pid, (pid, pid2)
