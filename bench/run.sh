#!/usr/bin/env bash
# Produce-then-consume benchmark through librdkafka (confluent-kafka): 1,000,000 records of 100 B
# and of 1 KiB, with acks=1 and acks=all, each against a fresh broker started from the release
# binary. Extra arguments go to every run (e.g. --records 200000, --bootstrap HOST:PORT).
#
# Usage: bench/run.sh [produce_consume.py args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "no .venv: run scripts/test.sh once (it creates .venv from tests/requirements.txt)" >&2
    exit 1
fi
BIN="${SLUICE_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice-broker}"
if [ ! -x "$BIN" ]; then
    cargo build --release -p sluice-broker
fi

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM," \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "broker: $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo "client: $("$PY" -c 'import confluent_kafka as c, importlib.metadata as m; print("confluent-kafka", m.version("confluent-kafka"), "librdkafka", c.libversion()[0])')"
echo

for size in 100 1024; do
    for acks in 1 all; do
        "$PY" bench/produce_consume.py --size "$size" --acks "$acks" "$@"
        echo
    done
done
