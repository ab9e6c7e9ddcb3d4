"""`python -m tests.kit` (or scripts/kit.sh): the local API server, the kubelet and the real
sluice-operator, then a shell with KUBECONFIG set. Leaving the shell stops everything.

    scripts/kit.sh                       # build first: cargo build --release -p sluice-broker -p sluice-operator
    kubectl apply --server-side --validate=false -f examples/kafkacluster.yaml
    kubectl get kc -w                    # until READY is 3 and STATUS is True
    kubectl apply --server-side --validate=false -f examples/kafkatopic.yaml
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from . import Kit, wait_for

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
    p.add_argument("--kubeconfig", help="run only the kubelet, against this API server")
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
    kit = Kit(workdir, binaries={"sluice-broker": str(args.broker_bin)}, ip_base=args.ip_base,
              kubeconfig=args.kubeconfig)
    kit.start()
    try:
        kube = kit.kube
        if not args.kubeconfig:
            for crd in sorted((ROOT / "crds").glob("*.yaml")):
                for doc in yaml.safe_load_all(crd.read_text()):
                    if doc:
                        kube.apply(doc, field_manager="sluice-kit")
        if not args.no_operator:
            kit.start_operator(args.operator_bin)
            wait_for(lambda: kit.operator.poll() is not None or "connected to the Kubernetes API server"
                     in kit.operator_log.read_text(errors="replace"), timeout=30, msg="operator start")
            if kit.operator.poll() is not None:
                print(kit.operator_log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
        print(f"""
sluice kit running
  API server   {kit.apiserver.url if kit.apiserver else args.kubeconfig}
  KUBECONFIG   {kit.kubeconfig}
  pod IPs      {kit.ip_base}.2 and up, one per pod (kubectl get pods -o yaml: status.podIP)
  logs         {workdir}/operator.log, {workdir}/pods/<ns>/<pod>/container.log
  claims       {workdir}/pvc/<ns>/<claim>/

  kubectl apply --server-side --validate=false -f examples/kafkacluster.yaml
  kubectl get kc -w                      # until READY is 3 and STATUS is True
  kubectl get pods -o wide               # IP: the brokers' addresses
  kubectl apply --server-side --validate=false -f examples/kafkatopic.yaml
The kit serves no OpenAPI documents: kubectl apply/create need --validate=false.
Brokers advertise their pod IPs: bootstrap from any pod IP, port 9092 (kubectl get pods -o wide).
Faults: curl -X POST $SLUICE_KIT_API/kit/v1/namespaces/default/pods/demo-kafka-1/kill   (or pause, resume;
        GET $SLUICE_KIT_API/kit/v1/pods lists pods with their pids)
Exit the shell to stop everything.
""", flush=True)
        env = {**os.environ, "KUBECONFIG": str(kit.kubeconfig), "SLUICE_KIT_DIR": str(workdir),
               "SLUICE_KIT_API": kit.apiserver.url if kit.apiserver else "",
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
