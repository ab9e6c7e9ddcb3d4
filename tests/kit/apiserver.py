"""A local Kubernetes API server (test support, never shipped): plain HTTP on 127.0.0.1,
in-memory, speaking enough of the REST API for sluice-operator (kube-rs), the kit's kubelet and
kubectl (`--validate=false`; server-side apply recommended).

Served: discovery (/version, /api, /apis, resource lists with subresources), CRUD, list and watch
(resourceVersion resumption, 410 Gone for compacted versions, bookmarks, sendInitialEvents) for
the built-in kinds in resources.py and for every kind a CustomResourceDefinition adds, label and
field selectors, merge / JSON / strategic-merge (approximated as merge) patches and server-side
apply, and the semantics in store.py.

Also served: Table output for kubectl get (tables.py).

Not served: authentication and authorization (everything is allowed), protobuf,
OpenAPI documents (/openapi/* is 404, hence kubectl's --validate=false), paging (`limit` is
ignored, lists are complete), foreground/orphan deletion (deletion always cascades in the
background), CEL validation rules, admission webhooks, pod graceful deletion (a deleted pod is
gone at once; the kubelet stops its process when it sees the DELETED event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from pathlib import Path

import yaml
from aiohttp import web

from . import tables
from .patch import PatchError, json_patch, merge_patch
from .resources import api_resource
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import ApiError, Store, Watcher

VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-sluice-kit", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "python",
           "compiler": "kit", "platform": "linux/amd64"}

BOOKMARK_INTERVAL = 5.0


def _json(body, status=200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def _error(e: ApiError) -> web.Response:
    return _json(e.status(), e.code)


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


class ApiServer:
    """The server; start() on a running event loop, or use ApiServerThread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.store = Store()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.requests = 0
        self.kubelet = None  # set by Kit: enables the /kit/v1 fault-injection endpoints

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self):
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port picked for port 0

    async def stop(self):
        self._closing.set()
        if self._runner:
            await self._runner.cleanup()

    # --- routing ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        try:
            return await self._route(request)
        except ApiError as e:
            return _error(e)
        except (PatchError, SelectorError) as e:
            return _error(ApiError(400, "BadRequest", str(e)))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if not parts:
            return _json({"paths": ["/api", "/apis", "/version", "/healthz"]})
        if parts[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if parts == ["version"]:
            return _json(VERSION)
        if parts[:2] == ["kit", "v1"]:
            return self._kit_control(method, parts[2:])
        if parts[0] == "api":
            if len(parts) == 1:
                return _json({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                              "serverAddress": f"{self.host}:{self.port}"}]})
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return _json(self._group_list())
            if len(parts) == 2:
                g = self._group_list(only=parts[1])
                if not g["groups"]:
                    raise ApiError(404, "NotFound", f"group {parts[1]} not found")
                return _json({"kind": "APIGroup", "apiVersion": "v1", **g["groups"][0]})
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        if not rest:
            return _json(self._resource_list(group, version))
        # [namespaces/<ns>/]<plural>[/<name>[/<sub>]]
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        t = self.store.find_type(group, version, plural)
        if t is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        if t.namespaced is False and ns is not None:
            raise ApiError(404, "NotFound", f"{plural} is not namespaced")
        api_version = f"{group}/{version}" if group else version
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (sub and sub not in ("status", "scale", "finalize")):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        if sub == "finalize":
            sub = ""
        if (sub == "status" and not t.status) or (sub == "scale" and t.scale is None):
            raise ApiError(404, "NotFound", f"{plural} has no {sub} subresource")
        if t.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", "a namespace is needed for a namespaced object")
        q = request.query
        manager = q.get("fieldManager") or (request.headers.get("User-Agent", "unknown").split("/")[0] or "unknown")
        st = self.store
        render = lambda obj: self._render(obj, api_version)  # noqa: E731
        if name is None:
            labels = parse_label_selector(q.get("labelSelector"))
            fields = parse_field_selector(q.get("fieldSelector"))
            if method == "GET":
                if _truthy(q.get("watch")):
                    return await self._watch(request, t, ns, labels, fields, api_version)
                items = [render(o) for o in st.list(t, ns, labels, fields)]
                if tables.wants_table(request.headers.get("Accept", "")):
                    return _json(tables.table(t, version, items, str(st.rv)))
                return _json({"apiVersion": api_version, "kind": f"{t.kind}List",
                              "metadata": {"resourceVersion": str(st.rv)}, "items": items})
            if method == "POST":
                body = await self._body(request)
                return _json(render(st.create(t, ns, body, manager, api_version)), 201)
            if method == "DELETE":
                deleted = [render(st.delete(t, o["metadata"].get("namespace"), o["metadata"]["name"]))
                           for o in list(st.list(t, ns, labels, fields))]
                return _json({"apiVersion": api_version, "kind": f"{t.kind}List",
                              "metadata": {"resourceVersion": str(st.rv)}, "items": deleted})
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if sub == "scale":
            if method == "GET":
                return _json(st.scale_of(t, st.get(t, ns, name)))
            if method in ("PUT", "PATCH"):
                current = st.scale_of(t, st.get(t, ns, name))
                body = await self._body(request)
                if method == "PATCH":
                    body = self._patched(request, current, body)
                obj = st.set_scale(t, ns, name, body, manager)
                return _json(st.scale_of(t, obj))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on scale")
        if method == "GET":
            obj = render(st.get(t, ns, name))
            if tables.wants_table(request.headers.get("Accept", "")):
                return _json(tables.table(t, version, [obj], obj["metadata"]["resourceVersion"]))
            return _json(obj)
        if method == "PUT":
            body = await self._body(request)
            return _json(render(st.update(t, ns, name, body, manager, sub, api_version)))
        if method == "PATCH":
            body = await self._body(request)
            ctype = request.content_type
            if ctype == "application/apply-patch+yaml":
                if not q.get("fieldManager"):
                    raise ApiError(400, "BadRequest", "fieldManager is required for apply patch")
                obj, created = st.apply(t, ns, name, body, q["fieldManager"], _truthy(q.get("force")),
                                        sub, api_version)
                return _json(render(obj), 201 if created else 200)
            current = st.get(t, ns, name)
            new = self._patched(request, current, body)
            # A patch carries a resourceVersion precondition only when it names one.
            has_rv = isinstance(body, dict) and bool((body.get("metadata") or {}).get("resourceVersion"))
            if ctype == "application/json-patch+json":
                has_rv = new["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]
            if not has_rv:
                new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            return _json(render(st.update(t, ns, name, new, manager, sub, api_version)))
        if method == "DELETE":
            options = await self._body(request, optional=True) or {}
            return _json(render(st.delete(t, ns, name, options)))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    def _kit_control(self, method: str, parts: list[str]) -> web.Response:
        """Not Kubernetes: the kit's fault injection for developers at a terminal.
        GET /kit/v1/pods; POST /kit/v1/namespaces/<ns>/pods/<pod>/{kill,pause,resume}."""
        k = self.kubelet
        if k is None:
            raise ApiError(404, "NotFound", "no kubelet attached to this API server")
        if method == "GET" and parts == ["pods"]:
            return _json([{"namespace": r.ns, "name": r.name, "ip": r.ip, "ready": r.ready,
                           "restarts": r.restarts, "pid": r.proc.pid if r.proc else None}
                          for r in k.pods.values()])
        if (method == "POST" and len(parts) == 5 and parts[0] == "namespaces" and parts[2] == "pods"
                and parts[4] in ("kill", "pause", "resume")):
            try:
                getattr(k, parts[4])(parts[1], parts[3])
            except (KeyError, AttributeError, ProcessLookupError) as e:
                raise ApiError(404, "NotFound", str(e)) from None
            return _json({"status": "Success", "action": parts[4], "pod": f"{parts[1]}/{parts[3]}"})
        raise ApiError(404, "NotFound", "kit endpoints: GET /kit/v1/pods, "
                                        "POST /kit/v1/namespaces/<ns>/pods/<pod>/{kill,pause,resume}")

    def _patched(self, request: web.Request, current: dict, body):
        ctype = request.content_type
        if ctype == "application/json-patch+json":
            return json_patch(current, body)
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be an object")
            return merge_patch(current, body)
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")

    async def _body(self, request: web.Request, optional: bool = False):
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise ApiError(400, "BadRequest", "empty request body")
        try:
            if "yaml" in request.content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"cannot decode the request body: {e}") from None

    @staticmethod
    def _render(obj: dict, api_version: str) -> dict:
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    # --- discovery -------------------------------------------------------------------------

    def _group_list(self, only: str | None = None) -> dict:
        groups = []
        for group, types in sorted(self.store.groups().items()):
            if not group or (only is not None and group != only):
                continue
            versions = []
            for t in types:
                for v in t.versions:
                    if v not in versions:
                        versions.append(v)
            vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": vs, "preferredVersion": vs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict:
        types = [t for t in self.store.groups().get(group, []) if version in t.versions]
        if not types:
            raise ApiError(404, "NotFound", f"{group}/{version} is not served")
        resources = [r for t in sorted(types, key=lambda t: t.plural) for r in api_resource(t)]
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    # --- watch -----------------------------------------------------------------------------

    async def _watch(self, request, t, ns, labels, fields, api_version) -> web.StreamResponse:
        q = request.query
        w = Watcher(t.key, ns, labels, fields, asyncio.Queue())
        st = self.store
        rv = q.get("resourceVersion")
        initial: list = []
        if _truthy(q.get("sendInitialEvents")) or rv in (None, "", "0"):
            initial = [("ADDED", o) for o in st.list(t, ns, labels, fields)]
            end_marker = _truthy(q.get("sendInitialEvents"))
        else:
            try:
                since = int(rv)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv!r}") from None
            end_marker = False
            try:
                initial = st.replay(w, since)
            except ApiError as e:
                if e.code != 410:
                    raise
                # As the real server: 200, then an ERROR event carrying the 410 Status.
                resp = await self._open_stream(request)
                await self._send(resp, "ERROR", e.status())
                return resp
        st.watchers.append(w)
        resp = await self._open_stream(request)
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        version = api_version.rsplit("/", 1)[-1]

        def out(obj):
            obj = self._render(obj, api_version)
            return tables.table(t, version, [obj], obj["metadata"]["resourceVersion"]) if as_table else obj

        timeout = float(q.get("timeoutSeconds") or 1800)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for kind, obj in initial:
                await self._send(resp, kind, out(obj))
            if end_marker:
                await self._send(resp, "BOOKMARK", self._bookmark(t, api_version, initial_end=True))
            next_bookmark = loop.time() + BOOKMARK_INTERVAL
            while not self._closing.is_set():
                left = deadline - loop.time()
                if left <= 0:
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                try:
                    kind, obj = await asyncio.wait_for(w.queue.get(), timeout=min(left, 1.0))
                except asyncio.TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        await self._send(resp, "BOOKMARK", self._bookmark(t, api_version))
                        next_bookmark = loop.time() + BOOKMARK_INTERVAL
                    continue
                await self._send(resp, kind, out(obj))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                st.watchers.remove(w)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    def _bookmark(self, t, api_version, initial_end=False) -> dict:
        meta = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": t.kind, "apiVersion": api_version, "metadata": meta}

    @staticmethod
    async def _open_stream(request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        return resp

    @staticmethod
    async def _send(resp, kind, obj):
        await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")


def write_kubeconfig(path: Path | str, server: str, namespace: str = "default",
                     name: str = "sluice-kit") -> Path:
    """A kubeconfig with one cluster, user and context (current) for `server`."""
    path = Path(path)
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": "sluice-kit"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
    return path


class LoopThread:
    """An asyncio event loop on a daemon thread: run(coro) from any thread."""

    def __init__(self, name: str = "kit-loop"):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: float | None = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args, timeout: float | None = 30):
        """Runs a plain function on the loop's thread (for thread-safe access to its state)."""
        async def wrapper():
            return fn(*args)
        return self.run(wrapper(), timeout)

    def close(self):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


class ApiServerThread:
    """An ApiServer on its own loop thread, for tests and the CLI."""

    def __init__(self, kubeconfig: Path | str | None = None, host: str = "127.0.0.1", port: int = 0):
        self.loopthread = LoopThread("kit-apiserver")
        self.server = ApiServer(host, port)
        self.loopthread.run(self.server.start())
        self.kubeconfig = write_kubeconfig(kubeconfig, self.server.url) if kubeconfig else None

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, fn, *args):
        return self.loopthread.call(fn, *args)

    def stop(self):
        with contextlib.suppress(Exception):
            self.loopthread.run(self.server.stop(), timeout=15)
        self.loopthread.close()
