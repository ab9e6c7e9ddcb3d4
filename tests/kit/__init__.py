"""End-to-end kit: a local Kubernetes API server and kubelet, so the real sluice-operator and
sluice-broker binaries run together without a Kubernetes cluster.

    kit = Kit(workdir, binaries={"sluice-broker": "/path/to/sluice-broker"})
    kit.start()                 # API server on 127.0.0.1:<free port>, kubeconfig, kubelet
    kit.kube                    # SyncClient for the API server
    kit.start_operator(bin)     # the real operator with KUBECONFIG set
    kit.kill("default", "demo-kafka-1"); kit.pause(...); kit.resume(...)
    kit.stop()                  # operator, pods (SIGTERM, then SIGKILL), kubelet, API server

`python -m tests.kit` (scripts/kit.sh) runs the same for a developer, with a shell.
The pieces: apiserver.py (+ store.py, patch.py, schema.py, selectors.py, resources.py),
kubelet.py (+ podspec.py), client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from . import shims
from .apiserver import ApiServer, LoopThread, write_kubeconfig
from .client import SyncClient
from .kubelet import Kubelet, _set_pdeathsig


def random_ip_base() -> str:
    """A random 127.A.B block (never 127.0.x), so parallel kits do not share pod addresses."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 254)}"


class Kit:
    def __init__(self, workdir: Path | str, binaries: dict[str, str] | None = None,
                 ip_base: str | None = None, kubeconfig: Path | str | None = None,
                 namespace: str | None = None, max_grace: float | None = 30.0,
                 probe_interval: float = 1.0, bootstrap_annotations: bool = True):
        """With `kubeconfig`, the kubelet runs against that API server instead of a local one."""
        self.workdir = Path(workdir)
        self.binaries = binaries or {}
        self.ip_base = ip_base or random_ip_base()
        self.external_kubeconfig = kubeconfig
        self.namespace = namespace
        self.max_grace = max_grace
        self.probe_interval = probe_interval
        self.bootstrap_annotations = bootstrap_annotations
        self._shim = None
        self.loop: LoopThread | None = None
        self.apiserver: ApiServer | None = None
        self.kubelet: Kubelet | None = None
        self.kubeconfig: Path | None = None
        self.operator: subprocess.Popen | None = None
        self.operator_log = self.workdir / "operator.log"

    def start(self) -> "Kit":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.loop = LoopThread("kit")
        if self.external_kubeconfig:
            self.kubeconfig = Path(self.external_kubeconfig)
        else:
            self.apiserver = ApiServer()
            self.loop.run(self.apiserver.start())
            self.kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", self.apiserver.url)
        self.kubelet = Kubelet(self.kubeconfig, self.workdir, self.ip_base, self.binaries,
                               self.namespace, self.probe_interval, self.max_grace)
        self.loop.run(self.kubelet.start())
        if self.apiserver is not None:
            self.apiserver.kubelet = self.kubelet
        if self.bootstrap_annotations:
            async def start_shim():
                self._shim = asyncio.create_task(shims.bootstrap_annotations(self.kubelet))
            self.loop.run(start_shim())
        return self

    @property
    def kube(self) -> SyncClient:
        return SyncClient(self.kubeconfig)

    def call(self, fn, *args):
        """Runs fn(*args) on the kit's event loop thread (where its state lives)."""
        return self.loop.call(fn, *args)

    def kill(self, ns: str, pod: str):
        self.call(self.kubelet.kill, ns, pod)

    def pause(self, ns: str, pod: str):
        self.call(self.kubelet.pause, ns, pod)

    def resume(self, ns: str, pod: str):
        self.call(self.kubelet.resume, ns, pod)

    def pod_ip(self, ns: str, sts: str, ordinal: int) -> str:
        return self.call(self.kubelet.ips.ip, (ns, sts, ordinal))

    def pod_log(self, ns: str, pod: str) -> Path:
        return self.workdir / "pods" / ns / pod / "container.log"

    def start_operator(self, binary: str | Path, *args: str, env: dict | None = None) -> subprocess.Popen:
        """The operator with KUBECONFIG pointing at the kit; stopped by stop()."""
        assert self.operator is None or self.operator.poll() is not None, "operator already running"
        full_env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "RUST_LOG": "info",
                    "NO_COLOR": "1", **(env or {})}
        log = open(self.operator_log, "ab")
        cmd = [str(binary), "run", "--leader-election=false", "--http-listener", "127.0.0.1:0", *args]
        log.write(f"\n===== {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            self.operator = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
        finally:
            log.close()
        return self.operator

    def stop_operator(self, timeout: float = 20.0) -> int | None:
        p = self.operator
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def stop(self, grace: float = 10.0):
        with contextlib.suppress(Exception):
            self.stop_operator()
        if self.loop is None:
            return
        if self._shim is not None:
            self.loop.loop.call_soon_threadsafe(self._shim.cancel)
        if self.kubelet is not None:
            with contextlib.suppress(Exception):
                self.loop.run(self.kubelet.stop(grace), timeout=grace + 30)
        if self.apiserver is not None:
            with contextlib.suppress(Exception):
                self.loop.run(self.apiserver.stop(), timeout=15)
        self.loop.close()
        self.loop = None


def wait_for(cond, timeout: float = 30.0, interval: float = 0.1, msg: str = "condition"):
    """Polls cond() until truthy; returns its value, or raises AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {msg}; last: {last!r}")
        time.sleep(interval)
