#!/usr/bin/env bash
# Runs the four benchmark scenarios of docs/BENCHMARKS.md at full size, each against tidings
# and the Node `ws` peer in the same run, and keeps the tables and JSON reports in
# $CARGO_TARGET_DIR/bench-results/ (default target/bench-results/). Takes about 4 minutes.
# Extra arguments are passed to every scenario (e.g. `--spawn tidings` to skip Node).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
OUT="$TARGET_DIR/bench-results"
mkdir -p "$OUT"

cargo build --release -p tidings-bench -p tidings-server
(cd bench/peers && npm ci --no-audit --no-fund)

targets=(--spawn tidings --spawn node)
if [ "$#" -gt 0 ]; then targets=("$@"); fi

{
  echo "# $(date -u +%FT%TZ)  $(nproc) cores  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/summary.txt"
for scenario in idle fanout latency handshake; do
  "$TARGET_DIR/release/tidings-bench" "$scenario" "${targets[@]}" --json "$OUT/$scenario.json" \
    2> >(grep -v ' connected$' >&2) | tee -a "$OUT/summary.txt"
  echo "# load average after $scenario: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"
done
