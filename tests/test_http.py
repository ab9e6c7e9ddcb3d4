"""The HTTP side port: /healthz, /readyz and Prometheus /metrics that move with traffic."""

from conftest import consume_confluent, metric_value, parse_prometheus, produce_confluent, wait_until


def test_health_and_readiness(broker):
    status, _ = broker.http_get("/healthz")
    assert status == 200
    status, body = broker.http_get("/readyz")
    assert status == 200, body
    status, _ = broker.http_get("/no-such-page")
    assert status == 404


def test_metrics_exposition(broker, topic):
    produce_confluent(broker.bootstrap, topic, [b"x"])
    status, text = broker.http_get("/metrics")
    assert status == 200
    samples = parse_prometheus(text)
    names = {n for n, _l, _v in samples}
    for want in ("sluice_requests_total", "sluice_bytes_in_total", "sluice_bytes_out_total", "sluice_partitions",
                 "sluice_log_size_bytes"):
        assert want in names or want.removesuffix("_total") in names, f"{want} missing; have {sorted(names)}"
    # a latency histogram by API
    buckets = [(n, l) for n, l, _v in samples if n.endswith("_bucket") and "api" in l and "le" in l]
    assert buckets, "no request latency histogram with api and le labels"
    assert any(l["api"] == "Produce" for _n, l in buckets)
    assert "# TYPE" in text


def test_metrics_move_with_traffic(broker, topic):
    produce_confluent(broker.bootstrap, topic, [b"warm-up"], conf={"acks": "all"})
    m0 = broker.metrics()
    produce_before = metric_value(m0, "sluice_requests_total", api="Produce")
    bytes_in_before = metric_value(m0, "sluice_bytes_in_total")
    bytes_out_before = metric_value(m0, "sluice_bytes_out_total")
    size_before = metric_value(m0, "sluice_log_size_bytes")

    payload = [b"m" * 1000 for _ in range(500)]
    produce_confluent(broker.bootstrap, topic, [{"value": v, "partition": 0} for v in payload],
                      conf={"acks": "all"})
    # counters are bumped around the response, so poll briefly instead of reading once
    def moved():
        m1 = broker.metrics()
        return (metric_value(m1, "sluice_requests_total", api="Produce") > produce_before
                and metric_value(m1, "sluice_bytes_in_total") >= bytes_in_before + 500 * 1000
                and metric_value(m1, "sluice_log_size_bytes") >= size_before + 500 * 1000)

    wait_until(moved, 10, 0.1, "Produce requests, bytes in and log size to grow")

    msgs = consume_confluent(broker.bootstrap, topic, 0, count=501)
    assert len(msgs) == 501
    wait_until(lambda: metric_value(broker.metrics(), "sluice_bytes_out_total") >= bytes_out_before + 500 * 1000,
               10, 0.1, "bytes out to grow after a fetch")
    assert metric_value(broker.metrics(), "sluice_requests_total", api="Fetch") > 0


def test_partitions_gauge(broker, topic):
    from confluent_kafka.admin import NewTopic

    before = broker.metric("sluice_partitions")
    a = broker.admin()
    a.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    wait_until(lambda: broker.metric("sluice_partitions") == before + 4, 10, 0.1, "partitions gauge +4")
    a.delete_topics([topic])[topic].result(30)
    wait_until(lambda: broker.metric("sluice_partitions") == before, 10, 0.1, "partitions gauge back")


def test_consumer_group_gauges(broker, topic):
    from confluent_kafka import Consumer
    from confluent_kafka.admin import NewTopic

    broker.admin().create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    assert broker.metric("sluice_consumer_groups") == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}", "session.timeout.ms": 6000})
    try:
        c.subscribe([topic])

        def joined():
            c.poll(0.1)
            return broker.metric("sluice_consumer_group_members") == 1

        wait_until(joined, 30, 0.05, "one group member in the gauges")
        assert broker.metric("sluice_consumer_groups") == 1
    finally:
        c.close()
    wait_until(lambda: broker.metric("sluice_consumer_group_members") == 0, 10, 0.1, "member gone after close")
