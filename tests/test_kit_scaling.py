"""Scaling end to end with the real binaries on the kit (local API server and kubelet,
sluice-operator, sluice-broker processes): KafkaCluster scale-up with a rebalance onto the new
brokers, scale-down that drains the brokers going away before the StatefulSet shrinks, a refused
scale-down below a topic's replication factor, KafkaTopic replica and partition changes, and an
operator killed in the middle of a drain. Every workflow runs under an acks=all produce load and
ends with every acknowledged record read back exactly once.

The operator's contract for `status.operation` (absent when nothing runs): kind, phase, started,
progress, message, fromReplicas, toReplicas.
  ScaleUp:   AddingBrokers -> Rebalancing -> gone once every broker's replica and preferred
             leader counts (all partitions of all topics, __consumer_offsets included) are
             within one of the mean.
  ScaleDown: Draining (StatefulSet not shrunk yet) -> RemovingBrokers -> Unregistering -> gone;
             Refused (Degraded, reason ScaleDownRefused) when a topic's replication factor
             does not fit in the new broker count.
Layouts are read with raw Metadata requests (cluster.metadata_request: the replica order as the
broker sends it, so the first replica is the preferred leader) to a broker that stays.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from cluster import ContinuousProducer, check_acknowledged, metadata_request, read_partitions
from conftest import rdkafka_conf
from kit import OPERATOR_NS, Kit, wait_for
from kitutil import INTERNAL_PORT, KC, WatchRecorder, condition, load_example, operator_kit, operator_pod

pytestmark = [pytest.mark.kit, pytest.mark.timeout(600)]

NS = "default"
CLUSTER = "demo"
STS = "demo-kafka"
OFFSETS = "__consumer_offsets"
KC_PATH = f"/apis/kafka.sluice.dev/v1alpha1/namespaces/{NS}/kafkaclusters"
STS_PATH = f"/apis/apps/v1/namespaces/{NS}/statefulsets"
POD_PATH = f"/api/v1/namespaces/{NS}/pods"


@pytest.fixture
def kit(request, tmp_path):
    yield from operator_kit(request, tmp_path)


# ---------------------------------------------------------------------------------------------
# Kubernetes side
# ---------------------------------------------------------------------------------------------


def get_kc(kit: Kit) -> dict:
    return kit.kube.get(KC, "kafkaclusters", CLUSTER, NS)


def operation_of(kc: dict) -> dict | None:
    return (kc.get("status") or {}).get("operation")


def sts_replicas(kit: Kit) -> int | None:
    sts = kit.kube.get("apps/v1", "statefulsets", STS, NS, ok_404=True)
    return sts and sts["spec"].get("replicas")


def pod_names(kit: Kit) -> set[str]:
    return {p["metadata"]["name"] for p in kit.kube.list("v1", "pods", NS)["items"]}


def broker_addr(kit: Kit, i: int) -> str:
    return f"{kit.pod_ip(NS, STS, i)}:{INTERNAL_PORT}"


def bootstrap_of(kit: Kit, replicas: int = 3) -> str:
    return ",".join(broker_addr(kit, i) for i in range(replicas))


def log_tail(kit: Kit, chars: int = 6000) -> str:
    try:
        return kit.operator_log()[-chars:]
    except OSError as e:
        return f"(no operator log: {e})"


def diag(kit: Kit, via=(0, 1, 2)) -> str:
    """Everything useful when a wait fails: the KafkaCluster status, the StatefulSet, the pods,
    the layout as a staying broker reports it, and the tail of the operator's log."""
    out = []
    try:
        out.append("KafkaCluster status: " + json.dumps(get_kc(kit).get("status"), indent=1, sort_keys=True))
    except Exception as e:  # noqa: BLE001 - diagnostics only
        out.append(f"KafkaCluster: {e!r}")
    try:
        sts = kit.kube.get("apps/v1", "statefulsets", STS, NS, ok_404=True)
        out.append(f"StatefulSet spec.replicas={sts and sts['spec'].get('replicas')} "
                   f"status={sts and json.dumps(sts.get('status'), sort_keys=True)}")
        out.append(f"pods: {sorted(pod_names(kit))}")
    except Exception as e:  # noqa: BLE001
        out.append(f"StatefulSet: {e!r}")
    try:
        md = cluster_metadata(kit, via)
        out.append(f"metadata via broker {md.via}: brokers {sorted(md.brokers)}; " + describe_load(md))
        moving = [f"{t}-{p}:{pm.replicas}/isr{pm.isr}" for (t, p), pm in partitions(md).items()
                  if len(pm.replicas) != len(set(pm.replicas)) or set(pm.isr) != set(pm.replicas)]
        if moving:
            out.append(f"partitions not fully in sync ({len(moving)}): {moving[:20]}")
    except Exception as e:  # noqa: BLE001
        out.append(f"metadata: {e!r}")
    out.append(f"metadata quorum: {quorum_voters(kit, via)}")
    out.append("operator log (tail):\n" + log_tail(kit))
    return "\n".join(out)


def wait(kit: Kit, cond, timeout: float, msg: str, interval: float = 0.5, via=(0, 1, 2)):
    """wait_for with the cluster's state and the operator log in the failure message."""
    try:
        return wait_for(cond, timeout=timeout, interval=interval, msg=msg)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diag(kit, via)}") from None


