"""The real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, built from Go modules by tools/kube/build.sh (cached outside the work tree).

    cp = ControlPlane(workdir).start()   # certificates, tokens, service-account keys, processes
    cp.admin_kubeconfig                  # system:masters
    cp.token_kubeconfig(path, token)     # a kubeconfig for any bearer token (a ServiceAccount's)
    cp.stop()

Authentication: client certificates from the kit's CA are accepted, and a static token file gives
the admin, the controller-manager, the scheduler and the node agent their identities.
Authorization is Node,RBAC as on a real cluster, so a ServiceAccount sees exactly what its Roles
grant. Every port is a free one on 127.0.0.1; state lives under `workdir`; logs in
`workdir/<component>.log`.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .process import set_pdeathsig

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tools" / "kube" / "build.sh"
START_TIMEOUT = 90.0

# Users of the static token file: name -> groups.
USERS = {
    "kit-admin": ["system:masters"],
    "system:kube-controller-manager": [],
    "system:kube-scheduler": [],
    # The node agent also provisions volumes (a provisioner's rights), so it is an admin too.
    "kit-node-agent": ["system:masters"],
}


def kube_bin_dir() -> Path:
    """The control plane's bin directory: $SLUICE_KUBE_BIN, else what tools/kube/build.sh built
    (it builds on the first call on a machine, about 15 minutes on 2 cores, then only looks)."""
    if os.environ.get("SLUICE_KUBE_BIN"):
        return Path(os.environ["SLUICE_KUBE_BIN"])
    out = subprocess.run(["bash", str(BUILD)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_pki(pki: Path):
    """A CA, the API server's serving certificate (127.0.0.1, localhost and the in-cluster
    names) and the service-account signing key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=sluice-kit-ca", cwd=pki)
    _openssl("req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver",
             cwd=pki)
    (pki / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "3650", "-extfile", "apiserver.ext", cwd=pki)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, user: str = "kit",
                     namespace: str = "default") -> Path:
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kit",
        "clusters": [{"name": "kit", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kit", "context": {"cluster": "kit", "user": user, "namespace": namespace}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


class ControlPlane:
    def __init__(self, workdir: Path | str, bin_dir: Path | None = None):
        self.dir = Path(workdir)
        self.bin = bin_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.tokens = {user: secrets.token_hex(16) for user in USERS}
        self.pki = self.dir / "pki"
        self.url = ""
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"
        self.ports: dict[str, int] = {}  # component -> its secure (health) port

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> "ControlPlane":
        self.bin = self.bin or kube_bin_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        (self.dir / "tokens.csv").write_text("".join(
            f'{tok},{user},{user},"{",".join(USERS[user])}"\n' for user, tok in self.tokens.items()))
        deadline = time.monotonic() + timeout
        try:
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            for user, name in (("system:kube-controller-manager", "controller-manager"),
                               ("system:kube-scheduler", "scheduler")):
                self.kubeconfig_for(user, self.dir / f"{name}.kubeconfig")
            self._start_controller_manager()
            self._start_scheduler()
            self._wait_healthy("kube-controller-manager", deadline)
            self._wait_healthy("kube-scheduler", deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 10.0):
        """Stops the components in reverse order of their start (etcd last)."""
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()

    def kubeconfig_for(self, user: str, path: Path) -> Path:
        return write_kubeconfig(path, self.url, self.pki / "ca.crt", self.tokens[user], user)

    def token_kubeconfig(self, path: Path, token: str, user: str, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.url, self.pki / "ca.crt", token, user, namespace)

    def log(self, component: str) -> Path:
        return self.dir / f"{component}.log"

    # --- components ------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]):
        with open(self.log(name), "ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.dir, preexec_fn=set_pdeathsig)

    def _check_alive(self, name: str):
        p = self.procs[name]
        if p.poll() is not None:
            tail = self.log(name).read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")

    def _wait(self, name: str, deadline: float, probe):
        last = None
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError, ValueError) as e:
                last = e
            time.sleep(0.2)
        tail = self.log(name).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} not ready in time (last: {last!r}):\n{tail}")

    def _start_etcd(self, deadline: float):
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            "--name=kit", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=kit=http://127.0.0.1:{peer}",
            # Test data: losing it on a power cut is fine, an fsync per write is not.
            "--unsafe-no-fsync", "--log-level=warn",
        ])

        def healthy():
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return b'"true"' in r.read()

        self._wait("etcd", deadline, healthy)

    def _start_apiserver(self, deadline: float):
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        pki = self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--advertise-address=127.0.0.1",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.dir / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            # Addresses for ClusterIP Services; nothing routes to them here (no kube-proxy).
            "--service-cluster-ip-range=10.96.0.0/16",
            # The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints reject.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        req = urllib.request.Request(f"{self.url}/readyz",
                                     headers={"Authorization": f"Bearer {self.tokens['kit-admin']}"})

        def ready():
            with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
                return r.status == 200

        self._wait("kube-apiserver", deadline, ready)
        self.kubeconfig_for("kit-admin", self.admin_kubeconfig)

    def _start_controller_manager(self):
        kc = self.dir / "controller-manager.kubeconfig"
        self.ports["kube-controller-manager"] = port = free_port()
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}", "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-key-file={self.pki / 'ca.key'}",
            "--profiling=false", "--v=1",
        ])

    def _start_scheduler(self):
        kc = self.dir / "scheduler.kubeconfig"
        self.ports["kube-scheduler"] = port = free_port()
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            "--profiling=false", "--v=1",
        ])

    def _wait_healthy(self, name: str, deadline: float):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # their serving certificates are self-signed

        def healthy():
            with urllib.request.urlopen(f"https://127.0.0.1:{self.ports[name]}/healthz", timeout=3,
                                        context=ctx) as r:
                return r.status == 200

        self._wait(name, deadline, healthy)
