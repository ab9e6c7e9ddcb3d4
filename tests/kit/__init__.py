"""End-to-end kit: the real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) on loopback, a node agent that runs the pods bound to its Node as local
processes, and the operator installed with its Helm chart, so the real sluice-operator and
sluice-broker binaries run together as they do on a cluster.

    kit = Kit(workdir, binaries={"sluice-broker": ..., "sluice-operator": ...}).start()
    kit.kube                    # SyncClient as the cluster admin
    kit.install_operator()      # helm install charts/sluice-operator; the operator runs as a pod
                                # of its Deployment, with its ServiceAccount and the chart's RBAC
    kit.kill("default", "demo-kafka-1"); kit.pause(...); kit.resume(...)
    kit.stop()                  # pods (SIGTERM, then SIGKILL), node agent, control plane

`python -m tests.kit` (scripts/kit.sh) runs the same for a developer, with a shell.
The pieces: controlplane.py (the Kubernetes processes), kubelet.py (+ podspec.py: the node
agent), shims.py (the bootstrap address an operator outside the pod network needs), client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import subprocess
import threading
from pathlib import Path

from . import shims
from .client import SyncClient
from .controlplane import ControlPlane
from .kubelet import Kubelet
from .process import wait_for

__all__ = ["Kit", "OPERATOR_NS", "pod_ready", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sluice-operator"
OPERATOR_NS = "sluice-system"
OPERATOR_RELEASE = "sluice-operator"


def random_ip_base() -> str:
    """A random 127.A.B block (never 127.0.x), so parallel kits do not share pod addresses."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 254)}"


