#!/usr/bin/env bash
# docker/smoke.sh: build docker/Dockerfile with podman and use the image as an operator would
# (docker/README.md, "Smoke test with podman"). Run it from anywhere, as root:
#
#   docker/smoke.sh                   # the image, then docker/compose.yaml (podman-compose)
#   SMOKE_COMPOSE=0 docker/smoke.sh   # the image only
#   SMOKE_BUILD=source docker/smoke.sh  # the build stage too, compiling in the container
#
# Needs no container registry: the base images the Dockerfile starts from are made from
# Debian's packages (mmdebstrap) and imported under the names its FROM lines use; they stay
# in podman's storage, so only the first run makes them. By default the build stage
# (rust:...) is replaced by the release binary built here with `cargo build --release
# --locked`, handed to `podman build` as the build context named `build` (what
# `COPY --from=build` reads); everything after it is the Dockerfile as a Docker user builds
# it. With SMOKE_BUILD=source the build stage runs too, on a rust:... image made from the
# Debian base and this machine's Rust toolchain.
#
# Every step is bounded in time, everything listens on 127.0.0.1 only, and the containers
# it starts are removed when it ends. The secret is MPLUS_SECRET when set, else a random
# one; it is passed by name (`-e MPLUS_SECRET`), never on a command line, never printed.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SMOKE_IMAGE:-localhost/pollgate:smoke}
max_mb=${SMOKE_MAX_MB:-40}
mirror=${SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${SMOKE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
started=$SECONDS

say() { echo "smoke: $*"; }
fail() {
  echo "smoke: FAILED: $*" >&2
  exit 1
}

# Rootful podman (the storage, the networks, the ports) and apt-get: root only.
[ "$(id -u)" = 0 ] || fail "run as root: it uses rootful podman and may install packages"

# ---- tools ----------------------------------------------------------------------------
# Debian's podman 4.3 with runc; mmdebstrap for the base images; openssl for a local HTTPS
# server; podman-compose and curl for the compose file.
need=()
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap slirp4netns:slirp4netns \
  newuidmap:uidmap fuse-overlayfs:fuse-overlayfs openssl:openssl curl:curl; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ "${SMOKE_COMPOSE:-1}" = 1 ] && ! command -v podman-compose >/dev/null; then
  need+=(podman-compose)
fi
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- podman on this machine ---------------------------------------------------------------
# Three adjustments (docker/README.md): the vfs storage driver (no overlay mounts in this
# sandbox), no default ulimits (podman's exceed the sandbox's hard limits: `setrlimit
# RLIMIT_NOFILE: Operation not permitted`) and runc (crun 1.8 refuses hybrid cgroups).
# Podman 4.3 reads CONTAINERS_CONF only; newer ones also CONTAINERS_CONF_OVERRIDE, which
# keeps the system's containers.conf under ours. The cgroupfs manager and file events:
# there is no systemd here.
work=$(mktemp -d)
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
# podman's usual storage (SMOKE_GRAPHROOT and SMOKE_RUNROOT move it), where the base images
# stay between runs.
cat >"$work/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "${SMOKE_RUNROOT:-/run/containers/storage}"
graphroot = "${SMOKE_GRAPHROOT:-/var/lib/containers/storage}"
EOF
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_CONF_OVERRIDE="$work/containers.conf"
export CONTAINERS_STORAGE_CONF="$work/storage.conf"
pm() { timeout "${limit:-120}" podman --storage-driver vfs "$@"; }

containers=()
cleanup() {
  local status=$?
  [ -z "${tls_server:-}" ] || kill "$tls_server" 2>/dev/null || true
  for c in "${containers[@]}"; do podman --storage-driver vfs rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  if [ -n "${compose_up:-}" ]; then
    (cd docker && timeout 60 podman-compose -f compose.yaml down -t 1 >/dev/null 2>&1) || true
  fi
  rm -rf "$work"
  [ "$status" -eq 0 ] || echo "smoke: FAILED after $((SECONDS - started))s" >&2
}
trap cleanup EXIT

# ---- disk ----------------------------------------------------------------------------------
# vfs keeps a full copy of every layer, so a build needs a few GB free where the storage is.
# Short of SMOKE_MIN_FREE_MB (4096), the layers no image uses (dangling images, stopped
# containers, whatever their age) go first; still short, it fails naming the numbers.
free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
storage=${SMOKE_GRAPHROOT:-/var/lib/containers/storage}
mkdir -p "$storage"
min_free=${SMOKE_MIN_FREE_MB:-4096}
if [ "$(free_mb "$storage")" -lt "$min_free" ]; then
  say "$(free_mb "$storage") MB free under $storage (want $min_free): pruning unused layers"
  pm container prune -f >/dev/null || true
  pm image prune -f >/dev/null || true
fi
[ "$(free_mb "$storage")" -ge "$min_free" ] \
  || fail "only $(free_mb "$storage") MB free under $storage; the image builds need ${min_free} MB (df -h $storage)"

# ---- base images from Debian's packages ---------------------------------------------------
# What the registry would have served, made locally and labelled, so `podman image inspect`
# tells them from the real ones; kept in podman's storage, so only the first run makes them.
# A root file system from Debian's packages (minbase, with the updates and security
# suites), without documentation and locales as Debian's slim images are: ROOTFS OUT SUITE
# [mmdebstrap options...].
rootfs() {
  local out=$1 suite=$2
  shift 2
  timeout 1200 mmdebstrap --quiet --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$@" "$suite" "$out" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
}

# debian:bookworm-slim.
debian_base() { # NAME SUITE
  local name=$1 suite=$2
  pm image exists "$name" && return
  say "making $name from Debian's packages (mmdebstrap $suite, minbase; once)"
  rootfs "$work/rootfs.tar" "$suite"
  limit=300 pm import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL pollgate.smoke.made-by="docker/smoke.sh: mmdebstrap '"$suite"' from '"$mirror"'"' \
    --change 'CMD ["bash"]' "$work/rootfs.tar" "$name" >/dev/null
  rm -f "$work/rootfs.tar"
}

# rust:VERSION-slim-SUITE (SMOKE_BUILD=source only): the Debian base with what the official
# image adds (gcc, libc6-dev, ca-certificates) and this machine's Rust toolchain, which
# must be the tag's version, under /usr/local/rustup with cargo, rustc and rustdoc in
# /usr/local/cargo/bin (the official image's CARGO_HOME, which the Dockerfile's cache mounts
# use). No rustup in it: the build needs none.
rust_base() { # NAME VERSION SUITE
  local name=$1 version=$2 suite=$3 have
  pm image exists "$name" && return
  have=$(rustc --version)
  [[ "$have" == "rustc $version."* ]] || fail "$name: this machine's toolchain is $have"
  SMOKE_SYSROOT=$(rustc --print sysroot)
  # The roots this machine trusts, so cargo in the build stage reaches crates.io as cargo
  # here does (on our machines through a TLS-inspecting egress proxy with its own CA). Only
  # the build stage sees them; the runtime image's bundle is Debian's ca-certificates.
  SMOKE_CA_BUNDLE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
  export SMOKE_SYSROOT SMOKE_CA_BUNDLE
  say "making $name from Debian's packages and $have ($SMOKE_SYSROOT; once)"
  # shellcheck disable=SC2016 # the hook's own shell expands $1 (the root) and SMOKE_SYSROOT
  rootfs "$work/rootfs.tar" "$suite" --include=ca-certificates,gcc,libc6-dev \
    --customize-hook='set -e; t="$1/usr/local/rustup/toolchains/rust"; mkdir -p "$t" "$1/usr/local/cargo/bin"
      for d in bin etc lib libexec; do [ ! -d "$SMOKE_SYSROOT/$d" ] || cp -a "$SMOKE_SYSROOT/$d" "$t/"; done
      for b in cargo rustc rustdoc; do ln -s "/usr/local/rustup/toolchains/rust/bin/$b" "$1/usr/local/cargo/bin/$b"; done
      cp "$SMOKE_CA_BUNDLE" "$1/etc/ssl/certs/ca-certificates.crt"'
  limit=600 pm import --quiet \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL pollgate.smoke.made-by="docker/smoke.sh: mmdebstrap '"$suite"' from '"$mirror"' with '"$have"'"' \
    --change 'CMD ["bash"]' "$work/rootfs.tar" "$name" >/dev/null
  rm -f "$work/rootfs.tar"
}

# SMOKE_BUILD=binary (the default): the build stage is replaced (below); =source: the whole
# Dockerfile is built, the build stage compiling in the container (slow on 2 cores).
build=${SMOKE_BUILD:-binary}
case "$build" in binary | source) ;; *) fail "SMOKE_BUILD=$build: binary or source" ;; esac
build_stage_base=$(awk 'toupper($1) == "FROM" && tolower($3) == "as" && $4 == "build" { print $2 }' docker/Dockerfile)
while read -r base; do
  case "$base" in
    scratch) ;;
    "$build_stage_base") [ "$build" = binary ] || [[ "$base" != rust:*-slim-bookworm ]] \
      || { v=${base#rust:}; rust_base "docker.io/library/$base" "${v%-slim-bookworm}" bookworm; } ;;
    debian:bookworm-slim) debian_base "docker.io/library/$base" bookworm ;;
    *) fail "docker/Dockerfile starts from $base, which this script cannot make" ;;
  esac
