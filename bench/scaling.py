#!/usr/bin/env python3
"""Scaling under load: how long the operator takes to scale a cluster 3 -> 5 (rebalance onto the
new brokers) and 5 -> 3 (drain, then remove), how much data it moves, and what a producer sees
meanwhile.

Runs the real operator and brokers in the kit (tests/kit: the Kubernetes control plane on loopback,
pods as local processes, the operator from its chart). Creates `examples/kafkacluster.yaml` with 3 brokers, a KafkaTopic with
--partitions partitions and 3 replicas, preloads --preload-mb MB into it, then keeps an
acks=all idempotent producer (confluent-kafka, one --size B record every 1/--rate s) running
while it scales to 5 and back to 3. For each step it prints the wall time from the patch to the
operation's end, the partitions moved, the bytes the brokers copied to catch up
(sluice_replica_catch_up_bytes_total, summed), and the producer's acknowledgement latency
percentiles before and during the step. Examples:

    bench/scaling.py
    bench/scaling.py --preload-mb 200 --max-partition-moves 4 --json

This is a measurement, not a test: it asserts nothing about the figures (docs/benchmarks.md
records them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kit import Kit, wait_for  # noqa: E402
from kitutil import KC, load_example  # noqa: E402

NS = "default"
STS = "demo-kafka"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


class LatencyProducer:
    """acks=all idempotent records at a fixed rate; keeps (sent_at, latency) per acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, rate: float, size: int):
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 0, "message.timeout.ms": 120000})
        self.topic, self.interval, self.value = topic, 1.0 / rate, b"x" * size
        self.acks: list[tuple[float, float]] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "LatencyProducer":
        self._thread.start()
        return self

    def _run(self):
        next_at = time.monotonic()
        while not self._stop.is_set():
            sent = time.monotonic()

            def done(err, _msg, sent=sent):
                if err is None:
                    self.acks.append((sent, time.monotonic() - sent))
                else:
                    self.failed += 1
            self.producer.produce(self.topic, self.value, on_delivery=done)
            self.producer.poll(0)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        self.producer.flush(60)

    def latencies(self, t0: float, t1: float) -> list[float]:
        return sorted(lat for sent, lat in self.acks if t0 <= sent < t1)

    def stop(self):
        self._stop.set()
        self._thread.join(90)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def catch_up_bytes(kit: Kit, brokers) -> dict[int, int]:
    """sluice_replica_catch_up_bytes_total of each broker that answers."""
    out = {}
    for i in brokers:
        try:
            url = f"http://{kit.pod_ip(NS, STS, i)}:9644/metrics"
            with urllib.request.urlopen(url, timeout=3) as r:
                text = r.read().decode()
        except OSError:
            continue  # not started yet, or removed
        for line in text.splitlines():
            if line.startswith("sluice_replica_catch_up_bytes_total "):
                out[i] = int(float(line.split()[-1]))
    return out


def copied(before: dict[int, int], after: dict[int, int]) -> int:
    """Bytes copied between two readings, over the brokers in the second (a broker that did not
    exist at the first starts from zero)."""
    return sum(n - before.get(i, 0) for i, n in after.items())


def layout(bootstrap: str) -> dict:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {(t, p): list(pm.replicas) for t, tm in md.topics.items() for p, pm in tm.partitions.items()}


def settled(kit: Kit, replicas: int):
    kc = kit.kube.get(KC, "kafkaclusters", "demo", NS)
    st = kc.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
    sts = kit.kube.get("apps/v1", "statefulsets", STS, NS)
    return (ready.get("status") == "True" and st.get("readyReplicas") == replicas and not st.get("operation")
            and st.get("observedGeneration") == kc["metadata"]["generation"]
            and sts["spec"]["replicas"] == replicas)


