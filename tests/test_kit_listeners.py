"""Listeners through the kit (issue 12): the real API server builds and validates the external
listeners' Services (allocated nodePorts, selectors, load-balancer status patched in as a cloud
controller would), the operator reports them in status.listeners and writes each broker's
advertised addresses; and the forwarding listener serves a whole 3-broker cluster through one
tunnel to the bootstrap Service's pod, as `kubectl port-forward svc/demo-kafka-bootstrap 9092`
does (tests/relay.py stands in for the tunnel)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from kit import Kit, pod_ready, wait_for
from kitutil import INTERNAL_PORT, KC, condition, load_example, operator_kit

pytestmark = [pytest.mark.kit, pytest.mark.timeout(300)]

NS = "default"
NODE_IP = "127.0.0.1"  # the kit's Node InternalIP and every pod's status.hostIP


@pytest.fixture
def kit(request, tmp_path):
    yield from operator_kit(request, tmp_path)


def cluster_with(listeners: list[dict], replicas: int = 3) -> dict:
    kc = load_example("kafkacluster.yaml")
    kc["spec"]["replicas"] = replicas
    kc["spec"].pop("resources", None)
    kc["spec"]["storage"]["size"] = "1Gi"
    kc["spec"]["listeners"] = listeners
    return kc


def get_kc(kit: Kit) -> dict:
    return kit.kube.get(KC, "kafkaclusters", "demo", NS)


def service(kit: Kit, name: str) -> dict | None:
    return kit.kube.get("v1", "services", name, NS, ok_404=True)


def wait_status(kit: Kit, what: str, predicate, timeout: float = 60) -> dict:
    def check():
        kc = get_kc(kit)
        return predicate(kc) and kc
    try:
        return wait_for(check, timeout=timeout, interval=0.3, msg=what)
    except AssertionError:
        raise AssertionError(f"{what}: status {get_kc(kit).get('status')}\noperator log:\n"
                             f"{kit.operator_log()[-4000:]}") from None


def listener_status(kc: dict, name: str) -> dict:
    return next(entry for entry in (kc.get("status") or {}).get("listeners") or [] if entry["name"] == name)


def kubectl(kit: Kit, *args: str) -> str:
    proc = subprocess.run([str(kit.control_plane.bin / "kubectl"), "--kubeconfig", str(kit.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def broker_file(kit: Kit, ordinal: int) -> str:
    return kit.kube.get("v1", "configmaps", "demo-kafka-config", NS)["data"].get(f"demo-kafka-{ordinal}.properties")


def advertised(text: str) -> dict[str, str]:
    line = next(line for line in text.splitlines() if line.startswith("advertised.listeners="))
    return dict(item.split("://", 1) for item in line.removeprefix("advertised.listeners=").split(","))


def test_external_listeners_services_built_and_validated_by_the_api_server(kit):
    listeners = [
        {"name": "local", "type": "forwarding", "port": 9092},
        {"name": "internal", "type": "internal", "port": INTERNAL_PORT},
        {"name": "ext", "type": "nodePort", "port": 9094},
        {"name": "lb", "type": "loadBalancer", "port": 9095},
    ]
    kit.kube.create(cluster_with(listeners), NS)

    # nodePort: a NodePort Service per broker (selecting its pod) and a bootstrap one, every
    # nodePort allocated by the API server.
    def node_port_services():
        svcs = [service(kit, f"demo-kafka-{i}-ext") for i in range(3)] + [service(kit, "demo-kafka-ext-bootstrap")]
        return all(svcs) and svcs
    svcs = wait_for(node_port_services, timeout=60, interval=0.3, msg="nodePort Services")
    node_ports = []
    for i, svc in enumerate(svcs):
        spec = svc["spec"]
        assert spec["type"] == "NodePort"
        (port,) = spec["ports"]
        assert (port["name"], port["port"], port["targetPort"]) == ("ext", 9094, "ext")
        assert 30000 <= port["nodePort"] <= 32767, port
        node_ports.append(port["nodePort"])
        selector = spec["selector"]
        assert selector["app.kubernetes.io/instance"] == "demo"
        assert selector["app.kubernetes.io/name"] == "sluice-broker"
        if i < 3:
            assert selector["statefulset.kubernetes.io/pod-name"] == f"demo-kafka-{i}"
        else:
            assert "statefulset.kubernetes.io/pod-name" not in selector
        assert svc["metadata"]["labels"]["kafka.sluice.dev/listener"] == "ext"
        assert svc["metadata"]["ownerReferences"][0]["kind"] == "KafkaCluster"
    assert len(set(node_ports)) == 4

    # loadBalancer: the same shape; no cloud controller runs here, so no address, and no broker
    # starts before its load balancer has one (it would advertise a wrong address).
    lb_names = [f"demo-kafka-{i}-lb" for i in range(3)] + ["demo-kafka-lb-bootstrap"]
    wait_for(lambda: all(service(kit, n) for n in lb_names), timeout=30, msg="loadBalancer Services")
    for n in lb_names:
        svc = service(kit, n)
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["ports"][0]["port"] == 9095
    kc = wait_status(kit, "waiting for load balancers",
                     lambda kc: (condition(kc, "Ready") or {}).get("reason") == "WaitingForLoadBalancer")
    assert "demo-kafka-0-lb" in condition(kc, "Progressing")["message"]
    lb = listener_status(kc, "lb")
    assert "bootstrapServers" not in lb and "demo-kafka-lb-bootstrap" in lb["message"], lb
    assert kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)["spec"]["replicas"] == 0
    assert broker_file(kit, 0) is None

    # A cloud controller assigns the addresses (kubectl patch of the status subresource).
    ips = {n: f"198.51.100.{10 + i}" for i, n in enumerate(lb_names)}
    for n, ip in ips.items():
        kubectl(kit, "-n", NS, "patch", "service", n, "--subresource=status", "--type=merge",
                "-p", f'{{"status": {{"loadBalancer": {{"ingress": [{{"ip": "{ip}"}}]}}}}}}')

    kc = wait_status(kit, "every listener has a bootstrap address", lambda kc: all(
        "bootstrapServers" in entry for entry in (kc.get("status") or {}).get("listeners") or []) and len(
        kc["status"]["listeners"]) == 4, timeout=90)
    assert [(e["name"], e["type"]) for e in kc["status"]["listeners"]] == [
        ("local", "forwarding"), ("internal", "internal"), ("ext", "nodePort"), ("lb", "loadBalancer")]
    assert listener_status(kc, "local")["bootstrapServers"] == "localhost:9092"
    assert listener_status(kc, "internal")["bootstrapServers"] == f"demo-kafka-bootstrap.{NS}.svc:{INTERNAL_PORT}"
    assert listener_status(kc, "ext")["bootstrapServers"] == f"{NODE_IP}:{node_ports[3]}"
    assert listener_status(kc, "lb")["bootstrapServers"] == "198.51.100.13:9095"
    assert kc["status"]["bootstrapServers"] == f"demo-kafka-bootstrap.{NS}.svc:{INTERNAL_PORT}"
    # The printer column shows the forwarding listener's address.
    table = kubectl(kit, "-n", NS, "get", "kc", "demo")
    assert "BOOTSTRAP" in table.splitlines()[0] and "localhost:9092" in table, table
    assert kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)["spec"]["replicas"] == 3

    # Each broker advertises its node's IP with its own Service's nodePort, and its load
    # balancer's address; the node agent resolves what the downward API gives it.
    server = kit.kube.get("v1", "configmaps", "demo-kafka-config", NS)["data"]["server.properties"]
    assert "listeners=LOCAL://0.0.0.0:9092,INTERNAL://0.0.0.0:9093,EXT://0.0.0.0:9094,LB://0.0.0.0:9095\n" in server
    assert "inter.broker.listener.name=INTERNAL\n" in server
    assert "forwarding.listener.names=LOCAL\n" in server
    assert "listener.security.protocol.map=LOCAL:PLAINTEXT,INTERNAL:PLAINTEXT,EXT:PLAINTEXT,LB:PLAINTEXT\n" in server
    for i in range(3):
        adv = advertised(broker_file(kit, i))
        assert adv == {"LOCAL": "localhost:9092",
                       "INTERNAL": f"demo-kafka-{i}.demo-kafka-brokers.{NS}.svc:{INTERNAL_PORT}",
                       "EXT": f"${{env:HOST_IP}}:{node_ports[i]}",
                       "LB": f"{ips[f'demo-kafka-{i}-lb']}:9095"}, adv
    sts = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--config", "/etc/sluice/$(POD_NAME).properties"]
    assert {"name": "HOST_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}} \
        in container["env"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("local", 9092), ("internal", 9093), ("ext", 9094), ("lb", 9095), ("http", 9644)]
    # What the broker process of pod 1 is given: its file (internal name translated to its pod
    # address by the node agent) and HOST_IP.
    def projected():
        path = kit.workdir / "pods" / NS / "demo-kafka-1" / "volumes" / "config" / "demo-kafka-1.properties"
        return path.exists() and path.read_text()
    text = wait_for(projected, timeout=60, interval=0.3, msg="demo-kafka-1's config projected")
    assert advertised(text)["INTERNAL"] == f"{kit.pod_ip(NS, 'demo-kafka', 1)}:{INTERNAL_PORT}"
    pod = wait_for(lambda: (kit.kube.get("v1", "pods", "demo-kafka-1", NS).get("status") or {}).get("hostIP")
                   and kit.kube.get("v1", "pods", "demo-kafka-1", NS), timeout=60, msg="demo-kafka-1's hostIP")
    assert pod["status"]["hostIP"] == NODE_IP

    # Headless: every listener and http; bootstrap: the in-cluster ones, forwarding first.
    headless = service(kit, "demo-kafka-brokers")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in headless] == [
        ("local", 9092), ("internal", 9093), ("ext", 9094), ("lb", 9095), ("http", 9644)]
    bootstrap = service(kit, "demo-kafka-bootstrap")["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in bootstrap] == [
        ("local", 9092, "local"), ("internal", 9093, "internal")]

    # A listener removed from the spec takes its Services with it.
    kit.kube.patch(KC, "kafkaclusters", "demo", {"spec": {"listeners": listeners[:3]}}, NS)
    wait_for(lambda: not any(service(kit, n) for n in lb_names), timeout=60, interval=0.3,
             msg="the loadBalancer listener's Services deleted")
    assert all(service(kit, f"demo-kafka-{i}-ext") for i in range(3))
    kc = wait_status(kit, "lb gone from status.listeners",
                     lambda kc: [e["name"] for e in kc["status"].get("listeners") or []] == ["local", "internal", "ext"])
    assert "LB://" not in broker_file(kit, 0)


def test_the_api_server_refuses_bad_listeners(kit):
    from kit.client import KubeError

    bad = cluster_with([{"name": "local", "type": "forwarding", "port": 9092},
                        {"name": "other", "type": "forwarding", "port": 9644}])
    with pytest.raises(KubeError) as refused:
        kit.kube.create(bad, NS)
    assert refused.value.code == 422
    text = str(refused.value)
    for expected in ("exactly one listener of type internal", "at most one listener of type forwarding",
                     "9644 is the HTTP side port"):
        assert expected in text, text


def bootstrap_service_pod(kit: Kit, port: int) -> tuple[str, int]:
    """What `kubectl port-forward svc/demo-kafka-bootstrap <port>` connects to: a ready pod of the
    Service's selector and the container port the Service port targets."""
    svc = service(kit, "demo-kafka-bootstrap")
    target = next(p for p in svc["spec"]["ports"] if p["port"] == port)["targetPort"]
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    pods = [p for p in kit.kube.list("v1", "pods", NS, label_selector=selector)["items"] if pod_ready(p)]
    assert pods, "no ready pod behind the bootstrap Service"
    pod = pods[0]
    number = target if isinstance(target, int) else next(
        cp["containerPort"] for cp in pod["spec"]["containers"][0]["ports"] if cp["name"] == target)
    return pod["status"]["podIP"], number


