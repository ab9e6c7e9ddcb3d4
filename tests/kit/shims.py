"""Stand-ins for what a cluster's network gives the operator: it runs on the host, where the
bootstrap Service name `<cluster>-kafka-bootstrap.<ns>.svc` does not resolve. The operator
honours the annotation `kafka.sluice.dev/bootstrap-servers` on a KafkaCluster (an address for
its admin calls, meant for an operator outside the cluster network); the kit keeps it set to the
cluster's pod addresses, the way the Service would route."""

from __future__ import annotations

import asyncio
import logging

from .client import KubeError

log = logging.getLogger("kit.shims")

ANNOTATION = "kafka.sluice.dev/bootstrap-servers"
KC = "kafka.sluice.dev/v1alpha1"


DEFAULT_INTERNAL_PORT = 9093


def internal_port(kc: dict) -> int:
    """The port of the cluster's internal listener (the operator's admin connection uses it):
    from spec.listeners, else the operator's default."""
    for listener in (kc.get("spec") or {}).get("listeners") or []:
        if listener.get("type") == "internal":
            return int(listener["port"])
    return DEFAULT_INTERNAL_PORT


async def bootstrap_annotations(kubelet, interval: float = 1.0):
    """Forever: every KafkaCluster gets ANNOTATION = its StatefulSet's pod addresses on the
    internal listener's port. A cluster whose annotation someone else set to another value is
    left alone."""
    set_by_kit: dict[tuple, str] = {}
    while True:
        try:
            listing = await kubelet.client.list(KC, "kafkaclusters")
            for kc in listing.get("items") or []:
                meta = kc["metadata"]
                key = (meta["namespace"], meta["name"])
                sts = await kubelet.client.get("apps/v1", "statefulsets", f"{meta['name']}-kafka",
                                               meta["namespace"], ok_404=True)
                if sts is None:
                    continue
                replicas = max(1, int((sts.get("spec") or {}).get("replicas") or 1))
                port = internal_port(kc)
                want = ",".join(f"{kubelet.pod_ip(meta['namespace'], sts['metadata']['name'] + '-' + str(i))}:{port}"
                                for i in range(replicas))
                have = (meta.get("annotations") or {}).get(ANNOTATION)
                if have == want or (have is not None and have != set_by_kit.get(key)):
                    continue
                await kubelet.client.patch(KC, "kafkaclusters", meta["name"],
                                           {"metadata": {"annotations": {ANNOTATION: want}}}, meta["namespace"])
                set_by_kit[key] = want
        except asyncio.CancelledError:
            raise
        except KubeError as e:
            if e.code != 404:  # 404: the CRD is not installed (yet)
                log.debug("bootstrap annotations: %s", e)
        except Exception as e:  # noqa: BLE001 - the API server may be going away
            log.debug("bootstrap annotations: %s", e)
        await asyncio.sleep(interval)
