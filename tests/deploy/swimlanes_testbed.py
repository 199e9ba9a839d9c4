#!/usr/bin/env python3
"""Starts the swim-lane testbed (envoy/docker-compose.swimlanes.yaml) for real and follows
requests across its services: an edge Envoy that assigns the lane, then services a -> b
-> c, each an unmodified Python application under OpenTelemetry's auto-instrumentation
with a sidecar Envoy; b has a main instance (b) and a lane instance (b-feature-17).

- `docker compose up -d --wait` with the images of tests/deploy/compose_images.sh
  --swimlanes (local stand-ins for the official Envoy image and for the application's
  image, which no registry here serves), free loopback ports and a project name of its
  own; the edge and each sidecar with the filter configured the way its config says;
- paths: every user's requests (x-user-id user-1..user-40, twice each, half of them with
  a baggage entry of their own) go a (main) -> b-feature-17 -> c (main) for the users
  `traffic-mirror sample envoy/swimlanes/edge.yaml --lanes` puts in feature-17, and
  a -> b -> c (main) for the others; every service received `baggage` with lane=feature-17
  (lane users only) and the client's own entry, which only the applications'
  instrumentation carried from a to b to c (b and c also received a traceparent, a none);
- forged at the edge: a main user sending x-lane: feature-17 or a baggage entry
  lane=feature-17 goes main everywhere, the lane entry gone and its other entries kept;
  a lane user's own lane entry is replaced, not doubled;
- forged at a hop: a call made from inside a's container to a's sidecar outbound
  listener with x-lane: feature-17 but no lane in baggage goes to b's main instance, and
  b receives no x-lane; one with lane=feature-17 in baggage (and no x-lane) goes to
  b-feature-17;
- fallback: `docker compose stop b-feature-17-sidecar b-feature-17` (the instance: its
  application and its sidecar) while lane requests keep coming: the time from the stop
  to the first lane request served by b's main instance is measured (polled) and
  printed, with the lane requests that failed meanwhile (none expected: a's sidecar
  retries a refused or reset call on b's main instance) and the time until a's sidecar's
  health check marks b-feature-17 unhealthy; main users stay on main; `docker compose
  start` brings lane users back to b-feature-17, measured the same way;
- counters: the edge's traffic_lanes_assigned{lane="feature-17"} is the lane requests
  sent, kept 0, no other lane; each hop's traffic_lanes_followed{lane="feature-17"} is
  the lane requests that passed it (a: all; b and b-feature-17: those each served, the
  restarted b-feature-17 counted from its restart and before it at the stop);
  traffic_lanes_unknown 0 at every hop; no wasm error in any Envoy's log;
- `docker compose down -v` in every case, and no container of the project is left.

The containers' logs are printed when a check fails. Without a Docker engine it says so
and exits 0, unless CI=true, where that is a failure.

Run with the project's venv: .venv/bin/python tests/deploy/swimlanes_testbed.py
"""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
import envoylib as L  # noqa: E402
from compose_testbeds import compose_command, engine_answers, free_port, run  # noqa: E402
from envoylib import fail, parse_prometheus, poll  # noqa: E402

COMMAND = os.path.join(L.REPO, "target", "release", "traffic-mirror")
IMAGES = os.path.join(L.REPO, "tests", "deploy", "compose_images.sh")
FILE = os.path.join(L.REPO, "envoy", "docker-compose.swimlanes.yaml")
EDGE_CONFIG = os.path.join(L.REPO, "envoy", "swimlanes", "edge.yaml")
LANE = "feature-17"
USERS = 40
ROUNDS = 2
# The instances whose sidecars run the filter as a hop (c's has no outbound listener).
HOPS = ("a", "b", "b-feature-17")
# How long a fallback may take before the check fails (it takes about a second).
FALLBACK_LIMIT = 10.0
# A sidecar's admin, in its instance's network namespace (envoy/swimlanes/sidecar-*.yaml).
SIDECAR_ADMIN = "http://127.0.0.1:15000"
OUTBOUND = "http://127.0.0.1:15001"