def test_port_forward_to_the_bootstrap_service_serves_the_whole_cluster(kit, tmp_path):
    from kafka import KafkaProducer

    from cluster import metadata_request
    from relay import Relay
    from test_groups import Worker, stable_split

    # The tunnel's local port is known first (as with `kubectl port-forward svc/... 0:9092`),
    # and the forwarding listener advertises it; the target is set once a pod is ready.
    with Relay("127.0.0.1", 1) as relay:
        kit.kube.create(cluster_with([
            {"name": "local", "type": "forwarding", "port": 9092, "advertisedPort": relay.port},
            {"name": "internal", "type": "internal", "port": INTERNAL_PORT},
            {"name": "ext", "type": "nodePort", "port": 9094},
        ]), NS)
        wait_status(kit, "cluster Ready", lambda kc: (condition(kc, "Ready") or {}).get("status") == "True"
                    and kc["status"].get("readyReplicas") == 3, timeout=180)
        kit.kube.create({"apiVersion": KC, "kind": "KafkaTopic", "metadata": {"name": "quickstart"},
                         "spec": {"cluster": "demo", "partitions": 6, "replicas": 3}}, NS)
        wait_for(lambda: (condition(kit.kube.get(KC, "kafkatopics", "quickstart", NS), "Ready") or {})
                 .get("status") == "True", timeout=90, interval=0.3, msg="KafkaTopic quickstart Ready")
        internal = ",".join(f"{kit.pod_ip(NS, 'demo-kafka', i)}:{INTERNAL_PORT}" for i in range(3))

        def leaders_spread():
            md = metadata_request(internal.split(",")[0], ["quickstart"])
            leaders = {p.leader for p in md.topics["quickstart"].partitions.values()}
            return leaders == {0, 1, 2} and md
        wait_for(leaders_spread, timeout=60, interval=0.5, msg="quickstart's 6 partitions led by all three brokers")

        host, port = bootstrap_service_pod(kit, 9092)
        relay.retarget(host, port)
        local = f"localhost:{relay.port}"
        # Through the tunnel every broker is at the tunnel's address (spelt in a different case
        # per broker: librdkafka tells brokers apart by host and port).
        md = metadata_request(f"127.0.0.1:{relay.port}")
        assert sorted(md.brokers) == [0, 1, 2]
        assert {(h.lower(), p) for h, p, _ in md.brokers.values()} == {("localhost", relay.port)}

        # The quick start, verbatim but for the port: a producer and a group consumer.
        producer = KafkaProducer(bootstrap_servers=local)
        sent = {}
        for i in range(120):
            value = f"hello-{i}-{uuid.uuid4().hex[:8]}".encode()
            meta = producer.send("quickstart", value, partition=i % 6).get(timeout=30)
            assert meta.partition == i % 6
            sent[value] = meta.partition
        producer.flush()
        producer.close()

        # Two group members (each a process, as consumers are; kafka-python's poll() must not
        # time out in the middle of a rebalance, see tests/test_groups.py) split the six
        # partitions between them and read every record where it was acknowledged.
        group = f"quickstart-{uuid.uuid4().hex[:6]}"
        members = [Worker("kp", local, ["quickstart"], group, tmp_path) for _ in range(2)]
        try:
            split = stable_split(members, [f"quickstart:{p}" for p in range(6)], timeout=90)
            assert all(split.values()), split

            def read_back():
                got = {}
                for m in members:
                    for r in m.records():
                        got.setdefault(r["v"].encode(), set()).add(int(r["p"].rsplit(":", 1)[1]))
                return len(got) == len(sent) and got
            try:
                got = wait_for(read_back, timeout=60, interval=0.3, msg="every record read back")
            except AssertionError:
                raise AssertionError("\n".join(m.describe() for m in members)) from None
            assert {v: ps for v, ps in got.items()} == {v: {p} for v, p in sent.items()}
        finally:
            for m in members:
                m.kill()
        # librdkafka through the same tunnel: every codec, each record in its partition, and
        # kcat's listing of the cluster.
        from conftest import produce_confluent

        for codec in ("gzip", "snappy", "lz4", "zstd"):
            records = [{"value": f"{codec}-{p}".encode(), "partition": p} for p in range(6)]
            reports = produce_confluent(local, "quickstart", records, conf={"compression.type": codec, "acks": "all"})
            # Reports come as each partition's leader answers.
            assert sorted((str(err), partition) for err, partition, _ in reports) == \
                [("None", p) for p in range(6)], codec
        listing = subprocess.run(["kcat", "-b", local, "-L", "-t", "quickstart"], capture_output=True, text=True,
                                 timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert "3 brokers:" in listing.stdout and "6 partitions" in listing.stdout, listing.stdout
        assert relay.connections > 0

    # The nodePort listener answers with the node's address and each broker's nodePort.
    kc = get_kc(kit)
    node_ports = {i: service(kit, f"demo-kafka-{i}-ext")["spec"]["ports"][0]["nodePort"] for i in range(3)}
    md = metadata_request(f"{kit.pod_ip(NS, 'demo-kafka', 0)}:9094")
    assert {i: (h, p) for i, (h, p, _) in md.brokers.items()} == {i: (NODE_IP, node_ports[i]) for i in range(3)}
    assert listener_status(kc, "ext")["bootstrapServers"] == \
        f"{NODE_IP}:{service(kit, 'demo-kafka-ext-bootstrap')['spec']['ports'][0]['nodePort']}"


def test_scale_up_gives_the_new_broker_its_service_and_file_first_and_restarts_nobody(kit):
    from cluster import metadata_request

    kit.kube.create(cluster_with([
        {"name": "local", "type": "forwarding", "port": 9092},
        {"name": "internal", "type": "internal", "port": INTERNAL_PORT},
        {"name": "ext", "type": "nodePort", "port": 9094},
    ], replicas=3), NS)  # from 3 on, more brokers change no shared setting (the voters)
    wait_status(kit, "3 brokers Ready", lambda kc: (condition(kc, "Ready") or {}).get("status") == "True"
                and kc["status"].get("readyReplicas") == 3, timeout=180)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kit.kube.list("v1", "pods", NS)["items"]}
    revision = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)["status"]["updateRevision"]

    kit.kube.patch(KC, "kafkaclusters", "demo", {"spec": {"replicas": 4}}, NS)
    wait_status(kit, "4 brokers Ready", lambda kc: (condition(kc, "Ready") or {}).get("status") == "True"
                and kc["status"].get("readyReplicas") == 4, timeout=180)
    node_port = service(kit, "demo-kafka-3-ext")["spec"]["ports"][0]["nodePort"]
    assert advertised(broker_file(kit, 3))["EXT"] == f"${{env:HOST_IP}}:{node_port}"
    # The new broker's pod was started with its file (the node agent projected it at start).
    path = kit.workdir / "pods" / NS / "demo-kafka-3" / "volumes" / "config" / "demo-kafka-3.properties"
    assert f"EXT://${{env:HOST_IP}}:{node_port}" in path.read_text()
    # Nobody else restarted: same pods, same revision.
    sts = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
    assert sts["status"]["updateRevision"] == revision
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kit.kube.list("v1", "pods", NS)["items"]}
    assert {name: after[name] for name in before} == before
    # The nodePort listener answers with every broker's node address and nodePort.
    want = {i: (NODE_IP, service(kit, f"demo-kafka-{i}-ext")["spec"]["ports"][0]["nodePort"]) for i in range(4)}
    wait_for(lambda: {i: (h, p) for i, (h, p, _) in
                      metadata_request(f"{kit.pod_ip(NS, 'demo-kafka', 3)}:9094").brokers.items()} == want,
             timeout=30, interval=0.5, msg="broker 3 in the nodePort listener's metadata")


