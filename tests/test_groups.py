"""Consumer groups (classic protocol) end to end: the issue's quick-start group consumer, groups
of kafka-python and confluent-kafka consumers splitting a topic and surviving a member's
SIGKILL, committed offsets and group state across a broker kill -9, kcat -G, the admin API,
client-side assignors, static membership, and bad group requests on the raw wire.

Group members that must die abruptly run as subprocesses (WORKER below) printing one JSON
line per event; the test reads those lines and waits on conditions, never on sleeps."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import NewTopic

import kafka_wire as wire
from conftest import _set_pdeathsig, produce_confluent, rdkafka_conf, run_kcat, wait_until

# Broker settings for group tests: no initial rebalance delay, short sessions allowed, a small
# offsets topic (fast to create).
GROUP_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "5",
}

# Kafka error codes
ILLEGAL_GENERATION = 22
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
OFFSET_METADATA_TOO_LARGE = 12
GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68
GROUP_SUBSCRIBED_TO_TOPIC = 86
MEMBER_ID_REQUIRED = 79


def uid(prefix="g"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(broker, name, partitions):
    fs = broker.admin().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                      operation_timeout=10)
    fs[name].result(timeout=30)


# ---------------------------------------------------------------------------------------------
# Group member subprocess
# ---------------------------------------------------------------------------------------------

WORKER = r'''
import json, signal, sys
kind, bootstrap, topics, group, session_ms, assignor, instance = sys.argv[1:8]
topics = topics.split(",")
session_ms = int(session_ms)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

def out(**kw):
    print(json.dumps(kw), flush=True)

def name(t, p):
    return "%s:%d" % (t, p)

if kind == "kp":
    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka.conn").setLevel(logging.WARNING)
    if __import__("os").environ.get("SLUICE_TEST_KP_DEBUG"):
        logging.getLogger("kafka").setLevel(logging.DEBUG)
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    conf = dict(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                auto_offset_reset="earliest", session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(100, session_ms // 8), max_poll_interval_ms=30000,
                metadata_max_age_ms=5000)
    if assignor != "default":
        conf["partition_assignment_strategy"] = [{"range": RangePartitionAssignor,
            "roundrobin": RoundRobinPartitionAssignor, "sticky": StickyPartitionAssignor}[assignor]]
    if instance != "-":
        conf["group_instance_id"] = instance
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            out(ev="revoke_cb", parts=sorted(name(tp.topic, tp.partition) for tp in revoked))

        def on_partitions_assigned(self, assigned):
            out(ev="assign_cb", parts=sorted(name(tp.topic, tp.partition) for tp in assigned))
            out(ev="assign", parts=sorted(name(tp.topic, tp.partition) for tp in assigned))

    c = KafkaConsumer(**conf)
    c.subscribe(topics, listener=Listener())
    last = None
    while not stop:
        # A long poll timeout: kafka-python 3.0.12 can lose a join that completes after poll()
        # returned on its timer while a leader's SyncGroup is in flight (the member then never
        # heartbeats again), so keep poll() from timing out in the middle of a rebalance.
        recs = c.poll(timeout_ms=1000)
        a = sorted(name(tp.topic, tp.partition) for tp in c.assignment())
        if a != last:
            out(ev="assign", parts=a)
            last = a
        if recs:
            offs = {}
            for tp, rs in recs.items():
                for r in rs:
                    out(ev="rec", p=name(tp.topic, tp.partition), o=r.offset, v=r.value.decode())
                offs[tp] = OffsetAndMetadata(rs[-1].offset + 1, "", -1)
            try:
                c.commit(offs)
                out(ev="commit", offs={name(tp.topic, tp.partition): om.offset for tp, om in offs.items()})
            except Exception as e:
                out(ev="commit_failed", err=repr(e))
    c.close()
else:
    from confluent_kafka import Consumer, TopicPartition
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 8), "max.poll.interval.ms": 30000,
            "topic.metadata.refresh.interval.ms": 5000}
    if assignor != "default":
        conf["partition.assignment.strategy"] = assignor
    if instance != "-":
        conf["group.instance.id"] = instance
    c = Consumer(conf)
    def on_assign(cons, parts):
        out(ev="assign_cb", parts=sorted(name(p.topic, p.partition) for p in parts))
    def on_revoke(cons, parts):
        out(ev="revoke_cb", parts=sorted(name(p.topic, p.partition) for p in parts))
    c.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
    last = None
    while not stop:
        msgs = c.consume(num_messages=500, timeout=0.1)
        a = sorted(name(tp.topic, tp.partition) for tp in c.assignment())
        if a != last:
            out(ev="assign", parts=a)
            last = a
        offs = {}
        for m in msgs:
            if m.error():
                out(ev="error", err=str(m.error()))
                continue
            out(ev="rec", p=name(m.topic(), m.partition()), o=m.offset(), v=m.value().decode())
            offs[(m.topic(), m.partition())] = m.offset() + 1
        if offs:
            try:
                res = c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offs.items()],
                               asynchronous=False)
                errs = [str(r.error) for r in res if r.error is not None]
                if errs:
                    out(ev="commit_failed", err=errs)
                else:
                    out(ev="commit", offs={name(t, p): o for (t, p), o in offs.items()})
            except Exception as e:
                out(ev="commit_failed", err=repr(e))
    c.close()
out(ev="closed")
'''


class Worker:
    """A group member in a subprocess; its JSON events are collected by a reader thread."""

    def __init__(self, kind, bootstrap, topics, group, tmp_path, session_ms=6000, assignor="default",
                 instance=None, name=None):
        self.name = name or uid("w")
        self.kind = kind
        self.args = [kind, bootstrap, ",".join(topics), group, str(session_ms), assignor, instance or "-"]
        self.stderr_path = tmp_path / f"{self.name}.stderr"
        self.events: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-u", "-c", WORKER, *self.args],
                                         stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                         preexec_fn=_set_pdeathsig)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append((time.monotonic(), ev))

    def evs(self, kind=None):
        with self.lock:
            return [e for _, e in self.events if kind is None or e["ev"] == kind]

    def timed(self, kind):
        with self.lock:
            return [(t, e) for t, e in self.events if e["ev"] == kind]

    @property
    def assignment(self) -> list[str] | None:
        a = self.evs("assign")
        return a[-1]["parts"] if a else None

    def records(self):
        return self.evs("rec")

    def committed(self) -> dict[str, int]:
        out = {}
        for e in self.evs("commit"):
            out.update(e["offs"])
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def describe(self):
        err = self.stderr_path.read_text(errors="replace")[-4000:] if self.stderr_path.exists() else ""
        return (f"worker {self.name} ({self.kind}) rc={self.proc.poll()} assignment={self.assignment} "
                f"records={len(self.records())} last events={self.evs()[-5:]} stderr tail={err!r}")


@pytest.fixture
def workers():
    ws: list[Worker] = []
    yield ws
    for w in ws:
        w.kill()


def start_workers(workers, n, *args, **kw):
    new = [Worker(*args, **kw) for _ in range(n)]
    workers.extend(new)
    return new


def stable_split(ws, all_parts, sizes=None, timeout=45.0):
    """Waits until the members' latest assignments are disjoint and cover all_parts (with the given
    multiset of sizes, if any); returns {worker name: parts}."""
    want = sorted(all_parts)

    def check():
        assigns = [w.assignment for w in ws]
        if any(a is None for a in assigns):
            return False
        flat = sorted(p for a in assigns for p in a)
        if flat != want:
            return False
        if sizes is not None and sorted(len(a) for a in assigns) != sorted(sizes):
            return False
        return {w.name: list(a) for w, a in zip(ws, assigns)}

    try:
        return wait_until(check, timeout=timeout, msg=f"a stable split of {len(want)} partitions")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(w.describe() for w in ws)) from None


def consumed_values(ws):
    out = []
    for w in ws:
        out += [r["v"] for r in w.records()]
    return out


def wait_all_consumed(ws, values, timeout=45.0):
    want = set(values)

    def check():
        return want <= set(consumed_values(ws))

    try:
        wait_until(check, timeout=timeout, msg=f"all {len(want)} values consumed")
    except AssertionError as e:
        missing = sorted(want - set(consumed_values(ws)))[:20]
        raise AssertionError(f"{e}; missing e.g. {missing}\n" + "\n".join(w.describe() for w in ws)) from None


def produce_keyed(broker, topic, start, n):
    reports = produce_confluent(broker.bootstrap, topic,
                                [{"key": f"k{i % 41}".encode(), "value": f"v{i}".encode()} for i in range(start, start + n)])
    assert all(err is None for err, _, _ in reports), reports[:5]
    return reports


# ---------------------------------------------------------------------------------------------
# 1. The quick-start group consumer
# ---------------------------------------------------------------------------------------------

QUICKSTART_PRODUCER = """\
from kafka import KafkaProducer
producer = KafkaProducer(bootstrap_servers='localhost:9092')
producer.send('test_topic', b'hello world')
producer.flush()
producer.close()
"""

QUICKSTART_CONSUMER = """\
from kafka import KafkaConsumer
consumer = KafkaConsumer('test_topic', group_id='test_group', bootstrap_servers='localhost:9092')
for message in consumer:
    print(message.value.decode('utf-8'))
