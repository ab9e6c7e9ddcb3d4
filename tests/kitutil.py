"""Helpers shared by the kit tests (tests/test_kit_*.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml

from kit.client import SyncClient

ROOT = Path(__file__).resolve().parent.parent
KC = "kafka.sluice.dev/v1alpha1"
# The operator's default listeners: `local` (forwarding, advertises localhost:9092) and
# `internal` (each broker's own address), which clients inside the kit use.
FORWARDING_PORT = 9092
INTERNAL_PORT = 9093


def operator_kit(request, tmp_path: Path):
    """Fixture body: a kit with the operator installed by its Helm chart (values from the test's
    `operator_values` marker), stopped afterwards; every operator pod must exit cleanly."""
    import pytest

    from conftest import BROKER_BIN, OPERATOR_BIN
    from kit import Kit

    for b in (BROKER_BIN, OPERATOR_BIN):
        if not b.exists():
            pytest.fail(f"{b} not found (cargo build --release -p sluice-broker -p sluice-operator)")
    marker = request.node.get_closest_marker("operator_values")
    values = marker.args if marker else ()
    k = Kit(tmp_path / "kit", binaries={"sluice-broker": str(BROKER_BIN), "sluice-operator": str(OPERATOR_BIN)},
            max_grace=20).start()
    try:
        k.install_operator(*values)
        yield k
        codes = k.stop_operator()
        assert codes and all(c == 0 for c in codes.values()), \
            f"operator exit codes {codes}:\n{k.operator_log()[-3000:]}"
    finally:
        k.stop(grace=3)


def operator_pod(kit) -> str:
    """The name of the (one) running operator pod."""
    from kit import pod_ready

    pods = [p for p in kit.operator_pods() if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]["metadata"]["name"]


def condition(obj: dict, type_: str) -> dict | None:
    """The condition of `type_` in an object's status, if any."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def load_example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def broker_objects(name: str, namespace: str, replicas: int, cluster_id: str,
                   config: dict | None = None) -> list[dict]:
    """A hand-written broker StatefulSet with its ConfigMap and headless Service, shaped like the
    operator's (tests/kit must not depend on the operator to test the kubelet)."""
    sts_name, svc = f"{name}-kafka", f"{name}-kafka-brokers"
    labels = {"app.kubernetes.io/name": "sluice-broker", "app.kubernetes.io/instance": name}
    voters = ",".join(f"{i}@{sts_name}-{i}.{svc}.{namespace}.svc:9644" for i in range(min(replicas, 3)))
    props = {
        "listeners": "0.0.0.0:9092", "http.listener": "0.0.0.0:9644",
        "log.dirs": "/var/lib/sluice/data", "cluster.id": cluster_id,
        "controller.quorum.bootstrap.servers": voters,
        "default.replication.factor": str(min(replicas, 3)),
        "min.insync.replicas": "2" if replicas >= 3 else "1",
        **(config or {}),
    }
    text = "".join(f"{k}={v}\n" for k, v in props.items())
    host = f"$(POD_NAME).{svc}.$(POD_NAMESPACE).svc"
    field = lambda n, p: {"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}}  # noqa: E731
    # The operator's probe timings: liveness gives a stuck broker a minute.
    probe = lambda path, period, failures: {  # noqa: E731
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{sts_name}-config", "labels": labels},
         "data": {"server.properties": text}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "labels": labels},
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": labels,
                  "ports": [{"name": "kafka", "port": 9092}, {"name": "http", "port": 9644}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": sts_name, "labels": labels},
         "spec": {
             "replicas": replicas, "serviceName": svc, "selector": {"matchLabels": labels},
             "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate"},
             "template": {
                 "metadata": {"labels": labels, "annotations": {"kafka.sluice.dev/config-hash": "1"}},
                 "spec": {
                     "terminationGracePeriodSeconds": 120,
                     "containers": [{
                         "name": "broker", "image": "sluice:test", "command": ["sluice-broker"],
                         "args": ["--config", "/etc/sluice/server.properties"],
                         "ports": [{"name": "kafka", "containerPort": 9092},
                                   {"name": "http", "containerPort": 9644}],
                         "env": [field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"),
                                 field("SLUICE_NODE_ID", "metadata.labels['apps.kubernetes.io/pod-index']"),
                                 {"name": "SLUICE_ADVERTISED_LISTENERS", "value": f"{host}:9092"},
                                 {"name": "SLUICE_ADVERTISED_HTTP_LISTENER", "value": f"{host}:9644"}],
                         "readinessProbe": probe("/readyz", 5, 3), "livenessProbe": probe("/healthz", 10, 6),
                         "volumeMounts": [{"name": "data", "mountPath": "/var/lib/sluice"},
                                          {"name": "config", "mountPath": "/etc/sluice", "readOnly": True},
                                          {"name": "tmp", "mountPath": "/tmp"}],
                     }],
                     "volumes": [{"name": "config", "configMap": {"name": f"{sts_name}-config"}},
                                 {"name": "tmp", "emptyDir": {}}],
                 },
             },
             "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                       "spec": {"accessModes": ["ReadWriteOnce"],
                                                "resources": {"requests": {"storage": "1Gi"}}}}],
         }},
    ]


class WatchRecorder:
    """Records every event of a watch on `path` (from the current version) on a thread.
    `on_event(t, type, object)`, if given, is called on the watch thread for each event right
    after it is recorded (to act at the moment something changes); what it raises is kept in
    `callback_errors`."""

    def __init__(self, kube, path: str, on_event=None, **params):
        import threading

        self.events: list[tuple[float, str, dict]] = []
        self.on_event = on_event
        self.callback_errors: list[BaseException] = []
        self._stop = False
        rv = kube.request("GET", path)["metadata"]["resourceVersion"]
        q = "&".join(f"{k}={v}" for k, v in {"watch": "1", "resourceVersion": rv,
                                              "timeoutSeconds": "600", **params}.items())
        self._req = urllib.request.Request(f"{kube.conn.server}{path}?{q}", headers=kube.conn.headers)
        self._ctx = kube.conn.ssl_context
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import time

        try:
            with urllib.request.urlopen(self._req, timeout=600, context=self._ctx) as r:
                while not self._stop:
                    line = r.readline()
                    if not line:
                        return
                    ev = json.loads(line)
                    t = time.monotonic()
                    self.events.append((t, ev["type"], ev["object"]))
                    if self.on_event is not None:
                        try:
                            self.on_event(t, ev["type"], ev["object"])
                        except Exception as e:  # noqa: BLE001 - reported by the test
                            self.callback_errors.append(e)
        except OSError:
            return

    def stop(self):
        self._stop = True
