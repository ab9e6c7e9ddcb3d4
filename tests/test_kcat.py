"""kcat 1.7.1 as Debian ships it (librdkafka 2.0.2). Old librdkafka misreads ApiVersions responses
that carry optional tagged fields Kafka itself leaves out, so this also checks that encoding: a
misread makes librdkafka fall back to ancient protocol versions or fail outright."""

import json
import re
import subprocess

from conftest import KCAT, run_kcat

BAD_SIGNS = [
    "ApiVersionRequest failed",
    "Protocol parse failure",
    "buffer underflow",
    "Unsupported ApiVersion",
    "falling back",
    "CORRUPT",
]


def assert_clean_protocol(stderr: bytes):
    text = stderr.decode(errors="replace")
    bad = [line for line in text.splitlines() if any(s.lower() in line.lower() for s in BAD_SIGNS)]
    assert not bad, "librdkafka protocol trouble:\n" + "\n".join(bad[:20])


def kcat_api_versions_debug(broker):
    """kcat -L with protocol debugging: librdkafka logs the ApiVersions it parsed."""
    return run_kcat("-L", "-b", broker.bootstrap, "-m", "15", "-d", "protocol,broker,feature")


def test_metadata_listing(broker, topic):
    run_kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", input=b"one\n")
    p = run_kcat("-L", "-b", broker.bootstrap, "-t", topic, "-m", "15")
    out = p.stdout.decode()
    assert "1 brokers:" in out, out
    assert re.search(rf"broker 0 at 127\.0\.0\.1:{broker.port}", out), out
    assert f'topic "{topic}" with 1 partitions:' in out, out
    assert re.search(r"partition 0, leader 0, replicas: 0, isrs: 0", out), out

    pj = run_kcat("-L", "-J", "-b", broker.bootstrap, "-m", "15")
    md = json.loads(pj.stdout)
    assert [b["id"] for b in md["brokers"]] == [0]
    assert md["brokers"][0]["name"] == f"127.0.0.1:{broker.port}"
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics
    assert [p["partition"] for p in topics[topic]["partitions"]] == [0]


def test_api_versions_parsed_by_old_librdkafka(broker):
    p = kcat_api_versions_debug(broker)
    assert_clean_protocol(p.stderr)
    text = p.stderr.decode(errors="replace")
    # librdkafka logs "Broker API support:" then one line per API it understood.
    assert "ApiVersion" in text, text[-3000:]
    for api in ("Produce", "Fetch", "Metadata", "ApiVersion"):
        assert re.search(rf"ApiKey {api} \(\d+\) Versions", text), f"{api} not in parsed ApiVersions:\n{text[-3000:]}"


def test_produce_with_keys_and_consume(broker, topic):
    lines = [f"key{i}:value {i}" for i in range(100)]
    p = run_kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K:", "-p", "0", "-d", "protocol",
                 input=("\n".join(lines) + "\n").encode())
    assert_clean_protocol(p.stderr)
    c = run_kcat("-C", "-b", broker.bootstrap, "-t", topic, "-e", "-o", "beginning", "-f", "%k|%s|%o\n",
                 "-d", "protocol")
    assert_clean_protocol(c.stderr)
    got = c.stdout.decode().splitlines()
    assert got == [f"key{i}|value {i}|{i}" for i in range(100)]


def test_consume_last_two(broker, topic):
    run_kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0",
             input=b"".join(b"m%d\n" % i for i in range(10)))
    c = run_kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-e", "-o", "-2")
    assert c.stdout.splitlines() == [b"m8", b"m9"]
    # and an absolute offset
    c = run_kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-e", "-o", "5")
    assert c.stdout.splitlines() == [b"m%d" % i for i in range(5, 10)]


def test_compressed_produce(broker, topic):
    for i, codec in enumerate(("gzip", "snappy", "lz4", "zstd")):
        run_kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-z", codec,
                 input=b"".join(b"%s-%d\n" % (codec.encode(), j) for j in range(50)))
    c = run_kcat("-C", "-b", broker.bootstrap, "-t", topic, "-e", "-o", "beginning")
    want = [b"%s-%d" % (codec.encode(), j) for codec in ("gzip", "snappy", "lz4", "zstd") for j in range(50)]
    assert c.stdout.splitlines() == want


def test_consume_waits_for_new_data(broker, topic):
    """-C without -e long-polls; a record produced meanwhile arrives (Fetch woken by the append)."""
    run_kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", input=b"first\n")
    proc = subprocess.Popen([KCAT, "-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", "beginning",
                             "-c", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        run_kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", input=b"second\n")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == [b"first", b"second"]
