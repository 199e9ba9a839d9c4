#!/usr/bin/env bash
# The demo, in two parts. Each runs a shipped config in a real Envoy against local
# upstreams, drives requests through it, reports what happened and the plugin's stats,
# then stops everything it started. Installs only what it uses (scripts/setup.sh demo:
# the wasm32-wasip1 target and the pinned Envoy in .venv; no root).
#
#   scripts/demo.sh          # mirroring: envoy/envoy.yaml; Envoy :10000, admin :9901,
#                            # primary :8081, staging mirror :8082
#   scripts/demo.sh lanes    # sticky lanes: envoy/lanes.yaml; Envoy :10000, admin :9901,
#                            # stable :8081, canary :8082, beta :8083
#   scripts/demo.sh compare  # a copy's verdict: envoy/compare.yaml; Envoy :10000, admin
#                            # :9901, primary :8081, candidate :8082 (a JSON catalog, the
#                            # candidate with a seeded bug: every 7th item's price is wrong)
#   scripts/demo.sh compose [sidecar]
#                            # the docker-compose testbed (envoy/docker-compose.yaml, or
#                            # docker-compose.sidecar.yaml) on your Docker engine, with the
#                            # official images; Envoy :10000, admin :9901 (TRAFFIC_MIRROR_PORT,
#                            # TRAFFIC_MIRROR_ADMIN_PORT); taken down at the end
#   scripts/demo.sh swimlanes
#                            # lanes across services (envoy/docker-compose.swimlanes.yaml):
#                            # an edge Envoy, then services a -> b -> c with sidecars, b with a
#                            # lane instance; a main and a lane user's paths, b's lane instance
#                            # stopped and started again; Envoy :10000, admin :9901; as root
#                            # with no registry, the tests' stand-in images; taken down at the end
#
# All ports on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

MODE="${1:-mirror}"
case "$MODE" in
  mirror) PORTS="10000 9901 8081 8082" ;;
  lanes) PORTS="10000 9901 8081 8082 8083" ;;
  compare) PORTS="10000 9901 8081 8082" ;;
  compose) exec bash scripts/demo-compose.sh "${@:2}" ;;
  swimlanes) exec bash scripts/demo-swimlanes.sh "${@:2}" ;;
  *) echo "usage: scripts/demo.sh [lanes | compare | compose [sidecar] | swimlanes]" >&2; exit 2 ;;
esac

bash scripts/setup.sh demo
ENVOY_BIN="${ENVOY_BIN:-$PWD/.venv/bin/envoy}"
command -v curl >/dev/null || { echo "demo: curl is missing" >&2; exit 1; }

for port in $PORTS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is in use; stop what listens there first" >&2
    exit 1
  fi
done

if [ -f target/wasm32-wasip1/release/traffic_mirror.wasm ]; then
  echo "==> building the module and the demo upstream"
else
  echo "==> building the module and the demo upstream (the first build takes a minute or two; cargo shows its progress)"
fi
cargo build --target wasm32-wasip1 --release
cargo build --example upstream

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

upstream() { # name port [option...]
  target/debug/examples/upstream --port "$2" --name "$1" "${@:3}" >>"$work/$1.log" 2>&1 &
  pids+=($!)
}

wait_for() { # url, what
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "demo: $2 did not come up; Envoy's log:" >&2
  cat "$work/envoy.log" >&2
  exit 1
}

start_envoy() { # config [envoy option...]
  "$ENVOY_BIN" -c "$1" --concurrency 2 -l warning "${@:2}" --use-dynamic-base-id >"$work/envoy.log" 2>&1 &
  pids+=($!)
  wait_for http://127.0.0.1:9901/ready "Envoy"
}

stat() { curl -fsS "http://127.0.0.1:9901/stats?filter=^wasmcustom" | awk -v n="$1" -F': ' '$1==n {print $2}'; }
# Waits until a target's latency histogram counts every copy it dispatched: Envoy merges
# histograms at its stats flush (every 5 s by default).
wait_for_latencies() { # target
  local dispatched count
  dispatched=$(stat "wasmcustom.traffic_mirror.$1.dispatched")
  for _ in $(seq 1 140); do
    count=$(curl -fsS "http://127.0.0.1:9901/stats/prometheus" \
      | awk -v t="traffic_mirror_latency_ms_count{target=\"$1\"}" '$1 == t {print $2}')
    [ "${count:-0}" = "$dispatched" ] && return 0
    sleep 0.05
  done
  echo "    (the latency histogram has not counted every copy yet: Envoy merges it every 5 s)"
}

