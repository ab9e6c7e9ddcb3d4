"""Issue 12: one forwarded broker serves the whole cluster.

Three brokers, each with two listeners: INTERNAL (inter-broker) and the forwarding listener LOCAL,
whose advertised address is the same on every broker: `localhost:<relay port>` (each broker spells
the host in its own case, since librdkafka merges brokers sharing host:port), a tests/relay.py
Relay standing in for `kubectl port-forward` to one pod (broker RELAY_TO). Every client below talks
to the relay only; the harness checks the truth (leaders, what is in each partition) on the
INTERNAL listeners, directly, without forwarding.

- The README quick start (producer and group consumer, verbatim) and kafka-python with explicit
  partitions and keys: every record in its partition.
- confluent-kafka with every codec; kcat -L/-P/-C/-G; the AdminClients of confluent-kafka and
  kafka-python (topics, configs of every broker, groups, offsets).
- Consumer groups of 3 members splitting the 6 partitions (each to exactly one member), then 2.
- An idempotent acks=all producer while the leader of a partition (not the broker behind the
  relay) is SIGKILLed: nothing acknowledged lost or duplicated.
- Any broker behind the relay (retargeted in turn).
- Bad paths: a partition whose leader is frozen or dead gives retriable errors in bounded time.
- Negative control: the INTERNAL listener answers with internal addresses and does not forward.

The topic of each test has 6 partitions with replicas rotated over the brokers, so partition p is
led by broker p % 3 (asserted): two partitions per broker, four of the six behind the relay's
broker led elsewhere.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

import kafka_wire as wire
from cluster import metadata_request, read_partitions, verify_acknowledged
from conftest import parse_prometheus, rdkafka_conf, run_kcat, wait_until
from test_groups import Worker, quickstart_consumer, stable_split, workers  # noqa: F401

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

PARTITIONS = 6
RELAY_TO = 0  # the broker behind the relay ("the pod the port-forward reaches")
SETTINGS = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "offsets.topic.num.partitions": 5,
    "min.insync.replicas": 2,
    "broker.session.timeout.ms": 1500,
}
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

# Kafka error codes a client retries on (Java's RetriableException subclasses).
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
NETWORK_EXCEPTION = 13
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
KAFKA_STORAGE_ERROR = 56
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
RETRIABLE = {UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT,
             NETWORK_EXCEPTION, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
             NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, KAFKA_STORAGE_ERROR, FENCED_LEADER_EPOCH,
             UNKNOWN_LEADER_EPOCH}

# A forwarded request whose target broker does not answer must be answered (with a retriable
# error) within this, which is below librdkafka's and kafka-python's default request timeout
# (30 s): the client sees the broker's error rather than timing out the connection to it.
ANSWER_WITHIN = 20.0


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fwd(make_cluster):
    """3 brokers with INTERNAL + forwarding LOCAL listeners, the relay to broker RELAY_TO."""
    return make_cluster(3, SETTINGS, forwarding=True, relay_to=RELAY_TO)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def spread_assignment(partitions: int = PARTITIONS, brokers: int = 3) -> list[list[int]]:
    """Replicas of partition p: p % n first (the preferred leader), then the others."""
    return [[(p + k) % brokers for k in range(brokers)] for p in range(partitions)]


def create_spread_topic(c, name: str, partitions: int = PARTITIONS, config: dict | None = None) -> dict[int, int]:
    """Creates the topic through the harness (INTERNAL listeners), waits until partition p is led
    by broker p % 3 on every broker's view, and returns {partition: leader}."""
    c.create_topic(name, assignment=spread_assignment(partitions), config=config)
    want = {p: p % 3 for p in range(partitions)}
    c.wait_until(lambda: c.leaders(name, partitions) == want, 30, 0.1,
                 msg=f"{name}: partition p led by broker p % 3", detail=lambda: c.describe([name]))
    leaders = c.leaders(name, partitions)
    assert set(leaders.values()) == {0, 1, 2}, f"leaders not spread over the three brokers: {leaders}"
    return leaders


def relay_host_port(c) -> tuple[str, int]:
    host, port = c.relay_bootstrap.rsplit(":", 1)
    return host, int(port)


def truth(c, topic: str, partitions: int = PARTITIONS):
    """Each partition as the freshest broker sees it on the INTERNAL listeners."""
    out = {}
    for p in range(partitions):
        pm = c.partition(topic, p)
        assert pm is not None, f"{topic}-{p} unknown to every broker"
        out[p] = (pm.leader, sorted(pm.replicas), sorted(pm.isr))
    return out


def find_coordinator(bootstrap: str, group: str) -> tuple[int, int, str, int]:
    """FindCoordinator v1 (group): (error code, node id, host, port)."""
    with wire.Conn.to(bootstrap) as conn:
        r = conn.request(wire.FIND_COORDINATOR, 1, wire.string(group) + wire.i8(0))
        r.i32()  # throttle
        err = r.i16()
        r.string()  # message
        return err, r.i32(), r.string(), r.i32()


def group_coordinated_by(c, want: set[int]) -> tuple[str, int]:
    """A fresh group id whose coordinator (asked on an INTERNAL listener) is in `want`."""
    box = {}

    def found():
        for _ in range(50):
            g = uid("g")
            err, node, _h, _p = find_coordinator(c[RELAY_TO].bootstrap, g)
            if err == 0 and node in want:
                box["g"] = (g, node)
                return True
        return False

    c.wait_until(found, 60, 0.2, msg=f"a group coordinated by one of {sorted(want)}")
    return box["g"]


