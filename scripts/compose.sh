#!/usr/bin/env bash
# `docker compose`, whichever this machine has: the Docker CLI's compose plugin, or
# Compose v2 in .tools/ (scripts/setup.sh compose installs it there, without root, where
# the plugin is missing). It takes docker compose's arguments, from any directory:
#
#   scripts/compose.sh -f envoy/docker-compose.yaml up -d --wait
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if docker compose version --short 2>/dev/null | grep -q '^v\?2\.'; then
  exec docker compose "$@"
fi
[ -x "$repo/.tools/docker-compose" ] || bash "$repo/scripts/setup.sh" compose >&2
exec "$repo/.tools/docker-compose" "$@"