def create_cluster(kit: Kit, replicas: int, config: dict | None = None) -> dict:
    kc = load_example("kafkacluster.yaml")
    kc["spec"]["replicas"] = replicas
    if config:
        kc["spec"]["config"].update(config)
    kit.kube.create(kc, NS)
    return wait_cluster_settled(kit, replicas, timeout=180)


def wait_cluster_settled(kit: Kit, replicas: int, timeout: float) -> dict:
    """Ready with `replicas` ready brokers at the current generation, no operation running and
    the StatefulSet at `replicas`."""
    def settled():
        kc = get_kc(kit)
        st = kc.get("status") or {}
        c = condition(kc, "Ready")
        return (c and c["status"] == "True" and st.get("readyReplicas") == replicas
                and st.get("observedGeneration") == kc["metadata"]["generation"]
                and not st.get("operation") and sts_replicas(kit) == replicas) and kc
    return wait(kit, settled, timeout, f"KafkaCluster Ready with {replicas} brokers and no operation")


def scale(kit: Kit, replicas: int):
    kit.kube.patch(KC, "kafkaclusters", CLUSTER, {"spec": {"replicas": replicas}}, NS)


def topic_resource(name: str, partitions: int, replicas: int, config: dict | None = None) -> dict:
    return {"apiVersion": KC, "kind": "KafkaTopic", "metadata": {"name": name},
            "spec": {"cluster": CLUSTER, "partitions": partitions, "replicas": replicas,
                     "config": config or {}, "deletionPolicy": "Delete"}}


def wait_topic_synced(kit: Kit, name: str, partitions: int, replicas: int, timeout: float = 120) -> dict:
    """The KafkaTopic at its current generation: Ready, nothing moving, the wanted partition
    count and replication factor (Ready alone stays True while replicas move)."""
    def synced():
        kt = kit.kube.get(KC, "kafkatopics", name, NS)
        st = kt.get("status") or {}
        ready, progressing = condition(kt, "Ready"), condition(kt, "Progressing")
        return (ready and ready["status"] == "True"
                and st.get("observedGeneration") == kt["metadata"]["generation"]
                and not st.get("operation")
                and (progressing is None or progressing["status"] == "False")
                and st.get("partitions") == partitions and st.get("replicas") == replicas) and kt
    try:
        return wait_for(synced, timeout=timeout, interval=0.5,
                        msg=f"KafkaTopic {name} synced: {partitions} partitions, replication factor {replicas}")
    except AssertionError as e:
        kt = kit.kube.get(KC, "kafkatopics", name, NS)
        raise AssertionError(f"{e}\nKafkaTopic {name} status: {json.dumps(kt.get('status'), indent=1)}\n"
                             f"{diag(kit)}") from None


def operations(rec: WatchRecorder) -> list[tuple[float, dict]]:
    """(time, status.operation) of every recorded KafkaCluster event that carries one and that
    wrote the status: an event that only changed metadata (the kit's bootstrap annotation follows
    the StatefulSet's size) repeats an old status, not a new statement."""
    out, last = [], None
    for t, _type, obj in rec.events:
        if obj["metadata"]["name"] != CLUSTER:
            continue
        status = obj.get("status")
        if status == last:
            continue
        last = status
        op = operation_of(obj)
        if op:
            out.append((t, op))
    return out


def phase_sequence(rec: WatchRecorder) -> list[tuple[str, str]]:
    """(kind, phase) as recorded, consecutive repeats collapsed."""
    seq: list[tuple[str, str]] = []
    for _, op in operations(rec):
        step = (op.get("kind"), op.get("phase"))
        if not seq or seq[-1] != step:
            seq.append(step)
    return seq


def operation_log(rec: WatchRecorder) -> str:
    """Each distinct operation state recorded, in order (for failure messages)."""
    lines, last = [], None
    for t, op in operations(rec):
        step = (op.get("kind"), op.get("phase"), op.get("progress"), op.get("message"))
        if step != last:
            lines.append(f"  {t:.2f} {step[0]}/{step[1]} progress={step[2]!r} message={(step[3] or '')[:300]!r}")
            last = step
    return "\n".join(lines[-40:])


def sts_timeline(rec: WatchRecorder) -> list[tuple[float, int]]:
    return [(t, obj["spec"].get("replicas")) for t, _type, obj in rec.events if obj["metadata"]["name"] == STS]


SCALE_DOWN_PHASES = {"Draining", "RemovingBrokers", "MovingVoters", "Unregistering"}


def check_scale_down_phases(phases: list[str], ctx: str = ""):
    """Draining first and never again; then the StatefulSet shrinks (RemovingBrokers, with
    MovingVoters steps when metadata quorum voters sit on the removed brokers) and the
    brokers are unregistered."""
    assert set(phases) <= SCALE_DOWN_PHASES, f"unexpected phases: {phases}{ctx}"
    assert phases and phases[0] == "Draining" and "Draining" not in phases[1:], f"phases: {phases}{ctx}"
    assert "RemovingBrokers" in phases, f"phases: {phases}{ctx}"
    if "Unregistering" in phases:
        assert phases.index("Unregistering") > phases.index("RemovingBrokers"), f"phases: {phases}{ctx}"


def quorum_voters(kit: Kit, via=(0, 1, 2)) -> str:
    """The metadata quorum's voters and leader as a staying broker reports them (for the
    record: a scale-down has to move voters that sit on the removed brokers)."""
    import urllib.request

    for i in via:
        try:
            url = f"http://{kit.pod_ip(NS, STS, i)}:9644/internal/quorum/status"
            with urllib.request.urlopen(url, timeout=3) as r:
                st = json.loads(r.read())
            return f"voters {sorted(st.get('voters') or [])} leader {st.get('leader')}"
        except Exception as e:  # noqa: BLE001 - informational
            last = e
    return f"quorum status unavailable: {last!r}"


