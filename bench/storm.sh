#!/usr/bin/env bash
# Reconnect storm (issue 17): N clients subscribed to one `tidings` node (Redis broker, so its
# history survives the node), publishing at a fixed rate; the node is restarted with SIGTERM
# (1012 drain, then a new process on the same port) while publishing goes on, and every client
# comes back with the real reconnect rules (full jitter, `since`). Reports the time until all N
# are back, events lost / duplicated (the chaos checker), the new process's CPU per
# reconnect+recover (minus what publishing alone costs it), its peak RSS and its RSS per
# connection after the storm, against the first process's when the clients connected slowly.
#
#   cargo build --release -p tidings-server -p tidings-bench
#   bench/storm.sh [other tidings-bench chaos flags]
#   STORM_CLIENTS=1000 STORM_CONNECT_RATE=500 bench/storm.sh     # smaller
#
# Uses scripts/cluster (Redis + three nodes + HAProxy on loopback; the clients use node 1
# directly, the publishers HAProxy, i.e. nodes 2 and 3 while node 1 is away) and stops it by PID
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BENCH="${TIDINGS_BENCH:-$TARGET_DIR/release/tidings-bench}"
export TIDINGS_BIN="${TIDINGS_BIN:-$TARGET_DIR/release/tidings}"
export CLUSTER_DIR
CLUSTER_DIR=$(mktemp -d "$TARGET_DIR/storm.XXXXXX")
trap './scripts/cluster stop >/dev/null 2>&1 || true; rm -rf "$CLUSTER_DIR"' EXIT
export MAX_CONNECTIONS_PER_IP=0 HANDSHAKE_RATE_PER_IP=0 RUST_LOG="${RUST_LOG:-warn}"
started=
for _ in $(seq 1 10); do
  export CLUSTER_PORT=$(( 20000 + RANDOM % 30000 ))
  if ./scripts/cluster up >/dev/null 2>"$CLUSTER_DIR/up.err"; then started=1; break; fi
  ./scripts/cluster stop >/dev/null 2>&1 || true
done
[ -n "$started" ] || { cat "$CLUSTER_DIR/up.err" >&2; exit 1; }
JWT_SECRET=$(cat "$CLUSTER_DIR/secret") "$BENCH" chaos \
  --addr "127.0.0.1:$((CLUSTER_PORT + 1))" --pid-file "$CLUSTER_DIR/node1.pid" \
  --publish-addr "127.0.0.1:$CLUSTER_PORT" \
  --clients "${STORM_CLIENTS:-18500}" --topics 100 --topics-per-client 1 --rate "${STORM_RATE:-20}" --publishers 4 \
  --connect-rate "${STORM_CONNECT_RATE:-1000}" --settle 5 --back-within 30 \
  --fault "sigterm-restart=./scripts/cluster restart-node 1" \
  "$@"