class LoopThread:
    """An asyncio loop on a daemon thread: the node agent's home."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def wrapper():
            return fn(*args)
        return self.run(wrapper())

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Kit:
    def __init__(self, workdir: Path | str, binaries: dict[str, str] | None = None,
                 ip_base: str | None = None, max_grace: float | None = 30.0,
                 probe_interval: float = 1.0, bootstrap_annotations: bool = True,
                 helm: str | None = None):
        self.workdir = Path(workdir)
        self.binaries = binaries or {}
        self.ip_base = ip_base or random_ip_base()
        self.max_grace = max_grace
        self.probe_interval = probe_interval
        self.bootstrap_annotations = bootstrap_annotations
        self.helm = helm or os.environ.get("HELM") or str(ROOT / ".tools" / "bin" / "helm")
        self._shim = None
        self.loop: LoopThread | None = None
        self.control_plane: ControlPlane | None = None
        self.kubelet: Kubelet | None = None
        self.kubeconfig: Path | None = None

    def start(self) -> "Kit":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control_plane = ControlPlane(self.workdir / "control-plane")
        try:
            self.control_plane.start()
            self.kubeconfig = self.control_plane.admin_kubeconfig
            self.loop = LoopThread("kit")
            self.kubelet = Kubelet(
                self.control_plane.kubeconfig_for("kit-node-agent", self.workdir / "node-agent.kubeconfig"),
                self.control_plane.pki / "ca.crt", self.workdir, self.ip_base, self.binaries,
                self.probe_interval, self.max_grace, version=self.kube.request("GET", "/version")["gitVersion"])
            self.loop.run(self.kubelet.start())
            if self.bootstrap_annotations:
                async def start_shim():
                    self._shim = asyncio.create_task(shims.bootstrap_annotations(self.kubelet))
                self.loop.run(start_shim())
            # Pods need their namespace's default ServiceAccount (ServiceAccount admission).
            wait_for(lambda: self.kube.get("v1", "serviceaccounts", "default", "default", ok_404=True),
                     timeout=30, msg="the default ServiceAccount")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def kube(self) -> SyncClient:
        return SyncClient(self.kubeconfig)

    def call(self, fn, *args):
        """Runs fn(*args) on the kit's event loop thread (where the node agent's state lives)."""
        return self.loop.call(fn, *args)

    def kill(self, ns: str, pod: str):
        self.call(self.kubelet.kill, ns, pod)

    def pause(self, ns: str, pod: str):
        self.call(self.kubelet.pause, ns, pod)

    def resume(self, ns: str, pod: str):
        self.call(self.kubelet.resume, ns, pod)

    def pod_ip(self, ns: str, pod: str, ordinal: int | None = None) -> str:
        """A pod's address (known before it runs); with `ordinal`, of the StatefulSet `pod`'s pod."""
        return self.call(self.kubelet.pod_ip, ns, pod if ordinal is None else f"{pod}-{ordinal}")

    def pod_log(self, ns: str, pod: str) -> Path:
        return self.workdir / "pods" / ns / pod / "container.log"

    def claim_path(self, ns: str, claim: str) -> Path:
        return self.loop.run(self.kubelet.claim_path(ns, claim))

    # --- the operator, from its chart --------------------------------------------------------

    def helm_run(self, *args: str) -> str:
        home = self.workdir / "helm"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
               "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
        proc = subprocess.run([self.helm, *args], capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def install_operator(self, *values: str, wait_ready: bool = True) -> "Kit":
        """`helm install` of the operator chart into sluice-system (values as --set arguments),
        then waits for the CRDs and, with `wait_ready`, for every operator pod to be Ready."""
        self.helm_run("install", OPERATOR_RELEASE, str(CHART), "--namespace", OPERATOR_NS, "--create-namespace",
                      "--set", "logFormat=text", *sum((["--set", v] for v in values), []))
        for crd in ("kafkaclusters.kafka.sluice.dev", "kafkatopics.kafka.sluice.dev"):
            wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in
                                 (self.kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", crd)
                                  .get("status") or {}).get("conditions") or []), timeout=30, msg=f"{crd} established")
        if wait_ready:
            self.wait_operator_ready()
        return self

    def operator_pods(self) -> list[dict]:
        return self.kube.list("v1", "pods", OPERATOR_NS,
                              label_selector=f"app.kubernetes.io/instance={OPERATOR_RELEASE}")["items"]

    def wait_operator_ready(self, replicas: int | None = None, timeout: float = 60) -> list[dict]:
        def ready():
            want = replicas if replicas is not None else self.kube.get(
                "apps/v1", "deployments", OPERATOR_RELEASE, OPERATOR_NS)["spec"]["replicas"]
            pods = [p for p in self.operator_pods() if not p["metadata"].get("deletionTimestamp")]
            return len(pods) == want and all(pod_ready(p) for p in pods) and pods
        return wait_for(ready, timeout=timeout, msg="operator pods ready")

    def operator_log(self) -> str:
        """Every operator pod's container log, oldest pod first."""
        logs = sorted((self.workdir / "pods" / OPERATOR_NS).glob("*/container.log"), key=lambda p: p.stat().st_mtime)
        return "".join(f"===== pod {p.parent.name}\n{p.read_text(errors='replace')}" for p in logs)

    def stop_operator(self, timeout: float = 60) -> dict[str, int]:
        """Scales the operator Deployment to zero and waits for its pods to go; returns each
        pod's last exit code (SIGTERM must end an operator cleanly)."""
        self.kube.patch("apps/v1", "deployments", OPERATOR_RELEASE, {"spec": {"replicas": 0}}, OPERATOR_NS,
                        sub="scale")
        wait_for(lambda: not self.operator_pods(), timeout=timeout, msg="operator pods gone")
        codes = {}
        for log in (self.workdir / "pods" / OPERATOR_NS).glob("*/container.log"):
            exits = re.findall(r"===== (?:terminated, exit|exited with) (-?\d+)", log.read_text(errors="replace"))
            if exits:
                codes[log.parent.name] = int(exits[-1])
        return codes

    # --- teardown ----------------------------------------------------------------------------

    def stop(self, grace: float = 10.0):
        if self.loop is not None:
            if self._shim is not None:
                self.loop.loop.call_soon_threadsafe(self._shim.cancel)
            if self.kubelet is not None:
                with contextlib.suppress(Exception):
                    self.loop.run(self.kubelet.stop(grace), timeout=grace + 30)
            self.loop.close()
            self.loop = None
        if self.control_plane is not None:
            self.control_plane.stop()


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
