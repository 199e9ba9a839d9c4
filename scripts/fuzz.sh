#!/usr/bin/env bash
# Fuzzes the configuration parser, the request path (decision, capture, copy builder,
# outbox), the comparison of answers (JSON, decoding) and W3C baggage (read, rewritten)
# with cargo-fuzz (libFuzzer, nightly). Bounded: SECONDS per target.
#   scripts/fuzz.sh          # 15 s per target (what scripts/test.sh runs)
#   scripts/fuzz.sh 1800     # a long run: 30 min per target
# New interesting inputs accumulate in fuzz/corpus/ (not committed); a crash leaves its
# input in fuzz/artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds="${1:-15}"
cd fuzz
for target in config request compare baggage; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  log="$(mktemp)"
  status=0
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done
