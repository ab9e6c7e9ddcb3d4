"""The kit's node agent running hand-written broker StatefulSets (pods and claims from the real
StatefulSet controller, bound by the real scheduler) as sluice-broker processes."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import BROKER_BIN, consume_confluent, produce_confluent
from kit import Kit, pod_ready, wait_for
from kitutil import WatchRecorder, broker_objects
from cluster import new_cluster_id

pytestmark = [pytest.mark.kit, pytest.mark.timeout(180)]

NS = "default"


@pytest.fixture
def kit(tmp_path):
    if not BROKER_BIN.exists():
        pytest.fail(f"broker binary not found at {BROKER_BIN} (cargo build --release -p sluice-broker)")
    k = Kit(tmp_path / "kit", binaries={"sluice-broker": str(BROKER_BIN)}, max_grace=20).start()
    yield k
    k.stop(grace=3)  # brokers stopping all at once cannot hand leadership over anyway


def create_brokers(kit: Kit, name: str, replicas: int, config: dict | None = None) -> str:
    sts = None
    for obj in broker_objects(name, NS, replicas, new_cluster_id(), config):
        created = kit.kube.create(obj, NS)
        if obj["kind"] == "StatefulSet":
            sts = created
    return sts["metadata"]["name"]


def pods(kit: Kit, sts: str) -> dict[str, dict]:
    items = kit.kube.list("v1", "pods", NS, label_selector=f"app.kubernetes.io/instance={sts.removesuffix('-kafka')}")
    return {p["metadata"]["name"]: p for p in items["items"]}


def wait_ready(kit: Kit, sts: str, replicas: int, timeout: float = 90):
    def check():
        s = kit.kube.get("apps/v1", "statefulsets", sts, NS)
        st = s.get("status") or {}
        ps = pods(kit, sts)
        ok = (st.get("readyReplicas") == replicas and st.get("replicas") == replicas
              and len(ps) == replicas and all(pod_ready(p) for p in ps.values())
              and st.get("observedGeneration") == s["metadata"]["generation"]
              and st.get("updatedReplicas") == replicas
              and st.get("currentRevision") == st.get("updateRevision"))
        return ok and (s, ps)
    return wait_for(check, timeout=timeout, interval=0.2, msg=f"{sts} with {replicas} ready pods")


def test_one_broker_runs_and_keeps_its_data_across_a_pod_restart(kit):
    sts = create_brokers(kit, "solo", 1)
    s, ps = wait_ready(kit, sts, 1)
    pod = ps["solo-kafka-0"]
    ip = kit.pod_ip(NS, sts, 0)
    assert pod["status"]["podIP"] == ip and ip.startswith(kit.ip_base + ".")
    assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == s["metadata"]["uid"]
    pvc = kit.kube.get("v1", "persistentvolumeclaims", "data-solo-kafka-0", NS)
    assert pvc["status"]["phase"] == "Bound"
    # The broker advertises its pod address (translated from its DNS name).
    bootstrap = f"{ip}:9092"
    reports = produce_confluent(bootstrap, "kit-solo", [b"before restart"])
    assert reports[0][0] is None
    assert pvc["spec"]["storageClassName"] == "kit-local", "the default StorageClass"
    data_dir = kit.claim_path(NS, "data-solo-kafka-0") / "data"
    assert any(p.name.startswith("kit-solo-") for p in data_dir.iterdir()), list(data_dir.iterdir())
    # Delete the pod: the StatefulSet brings it back with the same address and claim.
    kit.kube.delete("v1", "pods", "solo-kafka-0", NS)
    wait_for(lambda: (p := pods(kit, sts).get("solo-kafka-0")) and p["metadata"]["uid"] != pod["metadata"]["uid"]
             and pod_ready(p), timeout=60, msg="a new ready pod")
    msgs = consume_confluent(bootstrap, "kit-solo", count=1)
    assert msgs[0].value() == b"before restart"
    log = kit.pod_log(NS, "solo-kafka-0").read_text()
    assert log.count("start #") == 2 and "terminated, exit 0" in log, log[-2000:]


def test_three_brokers_become_ready_then_scale_down_to_one(kit):
    sts = create_brokers(kit, "trio", 3)
    s, ps = wait_ready(kit, sts, 3)
    ips = {kit.pod_ip(NS, sts, i) for i in range(3)}
    assert {p["status"]["podIP"] for p in ps.values()} == ips and len(ips) == 3
    # Per-pod translation: each pod's config names its peers by IP.
    props = (kit.workdir / "pods" / NS / "trio-kafka-1" / "volumes" / "config" / "server.properties").read_text()
    assert f"controller.quorum.bootstrap.servers=0@{kit.pod_ip(NS, sts, 0)}:9644," in props
    assert f"listeners={kit.pod_ip(NS, sts, 1)}:9092" in props
    # Scale down through the scale subresource.
    keep_uid = ps["trio-kafka-0"]["metadata"]["uid"]
    kit.kube.patch("apps/v1", "statefulsets", sts, {"spec": {"replicas": 1}}, NS, sub="scale")
    wait_for(lambda: set(pods(kit, sts)) == {"trio-kafka-0"}, timeout=60, msg="pods 1 and 2 gone")
    st = wait_for(lambda: (x := kit.kube.get("apps/v1", "statefulsets", sts, NS)["status"])["replicas"] == 1 and x,
                  timeout=30, msg="status.replicas 1")
    assert st["observedGeneration"] == 2
    assert pods(kit, sts)["trio-kafka-0"]["metadata"]["uid"] == keep_uid
    # Claims (Retain) and their data stay.
    for i in range(3):
        assert kit.kube.get("v1", "persistentvolumeclaims", f"data-trio-kafka-{i}", NS)
        assert kit.claim_path(NS, f"data-trio-kafka-{i}").is_dir()
    # Their processes stop (SIGTERM: controlled shutdown; SIGKILL after the capped grace period).
    for i in (1, 2):
        wait_for(lambda: "terminated, exit" in kit.pod_log(NS, f"trio-kafka-{i}").read_text(), timeout=30,
                 msg=f"trio-kafka-{i} stopped")
    assert kit.call(lambda: sorted(r.name for r in kit.kubelet.pods.values())) == ["trio-kafka-0"]
    # Deleting a claim releases its volume, which is deleted with its directory (reclaimPolicy Delete).
    path = kit.claim_path(NS, "data-trio-kafka-2")
    volume = kit.kube.get("v1", "persistentvolumeclaims", "data-trio-kafka-2", NS)["spec"]["volumeName"]
    kit.kube.delete("v1", "persistentvolumeclaims", "data-trio-kafka-2", NS)
    wait_for(lambda: not path.exists() and not kit.kube.get("v1", "persistentvolumes", volume, ok_404=True),
             timeout=30, msg="volume and its directory gone")


def test_template_change_rolls_highest_ordinal_first(kit):
    sts = create_brokers(kit, "roll", 3)
    s, ps = wait_ready(kit, sts, 3)
    old_rev = s["status"]["updateRevision"]
    rec = WatchRecorder(kit.kube, f"/api/v1/namespaces/{NS}/pods")
    try:
        kit.kube.patch("apps/v1", "statefulsets", sts,
                       {"spec": {"template": {"metadata": {"annotations": {"kafka.sluice.dev/config-hash": "2"}}}}}, NS)
        s, ps = wait_ready(kit, sts, 3, timeout=120)
    finally:
        rec.stop()
    new_rev = s["status"]["updateRevision"]
    assert new_rev != old_rev and s["status"]["currentRevision"] == new_rev
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in ps.values()} == {new_rev}
    deleted = [o["metadata"]["name"] for _, t, o in rec.events if t == "DELETED"]
    assert deleted == ["roll-kafka-2", "roll-kafka-1", "roll-kafka-0"]
    # Each pod goes only once the one replaced before it is Ready again.
    for before, after in (("roll-kafka-2", "roll-kafka-1"), ("roll-kafka-1", "roll-kafka-0")):
        t_delete = next(ts for ts, t, o in rec.events if t == "DELETED" and o["metadata"]["name"] == after)
        ready_new = [ts for ts, t, o in rec.events if o["metadata"]["name"] == before and t == "MODIFIED"
                     and o["metadata"]["labels"].get("controller-revision-hash") == new_rev and pod_ready(o)]
        assert ready_new and ready_new[0] <= t_delete, f"{after} deleted before {before} was ready"


def test_kill_and_pause_a_pod(kit):
    sts = create_brokers(kit, "fault", 1)
    _, ps = wait_ready(kit, sts, 1)
    uid = ps["fault-kafka-0"]["metadata"]["uid"]

    def status():
        p = pods(kit, sts)["fault-kafka-0"]
        return p, p["status"]["containerStatuses"][0]

    # Killed (SIGKILL of the pid the agent records): the container restarts in the same pod.
    pid = int((kit.workdir / "pods" / NS / "fault-kafka-0" / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: status()[1]["restartCount"] == 1 and pod_ready(status()[0]), timeout=60,
             msg="restarted and ready")
    assert status()[0]["metadata"]["uid"] == uid
    # Paused: the readiness probe fails and the pod turns NotReady; resumed: Ready again.
    kit.pause(NS, "fault-kafka-0")
    try:
        wait_for(lambda: not pod_ready(status()[0]), timeout=30, msg="NotReady while paused")
        # The StatefulSet controller follows (it omits readyReplicas at zero).
        wait_for(lambda: kit.kube.get("apps/v1", "statefulsets", sts, NS)["status"].get("readyReplicas", 0) == 0,
                 timeout=30, msg="readyReplicas 0")
    finally:
        kit.resume(NS, "fault-kafka-0")
    wait_for(lambda: pod_ready(status()[0]), timeout=30, msg="Ready after resume")
    assert status()[1]["restartCount"] == 1, "a pause shorter than the liveness budget restarts nothing"


def test_failing_liveness_probe_restarts_the_container(kit):
    for obj in broker_objects("sick", NS, 1, new_cluster_id()):
        if obj["kind"] == "StatefulSet":
            c = obj["spec"]["template"]["spec"]["containers"][0]
            c["livenessProbe"] = {"httpGet": {"path": "/no-such-path", "port": "http"},
                                  "periodSeconds": 1, "failureThreshold": 2}
        kit.kube.create(obj, NS)

    def restarted():
        p = pods(kit, "sick-kafka").get("sick-kafka-0")
        return p and p["status"]["containerStatuses"][0]["restartCount"] >= 1
    wait_for(restarted, timeout=60, msg="a restart after liveness failures")
    assert "liveness probe failed" in kit.pod_log(NS, "sick-kafka-0").read_text()
