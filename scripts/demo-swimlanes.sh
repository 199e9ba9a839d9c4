#!/usr/bin/env bash
# The swim-lane testbed as a demo (scripts/demo.sh swimlanes runs this): starts
# envoy/docker-compose.swimlanes.yaml on your Docker engine (an edge Envoy that puts
# users in lanes, then services a -> b -> c, each an unmodified Python application under
# OpenTelemetry's auto-instrumentation with a sidecar Envoy; b has a lane instance,
# b-feature-17), shows the path of a main user and of a lane user, and that a client
# cannot pick its lane; stops b's lane instance and shows its users fall back to b's
# main instance (timed), starts it again and shows them come back; shows the filter's
# counters at the edge and in each sidecar; takes the testbed down again.
#
# Images: the official Envoy image, and the application's built by compose from
# envoy/swimlanes/Dockerfile (python:3.12-slim and PyPI). Where no registry answers this
# Docker engine and you are root, the tests' local stand-ins are built instead
# (tests/deploy/compose_images.sh --swimlanes: Debian's packages, the pinned Envoy of
# .venv, the application's packages fetched from PyPI by this machine).
#
#   TRAFFIC_MIRROR_ENVOY_IMAGE, TRAFFIC_MIRROR_APP_IMAGE   other images
#   TRAFFIC_MIRROR_PORT (10000), TRAFFIC_MIRROR_ADMIN_PORT (9901)   loopback ports
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/versions.sh
. scripts/versions.sh

