"""With replication factor 3 and min.insync.replicas 2: one broker down still accepts acks=all
writes; two of three down make acks=all produce fail (NOT_ENOUGH_REPLICAS or a timeout, never a
success); when the two return, everything acknowledged before is still there, once, in order."""

from __future__ import annotations

import collections
import socket
import time

import pytest
from confluent_kafka import KafkaError, Producer

import kafka_wire as wire
from cluster import (NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT,
                     verify_acknowledged)
from conftest import produce_confluent, rdkafka_conf

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

# What a client may see for an acks=all write that cannot reach min.insync.replicas: the broker's
# NOT_ENOUGH_REPLICAS(_AFTER_APPEND) or REQUEST_TIMED_OUT, or librdkafka giving up on the message.
BROKER_REFUSALS = {NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT}
CLIENT_REFUSALS = {KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                   KafkaError.REQUEST_TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT}


def produce_acked(bootstrap, topic, seqs, timeout_s=40):
    """Idempotent acks=all writes of b"<seq>" to partition 0; asserts all acknowledged and returns
    [(partition, offset, value)]."""
    recs = [{"value": b"%d" % s, "partition": 0} for s in seqs]
    reports = produce_confluent(bootstrap, topic, recs, flush_timeout=timeout_s + 5, conf={
        "enable.idempotence": True, "acks": "all", "message.timeout.ms": timeout_s * 1000,
        "request.timeout.ms": 5000, "reconnect.backoff.max.ms": 1000})
    errors = [r for r in reports if r[0] is not None]
    assert not errors, f"{len(errors)} acks=all writes failed: {errors[:5]}"
    return [(p, off, r["value"]) for (_err, p, off), r in zip(reports, recs)]


def test_not_enough_replicas(make_cluster, topic):
    c = make_cluster(3, {"min.insync.replicas": 2})
    c.create_topic(topic, 1, 3, config={"min.insync.replicas": "2"})
    acked = produce_acked(c.bootstrap_servers(), topic, range(0, 300))

    leader = c.leader_of(topic, 0)
    assert leader >= 0
    followers = [i for i in range(3) if i != leader]

    # One follower down: two in-sync replicas remain, acks=all writes still succeed.
    c.kill(followers[0])
    acked += produce_acked(c.bootstrap_servers(), topic, range(300, 600))

    # The other follower down too: only the leader is left.
    c.kill(followers[1])
    survivor = c[leader]

    # On the wire, straight to the leader: an error code (or no answer at all), never success.
    t0 = time.monotonic()
    try:
        with wire.Conn.to(survivor.bootstrap, timeout=15) as conn:
            res = conn.produce(topic, 0, wire.record_batch([wire.Record(b"raw-refused")]), acks=-1,
                               timeout_ms=3000)
        outcome = f"error code {res['error_code']}"
        assert res["error_code"] in BROKER_REFUSALS, (
            f"acks=all produce with 1 of 3 replicas alive (min.insync.replicas=2) answered {res}, want one of "
            f"{sorted(BROKER_REFUSALS)} (NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT)")
    except (socket.timeout, TimeoutError):
        outcome = "no answer within 15 s"
    print(f"raw acks=all produce to broker{leader} with 2 of 3 brokers down: {outcome} "
          f"after {time.monotonic() - t0:.1f}s")

    # Through librdkafka (no idempotence, so a refused write is just a failed delivery): every
    # write fails with NOT_ENOUGH_REPLICAS or a timeout.
    p = Producer(rdkafka_conf({"bootstrap.servers": c.bootstrap_servers(), "acks": "all",
                               "enable.idempotence": False, "message.timeout.ms": 8000,
                               "request.timeout.ms": 3000, "linger.ms": 0}))
    results = []
    for i in range(20):
        p.produce(topic, b"refused-%d" % i, partition=0,
                  on_delivery=lambda err, msg: results.append((err, msg.offset())))
    assert p.flush(30) == 0
    kinds = collections.Counter(err.name() if err else "DELIVERED" for err, _ in results)
    print(f"librdkafka acks=all with 2 of 3 brokers down: {dict(kinds)}")
    assert len(results) == 20
    assert all(err is not None for err, _ in results), f"acks=all writes succeeded with 1 replica alive: {kinds}"
    assert {err.code() for err, _ in results} <= CLIENT_REFUSALS, kinds

    # Both come back (together: the metadata quorum needs a majority); nothing acknowledged is lost.
    c.start_many(followers)
    c.wait_all_ready(60)
    c.wait_topic_healthy(topic, 1, 3, 30)
    acked += produce_acked(c.bootstrap_servers(), topic, range(600, 700))
    res = verify_acknowledged(c, topic, 1, acked, label="not enough replicas")
    assert res.acknowledged == 700