def forwarded(c, api: str, i: int = RELAY_TO) -> float:
    """Broker i's sluice_forwarded_requests for one API (0 when it has forwarded none yet)."""
    status, text = c[i].http_get("/metrics", timeout=10)
    assert status == 200, status
    return sum(v for n, labels, v in parse_prometheus(text)
               if n in ("sluice_forwarded_requests", "sluice_forwarded_requests_total") and labels.get("api") == api)


def coordinators(c) -> list[int]:
    """The brokers leading some __consumer_offsets partition (the possible group coordinators);
    asserts there are at least two, so that some group is coordinated away from the relay."""
    n = int(SETTINGS["offsets.topic.num.partitions"])
    box = {}

    def led():
        leaders = c.leaders("__consumer_offsets", n)
        box["l"] = leaders
        return all(l >= 0 for l in leaders.values())

    c.wait_until(led, 30, 0.2, msg="__consumer_offsets led", detail=lambda: c.describe(["__consumer_offsets"]))
    nodes = sorted(set(box["l"].values()))
    assert len(nodes) >= 2 and nodes != [RELAY_TO], f"__consumer_offsets leaders: {box['l']}"
    return nodes


def produce_tracked(bootstrap: str, topic: str, records: list[dict], conf: dict | None = None,
                    timeout: float = 60.0) -> list[tuple]:
    """confluent-kafka: produces dicts (value, key, partition, headers); returns one
    (error, partition, offset, value, key) per record, in delivery order."""
    p = Producer(rdkafka_conf({"bootstrap.servers": bootstrap, "linger.ms": 5, **(conf or {})}))
    out = []

    def cb(err, msg):
        out.append((err, msg.partition(), msg.offset(), msg.value(), msg.key()))

    for r in records:
        while True:
            try:
                p.produce(topic, on_delivery=cb, **{k: v for k, v in r.items() if v is not None})
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, f"{left} records without a delivery report after {timeout}s"
    return out


def by_partition_values(read) -> dict[int, list[bytes]]:
    return {p: [v for _o, v in recs] for p, recs in read.records.items()}


def assert_partitions_hold(c, topic: str, expected: dict[int, list[bytes]], through: str = "internal"):
    """Reads every partition from the beginning (INTERNAL listeners: the truth, no forwarding; or
    the relay) and compares each partition's values, in order, with `expected`."""
    bootstrap = c.bootstrap_servers() if through == "internal" else c.relay_bootstrap
    read = read_partitions(bootstrap, topic, len(expected), timeout=60)
    got = by_partition_values(read)
    for p, want in expected.items():
        assert got[p] == want, (f"{topic}-{p} read through {through}: {len(got[p])} records, expected {len(want)}; "
                                f"first differences: {[x for x in got[p] if x not in want][:3]} / "
                                f"{[x for x in want if x not in got[p]][:3]}")
    assert not read.backwards and not read.resets, (read.backwards[:5], read.resets[:5])
    return read


# ---------------------------------------------------------------------------------------------
# Metadata through the relay, and the negative control on INTERNAL
# ---------------------------------------------------------------------------------------------


def test_metadata_through_relay_is_truthful_with_the_relay_address(fwd, topic):
    c = fwd
    create_spread_topic(c, topic)
    host, port = relay_host_port(c)
    real = truth(c, topic)

    for via in (c.relay_bootstrap, c[1].local_bootstrap, c[2].local_bootstrap):
        md = metadata_request(via, [topic])
        assert {i: (h.lower(), p) for i, (h, p, _r) in md.brokers.items()} == {i: (host, port) for i in range(3)}, (
            f"Metadata through {via}: every broker at the forwarding address {host}:{port}, got {md.brokers}")
        # ... spelt differently for each broker (the host's case): librdkafka merges brokers that
        # share host:port (confluentinc/librdkafka#4212).
        assert len({h for h, _p, _r in md.brokers.values()}) == 3, md.brokers
        t = md.topics[topic]
        assert t.error_code == 0 and sorted(t.partitions) == list(range(PARTITIONS)), t
        got = {p: (pm.leader, sorted(pm.replicas), sorted(pm.isr)) for p, pm in t.partitions.items()}
        assert got == real, f"Metadata through {via} differs from the brokers' own view:\n{got}\n{real}"
        assert md.controller_id in (0, 1, 2)


def test_internal_listener_answers_internal_addresses_and_does_not_forward(fwd, topic):
    """Negative control: the INTERNAL listener is an ordinary Kafka listener."""
    c = fwd
    leaders = create_spread_topic(c, topic)
    host, port = relay_host_port(c)
    internal = {i: ("127.0.0.1", c[i].port) for i in range(3)}

    md = metadata_request(c[1].bootstrap, [topic])
    assert {i: (h, p) for i, (h, p, _r) in md.brokers.items()} == internal, md.brokers
    assert {p: pm.leader for p, pm in md.topics[topic].partitions.items()} == leaders

    p = run_kcat("-L", "-b", c[1].bootstrap, "-t", topic, "-m", "15")
    out = p.stdout.decode()
    assert "3 brokers:" in out, out
    for i in range(3):
        assert f"broker {i} at 127.0.0.1:{c[i].port}" in out, out
    assert f"localhost:{port}" not in out.lower(), out

    a = AdminClient(rdkafka_conf({"bootstrap.servers": c[1].bootstrap}))
    d = a.describe_cluster(request_timeout=20).result(timeout=30)
    assert {n.id: (n.host, n.port) for n in d.nodes} == internal

    # FindCoordinator: the same coordinator, each listener's address for it.
    g, node = group_coordinated_by(c, {0, 1, 2})
    assert find_coordinator(c[RELAY_TO].bootstrap, g) == (0, node, "127.0.0.1", c[node].port)
    err, got_node, got_host, got_port = find_coordinator(c.relay_bootstrap, g)
    assert (err, got_node, got_host.lower(), got_port) == (0, node, host, port)

    # INTERNAL does not forward: a produce for a partition another broker leads is refused with
    # NOT_LEADER_OR_FOLLOWER there, and accepted through the forwarding listener.
    other = next(p for p, l in leaders.items() if l != RELAY_TO)
    batch = wire.record_batch([wire.Record(b"negative-control")])
    with wire.Conn.to(c[RELAY_TO].bootstrap) as conn:
        assert conn.produce(topic, other, batch, acks=-1)["error_code"] == NOT_LEADER_OR_FOLLOWER
    with wire.Conn.to(c.relay_bootstrap) as conn:
        res = conn.produce(topic, other, batch, acks=-1)
    assert res["error_code"] == 0 and res["base_offset"] == 0, res


