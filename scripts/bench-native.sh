#!/usr/bin/env bash
# The core's hot paths counted natively by callgrind, without Envoy (benches/native/):
# instructions per comparison of the Envoy benchmark's row 8b, and per request of its
# row 3d, each the difference between 201 runs and 1, divided by 200. Seconds, where
# scripts/bench.sh takes minutes; what it says of Envoy's count is only the direction.
#
#   scripts/bench-native.sh              # both
#   scripts/bench-native.sh compare -v   # one, and its functions (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v valgrind >/dev/null || { echo "bench-native: valgrind is missing; run scripts/setup.sh bench" >&2; exit 1; }
(cd benches/native && cargo build --quiet --release)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # binary, runs
  valgrind --tool=callgrind --callgrind-out-file="$out/$1.$2" "benches/native/target/release/$1" "$2" 2>&1 \
    | awk '/Collected :/ {print $NF}'
}
for bench in ${1:-compare unsampled}; do
  one=$(count "$bench" 1)
  many=$(count "$bench" 201)
  echo "$bench: $(( (many - one) / 200 )) instructions each"
  if [ "${2:-}" = "-v" ]; then
    # Into a file, then its first lines: head on a pipe would end it early (pipefail).
    callgrind_annotate --threshold=95 "$out/$bench.201" >"$out/$bench.annotated"
    awk '/^Ir/ { shown = 1 } shown && listed++ < 40' "$out/$bench.annotated"
  fi
done