demo_mirror() {
  local requests="${REQUESTS:-400}" configured_percent=25
  upstream primary 8081
  upstream staging 8082
  wait_for http://127.0.0.1:8081/ "primary upstream"
  wait_for http://127.0.0.1:8082/ "mirror upstream"
  echo "==> Envoy with envoy/envoy.yaml: listener 127.0.0.1:10000, primary :8081, staging :8082"
  start_envoy envoy/envoy.yaml
  : >"$work/primary.log"; : >"$work/staging.log"

  echo "==> sending $requests requests (x-user-id: user-1..user-$requests; every 5th a POST with a body)"
  for i in $(seq 1 "$requests"); do
    if (( i % 5 == 0 )); then
      curl -fsS -o /dev/null -X POST -H "x-user-id: user-$i" -H 'content-type: application/json' \
        --data "{\"order\": $i}" "http://127.0.0.1:10000/api/orders?i=$i"
    else
      curl -fsS -o /dev/null -H "x-user-id: user-$i" "http://127.0.0.1:10000/api/items/$i"
    fi
    if (( i % 50 == 0 || i == requests )); then
      printf '\r    %d/%d sent' "$i" "$requests"
    fi
  done
  echo

  # Copies are fire and forget: wait until every dispatched copy has ended, and until
  # Envoy's next stats flush has merged their latencies into the histogram (every 5 s).
  for _ in $(seq 1 100); do
    [ "$(stat wasmcustom.traffic_mirror.staging.in_flight)" = "0" ] && break
    sleep 0.05
  done
  wait_for_latencies staging

  local primary mirrored
  primary=$(grep -c . "$work/primary.log" || true)
  mirrored=$(grep -c . "$work/staging.log" || true)
  echo
  echo "==> report"
  echo "    requests sent:        $requests"
  echo "    reached the primary:  $primary"
  echo "    reached the mirror:   $mirrored (target staging)"
  awk -v m="$mirrored" -v n="$requests" -v p="$configured_percent" \
    'BEGIN { printf "    observed ratio:       %.1f %% (configured %s %%, by hash of x-user-id)\n", 100*m/n, p }'
  echo "    mirror responses:     2xx $(stat wasmcustom.traffic_mirror.staging.responses_2xx), 3xx $(stat wasmcustom.traffic_mirror.staging.responses_3xx), 4xx $(stat wasmcustom.traffic_mirror.staging.responses_4xx), 5xx $(stat wasmcustom.traffic_mirror.staging.responses_5xx), failed $(stat wasmcustom.traffic_mirror.staging.responses_failed)"
  echo
  echo "==> the plugin's stats (admin /stats)"
  curl -fsS "http://127.0.0.1:9901/stats?filter=^wasmcustom" | sed 's/^/    /'
  echo "    (latency_ms is the copies' latency histogram: P50(a,b) is its 50th percentile in ms,"
  echo "     a over Envoy's last stats flush interval, b since start; /stats/prometheus has its"
  echo "     _count and _sum)"
  echo
  echo "==> a few copies as the mirror saw them"
  head -n 3 "$work/staging.log" | sed 's/^/    /'
  next_steps envoy/envoy.yaml "--path /api/items/4 -H 'x-user-id: user-4'"
}

# What to try next, on the config the demo ran: the command, built from the same code.
next_steps() { # config, explain arguments
  echo
  echo "==> next: ask the filter's own code what it does with a request, without an Envoy"
  echo "    traffic-mirror explain $1 $2"
  if ! command -v traffic-mirror >/dev/null; then
    echo "    (the command is not installed yet: cargo install --path cli, once, about a minute)"
  fi
  echo "    (config: $1; docs/command.md for check, explain, sample and compare)"
}

