"""Helpers shared by the kit tests (tests/test_kit_*.py)."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path

import yaml

from kit.client import SyncClient

ROOT = Path(__file__).resolve().parent.parent
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
KC = "kafka.sluice.dev/v1alpha1"


def apply_crds(kube: SyncClient):
    for path in CRDS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                kube.apply(doc, field_manager="kit-test")


def load_example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def watch_events(kube: SyncClient, path: str, count: int, timeout: float = 10.0, **params) -> list:
    """Opens a watch on `path` and returns its first `count` events (type, object), failing
    after `timeout` seconds."""
    q = "&".join(f"{k}={v}" for k, v in {"watch": "1", **params}.items())
    req = urllib.request.Request(f"{kube.conn.server}{path}?{q}", headers=kube.conn.headers)
    out = []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        while len(out) < count:
            line = r.readline()
            if not line:
                break
            ev = json.loads(line)
            out.append((ev["type"], ev["object"]))
    return out


def random_loopback_base() -> str:
    """A random 127.A.B.0/24 block for one test's pod addresses (never 127.0.0.x)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 254)}"
