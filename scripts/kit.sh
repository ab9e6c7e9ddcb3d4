#!/usr/bin/env bash
# Starts the end-to-end kit: the real Kubernetes control plane on loopback (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler; built once by tools/kube/build.sh), the kit's node
# agent (runs the pods bound to its Node as processes on loopback addresses) and the operator
# installed with `helm install`, then a shell with KUBECONFIG set and kubectl and helm on PATH.
# Leaving the shell stops everything. See tests/kit/README.md.
#
# Usage: scripts/kit.sh [--workdir DIR] [--no-operator] [--command CMD] ...   (--help for all)
# Needs: cargo build --release -p sluice-broker -p sluice-operator, and the test venv and helm
# (SKIP_CARGO=1 SKIP_PYTEST=1 scripts/test.sh installs them and builds the control plane).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "no .venv: run SKIP_CARGO=1 SKIP_PYTEST=1 scripts/test.sh first" >&2
    exit 2
fi
exec "$PY" -m tests.kit "$@"