demo_lanes() {
  local users="${USERS:-40}" rounds="${ROUNDS:-5}"
  upstream stable 8081
  upstream canary 8082
  upstream beta 8083
  for port in 8081 8082 8083; do wait_for "http://127.0.0.1:$port/" "upstream on :$port"; done
  echo "==> Envoy with envoy/lanes.yaml: listener 127.0.0.1:10000, stable :8081, canary :8082, beta :8083"
  start_envoy envoy/lanes.yaml

  echo "==> $users users (x-user-id: user-1..user-$users), $rounds rounds; each request on a"
  echo "    connection of its own, so they land on both of Envoy's workers; every 4th user"
  echo "    also sends x-lane: canary, which the filter replaces"
  for round in $(seq 1 "$rounds"); do
    for i in $(seq 1 "$users"); do
      local claim=()
      (( i % 4 == 0 )) && claim=(-H 'x-lane: canary')
      # The upstream answers "<its name> <method> <path>".
      curl -fsS "${claim[@]}" -H "x-user-id: user-$i" "http://127.0.0.1:10000/shop/$round/$i" \
        | awk -v u="user-$i" '{print u, $1}' >>"$work/served"
    done
  done

  echo
  echo "==> where each user's $rounds requests went"
  awk '
    { lanes[$1] = (lanes[$1] == "" ? $2 : lanes[$1] " " $2) }
    END {
      for (u in lanes) {
        split(lanes[u], seen, " "); same = 1
        for (j in seen) if (seen[j] != seen[1]) same = 0
        printf "%-8s %-7s %s\n", u, seen[1], same ? "every time" : "MOVED: " lanes[u]
      }
    }' "$work/served" | sort -V | column -c 100 | sed 's/^/    /'
  echo
  echo "==> lanes"
  local total
  total=$(wc -l <"$work/served")
  for lane in canary beta stable; do
    local n users_in
    n=$(awk -v l="$lane" '$2==l' "$work/served" | wc -l)
    users_in=$(awk -v l="$lane" '$2==l {print $1}' "$work/served" | sort -u | wc -l)
    printf '    %-7s %3d users, %3d requests, %4.1f %% of users\n' "$lane" "$users_in" "$n" \
      "$(awk -v a="$users_in" -v b="$users" 'BEGIN { print 100*a/b }')"
  done
  echo "    (configured: canary 10 %, beta the next 20 %, stable the rest; with $users users the"
  echo "    shares are rough, but who lands where is fixed by the hash of x-user-id)"
  local moved
  moved=$(sort -u "$work/served" | awk '{print $1}' | uniq -d | wc -l)
  echo "    users seen in more than one lane: $moved (of $users, over $total requests)"
  echo
  echo "==> the plugin's stats (admin /stats)"
  curl -fsS "http://127.0.0.1:9901/stats?filter=^wasmcustom" | sed 's/^/    /'
  next_steps envoy/lanes.yaml "--path /shop/1/6 -H 'x-user-id: user-6'"
}