done < <(awk 'toupper($1) == "FROM" { print $2 }' docker/Dockerfile | sort -u)

# ---- the build stage: the release binary, built here -------------------------------------
# The same command as the build stage's, on this machine's toolchain (Debian bookworm, the
# glibc the runtime stage copies). Skipped when SMOKE_BINARY names a binary already built.
context=()
if [ "$build" = binary ]; then
  binary=${SMOKE_BINARY:-}
  if [ -z "$binary" ]; then
    say "cargo build --release --locked"
    timeout 3600 cargo build --release --locked --quiet
    binary="${CARGO_TARGET_DIR:-target}/release/pollgate"
  fi
  [ -x "$binary" ] || fail "$binary: no pollgate binary"
  mkdir -p "$work/build/out"
  install -m 0755 "$binary" "$work/build/out/pollgate"
  # podman skips the build stage: `COPY --from=build /out/pollgate` reads this folder.
  context=(--build-context "build=$work/build")
fi

# ---- podman build -------------------------------------------------------------------------
# --format docker: the OCI format has no HEALTHCHECK. --pull=never: nothing can be pulled.
say "podman build -f docker/Dockerfile ${context[*]:+--build-context build=<the binary> }-t $image ."
t0=$SECONDS
limit=3600 pm build --quiet --pull=never --format docker --layers \
  "${context[@]}" -f docker/Dockerfile -t "$image" . >"$work/build.log" 2>&1 \
  || { tail -n 40 "$work/build.log"; fail "podman build"; }
