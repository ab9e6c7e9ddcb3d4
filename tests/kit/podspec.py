"""Pure pieces of the node agent: env resolution and `$(VAR)` expansion as Kubernetes does them,
and the host translation that lets a pod's process run on this machine.

Host translation (applied to the container's args and env values and to the files projected from
ConfigMap volumes, after the Kubernetes-level resolution):
  - stable DNS names `<pod>.<service>.<namespace>.svc[.cluster.local]` of StatefulSet pods
    become the pods' loopback IPs (127.A.B.x, one per pod, stable for the kit's lifetime):
    this stands in for cluster DNS, which cannot be faked here without editing /etc/hosts;
  - the wildcard address 0.0.0.0 becomes the pod's own IP (every pod binds the same ports
    on its own address, as pods do in their network namespaces);
  - container mount paths (`/etc/sluice`, `/var/lib/sluice`, ...) become the host directories
    backing the volumes (a path prefix match).
For the Sluice broker this turns `listeners=0.0.0.0:9092` into `127.A.B.x:9092`,
`SLUICE_ADVERTISED_LISTENERS=demo-kafka-0.demo-kafka-brokers.ns.svc:9092` into
`127.A.B.x:9092`, `controller.quorum.bootstrap.servers=0@demo-kafka-0.demo-kafka-brokers.ns.svc:9644,...`
into `0@127.A.B.x:9644,...`, and `log.dirs=/var/lib/sluice/data` into the claim's directory.
"""

from __future__ import annotations

import re

_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict) -> str:
    """Kubernetes `$(VAR)` expansion: defined variables are substituted, `$$` is a literal `$`,
    undefined references stay as they are."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR_RE.sub(sub, value)


_FIELD_LABEL_RE = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_ref(pod: dict, path: str) -> str:
    meta = pod.get("metadata") or {}
    m = _FIELD_LABEL_RE.match(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": (pod.get("status") or {}).get("hostIP"),
    }
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path!r}")
    return simple[path] or ""


def resolve_env(container: dict, pod: dict, configmap) -> dict:
    """The container's environment: envFrom ConfigMaps, then env in order (fieldRef,
    configMapKeyRef, values with `$(VAR)` expanded over the variables before them).
    `configmap(name)` returns a ConfigMap's data or None."""
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        ref = src.get("configMapRef")
        if ref:
            data = configmap(ref["name"])
            if data is None and not ref.get("optional"):
                raise ValueError(f"configmap {ref['name']} not found")
            for k, v in (data or {}).items():
                env[(src.get("prefix") or "") + k] = v
    for e in container.get("env") or []:
        name = e["name"]
        if "value" in e:
            env[name] = expand(str(e.get("value") or ""), env)
        elif e.get("valueFrom"):
            vf = e["valueFrom"]
            if vf.get("fieldRef"):
                env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
            elif vf.get("configMapKeyRef"):
                ref = vf["configMapKeyRef"]
                data = configmap(ref["name"])
                if (data is None or ref["key"] not in data) and not ref.get("optional"):
                    raise ValueError(f"configmap key {ref['name']}/{ref['key']} not found")
                if data and ref["key"] in data:
                    env[name] = data[ref["key"]]
            else:
                raise ValueError(f"unsupported valueFrom for {name}: {sorted(vf)}")
        else:
            env[name] = ""
    return env


_DNS_RE = re.compile(
    r"\b([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\."
    r"([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.svc(?:\.cluster\.local)?\b\.?")
_WILDCARD_RE = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])")


def translate(text: str, pod_ip: str, resolve, mounts: list[tuple[str, str]]) -> str:
    """Host translation (module docstring). `resolve(pod, service, namespace)` returns an IP or
    None; `mounts` are (container path, host path) pairs."""
    text = _DNS_RE.sub(lambda m: resolve(m.group(1), m.group(2), m.group(3)) or m.group(0), text)
    text = _WILDCARD_RE.sub(pod_ip, text)
    if mounts:
        # One pass, longest mount path first: a host path is never translated again.
        table = {(c.rstrip("/") or "/"): h for c, h in mounts}
        alternatives = "|".join(re.escape(c) for c in sorted(table, key=len, reverse=True))
        pattern = r"(?<![\w./-])(" + alternatives + r")(?=/|$|[^\w.-])"
        text = re.sub(pattern, lambda m: table[m.group(1)], text, flags=re.M)
    return text


def http_port(container: dict, port) -> int:
    """A probe's port: a number, or a container port name."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no container port named {port!r}")