def entries(baggage):
    """A baggage header's (key, value) entries, in order (no properties in these tests)."""
    if not baggage:
        return []
    return [tuple(e.strip().split("=", 1)) for e in baggage.split(",") if e.strip()]


def path_of(answer):
    """[(service, lane, baggage entries), ...] down the nested answers; a failed call ends
    the path with ("error", status or message)."""
    path = []
    while answer is not None:
        if "service" not in answer:
            path.append(("error", answer.get("status") or answer.get("error")))
            break
        path.append((answer["service"], answer["lane"], entries(answer.get("baggage"))))
        answer = answer.get("next")
    return path


def route_of(path):
    return [(p[0], p[1]) for p in path]


class Testbed:
    def __init__(self, compose_base, env):
        self.project = f"tm-swimlanes-{os.getpid()}"
        self.compose = compose_base + ["-p", self.project, "-f", FILE]
        self.env = env
        self.port, self.admin = int(env["TRAFFIC_MIRROR_PORT"]), int(env["TRAFFIC_MIRROR_ADMIN_PORT"])
        self.started = self.torn_down = False
        # Lane requests each filter has seen, as the answers tell (b-feature-17 since its
        # last start; its count before the stop is checked at the stop).
        self.lane_at = {"edge": 0, "a": 0, "b": 0, "b-feature-17": 0}

    def compose_run(self, *args, timeout=120):
        return run(self.compose + list(args), timeout=timeout, env=self.env)

    def logs(self, service):
        """A service's log lines (compose v2 writes a clear-line escape before each)."""
        out = self.compose_run("logs", "--no-color", "--no-log-prefix", service).stdout
        return [line.replace("\x1b[2K", "") for line in out.splitlines()]

    def app_records(self, service):
        """The JSON lines an application logged, one per request it served."""
        return [json.loads(line) for line in self.logs(service) if line.startswith('{"')]

    def in_container(self, service, code, timeout=30):
        """Runs Python code in a service's container (its network namespace: its
        sidecar's admin and outbound listener are on 127.0.0.1); returns its stdout."""
        return self.compose_run("exec", "-T", service, "python", "-c", code, timeout=timeout).stdout

    def sidecar_get(self, service, path):
        return self.in_container(service, "import urllib.request as u, sys; "
                                 f"sys.stdout.write(u.urlopen({SIDECAR_ADMIN + path!r}, timeout=5).read().decode())")

    def hop_stats(self, service):
        """{name: value} of a sidecar's traffic_lanes counters."""
        text = self.sidecar_get(service, "/stats?filter=^wasmcustom%5C.traffic_lanes")
        return {k: int(v) for k, v in (line.split(": ", 1) for line in text.splitlines() if ": " in line)}

    def edge_series(self):
        series, _ = parse_prometheus(L.http("GET", f"http://127.0.0.1:{self.admin}/stats/prometheus")[1].decode())
        return {k: v for k, v in series.items() if k.startswith("traffic_lanes_")}

    def get(self, path, headers):
        """A request through the edge: (status, its path across the services)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        try:
            return r.status, path_of(json.loads(body))
        except ValueError:
            return r.status, [("error", body[:200].decode(errors="replace"))]

    def lane_request(self, user, path, headers=None):
        """A lane user's request through the edge, counted where it went."""
        status, hops = self.get(path, dict(headers or {}, **{"x-user-id": user}))
        self.lane_at["edge"] += 1
        self.lane_at["a"] += 1  # a always answers, and calls b through its sidecar
        if status == 200 and len(hops) == 3 and hops[1][0] == "b":
            self.lane_at["b" if hops[1][1] == "main" else "b-feature-17"] += 1
        return status, hops

    def dump_logs(self):
        # Envoy's start-up inventory (its extensions, header maps) left out.
        dump = subprocess.run(self.compose + ["logs", "--no-color", "--timestamps", "--tail", "200"],
                              capture_output=True, text=True, env=self.env)
        lines = [line.replace("\x1b[2K", "") for line in (dump.stdout + dump.stderr).splitlines()
                 if not re.search(r"\[source/server/server\.cc:(467|547)\]", line)]
        print("---- swim-lane testbed: docker compose logs (last 200 lines of each container, Envoy's start-up "
              "inventory left out) ----\n" + "\n".join(lines) + "\n---- end of logs ----", flush=True)

    def down(self):
        self.torn_down = True
        down = subprocess.run(self.compose + ["down", "-v", "--remove-orphans", "--timeout", "5"],
                              capture_output=True, text=True, env=self.env, timeout=120)
        left = run(["docker", "ps", "-aq", "--filter",
                    f"label=com.docker.compose.project={self.project}"]).stdout.split()
        if down.returncode != 0 or left:
            fail(f"docker compose down left {left} (exit {down.returncode}: {down.stderr})")