def step(kit: Kit, producer: LatencyProducer, to: int, bootstrap: str, counters_on) -> dict:
    before_layout = layout(bootstrap)
    before_bytes = catch_up_bytes(kit, counters_on)
    t0 = time.monotonic()
    kit.kube.patch(KC, "kafkaclusters", "demo", {"spec": {"replicas": to}}, NS)
    phases = []

    def done():
        op = (kit.kube.get(KC, "kafkaclusters", "demo", NS).get("status") or {}).get("operation")
        if op and (not phases or phases[-1] != op["phase"]):
            phases.append(op["phase"])
        return settled(kit, to)
    wait_for(done, timeout=1800, interval=0.5, msg=f"scaled to {to}")
    t1 = time.monotonic()
    after_layout = layout(bootstrap)
    moved = sum(1 for k, r in after_layout.items() if before_layout.get(k) != r)
    return {"to": to, "seconds": round(t1 - t0, 1), "phases": phases, "partitions_moved": moved,
            "partitions": len(after_layout),
            "catch_up_mb": round(copied(before_bytes, catch_up_bytes(kit, counters_on)) / 1e6, 1),
            "p50_ms": round(percentile(producer.latencies(t0, t1), 50) * 1000, 1),
            "p99_ms": round(percentile(producer.latencies(t0, t1), 99) * 1000, 1),
            "max_ms": round(max(producer.latencies(t0, t1) or [float("nan")]) * 1000, 1),
            "baseline_p99_ms": round(percentile(producer.latencies(t0 - 20, t0), 99) * 1000, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--preload-mb", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200, help="records per second during the steps")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--max-partition-moves", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from confluent_kafka import Producer

    with tempfile.TemporaryDirectory(prefix="sluice-scaling-") as tmp:
        kit = Kit(Path(tmp) / "kit", binaries={"sluice-broker": str(TARGET / "release" / "sluice-broker"),
                                               "sluice-operator": str(TARGET / "release" / "sluice-operator")},
                  max_grace=30).start()
        try:
            kit.install_operator(f"maxPartitionMoves={args.max_partition_moves}")
            kc = load_example("kafkacluster.yaml")
            kc["spec"]["replicas"] = 3
            kit.kube.create(kc, NS)
            wait_for(lambda: settled(kit, 3), timeout=300, interval=0.5, msg="3 brokers ready")
            kit.kube.create({"apiVersion": KC, "kind": "KafkaTopic", "metadata": {"name": "load"},
                             "spec": {"cluster": "demo", "partitions": args.partitions, "replicas": 3}}, NS)
            bootstrap = ",".join(f"{kit.pod_ip(NS, STS, i)}:9092" for i in range(3))
            wait_for(lambda: len([k for k in layout(bootstrap) if k[0] == "load"]) == args.partitions,
                     timeout=120, msg="topic created")

            preload = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                                "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
            value = b"p" * 1024
            for i in range(args.preload_mb * 1000):
                while True:
                    try:
                        preload.produce("load", value, partition=i % args.partitions)
                        break
                    except BufferError:
                        preload.poll(0.05)
            assert preload.flush(300) == 0, "preload not acknowledged"

            producer = LatencyProducer(bootstrap, "load", args.rate, args.size).start()
            # The first seconds (connections, metadata) are not part of the baseline.
            wait_for(lambda: len(producer.acks) > args.rate * 30, timeout=180, msg="baseline latencies")
            up = step(kit, producer, 5, bootstrap, range(5))
            # A fresh 20 s latency baseline before the next step.
            t_up = time.monotonic()
            wait_for(lambda: len(producer.latencies(t_up, time.monotonic())) >= args.rate * 20, timeout=120,
                     interval=0.5, msg="baseline latencies after the scale-up")
            down = step(kit, producer, 3, bootstrap, range(5))
            producer.stop()
            results = {"preload_mb": args.preload_mb, "partitions": args.partitions,
                       "max_partition_moves": args.max_partition_moves, "rate": args.rate,
                       "failed_deliveries": producer.failed, "steps": [up, down]}
        finally:
            kit.stop(grace=5)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"preload {args.preload_mb} MB over {args.partitions} partitions (RF 3), "
              f"{args.rate:.0f} records/s of {args.size} B during the steps, "
              f"--max-partition-moves {args.max_partition_moves}; failed deliveries: {producer.failed}")
        for s in results["steps"]:
            print(f"-> {s['to']} brokers: {s['seconds']} s ({' -> '.join(s['phases'])}); "
                  f"{s['partitions_moved']}/{s['partitions']} partitions moved, {s['catch_up_mb']} MB copied; "
                  f"produce latency p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms "
                  f"(p99 before: {s['baseline_p99_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