def test_any_broker_behind_the_relay(fwd, topic):
    """Whichever broker the tunnel reaches (a port-forward to the bootstrap Service picks any pod):
    with the relay pointed at each broker in turn, a new producer writes to all six partitions and
    a new consumer reads them back, each record in its partition."""
    c = fwd
    create_spread_topic(c, topic)
    expected = {p: [] for p in range(PARTITIONS)}
    for target in (1, 2, 0):
        c.relay.retarget("127.0.0.1", c[target].local_port)
        records = [{"value": f"via{target}-{p}-{i}".encode(), "partition": p}
                   for i in range(20) for p in range(PARTITIONS)]
        reports = produce_tracked(c.relay_bootstrap, topic, records, conf={"enable.idempotence": True})
        assert all(r[0] is None for r in reports), [r for r in reports if r[0] is not None][:3]
        assert all(r[1] == int(r[3].split(b"-")[1]) for r in reports)
        for r in records:
            expected[r["partition"]].append(r["value"])
        assert_partitions_hold(c, topic, expected, through="relay")
        md = metadata_request(c.relay_bootstrap, [topic])
        assert {p: pm.leader for p, pm in md.topics[topic].partitions.items()} == {p: p % 3 for p in range(PARTITIONS)}
    assert_partitions_hold(c, topic, expected, through="internal")
    for i in range(3):
        assert forwarded(c, "Produce", i) > 0, f"broker{i} forwarded no Produce while behind the relay"