bytes=$(pm image inspect --format '{{.Size}}' "$image")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1000000 }')
say "built $image in $((SECONDS - t0))s: $mb MB ($bytes bytes; goal under $max_mb MB)"
awk -v b="$bytes" -v m="$max_mb" 'BEGIN { exit !(b < m * 1000000) }' \
  || fail "the image is $mb MB, over $max_mb MB"
health=$(pm image inspect --format '{{json .Config.Healthcheck.Test}}' "$image")
[ "$health" = '["CMD","pollgate","healthcheck"]' ] || fail "image healthcheck $health"
if [ "$build" = source ]; then
  # The till on the host (`pollgate simulate`) is the image's own binary.
  pm create --name "pollgate-smoke-cp-$$" "$image" >/dev/null 2>&1
  containers+=("pollgate-smoke-cp-$$")
  pm cp "pollgate-smoke-cp-$$:/usr/local/bin/pollgate" "$work/pollgate"
  binary="$work/pollgate"
fi

# ---- one-shot commands: `docker run IMAGE check`, `docker run IMAGE test` -----------------
secret=${MPLUS_SECRET:-$(head -c 32 /dev/urandom | base64)}
export MPLUS_SECRET=$secret
# --no-healthcheck: podman would log that it cannot set up the timers (no systemd here).
out=$(pm run --rm --pull=never --no-healthcheck -e MPLUS_SECRET "$image" check 2>&1) || fail "IMAGE check: $out"
say "IMAGE check: $out"
[[ "$out" == *": ok ("* ]] || fail "IMAGE check said: $out"
out=$(pm run --rm --pull=never --no-healthcheck --network none "$image" test 2>&1) || fail "IMAGE test: $out"
say "IMAGE test: $(tail -n 1 <<<"$out")"
[[ "$(tail -n 1 <<<"$out")" == *" passed, 0 failed" ]] || fail "IMAGE test said: $out"

# ---- https:// upstreams: rustls verifies against the image's CA bundle ---------------------
# The image's one HTTPS client (`pollgate healthcheck`, the same reqwest and rustls set-up as
# forwards) asks a local HTTPS server (openssl s_server on the host's 127.0.0.1, a
# certificate for `localhost` from a CA made here), from a container on the host's network:
# refused with the image's Debian bundle (the CA is unknown), accepted with the CA mounted
# over /etc/ssl/certs/ca-certificates.crt. So the scratch image reads that file, and
# `localhost` resolves through its /etc/nsswitch.conf.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=smoke-ca -keyout "$work/ca.key" \
  -out "$work/ca.pem" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$work/tls.key" \
  -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$work/san.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/san.ext" -out "$work/tls.pem" 2>/dev/null
tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
openssl s_server -quiet -www -accept "127.0.0.1:$tls_port" -cert "$work/tls.pem" -key "$work/tls.key" \
  </dev/null >/dev/null 2>&1 &
tls_server=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null && break; sleep 0.1; done
https=(pm run --rm --pull=never --no-healthcheck --network host "$image")
if out=$("${https[@]}" healthcheck --url "https://localhost:$tls_port/" 2>&1); then
  fail "an unknown CA was accepted: $out"
fi
say "https://localhost:$tls_port with a CA the image does not know: $out"
out=$(pm run --rm --pull=never --no-healthcheck --network host \
  -v "$work/ca.pem:/etc/ssl/certs/ca-certificates.crt:ro" "$image" \
  healthcheck --url "https://localhost:$tls_port/" 2>&1) \
  || fail "https with the CA in the image's bundle: $out"
say "https://localhost:$tls_port with that CA as /etc/ssl/certs/ca-certificates.crt: verified"
kill "$tls_server" 2>/dev/null || true
wait "$tls_server" 2>/dev/null || true
tls_server=

# ---- the gateway ----------------------------------------------------------------------------
# As docker/README.md runs it: the image's CMD, the webhook port published on the host's
# loopback (a free port chosen by podman), the secret from the environment.
name="pollgate-smoke-$$"
containers+=("$name")
# podman's complaint that it cannot set up the health check's timers (no systemd: it runs
# when asked, with `podman healthcheck run`) goes to run.log.
pm run -d --pull=never --name "$name" -p 127.0.0.1::8080 -e MPLUS_SECRET "$image" >/dev/null 2>"$work/run.log" \
  || { cat "$work/run.log"; fail "podman run -d"; }
