"""Helpers shared by the deployment checks: the repo's paths, `envoy --mode validate`,
and running a real Envoy (and recording upstreams) on loopback with free ports.

Everything a helper starts, it stops; readiness is polled, never slept for.
"""

import copy
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODULE = os.path.join(REPO, "target", "wasm32-wasip1", "release", "traffic_mirror.wasm")
UPSTREAM_PY = os.path.join(REPO, "envoy", "compose", "upstream.py")
INVALID_CONFIG_LINE = "traffic-mirror: invalid configuration:"
WASM_FILTER = "envoy.filters.http.wasm"
# The stats_tags entry every shipped Envoy config carries (see envoy/envoy.yaml).
TARGET_TAG = {"tag_name": "target", "regex": r"^wasmcustom\.traffic_mirror\.(([a-z0-9_-]+)\.)"}
LANE_TAG = {"tag_name": "lane", "regex": r"^wasmcustom\.traffic_lanes\.(([a-z0-9_-]+)\.)"}
GRPC_STATUS_TAG = {"tag_name": "grpc_status",
                   "regex": r"^wasmcustom\.traffic_mirror\.[a-z0-9_-]+\.grpc_status(\.([0-9]+))$"}
# The JSON path of a compared body's first difference (a percent-encoded JSON Pointer).
JSON_PATH_TAG = {"tag_name": "json_path",
                 "regex": r"^wasmcustom\.traffic_mirror\.[a-z0-9_-]+\.compare\.path(\.([^.]*))$"}


SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def envoy_bin():
    path = os.environ.get("ENVOY_BIN") or os.path.join(REPO, ".venv", "bin", "envoy")
    if not os.access(path, os.X_OK):
        fail(f"Envoy not found at {path} (set ENVOY_BIN or run scripts/setup.sh)")
    return path


def envoy_version():
    out = subprocess.run([envoy_bin(), "--version"], capture_output=True, text=True, check=True).stdout
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    for part in out.split("/"):
        if part.count(".") == 2 and all(p.isdigit() for p in part.split(".")):
            return part
    fail(f"cannot read Envoy's version from {out!r}")


def require_module():
    if not os.path.isfile(MODULE):
        fail(f"{MODULE} is missing: build it with cargo build --target wasm32-wasip1 --release")
    return MODULE


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def wasm_filters(cfg):
    """Every envoy.filters.http.wasm filter in the static listeners, as (where, filter)."""
    found = []
    for li in cfg.get("static_resources", {}).get("listeners", []):
        for ci, chain in enumerate(li.get("filter_chains", [])):
            for nf in chain.get("filters", []):
                hcm = nf.get("typed_config", {})
                for hf in hcm.get("http_filters", []):
                    if hf.get("name") == WASM_FILTER:
                        found.append((f"listener {li.get('name')} chain {ci}", hf))
    return found


def plugin_config_json(wasm_filter):
    conf = wasm_filter["typed_config"]["config"]["configuration"]
    if conf.get("@type") != "type.googleapis.com/google.protobuf.StringValue":
        fail(f"plugin configuration is not a StringValue: {conf.get('@type')}")
    return json.loads(conf["value"])


def validate(cfg, cwd=REPO, extra_args=()):
    """Runs `envoy --mode validate` on a config dict. Returns (ok, output)."""
    with tempfile.TemporaryDirectory(prefix="tm-validate-") as tmp:
        path = os.path.join(tmp, "envoy.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        proc = subprocess.run(
            [envoy_bin(), "--mode", "validate", "-c", path, "-l", "error", *extra_args],
            cwd=cwd, capture_output=True, text=True, timeout=60,
        )
    return proc.returncode == 0, proc.stdout + proc.stderr


def loopback_copy(cfg, cluster_ports):
    """A copy of an Envoy config that runs on loopback: admin and every listener on
    127.0.0.1 port 0, and each cluster named in cluster_ports sent to 127.0.0.1:PORT."""
    cfg = copy.deepcopy(cfg)
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    for li in cfg["static_resources"]["listeners"]:
        li["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    seen = set()
    for cl in cfg["static_resources"]["clusters"]:
        name = cl["name"]
        if name not in cluster_ports:
            continue
        seen.add(name)
        cl["type"] = "STATIC"
        for k in ("dns_lookup_family", "dns_refresh_rate", "respect_dns_ttl"):
            cl.pop(k, None)
        cl["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": cluster_ports[name]}}}}]}],
        }
    missing = set(cluster_ports) - seen
    if missing:
        fail(f"config has no cluster(s) {sorted(missing)}")
    return cfg