def expected_lanes(keys):
    """{key: lane or None}, by the command (the module's own code) on the edge's config."""
    p = subprocess.run([COMMAND, "sample", EDGE_CONFIG, "--lanes"], input="\n".join(keys) + "\n",
                       capture_output=True, text=True, check=True)
    lanes = {}
    for line in p.stdout.splitlines():
        key, _, lane = line.partition("\t")
        lanes[key] = lane or None
    if sorted(lanes) != sorted(keys):
        fail(f"traffic-mirror sample --lanes answered for {len(lanes)} of {len(keys)} keys")
    return lanes


def main_route():
    return [("a", "main"), ("b", "main"), ("c", "main")]


def lane_route():
    return [("a", "main"), ("b", LANE), ("c", "main")]


def check_started(bed):
    t0 = time.monotonic()
    bed.started = True  # from here on, down() runs whatever happens
    bed.compose_run("up", "-d", "--wait", "--wait-timeout", "120", timeout=180)
    up = time.monotonic() - t0
    # Each Envoy configured the filter the way its config says, on the main thread and
    # each worker (edge 2, sidecars 1).
    edge_line = f"configured lanes {LANE} (header x-lane, baggage lane)"
    hop_line = f"configured lanes followed {LANE} (header x-lane, baggage lane)"
    for service, workers, line in [("edge", 2, edge_line), ("a-sidecar", 1, hop_line), ("b-sidecar", 1, hop_line),
                                   ("b-feature-17-sidecar", 1, hop_line)]:
        threads = set(re.findall(rf"\]\[(\d+)\]\[info\]\[wasm\].*traffic-mirror: {re.escape(line)}$",
                                 "\n".join(bed.logs(service)), re.M))
        if len(threads) < workers + 1:
            fail(f"{service}: the filter logged '{line}' on threads {sorted(threads)}, not on the main thread "
                 f"and {workers} worker(s)")
    # a's sidecar started after b's instances (depends_on): its health checks found both.
    poll("a's sidecar to see b and b-feature-17 healthy",
         lambda: all(healthy_in_a(bed, cluster) for cluster in ("b-main", "b-feature-17")), timeout=20, interval=0.2)
    if any("traffic-mirror" in line for line in bed.logs("c-sidecar")):
        fail("c's sidecar runs the filter: c calls no service, its sidecar has no outbound listener")
    print(f"     up in {up:.1f}s (edge, a, b, b-feature-17, c, each with its sidecar)", flush=True)


