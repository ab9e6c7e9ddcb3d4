"""The kinds the local API server serves: built-in ones and those CRDs add."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    group: str                 # "" for the core group
    versions: list[str]        # served versions, preferred (storage) first
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: list[str] = field(default_factory=list)
    status: bool = False       # has a status subresource
    # scale subresource: {"specReplicasPath", "statusReplicasPath", "labelSelectorPath"}
    scale: dict | None = None
    schemas: dict[str, dict] = field(default_factory=dict)  # version -> openAPIV3Schema (CRs)
    printer_columns: dict[str, list] = field(default_factory=dict)  # version -> additionalPrinterColumns
    custom: bool = False
    categories: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


def builtin_types() -> list[ResourceType]:
    sts_scale = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                 "labelSelectorPath": None}
    return [
        ResourceType("", ["v1"], "namespaces", "namespace", "Namespace", namespaced=False,
                     short_names=["ns"], status=True),
        ResourceType("", ["v1"], "configmaps", "configmap", "ConfigMap", short_names=["cm"]),
        ResourceType("", ["v1"], "secrets", "secret", "Secret"),
        ResourceType("", ["v1"], "serviceaccounts", "serviceaccount", "ServiceAccount",
                     short_names=["sa"]),
        ResourceType("", ["v1"], "services", "service", "Service", short_names=["svc"], status=True),
        ResourceType("", ["v1"], "endpoints", "endpoints", "Endpoints", short_names=["ep"]),
        ResourceType("", ["v1"], "pods", "pod", "Pod", short_names=["po"], status=True),
        ResourceType("", ["v1"], "persistentvolumeclaims", "persistentvolumeclaim",
                     "PersistentVolumeClaim", short_names=["pvc"], status=True),
        ResourceType("", ["v1"], "events", "event", "Event", short_names=["ev"]),
        ResourceType("apps", ["v1"], "statefulsets", "statefulset", "StatefulSet",
                     short_names=["sts"], status=True, scale=sts_scale),
        ResourceType("apps", ["v1"], "controllerrevisions", "controllerrevision",
                     "ControllerRevision"),
        ResourceType("policy", ["v1"], "poddisruptionbudgets", "poddisruptionbudget",
                     "PodDisruptionBudget", short_names=["pdb"], status=True),
        ResourceType("events.k8s.io", ["v1"], "events", "event", "Event", short_names=["ev"]),
        ResourceType("coordination.k8s.io", ["v1"], "leases", "lease", "Lease"),
        ResourceType("apiextensions.k8s.io", ["v1"], "customresourcedefinitions",
                     "customresourcedefinition", "CustomResourceDefinition", namespaced=False,
                     short_names=["crd", "crds"], status=True),
    ]


def from_crd(crd: dict) -> ResourceType:
    """The resource a CustomResourceDefinition defines (its served versions)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    # Storage version first: it is the preferred one.
    served.sort(key=lambda v: not v.get("storage", False))
    if not served or not names.get("plural") or not names.get("kind") or not spec.get("group"):
        raise ValueError("a CRD needs spec.group, spec.names.plural/kind and a served version")
    subresources = next((v.get("subresources") for v in served if v.get("subresources")), None) or {}
    scale = subresources.get("scale")
    return ResourceType(
        group=spec["group"],
        versions=[v["name"] for v in served],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        status="status" in subresources,
        scale=dict(scale) if scale is not None else None,
        schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") or {} for v in served},
        printer_columns={v["name"]: list(v.get("additionalPrinterColumns") or []) for v in served},
        custom=True,
    )


def api_resource(t: ResourceType) -> list[dict]:
    """Entries of an APIResourceList for one type (and its subresources)."""
    out = [{
        "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
        "kind": t.kind, "verbs": ALL_VERBS, "shortNames": t.short_names,
        **({"categories": t.categories} if t.categories else {}),
    }]
    if t.status:
        out.append({"name": f"{t.plural}/status", "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"]})
    if t.scale is not None:
        out.append({"name": f"{t.plural}/scale", "singularName": "", "namespaced": t.namespaced,
                    "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": ["get", "patch", "update"]})
    return out