def compose_mounts(compose, compose_dir):
    """{container path: host path} of every bind mount of the envoy service."""
    mounts = {}
    for v in compose["services"]["envoy"].get("volumes", []):
        if isinstance(v, str):
            src, dst = v.split(":")[:2]
        else:
            src, dst = v["source"], v["target"]
        mounts[dst] = os.path.normpath(os.path.join(compose_dir, src))
    return mounts


def map_module_paths(cfg, mounts):
    cfg = copy.deepcopy(cfg)
    for where, hf in wasm_filters(cfg):
        local = hf["typed_config"]["config"]["vm_config"]["code"]["local"]
        if local["filename"] not in mounts:
            fail(f"{where}: module {local['filename']} is not mounted into the container")
        local["filename"] = mounts[local["filename"]]
    return cfg


def http(method, url, headers=None, body=None, timeout=5):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def poll(what, fn, timeout=10.0, interval=0.02):
    """Calls fn until it returns something truthy; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - readiness probes fail until ready
            last_exc = exc
        time.sleep(interval)
    fail(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class Upstream:
    """envoy/compose/upstream.py on 127.0.0.1, a free port; .records are what it received.
    args: more of its options (--catalog, --catalog-bug)."""

    def __init__(self, name, args=()):
        self.name = name
        self.args = list(args)
        self.records = []
        self._lines = queue.Queue()

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", UPSTREAM_PY, "--name", self.name, "--port", "0", "--host", "127.0.0.1",
             *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        try:
            first = self._lines.get(timeout=10)
        except queue.Empty:
            self.__exit__(None, None, None)
            fail(f"upstream {self.name} did not start")
        self.port = json.loads(first)["listening"]
        return self

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            if line.startswith('{"listening"'):
                self._lines.put(line)
            else:
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    self.records.append({"raw": line})

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Envoy:
    """A real Envoy from a config dict, on loopback; .admin and .listener are base URLs."""

    def __init__(self, cfg, cwd=REPO):
        self.cfg = cfg
        self.cwd = cwd

    def __enter__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tm-envoy-")
        d = self.tmp.name
        cfg_path = os.path.join(d, "envoy.yaml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump(self.cfg, f, sort_keys=False)
        self.admin_path = os.path.join(d, "admin-address")
        self.log_path = os.path.join(d, "envoy.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [envoy_bin(), "-c", cfg_path, "--concurrency", "1", "-l", "info",
             "--use-dynamic-base-id", "--admin-address-path", self.admin_path],
            cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            def admin_address():
                if self.proc.poll() is not None:
                    fail(f"Envoy exited with {self.proc.returncode}")
                if os.path.exists(self.admin_path):
                    with open(self.admin_path) as f:
                        return f.read().strip()
                return None

            self.admin = "http://" + poll("Envoy's admin address", admin_address)
            poll("Envoy /ready", lambda: http("GET", self.admin + "/ready")[0] == 200)
            status, body = http("GET", self.admin + "/listeners?format=json")
            listeners = json.loads(body)["listener_statuses"]
            port = listeners[0]["local_address"]["socket_address"]["port_value"]
            self.listener = f"http://127.0.0.1:{port}"
        except CheckFailed as exc:
            log = self.log().splitlines()
            self.__exit__(None, None, None)
            raise CheckFailed(f"{exc}\n--- Envoy's log (last 60 lines) ---\n" + "\n".join(log[-60:])) from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def log(self):
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stats(self, fmt=""):
        return http("GET", self.admin + "/stats" + fmt)[1].decode()

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.tmp.cleanup()


def compare_result_names():
    """Every compare result, from the filter's own list (core/src/compare/mod.rs)."""
    with open(os.path.join(REPO, "core", "src", "compare", "mod.rs")) as f:
        names = re.findall(r'CompareResult::\w+ => "(\w+)"', f.read())
    if "match" not in names or "body" not in names or len(names) < 10:
        fail(f"read only {names} from core/src/compare/mod.rs")
    return names


def run_checks(checks):
    """Runs named checks; prints ok/FAIL per check; exits non-zero if any failed."""
    failed = 0
    for name, fn in checks:
        t0 = time.monotonic()
        try:
            fn()
        except CheckFailed as exc:
            failed += 1
            print(f"FAIL {name}\n     {exc}", flush=True)
            continue
        print(f"ok   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    print(f"deploy: {len(checks) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def parse_prometheus(text):
    """/stats/prometheus as ({series with labels: value}, {name: type})."""
    series, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SERIES.match(line)
            if not m:
                fail(f"unparseable /stats/prometheus line: {line!r}")
            series[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return series, types
