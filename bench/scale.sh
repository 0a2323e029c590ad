#!/usr/bin/env bash
# Scale figures on one machine (issue 17): N `tidings` nodes on one redis-server (Redis
# broker), C subscribed connections per node, events published at a fixed rate across the
# cluster; for two topic layouts:
#   spread        every topic has subscribers on every node (each node SUBSCRIBEs to every
#                 topic's channel, Redis sends each event to N nodes)
#   concentrated  each topic's subscribers all on one node (a node subscribes to its own
#                 topics only, Redis sends each event to one node)
# Publishers post round robin to all nodes (as through a load balancer) in both layouts.
#
# Reports: total RSS of the nodes (and per connection, over the nodes' RSS before any client),
# Redis' RSS, Redis CPU (utime + stime from /proc) per published event, the nodes' CPU per
# event, delivery p50/p99 (publish → deliver, each tool process's own histogram; the worst of
# them is reported).
#
#   cargo build --release -p tidings-server -p tidings-bench
#   bench/scale.sh                                   # 3 nodes x 2,000 connections
#   SCALE_NODES=3 SCALE_CONNS=15000 bench/scale.sh   # larger
#
# Settings (environment): SCALE_NODES (3), SCALE_CONNS per node (2000; a node accepts at most
# its open-file limit minus a reserve: 18,976 under a 20,000 limit), SCALE_PER_TOPIC
# subscribers per topic (100), SCALE_RATE events/s in total (500), SCALE_LAYOUTS
# ("spread concentrated"), SCALE_WARMUP (3) and SCALE_DURATION (10) seconds, SCALE_SAMPLE_EVERY
# (10: 1 in K subscribers reads live and times events, the others drain afterwards; every
# delivery is still checked).
#
# One tool process per node (`tidings-bench latency --nodes ... --first-topic ...`), each with
# its own topics, so each knows every subscriber of what it publishes and checks that every
# delivery arrived. Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="${TIDINGS_BIN:-$TARGET_DIR/release/tidings}"
BENCH="${TIDINGS_BENCH:-$TARGET_DIR/release/tidings-bench}"
NODES=${SCALE_NODES:-3}
CONNS=${SCALE_CONNS:-2000}
PER_TOPIC=${SCALE_PER_TOPIC:-100}
RATE=${SCALE_RATE:-500}
LAYOUTS=${SCALE_LAYOUTS:-spread concentrated}
WARMUP=${SCALE_WARMUP:-3}
DURATION=${SCALE_DURATION:-10}
SAMPLE_EVERY=${SCALE_SAMPLE_EVERY:-10}
TOPICS=$(( (CONNS + PER_TOPIC - 1) / PER_TOPIC ))
ulimit -n "$(ulimit -Hn)"
TCK=$(getconf CLK_TCK)
PAGE_KIB=$(( $(getconf PAGESIZE) / 1024 ))

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/scale.XXXXXX")
SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$LOGS"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Publish scripts Redis ran (each published event is one EVALSHA).
scripts_run() {
  redis-cli -p "$rport" info commandstats | tr -d '\r' |
    awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ {n += $3} END {print n + 0}'
}
now_ms() { date +%s%3N; }
# A metric's value from a tool's --json report (pretty-printed: "name" a few lines above "value").
metric() {
  awk -v want="\"name\": \"$2\"" 'index($0, want) {hit = 1} hit && /"value":/ {
    gsub(/[ ,]/, ""); sub(/"value":/, ""); print; exit }' "$1"
}
sum() { local t=0 v; for v in "$@"; do t=$(( t + v )); done; echo "$t"; }

start_cluster() {
  rport=$(( 20000 + RANDOM % 30000 ))
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >"$LOGS/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 1 50); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  node_pids=(); node_addrs=()
  local n log addr pid
  for n in $(seq 1 "$NODES"); do
    log="$LOGS/node$n.log"
    REDIS_URL="redis://127.0.0.1:$rport" BIND=127.0.0.1:0 JWT_SECRET="$SECRET" \
      MAX_CONNECTIONS_PER_IP=0 HANDSHAKE_RATE_PER_IP=0 \
      PUBLISH_RATE=4000000000 PUBLISH_BURST=4000000000 RUST_LOG=warn \
      "$BIN" >"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    addr=
    for _ in $(seq 1 100); do
      addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|.*http://||') || true
      [ -n "$addr" ] && break
      sleep 0.1
    done
    [ -n "$addr" ] || { echo "node $n did not start" >&2; cat "$log" >&2; exit 1; }
    node_pids+=("$pid"); node_addrs+=("$addr")
  done
}

run_layout() {
  local layout=$1 i
  start_cluster
  sleep 2
  local rss0=() p
  for p in "${node_pids[@]}"; do rss0+=("$(rss_kib "$p")"); done
  local redis_rss0; redis_rss0=$(rss_kib "$redis_pid")
  local all; all=$(IFS=,; echo "${node_addrs[*]}")
  rm -f "$LOGS"/ready.* "$LOGS/go"
  local tools=()
  for i in $(seq 0 $(( NODES - 1 ))); do
    local nodes=$all
    [ "$layout" = concentrated ] && nodes=${node_addrs[$i]}
    # Publisher k of tool i posts to node (i + k) % N: every node takes publishes.
    local rotated=() k
    for k in $(seq 0 $(( NODES - 1 ))); do rotated+=("${node_addrs[$(( (i + k) % NODES ))]}"); done
    JWT_SECRET="$SECRET" "$BENCH" latency --server-pid "${node_pids[$i]}" --addr "${node_addrs[$i]}" \
      --name "node$(( i + 1 ))" --subscribers "$CONNS" --topics "$TOPICS" \
      --first-topic $(( i * TOPICS )) --rate "$(awk -v r="$RATE" -v n="$NODES" 'BEGIN {print r / n}')" \
      --publishers "$NODES" --sample-every "$SAMPLE_EVERY" --warmup "$WARMUP" --duration "$DURATION" \
      --nodes "$nodes" --publish-nodes "$(IFS=,; echo "${rotated[*]}")" \
      --ready-file "$LOGS/ready.$i" --go-file "$LOGS/go" --json "$LOGS/tool.$i.json" \
      >"$LOGS/tool.$i.out" 2>"$LOGS/tool.$i.err" &
    tools+=($!); pids+=($!)
  done
  local t_connect; t_connect=$(now_ms)
  while [ "$(ls "$LOGS"/ready.* 2>/dev/null | wc -l)" -lt "$NODES" ]; do
    for p in "${tools[@]}"; do
      kill -0 "$p" 2>/dev/null || { echo "a tool process exited early:" >&2; cat "$LOGS"/tool.*.err >&2; exit 1; }
    done
    sleep 0.2
  done
  local connect_s; connect_s=$(awk -v a="$t_connect" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}')
  sleep 3
  local rss1=()
  for p in "${node_pids[@]}"; do rss1+=("$(rss_kib "$p")"); done
  local redis_rss1; redis_rss1=$(rss_kib "$redis_pid")
  touch "$LOGS/go"
  sleep "$WARMUP"
  local r0 n0=() e0 t0
  r0=$(cpu_ticks "$redis_pid"); for p in "${node_pids[@]}"; do n0+=("$(cpu_ticks "$p")"); done
  e0=$(scripts_run); t0=$(now_ms)
  local others0; others0=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
  sleep "$DURATION"
  local r1 n1=() e1 t1
  r1=$(cpu_ticks "$redis_pid"); for p in "${node_pids[@]}"; do n1+=("$(cpu_ticks "$p")"); done
  e1=$(scripts_run); t1=$(now_ms)
  # Redis' own timing of the publish script (its body, not the pub/sub socket writes after it).
  local script_us; script_us=$(redis-cli -p "$rport" info commandstats | tr -d '\r' |
    awk -F'[=,:]' '/^cmdstat_evalsha:/ {for (k = 2; k < NF; k++) if ($k == "usec_per_call") print $(k + 1)}')
  local others1; others1=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
  local ok=1
  for p in "${tools[@]}"; do wait "$p" || ok=0; done
  local p99s=() p50s=() errs=0 j
  for i in $(seq 0 $(( NODES - 1 ))); do
    j="$LOGS/tool.$i.json"
    if [ -f "$j" ]; then
      p99s+=("$(metric "$j" "latency p99")")
      p50s+=("$(metric "$j" "latency p50")")
      errs=$(( errs + $(awk -F: '/"errors":/ {gsub(/[ ,]/, "", $2); print $2; exit}' "$j") ))
    else
      ok=0
    fi
  done
  [ "$ok" = 1 ] || { echo "tool errors ($layout):" >&2; cat "$LOGS"/tool.*.out "$LOGS"/tool.*.err >&2; }
  local ncpu0 ncpu1 rsum0 rsum1
  ncpu0=$(sum "${n0[@]}"); ncpu1=$(sum "${n1[@]}"); rsum0=$(sum "${rss0[@]}"); rsum1=$(sum "${rss1[@]}")
  awk -v layout="$layout" -v nodes="$NODES" -v conns="$CONNS" -v topics="$TOPICS" \
    -v connect_s="$connect_s" -v rss0="$rsum0" -v rss1="$rsum1" -v rrss0="$redis_rss0" -v rrss1="$redis_rss1" \
    -v rt=$(( r1 - r0 )) -v nt=$(( ncpu1 - ncpu0 )) -v ev=$(( e1 - e0 )) -v w=$(( t1 - t0 )) \
    -v all=$(( others1 - others0 )) -v tck="$TCK" -v p99="${p99s[*]}" -v p50="${p50s[*]}" \
    -v script_us="${script_us:-0}" -v errs="$errs" -v ok="$ok" -v per="$(( CONNS / TOPICS ))" -v per_node="${rss1[*]}" 'BEGIN {
    total = nodes * conns; secs = w / 1000
    split(p99, a, " "); worst = 0; for (k in a) if (a[k] + 0 > worst) worst = a[k] + 0
    split(p50, b, " "); worst50 = 0; for (k in b) if (b[k] + 0 > worst50) worst50 = b[k] + 0
    printf "== scale: layout=%s nodes=%d conns/node=%d (total %d) topics/node=%d subscribers/topic=%d ==\n",
      layout, nodes, conns, total, topics, per
    printf "%-52s %s\n", "all subscribed after [s]", connect_s
    printf "%-52s %.1f\n", "nodes RSS total, before clients [MiB]", rss0 / 1024
    printf "%-52s %.1f  (%s KiB)\n", "nodes RSS total, connected [MiB]", rss1 / 1024, per_node
    printf "%-52s %.2f\n", "nodes RSS per connection [KiB]", (rss1 - rss0) / total
    printf "%-52s %.1f -> %.1f\n", "redis RSS [MiB] before -> connected", rrss0 / 1024, rrss1 / 1024
    printf "%-52s %d in %.1f s (%.0f/s)\n", "events published (EVALSHA) in the window", ev, secs, ev / secs
    printf "%-52s %.1f\n", "redis CPU per published event [us]", (ev ? rt * 1e6 / tck / ev : 0)
    printf "%-52s %.1f\n", "  of which the publish script (Redis usec_per_call)", script_us
    printf "%-52s %.1f%%\n", "redis CPU load [% of 1 core]", rt * 100 / tck / secs
    printf "%-52s %.1f\n", "nodes CPU per published event, all nodes [us]", (ev ? nt * 1e6 / tck / ev : 0)
    printf "%-52s %.1f%%\n", "nodes CPU load, all nodes [% of 1 core]", nt * 100 / tck / secs
    printf "%-52s %.1f%%\n", "whole machine CPU busy [% of 1 core]", all * 100 / tck / secs
    printf "%-52s %.2f (per tool: %s)\n", "delivery p50, worst tool [ms]", worst50 / 1000, p50
    printf "%-52s %.2f (per tool: %s)\n", "delivery p99, worst tool [ms]", worst / 1000, p99
    printf "%-52s %d\n", "tool errors (lost deliveries, closes, failed publishes)", errs
    printf "result: %s\n\n", (ok && errs == 0 ? "OK" : "FAILED")
  }'
  stop_all
  [ "$ok" = 1 ] && [ "$errs" = 0 ] || failed=1
}

failed=

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for layout in $LAYOUTS; do run_layout "$layout"; done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$failed" ] || { echo "FAILED: a tool process reported errors (see above)" >&2; exit 1; }