def topic_moves_started(kit: Kit) -> list[str]:
    """Reassignments the KafkaTopic controller started (operator log): none are expected while
    only the cluster scales (no KafkaTopic's spec.replicas changed)."""
    return [line[line.find("started moving replicas"):] for line in log_tail(kit, 10 ** 9).splitlines()
            if "started moving replicas" in line]


def check_operation_fields(rec: WatchRecorder, kind: str, from_replicas: int, to_replicas: int):
    ops = [op for _, op in operations(rec) if op.get("kind") == kind]
    assert ops, f"no status.operation of kind {kind} was ever recorded; sequence: {phase_sequence(rec)}"
    for op in ops:
        assert op.get("started"), f"operation without `started`: {op}"
        assert (op.get("fromReplicas"), op.get("toReplicas")) == (from_replicas, to_replicas), \
            f"want fromReplicas={from_replicas} toReplicas={to_replicas}: {op}"
    assert len({op["started"] for op in ops}) == 1, \
        f"`started` changed within one operation: {sorted({op['started'] for op in ops})}"


# ---------------------------------------------------------------------------------------------
# Kafka side: layouts from raw Metadata
# ---------------------------------------------------------------------------------------------


def cluster_metadata(kit: Kit, via=(0, 1, 2)):
    """Metadata (all topics, internal ones included) from the first of the `via` brokers that
    answers."""
    errors = []
    for i in via:
        try:
            return metadata_request(broker_addr(kit, i), via=i, timeout=5)
        except Exception as e:  # noqa: BLE001 - try the next broker
            errors.append(f"broker {i}: {e!r}")
    raise AssertionError(f"no metadata from brokers {list(via)}: {errors}")


def partitions(md) -> dict:
    """(topic, partition) -> PartitionMeta over every topic."""
    return {(t, p): pm for t, tm in md.topics.items() for p, pm in tm.partitions.items()}


def replicas_by_partition(md) -> dict:
    return {k: list(pm.replicas) for k, pm in partitions(md).items()}


def load(md, brokers) -> dict[str, dict[int, int]]:
    """Per-broker replicas, preferred leaders (first replica) and actual leaders, counted over
    every partition of every topic; anything on a broker outside `brokers` under key -1."""
    brokers = set(brokers)
    out = {k: {b: 0 for b in sorted(brokers)} for k in ("replicas", "preferred", "leaders")}

    def add(kind, b):
        key = b if b in brokers else -1
        out[kind][key] = out[kind].get(key, 0) + 1

    for pm in partitions(md).values():
        for r in pm.replicas:
            add("replicas", r)
        if pm.replicas:
            add("preferred", pm.replicas[0])
        add("leaders", pm.leader)
    return out


def describe_load(md, brokers=None) -> str:
    brokers = sorted(md.brokers) if brokers is None else list(brokers)
    lo = load(md, brokers)
    return (f"{len(partitions(md))} partitions in {sorted(md.topics)}; replicas per broker {lo['replicas']}, "
            f"preferred leaders {lo['preferred']}, leaders {lo['leaders']}")


def within_one_of_mean(counts: dict[int, int]) -> bool:
    if -1 in counts:
        return False
    mean = sum(counts.values()) / len(counts)
    return all(abs(c - mean) <= 1 for c in counts.values())


def replicas_on(md, ids) -> dict[int, int]:
    """Replicas held by each of `ids` (also partitions being moved off them)."""
    held = {i: 0 for i in ids}
    for pm in partitions(md).values():
        for r in pm.replicas:
            if r in held:
                held[r] += 1
    return held


def fully_replicated(md, rf_by_topic: dict[str, int] | None = None, only=None) -> list[str]:
    """Partitions (of the topics in `only`, default all) whose replica set is not settled
    (duplicates, ISR != replicas, no leader, or not the wanted replication factor): empty when
    all is well."""
    bad = []
    for (t, p), pm in partitions(md).items():
        if only is not None and t not in only:
            continue
        want = (rf_by_topic or {}).get(t)
        if (len(set(pm.replicas)) != len(pm.replicas) or set(pm.isr) != set(pm.replicas) or pm.leader < 0
                or (want is not None and len(pm.replicas) != want)):
            bad.append(f"{t}-{p}: replicas {pm.replicas} isr {pm.isr} leader {pm.leader}")
    return bad


class ShrinkProbe:
    """Acts on the StatefulSet watch: the moment spec.replicas first drops below `from_`, reads
    the metadata from the brokers that stay (0..to-1) and records how many replicas the removed
    brokers still hold (a broker stopping does not change replica lists, so this is what the
    operator left there when it shrank the StatefulSet)."""

    def __init__(self, kit: Kit, from_: int, to: int):
        self.kit, self.from_, self.to, self.removed = kit, from_, to, list(range(to, from_))
        self.replicas: int | None = None
        self.at: float | None = None
        self.held: dict[int, int] | None = None
        self.layout: str = ""

    def __call__(self, t: float, type_: str, obj: dict):
        if self.at is not None or obj["metadata"]["name"] != STS or type_ == "DELETED":
            return
        if (obj["spec"].get("replicas") or 0) >= self.from_:
            return
        self.at, self.replicas = t, obj["spec"].get("replicas")
        # A staying broker's metadata image can be a moment behind the one the operator read:
        # take the least any of them reports, asking again for up to a second.
        deadline = time.monotonic() + 1.0
        best = None
        while True:
            for i in range(self.to):
                try:
                    md = metadata_request(broker_addr(self.kit, i), via=i, timeout=3)
                except Exception:  # noqa: BLE001 - ask the next one
                    continue
                held = replicas_on(md, self.removed)
                if best is None or sum(held.values()) < sum(best.values()):
                    best, self.layout = held, f"via broker {i}: {describe_load(md, range(self.from_))}"
            if (best is not None and sum(best.values()) == 0) or time.monotonic() > deadline:
                break
        self.held = best


