#!/usr/bin/env bash
# Packages traffic_mirror.wasm as an OCI image that Istio's WasmPlugin can pull, without a
# Docker engine: the "compat" variant of the Wasm image spec (one
# application/vnd.oci.image.layer.v1.tar+gzip layer holding plugin.wasm, manifest
# annotation module.wasm.image/variant=compat), written as an OCI image layout directory.
#
#   scripts/package-oci.sh [--wasm FILE] [--out DIR] [--tag TAG]
#
# Defaults: the release build of the module, target/oci/traffic-mirror (both in the
# repo), the crate's version. Prints the manifest digest (64 hex digits) on stdout: that
# is the value for WasmPlugin spec.sha256. Push the layout to a registry with skopeo:
#
#   skopeo copy oci:target/oci/traffic-mirror:0.1.0 docker://REGISTRY/traffic-mirror:0.1.0
#
# The image is reproducible: the same module always gives the same digest (fixed mtime,
# owner and mode in the tar, no name or time in the gzip header, no timestamps in JSON).
# Needs only bash and python3 (the tar and gzip are written by Python's own modules, so
# it runs the same on Linux and macOS, with GNU or BSD tools).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
abs() { case "$1" in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }

wasm=$PWD/target/wasm32-wasip1/release/traffic_mirror.wasm
out=$PWD/target/oci/traffic-mirror
tag=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)

while [ $# -gt 0 ]; do
  case "$1" in
    --wasm) wasm=$(abs "$2"); shift 2 ;;
    --out) out=$(abs "$2"); shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-oci: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "package-oci: $*" >&2; exit 1; }
[ -f "$wasm" ] || die "$wasm not found; build it first: cargo build --target wasm32-wasip1 --release"
[ "$(head -c 4 "$wasm" | od -An -tx1 | tr -d ' \n')" = "0061736d" ] || die "$wasm is not a wasm module"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "invalid tag: $tag"
if [ -e "$out" ]; then
  # Only ever replace a previous OCI layout, never some other directory.
  [ -f "$out/oci-layout" ] || [ -z "$(ls -A "$out")" ] || die "$out exists and is not an OCI layout"
  rm -rf "$out"
fi
mkdir -p "$out/blobs/sha256"

python3 - "$wasm" "$out" "$tag" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile

wasm, out, tag = sys.argv[1:]
blobs = os.path.join(out, "blobs", "sha256")

def add_blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

# The layer: a ustar holding only plugin.wasm (mode 0644, owner 0:0, mtime 0), then gzip
# with no name and no time in its header.
with open(wasm, "rb") as f:
    module = f.read()
tar_bytes = io.BytesIO()
with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    member = tarfile.TarInfo("plugin.wasm")
    member.size, member.mode, member.mtime = len(module), 0o644, 0
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    tar.addfile(member, io.BytesIO(module))
layer_tar = tar_bytes.getvalue()
gz_bytes = io.BytesIO()
with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=gz_bytes, mtime=0) as gz:
    gz.write(layer_tar)
diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **add_blob(gz_bytes.getvalue())}

# Image config (application/vnd.oci.image.config.v1+json): platform in Go's terms for a
# WASI module, the one layer's uncompressed digest, nothing to run.
config = {
    "architecture": "wasm",
    "os": "wasip1",
    "config": {},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}
config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **add_blob(canonical(config))}

manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config_desc,
    "layers": [layer],
    "annotations": {"module.wasm.image/variant": "compat"},
}
manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **add_blob(canonical(manifest))}

index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{**manifest_desc, "annotations": {"org.opencontainers.image.ref.name": tag}}],
}
with open(os.path.join(out, "index.json"), "wb") as f:
    f.write(canonical(index))
with open(os.path.join(out, "oci-layout"), "wb") as f:
    f.write(canonical({"imageLayoutVersion": "1.0.0"}))

# Every blob must be what its name says.
for name in os.listdir(blobs):
    with open(os.path.join(blobs, name), "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != name:
            sys.exit(f"package-oci: blob {name} does not match its digest")
EOF
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$out/index.json")

{
  echo "package-oci: wrote $out (OCI image layout, tag $tag) from $wasm ($(wc -c <"$wasm") bytes)"
  echo "package-oci: manifest digest $digest"
  echo "package-oci: push:  skopeo copy oci:$out:$tag docker://REGISTRY/traffic-mirror:$tag"
  echo "package-oci: WasmPlugin: url: oci://REGISTRY/traffic-mirror:$tag   sha256: ${digest#sha256:}"
} >&2
echo "${digest#sha256:}"
