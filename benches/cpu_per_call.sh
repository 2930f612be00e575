#!/usr/bin/env bash
# CPU and context switches per call of one pollgate binary under the shared bench's load.
#
# Usage: benches/cpu_per_call.sh BINARY [PORT]
#   Run the shared bench's run_peers.sh once first: it writes the signed bodies to
#   $BENCH_OUT (default /tmp/pollgate-bench) that the wrk script sends.
# Starts BINARY with the bench config on 127.0.0.1:PORT (admin PORT+100), warms up for
# 2 s, then measures a 5 s wrk run (32 connections): requests/s, server CPU µs per call
# (user + system, from /proc/PID/stat) and voluntary + involuntary context switches per
# call (all threads, /proc/PID/task/*/status). Stops the server by its PID.
set -euo pipefail
BIN=${1:?usage: $0 BINARY [PORT]}
PORT=${2:-19000}
ADMIN=$((PORT + 100))
HERE="$(cd "$(dirname "$0")/.." && pwd)"
# The team's shared bench, beside the repository (or $POLLGATE_BENCH_DIR).
BENCH="${POLLGATE_BENCH_DIR:-$(dirname "$HERE")/shared/bench}"
export BENCH_OUT=${BENCH_OUT:-/tmp/pollgate-bench}
export MPLUS_SECRET_B64=c2VjcmV0LWtleS1mb3ItYmVuY2g= POLLGATE_LISTEN=127.0.0.1:$PORT POLLGATE_ADMIN=127.0.0.1:$ADMIN
[ -f "$BENCH_OUT/bodies.txt" ] || { echo "no $BENCH_OUT/bodies.txt: run $BENCH/run_peers.sh once" >&2; exit 2; }
cd "$BENCH_OUT"
"$BIN" serve --config "$BENCH/pollgate/pollgate.yaml" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break; sleep 0.1; done
url="http://127.0.0.1:$PORT/webhooks/addSessionLine"
wrk -t1 -c32 -d2s -s "$BENCH/post.lua" "$url" >/dev/null 2>&1
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
switches() { cat /proc/"$PID"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
c0=$(cpu); s0=$(switches)
out=$(wrk -t1 -c32 -d5s -s "$BENCH/post.lua" "$url" 2>&1)
c1=$(cpu); s1=$(switches)
req=$(echo "$out" | awk '/requests in/ {print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
tick=$(getconf CLK_TCK)
awk -v b="$BIN" -v rps="$rps" -v req="$req" -v dc="$((c1 - c0))" -v ds="$((s1 - s0))" -v tick="$tick" \
  'BEGIN { printf "%s: %s req/s, %.1f us CPU per call, %.2f context switches per call\n", b, rps, dc / tick * 1e6 / req, ds / req }'