class MetadataSampler:
    """Samples, every `interval` seconds from a staying broker, how many replicas brokers `ids`
    hold: (time, {id: count})."""

    def __init__(self, kit: Kit, ids, via=(0, 1, 2), interval: float = 0.25):
        self.kit, self.ids, self.via, self.interval = kit, list(ids), via, interval
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="metadata-sampler")

    def start(self) -> "MetadataSampler":
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                md = cluster_metadata(self.kit, self.via)
                self.samples.append((time.monotonic(), replicas_on(md, self.ids)))
            except Exception:  # noqa: BLE001 - a gap in the samples
                pass
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(15)


class GroupConsumer:
    """A consumer in a consumer group (subscribe(), auto-commit) on a background thread,
    recording every value read and when each batch arrived."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.values: set[bytes] = set()
        self.read = 0
        self.batches: list[tuple[float, int]] = []  # (time, records)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="group-consumer")

    def start(self) -> "GroupConsumer":
        self._thread.start()
        return self

    def _run(self):
        from confluent_kafka import Consumer

        try:
            c = Consumer(rdkafka_conf({
                "bootstrap.servers": self.bootstrap, "group.id": self.group,
                "auto.offset.reset": "earliest", "enable.auto.commit": True, "auto.commit.interval.ms": 500,
                "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000, "socket.timeout.ms": 5000,
                "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 1000,
                "topic.metadata.refresh.interval.ms": 1000, "enable.partition.eof": False,
            }))
            try:
                c.subscribe([self.topic])
                while not self._stop.is_set():
                    n = 0
                    for m in c.consume(num_messages=1000, timeout=0.2):
                        if m.error():
                            if len(self.errors) < 200:
                                self.errors.append(f"{m.error().code()}:{m.error().str()}")
                            continue
                        self.values.add(m.value())
                        n += 1
                    if n:
                        self.read += n
                        self.batches.append((time.monotonic(), n))
            finally:
                c.close()
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self._exc = e

    def check(self):
        if self._exc is not None:
            raise AssertionError(f"group consumer failed: {self._exc!r}")

    def read_between(self, t0: float, t1: float) -> int:
        return sum(n for t, n in self.batches if t0 <= t <= t1)

    def longest_gap(self, t0: float, t1: float) -> float:
        """The longest time within [t0, t1] without a batch read."""
        times = [t0] + [t for t, _ in self.batches if t0 < t < t1] + [t1]
        return max(b - a for a, b in zip(times, times[1:]))

    def wait_progress(self, min_new: int, timeout: float, what: str = ""):
        base = self.read

        def ok():
            self.check()
            return self.read - base >= min_new
        try:
            wait_for(ok, timeout=timeout, interval=0.1, msg=f"group consumer reading {min_new} records {what}")
        except AssertionError as e:
            raise AssertionError(f"{e}; read {self.read - base}; errors: {self.errors[-5:]}") from None

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "group consumer did not stop"
        self.check()

    def close(self):
        self._stop.set()
        self._thread.join(15)


def assert_acked_read_once(bootstrap: str, topic: str, partitions_: int, acked, min_acked: int = 100):
    check = check_acknowledged(acked, read_partitions(bootstrap, topic, partitions_))
    print(f"{topic}: {check.line()}", flush=True)
    check.assert_ok()
    assert check.acknowledged >= min_acked, f"only {check.acknowledged} records acknowledged: {check.line()}"


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_scale_up_3_to_5_moves_replicas_and_leaders_onto_new_brokers(kit):
    create_cluster(kit, 3)
    bootstrap = bootstrap_of(kit, 3)
    kit.kube.create(topic_resource("grow", 6, 3), NS)
    wait_topic_synced(kit, "grow", 6, 3)
    kc_rec = WatchRecorder(kit.kube, KC_PATH)
    sts_rec = WatchRecorder(kit.kube, STS_PATH)
    producer = ContinuousProducer(bootstrap, "grow", 6, rate=250, conf={"acks": "all"}).start()
    consumer = GroupConsumer(bootstrap, "grow", f"scale-up-{uuid.uuid4().hex[:6]}").start()
    try:
        producer.wait_progress(20, timeout=30, what="before the scale-up")
        consumer.wait_progress(100, timeout=60, what="before the scale-up (group joined)")
        md = wait(kit, lambda: OFFSETS in cluster_metadata(kit).topics and cluster_metadata(kit), 30,
                  f"{OFFSETS} in the metadata (the consumer group uses it)")
        assert len(md.topics[OFFSETS].partitions) == 50, describe_load(md)

        t_patch = time.monotonic()
        scale(kit, 5)
        wait_cluster_settled(kit, 5, timeout=360)
        t_done = time.monotonic()
        print(f"scale-up took {t_done - t_patch:.1f}s; phases {phase_sequence(kc_rec)}", flush=True)

        consumer.check()
        during = consumer.read_between(t_patch, t_done)
        gap = consumer.longest_gap(t_patch, t_done)
        assert during > 0, f"the group consumer read nothing during the scale-up; errors {consumer.errors[-5:]}"
        assert gap < 45, f"the group consumer stalled for {gap:.1f}s during the scale-up; errors {consumer.errors[-5:]}"
        producer.wait_progress(20, timeout=60, what="after the scale-up")
        consumer.wait_progress(100, timeout=60, what="after the scale-up")

        # The layout the operation ended with: balanced replicas and preferred leaders over all
        # five brokers (a staying broker's metadata may be a moment behind the operator's view).
        def balanced():
            md = cluster_metadata(kit)
            lo = load(md, range(5))
            return (set(md.brokers) == set(range(5)) and within_one_of_mean(lo["replicas"])
                    and within_one_of_mean(lo["preferred"]) and not fully_replicated(md, {OFFSETS: 3, "grow": 3})
                    and md)
        md = wait(kit, balanced, 30, "replicas and preferred leaders within one of the mean on brokers 0..4, "
                  "every partition 3 replicas in sync")
        lo = load(md, range(5))
        assert lo["replicas"][3] > 0 and lo["replicas"][4] > 0, describe_load(md)
        assert lo["preferred"][3] > 0 and lo["preferred"][4] > 0, describe_load(md)
        # The data topic itself spreads, not only the (empty) offsets partitions: of its 18
        # replicas each new broker holds its share (3.6), within one.
        grow = {b: sum(1 for pm in md.topics["grow"].partitions.values() if b in pm.replicas) for b in range(5)}
        assert all(c >= 3 for c in grow.values()), f"replicas of grow per broker: {grow}"
        # Leadership follows the preferred leaders (the brokers' preferred-leader election).
        wait(kit, lambda: within_one_of_mean(load(cluster_metadata(kit), range(5))["leaders"]), 90,
             "actual leaders within one of the mean on brokers 0..4")
        producer.stop()
        # At least once for the group: it gets to everything acknowledged.
        acked_values = {v for _, _, v in producer.acked}
        wait(kit, lambda: (consumer.check(), acked_values <= consumer.values)[1], 60,
             f"the group consumer reading all {len(acked_values)} acknowledged records "
             f"(missing {len(acked_values - consumer.values)})")
        consumer.stop()
    finally:
        producer.close()
        consumer.close()
        kc_rec.stop()
        sts_rec.stop()

    assert_acked_read_once(bootstrap_of(kit, 5), "grow", 6, producer.acked)
    # The workflow's shape, last.
    seq = phase_sequence(kc_rec)
    assert seq == [("ScaleUp", "AddingBrokers"), ("ScaleUp", "Rebalancing")], \
        f"operation phases recorded: {seq}\noperations:\n{operation_log(kc_rec)}\n{log_tail(kit)}"
    check_operation_fields(kc_rec, "ScaleUp", 3, 5)
    # AddingBrokers means the StatefulSet has already grown.
    first_adding = next(t for t, op in operations(kc_rec) if op.get("phase") == "AddingBrokers")
    grown = [t for t, r in sts_timeline(sts_rec) if r == 5]
    assert grown and grown[0] <= first_adding + 1.0, \
        f"StatefulSet replicas over time {sts_timeline(sts_rec)}; AddingBrokers first seen at {first_adding}"
    assert not topic_moves_started(kit), \
        f"the KafkaTopic controller started reassignments during the rebalance: {topic_moves_started(kit)}"
    # Each distinct message is an Event of its own, not a count on the first one's series.
    notes = kc_event_notes(kit)
    assert {"3/3 brokers ready", "5/5 brokers ready"} <= set(notes.get("ClusterReady", [])), notes
    assert "brokers 3 -> 5" in notes.get("Scaled", []), notes
    # The moves gauge does not keep the finished operation's last figure.
    assert operator_metric(kit, "sluice_operator_partition_moves_pending", f'cluster="{NS}/{CLUSTER}"') == 0


def kc_event_notes(kit: Kit) -> dict[str, list[str]]:
    """The notes of the cluster's Events (events.k8s.io), by reason."""
    out: dict[str, list[str]] = {}
    for e in kit.kube.list("events.k8s.io/v1", "events", NS)["items"]:
        regarding = e.get("regarding") or {}
        if regarding.get("kind") == "KafkaCluster" and regarding.get("name") == CLUSTER:
            out.setdefault(e["reason"], []).append(e.get("note"))
    return out


