#!/usr/bin/env bash
# Benchmark (not a test): Envoy CPU per request, requests/s and client latency with
# traffic-mirror, side by side with no filter, an empty wasm filter, a bare proxy-wasm
# mirror and Envoy's native mirroring, for wrk's request and a browser's; instructions
# per request under valgrind for the same; p99 under a slow mirror; RSS under a mirror
# that never answers; module size. Prints markdown tables and writes
# bench-results/latest.json.
#   BENCH_SECONDS=5 BENCH_REPEAT=3 BENCH_CONNECTIONS=16 scripts/bench.sh
#   BENCH_INSTRUCTIONS=1 [BENCH_ONLY=noop,mirror_0,...] scripts/bench.sh   # instructions only
#   BENCH_PROFILE=1 with it: where the instructions go, per function (bench-results/profile-*.txt)
#   BENCH_HOST_CALLS=1 with either: what one host call of each kind costs, counted
# Bounded: about (8 + 2) x REPEAT x (SECONDS + 3) s plus the RSS run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh bench
cargo build --quiet --target wasm32-wasip1 --release
(cd benches/noop && cargo build --quiet --target wasm32-wasip1 --release --lib)
(cd benches/bare-mirror && cargo build --quiet --target wasm32-wasip1 --release --lib)
(cd benches/host-calls && cargo build --quiet --target wasm32-wasip1 --release --lib)
(cd benches/compare-floor && cargo build --quiet --target wasm32-wasip1 --release --lib)
cargo build --quiet --release --example upstream
exec python3 scripts/bench.py