demo_compare() {
  local items="${ITEMS:-32}" pages="${PAGES:-8}" per_page=5 target=candidate
  local saved=target/demo-compare
  upstream primary 8081 --catalog
  upstream candidate 8082 --catalog-bug
  wait_for http://127.0.0.1:8081/ "primary upstream"
  wait_for http://127.0.0.1:8082/ "candidate upstream"
  echo "==> Envoy with envoy/compare.yaml: listener 127.0.0.1:10000, primary :8081, candidate :8082"
  echo "    Both answer a small JSON catalog (examples/upstream.rs --catalog), each answer stamped"
  echo "    with its own updated_at; the candidate has a seeded bug (--catalog-bug): every 7th"
  echo "    item's price is one cent too high. Every /api/ request is copied to the candidate and"
  echo "    its answer compared with the primary's, ignoring /updated_at."
  # The filter logs each mismatch at info: Envoy's wasm logger at info, the rest at warning.
  start_envoy envoy/compare.yaml --component-log-level wasm:info
  : >"$work/primary.log"; : >"$work/candidate.log"

  local sent=$((items + pages)) n=0 buggy_items=0 buggy_pages=0
  echo "==> sending $sent requests (x-user-id: user-1..user-$sent): GET /api/items/1..$items, one"
  echo "    item each, and GET /api/items?page=1..$pages&per_page=$per_page, items 1..$((pages * per_page)) by pages"
  for i in $(seq 1 "$items"); do
    n=$((n + 1))
    curl -fsS -o /dev/null -H "x-user-id: user-$n" "http://127.0.0.1:10000/api/items/$i"
    if (( i % 7 == 0 )); then buggy_items=$((buggy_items + 1)); fi
  done
  for page in $(seq 1 "$pages"); do
    n=$((n + 1))
    curl -fsS -o /dev/null -H "x-user-id: user-$n" "http://127.0.0.1:10000/api/items?page=$page&per_page=$per_page"
    # A page holding a multiple of 7.
    if (( (page * per_page) / 7 > ((page - 1) * per_page) / 7 )); then buggy_pages=$((buggy_pages + 1)); fi
  done
  local buggy=$((buggy_items + buggy_pages))

  # Copies are fire and forget, compared once both answers are in: wait until every copy
  # dispatched has its verdict (the compare.<result> counters add up to dispatched).
  verdicts() {
    curl -fsSg "http://127.0.0.1:9901/stats?filter=^wasmcustom\.traffic_mirror\.$target\.compare\.[a-z_]+$" \
      | awk -F': ' '{ s += $2 } END { print s + 0 }'
  }
  verdict() { stat "wasmcustom.traffic_mirror.$target.compare.$1"; }
  local dispatched
  for _ in $(seq 1 100); do
    dispatched=$(stat "wasmcustom.traffic_mirror.$target.dispatched")
    [ "$(stat "wasmcustom.traffic_mirror.$target.in_flight")" = "0" ] && [ "$(verdicts)" = "$dispatched" ] && break
    sleep 0.05
  done

  local primary mirrored match body all
  primary=$(grep -c . "$work/primary.log" || true)
  mirrored=$(grep -c . "$work/candidate.log" || true)
  match=$(verdict match) body=$(verdict body) all=$(verdicts)
  echo
  echo "==> report"
  echo "    requests sent:          $sent"
  echo "    reached the primary:    $primary"
  echo "    reached the candidate:  $mirrored (target $target: 100 % of /api/, by x-user-id)"
  echo "    verdicts:               match $match, body $body, other $((all - match - body)) (of $dispatched copies dispatched)"
  echo "    the seeded bug:         $buggy requests touch an item whose id is a multiple of 7 ($buggy_items items, $buggy_pages pages)"
  echo
  echo "==> the compare counters (admin /stats?filter=compare)"
  curl -fsS "http://127.0.0.1:9901/stats?filter=compare" | sed 's/^/    /'
  echo
  echo "==> body differences by JSON path (admin /stats/prometheus)"
  curl -fsS "http://127.0.0.1:9901/stats/prometheus" | grep '^traffic_mirror_compare_path{' | sed 's/^/    /' \
    || echo "    (none)"
  echo
  echo "==> the mismatches Envoy logged (info; at most log_per_minute a minute; never a value)"
  grep -o 'traffic-mirror: target [^:]*: compare .*' "$work/envoy.log" | sed 's/^/    /' || echo "    (none)"

  # One item the candidate gets wrong, from each side, saved as curl -si saves an answer.
  mkdir -p "$saved"
  curl -fsS -i "http://127.0.0.1:8081/api/items/14" >"$saved/primary-item-14.txt"
  curl -fsS -i "http://127.0.0.1:8082/api/items/14" >"$saved/candidate-item-14.txt"
  echo
  echo "==> item 14 from each side, asked directly (saved in $saved/)"
  echo "    primary:   $(tail -n 1 "$saved/primary-item-14.txt")"
  echo "    candidate: $(tail -n 1 "$saved/candidate-item-14.txt")"
  echo
  local ok=1
  if [ "$match" -eq $((dispatched - buggy)) ] && [ "$body" -eq "$buggy" ] && [ "$dispatched" -eq "$sent" ]; then
    echo "==> verdict: the candidate answers like the primary but for the price of every 7th item."
    echo "    The filter found the bug at /price (one item) and /items/*/price (a page) on exactly the"
    echo "    $buggy requests that touch one, and counted every other copy a match: updated_at, which"
    echo "    differs on every answer, is left out by \"ignore\": [\"/updated_at\"]."
  else
    ok=0
    echo "==> UNEXPECTED: the verdicts do not match the seeded bug: expected body $buggy and match"
    echo "    $((sent - buggy)) of $sent copies, got body $body and match $match of $dispatched (other $((all - match - body)))."
    echo "    Envoy's log, the plugin's lines:"
    grep 'wasm log' "$work/envoy.log" | sed 's/.*wasm log [^ ]* [^ ]* //; s/^/    /' | tail -n 20 || true
  fi
  echo
  echo "==> next: the same comparison offline, with the filter's own code, showing both values"
  echo "    (the filter never logs one)"
  echo "    cargo run --release -p traffic-mirror-cli -- compare envoy/compare.yaml \\"
  echo "        $saved/primary-item-14.txt $saved/candidate-item-14.txt"
  next_steps envoy/compare.yaml "--path /api/items/14 -H 'x-user-id: user-14'"
  [ "$ok" = 1 ]
}

"demo_$MODE"