def operator_metric(kit: Kit, name: str, labels: str) -> float | None:
    """A sample from the (leading) operator pod's /metrics."""
    import urllib.request

    ip = kit.pod_ip(OPERATOR_NS, operator_pod(kit))
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10) as r:
        text = r.read().decode()
    prefix = f"{name}{{{labels}}} "
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), None)


def test_scale_down_5_to_3_drains_first(kit):
    create_cluster(kit, 5)
    bootstrap = bootstrap_of(kit, 3)  # the brokers that stay
    kit.kube.create(topic_resource("shrink", 6, 3), NS)
    wait_topic_synced(kit, "shrink", 6, 3)
    md = cluster_metadata(kit)
    initially = sum(replicas_on(md, (3, 4)).values())
    assert initially > 0, f"brokers 3 and 4 hold nothing to drain: {describe_load(md)}"

    voters = quorum_voters(kit)
    print(f"before the scale-down: metadata quorum {voters}", flush=True)
    probe = ShrinkProbe(kit, 5, 3)
    sts_rec = WatchRecorder(kit.kube, STS_PATH, on_event=probe)
    kc_rec = WatchRecorder(kit.kube, KC_PATH)
    pod_rec = WatchRecorder(kit.kube, POD_PATH)
    sampler = MetadataSampler(kit, (3, 4)).start()
    producer = ContinuousProducer(bootstrap, "shrink", 6, rate=250, conf={"acks": "all"}).start()
    try:
        producer.wait_progress(20, timeout=30, what="before the scale-down")
        t_patch = time.monotonic()
        scale(kit, 3)
        wait_cluster_settled(kit, 3, timeout=360)
        wait(kit, lambda: not {f"{STS}-3", f"{STS}-4"} & pod_names(kit), 60, "pods 3 and 4 gone")
        producer.wait_progress(20, timeout=60, what="after the scale-down")
        producer.stop()
    finally:
        producer.close()
        sampler.stop()
        sts_rec.stop()
        kc_rec.stop()
        pod_rec.stop()

    seq = phase_sequence(kc_rec)
    print(f"phases {seq}; {len(sampler.samples)} metadata samples", flush=True)
    ctx = (f"\nphases: {seq}\noperations:\n{operation_log(kc_rec)}\nStatefulSet replicas: {sts_timeline(sts_rec)}\nquorum before: {voters}, "
           f"after: {quorum_voters(kit)}\n{log_tail(kit)}")
    assert not sts_rec.callback_errors, f"shrink probe failed: {sts_rec.callback_errors}"
    assert probe.at is not None, f"the StatefulSet was never seen shrinking{ctx}"
    assert probe.held is not None and sum(probe.held.values()) == 0, \
        f"when the StatefulSet shrank to {probe.replicas}, brokers 3 and 4 still held replicas {probe.held} " \
        f"({probe.layout}){ctx}"
    # The drain happened while the StatefulSet still had 5 replicas.
    before = [held for t, held in sampler.samples if t_patch <= t < probe.at]
    assert before and min(sum(h.values()) for h in before) < initially, \
        f"no metadata sample before the shrink shows replicas leaving brokers 3 and 4 " \
        f"(initially {initially}; samples {[sum(h.values()) for h in before][-20:]}){ctx}"
    assert all(r == 5 for t, r in sts_timeline(sts_rec) if t < probe.at), ctx
    steps = [r for _, r in sts_timeline(sts_rec)]
    assert steps == sorted(steps, reverse=True) and min(steps) == 3, f"StatefulSet replicas went {steps}{ctx}"
    # The pods went after the StatefulSet shrank, never before.
    deleted = {obj["metadata"]["name"]: t for t, type_, obj in pod_rec.events if type_ == "DELETED"}
    assert set(deleted) == {f"{STS}-3", f"{STS}-4"}, f"pods deleted: {deleted}{ctx}"
    assert min(deleted.values()) >= probe.at - 0.5, f"pods deleted at {deleted}, StatefulSet shrank at {probe.at}{ctx}"

    md = wait(kit, lambda: (lambda md: set(md.brokers) == {0, 1, 2} and not fully_replicated(md) and md)(
        cluster_metadata(kit)), 60, "brokers 0..2 only, every partition in sync")
    assert sum(replicas_on(md, (3, 4)).values()) == 0, describe_load(md)
    assert all(len(pm.replicas) == 3 for pm in partitions(md).values()), describe_load(md)
    assert_acked_read_once(bootstrap, "shrink", 6, producer.acked)

    # The workflow's shape, last (the data checks above say more when both fail).
    # Phases: Draining before the StatefulSet shrinks, then RemovingBrokers (and Unregistering).
    kinds = {k for k, _ in seq}
    assert kinds == {"ScaleDown"}, f"operation kinds: {kinds}{ctx}"
    check_scale_down_phases([p for _, p in seq], ctx)
    draining = [t for t, op in operations(kc_rec) if op.get("phase") == "Draining"]
    assert max(draining) <= probe.at, \
        f"status said Draining at {max(draining):.2f}, after the StatefulSet shrank at {probe.at:.2f}{ctx}"
    check_operation_fields(kc_rec, "ScaleDown", 5, 3)
    assert not topic_moves_started(kit), \
        f"the KafkaTopic controller started reassignments during the drain: {topic_moves_started(kit)}{ctx}"


