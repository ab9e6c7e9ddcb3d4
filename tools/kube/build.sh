#!/usr/bin/env bash
# Builds the Kubernetes control plane the kit runs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) and etcd from the Go modules pinned in this folder's go.mod, into a
# cache outside the work tree keyed by version, so a second run rebuilds nothing.
#
# Usage: tools/kube/build.sh          prints the bin directory on its last line
# Environment: SLUICE_CACHE (default ~/.cache/sluice) is where the binaries go.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$HERE/go.mod")"
ETCD_VERSION="$(sed -n 's/^\tgo.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\).*/\1/p' "$HERE/go.mod")"
# The go.mod's hash joins the key: a changed pin (or a replace line) rebuilds.
# The key hashes the files' contents only (not their paths), so every checkout shares one build.
KEY="$K8S_VERSION-etcd$ETCD_VERSION-$(cat "$HERE/go.mod" "$HERE/go.sum" | sha256sum | cut -c1-12)"
BIN="${SLUICE_CACHE:-$HOME/.cache/sluice}/kube/$KEY/bin"
TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

have_all() {
    local t
    for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
}

if have_all; then
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "go is missing: install a Go toolchain (1.26)" >&2; exit 1; }
# A kube-apiserver built with Go 1.27 served broken OpenAPI documents; 1.26 builds a correct one.
case "$(go env GOVERSION)" in
    go1.26*) ;;
    *) echo "warning: building Kubernetes $K8S_VERSION with $(go env GOVERSION); it is known good with go1.26" >&2 ;;
esac

# What Kubernetes' own build stamps into its binaries (hack/lib/version.sh): helm and kubectl read
# the server's version, and a chart's kubeVersion constraint fails on the default v0.0.0.
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
major="${K8S_VERSION#v}"; major="${major%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp="$BIN.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cd "$HERE"
export CGO_ENABLED=0
start=$(date +%s)
echo "building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $BIN (cold: about 15 minutes on 2 cores)" >&2
for t in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/$t" "k8s.io/kubernetes/cmd/$t"
    echo "  $t built ($(( $(date +%s) - start ))s)" >&2
done
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
echo "  etcd built ($(( $(date +%s) - start ))s)" >&2
mkdir -p "$(dirname "$BIN")"
rm -rf "$BIN"
mv "$tmp" "$BIN"
trap - EXIT
echo "$BIN"
