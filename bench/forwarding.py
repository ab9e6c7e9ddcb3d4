#!/usr/bin/env python3
"""The cost of the forwarding hop (issue 12): produce and consume throughput through the
forwarding listener of one broker versus directly to the partition leaders, same cluster, same
run, alternating.

Starts 3 brokers from the release binary on loopback (tests/cluster.py, free ports, a temporary
directory, default settings; --set adds or overrides settings), each with two listeners:
INTERNAL (inter-broker) and the forwarding listener LOCAL, every broker advertising the same LOCAL
address. For every round and mode it creates a fresh topic with --partitions partitions and
replication factor 3 whose leaders are spread over the three brokers (partition p led by broker
p % 3), produces --records records of --size bytes with librdkafka (confluent-kafka, the same
producer and consumer code as bench/produce_consume.py: linger.ms=5, idempotent for acks=all),
then consumes them from the beginning with assign(). Modes:

  direct      bootstrap from the INTERNAL listeners: the client talks to each leader itself.
  forwarding  bootstrap from the advertised LOCAL address: every request goes to broker 0, which
              serves its own partitions and forwards the others (2 of every 3) to their leaders.

--tunnel none (default): the LOCAL address every broker advertises is broker 0's LOCAL listener
itself, so nothing stands between the client and the forwarding broker: the figures are the
forwarding hop alone. --tunnel relay: it is a tests/relay.py TCP relay to broker 0 (what
`kubectl port-forward` is; a Python relay, so it costs throughput of its own).

Examples:
    bench/forwarding.py
    bench/forwarding.py --records 1000000 --size 100 --acks 1 --rounds 5
    bench/forwarding.py --tunnel relay --json

MB is 10^6 bytes of record values. This is a measurement, not a test: it asserts only that
every record was delivered and read back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=1024, help="record value size in bytes")
    ap.add_argument("--acks", action="append", choices=["1", "all"],
                    help="repeatable; default: 1 and all")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternating")
    ap.add_argument("--tunnel", choices=["none", "relay"], default="none")
    ap.add_argument("--broker-bin", default=os.environ.get(
        "SLUICE_BROKER_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/sluice-broker")))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="broker setting for all three brokers (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (broker logs)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the results")
    args = ap.parse_args()
    acks_list = args.acks or ["1", "all"]

    # The harness reads the binary's path when it is imported.
    os.environ["SLUICE_BROKER_BIN"] = args.broker_bin
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "bench"))
    import cluster as harness
    from produce_consume import consume, produce

    if not Path(args.broker_bin).exists():
        raise SystemExit(f"{args.broker_bin} not found: cargo build --release -p sluice-broker")
    settings = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        settings[k.strip()] = v
    tmp = Path(tempfile.mkdtemp(prefix="sluice-forwarding-bench-"))
    c = harness.Cluster(3, tmp, settings, forwarding=True, relay_to=0, tunnel=args.tunnel)
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        c.start_all()
        c.wait_all_ready(60)
        import importlib.metadata

        import confluent_kafka

        bootstraps = {"direct": c.bootstrap_servers(), "forwarding": c.relay_bootstrap}
        print(f"cluster: 3 brokers ({args.broker_bin}), settings {settings or 'default'}; "
              f"tunnel={args.tunnel}; forwarding address {c.relay_bootstrap} (broker 0)")
        print(f"client: confluent-kafka {importlib.metadata.version('confluent-kafka')} / librdkafka "
              f"{confluent_kafka.libversion()[0]}; {args.records} records x {args.size} B, "
              f"{args.partitions} partitions rf=3 led by brokers p % 3")
        total = args.records * args.size
        for acks in acks_list:
            for rnd in range(args.rounds):
                order = ["direct", "forwarding"] if rnd % 2 == 0 else ["forwarding", "direct"]
                for mode in order:
                    topic = f"fwd-bench-{mode}-{uuid.uuid4().hex[:8]}"
                    c.create_topic(topic, assignment=[[(p + k) % 3 for k in range(3)] for p in range(args.partitions)])
                    want = {p: p % 3 for p in range(args.partitions)}
                    c.wait_until(lambda: c.leaders(topic, args.partitions) == want, 30, 0.1,
                                 msg=f"{topic} led by brokers p % 3")
                    bootstrap = bootstraps[mode]
                    p_dt = produce(bootstrap, topic, args.records, args.size, acks, "none", args.partitions)
                    c_dt, c_bytes = consume(bootstrap, topic, args.records, args.partitions)
                    assert c_bytes == total, (c_bytes, total)
                    r = {"produce_mb_s": total / p_dt / 1e6, "produce_rec_s": args.records / p_dt,
                         "consume_mb_s": total / c_dt / 1e6, "consume_rec_s": args.records / c_dt}
                    results.setdefault((acks, mode), []).append(r)
                    print(f"acks={acks:<3} round {rnd + 1} {mode:<10} produce {r['produce_mb_s']:7.1f} MB/s "
                          f"{r['produce_rec_s']:>10,.0f} rec/s   consume {r['consume_mb_s']:7.1f} MB/s "
                          f"{r['consume_rec_s']:>10,.0f} rec/s", flush=True)
                    admin = c.admin()
                    admin.delete_topics([topic], operation_timeout=30)[topic].result(40)

        print("\nmedian of the rounds (min-max):")
        summary = {}
        for acks in acks_list:
            for mode in ("direct", "forwarding"):
                rs = results[(acks, mode)]
                row = {}
                for key in ("produce_mb_s", "produce_rec_s", "consume_mb_s", "consume_rec_s"):
                    xs = [r[key] for r in rs]
                    row[key] = {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1),
                                "max": round(max(xs), 1)}
                summary[f"acks={acks} {mode}"] = row
                print(f"  acks={acks:<3} {mode:<10} produce {row['produce_mb_s']['median']:7.1f} MB/s "
                      f"({row['produce_mb_s']['min']:.0f}-{row['produce_mb_s']['max']:.0f}) "
                      f"{row['produce_rec_s']['median']:>10,.0f} rec/s   "
                      f"consume {row['consume_mb_s']['median']:7.1f} MB/s "
                      f"({row['consume_mb_s']['min']:.0f}-{row['consume_mb_s']['max']:.0f}) "
                      f"{row['consume_rec_s']['median']:>10,.0f} rec/s")
            d, f = summary[f"acks={acks} direct"], summary[f"acks={acks} forwarding"]
            print(f"  acks={acks:<3} forwarding/direct: produce "
                  f"{f['produce_mb_s']['median'] / d['produce_mb_s']['median']:.2f}x, consume "
                  f"{f['consume_mb_s']['median'] / d['consume_mb_s']['median']:.2f}x")
        if args.json:
            print(json.dumps({"records": args.records, "size": args.size, "partitions": args.partitions,
                              "rounds": args.rounds, "tunnel": args.tunnel, "settings": settings,
                              "results": summary}))
    finally:
        problems = c.teardown()
        if problems:
            print("broker problems: " + "; ".join(problems), file=sys.stderr)
        if args.keep:
            print(f"broker logs kept in {c.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
