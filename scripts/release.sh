#!/usr/bin/env bash
# Builds the release artifacts of this commit into dist/traffic-mirror-VERSION/:
#
#   traffic_mirror.wasm                      the module
#   traffic-mirror-HOST                      the command, for this host (e.g. x86_64-unknown-linux-gnu)
#   traffic-mirror-VERSION-oci.tar           the module as an OCI image layout (scripts/package-oci.sh), in a tar
#   oci-manifest-digest                      the image's manifest digest: a WasmPlugin's spec.sha256
#   SHA256SUMS                               the SHA-256 of each file above (sha256sum -c reads it)
#
#   scripts/release.sh [--out DIR] [--check-reproducible]
#
# The module is reproducible: the same commit gives the same module, byte for byte,
# wherever the repository and Cargo's home lie (source paths are remapped, and the build
# has its own target directory). --check-reproducible builds the module a second time,
# from a copy of the tracked files elsewhere with only the module's crates (the
# workspace without the command, cli/, and the emulator, emulator/, and their
# dependencies), and fails unless both are the same: the module is reproducible and owes
# nothing to the command or the tests. The OCI tar is reproducible from the
# module (fixed names, modes and times). Needs cargo with the wasm32-wasip1 target
# (scripts/setup.sh demo) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

out=
check=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --check-reproducible) check=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "release: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
out=${out:-dist/traffic-mirror-$version}
log() { printf 'release: %s\n' "$*" >&2; }

# Builds the module of the tree in $1 into target directory $2 (more cargo flags after);
# prints the module's path.
build_module() { # source dir, target dir, cargo flags...
  local src=$1 target=$2 registry
  shift 2
  registry=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd)/registry/src
  # Paths that end up in the module (panic locations of dependencies) name no directory
  # of this machine.
  (cd "$src" && CARGO_TARGET_DIR=$target \
    RUSTFLAGS="--remap-path-prefix=$src=/traffic-mirror --remap-path-prefix=$registry=/cargo" \
    cargo build --quiet "$@" --target wasm32-wasip1 --release --lib)
  echo "$target/wasm32-wasip1/release/traffic_mirror.wasm"
}

sha256() { python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"; }

log "building the module"
module=$(build_module "$PWD" "$PWD/target/release-build" --locked)

if [ -n "$check" ]; then
  log "building it again from a copy of the tracked files elsewhere, without the command"
  copy=$(mktemp -d)
  trap 'rm -rf "$copy"' EXIT
  git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$copy"
  rm -rf "$copy/cli" "$copy/emulator"
  # The workspace of the module alone: its members, without the test-only
  # dev-dependencies (the emulator among them).
  python3 - "$copy/Cargo.toml" <<'PY'
import sys
path = sys.argv[1]
out, skip = [], False
for line in open(path).read().split("\n"):
    if line.startswith("["):
        skip = line == "[dev-dependencies]"
    if skip:
        continue
    if line.startswith("members = "):
        line = 'members = [".", "core"]'
    if line.startswith("traffic-mirror-emulator"):
        continue
    out.append(line)
open(path, "w").write("\n".join(out))
PY
  for dependency in clap yaml-rust2 glob wasmi; do
    if grep -q "$dependency" "$copy/Cargo.toml" "$copy"/core/Cargo.toml; then
      log "the copy still depends on $dependency"; exit 1
    fi
  done
  again=$(build_module "$copy" "$copy/target")
  first=$(sha256 "$module") second=$(sha256 "$again")
  if [ "$first" != "$second" ]; then
    log "the module is not reproducible: $first here, $second from $copy"
    exit 1
  fi
  log "reproducible, and the same without the command: both builds are sha256:$first"
fi

log "building the command for this host"
host=$(rustc -vV | awk '/^host:/ {print $2}')
cargo build --quiet --locked --release -p traffic-mirror-cli

rm -rf "$out"
mkdir -p "$out"
cp "$module" "$out/traffic_mirror.wasm"
cp target/release/traffic-mirror "$out/traffic-mirror-$host"

log "packaging the OCI image layout"
layout=$(mktemp -d)
digest=$(bash scripts/package-oci.sh --wasm "$out/traffic_mirror.wasm" --out "$layout/oci" --tag "$version")
echo "$digest" >"$out/oci-manifest-digest"
# The layout as one tar: entries sorted, owner 0, mode 0644/0755, mtime 0.
python3 - "$layout/oci" "$out/traffic-mirror-$version-oci.tar" <<'EOF'
import os, sys, tarfile
root, dest = sys.argv[1:]
paths = []
for directory, dirs, files in os.walk(root):
    dirs.sort()
    for name in [*dirs, *files]:
        paths.append(os.path.join(directory, name))
with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tar:
    for path in sorted(paths):
        info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        if info.isfile():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
EOF
rm -rf "$layout"

(cd "$out" && for f in traffic_mirror.wasm "traffic-mirror-$host" "traffic-mirror-$version-oci.tar"; do
  printf '%s  %s\n' "$(sha256 "$f")" "$f"
done) >"$out/SHA256SUMS"
log "wrote $out:"
sed 's/^/  /' "$out/SHA256SUMS" >&2
log "OCI manifest digest (WasmPlugin spec.sha256): $digest"
