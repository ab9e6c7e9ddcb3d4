"""The local API server's behaviour the operator relies on (tests/kit/apiserver.py)."""

from __future__ import annotations

import copy

import pytest

from kit.apiserver import ApiServerThread
from kit.client import KubeError, SyncClient
from kitutil import KC, apply_crds, load_example, watch_events

pytestmark = pytest.mark.kit

NS = "default"


@pytest.fixture
def apiserver(tmp_path):
    server = ApiServerThread(tmp_path / "kubeconfig")
    yield server
    server.stop()


@pytest.fixture
def kube(apiserver) -> SyncClient:
    return SyncClient(apiserver.kubeconfig)


def cm(name: str, data: dict | None = None, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, **({"labels": labels} if labels else {})}, "data": data or {}}


def test_discovery_serves_builtin_kinds_and_crds(kube):
    assert kube.request("GET", "/version")["major"] == "1"
    core = {r["name"] for r in kube.request("GET", "/api/v1")["resources"]}
    assert {"configmaps", "services", "pods", "persistentvolumeclaims", "events", "namespaces",
            "pods/status"} <= core
    apps = {r["name"] for r in kube.request("GET", "/apis/apps/v1")["resources"]}
    assert {"statefulsets", "statefulsets/status", "statefulsets/scale"} <= apps
    groups = {g["name"] for g in kube.request("GET", "/apis")["groups"]}
    assert "kafka.sluice.dev" not in groups
    apply_crds(kube)
    groups = {g["name"] for g in kube.request("GET", "/apis")["groups"]}
    assert {"apps", "policy", "coordination.k8s.io", "events.k8s.io", "kafka.sluice.dev"} <= groups
    res = {r["name"]: r for r in kube.request("GET", f"/apis/{KC}")["resources"]}
    assert set(res) == {"kafkaclusters", "kafkaclusters/status", "kafkaclusters/scale",
                        "kafkatopics", "kafkatopics/status"}
    assert res["kafkaclusters"]["shortNames"] == ["kc"]
    crd = kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", "kafkatopics.kafka.sluice.dev")
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established["Established"] == "True"
    # Deleting the CRD stops serving the kind.
    kube.delete("apiextensions.k8s.io/v1", "customresourcedefinitions", "kafkatopics.kafka.sluice.dev")
    with pytest.raises(KubeError) as e:
        kube.list(KC, "kafkatopics", NS)
    assert e.value.code == 404


def test_crud_label_selectors_and_missing_namespace(kube):
    kube.create(cm("a", {"k": "1"}, {"app": "x", "tier": "web"}), NS)
    kube.create(cm("b", {"k": "2"}, {"app": "y"}), NS)
    kube.create(cm("c", {"k": "3"}), NS)
    names = lambda sel: [o["metadata"]["name"] for o in kube.list("v1", "configmaps", NS, sel)["items"]]  # noqa: E731
    assert names("app=x") == ["a"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x,y)") == ["a", "b"]
    assert names("app notin (x)") == ["b", "c"]
    assert names("app,!tier") == ["b"]
    assert names("!app") == ["c"]
    by_name = kube.list("v1", "configmaps", NS, field_selector="metadata.name=b")["items"]
    assert [o["data"] for o in by_name] == [{"k": "2"}]
    with pytest.raises(KubeError) as e:
        kube.create(cm("a"), NS)
    assert (e.value.code, e.value.reason) == (409, "AlreadyExists")
    with pytest.raises(KubeError) as e:
        kube.create(cm("z"), "no-such-namespace")
    assert e.value.code == 404
    kube.delete("v1", "configmaps", "a", NS)
    assert kube.get("v1", "configmaps", "a", NS, ok_404=True) is None


def test_stale_resource_version_gets_409(kube):
    created = kube.create(cm("a", {"k": "1"}), NS)
    first = copy.deepcopy(created)
    first["data"] = {"k": "2"}
    updated = kube.replace(first, NS)
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    stale = copy.deepcopy(created)
    stale["data"] = {"k": "3"}
    with pytest.raises(KubeError) as e:
        kube.replace(stale, NS)
    assert (e.value.code, e.value.reason) == (409, "Conflict")
    # A merge patch naming a stale version conflicts too; one without a version does not.
    with pytest.raises(KubeError) as e:
        kube.patch("v1", "configmaps", "a", {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                                             "data": {"k": "4"}}, NS)
    assert e.value.code == 409
    assert kube.patch("v1", "configmaps", "a", {"data": {"k": "5"}}, NS)["data"] == {"k": "5"}
    # JSON patch.
    out = kube.patch("v1", "configmaps", "a", [{"op": "add", "path": "/data/j", "value": "x"},
                                               {"op": "remove", "path": "/data/k"}], NS, kind="json")
    assert out["data"] == {"j": "x"}


def test_watch_resumes_from_a_resource_version(kube):
    a = kube.create(cm("a", {"k": "1"}, {"w": "yes"}), NS)
    since = a["metadata"]["resourceVersion"]
    kube.patch("v1", "configmaps", "a", {"data": {"k": "2"}}, NS)
    kube.create(cm("b", labels={"w": "yes"}), NS)
    kube.create(cm("other"), NS)  # outside the selector below
    kube.delete("v1", "configmaps", "a", NS)
    events = watch_events(kube, f"/api/v1/namespaces/{NS}/configmaps", 3,
                          resourceVersion=since, labelSelector="w=yes")
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert events[0][1]["data"] == {"k": "2"}
    rvs = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert rvs == sorted(rvs) and rvs[0] > int(since)
    # Without a version: the current state as ADDED events.
    events = watch_events(kube, f"/api/v1/namespaces/{NS}/configmaps", 2)
    assert sorted(o["metadata"]["name"] for t, o in events if t == "ADDED") == ["b", "other"]


def test_watch_from_a_compacted_version_gets_410(apiserver, kube):
    a = kube.create(cm("a"), NS)
    kube.patch("v1", "configmaps", "a", {"data": {"k": "2"}}, NS)
    apiserver.call(apiserver.server.store.compact)
    events = watch_events(kube, f"/api/v1/namespaces/{NS}/configmaps", 1,
                          resourceVersion=a["metadata"]["resourceVersion"])
    assert events[0][0] == "ERROR"
    assert (events[0][1]["code"], events[0][1]["reason"]) == (410, "Expired")


def test_events_arrive_on_an_open_watch(apiserver, kube):
    import threading

    got = {}

    def watch():
        got["events"] = watch_events(kube, f"/api/v1/namespaces/{NS}/configmaps", 2,
                                     resourceVersion=str(apiserver.server.store.rv))

    start_rv = apiserver.server.store.rv
    t = threading.Thread(target=watch)
    t.start()
    from conftest import wait_until
    wait_until(lambda: apiserver.server.store.watchers, timeout=10, msg="watch open")
    kube.create(cm("live"), NS)
    kube.delete("v1", "configmaps", "live", NS)
    t.join(10)
    assert [(ty, o["metadata"]["name"]) for ty, o in got["events"]] == [("ADDED", "live"), ("DELETED", "live")]
    assert int(got["events"][0][1]["metadata"]["resourceVersion"]) > start_rv


def test_finalizers_and_deletion_timestamp(kube):
    apply_crds(kube)
    topic = load_example("kafkatopic.yaml")
    topic["metadata"]["finalizers"] = ["kafka.sluice.dev/topic"]
    created = kube.create(topic, NS)
    marked = kube.delete(KC, "kafkatopics", "orders", NS)
    assert marked["metadata"]["deletionTimestamp"]
    still = kube.get(KC, "kafkatopics", "orders", NS)
    assert still["metadata"]["finalizers"] == ["kafka.sluice.dev/topic"]
    assert still["metadata"]["uid"] == created["metadata"]["uid"]
    # Deleting again changes nothing; removing the last finalizer deletes it.
    kube.delete(KC, "kafkatopics", "orders", NS)
    kube.patch(KC, "kafkatopics", "orders", [{"op": "remove", "path": "/metadata/finalizers/0"}], NS, kind="json")
    assert kube.get(KC, "kafkatopics", "orders", NS, ok_404=True) is None


def test_garbage_collection_of_owned_objects(kube):
    apply_crds(kube)
    owner = kube.create(load_example("kafkacluster.yaml"), NS)
    other = kube.create(cm("other-owner"), NS)

    def ref(o, controller=True):
        return {"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}

    owned = cm("owned")
    owned["metadata"]["ownerReferences"] = [ref(owner)]
    kube.create(owned, NS)
    shared = cm("shared")
    shared["metadata"]["ownerReferences"] = [ref(owner), ref(other, controller=False)]
    kube.create(shared, NS)
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "owned-sts", "ownerReferences": [ref(owner)]},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "serviceName": "x",
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}}
    kube.create(sts, NS)
    kube.delete(KC, "kafkaclusters", "demo", NS)
    assert kube.get("v1", "configmaps", "owned", NS, ok_404=True) is None
    assert kube.get("apps/v1", "statefulsets", "owned-sts", NS, ok_404=True) is None
    left = kube.get("v1", "configmaps", "shared", NS)
    assert [r["uid"] for r in left["metadata"]["ownerReferences"]] == [other["metadata"]["uid"]]


def test_status_subresource_and_generation(kube):
    apply_crds(kube)
    kc = kube.create(load_example("kafkacluster.yaml"), NS)
    assert kc["metadata"]["generation"] == 1 and "status" not in kc
    # Status only through /status, and it does not bump the generation.
    s = kube.patch(KC, "kafkaclusters", "demo", {"status": {"readyReplicas": 2, "replicas": 3}}, NS, sub="status")
    assert s["status"]["readyReplicas"] == 2 and s["metadata"]["generation"] == 1
    body = kube.get(KC, "kafkaclusters", "demo", NS)
    body["status"] = {"readyReplicas": 99}
    body["spec"]["replicas"] = 4
    out = kube.replace(body, NS)
    assert out["status"]["readyReplicas"] == 2, "main resource writes ignore status"
    assert out["spec"]["replicas"] == 4 and out["metadata"]["generation"] == 2
    # A spec change through /status is ignored.
    out = kube.patch(KC, "kafkaclusters", "demo", {"spec": {"replicas": 7}, "status": {"readyReplicas": 3}},
                     NS, sub="status")
    assert out["spec"]["replicas"] == 4 and out["status"]["readyReplicas"] == 3
    # Metadata-only changes keep the generation.
    out = kube.patch(KC, "kafkaclusters", "demo", {"metadata": {"labels": {"x": "y"}}}, NS)
    assert out["metadata"]["generation"] == 2
    # No-op writes keep the resource version.
    again = kube.patch(KC, "kafkaclusters", "demo", {"metadata": {"labels": {"x": "y"}}}, NS)
    assert again["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"]


def test_scale_subresource_of_kafkacluster_and_statefulset(kube):
    apply_crds(kube)
    kube.create(load_example("kafkacluster.yaml"), NS)
    kube.patch(KC, "kafkaclusters", "demo", {"status": {"replicas": 3, "labelSelector": "app=demo"}}, NS,
               sub="status")
    scale = kube.get(KC, "kafkaclusters", "demo", NS, sub="scale")
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]) == (
        "Scale", 3, {"replicas": 3, "selector": "app=demo"})
    out = kube.patch(KC, "kafkaclusters", "demo", {"spec": {"replicas": 5}}, NS, sub="scale")
    assert out["spec"]["replicas"] == 5
    kc = kube.get(KC, "kafkaclusters", "demo", NS)
    assert kc["spec"]["replicas"] == 5 and kc["metadata"]["generation"] == 2
    stale = dict(scale, spec={"replicas": 1})
    with pytest.raises(KubeError) as e:
        kube.request("PUT", f"/apis/{KC}/namespaces/{NS}/kafkaclusters/demo/scale", stale)
    assert e.value.code == 409
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}}
    kube.create(sts, NS)
    s = kube.get("apps/v1", "statefulsets", "web", NS, sub="scale")
    assert s["spec"]["replicas"] == 2 and s["status"]["selector"] == "app=web"
    kube.patch("apps/v1", "statefulsets", "web", {"spec": {"replicas": 0}}, NS, sub="scale")
    assert kube.get("apps/v1", "statefulsets", "web", NS)["spec"]["replicas"] == 0


def test_server_side_apply_keeps_other_managers_fields(kube):
    applied = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cfg", "labels": {"mine": "1"}}, "data": {"a": "1", "b": "2"}}
    created = kube.apply(applied, "operator", NS)
    assert created["data"] == {"a": "1", "b": "2"}
    # Another manager adds a label and a key with an ordinary patch.
    kube.patch("v1", "configmaps", "cfg", {"metadata": {"labels": {"theirs": "x"}}, "data": {"c": "3"}}, NS,
               field_manager="kubectl-edit")
    # The operator applies again without `b` and without its label: those go, the others stay.
    applied2 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "10"}}
    out = kube.apply(applied2, "operator", NS)
    assert out["data"] == {"a": "10", "c": "3"}
    assert out["metadata"]["labels"] == {"theirs": "x"}
    managers = {(m["manager"], m["operation"]) for m in out["metadata"]["managedFields"]}
    assert managers == {("operator", "Apply"), ("kubectl-edit", "Update")}
    # A field another applier owns conflicts unless forced.
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"d": "1"}},
               "other", NS)
    with pytest.raises(KubeError) as e:
        kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                    "data": {"a": "10", "d": "2"}}, "operator", NS, force=False)
    assert e.value.code == 409
    out = kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                      "data": {"a": "10", "d": "2"}}, "operator", NS, force=True)
    assert out["data"] == {"a": "10", "c": "3", "d": "2"}
    # Status apply is tracked apart from the main resource: a later spec apply keeps it.
    kube.apply({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "serviceName": "s",
                         "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}},
               "operator", NS)
    kube.apply({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                "status": {"replicas": 1}}, "operator", NS, plural="statefulsets", sub="status")
    out = kube.apply({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                      "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "serviceName": "s",
                               "template": {"metadata": {"labels": {"a": "b"}},
                                            "spec": {"containers": [{"name": "c"}]}}}}, "operator", NS)
    assert out["status"] == {"replicas": 1} and out["spec"]["replicas"] == 2


def test_custom_resources_are_validated_pruned_and_defaulted(kube):
    apply_crds(kube)
    good = load_example("kafkatopic.yaml")
    del good["spec"]["deletionPolicy"]
    good["spec"]["unknownField"] = 1
    out = kube.create(good, NS)
    assert out["spec"]["deletionPolicy"] == "Delete", "schema default applied"
    assert "unknownField" not in out["spec"], "unknown fields pruned"
    bad = load_example("kafkatopic.yaml")
    bad["metadata"]["name"] = "bad"
    bad["spec"]["partitions"] = "six"
    del bad["spec"]["cluster"]
    with pytest.raises(KubeError) as e:
        kube.create(bad, NS)
    assert (e.value.code, e.value.reason) == (422, "Invalid")
    assert "partitions" in e.value.body["message"] and "cluster" in e.value.body["message"]
    # Updates are checked too.
    with pytest.raises(KubeError) as e:
        kube.patch(KC, "kafkatopics", "orders", {"spec": {"replicas": "three"}}, NS)
    assert e.value.code == 422
    assert kube.get(KC, "kafkatopics", "orders", NS)["spec"]["replicas"] == 3


def test_watch_sees_objects_moving_across_its_selector(kube):
    a = kube.create(cm("a", labels={"team": "x"}), NS)
    kube.patch("v1", "configmaps", "a", {"metadata": {"labels": {"team": "y"}}}, NS)
    kube.patch("v1", "configmaps", "a", {"metadata": {"labels": {"team": "x"}}}, NS)
    events = watch_events(kube, f"/api/v1/namespaces/{NS}/configmaps", 2,
                          resourceVersion=a["metadata"]["resourceVersion"], labelSelector="team=x")
    assert [t for t, _ in events] == ["DELETED", "ADDED"]
    # sendInitialEvents: the state, then a bookmark marking its end.
    events = watch_events(kube, f"/api/v1/namespaces/{NS}/configmaps", 2, sendInitialEvents="true",
                          resourceVersionMatch="NotOlderThan", allowWatchBookmarks="true")
    assert events[0][0] == "ADDED" and events[1][0] == "BOOKMARK"
    assert events[1][1]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_deleting_a_namespace_deletes_its_objects(kube):
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}})
    kube.create(cm("in-scratch"), "scratch")
    kube.create(cm("in-default"), NS)
    kube.delete("v1", "namespaces", "scratch")
    assert kube.get("v1", "configmaps", "in-scratch", "scratch", ok_404=True) is None
    assert kube.get("v1", "namespaces", "scratch", ok_404=True) is None
    assert kube.get("v1", "configmaps", "in-default", NS)


def test_table_output_uses_printer_columns(kube):
    import json
    import urllib.request

    apply_crds(kube)
    kube.create(load_example("kafkatopic.yaml"), NS)
    kube.patch(KC, "kafkatopics", "orders", {"status": {"topicName": "orders", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Synced", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}, NS, sub="status")
    req = urllib.request.Request(f"{kube.conn.server}/apis/{KC}/namespaces/{NS}/kafkatopics",
                                 headers={**kube.conn.headers,
                                          "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        t = json.load(r)
    assert t["kind"] == "Table"
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Cluster", "Topic", "Partitions", "Replicas", "Ready", "Age"]
    assert t["rows"][0]["cells"][:6] == ["orders", "demo", "orders", 6, 3, "True"]
