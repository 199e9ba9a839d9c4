#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests (native and wasm32), the module
# build, the shipped config through `envoy --mode validate`, and the end-to-end tests
# against a real Envoy, and the docker-compose testbeds on the Docker engine (required
# under CI=true, which .ci/run sets). Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh test
# shellcheck source=scripts/versions.sh
. scripts/versions.sh
export ENVOY_BIN="${ENVOY_BIN:-$PWD/.venv/bin/envoy}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)
cargo fmt --manifest-path tests/trap-module/Cargo.toml -- --check

step "clippy, native: every crate of the workspace, with its tests and examples"
cargo clippy --workspace --all-targets -- -D warnings

step "clippy, wasm32-wasip1: the module (the proxy-wasm ABI shell) and the core under it"
cargo clippy --target wasm32-wasip1 -- -D warnings

step "unit tests, native: the core and the command"
cargo test -p traffic-mirror-core --lib
cargo test -p traffic-mirror-cli --bins

step "documentation: every relative link and #anchor in README.md, CONTRIBUTING.md, CHANGELOG.md and docs/ resolves"
cargo test --test docs

step "unit tests of the core, wasm32 (Node, wasm-bindgen-test)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --target wasm32-unknown-unknown -p traffic-mirror-core --lib

step "fuzz the config parser and the request path (bounded; scripts/fuzz.sh N for long runs)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-15}"

step "the core's hot paths counted natively, as CONTRIBUTING.md has it run: scripts/bench-native.sh (and -v), and the comparing floor the benchmark measures"
native=$(bash scripts/bench-native.sh)
echo "$native"
# Plausible counts, not a performance gate: the tool runs and counts what it names.
echo "$native" | awk '
  /^compare: [0-9]+ instructions each$/ { if ($2 >= 20000 && $2 <= 400000) ok++ }
  /^unsampled: [0-9]+ instructions each$/ { if ($2 >= 300 && $2 <= 20000) ok++ }
  END { exit ok == 2 ? 0 : 1 }' || { echo "bench-native: unexpected output" >&2; exit 1; }
# Read whole before grep: grep -q would end the pipe early, which pipefail reports.
functions=$(bash scripts/bench-native.sh compare -v)
grep -q "equal_in_order" <<<"$functions" \
  || { echo "bench-native -v: equal_in_order not among the functions" >&2; exit 1; }
(cd benches/compare-floor && cargo build --quiet --release --target wasm32-wasip1 --lib)

step "build traffic_mirror.wasm, and the test-only module that traps on demand (tests/trap-module)"
cargo build --target wasm32-wasip1 --release
ls -l target/wasm32-wasip1/release/traffic_mirror.wasm
cargo clippy --quiet --release --target wasm32-wasip1 --manifest-path tests/trap-module/Cargo.toml -- -D warnings
cargo build --quiet --release --target wasm32-wasip1 --manifest-path tests/trap-module/Cargo.toml

step "scenarios without Envoy: each on the core natively and on the built module in the emulated host (their host calls compared)"
cargo test -p traffic-mirror-emulator --lib --test scenarios
# The module's memory while comparing the bodies that cost the parser the most: an
# optimized interpreter (a debug one takes minutes over 64 KiB bodies).
cargo test --release -p traffic-mirror-emulator --test memory -- --nocapture

step "the traffic-mirror command: check over every shipped config, and its tests (no Envoy)"
cargo build --quiet --release -p traffic-mirror-cli
target/release/traffic-mirror check envoy/envoy.yaml envoy/sidecar.yaml envoy/lanes.yaml envoy/grpc.yaml \
  envoy/compare.yaml envoy/swimlanes.yaml envoy/compose/envoy.yaml envoy/compose/sidecar-envoy.yaml envoy/swimlanes/ \
  envoy/istio/*.yaml
cargo test -p traffic-mirror-cli --test cli

step "the README's first command as written: ./scripts/demo.sh (the filter in Envoy against local upstreams, the copies shown)"
demo=$(./scripts/demo.sh 2>&1) || { echo "$demo"; echo "demo: ./scripts/demo.sh failed" >&2; exit 1; }
grep -q "a few copies as the mirror saw them" <<<"$demo" && grep -q "staging GET /api/items/" <<<"$demo" \
  || { echo "$demo"; echo "demo: no copy shown as the mirror saw it" >&2; exit 1; }

step "shipped Envoy config passes envoy --mode validate"
"$ENVOY_BIN" --mode validate -c envoy/envoy.yaml -l error
"$ENVOY_BIN" --mode validate -c envoy/sidecar.yaml -l error
"$ENVOY_BIN" --mode validate -c envoy/lanes.yaml -l error
"$ENVOY_BIN" --mode validate -c envoy/grpc.yaml -l error
"$ENVOY_BIN" --mode validate -c envoy/compare.yaml -l error
"$ENVOY_BIN" --mode validate -c envoy/swimlanes.yaml -l error

step "scripts/debian-mirror.sh: the Debian mirror from apt's sources (one-line and deb822), DEBIAN_MIRROR, none"
bash tests/deploy/debian_mirror.sh

step "deployment manifests: every Envoy config (compose paths mapped), Istio WasmPlugins (CRD schema + CEL, pluginConfig in the module), docker-compose (compose-spec)"
.venv/bin/python tests/deploy/check_manifests.py

step "shipped Envoy configs in a real Envoy: traffic_mirror_<name>{target=...} on /stats/prometheus"
.venv/bin/python tests/deploy/prometheus_stats.py

step "docker-compose testbeds, started: front proxy and sidecar on a Docker engine (local stand-in images), what each container received, /stats/prometheus, torn down"
.venv/bin/python tests/deploy/compose_testbeds.py

step "swim-lane testbed, started: edge -> a -> b (main, feature-17) -> c with sidecars, baggage carried by OpenTelemetry, forged lanes, fallback timed, counters, torn down"
.venv/bin/python tests/deploy/swimlanes_testbed.py

step "OCI image: scripts/package-oci.sh -> skopeo -> local registry -> pull, byte for byte"
bash tests/deploy/oci_roundtrip.sh

step "release artifacts: scripts/release.sh (module, command, OCI tar, SHA256SUMS), the module reproducible from a copy elsewhere"
bash scripts/release.sh --check-reproducible --out target/dist-check
(cd target/dist-check && python3 - <<'PY'
import hashlib
for line in open("SHA256SUMS"):
    digest, name = line.split()
    assert hashlib.sha256(open(name, "rb").read()).hexdigest() == digest, name
print("SHA256SUMS verified")
PY
)

# The end-to-end suite on every pinned Envoy; a failure names the version.
for version in "$ENVOY_VERSION" $OLDER_ENVOY_VERSIONS; do
  if [ "$version" = "$ENVOY_VERSION" ]; then bin=$ENVOY_BIN; else bin=$PWD/.venvs/envoy-$version/bin/envoy; fi
  step "end-to-end tests on Envoy $version ($bin)"
  if ! ENVOY_BIN="$bin" cargo test --test e2e; then
    echo "end-to-end tests failed on Envoy $version" >&2
    exit 1
  fi
done

echo
echo "all checks passed"
