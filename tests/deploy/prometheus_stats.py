#!/usr/bin/env python3
"""Runs each shipped Envoy config in a real Envoy with the built module, on loopback with
free ports (listeners and admin on port 0, every upstream cluster pointed at a recording
upstream, envoy/compose/upstream.py), sends requests until one is mirrored, and checks:

- the copy arrived at the mirror as the config says (loop header, redaction, removed
  headers, authority), and every request reached the primary;
- admin /stats/prometheus has the plugin's counters as traffic_mirror_<name> with a
  `target` label (the stats_tags every shipped config carries): requests, sampled,
  dispatched, responses_2xx agree with what the upstreams saw, and in_flight is a gauge
  back at 0; no untagged traffic_mirror_<target>_<name> series is left;
- admin /stats still lists the full names wasmcustom.traffic_mirror.<target>.<name>.

The lanes config (envoy/lanes.yaml) runs with an upstream for each of its clusters: every
request reaches the version of its lane, carrying the lane, and
traffic_lanes_assigned{lane="..."} equals what each version received.

The gRPC config (envoy/grpc.yaml) runs with real gRPC servers (grpcio, through
tests/support/http2.py) on both HTTP/2 clusters, the mirror failing every call with
UNAVAILABLE: every call reaches the primary and succeeds, each copy reaches the mirror,
and traffic_mirror_grpc_status{target="staging",grpc_status="14"} counts them. Every run
also waits for the copy latency histogram, traffic_mirror_latency_ms{target="..."}, to
count every copy (Envoy merges histograms every stats_flush_interval, shortened here).

The compare config (envoy/compare.yaml) runs with catalog upstreams (upstream.py
--catalog, the mirror --catalog-bug: every 7th item's price wrong, `updated_at` different
on every answer): COMPARE_REQUESTS items, each copied and compared; every
traffic_mirror_compare_<result>{target="..."} is there, they add up to dispatched, match
+ body is all of them, body counts exactly the items the mirror gets wrong, and
traffic_mirror_compare_path{target="...",json_path="/price"} counts them too (the
json_path stats tag).

And that the check can fail: the same config without its stats_config yields only the
untagged series traffic_mirror_<target>_<name>, which the check refuses.

Run with the project's venv: .venv/bin/python tests/deploy/prometheus_stats.py
"""

import copy
import json
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
import envoylib as L  # noqa: E402
from envoylib import fail, parse_prometheus

MAX_REQUESTS = 300
# Items asked of the compare config: ids 1.., every BUGGY_EVERY-th one wrong at the mirror.
COMPARE_REQUESTS = 30
BUGGY_EVERY = 7
LANE_REQUESTS = 200
GRPC_CALLS = 60
HTTP2_PEERS = os.path.join(L.REPO, "tests", "support", "http2.py")
# Histograms reach the admin endpoints when Envoy merges them: every 5 s by default.
STATS_FLUSH = "0.2s"


def counter_names():
    """Every per-target counter, read from the filter's own list (core/src/stats.rs)."""
    with open(os.path.join(L.REPO, "core", "src", "stats.rs")) as f:
        names = re.findall(r'Counter::\w+ => "(\w+)"', f.read())
    if len(names) < 16:
        fail(f"read only {names} from core/src/stats.rs")
    return names


def buggy_copies(records):
    """The copies of items the catalog mirror gets wrong (/api/items/<multiple of 7>)."""
    return [r for r in records if r["path"].rsplit("/", 1)[-1].isdigit()
            and int(r["path"].rsplit("/", 1)[-1]) % BUGGY_EVERY == 0]


