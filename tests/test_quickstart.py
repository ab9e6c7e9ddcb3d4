"""The README's quick start, unchanged except for the broker address, then read back with three
different clients (kafka-python, confluent-kafka/librdkafka, kcat)."""

import subprocess
import sys

import pytest

from conftest import ROOT, consume_confluent, consume_kafka_python, run_kcat

# Exactly the code from the README's quick start.
QUICKSTART = """\
from kafka import KafkaProducer
producer = KafkaProducer(bootstrap_servers='localhost:9092')
producer.send('test_topic', b'hello world')
producer.flush()
producer.close()
"""


def run_quickstart(address: str):
    code = QUICKSTART.replace("localhost:9092", address)
    assert code != QUICKSTART or address == "localhost:9092"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"quick start failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_quickstart_then_read_back_with_three_clients(broker, host):
    run_quickstart(f"{host}:{broker.port}")

    # kafka-python, assigned partition 0, from the beginning.
    recs = consume_kafka_python(broker.bootstrap, "test_topic", 0, count=1)
    assert [r.value for r in recs] == [b"hello world"]
    assert recs[0].offset == 0
    assert recs[0].key is None

    # confluent-kafka (librdkafka).
    msgs = consume_confluent(broker.bootstrap, "test_topic", 0, count=None)
    assert [m.value() for m in msgs] == [b"hello world"]
    assert msgs[0].offset() == 0

    # kcat (Debian's build of librdkafka).
    p = run_kcat("-C", "-b", broker.bootstrap, "-t", "test_topic", "-e", "-o", "beginning")
    assert p.stdout.splitlines() == [b"hello world"]


def test_quickstart_twice_appends(broker):
    run_quickstart(broker.bootstrap)
    run_quickstart(broker.bootstrap)
    recs = consume_kafka_python(broker.bootstrap, "test_topic", 0, count=2)
    assert [(r.offset, r.value) for r in recs] == [(0, b"hello world"), (1, b"hello world")]


def test_readme_contains_the_quickstart_verbatim():
    """The snippet tested above is the one users read."""
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing"
    assert QUICKSTART in readme.read_text(), "README.md does not contain the quick start snippet verbatim"
