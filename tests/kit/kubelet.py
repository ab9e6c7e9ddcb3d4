"""The kit's node agent: what a kubelet (and a local-path volume provisioner) does for one Node,
with pods run as local processes, since no container runtime runs here.

It registers the Node `kit-node` (Ready, its Lease renewed as a kubelet does), and then:
- runs every Pod the real scheduler binds to it: a process of the first container's command
  (command[0] mapped through `binaries`, e.g. sluice-broker -> target/release/sluice-broker; the
  image is ignored) with the resolved args and env, on the pod's own loopback address
  (podspec.py explains the host translation); reports the pod's status (phase, podIP, Ready and
  ContainersReady conditions, containerStatuses with restartCount); restarts a process that exits
  (restartPolicy Always, with backoff); runs the probes (startup gates the others; startup and
  readiness every min(periodSeconds, probe_interval) seconds, liveness at its real period so a
  paused process is restarted no sooner than on a cluster; failing startup or liveness restarts the
  container; exec and tcpSocket probes pass while the process runs);
- terminates a pod whose object is being deleted (SIGTERM, SIGKILL after its grace period, capped
  by max_grace), then removes the object (delete with grace 0 and the pod's uid), as the kubelet;
- gives a pod that mounts its ServiceAccount token a kubeconfig for a token bound to the pod
  (TokenRequest) in KUBECONFIG, and the usual files under the service-account mount path: the
  in-cluster path is fixed inside programs and there are no mount namespaces here;
- provisions the claims of the default StorageClass `kit-local` (WaitForFirstConsumer
  binding, as local volumes have): a
  PersistentVolume per claim, a host directory each, bound by the real PV controller; a
  Released volume is deleted with its directory (reclaimPolicy Delete).
The StatefulSet, ReplicaSet, garbage-collector and namespace controllers are the real ones in
kube-controller-manager.

Not done: init and sidecar containers (only the first container runs), images, resources,
security contexts, volumes other than configMap, secret, emptyDir, the service-account token and
claims; ConfigMap changes reaching running pods.

Fault injection (for tests): kill(ns, pod) SIGKILLs the process (it restarts, as a crashed
container does), pause/resume SIGSTOP/SIGCONT it. Each pod's pid is in `pods/<ns>/<pod>/pid`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from . import podspec
from .client import KubeClient, KubeError
from .process import set_pdeathsig

log = logging.getLogger("kit.kubelet")

NODE = "kit-node"
# The Node's InternalIP and every pod's status.hostIP (the downward API's `status.hostIP`).
NODE_IP = "127.0.0.1"
PROVISIONER = "kit.sluice.dev/local-path"
STORAGE_CLASS = "kit-local"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
LEASE_SECONDS = 40


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class IpPool:
    """Stable loopback addresses, one per pod name: 127.A.B.2 .. 127.A.B.254 for one kit. A pod
    recreated under its name (a StatefulSet's) gets its address back."""

    def __init__(self, base: str):
        parts = base.split(".")
        if len(parts) != 3 or parts[0] != "127":
            raise ValueError(f"IP base must look like 127.A.B, got {base!r}")
        self.base = base
        self.assigned: dict[tuple, str] = {}

    def ip(self, key: tuple) -> str:
        if key not in self.assigned:
            n = len(self.assigned) + 2
            if n > 254:
                raise RuntimeError(f"out of pod addresses in {self.base}.0/24")
            self.assigned[key] = f"{self.base}.{n}"
        return self.assigned[key]


class Probe:
    """Probe timing and thresholds: due() when the next check is to run, record(ok) returns
    True on reaching successThreshold, False on reaching failureThreshold, else None."""

    def __init__(self, spec: dict | None, max_period: float | None):
        self.spec = spec
        spec = spec or {}
        period = float(spec.get("periodSeconds", 10) or 10)
        self.period = min(period, max_period) if max_period else period
        self.delay = float(spec.get("initialDelaySeconds", 0) or 0)
        self.failure_threshold = int(spec.get("failureThreshold", 3) or 3)
        self.success_threshold = int(spec.get("successThreshold", 1) or 1)
        self.start()

    def start(self):
        self.next = time.monotonic() + self.delay
        self.successes = self.failures = 0

    def due(self) -> bool:
        if time.monotonic() < self.next:
            return False
        self.next = time.monotonic() + self.period
        return True

    def record(self, ok: bool) -> bool | None:
        if ok:
            self.failures = 0
            self.successes += 1
            return True if self.successes >= self.success_threshold else None
        self.successes = 0
        self.failures += 1
        return False if self.failures >= self.failure_threshold else None


class PodRunner:
    """One pod: its process, probes, and status reporting."""

    def __init__(self, kubelet: "Kubelet", pod: dict, ip: str):
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.ip = ip
        self.container = (pod["spec"].get("containers") or [{}])[0]
        self.dir = kubelet.workdir / "pods" / self.ns / self.name
        self.log_path = self.dir / "container.log"
        self.proc: subprocess.Popen | None = None
        self.ready = False
        self.restarts = 0
        self.started_at: str | None = None
        self.terminating = False
        self.task: asyncio.Task | None = None
        self.last_status = None
        self.exit_codes: list[int] = []

    # --- process ---------------------------------------------------------------------------

    async def _prepare(self) -> tuple[list[str], dict, Path]:
        """Volumes on the host, then the command and env after resolution and translation."""
        k = self.kubelet
        spec = self.pod["spec"]
        vol_dir = self.dir / "volumes"
        mounts: list[tuple[str, str]] = []
        files: list[tuple[Path, str]] = []
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        configmaps: dict[str, dict | None] = {}
        extra_env: dict[str, str] = {}

        async def cm_data(name):
            if name not in configmaps:
                obj = await k.client.get("v1", "configmaps", name, self.ns, ok_404=True)
                configmaps[name] = None if obj is None else (obj.get("data") or {})
            return configmaps[name]

        def project(host: Path, data: dict | None, source: dict, what: str):
            if data is None and not source.get("optional"):
                raise ValueError(f"{what} not found")
            items = source.get("items") or [{"key": key, "path": key} for key in (data or {})]
            for it in items:
                if data and it["key"] in data:
                    files.append((host / it["path"], data[it["key"]]))

        for m in self.container.get("volumeMounts") or []:
            v = volumes.get(m["name"])
            if v is None:
                raise ValueError(f"volume {m['name']} not found")
            host = vol_dir / m["name"]
            if v.get("persistentVolumeClaim"):
                host = await k.claim_path(self.ns, v["persistentVolumeClaim"]["claimName"])
            elif v.get("configMap"):
                project(host, await cm_data(v["configMap"]["name"]), v["configMap"],
                        f"configmap {v['configMap']['name']}")
            elif v.get("secret"):
                obj = await k.client.get("v1", "secrets", v["secret"]["secretName"], self.ns, ok_404=True)
                data = None if obj is None else {key: base64.b64decode(val).decode(errors="replace")
                                                 for key, val in (obj.get("data") or {}).items()}
                project(host, data, v["secret"], f"secret {v['secret']['secretName']}")
            elif v.get("projected") and m["mountPath"] == SA_MOUNT:
                extra_env.update(await self._service_account(host))
            elif "emptyDir" not in v:
                raise ValueError(f"unsupported volume {m['name']}: {sorted(v)}")
            if m.get("subPath"):
                host = host / m["subPath"]
            host.mkdir(parents=True, exist_ok=True)
            mounts.append((m["mountPath"], str(host)))

        for name in {(e.get("configMapRef") or {}).get("name") for e in self.container.get("envFrom") or []} | {
                ((e.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name")
                for e in self.container.get("env") or []}:
            if name:
                await cm_data(name)

        def translate(text):
            return podspec.translate(text, self.ip, k.resolve, mounts)

        for path, content in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(translate(content))
        # The downward API sees the addresses this agent reports (the watched object may not
        # carry them yet at the first start).
        pod = {**self.pod, "status": {**(self.pod.get("status") or {}), "podIP": self.ip, "hostIP": NODE_IP}}
        env = podspec.resolve_env(self.container, pod, lambda n: configmaps.get(n))
        env = {name: translate(value) for name, value in env.items()}
        env = {**extra_env, **env}
        command = self.container.get("command") or []
        args = self.container.get("args") or []
        argv = [translate(podspec.expand(a, env)) for a in command + args]
        if not argv:
            raise ValueError("the container has no command (images are not run)")
        argv[0] = k.binary(argv[0])
        return argv, env, self.dir

    async def _service_account(self, host: Path) -> dict:
        """The ServiceAccount mount: a token bound to this pod, the cluster's CA and the
        namespace as files, and a kubeconfig using them in KUBECONFIG (programs read the fixed
        in-cluster path, which cannot be mounted here; kube-rs and client-go take KUBECONFIG
        first)."""
        k = self.kubelet
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 86400,
                        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        out = await k.client.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", req)
        token = out["status"]["token"]
        host.mkdir(parents=True, exist_ok=True)
        (host / "token").write_text(token)
        (host / "namespace").write_text(self.ns)
        shutil.copyfile(k.ca_file, host / "ca.crt")
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": {"server": k.client.conn.server,
                                                            "certificate-authority": str(host / "ca.crt")}}],
            "users": [{"name": sa, "user": {"tokenFile": str(host / "token")}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": sa,
                                                             "namespace": self.ns}}],
        }
        (host / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        hostport = k.client.conn.server.removeprefix("https://")
        return {"KUBECONFIG": str(host / "kubeconfig"), "KUBERNETES_SERVICE_HOST": hostport.rsplit(":", 1)[0],
                "KUBERNETES_SERVICE_PORT": hostport.rsplit(":", 1)[1]}

    def _spawn(self, argv, env, cwd):
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd),
                    "RUST_BACKTRACE": "1", "NO_COLOR": "1", **env}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== {time.strftime('%H:%M:%S')} start #{self.restarts + 1} on {self.ip}: "
                    f"{' '.join(argv)}\n".encode())
            f.flush()
            self.proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, preexec_fn=set_pdeathsig,
                                         start_new_session=True)
        (self.dir / "pid").write_text(f"{self.proc.pid}\n")
        self.started_at = _now()

    async def run(self):
        """Runs the container until terminate(); restarts it when it exits."""
        backoff = 1.0
        while not self.terminating:
            try:
                argv, env, cwd = await self._prepare()
                if self.terminating:
                    break
                self._spawn(argv, env, cwd)
            except (ValueError, OSError, KubeError) as e:
                log.info("pod %s/%s cannot start: %s", self.ns, self.name, e)
                with open(self.log_path, "ab") as f:
                    f.write(f"kit: cannot start: {e}\n".encode())
                await self._report(waiting=str(e))
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            await self._report()
            await self._watch_process()
            if self.terminating:
                break
            self.restarts += 1
            self.ready = False
            await self._report()
            await self._sleep(backoff)
            backoff = min(backoff * 2, 10)

    async def _sleep(self, seconds):
        end = time.monotonic() + seconds
        while not self.terminating and time.monotonic() < end:
            await asyncio.sleep(0.05)

    async def _watch_process(self):
        """Runs the probes until the process exits or the pod terminates. As the kubelet: the
        startup probe gates the others; readiness sets Ready; liveness failing failureThreshold
        times in a row restarts the container. Startup and readiness run every
        min(periodSeconds, probe_interval) so tests do not wait for production periods; liveness
        keeps its real period, so a container is never killed sooner than on a cluster."""
        c = self.container
        startup = Probe(c.get("startupProbe"), self.kubelet.probe_interval)
        readiness = Probe(c.get("readinessProbe"), self.kubelet.probe_interval)
        liveness = Probe(c.get("livenessProbe"), None)
        started = startup.spec is None
        while self.proc.poll() is None and not self.terminating:
            if not started:
                if startup.due():
                    result = startup.record(await self._probe(startup.spec))
                    if result is True:
                        started = True
                        readiness.start()
                        liveness.start()
                    elif result is False:
                        await self._restart_container("startup probe failed")
                        return
            else:
                if readiness.spec is None:
                    if not self.ready:
                        self.ready = True
                        await self._report()
                elif readiness.due():
                    result = readiness.record(await self._probe(readiness.spec))
                    if result is True and not self.ready:
                        self.ready = True
                        await self._report()
                    elif result is False and self.ready:
                        self.ready = False
                        await self._report()
                if liveness.spec is not None and liveness.due():
                    if liveness.record(await self._probe(liveness.spec)) is False:
                        await self._restart_container("liveness probe failed")
                        return
            await asyncio.sleep(0.05)
        if self.proc.poll() is not None and not self.terminating:
            self.exit_codes.append(self.proc.returncode)
            with open(self.log_path, "ab") as f:
                f.write(f"\n===== exited with {self.proc.returncode}\n".encode())

    async def _stop_process(self, grace: float):
        """SIGTERM (after SIGCONT: a paused process cannot act on it), SIGKILL after `grace`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            while proc.poll() is None:
                await asyncio.sleep(0.02)
        self.exit_codes.append(proc.returncode)

    async def _restart_container(self, why: str):
        """Stops the process; run() starts it again."""
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== kit: {why}, restarting the container\n".encode())
        await self._stop_process(self.kubelet.grace_for(self.pod))

    async def _probe(self, probe) -> bool:
        get = probe.get("httpGet")
        if not get:
            return self.proc.poll() is None  # exec/tcp probes: the process is up
        try:
            port = podspec.http_port(self.container, get.get("port"))
        except ValueError:
            return False
        url = f"http://{get.get('host') or self.ip}:{port}{get.get('path') or '/'}"
        timeout = float(probe.get("timeoutSeconds", 1) or 1)
        try:
            async with self.kubelet.http.get(url, timeout=self.kubelet.aiohttp.ClientTimeout(total=timeout)) as r:
                return 200 <= r.status < 400
        except (OSError, asyncio.TimeoutError, self.kubelet.aiohttp.ClientError):
            return False

    async def terminate(self, grace: float):
        """SIGTERM, then SIGKILL after `grace` seconds; waits until the process is gone."""
        self.terminating = True
        self.ready = False
        if self.proc is not None and self.proc.poll() is None:
            await self._stop_process(grace)
            with open(self.log_path, "ab") as f:
                f.write(f"\n===== terminated, exit {self.proc.returncode}\n".encode())
        if self.task:
            await asyncio.wait([self.task], timeout=5)

    def kill_now(self):
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    # --- status ----------------------------------------------------------------------------

    def status(self, waiting: str | None = None) -> dict:
        running = self.proc is not None and self.proc.poll() is None
        ready = "True" if (self.ready and running) else "False"
        state = ({"running": {"startedAt": self.started_at}} if running else
                 {"waiting": {"reason": "CrashLoopBackOff" if self.restarts else "ContainerCreating",
                              **({"message": waiting} if waiting else {})}})
        cond = lambda t, s: {"type": t, "status": s, "lastProbeTime": None}  # noqa: E731
        return {
            "phase": "Running" if running else "Pending",
            "podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}], "startTime": self.started_at,
            "conditions": [cond("PodScheduled", "True"), cond("Initialized", "True"),
                           cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": [{
                "name": self.container.get("name", "main"), "ready": ready == "True",
                "started": running, "restartCount": self.restarts,
                "image": self.container.get("image", ""), "imageID": "", "state": state,
            }],
        }

    async def _report(self, waiting: str | None = None):
        status = self.status(waiting)
        if status == self.last_status or self.terminating:
            return
        try:
            await self.kubelet.client.patch("v1", "pods", self.name, {"status": status}, self.ns, sub="status")
            self.last_status = status
        except Exception as e:  # noqa: BLE001 - the pod or the API server may be going away
            log.debug("pod %s/%s status: %s", self.ns, self.name, e)


class Kubelet:
    def __init__(self, kubeconfig: Path | str, ca_file: Path | str, workdir: Path | str, ip_base: str,
                 binaries: dict[str, str] | None = None, probe_interval: float = 1.0,
                 max_grace: float | None = None, version: str = "v0.0.0"):
        self.kubeconfig = kubeconfig
        self.ca_file = Path(ca_file)
        self.workdir = Path(workdir)
        self.ips = IpPool(ip_base)
        self.binaries = dict(binaries or {})
        self.probe_interval = probe_interval
        self.max_grace = max_grace
        self.version = version
        self.pods: dict[str, PodRunner] = {}        # by uid: pods this agent runs
        self.stopping: dict[str, asyncio.Task] = {}  # by uid: pods being terminated
        self._tasks: list[asyncio.Task] = []
        self._stop = False
        self.errors: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self):
        import aiohttp

        self.aiohttp = aiohttp
        self.client = KubeClient(self.kubeconfig)
        self.http = aiohttp.ClientSession()
        await self._register_node()
        await self._ensure_storage_class()
        self._tasks = [
            asyncio.create_task(self._watch_loop(("v1", "pods"), self._on_pod, f"spec.nodeName={NODE}")),
            asyncio.create_task(self._watch_loop(("v1", "persistentvolumeclaims"), self._on_pvc)),
            asyncio.create_task(self._watch_loop(("v1", "persistentvolumes"), self._on_pv)),
            asyncio.create_task(self._heartbeat()),
        ]

    async def stop(self, grace: float = 10.0):
        """Stops every pod's process (SIGTERM, SIGKILL after `grace`), then the watches. The Pod
        objects stay, as when a node goes down."""
        self._stop = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(r.terminate(grace) for r in self.pods.values()), return_exceptions=True)
        await asyncio.gather(*self.stopping.values(), return_exceptions=True)
        for r in self.pods.values():
            r.kill_now()
        await self.http.close()
        await self.client.close()

    def binary(self, command: str) -> str:
        if command in self.binaries:
            return str(self.binaries[command])
        if os.path.isabs(command):
            return command
        found = shutil.which(command)
        if not found:
            raise ValueError(f"command {command!r} not found (map it with binaries)")
        return found

    def pod_ip(self, ns: str, pod: str) -> str:
        return self.ips.ip((ns, pod))

    def resolve(self, pod: str, service: str, ns: str) -> str | None:
        """Cluster DNS for pods with a hostname and subdomain (a StatefulSet's):
        `<pod>.<service>.<ns>.svc` -> the pod's address (known before the pod runs)."""
        return self.pod_ip(ns, pod)

    def grace_for(self, pod: dict) -> float:
        meta_grace = pod["metadata"].get("deletionGracePeriodSeconds")
        grace = float(meta_grace if meta_grace is not None else pod["spec"].get("terminationGracePeriodSeconds", 30) or 0)
        return min(grace, self.max_grace) if self.max_grace is not None else grace

    # --- the Node --------------------------------------------------------------------------

    async def _register_node(self):
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
                                                      "kubernetes.io/arch": "amd64"}}}
        try:
            await self.client.create(node)
        except KubeError as e:
            if e.code != 409:
                raise
        await self._node_status()
        await self.client.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": NODE, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _micro_now()},
        }, ok_409=True)

    async def _node_status(self):
        now = _now()
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti"}
        condition = lambda t, s, reason: {  # noqa: E731
            "type": t, "status": s, "reason": reason, "message": "kit node agent",
            "lastHeartbeatTime": now, "lastTransitionTime": now}
        status = {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [condition("Ready", "True", "KubeletReady"),
                           condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                           condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                           condition("PIDPressure", "False", "KubeletHasSufficientPID")],
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE}],
            "nodeInfo": {"kubeletVersion": self.version, "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                         "bootID": "", "kernelVersion": os.uname().release, "osImage": "sluice kit",
                         "containerRuntimeVersion": "kit://processes", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }
        await self.client.patch("v1", "nodes", NODE, {"status": status}, sub="status", kind="strategic")

    async def _heartbeat(self):
        """The node Lease every 10 s and the Ready condition every minute, as a kubelet."""
        last_status = time.monotonic()
        while not self._stop:
            await asyncio.sleep(10)
            try:
                await self.client.patch("coordination.k8s.io/v1", "leases", NODE,
                                        {"spec": {"renewTime": _micro_now()}}, "kube-node-lease")
                if time.monotonic() - last_status > 60:
                    await self._node_status()
                    last_status = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - retried on the next beat
                self._error(f"heartbeat: {e}")

    # --- volumes ---------------------------------------------------------------------------

    async def _ensure_storage_class(self):
        await self.client.request("POST", "/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
            # As local-volume provisioners do: the scheduler picks the node, then the volume is made.
            "volumeBindingMode": "WaitForFirstConsumer",
        }, ok_409=True)

    async def claim_path(self, ns: str, claim: str) -> Path:
        """The host directory of a bound claim (ValueError while it is not bound)."""
        pvc = await self.client.get("v1", "persistentvolumeclaims", claim, ns, ok_404=True)
        if pvc is None:
            raise ValueError(f"persistentvolumeclaim {claim} not found")
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume or (pvc.get("status") or {}).get("phase") != "Bound":
            raise ValueError(f"persistentvolumeclaim {claim} is not bound yet")
        pv = await self.client.get("v1", "persistentvolumes", volume)
        return Path(pv["spec"]["hostPath"]["path"])

    async def _on_pvc(self, etype, pvc):
        """Provisions a PersistentVolume for a pending claim of the kit's provisioner."""
        if etype in ("RELIST", "DELETED"):
            return
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        annotations = meta.get("annotations") or {}
        if spec.get("volumeName") or meta.get("deletionTimestamp"):
            return
        if annotations.get("volume.kubernetes.io/storage-provisioner") != PROVISIONER:
            return  # the PV controller names the provisioner once the claim's class is known
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        path = self.workdir / "pv" / ns / f"{name}-{uid[:8]}"
        path.mkdir(parents=True, exist_ok=True)
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{uid}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or STORAGE_CLASS,
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                             "uid": uid},
                "hostPath": {"path": str(path), "type": "Directory"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}]}]}},
            },
        }
        await self.client.request("POST", "/api/v1/persistentvolumes", pv, ok_409=True)

    async def _on_pv(self, etype, pv):
        """Deletes a Released volume of the kit's provisioner, and its directory."""
        if etype in ("RELIST", "DELETED"):
            return
        if ((pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER
                or (pv.get("status") or {}).get("phase") != "Released"
                or pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete"):
            return
        shutil.rmtree(pv["spec"]["hostPath"]["path"], ignore_errors=True)
        await self.client.delete("v1", "persistentvolumes", pv["metadata"]["name"])

    # --- pods ------------------------------------------------------------------------------

    async def _watch_loop(self, kind, handler, field_selector=None):
        api_version, plural = kind
        while not self._stop:
            try:
                listing = await self.client.list(api_version, plural, field_selector=field_selector)
                seen = set()
                for obj in listing.get("items") or []:
                    seen.add(obj["metadata"]["uid"])
                    await self._handle(handler, "ADDED", obj)
                await handler("RELIST", seen)
                rv = listing["metadata"]["resourceVersion"]
                async for etype, obj in self.client.watch(api_version, plural, resource_version=rv,
                                                          field_selector=field_selector):
                    if etype == "ERROR":
                        break
                    if etype != "BOOKMARK":
                        await self._handle(handler, etype, obj)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect and relist
                if not self._stop:
                    log.debug("watch %s: %s", plural, e)
                    await asyncio.sleep(0.5)

    async def _handle(self, handler, etype, obj):
        try:
            await handler(etype, obj)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - logged; the next event or relist retries
            self._error(f"{etype} {obj['kind'] if 'kind' in obj else ''} {obj['metadata'].get('name')}: "
                        f"{type(e).__name__}: {e}")

    async def _on_pod(self, etype, pod):
        if etype == "RELIST":
            for uid in [u for u in self.pods if u not in pod]:
                self._terminate(uid, delete_object=False)
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        if etype == "DELETED":
            self._terminate(uid, delete_object=False)
            return
        if meta.get("deletionTimestamp"):
            if uid in self.pods:
                self.pods[uid].pod = pod
                self._terminate(uid, delete_object=True)
            elif uid not in self.stopping:
                await self._delete_object(pod)
            return
        runner = self.pods.get(uid)
        if runner is not None:
            runner.pod = pod
            return
        if uid in self.stopping:
            return
        runner = PodRunner(self, pod, self.pod_ip(meta["namespace"], meta["name"]))
        self.pods[uid] = runner
        runner.task = asyncio.create_task(runner.run())

    def _terminate(self, uid: str, delete_object: bool):
        """Stops a pod's process; then, for a pod being deleted gracefully, removes its object."""
        runner = self.pods.pop(uid, None)
        if runner is None:
            return
        grace = self.grace_for(runner.pod)

        async def finish():
            try:
                await runner.terminate(grace)
                shutil.rmtree(runner.dir / "volumes", ignore_errors=True)
                if delete_object:
                    await self._delete_object(runner.pod)
            except Exception as e:  # noqa: BLE001 - logged
                self._error(f"terminate {runner.ns}/{runner.name}: {e}")
            finally:
                self.stopping.pop(uid, None)

        self.stopping[uid] = asyncio.create_task(finish())

    async def _delete_object(self, pod: dict):
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}
        try:
            await self.client.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                      body, ok_404=True)
        except KubeError as e:
            if e.code != 409:  # 409: a new pod of that name already (the uid precondition)
                raise

    def _error(self, msg: str):
        log.warning(msg)
        self.errors.append(msg)
        del self.errors[:-100]

    # --- fault injection (call on the kubelet's loop) ----------------------------------------

    def runner(self, ns: str, pod: str) -> PodRunner:
        r = next((r for r in self.pods.values() if (r.ns, r.name) == (ns, pod)), None)
        if r is None:
            raise KeyError(f"no running pod {ns}/{pod}")
        return r

    def kill(self, ns: str, pod: str):
        self.runner(ns, pod).kill_now()

    def _signal(self, ns: str, pod: str, sig: int):
        proc = self.runner(ns, pod).proc
        if proc is None or proc.poll() is not None:
            raise KeyError(f"pod {ns}/{pod} has no running process (restarting?)")
        os.kill(proc.pid, sig)

    def pause(self, ns: str, pod: str):
        self._signal(ns, pod, signal.SIGSTOP)

    def resume(self, ns: str, pod: str):
        self._signal(ns, pod, signal.SIGCONT)
