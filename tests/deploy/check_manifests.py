#!/usr/bin/env python3
"""Checks every deployment artifact the project ships against the real validator of its
surface, and checks that each check can fail (a deliberately broken copy must be refused).

- Envoy configs (every envoy/**/*.yaml with static_resources): `envoy --mode validate`
  with the built module (container paths of the compose testbed mapped to the repo),
  the shipped failure_policy (never the deprecated fail_open) on every wasm filter, the
  configuration inline, the `target` stats tag, and circuit breakers on every mirror
  cluster with room for max_in_flight x workers.
- Istio WasmPlugins (envoy/istio/*.yaml): the CRD's openAPIV3Schema from
  tests/deploy/schemas/istio-wasmplugin-crd.yaml as JSON Schema (unknown fields refused, as
  kubectl's strict field validation does), its CEL rules evaluated by hand, the project's
  choices (failStrategy, oci:// url, phase, Istio cluster names), and each pluginConfig
  rendered as Istio renders it (compact JSON, keys sorted, in a StringValue) and loaded
  by the real module in `envoy --mode validate`.
- Istio routing for lanes (envoy/istio/*.yaml): VirtualService, DestinationRule and
  EnvoyFilter against their CRDs' schemas and CEL rules; every lane an edge assigns routed
  to its subset; a lane's fallback EnvoyFilter patching a lane route to the aggregate
  cluster [lane subset, main subset], its patches applied to the routes and clusters istiod
  builds and loaded in `envoy --mode validate`; every lane a hop follows routed.
- Istio proxy runtime (envoy/istio/proxy-runtime/): the Deployment patch, the Gateway
  patch and the mesh-wide Helm values each set the runtime value
  http.async_response_buffer_limit to the max_answer_bytes of the WasmPlugins they serve;
  the proxy config they carry validated against Istio's ProxyConfig schema
  (tests/deploy/schemas/istio-mesh-v1alpha1.gen.json), the patched Gateway against the
  Gateway API CRD's schema (CEL rules not evaluated), and the kubectl command in each
  file's comment naming the workload or gateway the WasmPlugin selects.
- docker-compose (envoy/docker-compose.yaml, envoy/docker-compose.sidecar.yaml):
  tests/deploy/schemas/compose-spec.json, every bind-mounted file exists, the images
  default to the official ones (the Envoy one of the version the tests run) and can be
  replaced through a variable, ports are published on loopback, every service has a
  health check, and the mounted Envoy config validates with the module at its mounted
  path, its clusters pointing at the services (or, in the sidecar, at the application
  in the namespace Envoy shares). tests/deploy/compose_testbeds.py starts them.

Run with the project's venv: .venv/bin/python tests/deploy/check_manifests.py
"""

import copy
import glob
import json
import os
import re
import sys

import jsonschema
import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
import envoylib as L  # noqa: E402
from envoylib import fail

SCHEMAS = os.path.join(L.REPO, "tests", "deploy", "schemas")
CRD_PATH = os.path.join(SCHEMAS, "istio-wasmplugin-crd.yaml")
# The routing resources shipped beside a lanes WasmPlugin: their CRD file and version.
ROUTING_CRDS = {
    "VirtualService": ("istio-virtualservice-crd.yaml", "v1"),
    "DestinationRule": ("istio-destinationrule-crd.yaml", "v1"),
    "EnvoyFilter": ("istio-envoyfilter-crd.yaml", "v1alpha3"),
}
COMPOSE_SCHEMA_PATH = os.path.join(SCHEMAS, "compose-spec.json")
ISTIO_DIR = os.path.join(L.REPO, "envoy", "istio")
COMPOSE_PATH = os.path.join(L.REPO, "envoy", "docker-compose.yaml")
COMPOSE_PATHS = [COMPOSE_PATH, os.path.join(L.REPO, "envoy", "docker-compose.sidecar.yaml")]
# The official images the compose files default to, and the variables that replace them.
COMPOSE_IMAGES = {"envoy": ("TRAFFIC_MIRROR_ENVOY_IMAGE", "envoyproxy/envoy:v{envoy}"),
                  "python": ("TRAFFIC_MIRROR_PYTHON_IMAGE", "python:3.12-alpine")}
PROXY_RUNTIME_DIR = os.path.join(ISTIO_DIR, "proxy-runtime")
MESH_SCHEMA_PATH = os.path.join(SCHEMAS, "istio-mesh-v1alpha1.gen.json")
GATEWAY_CRD_PATH = os.path.join(SCHEMAS, "gateway-api-gateways-crd.yaml")
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
ISTIO_CLUSTER = re.compile(r"^outbound\|([0-9]{1,5})\|[A-Za-z0-9_.-]*\|([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# The failure policy every shipped Envoy config sets, and the Istio failStrategy that
# istiod renders as it (docs/operations.md says why this one).
FAILURE_POLICY = "FAIL_OPEN"
FAIL_STRATEGY = "FAIL_OPEN"
# Istio's mapping of failStrategy to Envoy's failure_policy (Istio 1.25 and later).
ISTIO_FAILURE_POLICY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}
# How many workers each shipped Envoy config is run with, which its mirror clusters'
# circuit breakers must be sized for (the compose one is checked against its command).
WORKERS = {"envoy/envoy.yaml": 2, "envoy/sidecar.yaml": 2, "envoy/compose/envoy.yaml": 2,
           "envoy/compose/sidecar-envoy.yaml": 2, "envoy/lanes.yaml": 2, "envoy/grpc.yaml": 2,
           "envoy/compare.yaml": 2, "envoy/swimlanes.yaml": 2,
           "envoy/swimlanes/edge.yaml": 2, "envoy/swimlanes/sidecar-a.yaml": 1,
           "envoy/swimlanes/sidecar-b.yaml": 1, "envoy/swimlanes/sidecar-c.yaml": 1}
# Shipped Envoy configs without the plugin, and why.
WITHOUT_PLUGIN = {"envoy/swimlanes/sidecar-c.yaml": "c calls no service: its sidecar has only the inbound listener"}
# The swim-lane testbed: several Envoys (an edge, a sidecar per instance) and the
# applications, in one compose file.
SWIMLANES_COMPOSE_PATH = os.path.join(L.REPO, "envoy", "docker-compose.swimlanes.yaml")
# Its application image: built from swimlanes/Dockerfile unless the variable names one.
SWIMLANES_APP_IMAGE = "${TRAFFIC_MIRROR_APP_IMAGE:-traffic-mirror-swimlanes/app:otel-0.66b1}"
# Envoy's default circuit breaker thresholds.
ENVOY_DEFAULT_THRESHOLD = 1024
DEFAULT_MAX_IN_FLIGHT = 1000
# The runtime value that bounds the answer Envoy buffers for each call, and the plugin's
# default max_answer_bytes it must equal.
ANSWER_BUFFER_KEY = "http.async_response_buffer_limit"
DEFAULT_MAX_ANSWER_BYTES = 65536


# ---------------------------------------------------------------------------------------
# Envoy configs


def shipped_envoy_configs():
    paths = []
    for path in sorted(glob.glob(os.path.join(L.REPO, "envoy", "**", "*.yaml"), recursive=True)):
        try:
            docs = L.load_yaml_all(path)
        except yaml.YAMLError as exc:
            fail(f"{os.path.relpath(path, L.REPO)} is not valid YAML: {exc}")
        if len(docs) == 1 and isinstance(docs[0], dict) and "static_resources" in docs[0]:
            paths.append(path)
    return paths