def test_a_forwarding_listener_added_to_a_running_cluster_keeping_its_internal_one(kit):
    """What the README advises for a cluster from before listeners (one PLAINTEXT listener on
    9092, which replication uses): keep it as the internal listener and add the forwarding one;
    the roll runs through brokers with and without the new listener."""
    from cluster import metadata_request

    kit.kube.create(cluster_with([{"name": "plaintext", "type": "internal", "port": 9092}]), NS)
    wait_status(kit, "3 brokers Ready", lambda kc: (condition(kc, "Ready") or {}).get("status") == "True"
                and kc["status"].get("readyReplicas") == 3, timeout=180)
    revision = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)["status"]["updateRevision"]
    kit.kube.patch(KC, "kafkaclusters", "demo", {"spec": {"listeners": [
        {"name": "plaintext", "type": "internal", "port": 9092},
        {"name": "local", "type": "forwarding", "port": 9094}]}}, NS)

    def rolled():
        sts = kit.kube.get("apps/v1", "statefulsets", "demo-kafka", NS)
        st = sts.get("status") or {}
        return (st.get("updateRevision") != revision and st.get("currentRevision") == st.get("updateRevision")
                and st.get("updatedReplicas") == 3 and st.get("readyReplicas") == 3)
    wait_for(rolled, timeout=240, interval=0.5, msg="the brokers rolled to the new listeners")
    md = metadata_request(f"{kit.pod_ip(NS, 'demo-kafka', 0)}:9094")
    assert {(h.lower(), p) for h, p, _ in md.brokers.values()} == {("localhost", 9094)}
    md = metadata_request(f"{kit.pod_ip(NS, 'demo-kafka', 0)}:9092")
    assert {i: (h, p) for i, (h, p, _) in md.brokers.items()} == {
        i: (kit.pod_ip(NS, "demo-kafka", i), 9092) for i in range(3)}