def check_paths(bed):
    keys = [f"user-{i}" for i in range(1, USERS + 1)]
    bed.lanes = expected_lanes(keys)
    bed.lane_users = [k for k in keys if bed.lanes[k] == LANE]
    bed.main_users = [k for k in keys if bed.lanes[k] is None]
    if not bed.lane_users or not bed.main_users or len(bed.lane_users) + len(bed.main_users) != len(keys):
        fail(f"traffic-mirror sample puts {len(bed.lane_users)} of {len(keys)} users in {LANE} and "
             f"{len(bed.main_users)} in none: the check would show nothing")
    for rnd in range(1, ROUNDS + 1):
        for i, user in enumerate(keys):
            own = [("tenant", f"t{i}")] if i % 2 == 0 else []
            headers = {"baggage": f"tenant=t{i}"} if own else {}
            path = f"/checkout/{rnd}/{user}"
            if bed.lanes[user]:
                status, hops = bed.lane_request(user, path, headers)
                want_route, want_baggage = lane_route(), [("lane", LANE)] + own
            else:
                status, hops = bed.get(path, dict(headers, **{"x-user-id": user}))
                want_route, want_baggage = main_route(), own
            if status != 200 or route_of(hops) != want_route:
                fail(f"{user} ({bed.lanes[user] or 'main'}) GET {path}: {status}, path {hops}, not {want_route}")
            for service, lane, baggage in hops:
                if baggage != want_baggage:
                    fail(f"{user} GET {path}: {service} ({lane}) received baggage {baggage}, not {want_baggage} "
                         f"(the path: {hops})")
    # The baggage went on because the instrumented applications carried it: their
    # outgoing calls carry a traceparent too, which the edge does not send.
    sent = {f"/checkout/{rnd}/{u}" for rnd in range(1, ROUNDS + 1) for u in keys}
    for service, traced in [("a", False), ("b", True), ("b-feature-17", True), ("c", True)]:
        records = [r for r in bed.app_records(service) if r["path"] in sent]
        untraced = [r for r in records if bool(r.get("traceparent")) != traced]
        if not records or untraced:
            fail(f"{service}: {len(untraced)} of {len(records)} requests {'without' if traced else 'with'} "
                 f"a traceparent: {untraced[:1]}")
    print(f"     {len(bed.lane_users)} of {USERS} users in {LANE} (as `traffic-mirror sample --lanes` says): "
          f"a -> b-feature-17 -> c; {len(bed.main_users)} main: a -> b -> c; {ROUNDS * USERS} requests; "
          "baggage carried a -> b -> c by the instrumentation", flush=True)


def check_forged_at_edge(bed):
    main_user, lane_user = bed.main_users[0], bed.lane_users[0]
    forged = [
        ({"x-lane": LANE}, []),
        ({"baggage": f"lane={LANE}"}, []),
        ({"baggage": f"lane={LANE},tenant=acme"}, [("tenant", "acme")]),
        ({"x-lane": LANE, "baggage": f"tenant=acme, lane={LANE}"}, [("tenant", "acme")]),
    ]
    for i, (headers, want_baggage) in enumerate(forged):
        status, hops = bed.get(f"/forged/{i}", dict(headers, **{"x-user-id": main_user}))
        if status != 200 or route_of(hops) != main_route() or any(h[2] != want_baggage for h in hops):
            fail(f"main user {main_user} forging {headers}: {status}, path {hops}; expected main everywhere "
                 f"with baggage {want_baggage}")
    # A lane user's own lane entry (and x-lane) is replaced by the edge's, not kept beside it.
    status, hops = bed.lane_request(lane_user, "/forged/lane-user",
                                    {"x-lane": "main", "baggage": "lane=main,tenant=acme"})
    want_baggage = [("lane", LANE), ("tenant", "acme")]
    if status != 200 or route_of(hops) != lane_route() or any(h[2] != want_baggage for h in hops):
        fail(f"lane user {lane_user} sending lane=main: {status}, path {hops}")
    print(f"     {len(forged)} forged x-lane / baggage lane from a main user: main everywhere, other entries kept; "
          "a lane user's own lane entry replaced", flush=True)


HOP_CALLS = """
import json, sys, urllib.request
out = []
for path, headers in json.loads(sys.argv[1]):
    req = urllib.request.Request("{outbound}" + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            out.append([r.status, json.loads(r.read())])
    except Exception as exc:
        out.append([None, {{"error": str(exc)}}])
print(json.dumps(out))
"""