FILE=envoy/docker-compose.swimlanes.yaml
LANE=feature-17
PORT="${TRAFFIC_MIRROR_PORT:-10000}" ADMIN="${TRAFFIC_MIRROR_ADMIN_PORT:-9901}"
[ $# -eq 0 ] || { echo "usage: scripts/demo.sh swimlanes" >&2; exit 2; }

# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

compose_demo_start "$FILE" "$PORT" "$ADMIN"
command -v python3 >/dev/null || die "python3 is missing (it formats the answers)"

# The images: given, there already, or pulled now (the application's is built from
# python:3.12-slim). Where no registry answers: the stand-ins, as root, or what to do.
stand_ins() {
  say "==> no registry answers this Docker engine: building the tests' stand-in images (tests/deploy/compose_images.sh --swimlanes)"
  bash scripts/setup.sh images  # the pinned Envoy in .venv, which the Envoy stand-in carries, and debootstrap
  local images
  images=$(bash tests/deploy/compose_images.sh --swimlanes) || die "building the stand-in images failed"
  TRAFFIC_MIRROR_ENVOY_IMAGE=$(sed -n 2p <<<"$images")
  TRAFFIC_MIRROR_APP_IMAGE=$(sed -n 3p <<<"$images")
}
if [ -z "${TRAFFIC_MIRROR_ENVOY_IMAGE:-}" ] && [ -z "${TRAFFIC_MIRROR_APP_IMAGE:-}" ]; then
  say "==> the images: envoyproxy/envoy:v$ENVOY_VERSION, and the application's from envoy/swimlanes/Dockerfile"
  if ! pullable "envoyproxy/envoy:v$ENVOY_VERSION" \
    || { ! docker image inspect traffic-mirror-swimlanes/app:otel-0.66b1 >/dev/null 2>&1 && ! pullable python:3.12-slim; }; then
    if [ "$(id -u)" = 0 ]; then
      stand_ins
    else
      cat >&2 <<EOF
demo: cannot pull envoyproxy/envoy:v$ENVOY_VERSION or python:3.12-slim: no container registry
  answers this Docker engine. Either load them from a machine that can pull them:
      docker save envoyproxy/envoy:v$ENVOY_VERSION python:3.12-slim | ssh this-machine docker load
  or use images you have (an Envoy $ENVOY_VERSION with \`envoy\` on PATH, and one with
  python and the packages of envoy/swimlanes/requirements.txt):
      TRAFFIC_MIRROR_ENVOY_IMAGE=... TRAFFIC_MIRROR_APP_IMAGE=... scripts/demo.sh swimlanes
  or let the demo build the test suite's local stand-ins (from Debian's packages, the
  pinned Envoy and the packages from PyPI; building them needs root): as root,
      scripts/demo.sh swimlanes
  or, as a user who may use sudo,
      sudo bash scripts/setup.sh images && sudo bash tests/deploy/compose_images.sh --swimlanes
      TRAFFIC_MIRROR_ENVOY_IMAGE=traffic-mirror-test/envoy:$ENVOY_VERSION \\
        TRAFFIC_MIRROR_APP_IMAGE=traffic-mirror-test/python-otel:3.11 scripts/demo.sh swimlanes
EOF
      exit 1
    fi
  fi
fi
export TRAFFIC_MIRROR_ENVOY_IMAGE="${TRAFFIC_MIRROR_ENVOY_IMAGE:-envoyproxy/envoy:v$ENVOY_VERSION}"
export TRAFFIC_MIRROR_APP_IMAGE="${TRAFFIC_MIRROR_APP_IMAGE:-traffic-mirror-swimlanes/app:otel-0.66b1}"
export TRAFFIC_MIRROR_PORT="$PORT" TRAFFIC_MIRROR_ADMIN_PORT="$ADMIN"

say "==> building the module the testbed mounts, and the command (to name each user's lane)"
cargo build --quiet --target wasm32-wasip1 --release
cargo build --quiet --release -p traffic-mirror-cli

cleanup() {
  say "==> docker compose down"
  "${compose[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
}
trap cleanup EXIT
say "==> docker compose -f $FILE up -d --wait ($TRAFFIC_MIRROR_ENVOY_IMAGE, $TRAFFIC_MIRROR_APP_IMAGE)"
if ! "${compose[@]}" up -d --wait --wait-timeout 180; then
  "${compose[@]}" logs --no-color >&2 || true
  die "the testbed did not come up (its logs are above)"
fi

# A main user and a lane user, as the edge's filter will place them.
lanes=$(seq 1 40 | sed 's/^/user-/' | target/release/traffic-mirror sample envoy/swimlanes/edge.yaml --lanes 2>/dev/null)
MAIN_USER=$(awk -F'\t' '$2 == "" {print $1; exit}' <<<"$lanes")
LANE_USER=$(awk -F'\t' -v l="$LANE" '$2 == l {print $1; exit}' <<<"$lanes")
[ -n "$MAIN_USER" ] && [ -n "$LANE_USER" ] || die "no main or no lane user among user-1..user-40"

# One request through the edge, its answer as the path it took, and the baggage c got.
path_of() { # user, [curl argument...]
  curl -sS -H "x-user-id: $1" "${@:2}" "http://127.0.0.1:$PORT/checkout" | python3 -c '
import json, sys
hop = json.load(sys.stdin)
path, last = [], None
while hop:
    if "service" not in hop:
        path.append("error " + json.dumps(hop))
        break
    path.append("%s (%s)" % (hop["service"], hop["lane"]))
    last, hop = hop, hop.get("next")
print(" -> ".join(path) + ("    [c received baggage: %s]" % last["baggage"] if last else ""))'
}
b_of() { path_of "$@" | sed -n 's/.* -> b (\([^)]*\)) -> .*/\1/p'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

say
say "==> paths (each service answers its name and lane label, and the next one's answer)"
say "    $MAIN_USER (main):       $(path_of "$MAIN_USER" -H 'baggage: tenant=acme')"
say "    $LANE_USER ($LANE): $(path_of "$LANE_USER" -H 'baggage: tenant=acme')"
say "    (the edge wrote lane=$LANE into baggage; the applications forwarded it, being"
say "     instrumented with OpenTelemetry; each sidecar turned it into x-lane for its routes)"
say
say "==> a main user cannot pick the lane: $MAIN_USER sending x-lane: $LANE and baggage lane=$LANE"
say "    $(path_of "$MAIN_USER" -H "x-lane: $LANE" -H "baggage: lane=$LANE,tenant=acme")"

say
say "==> stopping b's lane instance (docker compose stop b-feature-17-sidecar b-feature-17)"
t0=$(now)
"${compose[@]}" stop b-feature-17-sidecar b-feature-17 >/dev/null 2>&1
stopped=$(since "$t0")
until [ "$(b_of "$LANE_USER")" = main ]; do
  awk -v t="$(since "$t0")" 'BEGIN { exit !(t > 30) }' && die "lane users did not reach b's main instance within 30s"
  sleep 0.05
done
say "    $LANE_USER ($LANE) after $(since "$t0")s (the stop took ${stopped}s): $(path_of "$LANE_USER")"
say "    (a's sidecar routes lane $LANE to an aggregate cluster [b-feature-17, b-main]: its health"
say "     checks find b-feature-17 gone within about a second, and a call caught in between is"
say "     retried on b-main)"
say
say "==> starting it again (docker compose start b-feature-17 b-feature-17-sidecar)"
t0=$(now)
"${compose[@]}" start b-feature-17 b-feature-17-sidecar >/dev/null 2>&1
started=$(since "$t0")
until [ "$(b_of "$LANE_USER")" = "$LANE" ]; do
  awk -v t="$(since "$t0")" 'BEGIN { exit !(t > 60) }' && die "lane users did not come back to b-feature-17 within 60s"
  sleep 0.05
done
say "    $LANE_USER ($LANE) after $(since "$t0")s (the start took ${started}s): $(path_of "$LANE_USER")"

say
say "==> the edge's lane counters (admin /stats/prometheus)"
curl -fsS "http://127.0.0.1:$ADMIN/stats/prometheus" | grep '^traffic_lanes_' | sed 's/^/    /'
for instance in a b b-feature-17; do
  say "==> $instance's sidecar (its admin, 127.0.0.1:15000 in the instance's namespace)"
  "${compose[@]}" exec -T "$instance" python -c \
    'import urllib.request as u; print(u.urlopen("http://127.0.0.1:15000/stats?filter=traffic_lanes").read().decode(), end="")' \
    | sed 's/^/    /'
done
say "    (b-feature-17's sidecar restarted: it counts from its start)"
