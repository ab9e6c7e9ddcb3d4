"""Small Kubernetes API clients driven by a kubeconfig: KubeClient (asyncio, aiohttp) for the
kubelet, SyncClient (urllib) for tests and the CLI.

Kubeconfig support: the current context's cluster `server`, `certificate-authority(-data)`,
`insecure-skip-tls-verify`, and the user's `token`, `tokenFile`, `client-certificate(-data)` /
`client-key(-data)`. Exec and auth-provider plugins are not supported.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml


class KubeError(Exception):
    def __init__(self, code: int, body):
        self.code = code
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {code}: {msg}")

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) else None


@dataclass
class Connection:
    server: str
    namespace: str
    headers: dict
    ssl_context: ssl.SSLContext | None


def _materialise(data_b64: str | None, file: str | None, base: Path) -> str | None:
    if data_b64:
        f = tempfile.NamedTemporaryFile(delete=False, prefix="kit-kubeconfig-")
        f.write(base64.b64decode(data_b64))
        f.close()
        return f.name
    if file:
        p = Path(file)
        return str(p if p.is_absolute() else base / p)
    return None


def load_kubeconfig(path: Path | str, context: str | None = None) -> Connection:
    path = Path(path)
    cfg = yaml.safe_load(path.read_text()) or {}
    ctx_name = context or cfg.get("current-context")
    ctx = next((c["context"] for c in cfg.get("contexts") or [] if c["name"] == ctx_name), None)
    if ctx is None:
        raise ValueError(f"{path}: no context {ctx_name!r}")
    cluster = next(c["cluster"] for c in cfg.get("clusters") or [] if c["name"] == ctx["cluster"])
    user = next((u["user"] for u in cfg.get("users") or [] if u["name"] == ctx.get("user")), {}) or {}
    headers = {"Accept": "application/json", "User-Agent": "sluice-kit"}
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    server = cluster["server"].rstrip("/")
    sslctx = None
    if server.startswith("https://"):
        base = path.parent
        ca = _materialise(cluster.get("certificate-authority-data"), cluster.get("certificate-authority"), base)
        sslctx = ssl.create_default_context(cafile=ca)
        if cluster.get("insecure-skip-tls-verify"):
            sslctx.check_hostname = False
            sslctx.verify_mode = ssl.CERT_NONE
        cert = _materialise(user.get("client-certificate-data"), user.get("client-certificate"), base)
        key = _materialise(user.get("client-key-data"), user.get("client-key"), base)
        if cert:
            sslctx.load_cert_chain(cert, key)
    return Connection(server, ctx.get("namespace") or "default", headers, sslctx)


def resource_path(api_version: str, plural: str, namespace: str | None = None,
                  name: str | None = None, sub: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


def _query(params: dict | None) -> str:
    params = {k: v for k, v in (params or {}).items() if v is not None}
    return ("?" + urllib.parse.urlencode(params)) if params else ""


CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


class SyncClient:
    """Blocking client (urllib)."""

    def __init__(self, kubeconfig: Path | str, timeout: float = 30.0):
        self.conn = load_kubeconfig(kubeconfig)
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, params: dict | None = None,
                content_type: str = "application/json", ok_404: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.conn.server + path + _query(params), data=data, method=method,
                                     headers={**self.conn.headers, "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.conn.ssl_context) as r:
                raw = r.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace")
            if ok_404 and e.code == 404:
                return None
            raise KubeError(e.code, payload) from None

    def get(self, api_version, plural, name, namespace=None, sub=None, ok_404=False):
        return self.request("GET", resource_path(api_version, plural, namespace, name, sub), ok_404=ok_404)

    def list(self, api_version, plural, namespace=None, label_selector=None, field_selector=None):
        return self.request("GET", resource_path(api_version, plural, namespace),
                            params={"labelSelector": label_selector, "fieldSelector": field_selector})

    def create(self, obj: dict, namespace=None, plural=None, field_manager=None):
        return self.request("POST", resource_path(obj["apiVersion"], plural or _plural(obj["kind"]), namespace),
                            obj, params={"fieldManager": field_manager})

    def replace(self, obj: dict, namespace=None, plural=None, sub=None, field_manager=None):
        return self.request("PUT", resource_path(obj["apiVersion"], plural or _plural(obj["kind"]), namespace,
                                                 obj["metadata"]["name"], sub),
                            obj, params={"fieldManager": field_manager})

    def patch(self, api_version, plural, name, body, namespace=None, sub=None, kind: str = "merge",
              field_manager=None, force=None):
        return self.request("PATCH", resource_path(api_version, plural, namespace, name, sub), body,
                            params={"fieldManager": field_manager, "force": force},
                            content_type=CONTENT_TYPES[kind])

    def apply(self, obj: dict, field_manager: str, namespace=None, plural=None, sub=None, force=True):
        return self.patch(obj["apiVersion"], plural or _plural(obj["kind"]), obj["metadata"]["name"], obj,
                          namespace, sub, "apply", field_manager, "true" if force else None)

    def delete(self, api_version, plural, name, namespace=None, ok_404=False):
        return self.request("DELETE", resource_path(api_version, plural, namespace, name), ok_404=ok_404)


# Plurals of the kinds the kit and its tests name by kind.
PLURALS = {
    "Namespace": "namespaces", "ConfigMap": "configmaps", "Service": "services", "Pod": "pods",
    "PersistentVolumeClaim": "persistentvolumeclaims", "Event": "events", "Secret": "secrets",
    "StatefulSet": "statefulsets", "PodDisruptionBudget": "poddisruptionbudgets", "Lease": "leases",
    "CustomResourceDefinition": "customresourcedefinitions", "KafkaCluster": "kafkaclusters",
    "KafkaTopic": "kafkatopics",
}


def _plural(kind: str) -> str:
    return PLURALS.get(kind) or kind.lower() + "s"


class KubeClient:
    """Asyncio client (aiohttp); call close() when done."""

    def __init__(self, kubeconfig: Path | str):
        import aiohttp

        self.conn = load_kubeconfig(kubeconfig)
        self._aiohttp = aiohttp
        self.session = aiohttp.ClientSession(headers=self.conn.headers)

    async def close(self):
        await self.session.close()

    async def request(self, method, path, body=None, params=None, content_type="application/json",
                      ok_404=False, ok_409=False, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        async with self.session.request(
                method, self.conn.server + path + _query(params), data=data,
                headers={"Content-Type": content_type}, ssl=self.conn.ssl_context or False,
                timeout=self._aiohttp.ClientTimeout(total=timeout)) as r:
            raw = await r.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = raw.decode(errors="replace")
            if r.status >= 400:
                if (ok_404 and r.status == 404) or (ok_409 and r.status == 409):
                    return None
                raise KubeError(r.status, payload)
            return payload

    async def get(self, api_version, plural, name, namespace=None, sub=None, ok_404=False):
        return await self.request("GET", resource_path(api_version, plural, namespace, name, sub), ok_404=ok_404)

    async def list(self, api_version, plural, namespace=None, label_selector=None, field_selector=None):
        return await self.request("GET", resource_path(api_version, plural, namespace),
                                  params={"labelSelector": label_selector, "fieldSelector": field_selector})

    async def create(self, obj, namespace=None, plural=None):
        return await self.request("POST", resource_path(obj["apiVersion"], plural or _plural(obj["kind"]),
                                                        namespace), obj, params={"fieldManager": "sluice-kit"})

    async def patch(self, api_version, plural, name, body, namespace=None, sub=None, kind="merge"):
        return await self.request("PATCH", resource_path(api_version, plural, namespace, name, sub), body,
                                  params={"fieldManager": "sluice-kit"}, content_type=CONTENT_TYPES[kind])

    async def delete(self, api_version, plural, name, namespace=None, ok_404=True):
        return await self.request("DELETE", resource_path(api_version, plural, namespace, name), ok_404=ok_404)

    async def watch(self, api_version, plural, namespace=None, resource_version=None, timeout=290,
                    field_selector=None):
        """Yields (type, object) until the server ends the watch."""
        params = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout),
                  "allowWatchBookmarks": "true", "fieldSelector": field_selector}
        async with self.session.get(
                self.conn.server + resource_path(api_version, plural, namespace) + _query(params),
                ssl=self.conn.ssl_context or False,
                timeout=self._aiohttp.ClientTimeout(total=None, sock_read=timeout + 30)) as r:
            if r.status >= 400:
                raise KubeError(r.status, await r.text())
            async for line in r.content:
                line = line.strip()
                if line:
                    ev = json.loads(line)
                    yield ev["type"], ev["object"]