# ---------------------------------------------------------------------------------------------
# The README quick start and kafka-python
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_readme_quickstart_through_relay_every_record_in_its_partition(fwd, tmp_path):
    """The quick-start producer and group consumer, verbatim but for the address, against a
    6-partition test_topic led by all three brokers; then kafka-python with explicit partitions
    and with keys: every record is read back from the partition it was acknowledged in."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.partitioner.default import murmur2

    c = fwd
    create_spread_topic(c, "test_topic")
    address = c.relay_bootstrap
    assert address.startswith("localhost:")
    # The consumer starts at the end: the producer runs until it has joined and prints.
    with quickstart_consumer(address, tmp_path, timeout=60) as (lines, runs):
        # kafka-python, explicit partitions and keys, through the relay.
        producer = KafkaProducer(bootstrap_servers=address)
        try:
            assert producer.partitions_for("test_topic") == set(range(PARTITIONS))
            sent = []
            for i in range(120):
                v = f"explicit-{i % PARTITIONS}-{i}".encode()
                sent.append((i % PARTITIONS, None, v, producer.send("test_topic", v, partition=i % PARTITIONS)))
            for i in range(60):
                k = f"key-{i % 7}".encode()
                v = f"keyed-{i}".encode()
                sent.append((None, k, v, producer.send("test_topic", v, key=k)))
            producer.flush(60)
            acked = [(want, k, v, f.get(timeout=30)) for want, k, v, f in sent]
        finally:
            producer.close()
        where = {}
        for want, k, v, md in acked:
            # kafka-python's default partitioner: murmur2 of the key over all 6 partitions.
            expected = want if want is not None else (murmur2(k) & 0x7FFFFFFF) % PARTITIONS
            assert md.partition == expected, f"{v!r} acknowledged in partition {md.partition}, expected {expected}"
            where[v] = (md.partition, md.offset)

        # The verbatim group consumer prints every one of them (all six partitions, three leaders).
        wait_until(lambda: set(where) <= {l.encode() for l in lines}, timeout=45,
                   msg="the quick-start consumer printing every kafka-python record")

        # A kafka-python group consumer with the partitions: each record where it was acknowledged.
        consumer = KafkaConsumer("test_topic", group_id=uid("kp-check"), bootstrap_servers=address,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        got = {}
        try:
            deadline = time.monotonic() + 60
            while not set(where) <= set(got) and time.monotonic() < deadline:
                for tp, recs in consumer.poll(timeout_ms=500).items():
                    for r in recs:
                        assert r.partition == tp.partition
                        assert r.value not in got or r.value == b"hello world", f"{r.value!r} read twice"
                        got[r.value] = (r.partition, r.offset)
        finally:
            consumer.close()
        missing = set(where) - set(got)
        assert not missing, f"{len(missing)} records never read through the relay, e.g. {sorted(missing)[:5]}"
        moved = {v: (where[v], got[v]) for v in where if got[v] != where[v]}
        assert not moved, f"records read elsewhere than acknowledged (acked, read): {list(moved.items())[:5]}"

        # The truth, on the INTERNAL listeners: each partition holds exactly its records.
        read = read_partitions(c.bootstrap_servers(), "test_topic", PARTITIONS)
        for p, recs in read.records.items():
            for off, v in recs:
                if v != b"hello world":
                    assert where.get(v) == (p, off), f"{v!r} at {p}/{off}, acknowledged at {where.get(v)}"
        assert sum(1 for recs in read.records.values() for _o, v in recs if v == b"hello world") == runs

        # The verbatim consumer's auto-commits (every 5 s) reach the group coordinator, whichever
        # broker it is: its committed offsets become the end offsets of all six partitions.
        admin = AdminClient(rdkafka_conf({"bootstrap.servers": address}))

        def committed_at_end():
            res = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions("test_group")])["test_group"].result(timeout=20)
            offs = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == "test_topic"}
            return offs == read.high_watermarks or None

        wait_until(committed_at_end, timeout=30, interval=0.5,
                   msg=f"test_group's committed offsets == end offsets {read.high_watermarks}")


# ---------------------------------------------------------------------------------------------
# confluent-kafka, every codec
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_confluent_every_codec_through_relay(fwd, topic):
    c = fwd
    failures = []
    before = {api: forwarded(c, api) for api in ("Produce", "Fetch")}
    for codec in CODECS:
        t = f"{topic}-{codec}"
        create_spread_topic(c, t)
        n = 600
        records = [{"value": f"{codec}/{i % PARTITIONS}/{i}:".encode() * (1 + i % 5),
                    "key": f"k{i}".encode(), "headers": [("i", str(i).encode())], "partition": i % PARTITIONS}
                   for i in range(n)]
        reports = produce_tracked(c.relay_bootstrap, t, records, conf={
            "compression.type": codec, "enable.idempotence": True, "acks": "all", "linger.ms": 10})
        errors = [r for r in reports if r[0] is not None]
        if errors:
            failures.append(f"{codec}: {len(errors)} delivery errors, e.g. {errors[:3]}")
            continue
        expected = {p: [r["value"] for r in records if r["partition"] == p] for p in range(PARTITIONS)}
        placed = {r[3]: (r[1], r[2]) for r in reports}
        wrong = [(v, placed[v]) for p, vs in expected.items() for i, v in enumerate(vs) if placed[v] != (p, i)]
        if wrong:
            failures.append(f"{codec}: acknowledged elsewhere than produced/in order: {wrong[:3]}")
            continue
        try:
            assert_partitions_hold(c, t, expected, through="relay")
            assert_partitions_hold(c, t, expected, through="internal")
        except AssertionError as e:
            failures.append(f"{codec}: {e}")
        # Keys and headers survive the hop (one partition, through the relay).
        cons = Consumer(rdkafka_conf({"bootstrap.servers": c.relay_bootstrap, "group.id": uid("unused"),
                                      "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
        try:
            cons.assign([TopicPartition(t, 1, OFFSET_BEGINNING)])
            msgs = []
            deadline = time.monotonic() + 30
            while len(msgs) < len(expected[1]) and time.monotonic() < deadline:
                msgs += [m for m in cons.consume(1000, timeout=0.5) if not m.error()]
            want = [(r["key"], r["headers"]) for r in records if r["partition"] == 1]
            if [(m.key(), m.headers()) for m in msgs] != want:
                failures.append(f"{codec}: keys/headers of partition 1 differ through the relay")
        finally:
            cons.close()
    # The relay's broker led 2 of each topic's 6 partitions: the others went through its forwarding.
    after = {api: forwarded(c, api) for api in ("Produce", "Fetch")}
    assert all(after[api] > before[api] for api in after), f"sluice_forwarded_requests {before} -> {after}"
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# kcat
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_kcat_through_relay(fwd, topic):
    c = fwd
    leaders = create_spread_topic(c, topic)
    host, port = relay_host_port(c)
    relay = c.relay_bootstrap
    real = truth(c, topic)

    # -L: three brokers, all at the relay address, with the real leaders, replicas and ISR.
    out = run_kcat("-L", "-b", relay, "-t", topic, "-m", "15").stdout.decode()
    assert "3 brokers:" in out, out
    for i in range(3):
        assert re.search(rf"broker {i} at {host}:{port}\b", out, re.IGNORECASE), out
    for p in range(PARTITIONS):
        m = re.search(rf"partition {p}, leader (\d+), replicas: ([\d,]+), isrs: ([\d,]+)", out)
        assert m, out
        assert (int(m.group(1)), sorted(map(int, m.group(2).split(","))),
                sorted(map(int, m.group(3).split(",")))) == real[p], (p, m.group(0), real[p])
    md = json.loads(run_kcat("-L", "-J", "-b", relay, "-t", topic, "-m", "15").stdout)
    assert sorted((b["id"], b["name"].lower()) for b in md["brokers"]) == [(i, f"{host}:{port}") for i in range(3)]
    assert {pp["partition"]: pp["leader"] for pp in md["topics"][0]["partitions"]} == leaders

    # -P to each partition, keyed; the truth on INTERNAL.
    for p in range(PARTITIONS):
        lines = "".join(f"k{p}-{i}:v{p}-{i}\n" for i in range(20)).encode()
        run_kcat("-P", "-b", relay, "-t", topic, "-p", p, "-K", ":", input=lines)
    want = {p: [f"v{p}-{i}".encode() for i in range(20)] for p in range(PARTITIONS)}
    assert_partitions_hold(c, topic, want, through="internal")

    # -C each partition, -C all, -G: every step is tried and all failures reported together.
    failures = []

    def kcat(*args, timeout=15.0):
        try:
            p = run_kcat(*args, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            failures.append(f"kcat {' '.join(map(str, args))}: no exit in {timeout}s (stdout "
                            f"{(e.stdout or b'')[-200:]!r})")
            return None
        if p.returncode != 0:
            failures.append(f"kcat {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr[-600:]!r}")
            return None
        return p

    for p in range(PARTITIONS):
        r = kcat("-C", "-b", relay, "-t", topic, "-p", p, "-o", "beginning", "-e", "-f", "%p %o %k %s\\n")
        if r is not None:
            got = r.stdout.decode().splitlines()
            if got != [f"{p} {i} k{p}-{i} v{p}-{i}" for i in range(20)]:
                failures.append(f"kcat -C -p {p} (leader broker{leaders[p]}) read {got[:3]}...")
    r = kcat("-C", "-b", relay, "-t", topic, "-o", "beginning", "-e", "-f", "%p %o %s\\n")
    if r is not None and sorted(r.stdout.decode().splitlines()) != sorted(
            f"{p} {i} v{p}-{i}" for p in range(PARTITIONS) for i in range(20)):
        failures.append(f"kcat -C (all partitions) read {len(r.stdout.decode().splitlines())} records")

    # -G: a balanced consumer through the relay reads every record once, from its partition, and
    # its commits reach the coordinator.
    group = uid("kcat")
    r = kcat("-b", relay, "-G", group, "-X", "auto.offset.reset=earliest", "-c", 120,
             "-f", "%p %o %s\\n", topic, timeout=45)
    if r is not None:
        got = r.stdout.decode().splitlines()
        if sorted(got) != sorted(f"{pp} {i} v{pp}-{i}" for pp in range(PARTITIONS) for i in range(20)):
            failures.append(f"kcat -G read {len(got)} records: {got[:5]}")
        else:
            a = AdminClient(rdkafka_conf({"bootstrap.servers": relay}))

            def committed():
                res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=20)
                return {tp.partition: tp.offset for tp in res.topic_partitions} == {pp: 20 for pp in range(PARTITIONS)}

            try:
                wait_until(committed, timeout=30, interval=0.5, msg="kcat -G's committed offsets (20 per partition)")
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, f"kcat ({run_kcat('-V', check=False).stdout.decode().strip()}) through the relay:\n" + \
        "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# AdminClients
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_confluent_admin_through_relay(fwd, topic):
    c = fwd
    host, port = relay_host_port(c)
    a = AdminClient(rdkafka_conf({"bootstrap.servers": c.relay_bootstrap}))

    # CreateTopics (goes to the controller, wherever it is), then the truth on INTERNAL.
    a.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3,
                              config={"retention.ms": "7777777"})], operation_timeout=30)[topic].result(timeout=40)
    c.wait_topic_healthy(topic, PARTITIONS, 3, 30)
    real = truth(c, topic)
    doomed = f"{topic}-doomed"
    a.create_topics([NewTopic(doomed, num_partitions=2, replication_factor=3)],
                    operation_timeout=30)[doomed].result(timeout=40)
    c.wait_topic_healthy(doomed, 2, 3, 30)

    d = a.describe_cluster(request_timeout=20).result(timeout=30)
    assert {n.id: (n.host.lower(), n.port) for n in d.nodes} == {i: (host, port) for i in range(3)}
    assert d.controller is not None and d.controller.id == c.wait_controller()

    desc = a.describe_topics(TopicCollection([topic]), request_timeout=20)[topic].result(timeout=30)
    got = {pi.id: (pi.leader.id, sorted(r.id for r in pi.replicas), sorted(r.id for r in pi.isr))
           for pi in desc.partitions}
    assert got == real
    assert {(pi.leader.host.lower(), pi.leader.port) for pi in desc.partitions} == {(host, port)}

    # DescribeConfigs: the topic, and every broker, including the two not behind the relay.
    res = ConfigResource("topic", topic)
    cfg = a.describe_configs([res], request_timeout=20)[res].result(timeout=30)
    assert cfg["retention.ms"].value == "7777777"
    for i in range(3):
        res = ConfigResource("broker", str(i))
        cfg = a.describe_configs([res], request_timeout=20)[res].result(timeout=30)
        assert cfg["node.id"].value == str(i), f"broker {i}'s configs say node.id={cfg['node.id'].value}"

    # DeleteTopics.
    a.delete_topics([doomed], operation_timeout=30)[doomed].result(timeout=40)
    c.wait_until(lambda: doomed not in metadata_request(c[1].bootstrap).topics, 30, 0.2, msg=f"{doomed} deleted")

    # Produce, a group on each broker as coordinator (commits forwarded to the other two), then
    # the group APIs and ListOffsets through the relay.
    reports = produce_tracked(c.relay_bootstrap, topic,
                              [{"value": b"%d" % i, "partition": i % PARTITIONS} for i in range(60 * PARTITIONS)])
    assert all(r[0] is None for r in reports)
    groups = {}
    consumers = []
    try:
        for node in coordinators(c):
            g, _ = group_coordinated_by(c, {node})
            groups[g] = node
            cons = Consumer(rdkafka_conf({"bootstrap.servers": c.relay_bootstrap, "group.id": g,
                                          "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                          "session.timeout.ms": 6000}))
            consumers.append(cons)
            cons.subscribe([topic])
            n = 0
            deadline = time.monotonic() + 60
            while n < 60 * PARTITIONS and time.monotonic() < deadline:
                n += sum(1 for m in cons.consume(1000, timeout=0.5) if not m.error())
            assert n == 60 * PARTITIONS, f"group {g} (coordinator {node}) read {n} records through the relay"
            cons.commit(asynchronous=False)

        listed = a.list_consumer_groups(request_timeout=20).result(timeout=30)
        ids = [g.group_id for g in listed.valid]
        assert not listed.errors, listed.errors
        for g in groups:
            assert 1 <= ids.count(g) <= 3, f"group {g} (coordinator {groups[g]}) listed {ids.count(g)} times: {ids}"
        print(f"confluent list_consumer_groups: {len(ids)} entries for {len(set(ids))} groups")

        described = a.describe_consumer_groups(list(groups), request_timeout=20)
        for g, node in groups.items():
            dg = described[g].result(timeout=30)
            assert dg.state.name == "STABLE", (g, dg.state)
            assert dg.coordinator.id == node and (dg.coordinator.host.lower(), dg.coordinator.port) == (host, port)
            assert len(dg.members) == 1
            assert sorted(tp.partition for tp in dg.members[0].assignment.topic_partitions) == list(range(PARTITIONS))
            offs = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result(timeout=30)
            assert {tp.partition: tp.offset for tp in offs.topic_partitions} == {p: 60 for p in range(PARTITIONS)}
    finally:
        for cons in consumers:
            cons.close()

    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    for spec, want in ((OffsetSpec.earliest(), 0), (OffsetSpec.latest(), 60)):
        fs = a.list_offsets({tp: spec for tp in tps}, request_timeout=20)
        assert {tp.partition: f.result(timeout=30).offset for tp, f in fs.items()} == {p: want for p in range(PARTITIONS)}


@pytest.mark.timeout(300)
def test_kafka_python_admin_through_relay(fwd, topic):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic

    c = fwd
    host, port = relay_host_port(c)
    ka = KafkaAdminClient(bootstrap_servers=c.relay_bootstrap, request_timeout_ms=30000)
    try:
        ka.create_topics([KNewTopic(topic, PARTITIONS, 3, topic_configs={"retention.ms": "8888888"})])
        c.wait_topic_healthy(topic, PARTITIONS, 3, 30)
        real = truth(c, topic)

        cl = ka.describe_cluster()
        assert {b["broker_id"]: (b["host"].lower(), b["port"]) for b in cl["brokers"]} == {i: (host, port) for i in range(3)}
        assert cl["controller_id"] == c.wait_controller()

        (t,) = ka.describe_topics([topic])
        got = {pp["partition_index"]: (pp["leader_id"], sorted(pp["replica_nodes"]), sorted(pp["isr_nodes"]))
               for pp in t["partitions"]}
        assert got == real

        cfg = ka.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        assert cfg["topic"][topic]["retention.ms"]["value"] == "8888888", cfg
        # kafka-python sends a broker's DescribeConfigs to that broker's connection: for brokers 1
        # and 2 that is the relay too, reaching broker 0, which must answer for them.
        for i in range(3):
            cfg = ka.describe_configs([KConfigResource(ConfigResourceType.BROKER, str(i))], config_filter="all")
            assert cfg["broker"][str(i)]["node.id"]["value"] == str(i), (i, cfg["broker"][str(i)].get("node.id"))

        producer = KafkaProducer(bootstrap_servers=c.relay_bootstrap)
        try:
            for i in range(30 * PARTITIONS):
                producer.send(topic, b"%d" % i, partition=i % PARTITIONS)
            producer.flush(60)
        finally:
            producer.close()

        groups = {}
        for node in coordinators(c):
            g, _ = group_coordinated_by(c, {node})
            groups[g] = node
            cons = KafkaConsumer(topic, group_id=g, bootstrap_servers=c.relay_bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
            try:
                n = 0
                deadline = time.monotonic() + 60
                while n < 30 * PARTITIONS and time.monotonic() < deadline:
                    n += sum(len(rs) for rs in cons.poll(timeout_ms=500).values())
                assert n == 30 * PARTITIONS, f"group {g} (coordinator {node}) read {n}"
                cons.commit()
            finally:
                cons.close()

        # ListGroups goes to every broker id, i.e. three times to the relay's broker: each group
        # must be listed (once per broker id at most).
        listed = ka.list_groups()
        ids = [g["group_id"] if isinstance(g, dict) else g[0] for g in listed]
        for g, node in groups.items():
            assert 1 <= ids.count(g) <= 3, f"group {g} (coordinator {node}) listed {ids.count(g)} times: {listed}"
        print(f"kafka-python list_groups: {len(ids)} entries for {len(set(ids))} groups")
        described = ka.describe_groups(list(groups))
        for g in groups:
            assert described[g]["group_state"] == "Empty", described[g]
        offs = ka.list_group_offsets(list(groups))
        for g, node in groups.items():
            assert {tp.partition: om.offset for tp, om in offs[g].items()} == {p: 30 for p in range(PARTITIONS)}, \
                (g, node, offs[g])

        from kafka.admin import OffsetSpec as KOffsetSpec

        tps = [KTP(topic, p) for p in range(PARTITIONS)]
        ends = ka.list_partition_offsets({tp: KOffsetSpec.LATEST for tp in tps})
        assert {tp.partition: o.offset for tp, o in ends.items()} == {p: 30 for p in range(PARTITIONS)}
        begins = ka.list_partition_offsets({tp: KOffsetSpec.EARLIEST for tp in tps})
        assert {tp.partition: o.offset for tp, o in begins.items()} == {p: 0 for p in range(PARTITIONS)}
    finally:
        ka.close()


# ---------------------------------------------------------------------------------------------
# Consumer groups splitting the partitions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kp", "ck"], ids=["kafka-python", "confluent-kafka"])
def test_group_members_split_partitions_through_relay(fwd, topic, tmp_path, workers, kind):  # noqa: F811
    """3 members, all through the relay, coordinator not the relay's broker: each of the 6
    partitions goes to exactly one member; every record is consumed once, by the owner of its
    partition; then one member leaves and the other two split the 6 as 3 + 3."""
    c = fwd
    create_spread_topic(c, topic)
    group, coordinator = group_coordinated_by(c, set(coordinators(c)) - {RELAY_TO})
    parts = [f"{topic}:{p}" for p in range(PARTITIONS)]
    ws = [Worker(kind, c.relay_bootstrap, [topic], group, tmp_path, session_ms=6000) for _ in range(3)]
    workers.extend(ws)
    split = stable_split(ws, parts, sizes=[2, 2, 2], timeout=60)

    n = 100 * PARTITIONS
    reports = produce_tracked(c.relay_bootstrap, topic,
                              [{"value": f"{i % PARTITIONS}-{i}".encode(), "partition": i % PARTITIONS}
                               for i in range(n)])
    assert all(r[0] is None for r in reports)

    def all_read():
        return sum(len(w.records()) for w in ws) >= n

    try:
        wait_until(all_read, timeout=60, msg=f"{n} records consumed by the group (coordinator broker{coordinator})")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(w.describe() for w in ws)) from None
    seen = {}
    for w in ws:
        owned = set(split[w.name])
        for r in w.records():
            part = r["p"]
            assert part in owned, f"{w.name} read {r} from {part}, owning {sorted(owned)}"
            assert part == f"{topic}:{r['v'].split('-')[0]}", f"record {r['v']} read from {part}"
            assert r["v"] not in seen, f"{r['v']} read twice ({seen.get(r['v'])} and {w.name})"
            seen[r["v"]] = w.name
    assert len(seen) == n

    # Commits reached the coordinator: a member leaves, the others take over without re-reading.
    per_part = n // PARTITIONS

    def committed():
        return {p: max(w.committed().get(p, 0) for w in ws) for p in parts} == {p: per_part for p in parts}

    wait_until(committed, timeout=30, msg=f"every partition committed at {per_part}")
    for api in ("JoinGroup", "SyncGroup", "OffsetCommit"):
        assert forwarded(c, api) > 0, f"no {api} forwarded to the coordinator broker{coordinator}"
    ws[0].stop()
    stable_split(ws[1:], parts, sizes=[3, 3], timeout=60)
    new = [f"{i % PARTITIONS}-{i}" for i in range(n, n + 60)]
    more = produce_tracked(c.relay_bootstrap, topic,
                           [{"value": v.encode(), "partition": int(v.split("-")[0])} for v in new])
    assert all(r[0] is None for r in more)
    wait_until(lambda: {r["v"] for w in ws[1:] for r in w.records()} >= set(new),
               timeout=45, msg="the two remaining members read the new records")
    counts = {}
    for w in ws:
        for r in w.records():
            counts[r["v"]] = counts.get(r["v"], 0) + 1
    reread = sorted(v for v, k in counts.items() if k > 1)
    assert not reread, f"records read more than once (committed offsets not used?): {reread[:5]}"


# ---------------------------------------------------------------------------------------------
# Idempotent producer through the relay while a leader is killed
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_idempotent_producer_through_relay_survives_leader_kill(fwd, topic):
    c = fwd
    leaders = create_spread_topic(c, topic, config={"min.insync.replicas": "2"})
    producer = c.producer(topic, PARTITIONS, bootstrap=c.relay_bootstrap, rate=1500, name="relay-producer")
    tail = c.tail_consumer(topic, PARTITIONS, bootstrap=c.relay_bootstrap, name="relay-tail")
    producer.wait_progress(100, timeout=45, what="through the relay before the kill")

    victim = next(l for p, l in sorted(leaders.items()) if l != RELAY_TO)
    led = sorted(p for p, l in leaders.items() if l == victim)
    c.kill(victim)
    print(f"SIGKILL broker{victim}, leader of partitions {led}; the relay reaches broker{RELAY_TO}")
    for p in led:
        new = c.wait_leader_change(topic, p, victim, 30)
        print(f"partition {p} now led by broker{new}")
    producer.wait_progress(50, timeout=45, what=f"through the relay with broker{victim} down")
    c.start(victim)
    c.wait_all_ready(60)
    c.wait_topic_healthy(topic, PARTITIONS, 3, 60)
    producer.wait_progress(50, timeout=45, what=f"after broker{victim} is back")

    producer.stop(flush_timeout=60)
    print(producer.summary())
    assert not producer.failed, f"{len(producer.failed)} deliveries failed, e.g. {producer.failed[:5]}"
    # Everything acknowledged read back once (INTERNAL listeners, no forwarding involved) and the
    # consumer that followed through the relay saw exactly the same, never going backwards.
    res = verify_acknowledged(c, topic, PARTITIONS, producer.acked, tail, label="relay+kill")
    assert res.acknowledged > 0
    # The same read through the relay.
    through = read_partitions(c.relay_bootstrap, topic, PARTITIONS)
    direct = read_partitions(c.bootstrap_servers(), topic, PARTITIONS)
    assert through.records == direct.records


# ---------------------------------------------------------------------------------------------
# Bad paths: the partition's leader unreachable from the forwarding broker
# ---------------------------------------------------------------------------------------------


def _timed(fn):
    t0 = time.monotonic()
    try:
        return fn(), time.monotonic() - t0
    except (OSError, wire.Closed) as e:
        return e, time.monotonic() - t0


class Orphan:
    """A 1-replica topic on broker `k` (not the relay's) and a spread topic, with raw Produce and
    Fetch through the relay, each on its own connection, timed."""

    def __init__(self, c, topic: str):
        self.c = c
        self.k = 2 if RELAY_TO != 2 else 1
        self.live = 3 - self.k - RELAY_TO  # the third broker
        self.orphan = f"{topic}-rf1"
        self.topic = topic
        c.create_topic(self.orphan, assignment=[[self.k]], config={"min.insync.replicas": "1"})
        leaders = create_spread_topic(c, topic)
        self.healthy = next(p for p, l in leaders.items() if l == self.live)
        self.batch = wire.record_batch([wire.Record(b"x")])

    def produce(self, topic=None, part=0, timeout_ms=5000):
        def go():
            with wire.Conn.to(self.c.relay_bootstrap, timeout=ANSWER_WITHIN + 40) as conn:
                return conn.produce(topic or self.orphan, part, self.batch, acks=-1, timeout_ms=timeout_ms)
        return _timed(go)

    def fetch(self):
        def go():
            with wire.Conn.to(self.c.relay_bootstrap, timeout=ANSWER_WITHIN + 40) as conn:
                return conn.fetch(self.orphan, 0, 0, max_wait_ms=500, min_bytes=1)
        return _timed(go)

    def produce_healthy_fast(self, what: str):
        res, dt = self.produce(self.topic, self.healthy)
        assert not isinstance(res, BaseException) and res["error_code"] == 0, (what, res)
        assert dt < 5, f"{what}: produce to {self.topic}-{self.healthy} (leader broker{self.live}) took {dt:.1f}s"

    def writable(self) -> bool:
        res, _dt = self.produce()
        self.last = res
        return not isinstance(res, BaseException) and res["error_code"] == 0


def check_retriable(what, res_dt):
    res, dt = res_dt
    assert not isinstance(res, BaseException), (
        f"{what}: no answer: the connection failed after {dt:.1f}s ({res!r}) instead of a retriable error")
    assert dt < ANSWER_WITHIN, f"{what}: answered after {dt:.1f}s (limit {ANSWER_WITHIN}s): {res}"
    assert res["error_code"] in RETRIABLE, f"{what}: error {res['error_code']} is not retriable: {res}"
    print(f"{what}: error {res['error_code']} after {dt:.2f}s")


def test_dead_or_missing_leader_gives_retriable_errors(fwd, topic):
    """The leader of a 1-replica partition (not the relay's broker) SIGKILLed (connections
    refused), then fenced (no leader at all): Produce and Fetch through the relay are answered
    with retriable errors at once; a partition of a live leader keeps working; once the broker is
    back, the partition works through the relay again."""
    c = fwd
    o = Orphan(c, topic)
    assert o.writable(), f"{o.orphan}-0 (broker{o.k}) not writable through the relay to begin with: {o.last}"

    c.kill(o.k)
    check_retriable(f"produce to {o.orphan}-0, leader broker{o.k} killed", o.produce())
    check_retriable(f"fetch from {o.orphan}-0, leader broker{o.k} killed", o.fetch())
    o.produce_healthy_fast(f"broker{o.k} killed")

    c.wait_until(lambda: c.leader_of(o.orphan, 0) == -1, 30, 0.1, msg=f"{o.orphan}-0 without a leader",
                 detail=lambda: c.describe([o.orphan]))
    md = metadata_request(c.relay_bootstrap, [o.orphan])
    assert md.topics[o.orphan].partitions[0].leader == -1, md.topics[o.orphan]
    check_retriable(f"produce to {o.orphan}-0, no leader", o.produce())
    check_retriable(f"fetch from {o.orphan}-0, no leader", o.fetch())
    o.produce_healthy_fast("no leader for the orphan")

    c.start(o.k)
    c.wait_all_ready(60)
    c.wait_until(o.writable, 45, 0.2, msg=f"{o.orphan}-0 writable through the relay after broker{o.k} restarted",
                 detail=lambda: c.describe([o.orphan]))


@pytest.mark.timeout(300)
def test_frozen_leader_gives_retriable_errors_not_hangs(fwd, topic):
    """The leader frozen (SIGSTOP: connections accepted, nothing answered): a Produce (timeout_ms
    5000) and a Fetch (max_wait_ms 500) through the relay are answered with a retriable error
    within ANSWER_WITHIN, not held until the client gives up, both on new client connections and
    on connections that were already forwarding to that leader before it froze (a running
    producer's and consumer's); a produce to a live leader's partition at the same time, on
    another connection, is not held up."""
    c = fwd
    o = Orphan(c, topic)
    assert o.writable(), f"{o.orphan}-0 (broker{o.k}) not writable through the relay to begin with: {o.last}"
    # Client connections already forwarding to broker k.
    timeout = ANSWER_WITHIN + 45
    warm_p = wire.Conn.to(c.relay_bootstrap, timeout=timeout)
    warm_f = wire.Conn.to(c.relay_bootstrap, timeout=timeout)
    try:
        assert warm_p.produce(o.orphan, 0, o.batch, acks=-1, timeout_ms=5000)["error_code"] == 0
        assert warm_f.fetch(o.orphan, 0, 0, max_wait_ms=500, min_bytes=1)["error_code"] == 0
        c.pause(o.k)
        calls = {
            "produce, new connection": o.produce,
            "fetch, new connection": o.fetch,
            "produce, connection forwarding before the freeze": lambda: _timed(
                lambda: warm_p.produce(o.orphan, 0, o.batch, acks=-1, timeout_ms=5000)),
            "fetch, connection forwarding before the freeze": lambda: _timed(
                lambda: warm_f.fetch(o.orphan, 0, 1, max_wait_ms=500, min_bytes=1)),
        }
        results = {}
        threads = [threading.Thread(target=lambda k=k, f=f: results.update({k: f()}), daemon=True)
                   for k, f in calls.items()]
        for t in threads:
            t.start()
        o.produce_healthy_fast(f"broker{o.k} frozen")
        deadline = time.monotonic() + timeout + 5
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        failures = []
        for what in calls:
            label = f"{what}: {o.orphan}-0, leader broker{o.k} frozen"
            try:
                assert what in results, f"{label}: unanswered after {timeout + 5}s"
                check_retriable(label, results[what])
            except AssertionError as e:
                failures.append(str(e).splitlines()[0])
        assert not failures, "\n".join(failures)
    finally:
        warm_p.close()
        warm_f.close()
        if c[o.k].paused:
            c.resume(o.k)
    c.wait_all_ready(60)
    c.wait_until(o.writable, 45, 0.2, msg=f"{o.orphan}-0 writable through the relay after broker{o.k} resumed",
                 detail=lambda: c.describe([o.orphan]))
