"""SIGTERM is a controlled shutdown: the broker hands leadership of its partitions to other
replicas before it exits (another broker's Metadata shows the new leaders while the process is
still alive), exits with code 0, and an idempotent acks=all producer keeps going without a
failed delivery; the broker then rejoins and nothing acknowledged is lost."""

from __future__ import annotations

import time

import pytest

import kafka_wire as wire
from cluster import STOP_TIMEOUT, verify_acknowledged

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

PARTITIONS = 3


def test_controlled_shutdown(make_cluster, topic):
    c = make_cluster(3, {"min.insync.replicas": 2})
    c.create_topic(topic, PARTITIONS, 3, config={"min.insync.replicas": "2"})
    producer = c.producer(topic, PARTITIONS, rate=2000)
    tail = c.tail_consumer(topic, PARTITIONS)
    producer.wait_progress(100, timeout=30, what="before the shutdown")

    # A partition leader that is not the controller: the others learn of the leadership change
    # from the controller, so what they show is what the cluster decided.
    controller = c.wait_controller()
    leaders = c.leaders(topic, PARTITIONS)
    candidates = sorted({l for l in leaders.values() if l >= 0 and l != controller})
    assert candidates, f"the controller broker{controller} leads every partition: {leaders}"
    victim = candidates[0]
    led = [p for p, l in leaders.items() if l == victim]
    observers = [i for i in range(3) if i != victim]
    print(f"SIGTERM broker{victim}, leader of partitions {led} (controller broker{controller})")

    t0 = time.monotonic()
    c.terminate(victim)
    moved_while_alive = None
    last_seen = {}
    while moved_while_alive is None and c[victim].alive():
        assert time.monotonic() - t0 < STOP_TIMEOUT, f"broker{victim} still running {STOP_TIMEOUT}s after SIGTERM"
        for i in observers:
            try:
                md = c.metadata(i, [topic], timeout=2)
            except (OSError, wire.Closed):
                continue
            parts = md.topics[topic].partitions
            now = {p: parts[p].leader for p in led}
            last_seen[i] = now
            # Checked after the answer: if the broker is still running now, it was running when
            # the observer answered.
            if all(l not in (-1, victim) for l in now.values()) and c[victim].alive():
                moved_while_alive = (time.monotonic() - t0, i, now)
                break
        time.sleep(0.002)  # poll interval
    rc = c.wait_exit(victim, STOP_TIMEOUT)
    exited_after = time.monotonic() - t0
    assert rc == 0, f"broker{victim} exited with {rc} after SIGTERM\n" + c[victim].stderr_tail(60)
    assert moved_while_alive is not None, (
        f"broker{victim} exited {exited_after:.2f}s after SIGTERM while still shown as leader; last views of "
        f"partitions {led}: {last_seen}")
    print(f"leadership moved {moved_while_alive[0]:.2f}s after SIGTERM (seen by broker{moved_while_alive[1]}: "
          f"{moved_while_alive[2]}), exit code {rc} at {exited_after:.2f}s")

    # The producer keeps going on every partition, including the ones the broker led.
    producer.wait_progress(100, timeout=30, what=f"after broker{victim}'s controlled shutdown")
    assert not producer.failed, f"deliveries failed: {producer.failed[:5]}"
    assert victim not in c.leaders(topic, PARTITIONS).values()

    c.start(victim)
    c.wait_all_ready(60)
    c.wait_topic_healthy(topic, PARTITIONS, 3, 30)
    producer.wait_progress(50, timeout=30, what=f"after broker{victim} rejoined")
    producer.stop(flush_timeout=60)
    print(producer.summary())
    assert not producer.failed, f"{len(producer.failed)} deliveries failed, e.g. {producer.failed[:5]}"
    verify_acknowledged(c, topic, PARTITIONS, producer.acked, tail, label="controlled shutdown")
