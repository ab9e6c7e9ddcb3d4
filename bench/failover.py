#!/usr/bin/env python3
"""Leader failover time: from the SIGKILL of a partition leader to the first successful acks=all
produce on the partitions it led.

Starts a 3-broker cluster from the release binary on loopback (free ports, a temporary
directory, default settings plus min.insync.replicas=2; --set adds or overrides settings),
creates a topic with replication factor 3, min.insync.replicas 2 and --partitions partitions, and
runs a probe producer (confluent-kafka: idempotent, acks=all, linger.ms=0, otherwise librdkafka's
defaults) that sends one record to every partition every --interval-ms.

Each trial waits until every broker's /readyz is 200, every partition is led with a full ISR and
the probe is acknowledged on every partition; SIGKILLs the leader of partition (trial mod
partitions); then measures, for each partition that broker led, the time from the SIGKILL to the
acknowledgement of the first record produced after the process was gone; and restarts the
broker. Prints every trial and min / median / max. Examples:

    bench/failover.py --trials 10
    bench/failover.py --trials 5 --set broker.session.timeout.ms=1000 --json

This is a measurement, not a test: it asserts nothing about the times (docs/benchmarks.md
records them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Probe:
    """One record per partition every `interval` seconds; records (produced_at, acked_at) of every
    acknowledged record per partition, in acknowledgement order."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, interval: float, rdkafka_conf):
        self.topic, self.partitions, self.interval = topic, partitions, interval
        self.conf = rdkafka_conf({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 0})
        self.acks: list[list[tuple[float, float]]] = [[] for _ in range(partitions)]
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="probe")
        self._exc: BaseException | None = None

    def start(self) -> "Probe":
        self._thread.start()
        return self

    def _run(self):
        from confluent_kafka import Producer

        try:
            p = Producer(self.conf)
            seq = 0
            next_round = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_round:
                    for part in range(self.partitions):
                        p.produce(self.topic, b"%d" % seq, partition=part, on_delivery=self._callback(part, now))
                        seq += 1
                    next_round += self.interval
                    if next_round < now:  # fell behind (e.g. a full queue): do not burst
                        next_round = now + self.interval
                p.poll(min(0.001, max(0.0, next_round - time.monotonic())))
            p.flush(5)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self._exc = e

    def _callback(self, part: int, produced_at: float):
        def cb(err, _msg):
            if err is None:
                self.acks[part].append((produced_at, time.monotonic()))
            else:
                self.failed.append(f"partition {part}: {err}")
        return cb

    def check(self):
        if self._exc is not None:
            raise SystemExit(f"probe producer failed: {self._exc!r}")

    def first_ack_of_record_produced_after(self, part: int, t: float) -> float | None:
        """When the first record produced at or after `t` on `part` was acknowledged, or None.
        Acknowledgements arrive in produce order (idempotent producer), so scan from the end."""
        first = None
        for produced_at, acked_at in reversed(self.acks[part]):
            if produced_at < t:
                break
            first = acked_at
        return first

    def stop(self):
        self._stop.set()
        self._thread.join(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=10.0, help="probe period per partition")
    ap.add_argument("--broker-bin", default=os.environ.get(
        "SLUICE_BROKER_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/sluice-broker")))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="broker setting for all three brokers (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (broker logs)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the results")
    args = ap.parse_args()

    # The harness reads the binary's path when it is imported.
    os.environ["SLUICE_BROKER_BIN"] = args.broker_bin
    sys.path.insert(0, str(ROOT / "tests"))
    import cluster as harness
    from conftest import rdkafka_conf

    if not Path(args.broker_bin).exists():
        raise SystemExit(f"{args.broker_bin} not found: cargo build --release -p sluice-broker")
    settings = {"min.insync.replicas": "2"}
    for kv in args.set:
        k, _, v = kv.partition("=")
        settings[k.strip()] = v
    tmp = Path(tempfile.mkdtemp(prefix="sluice-failover-"))
    c = harness.Cluster(3, tmp, settings)
    probe = None
    per_partition: list[float] = []  # the partition whose leader was chosen
    all_led: list[float] = []  # the slowest of the partitions the killed broker led
    try:
        c.start_all()
        c.wait_all_ready(60)
        topic = f"failover-{uuid.uuid4().hex[:8]}"
        c.create_topic(topic, args.partitions, 3, config={"min.insync.replicas": "2"})
        probe = Probe(c.bootstrap_servers(), topic, args.partitions, args.interval_ms / 1000, rdkafka_conf).start()
        import importlib.metadata

        import confluent_kafka

        print(f"cluster: 3 brokers ({args.broker_bin}), settings {settings}; topic rf=3, {args.partitions} partitions")
        print(f"probe: confluent-kafka {importlib.metadata.version('confluent-kafka')} / librdkafka "
              f"{confluent_kafka.libversion()[0]}, "
              f"idempotent acks=all linger.ms=0, one record per partition every {args.interval_ms:g} ms")

        def acked_everywhere_since(t):
            probe.check()
            return all(probe.first_ack_of_record_produced_after(p, t) is not None for p in range(args.partitions))

        for trial in range(args.trials):
            c.wait_all_ready(60)
            c.wait_topic_healthy(topic, args.partitions, 3, 60)
            t = time.monotonic()
            c.wait_until(lambda: acked_everywhere_since(t), 60, 0.01, msg="probe acknowledged on every partition")
            chosen = trial % args.partitions
            leaders = c.leaders(topic, args.partitions)
            victim = leaders[chosen]
            if victim < 0:
                raise SystemExit(f"partition {chosen} has no leader: {leaders}")
            led = sorted(p for p, l in leaders.items() if l == victim)
            t_kill = time.monotonic()
            c.kill(victim)
            t_gone = time.monotonic()
            times = {}

            def recovered():
                probe.check()
                for p in led:
                    if p not in times:
                        acked_at = probe.first_ack_of_record_produced_after(p, t_gone)
                        if acked_at is not None:
                            times[p] = acked_at - t_kill
                return len(times) == len(led)

            c.wait_until(recovered, 120, 0.005, msg=f"acks=all produce on partitions {led} after killing broker{victim}",
                         detail=lambda: c.describe([topic]))
            per_partition.append(times[chosen])
            all_led.append(max(times.values()))
            print(f"trial {trial + 1}: SIGKILL broker{victim} (leader of partitions {led}): partition {chosen} "
                  f"writable after {times[chosen]:.3f} s; all its partitions after {max(times.values()):.3f} s "
                  f"({', '.join(f'{p}: {v:.3f}' for p, v in sorted(times.items()))})", flush=True)
            c.start(victim)

        def stats(xs):
            return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}

        s1, s2 = stats(per_partition), stats(all_led)
        print(f"time to the first acks=all produce after killing the leader ({args.trials} trials): "
              f"min {s1['min']:.3f} s, median {s1['median']:.3f} s, max {s1['max']:.3f} s")
        print(f"  ... on every partition the killed broker led: "
              f"min {s2['min']:.3f} s, median {s2['median']:.3f} s, max {s2['max']:.3f} s")
        if probe.failed:
            print(f"note: {len(probe.failed)} probe deliveries failed, e.g. {probe.failed[:3]}")
        if args.json:
            print(json.dumps({"trials": args.trials, "partitions": args.partitions, "settings": settings,
                              "failover_s": s1, "all_led_partitions_s": s2,
                              "samples_s": [round(x, 3) for x in per_partition]}))
    finally:
        if probe is not None:
            probe.stop()
        problems = c.teardown()
        if problems:
            print("broker problems: " + "; ".join(problems), file=sys.stderr)
        if args.keep:
            print(f"broker logs kept in {c.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
