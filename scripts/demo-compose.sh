#!/usr/bin/env bash
# The docker-compose testbed as a demo (scripts/demo.sh compose [sidecar] runs this):
# starts envoy/docker-compose.yaml (a front proxy) or envoy/docker-compose.sidecar.yaml
# (Envoy as an application's sidecar) on your Docker engine with the official images,
# sends requests with x-user-ids, shows what the primary and the mirror received and the
# plugin's Prometheus series (the front proxy's mirror answers are compared with the
# primary's: its verdicts, and the mismatches Envoy logged), and takes the testbed down
# again.
#
#   TRAFFIC_MIRROR_ENVOY_IMAGE, TRAFFIC_MIRROR_PYTHON_IMAGE   other images
#   TRAFFIC_MIRROR_PORT (10000), TRAFFIC_MIRROR_ADMIN_PORT (9901)   loopback ports
#   REQUESTS (40)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/versions.sh
. scripts/versions.sh

SHAPE="${1:-front}"
case "$SHAPE" in
  front) FILE=envoy/docker-compose.yaml PRIMARY=primary MIRROR=mirror PREFIX=/api/items ;;
  sidecar) FILE=envoy/docker-compose.sidecar.yaml PRIMARY=app MIRROR=staging PREFIX=/orders ;;
  *) echo "usage: scripts/demo.sh compose [sidecar]" >&2; exit 2 ;;
esac
ENVOY_IMAGE="${TRAFFIC_MIRROR_ENVOY_IMAGE:-envoyproxy/envoy:v$ENVOY_VERSION}"
PYTHON_IMAGE="${TRAFFIC_MIRROR_PYTHON_IMAGE:-python:3.12-alpine}"
export TRAFFIC_MIRROR_ENVOY_IMAGE="$ENVOY_IMAGE" TRAFFIC_MIRROR_PYTHON_IMAGE="$PYTHON_IMAGE"
PORT="${TRAFFIC_MIRROR_PORT:-10000}" ADMIN="${TRAFFIC_MIRROR_ADMIN_PORT:-9901}"
REQUESTS="${REQUESTS:-40}"

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is missing: install Docker Engine with the compose plugin"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info): start it, or check your permissions on its socket"
command -v curl >/dev/null || die "curl is missing"
bash scripts/setup.sh compose
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(.tools/docker-compose); fi
compose+=(-f "$FILE")

for port in "$PORT" "$ADMIN"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is in use; stop what listens there, or set TRAFFIC_MIRROR_PORT / TRAFFIC_MIRROR_ADMIN_PORT"
  fi
done

# The images: there already, or pulled now. Where no registry answers, say what to do.
for image in "$ENVOY_IMAGE" "$PYTHON_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 && continue
  say "==> pulling $image"
  if ! docker pull -q "$image" >/dev/null 2>&1; then
    cat >&2 <<EOF
demo: cannot pull $image: no container registry answers this Docker engine.
  Either load the images from a machine that can pull them:
      docker save $ENVOY_IMAGE $PYTHON_IMAGE | ssh this-machine docker load
  or use images you have (an Envoy $ENVOY_VERSION with \`envoy\` on PATH, and
  one with \`python\`):
      TRAFFIC_MIRROR_ENVOY_IMAGE=... TRAFFIC_MIRROR_PYTHON_IMAGE=... scripts/demo.sh compose
  or build the test suite's local stand-ins (as root, from Debian's packages and the
  pinned Envoy) and run with them:
      sudo bash tests/deploy/compose_images.sh
      TRAFFIC_MIRROR_ENVOY_IMAGE=traffic-mirror-test/envoy:$ENVOY_VERSION \\
        TRAFFIC_MIRROR_PYTHON_IMAGE=traffic-mirror-test/python:3.11 scripts/demo.sh compose
EOF
    exit 1
  fi
done

say "==> building the module the testbed mounts"
cargo build --quiet --target wasm32-wasip1 --release

cleanup() {
  say "==> docker compose down"
  "${compose[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
}
trap cleanup EXIT
say "==> docker compose -f $FILE up -d --wait ($ENVOY_IMAGE, $PYTHON_IMAGE)"
if ! "${compose[@]}" up -d --wait --wait-timeout 120; then
  "${compose[@]}" logs --no-color >&2 || true
  die "the testbed did not come up (its logs are above)"
fi

say "==> sending $REQUESTS requests to 127.0.0.1:$PORT (x-user-id: user-1..user-$REQUESTS)"
for i in $(seq 1 "$REQUESTS"); do
  curl -fsS -o /dev/null -H "x-user-id: user-$i" -H "cookie: session=s-$i" "http://127.0.0.1:$PORT$PREFIX/$i"
done
# Copies are fire and forget: wait until every one has ended.
for _ in $(seq 1 100); do
  grep -q '^traffic_mirror_in_flight{[^}]*} 0$' <<<"$(curl -fsS "http://127.0.0.1:$ADMIN/stats/prometheus")" && break
  sleep 0.05
done

received() { "${compose[@]}" logs --no-color --no-log-prefix "$1" | sed 's/\x1b\[2K//g' | grep '"path"' || true; }
say
say "==> $PRIMARY received $(received "$PRIMARY" | wc -l) requests; $MIRROR received $(received "$MIRROR" | wc -l) copies, of the users:"
received "$MIRROR" | sed -n 's/.*"x-user-id": "\([^"]*\)".*/\1/p' | sort -V | tr '\n' ' ' | fold -s -w 84 | sed 's/^/    /'
say
say "    (the command names the same users, without Docker or Envoy:"
say "     seq 1 $REQUESTS | sed 's/^/user-/' | cargo run -q --release -p traffic-mirror-cli -- sample $(grep -o 'compose/[a-z-]*envoy.yaml' "$FILE" | head -n 1 | sed 's|^|envoy/|'))"
say
say "==> a copy as $MIRROR saw it"
received "$MIRROR" | head -n 1 | sed 's/^/    /'
say
say "==> the plugin's series (admin /stats/prometheus)"
curl -fsS "http://127.0.0.1:$ADMIN/stats/prometheus" | grep '^traffic_mirror_' | grep -v '_bucket{' | sed 's/^/    /'
if [ "$SHAPE" = front ]; then
  say
  say "==> the mismatches Envoy logged (compare; at most 6 a minute, never a value)"
  "${compose[@]}" logs --no-color --no-log-prefix envoy | sed 's/\x1b\[2K//g' \
    | grep -o 'traffic-mirror: target [^:]*: compare .*' | sed 's/^/    /' || say "    (none)"
  say "    (the mirror is a candidate with a seeded bug, every 7th item's price one cent too high:"
  say "     traffic_mirror_compare_body and traffic_mirror_compare_path{json_path=\"/price\"} count the copies"
  say "     of those items, the rest are traffic_mirror_compare_match; updated_at, different on every"
  say "     answer, is ignored)"
fi
