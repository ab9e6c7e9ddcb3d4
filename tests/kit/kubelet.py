"""A local kubelet (plus the StatefulSet controller it needs): watches StatefulSets through any
API server given a kubeconfig and runs their pods as local processes.

Per StatefulSet: Pod objects for ordinals 0..replicas-1 (labels `apps.kubernetes.io/pod-index`,
`statefulset.kubernetes.io/pod-name`, `controller-revision-hash`; owner reference to the set),
a PersistentVolumeClaim per volume claim template and pod, backed by the host directory
`<workdir>/pvc/<ns>/<claim>/` (kept when the pod goes, deleted when the PVC object is), each pod a
process of the container's command (command[0] mapped through `binaries`, e.g. sluice-broker ->
target/release/sluice-broker; the image is ignored) with the resolved args and env, on its own
loopback IP (podspec.py explains the host translation). Pod status (phase, podIP, Ready and
ContainersReady conditions, containerStatuses with restartCount) follows the process and the
readiness probe (HTTP GET on the pod IP, every min(periodSeconds, probe_interval) seconds,
failureThreshold honoured); a process that exits is restarted with backoff (restartPolicy Always).
The StatefulSet status (replicas, readyReplicas, availableReplicas, currentReplicas,
updatedReplicas, observedGeneration, currentRevision, updateRevision) is kept current.

Scaling: podManagementPolicy Parallel creates and deletes pods at once, OrderedReady one at a
time (creation in ordinal order behind readiness, deletion highest first); a deleted pod's
process gets SIGTERM, then SIGKILL after terminationGracePeriodSeconds (capped by max_grace).
persistentVolumeClaimRetentionPolicy.whenScaled=Delete deletes the claims of removed ordinals.
Rolling update (updateStrategy RollingUpdate, with rollingUpdate.partition): when the template
revision changes, the highest ordinal on an old revision is deleted and recreated, one at a time,
only while every pod is Ready, so each new pod's readiness gates the next.

Probes: startup gates readiness and liveness; startup and readiness run every
min(periodSeconds, probe_interval) seconds, liveness at its real period (a paused process is
restarted no sooner than on a cluster); failing startup or liveness restarts the container
(SIGTERM, SIGKILL after the grace period). exec and tcpSocket probes count as passing while the
process runs.

Not done: init containers and more than one
container per pod (the first container runs), resources, security contexts, images, volumes other
than configMap, emptyDir and claims, ConfigMap updates reaching running pods.

Fault injection (for tests): kill(ns, pod) SIGKILLs the process (it restarts, as a crashed
container does), pause/resume SIGSTOP/SIGCONT it; deleting the Pod object through the API stops
it and the StatefulSet recreates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import podspec
from .client import KubeClient, KubeError

log = logging.getLogger("kit.kubelet")

STS = ("apps/v1", "statefulsets")


def _set_pdeathsig():  # in the child: die with the thread that started us
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class IpPool:
    """Stable loopback addresses: 127.A.B.2 .. 127.A.B.254 for one kit."""

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
    """One pod: its process, readiness, and status reporting."""

    def __init__(self, kubelet: "Kubelet", pod: dict, sts_key: tuple, ordinal: int, ip: str):
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name = meta["namespace"], meta["name"]
        self.sts_key, self.ordinal, self.ip = sts_key, ordinal, ip
        self.revision = meta["labels"][podspec.REVISION_LABEL]
        self.uid = meta.get("uid")
        self.container = (pod["spec"].get("containers") or [{}])[0]
        self.dir = kubelet.workdir / "pods" / self.ns / self.name
        self.log_path = self.dir / "container.log"
        self.proc: subprocess.Popen | None = None
        self.ready = False
        self.restarts = 0
        self.started_at: str | None = None
        self.terminating = False
        self.gone = asyncio.Event()
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

        async def cm_data(name):
            if name not in configmaps:
                obj = await k.client.get("v1", "configmaps", name, self.ns, ok_404=True)
                configmaps[name] = None if obj is None else (obj.get("data") or {})
            return configmaps[name]

        for m in self.container.get("volumeMounts") or []:
            v = volumes.get(m["name"])
            if v is None:
                raise ValueError(f"volume {m['name']} not found")
            if v.get("persistentVolumeClaim"):
                host = k.claim_dir(self.ns, v["persistentVolumeClaim"]["claimName"])
            elif v.get("configMap"):
                host = vol_dir / m["name"]
                data = await cm_data(v["configMap"]["name"])
                if data is None and not v["configMap"].get("optional"):
                    raise ValueError(f"configmap {v['configMap']['name']} not found")
                items = v["configMap"].get("items") or [{"key": key, "path": key} for key in (data or {})]
                for it in items:
                    if data and it["key"] in data:
                        files.append((host / it["path"], data[it["key"]]))
            elif "emptyDir" in v:
                host = vol_dir / m["name"]
            else:
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
        env = podspec.resolve_env(self.container, self.pod, lambda n: configmaps.get(n))
        env = {name: translate(value) for name, value in env.items()}
        command = self.container.get("command") or []
        args = self.container.get("args") or []
        argv = [translate(podspec.expand(a, env)) for a in command + args]
        if not argv:
            raise ValueError("the container has no command (images are not run)")
        argv[0] = k.binary(argv[0])
        return argv, env, self.dir

    def _spawn(self, argv, env, cwd):
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd),
                    "RUST_BACKTRACE": "1", "NO_COLOR": "1", **env}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== {time.strftime('%H:%M:%S')} start #{self.restarts + 1} on {self.ip}: "
                    f"{' '.join(argv)}\n".encode())
            f.flush()
            self.proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig,
                                         start_new_session=True)
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    async def run(self):
        """Runs the container until terminate(); restarts it when it exits."""
        backoff = 1.0
        try:
            while not self.terminating:
                try:
                    argv, env, cwd = await self._prepare()
                    self._spawn(argv, env, cwd)
                except (ValueError, OSError, KubeError) as e:
                    log.warning("pod %s/%s cannot start: %s", self.ns, self.name, e)
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
        finally:
            self.gone.set()

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

    async def _restart_container(self, why: str):
        """Stops the process (SIGTERM, SIGKILL after the grace period); run() starts it again."""
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== kit: {why}, restarting the container\n".encode())
        proc = self.proc
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.kubelet.grace_for(self.pod)
        while proc.poll() is None and time.monotonic() < deadline and not self.terminating:
            await asyncio.sleep(0.05)
        if proc.poll() is None and not self.terminating:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            while proc.poll() is None:
                await asyncio.sleep(0.02)
        if proc.poll() is not None:
            self.exit_codes.append(proc.returncode)

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
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
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
            with open(self.log_path, "ab") as f:
                f.write(f"\n===== terminated, exit {proc.returncode}\n".encode())
        if self.task:
            await asyncio.wait([self.task], timeout=5)
        self.gone.set()

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
            "podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": "127.0.0.1",
            "startTime": self.started_at,
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
        self.kubelet.wake()
        if status == self.last_status or self.terminating:
            return
        try:
            await self.kubelet.client.patch("v1", "pods", self.name, {"status": status}, self.ns, sub="status")
            self.last_status = status
        except KubeError as e:
            log.debug("pod %s/%s status: %s", self.ns, self.name, e)
        except Exception as e:  # noqa: BLE001 - the API server may be going away
            log.debug("pod %s/%s status: %s", self.ns, self.name, e)


class Kubelet:
    def __init__(self, kubeconfig: Path | str, workdir: Path | str, ip_base: str,
                 binaries: dict[str, str] | None = None, namespace: str | None = None,
                 probe_interval: float = 1.0, max_grace: float | None = None):
        self.kubeconfig = kubeconfig
        self.workdir = Path(workdir)
        self.ips = IpPool(ip_base)
        self.binaries = dict(binaries or {})
        self.namespace = namespace
        self.probe_interval = probe_interval
        self.max_grace = max_grace
        self.statefulsets: dict[tuple, dict] = {}
        self.pods: dict[tuple, PodRunner] = {}
        self.stopping: dict[tuple, asyncio.Task] = {}
        self.known_pods: dict[tuple, dict] = {}
        self.claims: set[tuple] = set()  # PVC objects this kubelet made sure of
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stop = False
        self.errors: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self):
        import aiohttp

        self.aiohttp = aiohttp
        self.client = KubeClient(self.kubeconfig)
        self.http = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._watch_loop(STS, self._on_sts)),
            asyncio.create_task(self._watch_loop(("v1", "pods"), self._on_pod)),
            asyncio.create_task(self._watch_loop(("v1", "persistentvolumeclaims"), self._on_pvc)),
            asyncio.create_task(self._reconcile_loop()),
        ]

    async def stop(self, grace: float = 10.0):
        """Stops every pod (SIGTERM, SIGKILL after `grace`), then the watches."""
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

    def wake(self):
        self._wake.set()

    def binary(self, command: str) -> str:
        if command in self.binaries:
            return str(self.binaries[command])
        if os.path.isabs(command):
            return command
        found = shutil.which(command)
        if not found:
            raise ValueError(f"command {command!r} not found (map it with binaries)")
        return found

    def claim_dir(self, ns: str, claim: str) -> Path:
        return self.workdir / "pvc" / ns / claim

    def resolve(self, pod: str, service: str, ns: str) -> str | None:
        """Cluster DNS for StatefulSet pods: `<pod>.<service>.<ns>.svc` -> the pod's IP."""
        for (sns, sname), sts in self.statefulsets.items():
            if sns != ns or (sts.get("spec") or {}).get("serviceName") != service:
                continue
            ordinal = podspec.ordinal_of(sname, pod)
            if ordinal is not None:
                return self.ips.ip((ns, sname, ordinal))
        return None

    # --- watches ---------------------------------------------------------------------------

    async def _watch_loop(self, kind, handler):
        api_version, plural = kind
        while not self._stop:
            try:
                listing = await self.client.list(api_version, plural, self.namespace)
                seen = set()
                for obj in listing.get("items") or []:
                    seen.add((obj["metadata"].get("namespace"), obj["metadata"]["name"]))
                    await handler("ADDED", obj)
                await handler("RELIST", seen)
                rv = listing["metadata"]["resourceVersion"]
                async for etype, obj in self.client.watch(api_version, plural, self.namespace, rv):
                    if etype == "ERROR":
                        break
                    if etype == "BOOKMARK":
                        continue
                    await handler(etype, obj)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect and relist
                if not self._stop:
                    log.debug("watch %s: %s", plural, e)
                    await asyncio.sleep(0.5)

    async def _on_sts(self, etype, obj):
        if etype == "RELIST":
            for key in list(self.statefulsets):
                if key not in obj:
                    del self.statefulsets[key]
        else:
            key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
            if etype == "DELETED":
                self.statefulsets.pop(key, None)
            else:
                self.statefulsets[key] = obj
        self.wake()

    async def _on_pod(self, etype, obj):
        if etype == "RELIST":
            for key in list(self.known_pods):
                if key not in obj:
                    del self.known_pods[key]
                    self._pod_gone(key)
            self.wake()
            return
        key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if etype == "DELETED":
            self.known_pods.pop(key, None)
            runner = self.pods.get(key)
            if runner and runner.uid == obj["metadata"].get("uid"):
                self._pod_gone(key)
        else:
            self.known_pods[key] = obj
        self.wake()

    async def _on_pvc(self, etype, obj):
        if etype != "DELETED":
            return
        ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
        self.claims.discard((ns, name))
        in_use = any(
            r.ns == ns and not r.terminating
            and any((v.get("persistentVolumeClaim") or {}).get("claimName") == name for v in r.pod["spec"].get("volumes") or [])
            for r in self.pods.values())
        if not in_use:  # a claim in use keeps its directory, as a PVC in use waits for its pod
            shutil.rmtree(self.claim_dir(ns, name), ignore_errors=True)

    def grace_for(self, pod: dict) -> float:
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30) or 0)
        return min(grace, self.max_grace) if self.max_grace is not None else grace

    def _pod_gone(self, key):
        """The Pod object is gone: stop its process."""
        runner = self.pods.pop(key, None)
        if runner is None:
            return
        grace = self.grace_for(runner.pod)

        async def finish():
            await runner.terminate(grace)
            shutil.rmtree(runner.dir / "volumes", ignore_errors=True)
            self.stopping.pop(key, None)
            self.wake()

        self.stopping[key] = asyncio.create_task(finish())

    # --- reconcile -------------------------------------------------------------------------

    async def _reconcile_loop(self):
        while not self._stop:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            for key in list(self.statefulsets):
                try:
                    await self._reconcile(key)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - logged, retried on the next pass
                    self._error(f"reconcile {key}: {type(e).__name__}: {e}")
            # Pods of StatefulSets that are gone.
            for key, runner in list(self.pods.items()):
                if runner.sts_key not in self.statefulsets:
                    try:
                        await self._delete_pod(runner)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:  # noqa: BLE001 - retried on the next pass
                        self._error(f"delete pod {key}: {type(e).__name__}: {e}")

    def _error(self, msg: str):
        log.warning(msg)
        self.errors.append(msg)
        del self.errors[:-100]

    async def _reconcile(self, key):
        sts = self.statefulsets[key]
        ns, name = key
        spec = sts.get("spec") or {}
        replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        revision = podspec.template_revision(sts)
        parallel = spec.get("podManagementPolicy") == "Parallel"
        mine = {r.ordinal: r for r in self.pods.values() if r.sts_key == key}
        stopping = {podspec.ordinal_of(name, k[1]) for k in self.stopping if k[0] == ns}
        stopping.discard(None)

        # Claims for every ordinal that should run.
        for ordinal in range(replicas):
            pod = podspec.pod_name(sts, ordinal)
            for claim in spec.get("volumeClaimTemplates") or []:
                cname = podspec.claim_name(claim["metadata"]["name"], pod)
                self.claim_dir(ns, cname).mkdir(parents=True, exist_ok=True)
                if (ns, cname) not in self.claims:
                    try:
                        await self.client.create(podspec.pvc_for(sts, claim, pod), ns)
                    except KubeError as e:
                        if e.code != 409:
                            raise
                    self.claims.add((ns, cname))

        # Scale down: highest ordinal first (all at once for Parallel).
        excess = sorted((o for o in mine if o >= replicas), reverse=True)
        for ordinal in excess:
            if not parallel and (stopping or ordinal != excess[0]):
                break
            await self._delete_pod(mine.pop(ordinal))
        if excess and (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenScaled") == "Delete":
            for ordinal in excess:
                pod = podspec.pod_name(sts, ordinal)
                for claim in spec.get("volumeClaimTemplates") or []:
                    cname = podspec.claim_name(claim["metadata"]["name"], pod)
                    await self.client.delete("v1", "persistentvolumeclaims", cname, ns)
                    self.claims.discard((ns, cname))

        # Scale up / recreate.
        for ordinal in range(replicas):
            if ordinal in mine or ordinal in stopping:
                continue
            if not parallel and not all(mine.get(o) and mine[o].ready for o in range(ordinal)):
                break
            runner = await self._create_pod(sts, ordinal, revision)
            if runner:
                mine[ordinal] = runner

        # Rolling update: one pod at a time, only while all are ready.
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0) or 0)
            all_ready = (len(mine) == replicas and not stopping and
                         all(r.ready and not r.terminating for r in mine.values()))
            if all_ready:
                old = sorted((o for o, r in mine.items() if r.revision != revision and o >= partition),
                             reverse=True)
                if old:
                    await self._delete_pod(mine.pop(old[0]))

        await self._update_status(sts, mine, revision, replicas)

    async def _create_pod(self, sts, ordinal, revision) -> PodRunner | None:
        ns = sts["metadata"]["namespace"]
        pod = podspec.pod_for(sts, ordinal, revision)
        name = pod["metadata"]["name"]
        existing = self.known_pods.get((ns, name))
        if existing is not None:
            # Left from an earlier kubelet, or not yet seen gone: replace it.
            await self.client.delete("v1", "pods", name, ns)
            self.known_pods.pop((ns, name), None)
        try:
            created = await self.client.create(pod, ns)
        except KubeError as e:
            if e.code == 409:
                return None
            raise
        self.known_pods[(ns, name)] = created
        ip = self.ips.ip((ns, sts["metadata"]["name"], ordinal))
        runner = PodRunner(self, created, (ns, sts["metadata"]["name"]), ordinal, ip)
        self.pods[(ns, name)] = runner
        runner.task = asyncio.create_task(runner.run())
        return runner

    async def _delete_pod(self, runner: PodRunner):
        key = (runner.ns, runner.name)
        await self.client.delete("v1", "pods", runner.name, runner.ns)
        self.known_pods.pop(key, None)
        self._pod_gone(key)

    async def _update_status(self, sts, mine: dict, revision: str, replicas: int):
        pods = list(mine.values())
        ready = sum(1 for r in pods if r.ready)
        updated = sum(1 for r in pods if r.revision == revision)
        current_status = sts.get("status") or {}
        current_rev = current_status.get("currentRevision") or revision
        if updated == replicas and len(pods) == replicas:
            current_rev = revision
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
            "currentReplicas": sum(1 for r in pods if r.revision == current_rev),
            "updatedReplicas": updated, "currentRevision": current_rev, "updateRevision": revision,
            "collisionCount": 0,
        }
        if all(current_status.get(k) == v for k, v in status.items()):
            return
        out = await self.client.patch("apps/v1", "statefulsets", sts["metadata"]["name"], {"status": status},
                                      sts["metadata"]["namespace"], sub="status")
        key = (sts["metadata"]["namespace"], sts["metadata"]["name"])
        if key in self.statefulsets:
            self.statefulsets[key] = out

    # --- fault injection (call on the kubelet's loop) ----------------------------------------

    def runner(self, ns: str, pod: str) -> PodRunner:
        r = self.pods.get((ns, pod))
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
