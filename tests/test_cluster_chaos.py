"""The cluster keeps every acknowledged record through broker crashes, a leader crash and a broker
frozen past its session timeout, while an idempotent acks=all producer writes continuously and a
consumer follows along.

One at a time, with the cluster back to fully ready (every broker's /readyz 200, every partition
led with a full ISR) and the producer making progress between steps:
  1. SIGKILL a broker that does not lead partition 0 (nor, when possible, is the controller),
     check the producer keeps going on every partition without it, restart it;
  2. SIGKILL the leader of partition 0, wait until another broker leads it and the producer keeps
     going, restart it;
  3. SIGSTOP the leader of partition 1 for at least twice broker.session.timeout.ms and until
     its partitions are led elsewhere, check the producer keeps going while it is frozen, SIGCONT.
Then every acknowledged record must be read back exactly once, at its acknowledged offset, in
produce order per partition; neither the final reader nor the consumer that followed the chaos
ever saw an offset go backwards (or had to reset its offset); no delivery failed.
"""

from __future__ import annotations

import time

import pytest

from cluster import verify_acknowledged

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

PARTITIONS = 3
SESSION_TIMEOUT_MS = 1500  # the default, set explicitly because step 3 depends on it


def test_cluster_chaos(make_cluster, topic):
    c = make_cluster(3, {"min.insync.replicas": 2, "broker.session.timeout.ms": SESSION_TIMEOUT_MS})
    c.create_topic(topic, PARTITIONS, 3, config={"min.insync.replicas": "2"})
    producer = c.producer(topic, PARTITIONS, rate=2000)
    tail = c.tail_consumer(topic, PARTITIONS)
    producer.wait_progress(100, timeout=30, what="before any fault")
    t_start = time.monotonic()

    def settle(step: str):
        c.wait_all_ready(60)
        c.wait_topic_healthy(topic, PARTITIONS, 3, 30)
        producer.wait_progress(50, timeout=30, what=f"after {step}")
        print(f"[{time.monotonic() - t_start:5.1f}s] {step}: recovered; {producer.summary()}", flush=True)

    def leader(p: int) -> int:
        return c.leader_of(topic, p)

    # 1. A non-leader broker crashes and comes back.
    leader0, controller = leader(0), c.wait_controller()
    assert leader0 >= 0, "partition 0 has no leader"
    candidates = [i for i in range(3) if i != leader0]
    victim = next((i for i in candidates if i != controller), candidates[0])
    c.kill(victim)
    print(f"step 1: SIGKILL broker{victim} (partition 0 led by broker{leader0}, controller broker{controller})")
    producer.wait_progress(50, timeout=30, what=f"with broker{victim} down")
    c.start(victim)
    settle(f"step 1 (broker{victim} killed and restarted)")

    # 2. The leader of partition 0 crashes and comes back.
    leader0 = leader(0)
    assert leader0 >= 0, "partition 0 has no leader"
    c.kill(leader0)
    print(f"step 2: SIGKILL broker{leader0}, leader of partition 0")
    new0 = c.wait_leader_change(topic, 0, leader0, 30)
    print(f"step 2: partition 0 now led by broker{new0}")
    producer.wait_progress(50, timeout=30, what=f"with broker{leader0} down")
    c.start(leader0)
    settle(f"step 2 (leader broker{leader0} killed and restarted)")

    # 3. A leader freezes (SIGSTOP) past its session timeout, then resumes.
    frozen = leader(1)
    assert frozen >= 0, "partition 1 has no leader"
    t0 = time.monotonic()
    c.pause(frozen)
    print(f"step 3: SIGSTOP broker{frozen}, leader of partition 1")

    def fenced_out():
        if time.monotonic() - t0 < 2 * SESSION_TIMEOUT_MS / 1000:
            return False
        leaders = c.leaders(topic, PARTITIONS)
        return all(l not in (-1, frozen) for l in leaders.values()) and leaders

    leaders = c.wait_until(fenced_out, 30, 0.1, msg=f"partitions led by brokers other than the frozen broker{frozen}",
                           detail=lambda: c.describe([topic]))
    producer.wait_progress(50, timeout=30, what=f"while broker{frozen} is frozen")
    frozen_for = time.monotonic() - t0
    c.resume(frozen)
    print(f"step 3: SIGCONT broker{frozen} after {frozen_for:.1f}s (leaders meanwhile: {leaders})")
    settle(f"step 3 (broker{frozen} frozen and resumed)")

    producer.stop(flush_timeout=60)
    print(producer.summary())
    assert not producer.failed, f"{len(producer.failed)} deliveries failed, e.g. {producer.failed[:5]}"
    verify_acknowledged(c, topic, PARTITIONS, producer.acked, tail, label="chaos")
