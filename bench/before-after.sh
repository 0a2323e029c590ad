#!/usr/bin/env bash
# Runs the four scenarios of docs/BENCHMARKS.md against two tidings binaries in one run,
# alternating them (A B A B) so the machine's load drift shows up as run-to-run noise on both,
# plus the Node `ws` peer once per scenario:
#   bench/before-after.sh BEFORE_BIN AFTER_BIN [extra tidings-bench args...]
# Tables and JSON reports go to $CARGO_TARGET_DIR/bench-before-after/ (default target/...).
# IDLE_CONNS (default 18000) sets the idle scenario's connections: the server caps itself at
# the open-file limit minus some headroom (18,976 at a 20,000 limit), so 19,000 needs more.
set -uo pipefail
cd "$(dirname "$0")/.."
before=$1; after=$2; shift 2
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BENCH="$TARGET_DIR/release/tidings-bench"
OUT="$TARGET_DIR/bench-before-after"
mkdir -p "$OUT"
{
  echo "# $(date -u +%FT%TZ)  $(nproc) cores  before=$before after=$after"
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/summary.txt"
run() { # scenario label bin [args]
  local scenario=$1 label=$2 bin=$3; shift 3
  echo "## $scenario $label" | tee -a "$OUT/summary.txt"
  local extra=()
  if [ "$scenario" = idle ]; then extra=(--conns "${IDLE_CONNS:-18000}"); fi
  "$BENCH" "$scenario" --spawn tidings --tidings-bin "$bin" --json "$OUT/$scenario-$label.json" "${extra[@]}" "$@" \
    2> >(grep -v ' connected$' >&2) | tee -a "$OUT/summary.txt"
}
for scenario in idle fanout latency handshake; do
  run "$scenario" before-1 "$before" "$@"
  run "$scenario" after-1 "$after" "$@"
  run "$scenario" before-2 "$before" "$@"
  run "$scenario" after-2 "$after" "$@"
  echo "## $scenario node" | tee -a "$OUT/summary.txt"
  node_extra=()
  if [ "$scenario" = idle ]; then node_extra=(--conns "${IDLE_CONNS:-18000}"); fi
  "$BENCH" "$scenario" --spawn node --json "$OUT/$scenario-node.json" "${node_extra[@]}" "$@" \
    2> >(grep -v ' connected$' >&2) | tee -a "$OUT/summary.txt"
  echo "# load average after $scenario: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"
done
