#!/usr/bin/env bash
# Instructions per call of one pollgate binary, repeatable (callgrind counts instructions,
# not seconds, so a busy machine does not move it).
#
# Usage: benches/callgrind_calls.sh BINARY [N=1500]
#   Run the shared bench's run_peers.sh once first: it writes the signed bodies to
#   $BENCH_OUT (default /tmp/pollgate-bench). Starts BINARY under valgrind --tool=callgrind
#   with the bench config on 127.0.0.1:18180 (admin 18181), sends the first N/3 bodies, then
#   again from a fresh start the first N, each over one keep-alive connection, one call at a
#   time, and prints the difference over the extra calls: start-up and shutdown cancel out.
#   Valgrind hides SHA-NI, so SHA-256 runs its software fallback here (about 62 000
#   instructions of a call); the output files stay in $BENCH_OUT for callgrind_annotate.
set -euo pipefail
BIN=${1:?usage: $0 BINARY [N]}
N=${2:-1500}
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${POLLGATE_BENCH_DIR:-$(dirname "$HERE")/shared/bench}"
export BENCH_OUT=${BENCH_OUT:-/tmp/pollgate-bench}
[ -f "$BENCH_OUT/bodies.txt" ] || { echo "no $BENCH_OUT/bodies.txt: run $BENCH/run_peers.sh once" >&2; exit 2; }
export MPLUS_SECRET_B64=c2VjcmV0LWtleS1mb3ItYmVuY2g= POLLGATE_LISTEN=127.0.0.1:18180 POLLGATE_ADMIN=127.0.0.1:18181
cd "$BENCH_OUT"
run() {
  local calls=$1
  local out="$BENCH_OUT/callgrind.$calls.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" serve --config "$BENCH/pollgate/pollgate.yaml" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:18181/healthz && break; sleep 0.2; done
  python3 - "$calls" <<'PY'
import http.client, sys
n = int(sys.argv[1])
lines = open('bodies.txt').read().splitlines()
c = http.client.HTTPConnection('127.0.0.1', 18180)
for i in range(n):
    sig, body = lines[i % len(lines)].split('\t', 1)
    c.request('POST', '/webhooks/addSessionLine', body=body, headers={
        'Content-Type': 'application/json', 'X-Mplus-Subscription-Id': 'bench',
        'X-Mplus-Signature': sig})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out"
}
small=$(run $((N / 3)))
large=$(run "$N")
echo "$BIN: $(( (large - small) / (N - N / 3) )) instructions per call ($((N - N / 3)) calls: $small .. $large)"