def test_scale_down_below_replication_factor_is_refused(kit):
    create_cluster(kit, 3)
    bootstrap = bootstrap_of(kit, 3)
    kit.kube.create(topic_resource("wide", 3, 3), NS)
    wait_topic_synced(kit, "wide", 3, 3)
    layout = replicas_by_partition(cluster_metadata(kit))
    sts_rec = WatchRecorder(kit.kube, STS_PATH)
    pod_rec = WatchRecorder(kit.kube, POD_PATH)
    kc_rec = WatchRecorder(kit.kube, KC_PATH)
    producer = ContinuousProducer(bootstrap, "wide", 3, rate=200, conf={"acks": "all"}).start()
    try:
        producer.wait_progress(20, timeout=30, what="before the scale-down")
        scale(kit, 2)

        def refused():
            kc = get_kc(kit)
            op, deg = operation_of(kc), condition(kc, "Degraded")
            return (op and op.get("kind") == "ScaleDown" and op.get("phase") == "Refused"
                    and deg and deg["status"] == "True" and deg["reason"] == "ScaleDownRefused"
                    and kc["status"].get("observedGeneration") == kc["metadata"]["generation"]) and kc
        kc = wait(kit, refused, 60, "operation ScaleDown/Refused with Degraded=True (ScaleDownRefused)")
        op = operation_of(kc)
        message = op.get("message") or ""
        assert "wide" in message or OFFSETS in message, f"the message names no topic: {op}"
        assert "replication factor" in message.lower(), f"the message does not say why: {op}"
        assert (op.get("fromReplicas"), op.get("toReplicas")) == (3, 2), op
        assert sts_replicas(kit) == 3
        # Nothing moves while it is refused: the operator keeps reconciling (every couple of
        # seconds during an operation) while the producer writes ~600 more records.
        producer.wait_progress(200, timeout=60, what="while the scale-down is refused")
        assert sts_replicas(kit) == 3
        assert replicas_by_partition(cluster_metadata(kit)) == layout, "the layout changed while refused"
        assert operation_of(get_kc(kit)).get("phase") == "Refused"

        scale(kit, 3)
        kc = wait_cluster_settled(kit, 3, timeout=60)
        deg = condition(kc, "Degraded")
        assert deg is None or deg["status"] == "False", f"still Degraded: {deg}"
        producer.wait_progress(20, timeout=30, what="after setting replicas back")
        producer.stop()
    finally:
        producer.close()
        sts_rec.stop()
        pod_rec.stop()
        kc_rec.stop()
    assert all(r == 3 for _, r in sts_timeline(sts_rec)), f"StatefulSet replicas: {sts_timeline(sts_rec)}"
    assert not [obj["metadata"]["name"] for _, type_, obj in pod_rec.events if type_ == "DELETED"]
    assert replicas_by_partition(cluster_metadata(kit)) == layout, "the layout changed"
    assert {p for _, p in phase_sequence(kc_rec)} == {"Refused"}, phase_sequence(kc_rec)
    assert_acked_read_once(bootstrap, "wide", 3, producer.acked)


