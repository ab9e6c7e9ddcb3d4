"""The API server's state: objects of every served kind, one global resourceVersion counter,
a bounded event history for watch resumption, and the semantics the API server adds on writes
(optimistic concurrency, generation, subresources, finalizers, garbage collection, server-side
apply bookkeeping, custom resource validation).

Everything here is synchronous and runs on the server's event loop, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import random
import string
import uuid
from dataclasses import dataclass, field

from . import patch as patches
from .resources import ResourceType, builtin_types, from_crd
from .schema import SchemaError, check_custom_resource

HISTORY = 10_000  # events kept for watch resumption; older versions get 410 Gone


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def not_found(t: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{t.plural}{"." + t.group if t.group else ""} "{name}" not found',
                    {"name": name, "group": t.group, "kind": t.plural})


@dataclass
class Record:
    obj: dict
    # (manager, subresource) -> {"operation", "apiVersion", "time", "paths": set of tuples}
    managed: dict = field(default_factory=dict)


@dataclass
class Watcher:
    key: tuple[str, str]
    namespace: str | None
    labels: object
    fields: object
    queue: asyncio.Queue

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: dict) -> str:
    o = copy.deepcopy(obj)
    meta = o.get("metadata") or {}
    for k in ("resourceVersion", "managedFields", "generation"):
        meta.pop(k, None)
    return json.dumps(o, sort_keys=True)


def _get_dotted(obj: dict, path: str):
    cur = obj
    for p in path.strip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _set_dotted(obj: dict, path: str, value):
    parts = path.strip(".").split(".")
    cur = obj
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


class Store:
    def __init__(self):
        self.rv = 0
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Record]] = {}
        self.history: list[tuple[int, tuple, str, dict, dict | None]] = []  # rv, key, type, obj, old
        self.floor = 0  # watches from a version below this get 410 Gone
        self.watchers: list[Watcher] = []
        for t in builtin_types():
            self.register(t)
        for ns in ("default", "kube-system", "kube-public"):
            self.create(self.types[("", "namespaces")], None,
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, "kit")

    # --- types -----------------------------------------------------------------------------

    def register(self, t: ResourceType):
        self.types[t.key] = t
        self.objects.setdefault(t.key, {})

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        t = self.types.get((group, plural))
        if t is None or version not in t.versions:
            return None
        return t

    def groups(self) -> dict[str, list[ResourceType]]:
        out: dict[str, list[ResourceType]] = {}
        for t in self.types.values():
            out.setdefault(t.group, []).append(t)
        return out

    # --- events ----------------------------------------------------------------------------

    def _emit(self, t: ResourceType, kind: str, obj: dict, old: dict | None):
        self.history.append((self.rv, t.key, kind, obj, old))
        if len(self.history) > HISTORY:
            drop = len(self.history) - HISTORY
            self.floor = self.history[drop - 1][0]
            del self.history[:drop]
        for w in list(self.watchers):
            if w.key != t.key:
                continue
            event = self._event_for(w, kind, obj, old)
            if event:
                w.queue.put_nowait(event)

    @staticmethod
    def _event_for(w: Watcher, kind: str, obj: dict, old: dict | None):
        """The event a watcher sees: an object moving into or out of its selector is an
        ADDED or DELETED for it."""
        now_in = w.matches(obj)
        if kind == "DELETED":
            return ("DELETED", obj) if now_in else None
        was_in = w.matches(old)
        if now_in and was_in:
            return ("MODIFIED", obj)
        if now_in:
            return ("ADDED", obj)
        if was_in:
            return ("DELETED", obj)
        return None

    def compact(self):
        """Forgets all history (tests: watches from older versions get 410 Gone)."""
        self.floor = self.rv
        self.history.clear()

    def replay(self, w: Watcher, since: int) -> list:
        if since < self.floor:
            raise ApiError(410, "Expired", f"too old resource version: {since} ({self.floor})")
        out = []
        for rv, key, kind, obj, old in self.history:
            if rv > since and key == w.key:
                event = self._event_for(w, kind, obj, old)
                if event:
                    out.append(event)
        return out

    def _bump(self, obj: dict):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    # --- reads -----------------------------------------------------------------------------

    def get(self, t: ResourceType, ns: str | None, name: str) -> dict:
        rec = self.objects[t.key].get((ns or "", name))
        if rec is None:
            raise not_found(t, name)
        return rec.obj

    def list(self, t: ResourceType, ns: str | None, labels, fields) -> list[dict]:
        out = []
        for (ons, _), rec in sorted(self.objects[t.key].items()):
            if ns is not None and ons != ns:
                continue
            meta = rec.obj["metadata"]
            if labels(meta.get("labels") or {}) and fields(rec.obj):
                out.append(rec.obj)
        return out

    # --- writes ----------------------------------------------------------------------------

    def _check_namespace(self, t: ResourceType, ns: str | None):
        if t.namespaced and ("", ns) not in self.objects[("", "namespaces")]:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if t.namespaced:
            nso = self.objects[("", "namespaces")][("", ns)].obj
            if nso["metadata"].get("deletionTimestamp"):
                raise ApiError(403, "Forbidden",
                               f"namespace {ns} is being terminated")

    def _validate(self, t: ResourceType, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        if t.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            try:
                rt = from_crd(obj)
            except ValueError as e:
                raise ApiError(422, "Invalid", str(e)) from None
            if meta.get("name") != f"{rt.plural}.{rt.group}":
                raise ApiError(422, "Invalid",
                               f"metadata.name must be spec.names.plural+\".\"+spec.group")
        if not t.custom:
            return obj
        version = (obj.get("apiVersion") or "").rsplit("/", 1)[-1]
        schema = t.schemas.get(version) or t.schemas.get(t.versions[0])
        try:
            return check_custom_resource(obj, schema)
        except SchemaError as e:
            raise ApiError(422, "Invalid",
                           f'{t.kind}.{t.group} "{meta.get("name")}" is invalid: {e}',
                           {"name": meta.get("name"), "group": t.group, "kind": t.kind}) from None

    def _set_managed(self, rec: Record, manager: str, sub: str, op: str, paths, api_version: str):
        key = (manager, sub)
        if paths:
            rec.managed[key] = {"operation": op, "apiVersion": api_version, "time": now(),
                                "paths": set(paths)}
        else:
            rec.managed.pop(key, None)
        rec.obj["metadata"]["managedFields"] = [
            {"manager": m, "operation": e["operation"], "apiVersion": e["apiVersion"],
             "time": e["time"], "fieldsType": "FieldsV1", "fieldsV1": patches.fields_v1(e["paths"]),
             **({"subresource": s} if s else {})}
            for (m, s), e in sorted(rec.managed.items())
        ]

    def _record_update(self, rec: Record, old: dict | None, manager: str, sub: str,
                       api_version: str):
        """An update (not an apply): fields it changed become the manager's."""
        before = patches.leaf_paths(old or {}, sub)
        after = patches.leaf_paths(rec.obj, sub)
        changed = {p for p, v in after.items() if before.get(p, patches._MISSING) != v}
        removed = set(before) - set(after)
        for key, entry in list(rec.managed.items()):
            if key[1] != sub or key == (manager, sub):
                continue
            entry["paths"] -= changed | removed
            if not entry["paths"]:
                del rec.managed[key]
        mine = set(rec.managed.get((manager, sub), {}).get("paths", set()))
        mine = (mine - removed) | changed
        self._set_managed(rec, manager, sub, "Update", mine, api_version)

    def create(self, t: ResourceType, ns: str | None, body: dict, manager: str,
               api_version: str | None = None) -> dict:
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        meta = obj.setdefault("metadata", {})
        if t.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    random.choices(string.ascii_lowercase + string.digits, k=5))
            else:
                raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        self._check_namespace(t, ns if t.namespaced else None)
        key = (ns or "" if t.namespaced else "", meta["name"])
        if key in self.objects[t.key]:
            raise ApiError(409, "AlreadyExists",
                           f'{t.plural}{"." + t.group if t.group else ""} "{meta["name"]}" already exists',
                           {"name": meta["name"], "group": t.group, "kind": t.plural})
        obj["apiVersion"] = api_version or t.api_version()
        obj["kind"] = t.kind
        obj = self._validate(t, obj)
        meta = obj["metadata"]
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "managedFields"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        if t.status and t.key != ("", "namespaces"):
            obj.pop("status", None)
        self._defaults_on_create(t, obj)
        rec = Record(obj)
        self._bump(obj)
        self.objects[t.key][key] = rec
        self._record_update(rec, None, manager, "", obj["apiVersion"])
        if t.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._crd_changed(rec)
        self._emit(t, "ADDED", obj, None)
        return obj

    def _defaults_on_create(self, t: ResourceType, obj: dict):
        if t.key == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        elif t.key == ("", "persistentvolumeclaims"):
            spec = obj.get("spec") or {}
            obj["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes") or [],
                             "capacity": ((spec.get("resources") or {}).get("requests") or {})}
        elif t.key == ("", "services"):
            spec = obj.setdefault("spec", {})
            if not spec.get("clusterIP"):
                spec["clusterIP"] = f"10.96.{random.randint(1, 254)}.{random.randint(1, 254)}"
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
        elif t.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            names = obj["spec"]["names"]
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now()},
                ],
            }

    def _crd_changed(self, rec: Record):
        """A created or updated CRD: (re)serve its kind."""
        self.register(from_crd(rec.obj))

    def _write(self, t: ResourceType, rec: Record, new: dict, old: dict) -> dict:
        """Stores `new` (already merged and checked) over `old`: no-op when nothing changed,
        generation bump on spec changes, deletion once the last finalizer is gone."""
        meta = new["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta["name"], meta["generation"] = old["metadata"]["name"], old["metadata"].get("generation", 1)
        if t.namespaced:
            meta["namespace"] = old["metadata"]["namespace"]
        new["kind"] = t.kind
        if _comparable(new) == _comparable(old):
            rec.obj = old
            return old
        if json.dumps(_spec_part(new), sort_keys=True) != json.dumps(_spec_part(old), sort_keys=True):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        rec.obj = new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(t, rec)
        self._bump(new)
        if t.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._crd_changed(rec)
        self._emit(t, "MODIFIED", new, old)
        return new

    def update(self, t: ResourceType, ns: str | None, name: str, body: dict, manager: str,
               sub: str = "", api_version: str | None = None,
               check_rv: bool = True) -> dict:
        rec = self.objects[t.key].get((ns or "", name))
        if rec is None:
            raise not_found(t, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        old = rec.obj
        bmeta = body.get("metadata") or {}
        if bmeta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        want_rv = bmeta.get("resourceVersion")
        if check_rv and want_rv not in (None, "") and want_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {t.plural}{"." + t.group if t.group else ""} '
                           f'"{name}": the object has been modified; please apply your changes to the '
                           f"latest version and try again",
                           {"name": name, "group": t.group, "kind": t.plural})
        new = copy.deepcopy(body)
        new.setdefault("metadata", {})
        new["metadata"]["managedFields"] = old["metadata"].get("managedFields", [])
        if sub == "status":
            # Only the status changes through the status subresource.
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif t.status:
            # ... and never through the main resource.
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        new["apiVersion"] = api_version or old.get("apiVersion") or t.api_version()
        new = self._validate(t, new)
        stored = self._write(t, rec, new, old)
        if stored is not old and (ns or "", name) in self.objects[t.key]:
            self._record_update(rec, old, manager, sub, new["apiVersion"])
        return stored

    def apply(self, t: ResourceType, ns: str | None, name: str, applied: dict, manager: str,
              force: bool, sub: str = "", api_version: str | None = None) -> tuple[dict, bool]:
        """Server-side apply, approximated: the manager's fields are the leaf fields of its
        applied configuration (maps merge, lists are atomic); fields it applied before and no
        longer applies are removed unless another manager owns them; fields another manager
        owns with a different value conflict unless forced. Returns (object, created)."""
        if not isinstance(applied, dict):
            raise ApiError(400, "BadRequest", "the applied configuration must be an object")
        ameta = applied.get("metadata") or {}
        if ameta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        rec = self.objects[t.key].get((ns or "", name))
        if rec is None:
            if sub:
                raise not_found(t, name)
            body = copy.deepcopy(applied)
            body.setdefault("metadata", {})["name"] = name
            obj = self.create(t, ns, body, manager, api_version)
            rec = self.objects[t.key][(ns or "", name)]
            rec.managed.clear()
            self._set_managed(rec, manager, "", "Apply", patches.leaf_paths(applied, ""),
                              obj["apiVersion"])
            return rec.obj, True
        old = rec.obj
        new_paths = patches.leaf_paths(applied, sub)
        old_paths = rec.managed.get((manager, sub), {}).get("paths", set())
        others = {k: e for k, e in rec.managed.items() if k != (manager, sub) and k[1] == sub}
        conflicts = []
        for p, v in new_paths.items():
            current = patches.get_path(old, p)
            for (m, _), e in others.items():
                if any(patches.related(p, q) for q in e["paths"]) and current != v:
                    conflicts.append((m, p))
        if conflicts and not force:
            msg = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts[:5])
            raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflicts: {msg}",
                           {"causes": [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"',
                                        "field": "." + ".".join(p)} for m, p in conflicts]})
        new = copy.deepcopy(old)
        for p in old_paths - set(new_paths):
            owned_elsewhere = any(patches.related(p, q) for e in others.values() for q in e["paths"])
            if not owned_elsewhere:
                patches.delete_path(new, p)
        body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
        bmeta = body.pop("metadata", {}) or {}
        if sub == "status":
            body = {"status": body.get("status")} if "status" in body else {}
        else:
            body.pop("status", None)
            for mk in patches._OWNABLE_METADATA:
                if mk in bmeta:
                    body.setdefault("metadata", {})[mk] = bmeta[mk]
        new = patches.deep_merge(new, body)
        # Forced fields change hands.
        for (m, s), e in others.items():
            e["paths"] = {q for q in e["paths"]
                          if not any(patches.related(q, p) for p in new_paths)
                          or patches.get_path(new, q) == patches.get_path(old, q)}
            if not e["paths"]:
                del rec.managed[(m, s)]
        new["apiVersion"] = api_version or old.get("apiVersion")
        new = self._validate(t, new)
        stored = self._write(t, rec, new, old)
        if (ns or "", name) in self.objects[t.key]:
            self._set_managed(rec, manager, sub, "Apply", new_paths, new["apiVersion"])
        return stored, False

    def delete(self, t: ResourceType, ns: str | None, name: str, options: dict | None = None) -> dict:
        rec = self.objects[t.key].get((ns or "", name))
        if rec is None:
            raise not_found(t, name)
        pre = (options or {}).get("preconditions") or {}
        meta = rec.obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise ApiError(409, "Conflict", "Precondition failed: resourceVersion mismatch")
        if t.key == ("", "namespaces"):
            return self._delete_namespace(t, rec)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return rec.obj
            old = rec.obj
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            rec.obj = new
            self._bump(new)
            self._emit(t, "MODIFIED", new, old)
            return new
        return self._remove(t, rec)

    def _delete_namespace(self, t, rec):
        ns = rec.obj["metadata"]["name"]
        old = rec.obj
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = now()
        new["status"] = {"phase": "Terminating"}
        rec.obj = new
        self._bump(new)
        self._emit(t, "MODIFIED", new, old)
        for key, objs in self.objects.items():
            rt = self.types.get(key)
            if rt is None or not rt.namespaced:
                continue
            for (ons, name) in list(objs):
                if ons == ns and (ons, name) in objs:
                    self.delete(rt, ns, name)
        self._finish_namespace(ns)
        return new

    def _finish_namespace(self, ns: str):
        rec = self.objects[("", "namespaces")].get(("", ns))
        if rec is None or not rec.obj["metadata"].get("deletionTimestamp"):
            return
        for key, objs in self.objects.items():
            rt = self.types.get(key)
            if rt is not None and rt.namespaced and any(o == ns for o, _ in objs):
                return
        self._remove(self.types[("", "namespaces")], rec)

    def _remove(self, t: ResourceType, rec: Record) -> dict:
        meta = rec.obj["metadata"]
        key = (meta.get("namespace", "") if t.namespaced else "", meta["name"])
        if self.objects[t.key].get(key) is not rec:
            return rec.obj
        del self.objects[t.key][key]
        rec.obj = copy.deepcopy(rec.obj)  # the stored version stays in the history as it was
        self._bump(rec.obj)
        self._emit(t, "DELETED", rec.obj, None)
        if t.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._crd_deleted(rec.obj)
        self._collect_garbage(meta["uid"])
        if t.namespaced:
            self._finish_namespace(meta.get("namespace", ""))
        return rec.obj

    def _crd_deleted(self, crd: dict):
        try:
            rt = from_crd(crd)
        except ValueError:
            return
        t = self.types.get(rt.key)
        if t is None:
            return
        for rec in list(self.objects[t.key].values()):
            rec.obj["metadata"].pop("finalizers", None)
            self._remove(t, rec)
        del self.types[rt.key]
        del self.objects[rt.key]

    def _collect_garbage(self, owner_uid: str):
        """Background cascading deletion: dependents whose every owner is gone are deleted;
        the others lose the reference to the deleted owner."""
        live = {rec.obj["metadata"]["uid"] for objs in self.objects.values() for rec in objs.values()}
        for key, objs in list(self.objects.items()):
            t = self.types.get(key)
            if t is None:
                continue
            for rec in list(objs.values()):
                refs = rec.obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                remaining = [r for r in refs if r.get("uid") != owner_uid and r.get("uid") in live]
                ns = rec.obj["metadata"].get("namespace")
                name = rec.obj["metadata"]["name"]
                if remaining:
                    body = copy.deepcopy(rec.obj)
                    body["metadata"]["ownerReferences"] = remaining
                    self.update(t, ns, name, body, "garbage-collector", check_rv=False)
                elif (ns or "", name) in objs:
                    self.delete(t, ns, name)

    # --- scale -----------------------------------------------------------------------------

    def scale_of(self, t: ResourceType, obj: dict) -> dict:
        s = t.scale or {}
        selector = None
        if s.get("labelSelectorPath"):
            selector = _get_dotted(obj, s["labelSelectorPath"])
        elif t.key == ("apps", "statefulsets"):
            from .selectors import selector_to_string
            selector = selector_to_string((obj.get("spec") or {}).get("selector"))
        meta = obj["metadata"]
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": _get_dotted(obj, s.get("specReplicasPath") or ".spec.replicas") or 0},
            "status": {"replicas": _get_dotted(obj, s.get("statusReplicasPath") or ".status.replicas") or 0,
                       **({"selector": selector} if selector else {})},
        }

    def set_scale(self, t: ResourceType, ns: str | None, name: str, scale: dict, manager: str) -> dict:
        obj = self.get(t, ns, name)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", "spec.replicas: must be a non-negative integer")
        body = copy.deepcopy(obj)
        _set_dotted(body, (t.scale or {}).get("specReplicasPath") or ".spec.replicas", replicas)
        want_rv = (scale.get("metadata") or {}).get("resourceVersion")
        body["metadata"]["resourceVersion"] = want_rv or obj["metadata"]["resourceVersion"]
        return self.update(t, ns, name, body, manager)
