"""Broker configuration with Kafka's names: --config FILE, SLUICE_* environment, --set (in that
order of precedence, flags last), and the settings taking effect."""

import os

import kafka_wire as wire
from conftest import consume_confluent, produce_confluent

UNKNOWN_TOPIC_OR_PARTITION = 3


def partitions_of(conn, topic, auto_create=True):
    md = conn.metadata([topic], allow_auto_create=auto_create)
    return md[topic]


def test_config_file_and_set_override(broker_factory, tmp_path, topic):
    props = tmp_path / "broker.properties"
    props.write_text("# Kafka-style properties\n"
                     "num.partitions=3\n"
                     "auto.create.topics.enable=true\n"
                     "message.max.bytes = 5000\n")
    b = broker_factory(extra_args=["--config", str(props), "--set", "num.partitions=2"])
    with wire.Conn.to(b.bootstrap) as c:
        # --set wins over the file for num.partitions
        code, parts = partitions_of(c, topic)
        assert code == 0 and sorted(parts) == [0, 1], (code, parts)
        # the file's message.max.bytes applies
        res = c.produce(topic, 0, wire.record_batch([wire.Record(b"x" * 8000)]))
        assert res["error_code"] == wire.MESSAGE_TOO_LARGE, res


def test_auto_create_disabled(broker_factory, topic):
    b = broker_factory(settings={"auto.create.topics.enable": "false"})
    with wire.Conn.to(b.bootstrap) as c:
        code, _parts = partitions_of(c, topic)
        assert code == UNKNOWN_TOPIC_OR_PARTITION
        assert topic not in c.metadata(None)
        assert c.create_topic(topic, partitions=2)[0] == 0
        code, parts = partitions_of(c, topic)
        assert code == 0 and sorted(parts) == [0, 1]


def test_num_partitions_default(broker_factory, topic):
    b = broker_factory(settings={"num.partitions": "4"})
    with wire.Conn.to(b.bootstrap) as c:
        code, parts = partitions_of(c, topic)
        assert code == 0 and sorted(parts) == [0, 1, 2, 3]


def test_environment_variables(broker_factory, topic, monkeypatch):
    monkeypatch.setenv("SLUICE_NUM_PARTITIONS", "5")
    b = broker_factory()
    with wire.Conn.to(b.bootstrap) as c:
        code, parts = partitions_of(c, topic)
        assert code == 0 and sorted(parts) == [0, 1, 2, 3, 4]


def test_sync_flush_policy_round_trip(broker_factory, topic):
    b = broker_factory(settings={"log.flush.policy": "sync"})
    reports = produce_confluent(b.bootstrap, topic, [{"value": b"v%d" % i, "partition": 0} for i in range(2000)],
                                conf={"acks": "all"})
    assert [r[2] for r in reports] == list(range(2000))
    b.kill()
    b.start()
    msgs = consume_confluent(b.bootstrap, topic, 0, count=None)
    assert [m.value() for m in msgs] == [b"v%d" % i for i in range(2000)]
    assert os.path.isdir(b.data_dir)