def test_topic_replicas_1_3_2_and_partitions_3_to_8_under_load(kit):
    create_cluster(kit, 3)
    bootstrap = bootstrap_of(kit, 3)
    # min.insync.replicas 1: the cluster default (2) cannot be met with one replica.
    kit.kube.create(topic_resource("elastic", 3, 1, config={"min.insync.replicas": "1"}), NS)
    wait_topic_synced(kit, "elastic", 3, 1)

    def topic_layout(partitions_: int, rf: int):
        def ok():
            md = cluster_metadata(kit)
            tm = md.topics.get("elastic")
            parts = tm and tm.partitions
            return (parts and len(parts) == partitions_ and not fully_replicated(md, {"elastic": rf}, only={"elastic"})
                    and all(pm.leader in pm.replicas for pm in parts.values()) and parts)
        return wait(kit, ok, 60, f"elastic: {partitions_} partitions, each {rf} distinct replicas, all in sync")

    first = ContinuousProducer(bootstrap, "elastic", 3, rate=250, conf={"acks": "all"}, name="first").start()
    second = None
    try:
        first.wait_progress(20, timeout=30, what="at replication factor 1")
        kit.kube.patch(KC, "kafkatopics", "elastic", {"spec": {"replicas": 3}}, NS)
        wait_topic_synced(kit, "elastic", 3, 3)
        topic_layout(3, 3)
        first.wait_progress(20, timeout=30, what="at replication factor 3")

        kit.kube.patch(KC, "kafkatopics", "elastic", {"spec": {"replicas": 2}}, NS)
        wait_topic_synced(kit, "elastic", 3, 2)
        topic_layout(3, 2)
        first.wait_progress(20, timeout=30, what="at replication factor 2")

        kit.kube.patch(KC, "kafkatopics", "elastic", {"spec": {"partitions": 8}}, NS)
        wait_topic_synced(kit, "elastic", 8, 2)
        parts = topic_layout(8, 2)
        leaders = {pm.leader for pm in parts.values()}
        assert len(leaders) >= 2, f"all 8 partitions led by {leaders}: {parts}"
        first.wait_progress(20, timeout=30, what="after growing to 8 partitions")
        first.stop()
        # The new partitions take writes too (values continue after the first producer's).
        second = ContinuousProducer(bootstrap, "elastic", 8, rate=250, conf={"acks": "all"}, name="second",
                                    seq_start=first.produced).start()
        second.wait_progress(20, timeout=60, what="on 8 partitions")
        second.stop()
    finally:
        first.close()
        if second is not None:
            second.close()
    assert all(first.acked_by_partition), first.summary()
    assert_acked_read_once(bootstrap, "elastic", 8, first.acked + second.acked)


