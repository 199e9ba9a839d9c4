#!/usr/bin/env bash
# The OCI image of the module, end to end, as Istio would meet it:
#   1. scripts/package-oci.sh writes an OCI layout and prints the manifest digest; the same
#      module gives the same digest, another module another digest;
#   2. skopeo reads the layout (the compat variant: one tar+gzip layer holding only
#      plugin.wasm, the variant annotation) and refuses a copy with a corrupted blob;
#   3. it is pushed to a local registry (Debian's docker-registry, on a free loopback port,
#      storage in a temp dir), the registry reports the printed digest;
#   4. it is pulled back over the registry API the way Istio's fetcher does (manifest, then
#      its last layer) and with skopeo, and plugin.wasm equals the built module byte for byte.
# Everything it starts it stops. Fails loudly; skips nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

module=target/wasm32-wasip1/release/traffic_mirror.wasm
passed=0
work=$(mktemp -d)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL oci: $*" >&2
  if [ -s "$work/registry.log" ]; then echo "--- registry log ---" >&2; tail -n 40 "$work/registry.log" >&2; fi
  echo "oci: $passed passed, 1 failed"
  exit 1
}
ok() { passed=$((passed + 1)); echo "ok   $*"; }

[ -f "$module" ] || fail "$module is missing: cargo build --target wasm32-wasip1 --release"
for tool in skopeo docker-registry curl python3 tar gzip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/setup.sh installs it)"
done

# skopeo's trust policy for this test only.
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$work/policy.json"
sk() { skopeo --policy "$work/policy.json" "$@"; }

# 1. Package; the digest is printed, reproducible, and depends on the module.
digest=$(scripts/package-oci.sh --out "$work/layout" --tag e2e 2>"$work/package.log") \
  || fail "package-oci.sh failed: $(cat "$work/package.log")"
[[ "$digest" =~ ^[0-9a-f]{64}$ ]] || fail "package-oci.sh printed '$digest', not a 64-hex digest"
index_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$work/layout/index.json")
[ "$index_digest" = "sha256:$digest" ] || fail "printed digest $digest, index.json says $index_digest"
again=$(scripts/package-oci.sh --out "$work/layout-again" --tag e2e 2>/dev/null)
[ "$again" = "$digest" ] || fail "not reproducible: $digest, then $again"
cp "$module" "$work/other.wasm" && printf '\0' >>"$work/other.wasm"
other=$(scripts/package-oci.sh --wasm "$work/other.wasm" --out "$work/layout-other" --tag e2e 2>/dev/null)
[ "$other" != "$digest" ] || fail "a different module gave the same digest $digest"
ok "package-oci.sh: OCI layout written, digest printed ($digest), reproducible, changes with the module"

# 2. skopeo reads the layout; the manifest is the compat variant; a corrupted blob is refused.
sk inspect "oci:$work/layout:e2e" >"$work/inspect.json" 2>"$work/skopeo.log" \
  || fail "skopeo inspect refused the layout: $(cat "$work/skopeo.log")"
