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
TRAFFIC_MIRROR_ENVOY_IMAGE_GIVEN="${TRAFFIC_MIRROR_ENVOY_IMAGE:-}"
TRAFFIC_MIRROR_PYTHON_IMAGE_GIVEN="${TRAFFIC_MIRROR_PYTHON_IMAGE:-}"
ENVOY_IMAGE="${TRAFFIC_MIRROR_ENVOY_IMAGE:-envoyproxy/envoy:v$ENVOY_VERSION}"
PYTHON_IMAGE="${TRAFFIC_MIRROR_PYTHON_IMAGE:-python:3.12-alpine}"
export TRAFFIC_MIRROR_ENVOY_IMAGE="$ENVOY_IMAGE" TRAFFIC_MIRROR_PYTHON_IMAGE="$PYTHON_IMAGE"
PORT="${TRAFFIC_MIRROR_PORT:-10000}" ADMIN="${TRAFFIC_MIRROR_ADMIN_PORT:-9901}"
REQUESTS="${REQUESTS:-40}"

# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

compose_demo_start "$FILE" "$PORT" "$ADMIN"

# The images: there already, or pulled now. Where no registry answers, the tests' local
# stand-ins, built here as root; or what to do.
given() { [ -n "${TRAFFIC_MIRROR_ENVOY_IMAGE_GIVEN}${TRAFFIC_MIRROR_PYTHON_IMAGE_GIVEN}" ]; }
say "==> the images: $ENVOY_IMAGE, $PYTHON_IMAGE"
if ! pullable "$ENVOY_IMAGE" || ! pullable "$PYTHON_IMAGE"; then
  if ! given && [ "$(id -u)" = 0 ]; then
    say "==> no registry answers this Docker engine: building the tests' stand-in images instead"
    say "    (tests/deploy/compose_images.sh: a Debian root file system and the pinned Envoy; about a minute, once)"
    bash scripts/setup.sh images
    images=$(bash tests/deploy/compose_images.sh) || die "building the stand-in images failed"
    PYTHON_IMAGE=$(sed -n 1p <<<"$images") ENVOY_IMAGE=$(sed -n 2p <<<"$images")
    export TRAFFIC_MIRROR_ENVOY_IMAGE="$ENVOY_IMAGE" TRAFFIC_MIRROR_PYTHON_IMAGE="$PYTHON_IMAGE"
  else
    cat >&2 <<EOF
demo: cannot pull $ENVOY_IMAGE or $PYTHON_IMAGE: no container registry answers this Docker engine.
  Either load the images from a machine that can pull them:
      docker save $ENVOY_IMAGE $PYTHON_IMAGE | ssh this-machine docker load
  or use images you have (an Envoy $ENVOY_VERSION with \`envoy\` on PATH, and one with
  \`python\`):
      TRAFFIC_MIRROR_ENVOY_IMAGE=... TRAFFIC_MIRROR_PYTHON_IMAGE=... scripts/demo.sh compose
  or let the demo build the test suite's local stand-ins (from Debian's packages and the
  pinned Envoy; building them needs root): as root,
      scripts/demo.sh compose
  or, as a user who may use sudo,
      sudo bash scripts/setup.sh images && sudo bash tests/deploy/compose_images.sh
      TRAFFIC_MIRROR_ENVOY_IMAGE=traffic-mirror-test/envoy:$ENVOY_VERSION \\
        TRAFFIC_MIRROR_PYTHON_IMAGE=traffic-mirror-test/python:3.11 scripts/demo.sh compose
EOF
    exit 1
  fi
fi

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
# Copies are fire and forget: wait until every one has ended, and its latency is in the
# histogram (merged at Envoy's stats flush, every second in the testbed's config).
for _ in $(seq 1 100); do
  grep -q '^traffic_mirror_in_flight{[^}]*} 0$' <<<"$(curl -fsS "http://127.0.0.1:$ADMIN/stats/prometheus")" && break
  sleep 0.05
done
for _ in $(seq 1 60); do
  series=$(curl -fsS "http://127.0.0.1:$ADMIN/stats/prometheus")
  dispatched=$(awk '/^traffic_mirror_dispatched\{/ {print $2}' <<<"$series")
  counted=$(awk '/^traffic_mirror_latency_ms_count\{/ {print $2}' <<<"$series")
  [ -n "$dispatched" ] && [ "$counted" = "$dispatched" ] && break
  sleep 0.05
done

received() { "${compose[@]}" logs --no-color --no-log-prefix "$1" | sed 's/\x1b\[2K//g' | grep '"path"' || true; }
say
say "==> $PRIMARY received $(received "$PRIMARY" | wc -l) requests; $MIRROR received $(received "$MIRROR" | wc -l) copies, of the users:"
received "$MIRROR" | sed -n 's/.*"x-user-id": "\([^"]*\)".*/\1/p' | sort -V | tr '\n' ' ' | fold -s -w 84 | sed 's/^/    /'
say
say "    (the command names the same users, without Docker or Envoy:"
say "     seq 1 $REQUESTS | sed 's/^/user-/' | traffic-mirror sample $(grep -o 'compose/[a-z-]*envoy.yaml' "$FILE" | head -n 1 | sed 's|^|envoy/|')"
if command -v traffic-mirror >/dev/null; then say "     )"; else say "     once the command is installed: cargo install --path cli)"; fi
say
say "==> a copy as $MIRROR saw it"
received "$MIRROR" | head -n 1 | sed 's/^/    /'
say
say "==> the plugin's series (admin /stats/prometheus)"
curl -fsS "http://127.0.0.1:$ADMIN/stats/prometheus" | grep '^traffic_mirror_' | grep -v '_bucket{' | sed 's/^/    /'
say "    (traffic_mirror_latency_ms_count and _sum: the copies' latency histogram, one count a copy)"
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