# Few moves at a time, so the drain spans several reconciles.
@pytest.mark.operator_values("maxPartitionMoves=2")
def test_operator_killed_mid_drain_finishes_it(kit):
    create_cluster(kit, 5)
    bootstrap = bootstrap_of(kit, 3)
    kit.kube.create(topic_resource("drain", 12, 3), NS)
    wait_topic_synced(kit, "drain", 12, 3)
    voters = quorum_voters(kit)
    print(f"before the scale-down: metadata quorum {voters}", flush=True)
    probe = ShrinkProbe(kit, 5, 3)
    sts_rec = WatchRecorder(kit.kube, STS_PATH, on_event=probe)
    kc_rec = WatchRecorder(kit.kube, KC_PATH)
    producer = ContinuousProducer(bootstrap, "drain", 12, rate=300, conf={"acks": "all"}).start()
    try:
        producer.wait_progress(30, timeout=60, what="before the scale-down")
        scale(kit, 3)
        kc = wait(kit, lambda: (lambda kc: (operation_of(kc) or {}).get("phase") == "Draining" and kc)(get_kc(kit)),
                  90, "operation phase Draining", interval=0.1)
        before_kill = operation_of(kc)
        # Frozen (SIGSTOP) while the checks run, then SIGKILLed: its container restarts.
        pod = operator_pod(kit)
        kit.pause(OPERATOR_NS, pod)
        md = cluster_metadata(kit)
        held = replicas_on(md, (3, 4))
        assert sum(held.values()) > 0, \
            f"the drain finished before the operator was killed (make it slower): {describe_load(md)}"
        assert sts_replicas(kit) == 5, "the StatefulSet shrank before the drain was done"
        print(f"operator killed during {before_kill}; brokers 3 and 4 held {held}", flush=True)

        producer.wait_progress(20, timeout=30, what="while the operator is down")
        kit.kill(OPERATOR_NS, pod)
        wait_cluster_settled(kit, 3, timeout=420)
        wait(kit, lambda: not {f"{STS}-3", f"{STS}-4"} & pod_names(kit), 60, "pods 3 and 4 gone")
        producer.wait_progress(20, timeout=60, what="after the scale-down")
        producer.stop()
    finally:
        producer.close()
        sts_rec.stop()
        kc_rec.stop()

    ctx = (f"\nphases: {phase_sequence(kc_rec)}\noperations:\n{operation_log(kc_rec)}\nStatefulSet replicas: {sts_timeline(sts_rec)}\n"
           f"quorum before: {voters}, after: {quorum_voters(kit)}\n{log_tail(kit)}")
    assert probe.at is not None and probe.held is not None and sum(probe.held.values()) == 0, \
        f"when the StatefulSet shrank, brokers 3 and 4 still held {probe.held} ({probe.layout}){ctx}"
    md = wait(kit, lambda: (lambda md: set(md.brokers) == {0, 1, 2} and not fully_replicated(md) and md)(
        cluster_metadata(kit)), 60, "brokers 0..2 only, every partition in sync")
    assert sum(replicas_on(md, (3, 4)).values()) == 0, describe_load(md)
    assert_acked_read_once(bootstrap, "drain", 12, producer.acked)

    # The workflow's shape, last.
    assert operations(kc_rec)[-1][1]["started"] == before_kill["started"], \
        f"the restarted operator began a new operation instead of resuming: {before_kill} vs {operations(kc_rec)[-1]}"
    check_operation_fields(kc_rec, "ScaleDown", 5, 3)
    check_scale_down_phases([p for _, p in phase_sequence(kc_rec)], ctx)
    assert not topic_moves_started(kit), \
        f"the KafkaTopic controller started reassignments during the drain: {topic_moves_started(kit)}{ctx}"


def lease_holder(kit: Kit) -> str | None:
    lease = kit.kube.get("coordination.k8s.io/v1", "leases", "sluice-operator", OPERATOR_NS, ok_404=True)
    return lease and lease["spec"].get("holderIdentity")


@pytest.mark.operator_values("replicaCount=2", "maxPartitionMoves=2")
def test_standby_operator_takes_the_lease_and_finishes_a_scale_up(kit):
    """Two operator replicas from the chart (leader election on): the leader hangs in the middle
    of a rebalance, the standby takes the Lease and finishes the operation."""
    import contextlib

    create_cluster(kit, 3)
    kit.kube.create(topic_resource("handover", 12, 3), NS)
    wait_topic_synced(kit, "handover", 12, 3)
    pods = {p["metadata"]["name"] for p in kit.wait_operator_ready(2)}
    leader = wait(kit, lambda: lease_holder(kit) in pods and lease_holder(kit), 30, "a leader among the pods")
    standby = (pods - {leader}).pop()
    kc_rec = WatchRecorder(kit.kube, KC_PATH)
    try:
        scale(kit, 5)
        kc = wait(kit, lambda: (lambda kc: (operation_of(kc) or {}).get("phase") == "Rebalancing" and kc)(get_kc(kit)),
                  180, "operation phase Rebalancing", interval=0.1)
        started = operation_of(kc)["started"]
        # A leader that hangs (SIGSTOP) renews nothing: its Lease runs out and the standby takes it.
        kit.pause(OPERATOR_NS, leader)
        wait(kit, lambda: lease_holder(kit) == standby, 90, f"{standby} holding the Lease")
        wait_cluster_settled(kit, 5, timeout=360)
    finally:
        kc_rec.stop()
        with contextlib.suppress(KeyError):  # liveness may have restarted it already
            kit.resume(OPERATOR_NS, leader)
    ops = operations(kc_rec)
    assert ops and all(op["started"] == started for _, op in ops if op.get("kind") == "ScaleUp"), \
        f"the standby began a new operation instead of finishing the running one:\n{operation_log(kc_rec)}"
    check_operation_fields(kc_rec, "ScaleUp", 3, 5)
    md = cluster_metadata(kit)
    assert set(md.brokers) == set(range(5)) and within_one_of_mean(load(md, range(5))["replicas"]), describe_load(md)
