"""`python -m tests.kit` (or scripts/kit.sh): the real Kubernetes control plane on loopback, the
node agent, and the operator installed with its Helm chart, then a shell with KUBECONFIG set and
kubectl on PATH. Leaving the shell stops everything.

    scripts/kit.sh                       # build first: cargo build --release -p sluice-broker -p sluice-operator
    kubectl apply -f examples/kafkacluster.yaml
    kubectl get kc -w                    # until READY is 3 and STATUS is True
    kubectl apply -f examples/kafkatopic.yaml
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import OPERATOR_NS, Kit

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    p = argparse.ArgumentParser(prog="python -m tests.kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", help="kit state: kubeconfig, pod dirs and logs, claims (default: a temp dir)")
    p.add_argument("--broker-bin", default=os.environ.get("SLUICE_BROKER_BIN", target / "sluice-broker"))
    p.add_argument("--operator-bin", default=os.environ.get("SLUICE_OPERATOR_BIN", target / "sluice-operator"))
    p.add_argument("--no-operator", action="store_true", help="do not start the operator")
    p.add_argument("--ip-base", help="pod addresses 127.A.B.x (default: random 127.A.B)")
    p.add_argument("--command", help="run this shell command instead of an interactive shell")
    args = p.parse_args(argv)

    for label, path in (("broker", args.broker_bin), ("operator", args.operator_bin)):
        if label == "operator" and args.no_operator:
            continue
        if not Path(path).exists():
            print(f"{label} binary not found at {path}: cargo build --release -p sluice-broker -p sluice-operator",
                  file=sys.stderr)
            return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sluice-kit-"))
    kit = Kit(workdir, binaries={"sluice-broker": str(args.broker_bin), "sluice-operator": str(args.operator_bin)},
              ip_base=args.ip_base)
    print("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the node agent...",
          flush=True)
    kit.start()
    try:
        if not args.no_operator:
            print("helm install sluice-operator charts/sluice-operator -n sluice-system ...", flush=True)
            kit.install_operator()
        cp = kit.control_plane
        print(f"""
sluice kit running
  API server   {cp.url}  (logs: {cp.dir}/<component>.log)
  KUBECONFIG   {kit.kubeconfig}  (cluster admin; the operator runs as its ServiceAccount)
  pod IPs      {kit.ip_base}.2 and up, one per pod name (kubectl get pods -o wide)
  logs         {workdir}/pods/<ns>/<pod>/container.log  (operator: namespace {OPERATOR_NS})
  volumes      {workdir}/pv/<ns>/<claim>-<uid>/

  kubectl apply -f examples/kafkacluster.yaml
  kubectl get kc -w                      # until READY is 3 and STATUS is True
  kubectl get pods -o wide               # IP: the brokers' addresses
  kubectl apply -f examples/kafkatopic.yaml
On the internal listener (port 9093) brokers advertise their pod IPs: bootstrap from any pod IP
there (kubectl get pods -o wide). The forwarding listener (9092) advertises localhost:9092: relay
a local port to a pod's 9092 (python -c 'from tests.relay import Relay ...') with advertisedPort.
Faults: kill -9 $(cat $SLUICE_KIT_DIR/pods/default/demo-kafka-1/pid)   (the container restarts;
        kill -STOP / -CONT pause and resume it; kubectl delete pod replaces it)
Exit the shell to stop everything.
""", flush=True)
        env = {**os.environ, "KUBECONFIG": str(kit.kubeconfig), "SLUICE_KIT_DIR": str(workdir),
               "PATH": f"{kit.control_plane.bin}:{Path(kit.helm).parent}:{os.environ.get('PATH', '')}",
               "PS1": r"(sluice-kit) \w \$ "}
        if args.command:
            return subprocess.call(args.command, shell=True, env=env, cwd=ROOT)
        shell = os.environ.get("SHELL", "/bin/bash")
        cmd = [shell, "--norc", "-i"] if shell.endswith("bash") else [shell]
        return subprocess.call(cmd, env=env, cwd=ROOT)
    finally:
        print("stopping the kit...", flush=True)
        kit.stop()


if __name__ == "__main__":
    sys.exit(main())
