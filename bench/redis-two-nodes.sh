#!/usr/bin/env bash
# CPU of a Redis-broker node that has no subscriber, per event published on another node
# (issue 11: "a node only hears what it serves"). Starts a throwaway redis-server and two
# `tidings` nodes on it (release build), drives node A with `tidings-bench fanout` (its
# subscribers and publishers all on A), and reads node B's CPU time (utime + stime) from
# /proc before and after (minus its CPU over an idle window of the same length: the history
# sweep and pub/sub pings); the event count is Redis' own count of publish scripts run.
#
#   cargo build --release -p tidings-server -p tidings-bench
#   bench/redis-two-nodes.sh [extra fanout flags, e.g. --duration 10]
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="${TIDINGS_BIN:-$TARGET_DIR/release/tidings}"
BENCH="${TIDINGS_BENCH:-$TARGET_DIR/release/tidings-bench}"
LOGS=$(mktemp -d)
SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$LOGS"' EXIT

port=$(( 20000 + RANDOM % 40000 ))
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$LOGS/redis.log" &
pids+=($!)
for _ in $(seq 1 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
export REDIS_URL="redis://127.0.0.1:$port"

# Starts a node on a free port; prints "pid addr".
start_node() {
  local log="$LOGS/$1.log"
  BIND=127.0.0.1:0 JWT_SECRET="$SECRET" PUBLISH_RATE=4000000000 PUBLISH_BURST=4000000000 \
    "$BIN" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|.*http://||') || true
    [ -n "$addr" ] && { echo "$pid $addr"; return; }
    sleep 0.1
  done
  echo "node $1 did not start" >&2
  cat "$log" >&2
  exit 1
}
read -r pid_a addr_a < <(start_node a)
pids+=("$pid_a")
read -r pid_b addr_b < <(start_node b)
pids+=("$pid_b")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
scripts_run() {
  redis-cli -p "$port" info commandstats | tr -d '\r' |
    awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ {n += $3} END {print n + 0}'
}

now_ms() { date +%s%3N; }

# Node B's own background work (history sweep, pub/sub pings) over an idle window, to subtract.
sleep 2
IDLE_SECS=${IDLE_SECS:-10}
i_before=$(cpu_ticks "$pid_b"); t0=$(now_ms)
sleep "$IDLE_SECS"
i_after=$(cpu_ticks "$pid_b"); t1=$(now_ms)

b_before=$(cpu_ticks "$pid_b")
n_before=$(scripts_run)
t2=$(now_ms)
JWT_SECRET="$SECRET" "$BENCH" fanout --server-pid "$pid_a" --addr "$addr_a" --name node-a \
  --subscribers 1000 --topics 10 --publishers 4 "$@"
t3=$(now_ms)
b_after=$(cpu_ticks "$pid_b")
n_after=$(scripts_run)

awk -v it=$(( i_after - i_before )) -v iw=$(( t1 - t0 )) -v t=$(( b_after - b_before )) \
  -v w=$(( t3 - t2 )) -v tck="$(getconf CLK_TCK)" -v n=$(( n_after - n_before )) 'BEGIN {
  idle_us = it * 1e6 / tck * (w / iw)
  us = t * 1e6 / tck
  printf "node B idle: %.0f ms of CPU in %.1f s\n", it * 1000 / tck, iw / 1000
  printf "node B (no subscriber) while node A published %d events in %.1f s: %.0f ms of CPU, %.0f ms expected idle\n",
    n, w / 1000, us / 1000, idle_us / 1000
  printf "node B CPU per event published on node A: %.2f µs (%.2f µs before subtracting idle)\n",
    (n > 0 ? (us - idle_us) / n : 0), (n > 0 ? us / n : 0)
}'