def compare_errors(envoy, target, mirror_records):
    """The compare config's verdicts on /stats/prometheus, against what the mirror got."""
    results = L.compare_result_names()
    label = f'{{target="{target}"}}'
    copies = len(mirror_records)

    def verdicts():
        series, _ = parse_prometheus(envoy.stats("/prometheus"))
        got = {r: series.get(f"traffic_mirror_compare_{r}{label}") for r in results}
        return (series, got) if sum(v or 0 for v in got.values()) == copies else None

    try:
        # A comparison runs once both answers are in, so it may trail the copy's count.
        series, got = L.poll(f"compare verdicts adding up to the {copies} copies", verdicts, timeout=5)
    except L.CheckFailed as exc:
        series, _ = parse_prometheus(envoy.stats("/prometheus"))
        return [f"{exc}: {dict((k, v) for k, v in series.items() if 'compare' in k)}"]
    _, types = parse_prometheus(envoy.stats("/prometheus"))
    errors = [f"no series traffic_mirror_compare_{r}{label}" for r, v in got.items() if v is None]
    errors += [f"traffic_mirror_compare_{r} is typed {types.get(f'traffic_mirror_compare_{r}')}, not counter"
               for r in ("match", "body") if types.get(f"traffic_mirror_compare_{r}") != "counter"]
    buggy = len(buggy_copies(mirror_records))
    if not buggy:
        errors.append(f"no copy of an item the mirror gets wrong among {[r['path'] for r in mirror_records]}")
    want = {"match": copies - buggy, "body": buggy}
    if {k: got.get(k) for k in want} != want:
        others = {k: v for k, v in got.items() if v and k not in want}
        errors.append(f"verdicts {dict((k, got.get(k)) for k in want)} (others {others}), expected {want}: "
                      f"the mirror gets {buggy} of the {copies} items wrong, at /price, and updated_at is ignored")
    paths = {k: v for k, v in series.items() if k.startswith("traffic_mirror_compare_path{")}
    want_paths = {f'traffic_mirror_compare_path{{target="{target}",json_path="/price"}}': buggy}
    if paths != want_paths:
        errors.append(f"compare path series {paths}, expected {want_paths} (the json_path stats tag)")
    if paths and types.get("traffic_mirror_compare_path") != "counter":
        errors.append(f"traffic_mirror_compare_path is typed {types.get('traffic_mirror_compare_path')}, not counter")
    return errors


def labelled_errors(text, target):
    """What is wrong with /stats/prometheus for one target, as a list of messages."""
    series, types = parse_prometheus(text)
    errors = []
    label = f'{{target="{target}"}}'
    for name in counter_names() + ["in_flight"]:
        key = f"traffic_mirror_{name}{label}"
        if key not in series:
            errors.append(f"no series {key}")
        want_type = "gauge" if name == "in_flight" else "counter"
        if types.get(f"traffic_mirror_{name}") != want_type:
            errors.append(f"traffic_mirror_{name} is not typed {want_type} (got {types.get(f'traffic_mirror_{name}')})")
    leftovers = [k for k in series if k.startswith(f"traffic_mirror_{target.replace('-', '_')}_")
                 or "wasmcustom" in k or k.startswith("envoy_traffic_mirror")]
    if leftovers:
        errors.append(f"untagged plugin series left: {leftovers[:3]}")
    return errors


def expected_copy_errors(target_cfg, record, request_headers, listener_port):
    errors = []
    h = record.get("headers", {})
    loop_header = "x-traffic-mirror"
    if h.get(loop_header) != target_cfg["name"]:
        errors.append(f"copy lacks {loop_header}: {target_cfg['name']} ({h})")
    hdrs = target_cfg.get("headers", {})
    for name in hdrs.get("redact", []):
        if name in request_headers and h.get(name) != "[REDACTED]":
            errors.append(f"{name} not redacted on the copy ({h.get(name)!r})")
    for name in hdrs.get("remove", []):
        if name in h:
            errors.append(f"{name} not removed from the copy")
    authority = target_cfg.get("authority")
    if authority is None:
        authority = f"127.0.0.1{target_cfg.get('host_suffix', '-shadow')}:{listener_port}"
    if record.get("authority") != authority:
        errors.append(f"copy's authority is {record.get('authority')!r}, expected {authority!r}")
    return errors


