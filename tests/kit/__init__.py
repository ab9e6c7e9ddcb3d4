"""End-to-end kit: a local Kubernetes API server and kubelet, so the real sluice-operator and
sluice-broker binaries run together without a cluster. See README.md in this directory."""
