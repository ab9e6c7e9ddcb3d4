#!/usr/bin/env bash
# Starts the end-to-end kit: a local Kubernetes API server, the kit's kubelet (runs StatefulSet
# pods as sluice-broker processes on loopback addresses) and the real sluice-operator, then a
# shell with KUBECONFIG set. Leaving the shell stops everything. See tests/kit/__init__.py.
#
# Usage: scripts/kit.sh [--workdir DIR] [--no-operator] [--command CMD] ...   (--help for all)
# Needs: cargo build --release -p sluice-broker -p sluice-operator, and the test venv
# (SKIP_CARGO=1 SKIP_PYTEST=1 scripts/test.sh creates .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "no .venv: run SKIP_CARGO=1 SKIP_PYTEST=1 scripts/test.sh first" >&2
    exit 2
fi
exec "$PY" -m tests.kit "$@"
