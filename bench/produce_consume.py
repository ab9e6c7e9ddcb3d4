#!/usr/bin/env python3
"""Produce then consume N records of a given size through librdkafka (confluent-kafka) and print
throughput (MB/s, records/s) for each phase.

Starts its own sluice-broker (release binary, free port, temporary data dir) unless --bootstrap
is given. Examples:

    bench/produce_consume.py --records 1000000 --size 100 --acks all
    bench/produce_consume.py --bootstrap 127.0.0.1:9092 --size 1024 --acks 1

MB here is 10^6 bytes of record values (keys: none; headers: none).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
READY_RE = re.compile(r"^sluice-broker ready kafka=(\S+) http=(\S+)\s*$")


def start_broker(binary: Path, data_dir: Path, settings: list[str], timeout: float = 60):
    cmd = [str(binary), "--data-dir", str(data_dir), "--listener", "127.0.0.1:0",
           "--http-listener", "127.0.0.1:0"]
    for s in settings:
        cmd += ["--set", s]
    stderr = open(data_dir.parent / "broker.stderr.log", "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"broker exited with {proc.wait()} before it was ready; see {stderr.name}")
        m = READY_RE.match(line.decode(errors="replace"))
        if m:
            return proc, m.group(1)
    proc.kill()
    raise SystemExit("broker not ready in time")


def produce(bootstrap, topic, n, size, acks, compression, partitions):
    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "enable.idempotence": acks == "all",
        "compression.type": compression,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
    })
    payload = (os.urandom(16).hex().encode() * (size // 32 + 1))[:size]
    errors = []
    delivered = [0]

    def cb(err, _msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[0] += 1

    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, partition=i % partitions, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        if i & 0x3FFF == 0:
            p.poll(0)
    left = p.flush(600)
    dt = time.perf_counter() - t0
    if left or errors:
        raise SystemExit(f"produce failed: {left} undelivered, {len(errors)} errors, first: {errors[:1]}")
    assert delivered[0] == n
    return dt


def consume(bootstrap, topic, n, partitions):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-bench-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "fetch.wait.max.ms": 100,
        "queued.min.messages": 1_000_000,
        # librdkafka's default 64 MiB prefetch queue stalls the fetcher with 1 KiB records
        # (measured: ~3x slower consume); allow up to 1 GiB of prefetched data.
        "queued.max.messages.kbytes": 1_048_576,
    })
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    nbytes = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 600
    while got < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"consume: only {got} of {n} records")
        for m in c.consume(num_messages=100_000, timeout=1.0):
            if m.error():
                raise KafkaException(m.error())
            got += 1
            nbytes += len(m.value())
    dt = time.perf_counter() - t0
    c.close()
    return dt, nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100, help="record value size in bytes")
    ap.add_argument("--acks", default="1", choices=["0", "1", "all"])
    ap.add_argument("--compression", default="none")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--broker-bin", default=os.environ.get(
        "SLUICE_BROKER_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/sluice-broker")))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="broker setting when the script starts the broker (repeatable)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the results")
    args = ap.parse_args()

    proc = None
    tmp = None
    bootstrap = args.bootstrap
    if not bootstrap:
        binary = Path(args.broker_bin)
        if not binary.exists():
            raise SystemExit(f"{binary} not found: cargo build --release -p sluice-broker (or pass --bootstrap)")
        tmp = tempfile.TemporaryDirectory(prefix="sluice-bench-")
        data = Path(tmp.name) / "data"
        data.mkdir()
        proc, bootstrap = start_broker(binary, data, args.set)
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
        admin.create_topics(
            [NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[topic].result(30)
        total = args.records * args.size
        p_dt = produce(bootstrap, topic, args.records, args.size, args.acks, args.compression, args.partitions)
        c_dt, c_bytes = consume(bootstrap, topic, args.records, args.partitions)
        assert c_bytes == total, (c_bytes, total)
        res = {
            "records": args.records, "size": args.size, "acks": args.acks, "compression": args.compression,
            "partitions": args.partitions,
            "produce_s": round(p_dt, 3), "produce_mb_s": round(total / p_dt / 1e6, 1),
            "produce_rec_s": round(args.records / p_dt),
            "consume_s": round(c_dt, 3), "consume_mb_s": round(total / c_dt / 1e6, 1),
            "consume_rec_s": round(args.records / c_dt),
        }
        print(f"records={args.records} size={args.size}B acks={args.acks} compression={args.compression} "
              f"partitions={args.partitions}")
        print(f"  produce: {res['produce_s']:8.2f} s  {res['produce_mb_s']:8.1f} MB/s  "
              f"{res['produce_rec_s']:>10,} records/s")
        print(f"  consume: {res['consume_s']:8.2f} s  {res['consume_mb_s']:8.1f} MB/s  "
              f"{res['consume_rec_s']:>10,} records/s")
        if args.json:
            print(json.dumps(res))
        sys.stdout.flush()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