port=$(pm port "$name" 8080/tcp)
port=${port##*:}
say "started $name: webhooks on 127.0.0.1:$port"

# The image's HEALTHCHECK command, as podman runs it inside the container.
healthy=
for _ in $(seq 60); do
  if pm healthcheck run "$name" >/dev/null 2>&1; then
    healthy=1
    break
  fi
  sleep 0.5
done
[ -n "$healthy" ] || { pm logs "$name" 2>&1 | tail -n 20; fail "the HEALTHCHECK never passed"; }
say "HEALTHCHECK (pollgate healthcheck, inside the container): $(pm inspect --format '{{.State.Health.Status}}' "$name")"

# The process runs as the image's unprivileged user: its uid as the host's kernel sees it.
pid=$(pm inspect --format '{{.State.Pid}}' "$name")
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
[ "$uid" = 10001 ] || fail "pollgate runs as uid $uid, not 10001"
say "process $pid runs as uid $uid (pollgate), not root"

# A till's calls on the published port: signed with the secret, answers verified by
# `pollgate simulate` (a bad answer signature fails it).
url="http://127.0.0.1:$port/webhooks"
for event in scanCode startPayment; do
  out=$(timeout 30 "$binary" simulate --url "$url" --event "$event" --max-polls 5 2>&1) \
    || fail "simulate --event $event: $out"
  say "simulate --event $event: $(tr '\n' ' ' <<<"$out" | cut -c1-200)"
done
# A call signed with another secret is refused, so the container really uses ours.
if out=$(MPLUS_SECRET=$(head -c 32 /dev/urandom | base64) timeout 30 "$binary" simulate --url "$url" --event scanCode 2>&1); then
  fail "a call signed with another secret was answered: $out"
fi
say "a call signed with another secret is refused: $(tail -n 1 <<<"$out" | cut -c1-160)"

# SIGTERM: `podman stop` with a timeout over server.shutdown_grace (10s); pollgate must end
# by itself (exit 0), not be killed when the timeout runs out.
t0=$(date +%s%N)
pm stop -t 15 "$name" >/dev/null 2>>"$work/run.log"
ms=$((($(date +%s%N) - t0) / 1000000))
code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { pm logs "$name" 2>&1 | tail -n 20; fail "exit code $code after SIGTERM"; }
[ "$ms" -lt 10000 ] || fail "SIGTERM took ${ms}ms"
say "podman stop (SIGTERM): exit $code after ${ms}ms"
logs=$(pm logs "$name" 2>&1)
if grep -qF "$secret" <<<"$logs"; then fail "the secret is in the container's log"; fi
say "the log ($(wc -l <<<"$logs") lines) does not hold the secret"

# ---- docker/compose.yaml with podman-compose ------------------------------------------------
# Debian's podman-compose (1.0.3) runs the compose file as it is, with two stand-ins: the
# image just built, tagged pollgate:local (`up --no-build`: its build stage is the one
# substituted above), and redis:7.4-alpine made from the Debian base with Debian's
# redis-server (7.0), run as the official image runs it: without protected mode.
# What 1.0.3 does not do (docker/README.md): `depends_on` conditions (it starts the
# services in order without waiting for health), `healthcheck: disable`, the top-level
# `name` (the project is called after the folder, `docker`).
redis_image() {
  local redis=$1
  say "making $redis from the Debian base with Debian's redis-server (once)"
  mkdir -p "$work/redis"
  cat >"$work/redis/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
# Like the official image's: redis-server in a container answers on the container network.
if [ "${1:-}" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
SCRIPT
  cat >"$work/redis/Containerfile" <<'CONTAINERFILE'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/*
COPY --chmod=0755 docker-entrypoint.sh /usr/local/bin/
LABEL pollgate.smoke.made-by="docker/smoke.sh: Debian's redis-server on the Debian base"
WORKDIR /var/lib/redis
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
CONTAINERFILE
  limit=900 pm build --quiet --pull=never --format docker -t "$redis" "$work/redis" >"$work/redis.log" 2>&1 \
    || { tail -n 20 "$work/redis.log"; fail "building $redis"; }
}

compose_check() {
  local redis=docker.io/library/redis:7.4-alpine ready='' out
  pm image exists "$redis" || redis_image "$redis"
  pm tag "$image" localhost/pollgate:local
  # The compose file publishes fixed ports on the host's loopback.
  for p in 8080 9090; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      fail "compose: 127.0.0.1:$p is taken on this machine; docker/compose.yaml publishes it"
    fi
  done
  # The compose file requires the admin listener's bearer token, as an operator sets it.
  POLLGATE_ADMIN_TOKEN="smoke-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  export POLLGATE_ADMIN_TOKEN
  compose=(timeout 120 podman-compose -f compose.yaml)
  compose_up=1
  (cd docker && "${compose[@]}" up -d --no-build >"$work/compose.log" 2>&1) \
    || { tail -n 30 "$work/compose.log"; fail "podman-compose up"; }
  for _ in $(seq 60); do
    ready=$(curl -fsS --max-time 2 http://127.0.0.1:9090/readyz 2>/dev/null) && break
    sleep 0.5
  done
  if [[ "$ready" != *'"store":"redis"'* ]]; then
    (cd docker && "${compose[@]}" logs 2>&1 | tail -n 30)
    fail "compose: /readyz said '$ready'"
  fi
  say "compose: pollgate, redis and demo-backend up; /readyz $ready"
  local locked
  locked=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:9090/conversations)
  [ "$locked" = 401 ] || fail "compose: GET /conversations without the token answered $locked, not 401"
  curl -fsS --max-time 5 -o /dev/null -H "Authorization: Bearer $POLLGATE_ADMIN_TOKEN" \
    http://127.0.0.1:9090/conversations || fail "compose: GET /conversations with the token failed"
  say "compose: the admin listener wants its token (401 without it, 200 with it)"
  # The example of docker/compose.yaml and docker/README.md, word for word: a 399.00 payment
  # forwarded to the demo back end (by name, on the compose network), state in Redis.
  # `podman exec` on the service's container, not `podman-compose exec`: 1.0.3 passes each
  # environment name without a value (MPLUS_SECRET:) to exec as the text "None", so the
  # example would sign with the secret "None".
  local container
  container=$(pm ps --filter label=com.docker.compose.service=pollgate \
    --filter "label=com.docker.compose.project.working_dir=$PWD/docker" --format '{{.Names}}')
  [ -n "$container" ] || fail "compose: no container for the pollgate service"
  out=$(pm exec "$container" pollgate simulate --event startPayment --body tests/bodies/large-payment.json --fresh 2>&1) \
    || fail "compose: simulate: $out"
  [[ "$out" == *"Approved by Sam"* ]] || fail "compose: simulate said: $out"
  say "compose: simulate startPayment 399.00: $(grep -c '^<- ' <<<"$out") calls, the last: $(grep '^<- ' <<<"$out" | tail -n 1)"
  (cd docker && "${compose[@]}" down -t 15 >>"$work/compose.log" 2>&1) || fail "podman-compose down"
  compose_up=
  say "compose: down"
}
if [ "${SMOKE_COMPOSE:-1}" = 1 ]; then compose_check; fi
# Untagged layers of earlier builds (vfs keeps a full copy of each) would pile up run after
# run: those older than a day go; the base images, the image and today's cache stay.
pm image prune -f --filter until=24h >/dev/null
say "passed in $((SECONDS - started))s"
