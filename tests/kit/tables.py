"""Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), so `kubectl get`
shows columns: a CRD's additionalPrinterColumns, and a few columns of the built-in kinds."""

from __future__ import annotations

import datetime
import re

from .resources import ResourceType

_FILTER_RE = re.compile(r'^(.*?)\[\?\(@\.([\w.]+)\s*==\s*["\']([^"\']*)["\']\)\](.*)$')


def json_path(obj, path: str):
    """The subset of JSONPath printer columns use: `.a.b`, `.a[0].b`, `.a[?(@.k=="v")].b`."""
    path = path.strip().lstrip("{").rstrip("}")
    m = _FILTER_RE.match(path)
    if m:
        base, key, value, rest = m.groups()
        items = json_path(obj, base) or []
        for item in items if isinstance(items, list) else []:
            if json_path(item, "." + key) == value:
                return json_path(item, rest) if rest else item
        return None
    cur = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
        else:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        t = datetime.datetime.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return timestamp
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    if s < 120:
        return f"{max(s, 0)}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _ready_containers(pod) -> str:
    cs = (pod.get("status") or {}).get("containerStatuses") or []
    n = len((pod.get("spec") or {}).get("containers") or []) or len(cs)
    return f"{sum(1 for c in cs if c.get('ready'))}/{n}"


# Built-in kinds: (name, type, priority, getter)
_BUILTIN = {
    ("", "pods"): [
        ("Ready", "string", 0, _ready_containers),
        ("Status", "string", 0, lambda o: (o.get("status") or {}).get("phase", "Pending")),
        ("Restarts", "integer", 0, lambda o: sum(c.get("restartCount", 0) for c in
                                                  (o.get("status") or {}).get("containerStatuses") or [])),
        ("Age", "string", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
        ("IP", "string", 1, lambda o: (o.get("status") or {}).get("podIP", "<none>")),
    ],
    ("apps", "statefulsets"): [
        ("Ready", "string", 0, lambda o: f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
                                         f"{(o.get('spec') or {}).get('replicas', 1)}"),
        ("Age", "string", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    ("", "services"): [
        ("Type", "string", 0, lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
        ("Ports", "string", 0, lambda o: ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                                                  for p in (o.get("spec") or {}).get("ports") or []) or "<none>"),
        ("Age", "string", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    ("", "persistentvolumeclaims"): [
        ("Status", "string", 0, lambda o: (o.get("status") or {}).get("phase", "Pending")),
        ("Capacity", "string", 0, lambda o: ((o.get("status") or {}).get("capacity") or {}).get("storage", "")),
        ("Age", "string", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
}


def wants_table(accept: str) -> bool:
    return "as=Table" in (accept or "")


def _columns(t: ResourceType, version: str):
    if t.custom:
        cols = []
        for c in t.printer_columns.get(version) or []:
            path, ctype = c["jsonPath"], c.get("type", "string")

            def get(o, path=path, ctype=ctype):
                v = json_path(o, path)
                if ctype == "date":
                    return age(v) if v else "<unknown>"
                return "<none>" if v is None else v
            cols.append((c["name"], "string" if c.get("type") == "date" else c.get("type", "string"),
                         c.get("priority", 0), get, c.get("description", "")))
        if not cols:
            cols = [("Age", "string", 0, lambda o: age(o["metadata"].get("creationTimestamp")), "")]
        return cols
    return [(n, ty, p, g, "") for n, ty, p, g in
            _BUILTIN.get(t.key, [("Age", "string", 0, lambda o: age(o["metadata"].get("creationTimestamp")))])]


def table(t: ResourceType, version: str, objects: list[dict], resource_version: str) -> dict:
    cols = _columns(t, version)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                               "description": "Name of the object"}] +
                             [{"name": n, "type": ty, "format": "", "priority": p, "description": d}
                              for n, ty, p, _, d in cols],
        "rows": [{"cells": [o["metadata"]["name"]] + [g(o) for _, _, _, g, _ in cols], "object": o}
                 for o in objects],
    }