def exercise(name, cfg, primary_cluster, *, expect_tags=True):
    """Starts cfg in Envoy (upstreams for the primary and each target's cluster), mirrors at
    least one request, and returns /stats/prometheus. Fails on anything unexpected. A
    target with `compare` runs against catalog upstreams (the mirror's with its seeded
    bug), with COMPARE_REQUESTS requests, and its verdicts are checked too."""
    (_, hf), = L.wasm_filters(cfg)
    target = L.plugin_config_json(hf)["targets"][0]
    comparing = "compare" in target
    primary_args, mirror_args = (["--catalog"], ["--catalog-bug"]) if comparing else ([], [])
    min_requests = COMPARE_REQUESTS if comparing else 0
    upstreams = {primary_cluster: L.Upstream("primary", primary_args),
                 target["cluster"]: L.Upstream("mirror", mirror_args)}
    with upstreams[primary_cluster] as primary, upstreams[target["cluster"]] as mirror:
        run_cfg = L.loopback_copy(cfg, {primary_cluster: primary.port, target["cluster"]: mirror.port})
        run_cfg["stats_flush_interval"] = STATS_FLUSH
        with L.Envoy(run_cfg) as envoy:
            try:
                port = int(envoy.listener.rsplit(":", 1)[1])
                prefix = target.get("match", {}).get("path_prefix", "/")
                sample_header = target.get("sample_by", {}).get("header", "x-request-id")
                sent = 0
                request_headers = {}
                # (Comparing, until a copy of an item the mirror gets wrong has arrived too.)
                while (not mirror.records or sent < min_requests or (comparing and not buggy_copies(mirror.records))) \
                        and sent < MAX_REQUESTS:
                    sent += 1
                    request_headers = {sample_header: f"user-{sent}", "authorization": "Bearer s3cr3t",
                                       "cookie": "session=abc"}
                    path = f"/api/items/{sent}" if comparing else f"{prefix}items/{sent}"
                    status, _ = L.http("GET", f"{envoy.listener}{path}", request_headers)
                    if status != 200:
                        fail(f"{name}: request {sent} got {status}")
                # Copies leave from the root context's tick, a moment after their request.
                if not mirror.records:
                    L.poll(f"a mirrored copy after {sent} requests", lambda: mirror.records, timeout=3)
                stat = f"wasmcustom.traffic_mirror.{target['name']}."

                last = {}

                def settled():
                    s = dict(line.split(": ", 1) for line in envoy.stats(f"?filter=^{re.escape(stat)}").splitlines() if ": " in line)
                    last.clear()
                    last.update(s)
                    n = {k[len(stat):]: int(v) for k, v in s.items() if v.isdigit()}
                    done = (n.get("requests") == sent and n.get("in_flight") == 0
                            and n.get("sampled") == n.get("dispatched") == n.get("responses_2xx") == len(mirror.records))
                    return s if done else None

                try:
                    text_stats = L.poll("the plugin's counters to settle", settled, timeout=5)
                except L.CheckFailed as exc:
                    fail(f"{name}: {exc}; mirror received {len(mirror.records)} after {sent} requests; /stats: {last}")
                garbled = [r["raw"] for r in primary.records + mirror.records if "raw" in r]
                if garbled:
                    fail(f"{name}: upstream log lines not JSON: {garbled[:2]}")
                if len(primary.records) != sent:
                    fail(f"{name}: the primary received {len(primary.records)} of {sent} requests")
                errors = expected_copy_errors(target, mirror.records[0], request_headers, port)
                if errors:
                    fail(f"{name}: " + "; ".join(errors))
                prom = envoy.stats("/prometheus")
                if expect_tags:
                    errors = labelled_errors(prom, target["name"])
                    series, _ = parse_prometheus(prom)
                    label = f'{{target="{target["name"]}"}}'
                    got = {k: series.get(f"traffic_mirror_{k}{label}") for k in ("requests", "dispatched", "responses_2xx", "in_flight")}
                    want = {"requests": sent, "dispatched": len(mirror.records), "responses_2xx": len(mirror.records), "in_flight": 0}
                    if got != want:
                        errors.append(f"series values {got}, expected {want} (from what the upstreams saw)")
                    if text_stats.get(stat + "dispatched") != str(len(mirror.records)):
                        errors.append(f"/stats has {stat}dispatched = {text_stats.get(stat + 'dispatched')}")
                    errors += latency_errors(envoy, target["name"], len(mirror.records))
                    if comparing:
                        errors += compare_errors(envoy, target["name"], mirror.records)
                    if errors:
                        fail(f"{name}: /stats/prometheus: " + "; ".join(errors))
                series = "traffic_mirror_dispatched{target=\"%s\"}" % target["name"] if expect_tags \
                    else "traffic_mirror_%s_dispatched" % target["name"].replace("-", "_")
                compared = (f"; compared, {len(buggy_copies(mirror.records))} body differences at json_path=\"/price\","
                            " the rest match" if comparing and expect_tags else "")
                print(f"     {name}: {sent} requests, {len(mirror.records)} mirrored; {series} {len(mirror.records)}{compared}")
                return prom
            except L.CheckFailed as exc:
                log = envoy.log().splitlines()
                raise L.CheckFailed(f"{exc}\n--- Envoy's log (last 60 lines of {len(log)}) ---\n"
                                    + "\n".join(log[-60:])) from None


