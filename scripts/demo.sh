#!/usr/bin/env bash
# Runs the shipped front-proxy config (envoy/envoy.yaml) with the filter against two
# local upstreams, drives a few hundred requests through it, reports what reached the
# primary and the mirror and the plugin's stats, then stops everything it started.
# Ports (loopback only): Envoy :10000, admin :9901, primary :8081, staging mirror :8082.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

REQUESTS="${REQUESTS:-400}"
CONFIGURED_PERCENT=25

bash scripts/setup.sh demo
ENVOY_BIN="${ENVOY_BIN:-$PWD/.venv/bin/envoy}"

for port in 10000 9901 8081 8082; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is in use; stop what listens there first" >&2
    exit 1
  fi
done

echo "==> building the module and the demo upstream"
cargo build --quiet --target wasm32-wasip1 --release
cargo build --quiet --example upstream

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target/debug/examples/upstream --port 8081 --name primary >>"$work/primary.log" 2>&1 &
pids+=($!)
target/debug/examples/upstream --port 8082 --name staging >>"$work/staging.log" 2>&1 &
pids+=($!)
"$ENVOY_BIN" -c envoy/envoy.yaml --concurrency 2 -l warning --use-dynamic-base-id \
  >"$work/envoy.log" 2>&1 &
pids+=($!)

wait_for() { # url, what
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "demo: $2 did not come up; Envoy's log:" >&2
  cat "$work/envoy.log" >&2
  exit 1
}
wait_for http://127.0.0.1:8081/ "primary upstream"
wait_for http://127.0.0.1:8082/ "mirror upstream"
wait_for http://127.0.0.1:9901/ready "Envoy"
: >"$work/primary.log"; : >"$work/staging.log"

echo "==> sending $REQUESTS requests (x-user-id: user-1..user-$REQUESTS; every 5th a POST with a body)"
for i in $(seq 1 "$REQUESTS"); do
  if (( i % 5 == 0 )); then
    curl -fsS -o /dev/null -X POST -H "x-user-id: user-$i" -H 'content-type: application/json' \
      --data "{\"order\": $i}" "http://127.0.0.1:10000/api/orders?i=$i"
  else
    curl -fsS -o /dev/null -H "x-user-id: user-$i" "http://127.0.0.1:10000/api/items/$i"
  fi
  if (( i % 50 == 0 || i == REQUESTS )); then
    printf '\r    %d/%d sent' "$i" "$REQUESTS"
  fi
done
echo

stat() { curl -fsS "http://127.0.0.1:9901/stats?filter=^wasmcustom" | awk -v n="$1" -F': ' '$1==n {print $2}'; }
# Copies are fire and forget: wait until every dispatched copy has ended.
for _ in $(seq 1 100); do
  [ "$(stat wasmcustom.traffic_mirror.staging.in_flight)" = "0" ] && break
  sleep 0.05
done

primary=$(grep -c . "$work/primary.log" || true)
mirrored=$(grep -c . "$work/staging.log" || true)
echo
echo "==> report"
echo "    requests sent:        $REQUESTS"
echo "    reached the primary:  $primary"
echo "    reached the mirror:   $mirrored (target staging)"
awk -v m="$mirrored" -v n="$REQUESTS" -v p="$CONFIGURED_PERCENT" \
  'BEGIN { printf "    observed ratio:       %.1f %% (configured %s %%, by hash of x-user-id)\n", 100*m/n, p }'
echo "    mirror responses:     2xx $(stat wasmcustom.traffic_mirror.staging.responses_2xx), 3xx $(stat wasmcustom.traffic_mirror.staging.responses_3xx), 4xx $(stat wasmcustom.traffic_mirror.staging.responses_4xx), 5xx $(stat wasmcustom.traffic_mirror.staging.responses_5xx), failed $(stat wasmcustom.traffic_mirror.staging.responses_failed)"
echo
echo "==> the plugin's stats (admin /stats)"
curl -fsS "http://127.0.0.1:9901/stats?filter=^wasmcustom" | sed 's/^/    /'
echo
echo "==> a few copies as the mirror saw them"
head -n 3 "$work/staging.log" | sed 's/^/    /'
