# shellcheck shell=bash
# What the Docker demos (scripts/demo-compose.sh, scripts/demo-swimlanes.sh) share:
# their messages, their prerequisites, and `compose` for their compose file.

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# Checks the Docker engine, curl, Compose v2 and the wasm target, sets `compose` to run
# docker compose on FILE, and refuses loopback ports already in use.
compose_demo_start() { # file port...
  local file=$1 port
  shift
  command -v docker >/dev/null || die "docker is missing: install Docker Engine with the compose plugin"
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info): start it, or check your permissions on its socket"
  command -v curl >/dev/null || die "curl is missing"
  bash scripts/setup.sh compose
  rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
  compose=(bash scripts/compose.sh -f "$file")
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port on 127.0.0.1 is in use; stop what listens there, or set TRAFFIC_MIRROR_PORT / TRAFFIC_MIRROR_ADMIN_PORT"
    fi
  done
}

# True when an image is here, or can be pulled now.
pullable() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }
