"""The Helm chart (charts/sluice-operator), the example resources (examples/) and the manifests
the operator builds, checked offline: no Kubernetes API server exists on these machines.

- `helm lint --strict` and `helm template` with the helm that scripts/test.sh installs
  (.tools/bin/helm, or $HELM);
- every rendered object validates with `kubernetes-validate --strict` against the oldest
  Kubernetes the chart supports (its kubeVersion) and the newest schema kubernetes-validate
  bundles; a kind without a schema is a failure here, not the tool's warning;
- RBAC is least privilege: the exact (group, resource, verb) table the operator needs, namespaced
  when the operator watches namespaces, no wildcards;
- the CRD template renders every file of files/crds/ unchanged but for the keep annotation;
- examples/ use the CRDs' group, version and kinds, follow the CRD schemas, and their Kafka
  settings are accepted by the real broker;
- with the operator built: its rendered manifests validate, its CRDs are the chart's, and it
  accepts the Deployment's arguments.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT, TARGET_DIR

CHART = ROOT / "charts" / "sluice-operator"
CHART_CRDS = CHART / "files" / "crds"
EXAMPLES = ROOT / "examples"
HELM = Path(os.environ.get("HELM") or ROOT / ".tools" / "bin" / "helm")
OPERATOR_BIN = Path(os.environ.get("SLUICE_OPERATOR_BIN") or TARGET_DIR / "release" / "sluice-operator")

# The chart's kubeVersion floor (StatefulSet pods carry apps.kubernetes.io/pod-index from 1.28,
# the brokers' node id) and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ["1.28.0", "1.37.0"]
GROUP, VERSION = "kafka.sluice.dev", "v1alpha1"
RELEASE, RELEASE_NS = "sluice", "sluice-system"
FULLNAME = "sluice-sluice-operator"  # release name + chart name


# What the operator calls on namespaced objects, (apiGroup, resource) -> verbs. The chart must
# grant exactly this: a new verb is a deliberate change here and in templates/_helpers.tpl.
WORKLOAD_RULES: dict[tuple[str, str], set[str]] = {
    **{(GROUP, r): {"get", "list", "watch", "patch", "update"} for r in ("kafkaclusters", "kafkatopics")},
    **{(GROUP, f"{r}/status"): {"get", "patch", "update"} for r in ("kafkaclusters", "kafkatopics")},
    **{(GROUP, f"{r}/finalizers"): {"update"} for r in ("kafkaclusters", "kafkatopics")},
    **{(g, r): {"get", "list", "watch", "create", "patch", "update", "delete"}
       for g, r in (("apps", "statefulsets"), ("", "services"), ("", "configmaps"),
                    ("policy", "poddisruptionbudgets"))},
    ("", "pods"): {"get", "list", "watch"},
    ("", "persistentvolumeclaims"): {"get", "list", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}

# values for the "custom" scenario: every knob away from its default.
CUSTOM_VALUES = {
    "image": {"repository": "registry.example.com/sluice", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "brokerImage": "registry.example.com/sluice-broker:1.2.3",
    "replicaCount": 2,
    "leaderElection": {"enabled": True, "leaseName": "sluice-leader"},
    "logLevel": "debug,kube=info",
    "logFormat": "text",
    "maxPartitionMoves": 3,
    "metrics": {"port": 9090, "podAnnotations": False},
    "crds": {"install": False},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
    "podAnnotations": {"example.com/team": "streaming"},
    "podLabels": {"team": "streaming"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
            "matchLabels": {"app.kubernetes.io/name": "sluice-operator"}}}}]}},
}

SCENARIOS = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "no-leader-election": {"leaderElection": {"enabled": False}},
    "namespaced-no-leader-election": {"watchNamespaces": ["team-a"], "leaderElection": {"enabled": False}},
    "custom": CUSTOM_VALUES,
}


# --- helpers -------------------------------------------------------------------------------------


def run_helm(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"helm not found at {HELM}: scripts/test.sh installs it (or set $HELM)")
    home = tmp_path / "helm-home"
    env = {**os.environ,
           "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def values_file(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(tmp_path: Path, values: dict | None = None, chart: Path = CHART,
             check: bool = True) -> subprocess.CompletedProcess:
    return run_helm(tmp_path, "template", RELEASE, str(chart), "--namespace", RELEASE_NS,
                    "--kube-version", KUBE_VERSIONS[0],
                    "-f", str(values_file(tmp_path, values or {})), check=check)


def render(tmp_path: Path, values: dict | None = None) -> list[dict]:
    return parse_docs(template(tmp_path, values).stdout)


def parse_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def kubernetes_validate(tmp_path: Path, docs: list[dict], name: str = "manifests.yaml") -> None:
    """kubernetes-validate --strict on every object, for every version in KUBE_VERSIONS. Fails on
    errors and on objects it has no schema for (the tool itself only warns about those)."""
    assert docs, "nothing to validate"
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict"]
    for v in KUBE_VERSIONS:
        cmd += ["-k", v]
    proc = subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    problems = [line for line in out.splitlines() if not line.startswith("INFO ")]
    passed = [line for line in out.splitlines() if line.startswith("INFO ") and " passed " in line]
    assert proc.returncode == 0 and not problems, \
        f"kubernetes-validate --strict (exit {proc.returncode}):\n" + "\n".join(problems)
    assert len(passed) == len(docs) * len(KUBE_VERSIONS), out


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_container(docs: list[dict]) -> dict:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def granted(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, for rules without resourceNames."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert not rule.get("resourceNames"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def chart_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted(CHART_CRDS.glob("*.yaml")):
        docs = parse_docs(path.read_text())
        assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition", path
        assert path.name == f"{docs[0]['metadata']['name']}.yaml", f"{path.name} holds {docs[0]['metadata']['name']}"
        crds[docs[0]["metadata"]["name"]] = docs[0]
    return crds


def crd_by_kind() -> dict[str, dict]:
    return {c["spec"]["names"]["kind"]: c for c in chart_crds().values()}


def require_operator() -> None:
    # scripts/test.sh builds the workspace (both binaries) before pytest runs.
    assert OPERATOR_BIN.exists(), f"sluice-operator is not built ({OPERATOR_BIN})"


def run_operator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(OPERATOR_BIN), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "RUST_LOG": "warn"}, stdin=subprocess.DEVNULL)


# --- helm lint and schema validation of everything the chart renders ----------------------------


@pytest.mark.parametrize("scenario", ["default", "namespaced", "custom"])
def test_helm_lint_strict(tmp_path, scenario):
    proc = run_helm(tmp_path, "lint", "--strict", str(CHART), "--namespace", RELEASE_NS,
                    "-f", str(values_file(tmp_path, SCENARIOS[scenario])))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout, proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rendered_chart_validates_strict(tmp_path, scenario):
    docs = render(tmp_path, SCENARIOS[scenario])
    kinds = sorted(d["kind"] for d in docs)
    values = SCENARIOS[scenario]
    expected = ["Deployment"]
    if values.get("serviceAccount", {}).get("create", True):
        expected.append("ServiceAccount")
    if values.get("crds", {}).get("install", True):
        expected += ["CustomResourceDefinition"] * 2
    namespaces = values.get("watchNamespaces", [])
    expected += ["Role", "RoleBinding"] * len(namespaces) if namespaces else ["ClusterRole", "ClusterRoleBinding"]
    if values.get("leaderElection", {}).get("enabled", True):
        expected += ["Role", "RoleBinding"]
    assert kinds == sorted(expected)
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert d["metadata"]["namespace"] in [RELEASE_NS, *namespaces], d["metadata"]
    kubernetes_validate(tmp_path, docs)


def test_values_schema_rejects_bad_values(tmp_path):
    bad = {
        "logFormat": ({"logFormat": "xml"}, "logFormat"),
        "unknown key": ({"replicas": 2}, "replicas"),
        "duplicate namespace": ({"watchNamespaces": ["a", "a"]}, "watchNamespaces"),
        "invalid namespace": ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        "port": ({"metrics": {"port": 70000}}, "port"),
        "no moves": ({"maxPartitionMoves": 0}, "maxPartitionMoves"),
        "pull policy": ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
    }
    for case, (values, field) in bad.items():
        proc = template(tmp_path, values, check=False)
        assert proc.returncode != 0, f"{case}: rendered anyway"
        assert "values don't meet the specifications" in proc.stderr and field in proc.stderr, \
            f"{case}: {proc.stderr}"


def test_several_replicas_need_leader_election(tmp_path):
    proc = template(tmp_path, {"replicaCount": 2, "leaderElection": {"enabled": False}}, check=False)
    assert proc.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled=true" in proc.stderr, proc.stderr


def test_service_account_name_required_when_not_created(tmp_path):
    proc = template(tmp_path, {"serviceAccount": {"create": False}}, check=False)
    assert proc.returncode != 0
    assert "serviceAccount.name is required" in proc.stderr, proc.stderr


# --- the Deployment ------------------------------------------------------------------------------


def test_deployment_defaults(tmp_path):
    docs = render(tmp_path)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = operator_container(docs)

    assert deployment["spec"]["replicas"] == 1
    assert "strategy" not in deployment["spec"]  # RollingUpdate: the Lease keeps one leader
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == FULLNAME == one(docs, "ServiceAccount")["metadata"]["name"]
    assert c["image"] == "sluice:0.1.0"  # appVersion
    assert c["command"] == ["sluice-operator"]
    assert c["args"] == ["run", "--http-listener=0.0.0.0:8080", "--log-format=json",
                         "--broker-image=sluice:0.1.0", "--leader-election=true",
                         "--max-partition-moves=8", f"--lease-name={FULLNAME}"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["RUST_LOG"]["value"] == "info"

    # non-root, nothing writable, no privileges
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]

    # probes on the HTTP side port 8080
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8080" and annotations["prometheus.io/path"] == "/metrics"


def test_deployment_follows_values(tmp_path):
    docs = render(tmp_path, CUSTOM_VALUES)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = operator_container(docs)

    assert deployment["spec"]["replicas"] == 2
    assert c["image"] == "registry.example.com/sluice:1.2.3" and c["imagePullPolicy"] == "Always"
    assert c["args"] == ["run", "--http-listener=0.0.0.0:9090", "--log-format=text",
                         "--broker-image=registry.example.com/sluice-broker:1.2.3",
                         "--leader-election=true", "--max-partition-moves=3",
                         "--lease-name=sluice-leader"]
    assert {e["name"]: e.get("value") for e in c["env"]}["RUST_LOG"] == "debug,kube=info"
    assert c["ports"][0]["containerPort"] == 9090
    assert c["resources"] == CUSTOM_VALUES["resources"]
    assert pod["serviceAccountName"] == "existing-sa"
    assert not by_kind(docs, "ServiceAccount")
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # Helm merges maps from the user's values over values.yaml: the defaults not overridden stay.
    assert pod["securityContext"] == {**CUSTOM_VALUES["podSecurityContext"], "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[key] == CUSTOM_VALUES[key], key
    template_meta = deployment["spec"]["template"]["metadata"]
    assert template_meta["annotations"] == {"example.com/team": "streaming"}  # no prometheus.io/*
    assert template_meta["labels"]["team"] == "streaming"
    assert one(docs, "Role")["rules"][1]["resourceNames"] == ["sluice-leader"]
    for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "existing-sa", "namespace": RELEASE_NS}]


def test_leader_election_off(tmp_path):
    docs = render(tmp_path, SCENARIOS["no-leader-election"])
    deployment = one(docs, "Deployment")
    c = operator_container(docs)
    assert "--leader-election=false" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--lease-name")]
    # a rollout must not run two unelected operators side by side
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    assert "leases" not in yaml.safe_dump(docs)


# --- RBAC ----------------------------------------------------------------------------------------


def assert_no_wildcards(docs: list[dict]) -> None:
    for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule


def assert_lease_role(docs: list[dict], lease: str = FULLNAME) -> None:
    role = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == f"{FULLNAME}-leader-election"]
    assert len(role) == 1 and role[0]["metadata"]["namespace"] == RELEASE_NS
    assert role[0]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease],
         "verbs": ["get", "update", "patch"]},
    ]
    binding = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] == f"{FULLNAME}-leader-election"]
    assert len(binding) == 1 and binding[0]["metadata"]["namespace"] == RELEASE_NS
    assert binding[0]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                     "name": f"{FULLNAME}-leader-election"}


def test_cluster_wide_rbac(tmp_path):
    docs = render(tmp_path)
    assert_no_wildcards(docs)
    cluster_role = one(docs, "ClusterRole")
    assert granted(cluster_role["rules"]) == WORKLOAD_RULES
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS}]
    # the only Role is the Lease's; leases never get cluster-wide rights
    assert [r["metadata"]["name"] for r in by_kind(docs, "Role")] == [f"{FULLNAME}-leader-election"]
    assert_lease_role(docs)
    assert not [a for a in operator_container(docs)["args"] if a.startswith("--namespace")]


def test_namespaced_rbac(tmp_path):
    docs = render(tmp_path, SCENARIOS["namespaced"])
    assert_no_wildcards(docs)
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    workload_roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")
                      if r["metadata"]["name"] == FULLNAME}
    assert sorted(workload_roles) == ["team-a", "team-b"]
    for ns, role in workload_roles.items():
        assert granted(role["rules"]) == WORKLOAD_RULES, ns
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")
                if b["metadata"]["name"] == FULLNAME}
    assert sorted(bindings) == ["team-a", "team-b"]
    for binding in bindings.values():
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS}]
    assert_lease_role(docs)
    assert "--namespace=team-a,team-b" in operator_container(docs)["args"]


def test_namespaced_rbac_without_leader_election(tmp_path):
    docs = render(tmp_path, SCENARIOS["namespaced-no-leader-election"])
    assert_no_wildcards(docs)
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")] == [("team-a", FULLNAME)]
    assert not by_kind(docs, "ClusterRole")


# --- CRDs ----------------------------------------------------------------------------------------


def test_crd_files_define_both_resources():
    crds = chart_crds()
    assert sorted(crds) == [f"kafkaclusters.{GROUP}", f"kafkatopics.{GROUP}"]
    for name, crd in crds.items():
        spec = crd["spec"]
        assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
        assert [v["name"] for v in spec["versions"] if v["served"] and v["storage"]] == [VERSION]
        assert f"{spec['names']['plural']}.{GROUP}" == name
    assert crds[f"kafkaclusters.{GROUP}"]["spec"]["names"]["shortNames"] == ["kc"]
    assert crds[f"kafkatopics.{GROUP}"]["spec"]["names"]["shortNames"] == ["kt"]


def test_crds_render_unchanged_with_keep_annotation(tmp_path):
    rendered = {d["metadata"]["name"]: d for d in by_kind(render(tmp_path), "CustomResourceDefinition")}
    files = chart_crds()
    assert sorted(rendered) == sorted(files)
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep", name
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        # The template re-emits the file through fromYaml/toYaml: nothing else may change.
        expected = copy.deepcopy(files[name])
        expected["metadata"].setdefault("annotations", {})["helm.sh/resource-policy"] = "keep"
        expected["metadata"]["labels"] = {**meta["labels"], **expected["metadata"].get("labels", {})}
        assert crd == expected, name


def test_crds_can_be_left_out(tmp_path):
    docs = render(tmp_path, {"crds": {"install": False}})
    assert not by_kind(docs, "CustomResourceDefinition")
    assert one(docs, "Deployment")


def test_crd_template_rejects_a_file_that_is_not_a_crd(tmp_path):
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "files" / "crds" / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    proc = template(tmp_path, chart=chart, check=False)
    assert proc.returncode != 0
    assert "files/crds/broken.yaml is not a single CustomResourceDefinition document" in proc.stderr, proc.stderr


def test_packaged_chart_renders_the_same(tmp_path):
    """What `helm package` ships (after .helmignore) renders what the source tree renders: the
    CRD files under files/ must not be left out."""
    run_helm(tmp_path, "package", str(CHART), "--destination", str(tmp_path / "pkg"))
    (archive,) = (tmp_path / "pkg").glob("sluice-operator-*.tgz")
    packaged = parse_docs(template(tmp_path, chart=archive).stdout)
    assert packaged == render(tmp_path)
    assert len(by_kind(packaged, "CustomResourceDefinition")) == 2


# --- NOTES.txt -----------------------------------------------------------------------------------


def render_notes(tmp_path: Path, values: dict) -> str:
    """`helm template` does not print NOTES.txt (and `helm install --dry-run` needs a cluster), so
    render it through a copy of the chart where a probe template runs it with `tpl`: the same
    engine, values and helpers as at install."""
    chart = tmp_path / "notes-chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\ndata:\n"
        "  notes: {{ tpl (.Files.Get \"files/notes.txt\") . | quote }}\n")
    docs = parse_docs(template(tmp_path, values, chart=chart).stdout)
    return next(d for d in docs if d["metadata"]["name"] == "notes-probe")["data"]["notes"]


def test_notes_give_the_next_steps(tmp_path):
    notes = render_notes(tmp_path, {})
    for line in [
        f"kubectl -n {RELEASE_NS} rollout status deployment/{FULLNAME}",
        "kubectl -n default apply -f examples/kafkacluster.yaml",
        "kubectl -n default apply -f examples/kafkatopic.yaml",
        "kubectl -n default get kc -w",
        "kubectl -n default scale kc demo --replicas=5",
        "kubectl -n default port-forward svc/demo-kafka-bootstrap 9092",
        "KafkaProducer(bootstrap_servers='localhost:9092')",
        "demo-kafka-bootstrap.default.svc:9093",
    ]:
        assert line in notes, f"{line!r} not in NOTES:\n{notes}"
    assert "every namespace" in notes
    for example in re.findall(r"examples/[\w.-]+", notes):
        assert (ROOT / example).is_file(), example

    namespaced = render_notes(tmp_path / "ns", SCENARIOS["namespaced"])
    assert "kubectl -n team-a apply -f examples/kafkacluster.yaml" in namespaced
    assert "kubectl -n team-a port-forward svc/demo-kafka-bootstrap 9092" in namespaced
    assert "/etc/hosts" not in notes
    assert "in: team-a,team-b" in namespaced


# --- examples/ -----------------------------------------------------------------------------------


def load_example(name: str) -> dict:
    docs = parse_docs((EXAMPLES / name).read_text())
    assert len(docs) == 1, name
    return docs[0]


def example_names() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def closed(schema):
    """A CRD's structural schema as a JSON schema that rejects unknown fields, as the API server
    does under kubectl's default strict field validation. The CEL rules are not checked here."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def test_examples_use_the_crds():
    assert {"kafkacluster.yaml", "kafkatopic.yaml"} <= set(example_names())
    crds = crd_by_kind()
    for name in example_names():
        obj = load_example(name)
        assert obj["apiVersion"] == f"{GROUP}/{VERSION}", name
        assert obj["kind"] in crds, f"{name}: no CRD for {obj['kind']}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), name
        assert "namespace" not in obj["metadata"], f"{name}: the namespace comes from kubectl -n"
        for key, value in obj["spec"].get("config", {}).items():
            assert isinstance(value, str), f"{name}: config {key} must be a string, got {value!r}"
        schema = closed(crds[obj["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        schema.setdefault("properties", {}).update(
            {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
        jsonschema.validate(obj, schema)


def test_examples_fit_together():
    clusters = {c["metadata"]["name"]: c for c in map(load_example, example_names()) if c["kind"] == "KafkaCluster"}
    demo = clusters["demo"]["spec"]
    assert demo["replicas"] == 3 and demo["storage"]["size"] == "10Gi"
    assert demo["config"]["default.replication.factor"] == "3"
    assert demo["config"]["min.insync.replicas"] == "2"
    topic = load_example("kafkatopic.yaml")
    assert topic["metadata"]["name"] == "orders"
    spec = topic["spec"]
    assert spec["cluster"] == "demo" and spec["partitions"] == 6 and spec["replicas"] == 3
    assert spec["deletionPolicy"] == "Delete"
    assert spec["replicas"] <= demo["replicas"]
    assert int(spec["config"].get("min.insync.replicas", "1")) < spec["replicas"]
    for name, cluster in clusters.items():
        rf = int(cluster["spec"].get("config", {}).get("default.replication.factor", "1"))
        assert rf <= cluster["spec"]["replicas"], name


def test_example_settings_accepted_by_the_broker(broker_factory):
    """The operator writes spec.config into the brokers' server.properties and a KafkaTopic's
    config into CreateTopics: a name or value the broker rejects would crash-loop the pods or
    fail the topic. The real broker must take every one of them."""
    from confluent_kafka.admin import ConfigResource, NewTopic

    brokers = {}
    for name in example_names():
        obj = load_example(name)
        if obj["kind"] == "KafkaCluster":
            brokers[obj["metadata"]["name"]] = broker_factory(
                settings=obj["spec"].get("config", {}), name=obj["metadata"]["name"])
    topic = load_example("kafkatopic.yaml")["spec"]
    broker = brokers[topic["cluster"]]
    # One broker here, so replication factor 1; the partitions and configs are the example's.
    futures = broker.admin().create_topics(
        [NewTopic("orders", num_partitions=topic["partitions"], replication_factor=1, config=topic["config"])],
        request_timeout=20)
    futures["orders"].result(timeout=30)
    assert broker.topics()["orders"] == list(range(topic["partitions"]))
    described = broker.admin().describe_configs([ConfigResource("topic", "orders")])
    entries = next(iter(described.values())).result(timeout=30)
    assert {k: entries[k].value for k in topic["config"]} == topic["config"]


# --- with the operator binary --------------------------------------------------------------------


@pytest.mark.parametrize("example", ["kafkacluster.yaml", "kafkacluster-dev.yaml", "kafkacluster-external.yaml"])
def test_operator_render_validates_strict(tmp_path, example):
    require_operator()
    proc = run_operator("render", str(EXAMPLES / example))
    assert proc.returncode == 0, proc.stderr
    docs = parse_docs(proc.stdout)
    cluster = load_example(example)
    # The external listeners' Services: one per broker and a bootstrap one each.
    external = sum(1 for listener in cluster["spec"].get("listeners", [])
                   if listener["type"] in ("nodePort", "loadBalancer"))
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "Service", "Service", "StatefulSet", "PodDisruptionBudget"]
        + ["Service"] * external * (cluster["spec"]["replicas"] + 1)), [d["kind"] for d in docs]
    kubernetes_validate(tmp_path, docs)
    statefulset = one(docs, "StatefulSet")
    assert statefulset["metadata"]["name"] == f"{cluster['metadata']['name']}-kafka"
    assert statefulset["spec"]["replicas"] == cluster["spec"]["replicas"]


def test_operator_crds_are_the_charts(tmp_path):
    require_operator()
    proc = run_operator("crds")
    assert proc.returncode == 0, proc.stderr
    generated = {d["metadata"]["name"]: d for d in parse_docs(proc.stdout)}
    assert generated == chart_crds(), "charts/sluice-operator/files/crds/ differs from `sluice-operator crds`"
    committed = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for d in parse_docs(path.read_text()):
            committed[d["metadata"]["name"]] = d
    assert committed == generated, "crds/ differs from `sluice-operator crds`"
    kubernetes_validate(tmp_path, list(generated.values()))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_operator_accepts_the_deployment_args(tmp_path, scenario):
    """clap parses every argument before it acts on a trailing --help: an unknown flag or a bad
    value fails here instead of crash-looping the operator pod."""
    require_operator()
    container = operator_container(render(tmp_path, SCENARIOS[scenario]))
    assert container["command"] == ["sluice-operator"]
    proc = run_operator(*container["args"], "--help")
    assert proc.returncode == 0, f"sluice-operator {' '.join(container['args'])}:\n{proc.stderr}"


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [tuple(line.split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_matches_the_chart_and_the_pod_contract(tmp_path):
    instructions = dockerfile_instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert froms[0].startswith("rust:1-bookworm AS builder")
    assert froms[-1].startswith("gcr.io/distroless/cc-debian12:nonroot"), "runtime: minimal, no shell"
    build = next(args for op, args in instructions if op == "RUN" and "cargo build" in args)
    assert "--release --locked -p sluice-broker -p sluice-operator" in build
    # The binaries the chart's Deployment and the broker pods run are on PATH in the image.
    for binary in ("sluice-broker", "sluice-operator"):
        assert f"/out/usr/local/bin/{binary}" in build
    assert [args for op, args in instructions if op == "USER"] == ["65532:65532"]
    pod_security = one(render(tmp_path), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsUser"] == 65532 and pod_security["runAsNonRoot"] is True
    assert [args for op, args in instructions if op == "EXPOSE"] == ["9092 9644 8080"]
    # SLUICE_* variables would override the configuration file the operator gives broker pods.
    assert not [args for op, args in instructions if op == "ENV" and "SLUICE_" in args]
    assert not [op for op, _ in instructions if op == "ENTRYPOINT"], "Kubernetes sets the command"


def test_dockerfile_builds_workspace_packages():
    require_operator()
    proc = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    packages = {p["name"] for p in json.loads(proc.stdout)["packages"]}
    assert {"sluice-broker", "sluice-operator"} <= packages
