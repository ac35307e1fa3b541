#!/usr/bin/env bash
# `politely bench relay` across cluster nodes, in one run: a redis-server of its own (a unix
# socket, no persistence), one node without Redis and three with it, each on 127.0.0.1:0; then
# the same 50 pairs one node alone, on one cluster node, and on two and three nodes with each
# pair on one node and across two. Needs redis-server (Debian's package) and a release build.
#
#   bash scripts/bench-cluster.sh            # window 16: throughput and CPU per frame
#   WINDOW=1 bash scripts/bench-cluster.sh   # one frame in flight: latency
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p politely-cli
bin=$PWD/target/release/politely
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

redis-server --port 0 --save "" --appendonly no --unixsocket "$dir/redis.sock" --dir "$dir" \
  >/dev/null 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
while [ ! -S "$dir/redis.sock" ]; do sleep 0.05; done

# Starts a node (with Redis unless $2 is "alone"); sets $node_pid and $node_addr.
start_node() {
  local out=$dir/$1.out
  local cluster=(--redis "redis+unix://$dir/redis.sock" --node-id "$1")
  [ "$2" = alone ] && cluster=()
  "$bin" serve --listen 127.0.0.1:0 --rate-limit 0 --log warn "${cluster[@]}" >"$out" 2>"$dir/$1.err" &
  node_pid=$!
  pids+=("$node_pid")
  while ! grep -q "listening on" "$out" 2>/dev/null; do sleep 0.05; done
  node_addr=ws://$(sed -n 's/listening on //p' "$out" | head -n1)
}
start_node alone alone
alone=(--url "$node_addr" --server-pid "$node_pid")
nodes=()
for name in n1 n2 n3; do
  start_node "$name" redis
  nodes+=("$node_addr $node_pid")
done
# The --url and --server-pid arguments of the first $1 cluster nodes.
cluster() {
  local i
  for ((i = 0; i < $1; i++)); do
    read -r addr pid <<<"${nodes[$i]}"
    printf -- '--url\n%s\n--server-pid\n%s\n' "$addr" "$pid"
  done
}
run() {
  echo "## $1"
  shift
  "$bin" bench relay --pairs 50 --seconds 5 --threads 1 --window "${WINDOW:-16}" "$@"
}
run "one node without Redis" "${alone[@]}"
mapfile -t one < <(cluster 1)
run "one cluster node" "${one[@]}" --redis-pid "$redis_pid"
for n in 2 3; do
  mapfile -t some < <(cluster "$n")
  run "$n nodes, each pair on one node" "${some[@]}" --same-node --redis-pid "$redis_pid"
  run "$n nodes, each pair across two" "${some[@]}" --redis-pid "$redis_pid"
done