def envoy_config_policy_errors(cfg, workers):
    """What every shipped Envoy config must carry, beyond Envoy's own validation."""
    errors = []
    filters = L.wasm_filters(cfg)
    if not filters:
        errors.append("no envoy.filters.http.wasm filter")
    in_flight = {}  # mirror cluster -> copies the plugin may have in flight on it
    for where, hf in filters:
        conf = hf["typed_config"]["config"]
        if "fail_open" in conf:
            errors.append(f"{where}: sets the deprecated fail_open (use failure_policy)")
        if conf.get("failure_policy") != FAILURE_POLICY:
            errors.append(f"{where}: failure_policy is {conf.get('failure_policy')!r}, not {FAILURE_POLICY}")
        if conf.get("vm_config", {}).get("runtime") != "envoy.wasm.runtime.v8":
            errors.append(f"{where}: runtime is not envoy.wasm.runtime.v8")
        try:
            pc = L.plugin_config_json(hf)
        except (KeyError, ValueError) as exc:
            errors.append(f"{where}: plugin configuration is not inline JSON: {exc}")
            continue
        clusters = {c["name"] for c in cfg["static_resources"].get("clusters", [])}
        for t in pc.get("targets", []):
            if t.get("cluster") not in clusters:
                errors.append(f"{where}: target {t.get('name')} mirrors to cluster {t.get('cluster')!r}, which the config does not define")
            in_flight[t.get("cluster")] = in_flight.get(t.get("cluster"), 0) + t.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT) * workers
        if pc.get("targets"):
            want = pc.get("max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES)
            have = static_runtime(cfg).get(ANSWER_BUFFER_KEY)
            if have is None or int(have) != want:
                errors.append(f"{where}: layered_runtime sets {ANSWER_BUFFER_KEY} to {have!r}, not the plugin's max_answer_bytes ({want})")
    errors += circuit_breaker_errors(cfg, in_flight)
    tags = cfg.get("stats_config", {}).get("stats_tags", [])
    for tag in (L.TARGET_TAG, L.LANE_TAG, L.GRPC_STATUS_TAG, L.JSON_PATH_TAG):
        if tag not in tags:
            errors.append(f"stats_config.stats_tags lacks {tag}")
    return errors


def static_runtime(cfg):
    """The runtime values the static layers of layered_runtime set (a later layer wins;
    nested keys joined with dots, as Envoy flattens them)."""
    values = {}

    def flatten(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}{k}.", v)
        else:
            values[prefix[:-1]] = value

    for layer in cfg.get("layered_runtime", {}).get("layers", []):
        if "static_layer" in layer:
            flatten("", layer["static_layer"])
    return values


def circuit_breaker_errors(cfg, in_flight):
    """Every mirror cluster must admit the copies the plugin may have in flight on it, or
    Envoy answers the excess itself (a 503 that looks like a mirror error)."""
    errors = []
    for cl in cfg["static_resources"].get("clusters", []):
        need = in_flight.get(cl["name"])
        if need is None:
            continue
        thresholds = [t for t in cl.get("circuit_breakers", {}).get("thresholds", [])
                      if t.get("priority", "DEFAULT") == "DEFAULT"]
        limits = thresholds[0] if thresholds else {}
        for key in ("max_connections", "max_pending_requests", "max_requests"):
            have = limits.get(key, ENVOY_DEFAULT_THRESHOLD)
            if have < need:
                errors.append(f"cluster {cl['name']}: circuit_breakers {key} is {have}, below the {need} copies max_in_flight x workers may have in flight")
    return errors


def check_envoy_configs():
    L.require_module()
    paths = shipped_envoy_configs()
    names = [os.path.relpath(p, L.REPO) for p in paths]
    for must in ("envoy/envoy.yaml", "envoy/sidecar.yaml", "envoy/compose/envoy.yaml", "envoy/lanes.yaml",
                 "envoy/grpc.yaml", "envoy/compare.yaml", "envoy/swimlanes.yaml"):
        if must not in names:
            fail(f"{must} is missing (found {names})")
    # The compose testbeds' configs name the module by its path in the container.
    mounted = {}
    for compose_path in COMPOSE_PATHS:
        compose = L.load_yaml(compose_path)
        mounts = L.compose_mounts(compose, os.path.dirname(compose_path))
        config = os.path.relpath(mounts[envoy_cmd_config(compose)], L.REPO)
        mounted[config] = mounts
        cmd = compose["services"]["envoy"].get("command", [])
        if "--concurrency" not in cmd or int(cmd[cmd.index("--concurrency") + 1]) != WORKERS[config]:
            fail(f"the compose Envoy runs {cmd}, not the {WORKERS[config]} workers {config} is sized for")
    # The swim-lane testbed's Envoys all mount the module at the same path.
    swimlanes = L.load_yaml(SWIMLANES_COMPOSE_PATH)
    swimlane_mounts = all_mounts(swimlanes, os.path.dirname(SWIMLANES_COMPOSE_PATH))
    for name in names:
        if name.startswith("envoy/swimlanes/"):
            mounted[name] = swimlane_mounts
    for path, name in zip(paths, names):
        cfg = L.load_yaml(path)
        if name not in WORKERS:
            fail(f"{name}: say in WORKERS how many workers it runs with")
        if name in WITHOUT_PLUGIN:
            if L.wasm_filters(cfg):
                fail(f"{name}: listed in WITHOUT_PLUGIN, yet it has the plugin")
            errors = []
        else:
            errors = envoy_config_policy_errors(cfg, WORKERS[name])
        if errors:
            fail(f"{name}: " + "; ".join(errors))
        if name in mounted:
            cfg = L.map_module_paths(cfg, mounted[name])
        ok, out = L.validate(cfg)
        if not ok:
            fail(f"{name}: envoy --mode validate failed:\n{out}")
        print(f"     {name}: envoy --mode validate OK")


def check_envoy_validation_can_fail():
    """A shipped config with a bad plugin configuration, fail_open, another failure policy,
    small circuit breakers or no stats tag is refused."""
    cfg = L.load_yaml(os.path.join(L.REPO, "envoy", "envoy.yaml"))
    bad = copy.deepcopy(cfg)
    _, hf = L.wasm_filters(bad)[0]
    pc = L.plugin_config_json(hf)
    pc["targets"][0]["percent"] = 150
    hf["typed_config"]["config"]["configuration"]["value"] = json.dumps(pc)
    ok, out = L.validate(bad)
    if ok or f"{L.INVALID_CONFIG_LINE} targets[0].percent" not in out:
        fail(f"envoy --mode validate accepted percent 150 (ok={ok}):\n{out}")
    workers = WORKERS["envoy/envoy.yaml"]
    deprecated = copy.deepcopy(cfg)
    L.wasm_filters(deprecated)[0][1]["typed_config"]["config"]["fail_open"] = True
    if not any("fail_open" in e for e in envoy_config_policy_errors(deprecated, workers)):
        fail("a config with fail_open passed the policy check")
    other_policy = copy.deepcopy(cfg)
    L.wasm_filters(other_policy)[0][1]["typed_config"]["config"]["failure_policy"] = "FAIL_CLOSED"
    if not any("failure_policy" in e for e in envoy_config_policy_errors(other_policy, workers)):
        fail("a config with another failure_policy passed the policy check")
    no_breakers = copy.deepcopy(cfg)
    for cl in no_breakers["static_resources"]["clusters"]:
        cl.pop("circuit_breakers", None)
    if not any("circuit_breakers max_requests is 1024" in e for e in envoy_config_policy_errors(no_breakers, workers)):
        fail("a config whose mirror cluster has Envoy's default circuit breakers passed the policy check")
    no_runtime = copy.deepcopy(cfg)
    no_runtime.pop("layered_runtime")
    if not any(ANSWER_BUFFER_KEY in e for e in envoy_config_policy_errors(no_runtime, workers)):
        fail(f"a config without the runtime value {ANSWER_BUFFER_KEY} passed the policy check")
    no_tag = copy.deepcopy(cfg)
    no_tag.pop("stats_config")
    if not any("stats_tags" in e for e in envoy_config_policy_errors(no_tag, workers)):
        fail("a config without the target stats tag passed the policy check")
    unmapped = L.load_yaml(os.path.join(L.REPO, "envoy", "compose", "envoy.yaml"))
    ok, out = L.validate(unmapped)
    if ok:
        fail("the compose Envoy config validated without its module mounted (paths not mapped)")


# ---------------------------------------------------------------------------------------
# Istio WasmPlugin: the CRD's structural schema as JSON Schema, plus its CEL rules


def crd_version_schema(path=None, kind="WasmPlugin", version="v1alpha1"):
    """A CRD's group and the openAPIV3Schema of one of the versions it serves."""
    path = path or CRD_PATH
    crd = L.load_yaml(path)
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != kind:
        fail(f"{path} is not the {kind} CRD")
    group = crd["spec"]["group"]
    versions = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in versions:
        fail(f"the {kind} CRD serves no {version} (serves {sorted(versions)})")
    return group, versions[version]["schema"]["openAPIV3Schema"]


def to_json_schema(node):
    """Kubernetes structural schema -> JSON Schema. Unknown fields are refused (kubectl
    --validate=strict, the default, refuses them; the API server would drop them)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k != "description"}
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    if node.get("format") == "int32":
        out.setdefault("minimum", -(2**31))
        out.setdefault("maximum", 2**31 - 1)
    if node.get("format") == "int64":
        out.setdefault("minimum", -(2**63))
        out.setdefault("maximum", 2**63 - 1)
    return out


def full_object_schema(group, version_schema, kind="WasmPlugin", version="v1alpha1"):
    schema = to_json_schema(version_schema)
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN.pattern},
            "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL.pattern},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return schema


def cel_is_url(s):
    """k8s CEL isURL()/url().getScheme(): Go's url.ParseRequestURI accepts an absolute URI
    (scheme:..., with a numeric port if any) or an absolute path. Returns (ok, scheme)."""
    if not isinstance(s, str) or " " in s or any(ord(c) < 0x20 or c == "\x7f" for c in s):
        return False, ""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", s)
    if m:
        rest = m.group(2)
        if rest.startswith("//"):
            hostport = re.split(r"[/?#]", rest[2:], maxsplit=1)[0].rsplit("@", 1)[-1]
            if not hostport.startswith("[") and ":" in hostport:
                port = hostport.rsplit(":", 1)[1]
                if port and not port.isdigit():
                    return False, ""
        return True, m.group(1).lower()
    return (True, "") if s.startswith("/") else (False, "")


def cel_url_rule(s):
    schemes = ["", "http", "https", "oci", "file"]
    ok, scheme = cel_is_url(s)
    if ok:
        return scheme in schemes
    ok, scheme = cel_is_url("http://" + s)
    return ok and scheme in schemes


# Each CEL rule of the CRD, by its text (whitespace collapsed), evaluated in Python. A rule
# the CRD gains that is not here fails the check instead of being skipped.
CEL_RULES = {
    '!self.contains("*")': lambda s: "*" not in s,
    'self.all(key, !key.contains("*"))': lambda s: all("*" not in k for k in s),
    "self.all(key, key.size() != 0)": lambda s: all(len(k) != 0 for k in s),
    "self.size() == 0": lambda s: len(s) == 0,
    'isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])': cel_url_rule,
    '(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)':
        lambda s: s.get("valueFrom", "") != "HOST" or "value" not in s,
    "duration(self) >= duration('1ms')": lambda s: go_duration(s) >= 0.001,
    "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda s: ("selector" in s) + ("targetRef" in s) + ("targetRefs" in s) <= 1,
    "(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda s: ("workloadSelector" in s) + ("targetRefs" in s) <= 1,
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)':
        lambda s: ("waypoint" in s) == (s.get("context") == "WAYPOINT"),
    "0 < self && self <= 65535": lambda s: 0 < s <= 65535,
}


def go_duration(text):
    """Seconds in a Go duration string (CEL's duration()): "1.5s", "100ms", "1h2m"; -1 if
    it is not one."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)", text) if isinstance(text, str) else []
    if not parts or "".join(n + u for n, u in parts) != text:
        return -1
    return sum(float(n) * units[u] for n, u in parts)


def cel_errors(schema, value, path):
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        text = " ".join(rule["rule"].split())
        fn = CEL_RULES.get(text)
        if fn is None:
            errors.append(f"{path}: CEL rule not evaluated by this test (add it to CEL_RULES): {text}")
        elif not fn(value):
            errors.append(f"{path}: {rule.get('message', text)}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errors += cel_errors(props[k], v, f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += cel_errors(schema["additionalProperties"], v, f"{path}[{k}]")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += cel_errors(schema["items"], v, f"{path}[{i}]")
        # x-kubernetes-list-type: map - the keys identify items, so they must be unique.
        if schema.get("x-kubernetes-list-type") in ("map", "set"):
            keys = schema.get("x-kubernetes-list-map-keys")
            seen = set()
            for v in value:
                k = json.dumps([v.get(x) for x in keys] if keys else v, sort_keys=True)
                if k in seen:
                    errors.append(f"{path}: duplicate entries for {keys or 'set item'}: {k}")
                seen.add(k)
    return errors


def project_errors(doc):
    """This project's choices for its WasmPlugins (docs/istio.md explains each)."""
    spec = doc.get("spec", {})
    errors = []
    if spec.get("failStrategy") != FAIL_STRATEGY:
        errors.append(f"spec.failStrategy must be {FAIL_STRATEGY}")
    if not str(spec.get("url", "")).startswith("oci://"):
        errors.append("spec.url must be an oci:// image")
    if spec.get("imagePullPolicy") not in ("IfNotPresent", "Always"):
        errors.append("spec.imagePullPolicy must be chosen (IfNotPresent or Always)")
    if spec.get("phase") != "STATS":
        errors.append("spec.phase must be STATS (after authorization)")
    if "priority" in spec:
        errors.append("spec.priority must be left unset (Istio sorts an unset priority after every set one: the mirror runs last in its phase)")
    if spec.get("type", "HTTP") != "HTTP":
        errors.append("spec.type must be HTTP")
    if "selector" not in spec and "targetRefs" not in spec:
        errors.append("spec must select workloads (selector or targetRefs)")
    for i, ref in enumerate(spec.get("targetRefs", [])):
        kinds = {("gateway.networking.k8s.io", "Gateway"), ("gateway.networking.k8s.io", "GatewayClass"),
                 ("", "Service"), ("core", "Service"), ("networking.istio.io", "ServiceEntry")}
        if (ref.get("group", ""), ref.get("kind")) not in kinds:
            errors.append(f"spec.targetRefs[{i}]: Istio does not attach WasmPlugins to {ref.get('group', '')}/{ref.get('kind')}")
    pc = spec.get("pluginConfig")
    if not isinstance(pc, dict) or not pc:
        errors.append("spec.pluginConfig must hold the filter's configuration (Istio sends none when empty)")
        return errors
    for i, t in enumerate(pc.get("targets", []) if isinstance(pc.get("targets"), list) else []):
        m = ISTIO_CLUSTER.match(str(t.get("cluster", ""))) if isinstance(t, dict) else None
        if not m or not (1 <= int(m.group(1)) <= 65535):
            errors.append(f"spec.pluginConfig.targets[{i}].cluster: {t.get('cluster')!r} is not an Istio cluster name outbound|PORT||HOST")
    return errors


def wasmplugin_errors(doc, validator, version_schema):
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if not errors:  # CEL runs on values the schema has already accepted, as in the API server
        errors += cel_errors(version_schema, doc, "")
    return errors + project_errors(doc)


def protojson(value):
    """pluginConfig as Istio hands it to the plugin: a google.protobuf.Struct (every number a
    double) marshalled to compact JSON with sorted keys, integral doubles written without a
    fraction, and <, >, &, U+2028, U+2029 escaped as Go's encoder writes them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        x = float(value)
        if x.is_integer() and abs(x) < 1e21:
            return str(int(x))
        return repr(x)
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(protojson(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(go_string(str(k)) + ":" + protojson(value[k]) for k in sorted(value)) + "}"
    raise TypeError(f"not representable in a Struct: {value!r}")


def go_string(text):
    """A JSON string as Go's encoding/json writes it: UTF-8 kept, HTML characters escaped."""
    out = json.dumps(text, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(ch, esc)
    return out


def istio_envoy_config(doc):
    """An Envoy config holding the plugin as istiod renders a WasmPlugin (wasm filter named
    NAMESPACE.NAME, root_id = pluginName, v8, Istio's VM env, configuration = StringValue of
    the Struct's JSON), with the module file in place of the OCI image, and a cluster for each
    outbound|PORT||HOST the targets name."""
    spec = doc["spec"]
    meta = doc["metadata"]
    env = {"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"}
    if spec.get("imagePullPolicy"):
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    clusters = []
    for t in spec["pluginConfig"].get("targets", []):
        m = ISTIO_CLUSTER.match(str(t.get("cluster", "")))
        if m and t["cluster"] not in [c["name"] for c in clusters]:
            clusters.append({
                "name": t["cluster"], "type": "STRICT_DNS", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": t["cluster"], "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": m.group(2), "port_value": int(m.group(1))}}}}]}]},
            })
    plugin = {
        "name": f"{meta.get('namespace', 'default')}.{meta['name']}",
        "root_id": spec.get("pluginName", ""),
        "failure_policy": ISTIO_FAILURE_POLICY[spec.get("failStrategy", "FAIL_CLOSE")],
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": L.MODULE}},
            "environment_variables": {"key_values": env},
        },
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": protojson(spec["pluginConfig"])},
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "virtualInbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inbound",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                        "http_filters": [
                            {"name": L.WASM_FILTER, "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": plugin}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }


def istio_documents():
    docs = []
    for path in sorted(glob.glob(os.path.join(ISTIO_DIR, "*.yaml"))):
        for i, doc in enumerate(L.load_yaml_all(path)):
            docs.append((f"{os.path.relpath(path, L.REPO)}#{i}", doc))
    return docs


def check_istio_wasmplugins():
    L.require_module()
    group, version_schema = crd_version_schema()
    schema = full_object_schema(group, version_schema)
    validator = jsonschema.Draft7Validator(schema)
    docs = istio_documents()
    unchecked = [w for w, d in docs if d.get("kind") not in ("WasmPlugin", *ROUTING_CRDS)]
    if unchecked:
        fail(f"no check covers {unchecked}: add one to tests/deploy/check_manifests.py")
    plugins = [(where, d) for where, d in docs if d.get("kind") == "WasmPlugin"]
    if not any("selector" in d.get("spec", {}) for _, d in plugins):
        fail("no sidecar WasmPlugin (with spec.selector) in envoy/istio/")
    if not any("targetRefs" in d.get("spec", {}) for _, d in plugins):
        fail("no gateway WasmPlugin (with spec.targetRefs) in envoy/istio/")
    for where, doc in plugins:
        errors = wasmplugin_errors(doc, validator, version_schema)
        if errors:
            fail(f"{where}: " + "; ".join(errors))
        ok, out = L.validate(istio_envoy_config(doc))
        if not ok or L.INVALID_CONFIG_LINE in out:
            fail(f"{where}: the module refuses its pluginConfig in envoy --mode validate:\n{out}")
        print(f"     {where} ({doc['metadata']['name']}): CRD schema + CEL OK; pluginConfig loads in Envoy")


def check_istio_validation_can_fail():
    """Each broken copy of the sidecar manifest must be refused, for the reason given."""
    group, version_schema = crd_version_schema()
    validator = jsonschema.Draft7Validator(full_object_schema(group, version_schema))
    base = next(d for w, d in istio_documents() if d.get("kind") == "WasmPlugin" and "selector" in d["spec"]
                and "targets" in d["spec"].get("pluginConfig", {}))

    def cross_namespace_ref(spec):
        del spec["selector"]
        spec["targetRefs"] = [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw", "namespace": "other"}]

    def mutate(fn):
        d = copy.deepcopy(base)
        fn(d["spec"])
        return d

    cases = [
        ("enum", "'FAIL_SOMETIMES' is not one of", mutate(lambda s: s.update(failStrategy="FAIL_SOMETIMES"))),
        ("unknown field", "Additional properties", mutate(lambda s: s.update(pluginconfig={}))),
        ("required", "'url' is a required property", mutate(lambda s: s.pop("url"))),
        ("pattern", "'sha256:abc' does not match", mutate(lambda s: s.update(sha256="sha256:abc"))),
        ("int32", "greater than the maximum of 2147483647", mutate(lambda s: s.update(priority=2**31))),
        ("project: priority", "must be left unset", mutate(lambda s: s.update(priority=-100))),
        ("CEL one-of", "only one of targetRefs or selector", mutate(lambda s: s.update(
            targetRefs=[{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]))),
        ("CEL url scheme", "url must have schema", mutate(lambda s: s.update(url="ftp://registry/x:1"))),
        ("CEL label key", "wildcard not allowed in label key", mutate(lambda s: s["selector"]["matchLabels"].update({"app*": "x"}))),
        ("CEL cross-namespace", "cross namespace", mutate(cross_namespace_ref)),
        ("CEL env", "value may only be set", mutate(lambda s: s.update(vmConfig={"env": [{"name": "A", "valueFrom": "HOST", "value": "x"}]}))),
        ("list-map keys", "duplicate entries", mutate(lambda s: s.update(match=[{"mode": "SERVER", "ports": [{"number": 80}, {"number": 80}]}]))),
        ("project: fail strategy", f"must be {FAIL_STRATEGY}", mutate(lambda s: s.update(
            failStrategy="FAIL_CLOSE" if FAIL_STRATEGY != "FAIL_CLOSE" else "FAIL_OPEN"))),
        ("project: Istio cluster name", "outbound|PORT||HOST", mutate(lambda s: s["pluginConfig"]["targets"][0].update(cluster="staging"))),
    ]
    for name, expect, doc in cases:
        errors = wasmplugin_errors(doc, validator, version_schema)
        if not any(expect in e for e in errors):
            fail(f"broken manifest ({name}) was not refused for {expect!r}; errors: {errors}")
    # And the module must refuse a pluginConfig that is wrong for the filter, though the
    # CRD accepts any object there.
    bad = mutate(lambda s: s["pluginConfig"]["targets"][0].update(percent=150))
    if wasmplugin_errors(bad, validator, version_schema):
        fail("the CRD schema was expected to accept any pluginConfig")
    ok, out = L.validate(istio_envoy_config(bad))
    if ok or f"{L.INVALID_CONFIG_LINE} targets[0].percent" not in out:
        fail(f"envoy --mode validate accepted a pluginConfig with percent 150 (ok={ok}):\n{out}")
    if protojson({"c": [True, None, "x<&>é"], "b": 0.5, "a": 5000}) != '{"a":5000,"b":0.5,"c":[true,null,"x\\u003c\\u0026\\u003eé"]}':
        fail(f"protojson rendering is off: {protojson({'c': [True, None, 'x<&>é'], 'b': 0.5, 'a': 5000})}")


# ---------------------------------------------------------------------------------------
# Istio routing for lanes: VirtualService, DestinationRule, and the EnvoyFilter of a lane's
# fallback to main


def routing_validators():
    out = {}
    for kind, (file, version) in ROUTING_CRDS.items():
        group, schema = crd_version_schema(os.path.join(SCHEMAS, file), kind, version)
        validator = jsonschema.Draft7Validator(full_object_schema(group, schema, kind, version))
        out[kind] = (validator, schema)
    return out


def routing_errors(doc, validators):
    validator, version_schema = validators[doc["kind"]]
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if not errors:
        errors += cel_errors(version_schema, doc, "")
    return errors


def lane_routing_errors(plugin, vs, dr):
    """The routes must send every lane of the plugin to the subset of that name, and
    everyone else to the default lane's; the DestinationRule must define those subsets."""
    lanes = plugin["spec"]["pluginConfig"]["lanes"]
    header = lanes["header"].lower()
    split = [entry["lane"] for entry in lanes["split"]]
    default = lanes.get("default")
    errors = []
    subsets = {sub["name"] for sub in dr["spec"].get("subsets", [])}
    for lane in split + ([default] if default else []):
        if lane not in subsets:
            errors.append(f"DestinationRule {dr['metadata']['name']} has no subset {lane}")
    routes = vs["spec"].get("http", [])
    hosts = {d["destination"]["host"] for r in routes for d in r.get("route", [])}
    if hosts != {dr["spec"]["host"]}:
        errors.append(f"the routes go to {sorted(hosts)}, the DestinationRule is for {dr['spec']['host']}")
    for lane in split:
        matching = [r for r in routes
                    if any(m.get("headers", {}).get(header) == {"exact": lane} for m in r.get("match", []))]
        if not matching or {d["destination"].get("subset") for d in matching[0]["route"]} != {lane}:
            errors.append(f"no route sends {header}: {lane} to subset {lane}")
    rest = [r for r in routes if not r.get("match")]
    if default and (not rest or {d["destination"].get("subset") for d in rest[0]["route"]} != {default}):
        errors.append(f"no last route sends everyone else to subset {default}")
    return errors


def istio_files():
    """{file: its documents} of envoy/istio/*.yaml."""
    by_file = {}
    for where, doc in istio_documents():
        by_file.setdefault(where.split("#")[0], []).append(doc)
    return by_file


def lanes_manifests():
    """(file, plugin, VirtualService, DestinationRule) for each file with a lanes plugin
    that assigns lanes (a hop, which follows them, is checked by follow_errors)."""
    found = []
    for file, docs in istio_files().items():
        plugins = [d for d in docs if d.get("kind") == "WasmPlugin"
                   and "lanes" in d["spec"].get("pluginConfig", {}) and not hop_plugin(d)]
        if not plugins:
            continue
        kinds = {d.get("kind"): d for d in docs}
        if "VirtualService" not in kinds or "DestinationRule" not in kinds:
            fail(f"{file}: a lanes WasmPlugin without its VirtualService and DestinationRule")
        found.append((file, plugins[0], kinds["VirtualService"], kinds["DestinationRule"]))
    return found


def hop_plugin(doc):
    return "follow" in doc.get("spec", {}).get("pluginConfig", {}).get("lanes", {})


def follow_errors(plugin, virtual_services):
    """A hop runs on the calls the application makes (a sidecar cannot link them to the
    request it received), and follows only lanes that a VirtualService routes."""
    lanes = plugin["spec"]["pluginConfig"]["lanes"]
    header = lanes["header"].lower()
    errors = []
    if [m.get("mode") for m in plugin["spec"].get("match", [])] != ["CLIENT"]:
        errors.append("a hop must select the calls the application makes, match: [{mode: CLIENT}], "
                      f"not {plugin['spec'].get('match')}")
    routed = {m["headers"][header]["exact"] for vs in virtual_services for r in vs["spec"].get("http", [])
              for m in r.get("match", []) if "exact" in m.get("headers", {}).get(header, {})}
    for lane in lanes["follow"]:
        if lane not in routed:
            errors.append(f"it follows lane {lane}, which no VirtualService routes ({header}: exact {lane})")
    return errors


def fallback_errors(ef, vs, dr):
    """Each route an EnvoyFilter beside lane routing patches must be a lane route of the
    VirtualService, in the virtual host Istio names HOST:PORT, sent to a cluster the
    EnvoyFilter adds: the aggregate of the lane's subset, then the default route's."""
    host = dr["spec"]["host"]
    http = vs["spec"].get("http", [])
    routes = {r.get("name"): r for r in http if r.get("name")}
    default = next((r for r in http if not r.get("match")), None)
    subsets = {sub["name"] for sub in dr["spec"].get("subsets", [])}
    patches = ef["spec"].get("configPatches", [])
    added = {p["patch"]["value"].get("name"): p["patch"]["value"] for p in patches
             if p.get("applyTo") == "CLUSTER" and p.get("patch", {}).get("operation") == "ADD"}
    errors = []
    route_patches = [(i, p) for i, p in enumerate(patches) if p.get("applyTo") == "HTTP_ROUTE"]
    if not route_patches:
        errors.append("patches no route")
    for i, p in route_patches:
        where = f"configPatches[{i}]"
        match = p.get("match", {})
        rc = match.get("routeConfiguration", {})
        port = rc.get("portNumber")
        vhost = rc.get("vhost", {})
        if match.get("context") != "SIDECAR_OUTBOUND":
            errors.append(f"{where}: context {match.get('context')!r}, not SIDECAR_OUTBOUND (the callers' sidecars)")
        if vhost.get("name") != f"{host}:{port}":
            errors.append(f"{where}: matches virtual host {vhost.get('name')!r}; Istio names the one of {host} "
                          f"on port {port} {host}:{port}")
        route = routes.get(vhost.get("route", {}).get("name"))
        if route is None or not route.get("match") or default is None:
            errors.append(f"{where}: matches route {vhost.get('route', {}).get('name')!r}, which is no lane route "
                          f"of VirtualService {vs['metadata']['name']} (it names {sorted(routes)})")
            continue
        if p.get("patch", {}).get("operation") != "MERGE":
            errors.append(f"{where}: operation {p.get('patch', {}).get('operation')}, not MERGE")
        target = p.get("patch", {}).get("value", {}).get("route", {}).get("cluster")
        if target not in added:
            errors.append(f"{where}: sends the route to {target!r}, which this EnvoyFilter does not add")
            continue
        lane_subset = route["route"][0]["destination"].get("subset")
        main_subset = default["route"][0]["destination"].get("subset")
        want = [f"outbound|{port}|{sub}|{host}" for sub in (lane_subset, main_subset)]
        cluster_type = added[target].get("cluster_type", {})
        have = cluster_type.get("typed_config", {}).get("clusters")
        if cluster_type.get("name") != "envoy.clusters.aggregate" or have != want:
            errors.append(f"{where}: cluster {target} must be the aggregate of {want} (the lane's subset, then "
                          f"the default route's), not {cluster_type.get('name')} of {have}")
        for sub in (lane_subset, main_subset):
            if sub not in subsets:
                errors.append(f"DestinationRule {dr['metadata']['name']} has no subset {sub}")
    return errors


def proto_merge(into, value):
    """An EnvoyFilter MERGE on JSON: messages merged field by field, repeated fields
    appended, anything else replaced."""
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            proto_merge(into[k], v)
        elif isinstance(v, list) and isinstance(into.get(k), list):
            into[k] = into[k] + copy.deepcopy(v)
        else:
            into[k] = copy.deepcopy(v)


def fallback_envoy_config(ef, vs, dr):
    """The part of a caller's sidecar the EnvoyFilter patches, as istiod builds it from the
    VirtualService and DestinationRule (a route named after each http route, a cluster
    outbound|PORT|SUBSET|HOST for each subset, here with one static endpoint), with the
    EnvoyFilter's CLUSTER ADD and HTTP_ROUTE MERGE patches applied."""
    host = dr["spec"]["host"]
    patches = ef["spec"].get("configPatches", [])
    port = next((p["match"]["routeConfiguration"].get("portNumber") for p in patches
                 if p.get("applyTo") == "HTTP_ROUTE"), 80)
    clusters = [{
        "name": f"outbound|{port}|{sub['name']}|{host}", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": f"outbound|{port}|{sub['name']}|{host}", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    } for sub in dr["spec"].get("subsets", [])]
    routes = []
    for r in vs["spec"].get("http", []):
        match = {"prefix": "/"}
        for m in r.get("match", []):
            for name, value in m.get("headers", {}).items():
                match.setdefault("headers", []).append({"name": name, "string_match": value})
        dest = r["route"][0]["destination"]
        routes.append({"name": r.get("name", ""), "match": match, "route": {
            "cluster": f"outbound|{port}|{dest.get('subset', '')}|{dest['host']}",
            "retry_policy": {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                             "num_retries": 2}}})
    vhost = {"name": f"{host}:{port}", "domains": ["*"], "routes": routes}
    for p in patches:
        if p.get("applyTo") == "CLUSTER" and p["patch"].get("operation") == "ADD":
            clusters.append(copy.deepcopy(p["patch"]["value"]))
        elif p.get("applyTo") == "HTTP_ROUTE" and p["patch"].get("operation") == "MERGE":
            name = p["match"]["routeConfiguration"].get("vhost", {}).get("route", {}).get("name")
            for r in routes:
                if r["name"] == name:
                    proto_merge(r, p["patch"]["value"])
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": f"0.0.0.0_{port}",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "outbound",
                        "route_config": {"name": str(port), "virtual_hosts": [vhost]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }


def check_istio_routing():
    validators = routing_validators()
    checked = 0
    for where, doc in istio_documents():
        if doc.get("kind") in validators:
            errors = routing_errors(doc, validators)
            if errors:
                fail(f"{where}: " + "; ".join(errors))
            checked += 1
    manifests = lanes_manifests()
    if not manifests:
        fail("no lanes WasmPlugin with a VirtualService and a DestinationRule in envoy/istio/")
    files = istio_files()
    for file, plugin, vs, dr in manifests:
        errors = lane_routing_errors(plugin, vs, dr)
        if errors:
            fail(f"{file}: " + "; ".join(errors))
        print(f"     {file}: {vs['kind']} and {dr['kind']} match their CRDs (v1); every lane routes to its subset")
        for ef in (d for d in files[file] if d.get("kind") == "EnvoyFilter"):
            errors = fallback_errors(ef, vs, dr)
            if errors:
                fail(f"{file}: EnvoyFilter {ef['metadata']['name']}: " + "; ".join(errors))
            ok, out = L.validate(fallback_envoy_config(ef, vs, dr))
            if not ok:
                fail(f"{file}: EnvoyFilter {ef['metadata']['name']}: the routes and clusters it patches fail "
                     f"envoy --mode validate once patched:\n{out}")
            print(f"     {file}: EnvoyFilter {ef['metadata']['name']} matches its CRD (v1alpha3); its lane routes go to "
                  "the aggregate of the lane's subset and main's; patched, the routes and clusters load in Envoy")
    virtual_services = [d for docs in files.values() for d in docs if d.get("kind") == "VirtualService"]
    for where, doc in istio_documents():
        if doc.get("kind") == "WasmPlugin" and hop_plugin(doc):
            errors = follow_errors(doc, virtual_services)
            if errors:
                fail(f"{where}: " + "; ".join(errors))
            print(f"     {where} ({doc['metadata']['name']}): a hop on the calls the application makes; every lane "
                  "it follows is routed by a VirtualService")
    return checked


def check_istio_routing_can_fail():
    validators = routing_validators()
    file, plugin, vs, dr = lanes_manifests()[0]
    files = istio_files()
    with_fallback = [(f, v, d, next(x for x in files[f] if x.get("kind") == "EnvoyFilter"))
                     for f, _, v, d in lanes_manifests() if any(x.get("kind") == "EnvoyFilter" for x in files[f])]
    if not with_fallback:
        fail("no lane routing with a fallback EnvoyFilter in envoy/istio/")
    _, fvs, fdr, ef = with_fallback[0]
    hop = next((d for docs in files.values() for d in docs if d.get("kind") == "WasmPlugin" and hop_plugin(d)), None)
    if hop is None:
        fail("no hop WasmPlugin (lanes.follow) in envoy/istio/")

    def mutated(doc, fn):
        d = copy.deepcopy(doc)
        fn(d["spec"])
        return d

    schema_cases = [
        ("unknown field", "Additional properties", mutated(vs, lambda s: s.update(route=[]))),
        ("wrong type", "is not of type", mutated(dr, lambda s: s.update(subsets={"name": "x"}))),
        ("CEL duration", "valid duration greater than 1ms", mutated(vs, lambda s: s["http"][0].update(timeout="0.1ms"))),
        ("CEL wildcard label", "wildcard not allowed", mutated(dr, lambda s: s.update(workloadSelector={"matchLabels": {"app*": "x"}}))),
        ("EnvoyFilter enum", "'MERG' is not one of", mutated(ef, lambda s: s["configPatches"][0]["patch"].update(operation="MERG"))),
        ("EnvoyFilter CEL one-of", "only one of targetRefs or workloadSelector", mutated(ef, lambda s: s.update(
            workloadSelector={"labels": {"app": "x"}}, targetRefs=[{"kind": "Service", "name": "x"}]))),
    ]
    for name, expect, doc in schema_cases:
        errors = routing_errors(doc, validators)
        if not any(expect in e for e in errors):
            fail(f"broken {doc['kind']} ({name}) was not refused for {expect!r}; errors: {errors}")
    lane_cases = [
        ("route to a misspelt subset", "no route sends x-lane: canary",
         plugin, mutated(vs, lambda s: s["http"][0]["route"][0]["destination"].update(subset="canry")), dr),
        ("prefix instead of exact", "no route sends x-lane: beta",
         plugin, mutated(vs, lambda s: s["http"][1]["match"][0]["headers"].update({"x-lane": {"prefix": "beta"}})), dr),
        ("no subset for a lane", "has no subset beta",
         plugin, vs, mutated(dr, lambda s: s.update(subsets=s["subsets"][:2]))),
        ("default elsewhere", "everyone else to subset stable",
         plugin, mutated(vs, lambda s: s["http"][2]["route"][0]["destination"].update(subset="beta")), dr),
    ]
    for name, expect, p, v, d in lane_cases:
        errors = lane_routing_errors(p, v, d)
        if not any(expect in e for e in errors):
            fail(f"broken lane routing ({name}) was not refused for {expect!r}; errors: {errors}")

    def patch(spec, kind):
        return next(p for p in spec["configPatches"] if p["applyTo"] == kind)

    fallback_cases = [
        ("a misspelt route name", "which is no lane route", mutated(ef, lambda s: patch(s, "HTTP_ROUTE")["match"]
         ["routeConfiguration"]["vhost"]["route"].update(name="feature17"))),
        ("the default route patched", "which is no lane route", mutated(ef, lambda s: patch(s, "HTTP_ROUTE")["match"]
         ["routeConfiguration"]["vhost"]["route"].update(name=fvs["spec"]["http"][-1]["name"]))),
        ("virtual host without its port", "Istio names the one of", mutated(ef, lambda s: patch(s, "HTTP_ROUTE")["match"]
         ["routeConfiguration"]["vhost"].update(name=fdr["spec"]["host"]))),
        ("main first", "must be the aggregate of", mutated(ef, lambda s: patch(s, "CLUSTER")["patch"]["value"]
         ["cluster_type"]["typed_config"]["clusters"].reverse())),
        ("route to a cluster not added", "which this EnvoyFilter does not add", mutated(ef, lambda s: patch(s, "HTTP_ROUTE")
         ["patch"]["value"]["route"].update(cluster="outbound|9080|feature-17|" + fdr["spec"]["host"]))),
    ]
    for name, expect, doc in fallback_cases:
        errors = fallback_errors(doc, fvs, fdr)
        if not any(expect in e for e in errors):
            fail(f"broken fallback EnvoyFilter ({name}) was not refused for {expect!r}; errors: {errors}")
    # The patch values reach Envoy only in the patched config: a wrong type is Envoy's to refuse.
    bad = mutated(ef, lambda s: patch(s, "CLUSTER")["patch"]["value"]["cluster_type"]["typed_config"].update(
        {"@type": "type.googleapis.com/envoy.config.cluster.aggregate.v2alpha.ClusterConfig"}))
    ok, out = L.validate(fallback_envoy_config(bad, fvs, fdr))
    if ok:
        fail("envoy --mode validate accepted an aggregate cluster with a type Envoy does not know")
    follow_cases = [
        ("a lane nobody routes", "which no VirtualService routes", mutated(hop, lambda s: s["pluginConfig"]["lanes"].update(
            follow=["feature-99"]))),
        ("on the requests received", "match: [{mode: CLIENT}]", mutated(hop, lambda s: s.update(match=[{"mode": "SERVER"}]))),
    ]
    for name, expect, doc in follow_cases:
        errors = follow_errors(doc, [fvs])
        if not any(expect in e for e in errors):
            fail(f"broken hop ({name}) was not refused for {expect!r}; errors: {errors}")


# ---------------------------------------------------------------------------------------
# docker-compose testbed


def compose_errors(compose, compose_dir, schema):
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    if errors:
        return errors
    for name, svc in compose.get("services", {}).items():
        for v in svc.get("volumes", []):
            if isinstance(v, str):
                src = v.split(":")[0]
                if not src.startswith((".", "/", "~")):
                    continue  # a named volume
            elif v.get("type") == "bind":
                src = v["source"]
                if v.get("bind", {}).get("create_host_path") is not False:
                    errors.append(f"services.{name}: bind mount {src} lacks create_host_path: false (compose would create a directory in place of a missing file)")
            else:
                continue
            host = os.path.normpath(os.path.join(compose_dir, src))
            if not os.path.isfile(host):
                errors.append(f"services.{name}: mounted file {src} does not exist ({host})")
        for p in svc.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                errors.append(f"services.{name}: port {p} is not published on loopback only")
        variable, default = COMPOSE_IMAGES["envoy" if name == "envoy" else "python"]
        want = f"${{{variable}:-{default.format(envoy=L.envoy_version())}}}"
        if svc.get("image") != want:
            errors.append(f"services.{name}.image is {svc.get('image')!r}, not {want} "
                          "(the official image, of the Envoy version the tests run, replaceable for the tests)")
        if not svc.get("healthcheck", {}).get("test"):
            errors.append(f"services.{name} has no healthcheck (docker compose up --wait waits for it)")
    return errors


# ---------------------------------------------------------------------------------------
# Istio: the runtime value on the proxies a WasmPlugin selects


def proxy_config_validator():
    """Istio's ProxyConfig (OpenAPI 3.0 components) as JSON Schema."""
    with open(MESH_SCHEMA_PATH) as f:
        doc = json.load(f)
    schema = {"$ref": "#/components/schemas/istio.mesh.v1alpha1.ProxyConfig", "components": doc["components"]}
    return jsonschema.Draft7Validator(schema)


def proxy_config_errors(proxy_config, want, validator):
    """A ProxyConfig must be valid and set the runtime value to `want` bytes, as a string."""
    if not isinstance(proxy_config, dict):
        return [f"the proxy config is {type(proxy_config).__name__}, not a ProxyConfig object"]
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in validator.iter_errors(proxy_config)]
    have = proxy_config.get("runtimeValues", {}).get(ANSWER_BUFFER_KEY) if isinstance(proxy_config.get("runtimeValues"), dict) else None
    if have != str(want):
        errors.append(f"runtimeValues sets {ANSWER_BUFFER_KEY} to {have!r}, not the plugins' max_answer_bytes as a string ({str(want)!r})")
    return errors


def annotation_errors(annotations, want, validator):
    value = annotations.get(PROXY_CONFIG_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(value, str):
        return [f"no {PROXY_CONFIG_ANNOTATION} annotation (a string holding ProxyConfig YAML)"]
    try:
        proxy_config = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        return [f"{PROXY_CONFIG_ANNOTATION} is not YAML: {exc}"]
    return proxy_config_errors(proxy_config, want, validator)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (kubectl patch --type merge)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def kubectl_command(path):
    """The `kubectl -n NS patch KIND NAME ...` line in a file's comment: (ns, kind, name)."""
    with open(path) as f:
        m = re.search(r"^#\s+kubectl -n (\S+) patch (\S+) (\S+) ", f.read(), re.M)
    return m.groups() if m else None


def plugin_answer_bytes(plugins):
    values = {p["spec"]["pluginConfig"].get("max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES) for p in plugins}
    if len(values) != 1:
        fail(f"the shipped WasmPlugins disagree on max_answer_bytes: {sorted(values)}")
    return values.pop()


def minimal_gateway(name, namespace):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}


def proxy_runtime_errors(files, plugins):
    """What is wrong with the shipped runtime-value files, given the WasmPlugins they serve."""
    errors = []
    validator = proxy_config_validator()
    # The plugins that copy requests (lanes alone make no calls).
    with_mirror = [p for p in plugins if p["spec"].get("pluginConfig", {}).get("targets")]
    # Each sidecar WasmPlugin selects its own Deployment; the patch, written for one of
    # them, applies to each (docs/istio.md).
    sidecars = [p for p in with_mirror if "selector" in p["spec"]]
    gateway = next(p for p in with_mirror if "targetRefs" in p["spec"])
    want = plugin_answer_bytes(with_mirror)

    deployment = files["deployment-patch.yaml"]
    annotations = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations")
    errors += [f"deployment-patch.yaml: {e}" for e in annotation_errors(annotations, want, validator)]
    if set(deployment) != {"spec"} or set(deployment["spec"]) != {"template"}:
        errors.append("deployment-patch.yaml: must patch spec.template only")
    ns, kind, name = files["commands"]["deployment-patch.yaml"] or (None, None, None)
    selected = {(p["metadata"]["namespace"], p["spec"]["selector"]["matchLabels"].get("app")) for p in sidecars}
    if kind != "deployment" or (ns, name) not in selected:
        errors.append(f"deployment-patch.yaml: its kubectl command patches {kind} {ns}/{name}, not a Deployment a sidecar WasmPlugin selects")

    group, schema = crd_version_schema(GATEWAY_CRD_PATH, "Gateway", "v1")
    gateway_validator = jsonschema.Draft7Validator(full_object_schema(group, schema, "Gateway", "v1"))
    ns, kind, name = files["commands"]["gateway-patch.yaml"] or (None, None, None)
    refs = [r["name"] for r in gateway["spec"]["targetRefs"] if r.get("kind") == "Gateway"]
    if (ns, kind) != (gateway["metadata"]["namespace"], "gateway") or name not in refs:
        errors.append(f"gateway-patch.yaml: its kubectl command patches {kind} {ns}/{name}, not the Gateway the gateway WasmPlugin attaches to")
    patched = merge_patch(minimal_gateway(name or "gw", ns or "ns"), files["gateway-patch.yaml"])
    errors += [f"gateway-patch.yaml (applied to a Gateway): {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
               for e in gateway_validator.iter_errors(patched)]
    infra = patched.get("spec", {}).get("infrastructure", {}).get("annotations")
    errors += [f"gateway-patch.yaml: {e}" for e in annotation_errors(infra, want, validator)]

    mesh = files["mesh-values.yaml"]
    default_config = mesh.get("meshConfig", {}).get("defaultConfig") if isinstance(mesh.get("meshConfig"), dict) else None
    errors += [f"mesh-values.yaml: meshConfig.defaultConfig: {e}" for e in proxy_config_errors(default_config, want, validator)]
    return errors


def proxy_runtime_files():
    files = {"commands": {}}
    for name in ("deployment-patch.yaml", "gateway-patch.yaml", "mesh-values.yaml"):
        path = os.path.join(PROXY_RUNTIME_DIR, name)
        if not os.path.isfile(path):
            fail(f"{os.path.relpath(path, L.REPO)} is missing")
        files[name] = L.load_yaml(path)
        files["commands"][name] = kubectl_command(path)
    extra = set(os.listdir(PROXY_RUNTIME_DIR)) - set(files) - {"commands"}
    if extra:
        fail(f"no check covers envoy/istio/proxy-runtime/{sorted(extra)}: add one to tests/deploy/check_manifests.py")
    return files


def shipped_plugins():
    return [d for _, d in istio_documents() if d.get("kind") == "WasmPlugin"]


def check_istio_proxy_runtime():
    errors = proxy_runtime_errors(proxy_runtime_files(), shipped_plugins())
    if errors:
        fail("; ".join(errors))


def check_istio_proxy_runtime_can_fail():
    files = proxy_runtime_files()
    plugins = shipped_plugins()

    def mutated(fn):
        f = copy.deepcopy(files)
        fn(f)
        return f

    def annotation(f, value):
        f["deployment-patch.yaml"]["spec"]["template"]["metadata"]["annotations"][PROXY_CONFIG_ANNOTATION] = value

    def raise_plugins(p):
        for plugin in p:
            plugin["spec"]["pluginConfig"]["max_answer_bytes"] = 1048576

    raised = copy.deepcopy(plugins)
    raise_plugins(raised)
    cases = [
        ("a number, not a string", "is not of type 'string'", mutated(lambda f: annotation(
            f, f"runtimeValues:\n  {ANSWER_BUFFER_KEY}: 65536\n")), plugins),
        ("a misspelt ProxyConfig field", "sets http.async_response_buffer_limit to None", mutated(lambda f: annotation(
            f, f"runtimeValue:\n  {ANSWER_BUFFER_KEY}: \"65536\"\n")), plugins),
        ("another value", "not the plugins' max_answer_bytes", mutated(lambda f: f["mesh-values.yaml"]["meshConfig"]["defaultConfig"]["runtimeValues"].update(
            {ANSWER_BUFFER_KEY: "1048576"})), plugins),
        ("plugins with a larger max_answer_bytes", "not the plugins' max_answer_bytes", files, raised),
        ("annotation on the Deployment, not its pods", "must patch spec.template only", mutated(lambda f: f["deployment-patch.yaml"].update(
            metadata={"annotations": {PROXY_CONFIG_ANNOTATION: "{}"}})), plugins),
        ("another Gateway", "not the Gateway the gateway WasmPlugin attaches to", mutated(lambda f: f["commands"].update(
            {"gateway-patch.yaml": ("shop-ingress", "gateway", "other-gateway")})), plugins),
        ("Gateway metadata instead of infrastructure", "Additional properties are not allowed", mutated(lambda f: f["gateway-patch.yaml"]["spec"].update(
            infrastructure={"podAnnotations": {}})), plugins),
    ]
    for name, expect, f, p in cases:
        errors = proxy_runtime_errors(f, p)
        if not any(expect in e for e in errors):
            fail(f"broken proxy runtime files ({name}) were not refused for {expect!r}; errors: {errors}")


def check_compose():
    L.require_module()
    with open(COMPOSE_SCHEMA_PATH) as f:
        schema = json.load(f)
    for compose_path in COMPOSE_PATHS:
        name = os.path.relpath(compose_path, L.REPO)
        compose = L.load_yaml(compose_path)
        compose_dir = os.path.dirname(compose_path)
        errors = compose_errors(compose, compose_dir, schema) + compose_topology_errors(compose, compose_dir)
        if errors:
            fail(f"{name}: " + "; ".join(errors))
        mounts = L.compose_mounts(compose, compose_dir)
        cfg = L.load_yaml(mounts[envoy_cmd_config(compose)])
        # The latency histogram a testbed shows counts every copy a second after it ends.
        if cfg.get("stats_flush_interval") not in ("1s", "0.5s"):
            fail(f"{name}: its Envoy config flushes stats every {cfg.get('stats_flush_interval', '5s (the default)')}, "
                 "not every second: the latency histogram would lag the copies")
        ok, out = L.validate(L.map_module_paths(cfg, mounts), cwd=compose_dir)
        if not ok:
            fail(f"{name}: the mounted Envoy config fails envoy --mode validate with the paths mapped:\n{out}")
        print(f"     {name}: {', '.join(compose['services'])}", flush=True)


def all_mounts(compose, compose_dir):
    """{container path: host path} of every bind mount of every service (the same
    container path mounting the same host file wherever it appears)."""
    mounts = {}
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            src, dst = (v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]))
            host = os.path.normpath(os.path.join(compose_dir, src))
            if dst == "/etc/envoy/envoy.yaml":
                continue  # each Envoy's own config
            if mounts.setdefault(dst, host) != host:
                fail(f"services.{name} mounts {host} at {dst}, where another service mounts {mounts[dst]}")
    return mounts


def swimlanes_compose_errors(compose, compose_dir, schema):
    """The swim-lane testbed: the compose-spec schema, every bind-mounted file there,
    loopback ports only, a health check on every service, the official Envoy image (the
    tests' version) or the built application image, each replaceable for the tests, and
    every application sharing its namespace with a sidecar that mounts its own config."""
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    if errors:
        return errors
    envoy_image = "${{{}:-{}}}".format(COMPOSE_IMAGES["envoy"][0],
                                       COMPOSE_IMAGES["envoy"][1].format(envoy=L.envoy_version()))
    services = compose.get("services", {})
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            if isinstance(v, str) or v.get("type") != "bind":
                errors.append(f"services.{name}: a volume that is not a long-form bind mount: {v}")
                continue
            if v.get("bind", {}).get("create_host_path") is not False:
                errors.append(f"services.{name}: bind mount {v['source']} lacks create_host_path: false")
            if not os.path.isfile(os.path.normpath(os.path.join(compose_dir, v["source"]))):
                errors.append(f"services.{name}: mounted file {v['source']} does not exist")
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                errors.append(f"services.{name}: port {port} is not published on loopback only")
        if not svc.get("healthcheck", {}).get("test"):
            errors.append(f"services.{name} has no healthcheck (docker compose up --wait waits for it)")
        is_envoy = "envoy" in svc.get("command", [])
        want = envoy_image if is_envoy else SWIMLANES_APP_IMAGE
        if svc.get("image") != want:
            errors.append(f"services.{name}.image is {svc.get('image')!r}, not {want}")
        if not is_envoy and "build" not in svc:
            errors.append(f"services.{name}: the application image has no build section")
        shared = svc.get("network_mode", "").removeprefix("service:")
        if shared and shared not in services:
            errors.append(f"services.{name}: network_mode names no service {shared!r}")
    return errors


def check_compose_swimlanes():
    L.require_module()
    with open(COMPOSE_SCHEMA_PATH) as f:
        schema = json.load(f)
    name = os.path.relpath(SWIMLANES_COMPOSE_PATH, L.REPO)
    compose = L.load_yaml(SWIMLANES_COMPOSE_PATH)
    compose_dir = os.path.dirname(SWIMLANES_COMPOSE_PATH)
    errors = swimlanes_compose_errors(compose, compose_dir, schema)
    if errors:
        fail(f"{name}: " + "; ".join(errors))
    mounts = all_mounts(compose, compose_dir)
    envoys = 0
    for service, svc in compose["services"].items():
        if "envoy" not in svc.get("command", []):
            continue
        config = next(v["source"] for v in svc["volumes"] if v["target"] == "/etc/envoy/envoy.yaml")
        cfg = L.load_yaml(os.path.normpath(os.path.join(compose_dir, config)))
        ok, out = L.validate(L.map_module_paths(cfg, mounts) if L.wasm_filters(cfg) else cfg, cwd=compose_dir)
        if not ok:
            fail(f"{name}: services.{service}: {config} fails envoy --mode validate with the paths mapped:\n{out}")
        envoys += 1
    print(f"     {name}: {len(compose['services'])} services, {envoys} Envoys, each config validates", flush=True)
    # And the check can fail: a port on every interface, and an unofficial image.
    broken = copy.deepcopy(compose)
    broken["services"]["edge"]["ports"][0] = "10000:10000"
    broken["services"]["a"]["image"] = "python:latest"
    errors = swimlanes_compose_errors(broken, compose_dir, schema)
    if not any("loopback" in e for e in errors) or not any("services.a.image" in e for e in errors):
        fail(f"{name}: a broken copy was not refused: {errors}")


def compose_topology_errors(compose, compose_dir):
    """The mounted Envoy config's module path is mounted, and its clusters are the
    services on the port their command listens on: by service name, or 127.0.0.1 for the
    service whose network namespace Envoy shares (network_mode: service:NAME)."""
    envoy = compose["services"]["envoy"]
    mounts = L.compose_mounts(compose, compose_dir)
    if envoy_cmd_config(compose) not in mounts:
        return ["the envoy service does not mount the config its command loads"]
    cfg = L.load_yaml(mounts[envoy_cmd_config(compose)])
    shared = envoy.get("network_mode", "").removeprefix("service:") or None
    errors = []
    for cl in cfg["static_resources"]["clusters"]:
        for ep in cl["load_assignment"]["endpoints"][0]["lb_endpoints"]:
            sa = ep["endpoint"]["address"]["socket_address"]
            service = shared if sa["address"] == "127.0.0.1" else sa["address"]
            svc = compose["services"].get(service)
            if svc is None:
                errors.append(f"cluster {cl['name']} points at {sa['address']}, which is no compose service"
                              + ("" if shared else " (nor a namespace the envoy service shares)"))
                continue
            cmd = svc.get("command", [])
            if "--port" not in cmd or int(cmd[cmd.index("--port") + 1]) != sa["port_value"]:
                errors.append(f"cluster {cl['name']} points at port {sa['port_value']}, service {service} listens elsewhere ({cmd})")
    # Envoy's listener and admin ports are published by the service whose namespace it is in.
    publisher = compose["services"].get(shared, {}) if shared else envoy
    published = {str(p).rsplit(":", 1)[-1] for p in publisher.get("ports", [])}
    for want in (cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
                 cfg["admin"]["address"]["socket_address"]["port_value"]):
        if str(want) not in published:
            errors.append(f"Envoy's port {want} is not published (ports: {sorted(published)})")
    return errors


def envoy_cmd_config(compose):
    cmd = compose["services"]["envoy"].get("command", [])
    return cmd[cmd.index("-c") + 1] if "-c" in cmd else "/etc/envoy/envoy.yaml"


def check_compose_validation_can_fail():
    with open(COMPOSE_SCHEMA_PATH) as f:
        schema = json.load(f)
    compose = L.load_yaml(COMPOSE_PATH)
    compose_dir = os.path.dirname(COMPOSE_PATH)
    cases = []
    c = copy.deepcopy(compose)
    c["servics"] = c.pop("services")
    cases.append(("top-level typo", c, "does not match any of the regexes"))
    c = copy.deepcopy(compose)
    c["services"]["envoy"]["depends_on"] = "primary"
    cases.append(("wrong type", c, "depends_on"))
    c = copy.deepcopy(compose)
    c["services"]["envoy"]["volumes"][1]["source"] = "../target/nope/traffic_mirror.wasm"
    cases.append(("missing mounted file", c, "does not exist"))
    c = copy.deepcopy(compose)
    c["services"]["envoy"]["image"] = "${TRAFFIC_MIRROR_ENVOY_IMAGE:-envoyproxy/envoy:v1.30.0}"
    cases.append(("other Envoy version", c, "the tests run"))
    c = copy.deepcopy(compose)
    c["services"]["mirror"]["image"] = "python:3.12-alpine"
    cases.append(("an image the tests cannot replace", c, "replaceable"))
    c = copy.deepcopy(compose)
    del c["services"]["primary"]["healthcheck"]
    cases.append(("no health check", c, "no healthcheck"))
    for name, doc, expect in cases:
        errors = compose_errors(doc, compose_dir, schema)
        if not any(expect in e for e in errors):
            fail(f"broken compose file ({name}) was not refused for {expect!r}; errors: {errors}")
    sidecar = L.load_yaml(COMPOSE_PATHS[1])
    sidecar_dir = os.path.dirname(COMPOSE_PATHS[1])
    topology = []
    c = copy.deepcopy(sidecar)
    del c["services"]["envoy"]["network_mode"]
    topology.append(("the sidecar in a namespace of its own", c, "nor a namespace the envoy service shares"))
    c = copy.deepcopy(sidecar)
    c["services"]["app"]["ports"] = c["services"]["app"]["ports"][:1]
    topology.append(("Envoy's admin not published", c, "is not published"))
    c = copy.deepcopy(sidecar)
    c["services"]["staging"]["command"][-1] = "9090"
    topology.append(("staging on another port", c, "listens elsewhere"))
    for name, doc, expect in topology:
        errors = compose_topology_errors(doc, sidecar_dir)
        if not any(expect in e for e in errors):
            fail(f"broken sidecar compose file ({name}) was not refused for {expect!r}; errors: {errors}")


def main():
    for path in (CRD_PATH, COMPOSE_SCHEMA_PATH, MESH_SCHEMA_PATH, GATEWAY_CRD_PATH):
        if not os.path.isfile(path):
            print(f"FAIL missing schema {path}", flush=True)
            return 1
    return L.run_checks([
        ("every shipped Envoy config passes envoy --mode validate (failure_policy, inline config, target stats tag, mirror circuit breakers)", check_envoy_configs),
        ("... and that check refuses a bad plugin config, fail_open, another policy, default circuit breakers, a missing stats tag, unmapped paths", check_envoy_validation_can_fail),
        ("Istio WasmPlugins: CRD openAPIV3Schema + CEL + project rules; pluginConfig loads in the module", check_istio_wasmplugins),
        ("... and those checks refuse each of 14 broken manifests and a pluginConfig the module rejects", check_istio_validation_can_fail),
        ("Istio routing for lanes: VirtualService, DestinationRule, EnvoyFilter against their CRDs (+ CEL), each lane routed to its subset, "
         "a lane's fallback to main (aggregate cluster; patched routes and clusters load in Envoy), every followed lane routed", check_istio_routing),
        ("... and that check refuses 6 broken resources, 4 broken lane routings, 6 broken fallbacks and 2 broken hops", check_istio_routing_can_fail),
        ("Istio proxy runtime: http.async_response_buffer_limit = max_answer_bytes on the selected proxies (ProxyConfig schema, Gateway CRD schema)", check_istio_proxy_runtime),
        ("... and that check refuses 7 broken ones", check_istio_proxy_runtime_can_fail),
        ("docker-compose, front proxy and sidecar: compose-spec schema, mounted files, images (official by default), health checks, clusters and ports, mounted Envoy config validates", check_compose),
        ("docker-compose, swim lanes: compose-spec schema, mounted files, images, health checks, every Envoy's mounted config validates (and a broken copy is refused)", check_compose_swimlanes),
        ("... and that check refuses a schema error, a missing mount, another Envoy version, a fixed image, no health check, and 3 broken sidecars", check_compose_validation_can_fail),
    ])


if __name__ == "__main__":
    sys.exit(main())