def check_forged_at_hop(bed):
    # Calls as a's application would make them, from inside its container, to its
    # sidecar's outbound listener; the answer is b's, with c's nested.
    calls = [("/hop/header-only", {"x-lane": LANE}, "main"),
             ("/hop/header-and-other-baggage", {"x-lane": LANE, "baggage": "tenant=acme"}, "main"),
             ("/hop/baggage", {"baggage": f"lane={LANE}"}, LANE)]
    code = HOP_CALLS.format(outbound=OUTBOUND)
    out = bed.compose_run("exec", "-T", "a", "python", "-c", code, json.dumps([[p, h] for p, h, _ in calls])).stdout
    results = json.loads(out)
    # Each counted where it went before any is judged (a failure here is not repeated below).
    for (path, headers, b_lane), (status, answer) in zip(calls, results):
        hops = path_of(answer)
        if "lane=" in headers.get("baggage", ""):
            bed.lane_at["a"] += 1
            if status == 200 and hops[0][0] == "b":
                bed.lane_at["b" if hops[0][1] == "main" else "b-feature-17"] += 1
    for (path, headers, b_lane), (status, answer) in zip(calls, results):
        hops = path_of(answer)
        want = [("b", b_lane), ("c", "main")]
        if status != 200 or route_of(hops) != want:
            fail(f"a call from a's container to its outbound listener with {headers}: {status}, path {hops}, "
                 f"not {want}")
    # b's main instance received the forged calls without x-lane: the hop removed it.
    seen = {r["path"]: r for r in bed.app_records("b") if r["path"].startswith("/hop/")}
    for path, _, b_lane in calls:
        if b_lane == "main" and (path not in seen or seen[path].get("x-lane") is not None):
            fail(f"b received {path} as {seen.get(path)}: x-lane should have been removed at a's sidecar")
    print("     x-lane without a baggage lane at a's outbound listener: b main, no x-lane at b; "
          f"baggage lane={LANE}: b-feature-17", flush=True)


def healthy_in_a(bed, cluster):
    """Whether a's sidecar has a healthy host in the cluster (b-main or b-feature-17)."""
    text = bed.sidecar_get("a", "/clusters")
    return re.search(rf"^{re.escape(cluster)}::[^:]+:\d+::health_flags::healthy$", text, re.M) is not None


def poll_lane(bed, user, want_lane, timeout, tag):
    """Sends the lane user's requests until b's `want_lane` instance serves one.
    Returns (seconds until then, requests sent, those that failed, slowest in seconds)."""
    t0 = time.monotonic()
    sent = failed = 0
    slowest = 0.0
    while True:
        t = time.monotonic()
        status, hops = bed.lane_request(user, f"/{tag}/{sent}")
        slowest = max(slowest, time.monotonic() - t)
        sent += 1
        if status == 200 and len(hops) == 3:
            if route_of(hops) not in (lane_route(), main_route()):
                fail(f"lane user {user}: path {hops}")
            if hops[1][1] == want_lane:
                return time.monotonic() - t0, sent, failed, slowest
        else:
            failed += 1
        if time.monotonic() - t0 > timeout:
            fail(f"lane user {user} not served by b {want_lane} within {timeout}s ({sent} requests, {failed} failed)")
        time.sleep(0.02)