sk inspect --raw "oci:$work/layout:e2e" >"$work/manifest.json"
python3 - "$work/manifest.json" "$digest" <<'EOF' || fail "the manifest is not the compat variant Istio expects"
import hashlib, json, sys
raw = open(sys.argv[1], "rb").read()
m = json.loads(raw)
assert hashlib.sha256(raw).hexdigest() == sys.argv[2], "manifest bytes do not hash to the printed digest"
assert m["schemaVersion"] == 2 and m["mediaType"] == "application/vnd.oci.image.manifest.v1+json", m
assert m["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json", m["config"]
assert len(m["layers"]) == 1, "compat variant: exactly one layer"
assert m["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", m["layers"][0]
assert m.get("annotations", {}).get("module.wasm.image/variant") == "compat", m.get("annotations")
EOF
layer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"].split(":")[1])' "$work/manifest.json")
listing=$(TZ=UTC tar -tvzf "$work/layout/blobs/sha256/$layer")
[ "$(tar -tzf "$work/layout/blobs/sha256/$layer")" = "plugin.wasm" ] || fail "the layer holds more than plugin.wasm: $listing"
[[ "$listing" == "-rw-r--r-- 0/0 "*" 1970-01-01 00:00 plugin.wasm" ]] || fail "plugin.wasm entry not normalized: $listing"
cp -r "$work/layout" "$work/corrupt"
python3 - "$work/corrupt/blobs/sha256/$layer" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0xFF
open(p, "wb").write(bytes(b))
EOF
if sk copy -q "oci:$work/corrupt:e2e" "dir:$work/corrupt-copy" >/dev/null 2>&1; then
  fail "skopeo copied a layout whose layer does not match its digest"
fi
ok "skopeo inspect accepts the layout: one tar+gzip layer with only plugin.wasm (0/0, 0644, mtime 0), compat annotation; a corrupted blob is refused"

# 3. A registry on a free loopback port; push; the registry reports the same digest.
# Not in a $(...) subshell: the parent must know the registry's pid to stop it.
port=
start_registry() {
  local p
  p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  mkdir -p "$work/registry"
  cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog: { disabled: true }
storage:
  filesystem: { rootdirectory: $work/registry }
http:
  addr: 127.0.0.1:$p
EOF
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$p/v2/" 2>/dev/null; then port=$p; return 0; fi
    kill -0 "$registry_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; registry_pid=
  return 1
}
for _ in 1 2 3; do start_registry && break; done  # a port taken in between: try another
[ -n "$port" ] || fail "docker-registry did not come up"
ref="127.0.0.1:$port/traffic-mirror:e2e"
sk copy -q --dest-tls-verify=false "oci:$work/layout:e2e" "docker://$ref" >"$work/skopeo.log" 2>&1 \
  || fail "skopeo copy to the registry failed: $(cat "$work/skopeo.log")"
accept='application/vnd.oci.image.manifest.v1+json'
registry_digest=$(curl -fsSI -H "Accept: $accept" "http://127.0.0.1:$port/v2/traffic-mirror/manifests/e2e" \
  | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}')
[ "$registry_digest" = "sha256:$digest" ] || fail "registry says $registry_digest, package-oci.sh printed $digest"
skopeo_digest=$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref")
[ "$skopeo_digest" = "sha256:$digest" ] || fail "skopeo inspect of the pushed image says $skopeo_digest"
ok "pushed to docker-registry on 127.0.0.1:$port; the registry's digest is the printed one"

# 4. Pull back. First as Istio's fetcher does: the manifest, then its last layer, a tar.gz
#    in which it looks for plugin.wasm. Then with skopeo into a fresh layout.
mkdir -p "$work/pulled"
curl -fsS -H "Accept: $accept" "http://127.0.0.1:$port/v2/traffic-mirror/manifests/e2e" -o "$work/pulled/manifest.json"
pulled_layer=$(python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["layers"][-1]; assert l["mediaType"]=="application/vnd.oci.image.layer.v1.tar+gzip", l; print(l["digest"])' "$work/pulled/manifest.json") \
  || fail "the pulled manifest's last layer is not tar+gzip"
curl -fsS "http://127.0.0.1:$port/v2/traffic-mirror/blobs/$pulled_layer" -o "$work/pulled/layer.tar.gz"
[ "sha256:$(sha256sum "$work/pulled/layer.tar.gz" | cut -d' ' -f1)" = "$pulled_layer" ] || fail "the pulled layer does not match its digest"
tar -xzf "$work/pulled/layer.tar.gz" -C "$work/pulled" plugin.wasm || fail "no plugin.wasm in the pulled layer"
cmp "$work/pulled/plugin.wasm" "$module" || fail "plugin.wasm from the registry differs from $module"
if cmp -s "$work/pulled/plugin.wasm" "$work/other.wasm"; then fail "byte comparison cannot tell modules apart"; fi
sk copy -q --src-tls-verify=false "docker://$ref" "oci:$work/pulled-layout:e2e" >"$work/skopeo.log" 2>&1 \
  || fail "skopeo pull failed: $(cat "$work/skopeo.log")"
mkdir -p "$work/pulled2"
pulled2_layer=$(python3 -c 'import json,sys
idx = json.load(open(sys.argv[1] + "/index.json"))
m = json.load(open(sys.argv[1] + "/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
print(m["layers"][-1]["digest"].split(":")[1])' "$work/pulled-layout")
tar -xzf "$work/pulled-layout/blobs/sha256/$pulled2_layer" -C "$work/pulled2" plugin.wasm
cmp "$work/pulled2/plugin.wasm" "$module" || fail "plugin.wasm pulled by skopeo differs from $module"
ok "pulled back (registry API as Istio's fetcher, and skopeo): plugin.wasm equals the built module byte for byte"

echo "oci: $passed passed, 0 failed"
