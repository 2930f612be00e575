#!/usr/bin/env bash
# A local Redis Cluster for the tests: three primaries with one replica each, on
# 127.0.0.1 ports BASE..BASE+5 (BASE: $POLLGATE_CLUSTER_PORT, default 7000; each node's
# bus port is 10000 higher), in a folder of its own under $TMPDIR. Used by .ci/run and by
# a developer alike:
#
#   eval "$(.ci/redis-cluster.sh start)"   # exports POLLGATE_TEST_CLUSTER=127.0.0.1:7000,...
#   cargo test
#   .ci/redis-cluster.sh stop
#
# Nodes keep an append-only file (fsync every second), so a node that is killed and
# started again rejoins with its data; the cluster-wide tests also fail one primary over
# to its replica (CLUSTER FAILOVER), which the cluster then keeps.
set -euo pipefail
base=${POLLGATE_CLUSTER_PORT:-7000}
dir="${TMPDIR:-/tmp}/pollgate-redis-cluster-$base"
ports=$(seq "$base" $((base + 5)))
nodes=$(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done)

answers() { redis-cli -p "$1" ping >/dev/null 2>&1; }

case "${1:-}" in
start)
  mkdir -p "$dir"
  for p in $ports; do
    answers "$p" && continue
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --appendonly yes --appendfsync everysec --save "" \
      --dir "$dir/$p" --daemonize yes --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log"
  done
  for p in $ports; do
    for _ in $(seq 100); do answers "$p" && break; sleep 0.1; done
    answers "$p" || { echo "redis-cluster: node $p does not answer (see $dir/$p/redis.log)" >&2; exit 1; }
  done
  if ! redis-cli -p "$base" cluster info | grep -q '^cluster_state:ok'; then
    # shellcheck disable=SC2086 # one argument per node
    redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { cat "$dir/create.log" >&2; exit 1; }
  fi
  for p in $ports; do
    for _ in $(seq 100); do
      redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' && break
      sleep 0.1
    done
  done
  echo "export POLLGATE_TEST_CLUSTER=$(echo $nodes | tr ' ' ',')"
  ;;
stop)
  for p in $ports; do
    [ -f "$dir/$p/redis.pid" ] && kill "$(cat "$dir/$p/redis.pid")" 2>/dev/null || true
  done
  # Each node writes its append-only file out before it exits: wait for that.
  for p in $ports; do
    for _ in $(seq 50); do answers "$p" || break; sleep 0.1; done
  done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