class Background:
    """A command running while the test goes on; finish() waits for it and returns the
    time.monotonic() at which it ended."""

    def __init__(self, args, env):
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.out, self.ended = "", None
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        self.out, _ = self.proc.communicate()
        self.ended = time.monotonic()

    def finish(self, timeout):
        self.thread.join(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            self.thread.join()
            fail(f"{' '.join(self.args)} did not end within {timeout}s")
        if self.proc.returncode != 0:
            fail(f"{' '.join(self.args)} exited {self.proc.returncode}: {self.out}")
        return self.ended


def check_fallback(bed):
    user, main_user = bed.lane_users[0], bed.main_users[0]
    status, hops = bed.lane_request(user, "/before-stop")
    if status != 200 or route_of(hops) != lane_route():
        fail(f"before the stop, lane user {user}: {status}, path {hops}")
    # b-feature-17's sidecar starts its counters again when it restarts: check them now.
    before = bed.hop_stats("b-feature-17")
    if before.get(f"wasmcustom.traffic_lanes.{LANE}.followed") != bed.lane_at["b-feature-17"]:
        fail(f"b-feature-17's sidecar followed {before} lane requests before the stop, "
             f"{bed.lane_at['b-feature-17']} reached it")

    # Stop the lane instance (its sidecar, then its application) while lane requests go on.
    t_stop = time.monotonic()
    stop = Background(bed.compose + ["stop", "b-feature-17-sidecar", "b-feature-17"], bed.env)
    try:
        fell_back, sent, failed, slowest = poll_lane(bed, user, "main", 30, "during-stop")
        # Then on until the stop has ended (the application's address gone: a call to it
        # is refused by nobody) and a's sidecar's health check has marked the instance
        # unhealthy on its own; every lane request at b main meanwhile.
        unhealthy = None
        while unhealthy is None or stop.ended is None:
            t = time.monotonic()
            status, hops = bed.lane_request(user, f"/stopping/{sent}")
            slowest = max(slowest, time.monotonic() - t)
            sent += 1
            if status != 200 or route_of(hops) != main_route():
                failed += 1
            if unhealthy is None and not healthy_in_a(bed, "b-feature-17"):
                unhealthy = time.monotonic() - t_stop
            if time.monotonic() - t_stop > FALLBACK_LIMIT + 20:
                fail(f"after {FALLBACK_LIMIT + 20}s, the stop has {'' if stop.ended else 'not '}ended and a's "
                     f"sidecar has {'' if unhealthy else 'not '}marked b-feature-17 unhealthy")
    finally:
        stopped = stop.finish(60) - t_stop
    bed.lane_at["b-feature-17"] = 0  # its sidecar counts from its next start
    print(f"     stop: first lane request at b main {fell_back:.2f}s after `docker compose stop` was issued "
          f"(which returned after {stopped:.2f}s); a's health check marked b-feature-17 unhealthy {unhealthy:.2f}s "
          f"after it ({sent} lane requests until then, {failed} failed, slowest {slowest:.2f}s)", flush=True)
    if fell_back > FALLBACK_LIMIT or unhealthy > FALLBACK_LIMIT:
        fail(f"lane users reached b's main instance {fell_back:.2f}s and the health check failed {unhealthy:.2f}s "
             f"after the stop (limit {FALLBACK_LIMIT}s)")
    for i in range(5):
        status, hops = bed.lane_request(user, f"/stopped/{i}")
        if status != 200 or route_of(hops) != main_route():
            fail(f"lane user {user} with b-feature-17 stopped: {status}, path {hops}")
        status, hops = bed.get(f"/stopped/main/{i}", {"x-user-id": main_user})
        if status != 200 or route_of(hops) != main_route():
            fail(f"main user {main_user} with b-feature-17 stopped: {status}, path {hops}")

    # Start it again (its application, healthy, then its sidecar), lane requests going on.
    t_start = time.monotonic()
    start = Background(bed.compose + ["start", "b-feature-17", "b-feature-17-sidecar"], bed.env)
    try:
        came_back, sent2, failed2, slowest2 = poll_lane(bed, user, LANE, 60, "during-start")
    finally:
        started = start.finish(60) - t_start
    print(f"     start: first lane request at b-feature-17 {came_back:.2f}s after `docker compose start` was "
          f"issued, {came_back - started:.2f}s after it returned ({started:.2f}s: the application healthy, then "
          f"its sidecar started; {sent2} lane requests meanwhile, {failed2} failed, slowest {slowest2:.2f}s)",
          flush=True)
    if came_back - started > FALLBACK_LIMIT:
        fail(f"lane users came back to b-feature-17 {came_back - started:.2f}s after it was started "
             f"(limit {FALLBACK_LIMIT}s)")
    for i, lane_user in enumerate(bed.lane_users):
        status, hops = bed.lane_request(lane_user, f"/restarted/{i}")
        if status != 200 or route_of(hops) != lane_route():
            fail(f"lane user {lane_user} with b-feature-17 back: {status}, path {hops}")
    # a's sidecar retries a call refused or reset by the stopping instance on b's main one.
    if failed or failed2:
        fail(f"{failed} lane requests failed during the stop and {failed2} during the start")


def check_counters(bed):
    want_edge = {f'traffic_lanes_assigned{{lane="{LANE}"}}': bed.lane_at["edge"],
                 f'traffic_lanes_kept{{lane="{LANE}"}}': 0}
    got_edge = {k: v for k, v in bed.edge_series().items() if v or k in want_edge}
    if got_edge != want_edge:
        fail(f"the edge's /stats/prometheus: {got_edge}, expected {want_edge}")
    got, want = {}, {}
    for hop in HOPS:
        s = bed.hop_stats(hop)
        got[hop] = (s.get(f"wasmcustom.traffic_lanes.{LANE}.followed"), s.get("wasmcustom.traffic_lanes.unknown"),
                    sorted(k for k in s if not k.startswith((f"wasmcustom.traffic_lanes.{LANE}.",
                                                             "wasmcustom.traffic_lanes.unknown"))))
        want[hop] = (bed.lane_at[hop], 0, [])
    if got != want:
        fail(f"the hops' counters (followed, unknown, other lanes): {got}, expected {want}")
    bad = [f"{service}: {line}" for service in ("edge", "a-sidecar", "b-sidecar", "b-feature-17-sidecar")
           for line in bed.logs(service)
           if "[critical]" in line or ("[error]" in line and "wasm" in line) or "panic" in line]
    if bad:
        fail("Envoy logged errors:\n" + "\n".join(bad[:5]))
    print(f"     edge: assigned {bed.lane_at['edge']} to {LANE}; followed at a {bed.lane_at['a']}, "
          f"b {bed.lane_at['b']}, b-feature-17 {bed.lane_at['b-feature-17']} (since its restart); unknown 0",
          flush=True)


def main():
    # A SIGTERM (CI's timeout) still takes the testbed down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not engine_answers():
        if os.environ.get("CI") == "true":
            print("FAIL no Docker engine answers (docker info): the swim-lane testbed cannot start", flush=True)
            return 1
        print("SKIPPED the swim-lane testbed: no Docker engine answers (docker info); under CI=true this fails",
              flush=True)
        return 0
    L.require_module()
    if not os.access(COMMAND, os.X_OK):
        print(f"FAIL {COMMAND} is missing: cargo build --release -p traffic-mirror-cli", flush=True)
        return 1
    state = {}

    def prepare():
        compose = compose_command()
        t0 = time.monotonic()
        _, envoy_image, app_image = run(["bash", IMAGES, "--swimlanes"], timeout=900).stdout.split()
        print(f"     images ready in {time.monotonic() - t0:.1f}s: {envoy_image}, {app_image}", flush=True)
        env = dict(os.environ, TRAFFIC_MIRROR_ENVOY_IMAGE=envoy_image, TRAFFIC_MIRROR_APP_IMAGE=app_image,
                   TRAFFIC_MIRROR_PORT=str(free_port()), TRAFFIC_MIRROR_ADMIN_PORT=str(free_port()))
        state["bed"] = Testbed(compose, env)

    def on_bed(check, needs):
        def run_check():
            bed = state.get("bed")
            if bed is None or not all(getattr(bed, attr, None) for attr in needs):
                fail("not run: an earlier step failed (above)")
            try:
                check(bed)
            except BaseException:
                bed.dump_logs()
                raise
        return run_check

    def teardown():
        bed = state.get("bed")
        if bed is None or not bed.started:
            fail("not started")
        bed.down()

    rel = os.path.relpath(FILE, L.REPO)
    checks = [
        ("swim lanes: the test images (tests/deploy/compose_images.sh --swimlanes) and Compose v2", prepare),
        (f"swim-lane testbed ({rel}): started, the filter configured at the edge and in the hops' sidecars",
         on_bed(check_started, [])),
        ("paths: lane users a -> b-feature-17 -> c, main users a -> b -> c, baggage carried by OpenTelemetry",
         on_bed(check_paths, ["started"])),
        ("forged at the edge: x-lane or a baggage lane from a main user changes nothing",
         on_bed(check_forged_at_edge, ["lane_users"])),
        ("forged at a hop: x-lane without a baggage lane at a's outbound listener goes main",
         on_bed(check_forged_at_hop, ["lane_users"])),
        ("fallback: b-feature-17 stopped, lane users at b main (measured); started, back (measured)",
         on_bed(check_fallback, ["lane_users"])),
        ("counters: edge assigned, each hop's followed, unknown 0", on_bed(check_counters, ["lane_users"])),
        ("torn down: docker compose down -v, no container of the project left", teardown),
    ]
    try:
        return L.run_checks(checks)
    finally:
        # An interruption (SIGTERM, Ctrl-C) between the checks still takes it down.
        bed = state.get("bed")
        if bed is not None and bed.started and not bed.torn_down:
            bed.down()

if __name__ == "__main__":
    sys.exit(main())