consumer.close()
"""


@contextlib.contextmanager
def quickstart_consumer(address: str, tmp_path, timeout: float):
    """Runs the README's group consumer against `address` and the README's producer until the
    consumer, once it has joined (it starts at the end), prints the value. Yields the lines it
    printed (still growing) and how many producer runs that took; the consumer is killed after."""
    consumer_code = QUICKSTART_CONSUMER.replace("localhost:9092", address)
    producer_code = QUICKSTART_PRODUCER.replace("localhost:9092", address)
    assert address == "localhost:9092" or consumer_code != QUICKSTART_CONSUMER
    lines: list[str] = []
    err_path = tmp_path / "quickstart-consumer.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-u", "-c", consumer_code], stdout=subprocess.PIPE,
                                stderr=err, text=True, preexec_fn=_set_pdeathsig)
    reader = threading.Thread(target=lambda: [lines.append(l.rstrip("\n")) for l in proc.stdout], daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        runs = 0
        while "hello world" not in lines and time.monotonic() < deadline:
            assert proc.poll() is None, f"quick-start consumer exited {proc.returncode}: {err_path.read_text()[-3000:]}"
            p = subprocess.run([sys.executable, "-c", producer_code], capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, f"quick-start producer failed against {address}: {p.stderr[-3000:]}"
            runs += 1
            try:
                wait_until(lambda: "hello world" in lines, timeout=2, msg="hello world")
            except AssertionError:
                pass
        assert "hello world" in lines, (
            f"the quick-start consumer printed {lines!r} after {runs} producer runs; stderr:\n"
            + err_path.read_text(errors='replace')[-3000:])
        yield lines, runs
    finally:
        proc.kill()
        proc.wait()


def test_quickstart_group_consumer_prints_hello_world(broker, tmp_path):
    """The consumer starts at the end (auto_offset_reset='latest'), so the producer runs until the
    consumer, once it has joined, prints the value (default broker settings: 3 s initial
    rebalance delay, 50 offsets partitions)."""
    address = f"localhost:{broker.port}"
    with quickstart_consumer(address, tmp_path, timeout=45) as (lines, runs):
        assert set(lines) == {"hello world"}, lines
        # It printed no more than was produced, and only values produced after it joined.
        assert len(lines) <= runs

        # The group exists with one member and kafka-python's auto-commit (every 5 s) stores the
        # position: the end of the partition.
        a = broker.admin()
        desc = a.describe_consumer_groups(["test_group"])["test_group"].result(timeout=20)
        assert len(desc.members) == 1, desc
        assert [(tp.topic, tp.partition) for tp in desc.members[0].assignment.topic_partitions] == [("test_topic", 0)]

        def committed_end():
            res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("test_group")])["test_group"].result(timeout=20)
            offs = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}
            return offs.get(("test_topic", 0)) == runs and offs

        wait_until(committed_end, timeout=20, interval=0.5, msg="auto-committed offset == end of test_topic-0")


# ---------------------------------------------------------------------------------------------
# 2. Three consumers split a 6-partition topic; one is SIGKILLed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["idle", "midstream"])
@pytest.mark.parametrize("kind", ["kp", "ck"], ids=["kafka-python", "confluent-kafka"])
def test_three_consumers_split_and_survive_a_killed_member(broker_factory, topic, tmp_path, workers, kind, when):
    """idle: the member is killed after committing everything it consumed, so every record is
    consumed exactly once overall. midstream: it is killed as soon as it has consumed a record of
    a second wave, so records after its last commit may be consumed again by the new owner."""
    session_ms = 4000
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 6)
    group = uid()
    parts = [f"{topic}:{p}" for p in range(6)]
    ws = start_workers(workers, 3, kind, b.bootstrap, [topic], group, tmp_path, session_ms=session_ms)
    split = stable_split(ws, parts, sizes=[2, 2, 2])

    # Phase 1: all members up. Every record exactly once, each from its owner's partitions.
    n1 = 300
    reports1 = produce_keyed(b, topic, 0, n1)
    assert len({p for _, p, _ in reports1}) == 6, "keys should spread over all partitions"
    wait_all_consumed(ws, [f"v{i}" for i in range(n1)])
    vals = consumed_values(ws)
    dups = sorted({v for v in vals if vals.count(v) > 1})
    assert not dups, f"consumed more than once while all members were up: {dups[:20]}"
    for w in ws:
        assert {r["p"] for r in w.records()} <= set(split[w.name]), (w.name, split[w.name])
    assert {w.assignment is not None and tuple(w.assignment) for w in ws} == {tuple(a) for a in split.values()}, \
        "an assignment changed while all members were up"

    # Every member has committed the end of its partitions.
    end1 = {}
    for _, p, o in reports1:
        end1[f"{topic}:{p}"] = max(end1.get(f"{topic}:{p}", 0), o + 1)

    def all_committed():
        return all(w.committed().get(p) == end1.get(p, w.committed().get(p)) for w in ws for p in split[w.name]
                   if p in end1)

    wait_until(all_committed, timeout=20, msg="members committed the end of their partitions")

    # Phase 2: SIGKILL one member (no LeaveGroup), produce more.
    victim, survivors = ws[0], ws[1:]
    victim_parts = split[victim.name]
    n2 = 300
    reports2 = []
    if when == "midstream":
        reports2 += produce_keyed(b, topic, n1, n2 // 2)
        wait_until(lambda: any(int(r["v"][1:]) >= n1 for r in victim.records()), timeout=20,
                   interval=0.005, msg="the member consumed a record of the second wave")
    t_kill = time.monotonic()
    victim.kill()
    victim_commits = victim.committed()
    victim_records = len(victim.records())
    reports2 += produce_keyed(b, topic, n1 + len(reports2), n2 - len(reports2))

    stable_split(survivors, parts, sizes=[3, 3], timeout=session_ms / 1000 + 30)
    takeover = time.monotonic() - t_kill
    wait_all_consumed(survivors + [victim], [f"v{i}" for i in range(n1 + n2)])
    assert len(victim.records()) == victim_records, "the killed member consumed after its death?"
    # Kafka expires the member after session.timeout.ms; the survivors rejoin on their next
    # heartbeat. Allow the session, a few heartbeats and the rebalance itself.
    assert takeover < session_ms / 1000 + 8, f"survivors took {takeover:.1f}s to take over (session {session_ms} ms)"

    # No gaps: per partition, the consumed offsets are exactly 0..end-1.
    end = dict(end1)
    for _, p, o in reports2:
        end[f"{topic}:{p}"] = max(end.get(f"{topic}:{p}", 0), o + 1)
    consumed: dict[str, list[tuple[int, str]]] = {}
    for w in ws:
        for r in w.records():
            consumed.setdefault(r["p"], []).append((r["o"], w.name))
    for p in parts:
        offsets = [o for o, _ in consumed.get(p, [])]
        assert set(offsets) == set(range(end.get(p, 0))), f"{p}: gap in consumed offsets (end {end.get(p)})"
        # Duplicates only for the dead member's records after its last commit.
        for o in {o for o in offsets if offsets.count(o) > 1}:
            assert p in victim_parts and o >= victim_commits.get(p, 0), f"{p} offset {o} consumed twice"
    # The new owners of the dead member's partitions resumed at its committed offsets: not before
    # its last acknowledged commit, not after the last record it consumed.
    for p in victim_parts:
        after = [r["o"] for w in survivors for r in w.records() if r["p"] == p]
        assert after, f"nobody consumed {p} after the kill"
        victim_end = max([r["o"] + 1 for r in victim.records() if r["p"] == p], default=0)
        if when == "idle":
            assert min(after) == victim_commits.get(p, 0), (
                f"{p}: new owner started at {min(after)}, the dead member had committed {victim_commits.get(p)}")
        else:
            assert victim_commits.get(p, 0) <= min(after) <= victim_end, (
                f"{p}: new owner started at {min(after)}; the dead member had committed {victim_commits.get(p)} "
                f"and consumed up to {victim_end}")
    all_vals = set(consumed_values(ws))
    assert all_vals == {f"v{i}" for i in range(n1 + n2)}


# ---------------------------------------------------------------------------------------------
# 3. Committed offsets and group state survive kill -9
# ---------------------------------------------------------------------------------------------


def group_consumer(broker, group, **extra):
    conf = rdkafka_conf({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500})
    conf.update(extra)
    return Consumer(conf)


def consume_n(c, n, timeout=30.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"consumed {len(out)} of {n} in {timeout}s"
        for m in c.consume(num_messages=n - len(out), timeout=0.2):
            assert m.error() is None, m.error()
            out.append(m)
    return out


def group_offsets(broker, group):
    res = broker.admin().list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=20)
    return {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in res.topic_partitions}


def test_committed_offsets_and_groups_survive_kill9(broker_factory, topic):
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 3)
    for p in range(3):
        produce_confluent(b.bootstrap, topic, [{"value": f"p{p}-{i}".encode(), "partition": p} for i in range(30)])
    group = uid()
    c = group_consumer(b, group)
    c.subscribe([topic])
    got = consume_n(c, 90)
    assert len({(m.partition(), m.offset()) for m in got}) == 90
    want = {0: 10, 1: 20, 2: 30}
    res = c.commit(offsets=[TopicPartition(topic, p, o, f"meta-{p}") for p, o in want.items()], asynchronous=False)
    assert all(r.error is None for r in res), res
    c.close()  # LeaveGroup: the group is now Empty with offsets
    # A second group only ever committed through simple (generation -1) commits.
    simple = uid("simple")
    fs = b.admin().alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(simple, [TopicPartition(topic, 1, 7)])])
    fs[simple].result(timeout=20)

    b.kill()
    b.start()

    listed = b.admin().list_consumer_groups(request_timeout=20).result(timeout=30)
    ids = {g.group_id for g in listed.valid}
    assert {group, simple} <= ids, f"groups after restart: {ids}, errors {listed.errors}"
    desc = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
    assert desc.state.name == "EMPTY", desc.state
    assert desc.members == []
    offs = group_offsets(b, group)
    assert offs == {(topic, p): (o, f"meta-{p}") for p, o in want.items()}, offs
    assert group_offsets(b, simple) == {(topic, 1): (7, "")} or \
        {k: v[0] for k, v in group_offsets(b, simple).items()} == {(topic, 1): 7}

    # A new member resumes at the committed offsets.
    c2 = group_consumer(b, group)
    c2.subscribe([topic])
    try:
        got = consume_n(c2, 90 - sum(want.values()))
        first = {}
        for m in got:
            first.setdefault(m.partition(), m.offset())
        assert first == {0: 10, 1: 20}, first
        assert sorted((m.partition(), m.offset()) for m in got) == \
            sorted((p, o) for p in range(3) for o in range(want[p], 30))
        # Nothing more arrives (no rewind to the beginning of partition 2).
        extra = c2.consume(num_messages=10, timeout=1.0)
        assert [m for m in extra if m.error() is None] == []
    finally:
        c2.close()


def test_active_member_state_survives_kill9(broker_factory, topic):
    """A member that stays up while the broker is killed and restarted keeps its member id and
    assignment: the group's metadata (generation, members, assignment) was rebuilt from
    __consumer_offsets, so its heartbeats are accepted."""
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 2)
    group = uid()
    c = group_consumer(b, group, **{"session.timeout.ms": 10000})
    c.subscribe([topic])
    try:
        wait_until(lambda: (c.consume(timeout=0.1) or True) and len(c.assignment()) == 2, timeout=30,
                   msg="assignment")
        before = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
        assert before.state.name == "STABLE" and len(before.members) == 1
        member_id = before.members[0].member_id
        b.kill()
        b.start()
        produce_confluent(b.bootstrap, topic, [{"value": b"after", "partition": 1}])
        got = []

        def consumed():
            got.extend(m for m in c.consume(timeout=0.2) if m.error() is None)
            return any(m.value() == b"after" for m in got)

        wait_until(consumed, timeout=30, msg="the member consumes after the broker restart")
        after = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
        assert after.state.name == "STABLE", after.state
        assert [m.member_id for m in after.members] == [member_id], \
            f"member id changed across the restart: {member_id} -> {[m.member_id for m in after.members]}"
        assert sorted((tp.topic, tp.partition) for tp in after.members[0].assignment.topic_partitions) == \
            [(topic, 0), (topic, 1)]
    finally:
        c.close()


def test_describe_group_members_and_lag(broker_factory, topic):
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 2)
    produce_confluent(b.bootstrap, topic, [{"value": b"x", "partition": i % 2} for i in range(30)])
    group = uid()
    c = group_consumer(b, group, **{"client.id": "lag-checker"})
    c.subscribe([topic])
    try:
        got = consume_n(c, 30)
        # Commit 10 of 15 on partition 0 and 5 of 15 on partition 1: lag 5 and 10.
        res = c.commit(offsets=[TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 5)], asynchronous=False)
        assert all(r.error is None for r in res), res
        assert len(got) == 30
        desc = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
        assert desc.state.name == "STABLE" and desc.partition_assignor == "range"
        assert len(desc.members) == 1
        m = desc.members[0]
        assert m.client_id == "lag-checker"
        assert "127.0.0.1" in m.host, m.host
        assert sorted(tp.partition for tp in m.assignment.topic_partitions) == [0, 1]
        committed = {k[1]: v[0] for k, v in group_offsets(b, group).items()}
        from confluent_kafka.admin import OffsetSpec
        ends = b.admin().list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(2)})
        end = {tp.partition: f.result(timeout=20).offset for tp, f in ends.items()}
        assert {p: end[p] - committed[p] for p in range(2)} == {0: 5, 1: 10}
        # kafka-python's admin sees the same group (DescribeGroups through another client).
        from kafka.admin import KafkaAdminClient
        ka = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=20000)
        try:
            d = ka.describe_groups([group])[group]
            assert d["group_state"] == "Stable" and d["protocol_type"] == "consumer", d
            assert d.get("protocol_data", d.get("protocol")) == "range", d
            assert [mm["client_id"] for mm in d["members"]] == ["lag-checker"]
        finally:
            ka.close()
    finally:
        c.close()


def test_admin_removes_static_members(broker_factory, topic, tmp_path, workers):
    """LeaveGroup v3+ with several members by group.instance.id (kafka-python's
    remove_group_members): the removed members are gone at once, without a session timeout."""
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 3)
    group = uid()
    ws = [Worker("ck", b.bootstrap, [topic], group, tmp_path, session_ms=30000, instance=f"inst-{i}") for i in range(3)]
    workers.extend(ws)
    stable_split(ws, [f"{topic}:{p}" for p in range(3)], sizes=[1, 1, 1])
    ws[1].kill()
    ws[2].kill()
    from kafka.admin import KafkaAdminClient, MemberToRemove
    from kafka.errors import NoError, UnknownMemberIdError

    ka = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=20000)
    try:
        t0 = time.monotonic()
        res = ka.remove_group_members(group, [MemberToRemove(group_instance_id="inst-1"),
                                              MemberToRemove(group_instance_id="inst-2"),
                                              MemberToRemove(group_instance_id="nobody")])
        # Keyed by member id (or the instance id when the broker echoes no member id).
        assert sorted(v.__name__ for v in res.values()) == ["NoError", "NoError", "UnknownMemberIdError"], res
        assert res.get("nobody") is UnknownMemberIdError, res
        assert NoError in res.values()
    finally:
        ka.close()
    # The remaining member gets every partition well before the 30 s session timeout.
    stable_split(ws[:1], [f"{topic}:{p}" for p in range(3)], timeout=20)
    assert time.monotonic() - t0 < 20
    desc = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
    assert [m.group_instance_id for m in desc.members] == ["inst-0"]


# ---------------------------------------------------------------------------------------------
# 4. kcat -G and the admin API
# ---------------------------------------------------------------------------------------------


def test_kcat_balanced_consumer_and_group_admin(broker_factory, topic):
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 3)
    values = [f"kc{i}".encode() for i in range(60)]
    produce_confluent(b.bootstrap, topic, [{"value": v, "partition": i % 3} for i, v in enumerate(values)])
    group = uid("kcat")
    p = run_kcat("-b", b.bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", "-c", "60",
                 "-f", "%p %o %s\\n", topic, timeout=60)
    lines = p.stdout.decode().splitlines()
    assert sorted(l.split()[2].encode() for l in lines) == sorted(values), p.stderr[-2000:]
    assert len({(l.split()[0], l.split()[1]) for l in lines}) == 60

    # kcat auto-commits and commits on close: the group is empty with its offsets stored.
    a = b.admin()
    wait_until(lambda: {k: v[0] for k, v in group_offsets(b, group).items()} == {(topic, p): 20 for p in range(3)},
               timeout=20, interval=0.3, msg="kcat's committed offsets")
    desc = a.describe_consumer_groups([group])[group].result(timeout=20)
    assert desc.state.name == "EMPTY" and desc.members == []

    # delete_consumer_groups on the empty group works; the group and its offsets are gone.
    a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    ids = {g.group_id for g in a.list_consumer_groups(request_timeout=20).result(timeout=30).valid}
    assert group not in ids
    assert group_offsets(b, group) == {}
    # Deleting it again: GROUP_ID_NOT_FOUND.
    with pytest.raises(KafkaException) as ei:
        a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    assert ei.value.args[0].code() == GROUP_ID_NOT_FOUND, ei.value


def test_delete_active_group_fails_and_offset_delete(broker_factory, topic):
    b = broker_factory(settings=GROUP_SETTINGS)
    other = topic + "-other"
    create_topic(b, topic, 2)
    create_topic(b, other, 2)
    produce_confluent(b.bootstrap, topic, [{"value": b"x", "partition": i % 2} for i in range(4)])
    group = uid()
    a = b.admin()
    # Offsets for a topic the group will not subscribe to, committed while the group is empty.
    a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(other, 0, 5), TopicPartition(other, 1, 6)])]
    )[group].result(timeout=20)
    assert {k: v[0] for k, v in group_offsets(b, group).items()} == {(other, 0): 5, (other, 1): 6}

    c = group_consumer(b, group)
    c.subscribe([topic])
    try:
        consume_n(c, 4)
        res = c.commit(asynchronous=False)
        assert all(r.error is None for r in res)
        # Active group: DeleteGroups answers NON_EMPTY_GROUP.
        with pytest.raises(KafkaException) as ei:
            a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
        assert ei.value.args[0].code() == NON_EMPTY_GROUP, ei.value
        # alter offsets of an active group: refused (the member owns the group's offsets).
        with pytest.raises(KafkaException):
            r = a.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 0)])])[group].result(timeout=20)
            if any(tp.error is not None for tp in r.topic_partitions):
                raise KafkaException(r.topic_partitions[0].error)

        # OffsetDelete (kafka-python's admin; confluent-kafka has no binding): the unsubscribed topic
        # works, the subscribed one is refused per partition with GROUP_SUBSCRIBED_TO_TOPIC.
        from kafka import TopicPartition as KTP
        from kafka.admin import KafkaAdminClient
        from kafka.errors import GroupSubscribedToTopicError, NoError

        ka = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=20000)
        try:
            res = ka.delete_group_offsets(group, [KTP(other, 0), KTP(other, 1)])
            assert res == {KTP(other, 0): NoError, KTP(other, 1): NoError}, res
            res = ka.delete_group_offsets(group, [KTP(topic, 0)])
            assert res == {KTP(topic, 0): GroupSubscribedToTopicError}, res
            # Several groups in one OffsetFetch (v8, KIP-709).
            listed = ka.list_group_offsets([group, uid("none")])
            assert {(tp.topic, tp.partition): om.offset for tp, om in listed[group].items()} == \
                {(topic, 0): 2, (topic, 1): 2}, listed
        finally:
            ka.close()
        assert {k: v[0] for k, v in group_offsets(b, group).items()} == {(topic, 0): 2, (topic, 1): 2}
    finally:
        c.close()
    # Now empty: delete works.
    a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    assert group_offsets(b, group) == {}


# ---------------------------------------------------------------------------------------------
# 5. Assignors
# ---------------------------------------------------------------------------------------------

# Two members, two 3-partition topics: range gives 4+2 (per topic, the first member gets the
# extra partition of each topic), round-robin and the sticky assignors 3+3.
ASSIGNORS = [
    ("ck", "range", [4, 2]),
    ("ck", "roundrobin", [3, 3]),
    ("ck", "cooperative-sticky", [3, 3]),
    ("kp", "range", [4, 2]),
    ("kp", "roundrobin", [3, 3]),
    ("kp", "sticky", [3, 3]),
]


@pytest.mark.parametrize("kind,assignor,sizes", ASSIGNORS, ids=[f"{k}-{a}" for k, a, _ in ASSIGNORS])
def test_assignors(broker_factory, topic, tmp_path, workers, kind, assignor, sizes):
    b = broker_factory(settings=GROUP_SETTINGS)
    topics = [topic + "-a", topic + "-b"]
    for t in topics:
        create_topic(b, t, 3)
    parts = [f"{t}:{p}" for t in topics for p in range(3)]
    group = uid()
    ws = start_workers(workers, 2, kind, b.bootstrap, topics, group, tmp_path, session_ms=6000, assignor=assignor)
    stable_split(ws, parts, sizes=sizes)
    desc = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
    assert desc.partition_assignor == assignor, desc.partition_assignor
    assert sorted(f"{tp.topic}:{tp.partition}" for m in desc.members for tp in m.assignment.topic_partitions) == sorted(parts)
    # Records on every partition are consumed exactly once.
    for t in topics:
        produce_confluent(b.bootstrap, t, [{"value": f"{t}-{i}".encode(), "partition": i % 3} for i in range(30)])
    want = [f"{t}-{i}" for t in topics for i in range(30)]
    wait_all_consumed(ws, want)
    vals = consumed_values(ws)
    assert sorted(vals) == sorted(want), "duplicates"


def test_mixed_clients_in_one_group(broker_factory, topic, tmp_path, workers):
    """kafka-python and librdkafka members share a group through the common protocol (range)."""
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 4)
    group = uid()
    ws = [Worker("kp", b.bootstrap, [topic], group, tmp_path, assignor="range"),
          Worker("ck", b.bootstrap, [topic], group, tmp_path, assignor="range")]
    workers.extend(ws)
    stable_split(ws, [f"{topic}:{p}" for p in range(4)], sizes=[2, 2])
    produce_confluent(b.bootstrap, topic, [{"value": f"m{i}".encode(), "partition": i % 4} for i in range(40)])
    wait_all_consumed(ws, [f"m{i}" for i in range(40)])
    assert len(consumed_values(ws)) == 40


# ---------------------------------------------------------------------------------------------
# 6. Static membership
# ---------------------------------------------------------------------------------------------


def test_static_member_restart_keeps_assignment(broker_factory, topic, tmp_path, workers):
    session_ms = 20000
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 4)
    group = uid()
    parts = [f"{topic}:{p}" for p in range(4)]
    a = Worker("ck", b.bootstrap, [topic], group, tmp_path, session_ms=session_ms, instance="static-a", name="a")
    workers.append(a)
    stable_split([a], parts)  # a joins first: it is the leader
    bw = Worker("ck", b.bootstrap, [topic], group, tmp_path, session_ms=session_ms, instance="static-b", name="b1")
    workers.append(bw)
    split = stable_split([a, bw], parts, sizes=[2, 2])
    a_events = len(a.evs("assign_cb")) + len(a.evs("revoke_cb"))
    desc = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
    assert sorted(m.group_instance_id for m in desc.members) == ["static-a", "static-b"]
    b_parts = split["b1"]

    # Kill b (no LeaveGroup) and produce to its partitions while it is away.
    bw.kill()
    produce_confluent(b.bootstrap, topic, [{"value": f"s{i}".encode(), "partition": i % 4} for i in range(40)])
    wait_all_consumed([a], [f"s{i}" for i in range(40) if f"{topic}:{i % 4}" in split["a"]])
    t0 = time.monotonic()
    b2 = Worker("ck", b.bootstrap, [topic], group, tmp_path, session_ms=session_ms, instance="static-b", name="b2")
    workers.append(b2)
    wait_until(lambda: b2.assignment, timeout=session_ms / 1000, msg="restarted static member's assignment")
    took = time.monotonic() - t0
    assert b2.assignment == b_parts, f"restarted static member got {b2.assignment}, had {b_parts}"
    assert took < session_ms / 1000, took
    # It consumes what was produced to its partitions while it was away (from b1's commits: none,
    # so from the beginning), and a was not rebalanced at all.
    wait_all_consumed([b2], [f"s{i}" for i in range(40) if f"{topic}:{i % 4}" in b_parts])
    assert a.assignment == split["a"]
    assert len(a.evs("assign_cb")) + len(a.evs("revoke_cb")) == a_events, \
        f"the other member was rebalanced: {a.evs('assign_cb')} {a.evs('revoke_cb')}"
    desc = b.admin().describe_consumer_groups([group])[group].result(timeout=20)
    assert sorted(m.group_instance_id for m in desc.members) == ["static-a", "static-b"]
    assert desc.state.name == "STABLE"


def test_static_member_gone_past_session_timeout_is_replaced(broker_factory, topic, tmp_path, workers):
    session_ms = 3000
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 4)
    group = uid()
    parts = [f"{topic}:{p}" for p in range(4)]
    ws = [Worker("ck", b.bootstrap, [topic], group, tmp_path, session_ms=session_ms, instance=f"st-{i}") for i in range(2)]
    workers.extend(ws)
    stable_split(ws, parts, sizes=[2, 2])
    t0 = time.monotonic()
    ws[1].kill()
    stable_split(ws[:1], parts, timeout=session_ms / 1000 + 30)
    assert time.monotonic() - t0 < session_ms / 1000 + 8


# ---------------------------------------------------------------------------------------------
# 7. Bad input on the raw wire
# ---------------------------------------------------------------------------------------------


def alive_check(broker, conn=None):
    """The broker still serves: ApiVersions on a new connection (and on `conn` if still open)."""
    with wire.Conn.to(broker.bootstrap) as c:
        err, apis = c.api_versions(0)
        assert err == 0 and wire.JOIN_GROUP in apis
    if conn is not None:
        err, _ = conn.api_versions(0)
        assert err == 0
    assert broker.alive()


def join_member(c, group, session_ms=6000):
    """JoinGroup (with the MEMBER_ID_REQUIRED round trip) as the only member; returns the
    response dict."""
    r = c.join_group(group, session_ms=session_ms)
    if r["error_code"] == MEMBER_ID_REQUIRED:
        r = c.join_group(group, session_ms=session_ms, member_id=r["member_id"])
    assert r["error_code"] == 0, r
    assert r["leader"] == r["member_id"]
    return r


@pytest.fixture
def wire_broker(broker_factory):
    return broker_factory(settings={**GROUP_SETTINGS, "offset.metadata.max.bytes": "100"})


def test_wire_offset_commit_unknown_group_with_generation(wire_broker, topic):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        assert c.create_topic(topic, 1)[0] == 0
        res = c.offset_commit(uid(), {(topic, 0): (5, None)}, generation=3, member_id="nobody")
        assert set(res.values()) <= {ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID} and len(res) == 1, res
        alive_check(b, c)
        # A simple commit (generation -1, no member) to the same kind of group works.
        g = uid()
        res = c.offset_commit(g, {(topic, 0): (5, "m")})
        assert res == {(topic, 0): 0}
        assert c.offset_fetch(g, [(topic, 0)]) == {(topic, 0): (5, "m", 0)}


def test_wire_offset_commit_stale_generation(wire_broker, topic):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        assert c.create_topic(topic, 1)[0] == 0
        g = uid()
        j = join_member(c, g)
        assert c.sync_group(g, j["generation_id"], j["member_id"], [(j["member_id"], b"")])["error_code"] == 0
        res = c.offset_commit(g, {(topic, 0): (1, None)}, generation=j["generation_id"] + 1, member_id=j["member_id"])
        assert res == {(topic, 0): ILLEGAL_GENERATION}, res
        res = c.offset_commit(g, {(topic, 0): (1, None)}, generation=j["generation_id"], member_id="stranger")
        assert res == {(topic, 0): UNKNOWN_MEMBER_ID}, res
        res = c.offset_commit(g, {(topic, 0): (1, None)}, generation=j["generation_id"], member_id=j["member_id"])
        assert res == {(topic, 0): 0}, res
        alive_check(b, c)


def test_wire_heartbeat_unknown_member(wire_broker):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        assert c.heartbeat(uid(), 1, "nobody") == UNKNOWN_MEMBER_ID
        g = uid()
        j = join_member(c, g)
        assert c.sync_group(g, j["generation_id"], j["member_id"], [(j["member_id"], b"")])["error_code"] == 0
        assert c.heartbeat(g, j["generation_id"], "nobody") == UNKNOWN_MEMBER_ID
        assert c.heartbeat(g, j["generation_id"] + 7, j["member_id"]) == ILLEGAL_GENERATION
        assert c.heartbeat(g, j["generation_id"], j["member_id"]) == 0
        alive_check(b, c)


def test_wire_sync_group_stale_generation(wire_broker):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        g = uid()
        j = join_member(c, g)
        r = c.sync_group(g, j["generation_id"] - 1, j["member_id"], [(j["member_id"], b"")])
        assert r["error_code"] == ILLEGAL_GENERATION, r
        r = c.sync_group(g, j["generation_id"] + 1, j["member_id"], [(j["member_id"], b"")])
        assert r["error_code"] == ILLEGAL_GENERATION, r
        r = c.sync_group(g, j["generation_id"], "stranger", [])
        assert r["error_code"] == UNKNOWN_MEMBER_ID, r
        r = c.sync_group(g, j["generation_id"], j["member_id"], [(j["member_id"], b"assignment")])
        assert r["error_code"] == 0 and r["assignment"] == b"assignment", r
        alive_check(b, c)


def test_wire_join_group_bad_session_timeout_and_group_id(wire_broker):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        r = c.join_group(uid(), session_ms=10)
        assert r["error_code"] == INVALID_SESSION_TIMEOUT, r
        alive_check(b, c)
        r = c.join_group(uid(), session_ms=10 ** 9)  # above group.max.session.timeout.ms
        assert r["error_code"] == INVALID_SESSION_TIMEOUT, r
        r = c.join_group("", session_ms=6000)
        assert r["error_code"] == INVALID_GROUP_ID, r
        alive_check(b, c)
        # The bad joins created no groups.
        assert c.list_groups() == (0, [])


def test_wire_offset_metadata_too_large(wire_broker, topic):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        assert c.create_topic(topic, 2)[0] == 0
        g = uid()
        res = c.offset_commit(g, {(topic, 0): (3, "x" * 101), (topic, 1): (4, "y" * 100)})
        assert res == {(topic, 0): OFFSET_METADATA_TOO_LARGE, (topic, 1): 0}, res
        fetched = c.offset_fetch(g, [(topic, 0), (topic, 1)])
        assert fetched[(topic, 1)] == (4, "y" * 100, 0)
        assert fetched[(topic, 0)][0] == -1, fetched
        alive_check(b, c)


def test_wire_leave_and_rejoin_bumps_generation(wire_broker):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        g = uid()
        j = join_member(c, g)
        assert c.sync_group(g, j["generation_id"], j["member_id"], [(j["member_id"], b"")])["error_code"] == 0
        assert c.leave_group(g, j["member_id"]) == 0
        assert c.heartbeat(g, j["generation_id"], j["member_id"]) == UNKNOWN_MEMBER_ID
        assert c.leave_group(g, j["member_id"]) == UNKNOWN_MEMBER_ID
        j2 = join_member(c, g)
        assert j2["generation_id"] > j["generation_id"]
        assert j2["member_id"] != j["member_id"]
        err, groups = c.list_groups()
        assert err == 0 and (g, "consumer") in groups, groups
        alive_check(b, c)


def test_wire_old_group_api_versions(wire_broker, topic):
    """The oldest versions of the group APIs (JoinGroup v0 without MEMBER_ID_REQUIRED or
    rebalance timeout, SyncGroup/Heartbeat/LeaveGroup v0, OffsetCommit v2 with retention time,
    OffsetFetch v1) still work end to end."""
    from kafka_wire import array, i16, i32, i64, nbytes, string

    b = wire_broker
    g = uid()
    with wire.Conn.to(b.bootstrap) as c:
        assert c.create_topic(topic, 1)[0] == 0
        meta = wire.consumer_subscription([topic])
        r = c.request(wire.JOIN_GROUP, 0, string(g) + i32(6000) + string("") + string("consumer")
                      + array([string("range") + nbytes(meta)]))
        err, gen, proto, leader, member = r.i16(), r.i32(), r.string(), r.string(), r.string()
        members = r.array(lambda rr: (rr.string(), rr.nbytes()))
        assert (err, proto) == (0, "range") and gen >= 1 and leader == member and member
        assert members == [(member, meta)]
        assignment = i16(0) + array([string(topic) + array([i32(0)])]) + nbytes(None)
        r = c.request(wire.SYNC_GROUP, 0, string(g) + i32(gen) + string(member)
                      + array([string(member) + nbytes(assignment)]))
        assert (r.i16(), r.nbytes()) == (0, assignment)
        r = c.request(wire.HEARTBEAT, 0, string(g) + i32(gen) + string(member))
        assert r.i16() == 0
        r = c.request(wire.OFFSET_COMMIT, 2, string(g) + i32(gen) + string(member) + i64(-1)
                      + array([string(topic) + array([i32(0) + i64(42) + string("old")])]))
        assert r.array(lambda rr: (rr.string(), rr.array(lambda x: (x.i32(), x.i16())))) == [(topic, [(0, 0)])]
        r = c.request(wire.OFFSET_FETCH, 1, string(g) + array([string(topic) + array([i32(0)])]))
        got = r.array(lambda rr: (rr.string(), rr.array(lambda x: (x.i32(), x.i64(), x.string(), x.i16()))))
        assert got == [(topic, [(0, 42, "old", 0)])]
        r = c.request(wire.LEAVE_GROUP, 0, string(g) + string(member))
        assert r.i16() == 0
        r = c.request(wire.HEARTBEAT, 0, string(g) + i32(gen) + string(member))
        assert r.i16() == UNKNOWN_MEMBER_ID
        # The offsets stay with the now empty group.
        assert c.offset_fetch(g, [(topic, 0)]) == {(topic, 0): (42, "old", 0)}
        alive_check(b, c)


def test_wire_find_coordinator_batched_keys(wire_broker):
    """FindCoordinator v4 (flexible) with several group keys in one request."""
    from kafka_wire import EMPTY_TAGS, compact_array, compact_string, i8

    b = wire_broker
    keys = [uid(), uid(), uid()]
    with wire.Conn.to(b.bootstrap) as c:
        body = i8(0) + compact_array([compact_string(k) for k in keys]) + EMPTY_TAGS
        r = c.request(wire.FIND_COORDINATOR, 4, body, flexible_header=True)
        r.tags()  # response header v1
        r.i32()  # throttle

        def coord(rr):
            out = (rr.compact_string(), rr.i32(), rr.compact_string(), rr.i32(), rr.i16(), rr.compact_string())
            rr.tags()
            return out

        got = r.compact_array(coord)
        assert sorted(k for k, *_ in got) == sorted(keys)
        for key, node, host, port, err, _msg in got:
            assert (node, host, port, err) == (0, "127.0.0.1", b.port, 0), (key, node, host, port, err)
        # v0 (one key, non-flexible) answers the same coordinator.
        r = c.request(wire.FIND_COORDINATOR, 0, wire.string(keys[0]))
        assert (r.i16(), r.i32(), r.string(), r.i32()) == (0, 0, "127.0.0.1", b.port)
        alive_check(b, c)


def test_readme_contains_the_group_consumer_verbatim():
    from conftest import ROOT

    assert QUICKSTART_CONSUMER in (ROOT / "README.md").read_text(), \
        "README.md does not contain the issue's group consumer snippet verbatim"


def test_wire_rebalance_timeout_removes_member_that_does_not_rejoin(wire_broker):
    """A stable member that keeps heartbeating but does not rejoin a rebalance is dropped after its
    rebalance timeout; the joining member then completes the join alone."""
    b = wire_broker
    g = uid()
    with wire.Conn.to(b.bootstrap) as a, wire.Conn.to(b.bootstrap, timeout=30) as bc:
        ja = a.join_group(g, session_ms=30000, rebalance_ms=2000)
        ja = a.join_group(g, session_ms=30000, rebalance_ms=2000, member_id=ja["member_id"])
        assert ja["error_code"] == 0, ja
        assert a.sync_group(g, ja["generation_id"], ja["member_id"], [(ja["member_id"], b"")])["error_code"] == 0
        first = bc.join_group(g, session_ms=30000, rebalance_ms=2000)
        assert first["error_code"] == MEMBER_ID_REQUIRED
        result = {}

        def join_b():
            t0 = time.monotonic()
            result["resp"] = bc.join_group(g, session_ms=30000, rebalance_ms=2000, member_id=first["member_id"])
            result["took"] = time.monotonic() - t0

        t = threading.Thread(target=join_b, daemon=True)
        t.start()
        # The stable member learns about the rebalance from its heartbeat, and ignores it.
        wait_until(lambda: a.heartbeat(g, ja["generation_id"], ja["member_id"]) == REBALANCE_IN_PROGRESS,
                   timeout=10, interval=0.1, msg="REBALANCE_IN_PROGRESS on heartbeat")
        t.join(timeout=25)
        assert not t.is_alive(), "JoinGroup never completed"
        jb = result["resp"]
        assert jb["error_code"] == 0, jb
        assert jb["leader"] == jb["member_id"] == first["member_id"]
        assert [m for m, _, _ in jb["members"]] == [jb["member_id"]]
        assert jb["generation_id"] > ja["generation_id"]
        assert result["took"] >= 1.0, f"the join did not wait for the other member ({result['took']:.2f}s)"
        assert a.heartbeat(g, ja["generation_id"], ja["member_id"]) == UNKNOWN_MEMBER_ID
        alive_check(b, a)


def test_wire_session_timeout_expires_silent_member(wire_broker):
    b = wire_broker  # group.min.session.timeout.ms=1000
    g = uid()
    with wire.Conn.to(b.bootstrap) as c:
        j = join_member(c, g, session_ms=1000)
        assert c.sync_group(g, j["generation_id"], j["member_id"], [(j["member_id"], b"")])["error_code"] == 0
        t0 = time.monotonic()
        # Watch the group without touching the member (a heartbeat would keep it alive).
        wait_until(lambda: b.admin().describe_consumer_groups([g])[g].result(timeout=10).state.name == "EMPTY",
                   timeout=15, interval=0.2, msg="the silent member expired")
        assert time.monotonic() - t0 >= 0.8
        assert c.heartbeat(g, j["generation_id"], j["member_id"]) == UNKNOWN_MEMBER_ID
        alive_check(b, c)


def test_offsets_topic_is_internal_compacted_and_protected(broker_factory, topic):
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 1)
    g = uid()
    with wire.Conn.to(b.bootstrap) as c:
        assert c.offset_commit(g, {(topic, 0): (3, None)}) == {(topic, 0): 0}
    assert b.topics().get("__consumer_offsets") == list(range(5))
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource("topic", "__consumer_offsets")
    cfg = b.admin().describe_configs([res])[res].result(timeout=20)
    assert cfg["cleanup.policy"].value == "compact"
    from kafka.admin import KafkaAdminClient

    ka = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=20000)
    try:
        desc = ka.describe_topics(["__consumer_offsets"])
        assert desc[0]["is_internal"] is True, desc[0]
    finally:
        ka.close()
    # Clients cannot write to it or delete it.
    with wire.Conn.to(b.bootstrap) as c:
        res = c.produce("__consumer_offsets", 0, wire.record_batch([wire.Record(b"junk", key=b"junk")]))
        assert res["error_code"] == wire.INVALID_TOPIC_EXCEPTION, res
    with pytest.raises(KafkaException):
        b.admin().delete_topics(["__consumer_offsets"], operation_timeout=10)["__consumer_offsets"].result(timeout=20)
    assert b.topics().get("__consumer_offsets") == list(range(5))
    assert group_offsets(b, g) == {(topic, 0): (3, "")} or \
        {k: v[0] for k, v in group_offsets(b, g).items()} == {(topic, 0): 3}
    # The junk write did not break loading the groups: restart and read the offsets again.
    b.restart(clean=False)
    assert {k: v[0] for k, v in group_offsets(b, g).items()} == {(topic, 0): 3}


@pytest.mark.parametrize("kind", ["kp", "ck"], ids=["kafka-python", "confluent-kafka"])
def test_added_partitions_are_assigned(broker_factory, topic, tmp_path, workers, kind):
    """CreatePartitions on a subscribed topic: the leader notices on its metadata refresh (5 s in
    the workers), the group rebalances and the new partitions are consumed."""
    b = broker_factory(settings=GROUP_SETTINGS)
    create_topic(b, topic, 2)
    group = uid()
    ws = start_workers(workers, 2, kind, b.bootstrap, [topic], group, tmp_path)
    stable_split(ws, [f"{topic}:{p}" for p in range(2)], sizes=[1, 1])
    from confluent_kafka.admin import NewPartitions

    b.admin().create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=20)
    stable_split(ws, [f"{topic}:{p}" for p in range(4)], sizes=[2, 2], timeout=40)
    produce_confluent(b.bootstrap, topic, [{"value": f"n{i}".encode(), "partition": i % 4} for i in range(40)])
    wait_all_consumed(ws, [f"n{i}" for i in range(40)])
    assert sorted(consumed_values(ws)) == sorted(f"n{i}" for i in range(40))


def test_wire_commit_unknown_partition_and_fetch_unknown_group(wire_broker, topic):
    b = wire_broker
    with wire.Conn.to(b.bootstrap) as c:
        assert c.create_topic(topic, 1)[0] == 0
        g = uid()
        res = c.offset_commit(g, {(topic, 0): (1, None), (topic, 7): (1, None), (topic + "-nope", 0): (1, None)})
        assert res == {(topic, 0): 0, (topic, 7): 3, (topic + "-nope", 0): 3}, res
        assert c.offset_fetch(uid(), [(topic, 0)]) == {(topic, 0): (-1, None, 0)} or \
            c.offset_fetch(uid(), [(topic, 0)]) == {(topic, 0): (-1, "", 0)}
        assert c.offset_fetch(g) == {(topic, 0): (1, None, 0)} or c.offset_fetch(g) == {(topic, 0): (1, "", 0)}
        alive_check(b, c)