def latency_errors(envoy, target, copies):
    """The copy latency histogram must count every copy, once Envoy has merged it."""
    key = f'traffic_mirror_latency_ms_count{{target="{target}"}}'
    try:
        L.poll(f"{key} to reach {copies}",
               lambda: parse_prometheus(envoy.stats("/prometheus"))[0].get(key) == copies, timeout=5)
    except L.CheckFailed as exc:
        return [str(exc)]
    series, types = parse_prometheus(envoy.stats("/prometheus"))
    errors = []
    if types.get("traffic_mirror_latency_ms") != "histogram":
        errors.append(f"traffic_mirror_latency_ms is typed {types.get('traffic_mirror_latency_ms')}, not histogram")
    if series.get(f'traffic_mirror_latency_ms_bucket{{target="{target}",le="+Inf"}}') != copies:
        errors.append(f"traffic_mirror_latency_ms_bucket{{target=\"{target}\",le=\"+Inf\"}} is not {copies}")
    return errors


class GrpcServer:
    """A gRPC server from tests/support/http2.py: every call recorded, answered, or failed
    with `code`."""

    def __init__(self, name, code=0):
        self.name, self.code, self.calls = name, code, []

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, HTTP2_PEERS, "grpc-server", "--name", self.name, "--code", str(self.code)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["listening"]
        return self

    def read_calls(self):
        """The calls recorded so far (the server is stopped first)."""
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.calls = [json.loads(line) for line in self.proc.stdout if line.strip()]
        return self.calls

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def grpc_calls(listener, calls):
    out = subprocess.run([sys.executable, HTTP2_PEERS, "grpc-call", listener], input=json.dumps(calls),
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        fail(f"grpc-call failed: {out.stderr}")
    return json.loads(out.stdout)


def check_grpc():
    """envoy/grpc.yaml with real gRPC servers, the mirror failing every call."""
    L.require_module()
    name = "envoy/grpc.yaml"
    cfg = L.load_yaml(os.path.join(L.REPO, "envoy", "grpc.yaml"))
    (_, hf), = L.wasm_filters(cfg)
    target = L.plugin_config_json(hf)["targets"][0]
    method = target["match"]["path_prefix"] + "Checkout"
    with GrpcServer("cart") as primary, GrpcServer("staging", code=14) as mirror:
        run_cfg = L.loopback_copy(cfg, {"cart": primary.port, target["cluster"]: mirror.port})
        run_cfg["stats_flush_interval"] = STATS_FLUSH
        with L.Envoy(run_cfg) as envoy:
            host_port = envoy.listener.split("//", 1)[-1]
            calls = [{"method": method, "kind": "unary", "messages": [f"order-{i}".encode().hex()],
                      "metadata": [["x-user-id", f"user-{i}"]]} for i in range(GRPC_CALLS)]
            results = grpc_calls(host_port, calls)
            failed = [r for r in results if r["code"] != 0]
            if failed:
                fail(f"{name}: {len(failed)} of {GRPC_CALLS} calls to the primary failed: {failed[:2]}")
            stat = f"wasmcustom.traffic_mirror.{target['name']}."

            def settled():
                # Counters and gauges; the latency histogram's line holds percentiles.
                n = {k[len(stat):]: int(v) for k, v in (line.split(": ", 1) for line in
                     envoy.stats(f"?filter=^{re.escape(stat)}").splitlines() if ": " in line)
                     if v.isdigit()}
                ok = n.get("requests") == GRPC_CALLS and n.get("in_flight") == 0 \
                    and n.get("sampled") == n.get("dispatched") == n.get("responses_2xx") == n.get("grpc_status.14")
                return n if ok else None

            counts = L.poll("the copies' answers to be counted", settled, timeout=10)
            copies = counts["dispatched"]
            errors = latency_errors(envoy, target["name"], copies)
            series, types = parse_prometheus(envoy.stats("/prometheus"))
        received = mirror.read_calls()
        primary_calls = primary.read_calls()
    key = f'traffic_mirror_grpc_status{{target="{target["name"]}",grpc_status="14"}}'
    if not copies or copies == GRPC_CALLS:
        errors.append(f"{copies} of {GRPC_CALLS} users copied at {target['percent']} %")
    if series.get(key) != copies:
        errors.append(f"{key} is {series.get(key)}, not the {copies} copies")
    if types.get("traffic_mirror_grpc_status") != "counter":
        errors.append("traffic_mirror_grpc_status is not typed counter")
    if len(received) != copies or any(c["method"] != method for c in received):
        errors.append(f"the mirror received {len(received)} calls, not the {copies} copies of {method}")
    if len(primary_calls) != GRPC_CALLS:
        errors.append(f"the primary received {len(primary_calls)} of {GRPC_CALLS} calls")
    if errors:
        fail(f"{name}: " + "; ".join(errors))
    print(f"     {name}: {GRPC_CALLS} gRPC calls, {copies} copied to a mirror failing them; {key} {copies}")


def check_lanes():
    """envoy/lanes.yaml: every request at the version of its lane, and the lane series."""
    L.require_module()
    name = "envoy/lanes.yaml"
    cfg = L.load_yaml(os.path.join(L.REPO, "envoy", "lanes.yaml"))
    (_, hf), = L.wasm_filters(cfg)
    lanes = L.plugin_config_json(hf)["lanes"]
    versions = [entry["lane"] for entry in lanes["split"]] + [lanes["default"]]
    with L.Upstream(versions[0]) as a, L.Upstream(versions[1]) as b, L.Upstream(versions[2]) as c:
        upstreams = {u.name: u for u in (a, b, c)}
        run_cfg = L.loopback_copy(cfg, {n: u.port for n, u in upstreams.items()})
        with L.Envoy(run_cfg) as envoy:
            for i in range(LANE_REQUESTS):
                status, _ = L.http("GET", f"{envoy.listener}/items/{i}", {"x-user-id": f"user-{i}", lanes["header"]: "canary"})
                if status != 200:
                    fail(f"{name}: request {i} got {status}")
            L.poll("every request at an upstream", lambda: sum(len(u.records) for u in upstreams.values()) == LANE_REQUESTS, timeout=5)
            series, types = parse_prometheus(envoy.stats("/prometheus"))
    errors = []
    for lane, upstream in upstreams.items():
        wrong = [r for r in upstream.records if r.get("headers", {}).get(lanes["header"]) != lane]
        if wrong:
            errors.append(f"{len(wrong)} requests at {lane} without {lanes['header']}: {lane} (e.g. {wrong[0]})")
        got = series.get(f'traffic_lanes_assigned{{lane="{lane}"}}')
        if got != len(upstream.records):
            errors.append(f'traffic_lanes_assigned{{lane="{lane}"}} is {got}, {lane} received {len(upstream.records)}')
        if series.get(f'traffic_lanes_kept{{lane="{lane}"}}') != 0:
            errors.append(f'traffic_lanes_kept{{lane="{lane}"}} is not 0')
        if not upstream.records:
            errors.append(f"no user in lane {lane} among {LANE_REQUESTS}")
    if types.get("traffic_lanes_assigned") != "counter":
        errors.append("traffic_lanes_assigned is not typed counter")
    if errors:
        fail(f"{name}: " + "; ".join(errors))
    counts = ", ".join(f"{lane} {len(u.records)}" for lane, u in upstreams.items())
    print(f"     {name}: {LANE_REQUESTS} users, each at its lane's version ({counts}); traffic_lanes_assigned{{lane=...}} agrees")


def check_swimlanes():
    """envoy/swimlanes.yaml: a hop follows the baggage lane; a lane whose instances are down
    falls back to main, and comes back, within the health checks' second."""
    L.require_module()
    name = "envoy/swimlanes.yaml"
    cfg = L.load_yaml(os.path.join(L.REPO, "envoy", "swimlanes.yaml"))
    (_, hf), = L.wasm_filters(cfg)
    lanes = L.plugin_config_json(hf)["lanes"]
    lane = lanes["follow"][0]
    header = lanes["header"]
    with L.Upstream("main") as main, L.Upstream(lane) as in_lane:
        ports = {"reviews-main": main.port, f"reviews-{lane}": in_lane.port}
        run_cfg = L.loopback_copy(cfg, ports)
        with L.Envoy(run_cfg) as envoy:
            def healthy(cluster):
                stats = envoy.stats(f"?filter=^cluster\\.{re.escape(cluster)}\\.membership_healthy$")
                return stats.strip().endswith(": 1")

            L.poll("both clusters healthy", lambda: healthy("reviews-main") and healthy(f"reviews-{lane}"))

            def send(i, baggage=None, extra=None):
                headers = dict(extra or {})
                if baggage is not None:
                    headers["baggage"] = baggage
                status, body = L.http("GET", f"{envoy.listener}/reviews/{i}", headers)
                if status != 200:
                    fail(f"{name}: /reviews/{i} got {status}")
                return body.decode()

            # Who answers what: the lane in baggage, another lane, none, a stale header.
            cases = [
                ("in-lane", f"userId=u1, lane={lane};p=1", None, lane),
                ("other", "lane=admin", None, "main"),
                ("none", "userId=u2", None, "main"),
                ("stale", None, {header: lane}, "main"),
            ]
            for i, (what, baggage, extra, expected) in enumerate(cases * 5):
                send(f"{what}-{i}", baggage, extra)
            L.poll("every request at an upstream", lambda: len(main.records) + len(in_lane.records) == 20, timeout=5)
            errors = []
            for record in main.records + in_lane.records:
                what = record["path"].split("/")[2].rsplit("-", 1)[0]
                expected = {c[0]: c[3] for c in cases}[what]
                at = "main" if record in main.records else lane
                got_header = record.get("headers", {}).get(header)
                if at != expected or got_header != (lane if expected == lane else None):
                    errors.append(f"{record['path']} at {at} with {header}: {got_header}")
            stats = {k: v for k, v in (line.split(": ", 1) for line in
                     envoy.stats("?filter=^wasmcustom\\.traffic_lanes").splitlines())}
            if stats.get(f"wasmcustom.traffic_lanes.{lane}.followed") != "5" \
                    or stats.get("wasmcustom.traffic_lanes.unknown") != "5":
                errors.append(f"lane stats {stats}: expected 5 followed, 5 unknown")
            if errors:
                fail(f"{name}: " + "; ".join(errors))

            # The lane's only instance goes away: lane requests keep being answered, by
            # main, at once (one retry on main while the health check has not seen it).
            in_lane.__exit__(None, None, None)
            stopped = time.monotonic()
            served_before = len(main.records)
            n = 0

            def lane_at_main_without_retry():
                nonlocal n
                n += 1
                send(f"fallback-{n}", f"lane={lane}")
                return not healthy(f"reviews-{lane}")

            L.poll("the lane's cluster to be marked unhealthy", lane_at_main_without_retry, timeout=10)
            fallback = time.monotonic() - stopped
            L.poll("the requests at main", lambda: len(main.records) - served_before == n, timeout=5)
            retries = int(envoy.stats(f"?filter=^cluster\\.reviews-{lane}-or-main\\.upstream_rq_retry$")
                          .strip().rsplit(": ", 1)[-1] or 0)

            # It comes back on the same port: lane requests go back to it.
            with L.Upstream(lane, ["--port", str(ports[f"reviews-{lane}"])]) as back:
                started = time.monotonic()
                m = 0

                def lane_at_lane():
                    nonlocal m
                    m += 1
                    send(f"back-{m}", f"lane={lane}")
                    return any(r["path"].startswith("/reviews/back-") for r in back.records)

                L.poll("lane requests back at the lane", lane_at_lane, timeout=10)
                recovery = time.monotonic() - started
    print(f"     {name}: baggage lane={lane} reaches reviews-{lane} with {header}: {lane}; other, "
          f"none and stale reach main without it; followed 5, unknown 5; lane instance down: "
          f"{n} lane requests all answered (by main; {retries} retried), health check ejected it in "
          f"{fallback:.2f} s; back up: lane requests at the lane after {recovery:.2f} s")


def configs():
    compose = L.load_yaml(os.path.join(L.REPO, "envoy", "docker-compose.yaml"))
    mounts = L.compose_mounts(compose, os.path.join(L.REPO, "envoy"))
    return [
        ("envoy/envoy.yaml", L.load_yaml(os.path.join(L.REPO, "envoy", "envoy.yaml")), "primary"),
        ("envoy/sidecar.yaml", L.load_yaml(os.path.join(L.REPO, "envoy", "sidecar.yaml")), "local_app"),
        ("envoy/compose/envoy.yaml", L.map_module_paths(
            L.load_yaml(os.path.join(L.REPO, "envoy", "compose", "envoy.yaml")), mounts), "primary"),
        ("envoy/compare.yaml", L.load_yaml(os.path.join(L.REPO, "envoy", "compare.yaml")), "primary"),
    ]


def check_shipped():
    L.require_module()
    failures = []
    for name, cfg, primary in configs():
        # Every config runs: one failing does not hide what the others do.
        try:
            exercise(name, cfg, primary)
        except L.CheckFailed as exc:
            print(f"     {name}: FAILED", flush=True)
            failures.append(str(exc))
    if failures:
        fail("\n     ".join(failures))


def check_can_fail():
    name, cfg, primary = configs()[0]
    untagged = copy.deepcopy(cfg)
    untagged.pop("stats_config")
    prom = exercise(f"{name} without stats_config", untagged, primary, expect_tags=False)
    errors = labelled_errors(prom, "staging")
    if not any("no series traffic_mirror_requests{target=\"staging\"}" in e for e in errors) \
            or not any("untagged plugin series left" in e for e in errors):
        fail(f"without stats_tags the check did not refuse /stats/prometheus; errors: {errors}")
    if "traffic_mirror_staging_requests " not in prom:
        fail("without stats_tags, expected the untagged series traffic_mirror_staging_requests")


def main():
    return L.run_checks([
        ("shipped Envoy configs in a real Envoy: copies as configured, "
         "traffic_mirror_<name>{target=...} on /stats/prometheus", check_shipped),
        ("... and the check refuses /stats/prometheus without the stats_tags "
         "(series traffic_mirror_<target>_<name>)", check_can_fail),
        ("the lanes config in a real Envoy: each user at its lane's version, "
         "traffic_lanes_assigned{lane=...} on /stats/prometheus", check_lanes),
        ("the gRPC config in a real Envoy with gRPC servers: a failing mirror in "
         "traffic_mirror_grpc_status{target=...,grpc_status=...}", check_grpc),
        ("the swim-lane hop config in a real Envoy: the baggage lane followed, and main "
         "when the lane's instances are down (the fallback timed)", check_swimlanes),
    ])


if __name__ == "__main__":
    sys.exit(main())
