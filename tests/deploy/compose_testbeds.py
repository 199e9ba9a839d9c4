#!/usr/bin/env python3
"""Starts the docker-compose testbeds for real and checks what each container received.

For each of envoy/docker-compose.yaml (a front proxy: envoy -> primary, copies to
mirror) and envoy/docker-compose.sidecar.yaml (Envoy in the network namespace of app,
copies to staging):

- `docker compose up -d --wait` with the images of tests/deploy/compose_images.sh (local
  stand-ins for the official images, which no registry here serves), free loopback ports
  and a project name of its own; the health checks are the compose file's;
- Envoy runs as a non-root user and loaded the mounted module on both workers;
- requests with known x-user-ids (GETs and POSTs with bodies, with a cookie and an
  authorization header) and some without one go to the published port;
- the primary (app) received every request, unchanged, exactly once;
- the mirror (staging) received exactly the users `traffic-mirror sample` names for the
  Envoy config, each once, as the config shapes the copy (loop header, removed, redacted
  and set headers, authority with its suffix, same path, method, x-request-id and body);
  the keyless ones as `on_missing_key` says (drawn at random, or never);
- /stats/prometheus counts the same: requests, sampled, dispatched, responses_2xx,
  skipped_missing_key, in_flight back at 0, the latency histogram one per copy;
- a target with `compare` (the front proxy's: its upstreams answer a JSON catalog, the
  mirror with a seeded bug, every 7th item's price one cent too high, and `updated_at`
  different on every answer, which the config ignores): each copy ends in one verdict,
  match + body = dispatched, body is exactly the copies of the items the mirror gets
  wrong (more than none), traffic_mirror_compare_path{target=...,json_path="/price"}
  counts them and no other path, and Envoy logged each (up to log_per_minute) at /price;
- `docker compose down -v` in every case, and no container of the project is left.

The containers' logs are printed when a check fails. Without a Docker engine it says so
and exits 0, unless CI=true, where that is a failure.

Run with the project's venv: .venv/bin/python tests/deploy/compose_testbeds.py
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
import envoylib as L  # noqa: E402
from envoylib import fail, parse_prometheus, poll  # noqa: E402

COMMAND = os.path.join(L.REPO, "target", "release", "traffic-mirror")
IMAGES = os.path.join(L.REPO, "tests", "deploy", "compose_images.sh")
# Compose v2, when the Docker CLI has no compose plugin (scripts/setup.sh test).
LOCAL_COMPOSE = os.path.join(L.REPO, ".tools", "docker-compose")
USERS = 120
KEYLESS = 40
HOST = "shop.example.com"
# The catalog mirror's seeded bug (envoy/compose/upstream.py --catalog-bug): the items whose
# id is a multiple of this answer a wrong price, at JSON path /price.
BUGGY_EVERY = 7
BUGGY_PATH = "/price"
# compare.log_per_minute when the config leaves it out (core/src/config/parse_compare.rs).
DEFAULT_LOG_PER_MINUTE = 6


class Testbed:
    def __init__(self, name, file, envoy_config, primary, mirror, target, path_prefix):
        self.name, self.primary, self.mirror, self.target = name, primary, mirror, target
        self.file = os.path.join(L.REPO, "envoy", file)
        self.envoy_config = os.path.join(L.REPO, "envoy", envoy_config)
        self.path_prefix = path_prefix


TESTBEDS = [
    Testbed("front proxy", "docker-compose.yaml", "compose/envoy.yaml", "primary", "mirror", "mirror", "/api/items/"),
    Testbed("sidecar", "docker-compose.sidecar.yaml", "compose/sidecar-envoy.yaml", "app", "staging", "staging",
            "/orders/"),
]


def run(args, timeout=120, check=True, env=None):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        fail(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def engine_answers():
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def compose_command():
    """`docker compose` (v2), or the one scripts/setup.sh installed."""
    p = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if p.returncode == 0 and p.stdout.strip().lstrip("v").startswith("2"):
        return ["docker", "compose"]
    if os.access(LOCAL_COMPOSE, os.X_OK):
        return [LOCAL_COMPOSE]
    fail("no Docker Compose v2: install the compose plugin, or run scripts/setup.sh test")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_users(bed, keys):
    """The keys the first target mirrors, by the command (the module's own code)."""
    p = subprocess.run([COMMAND, "sample", bed.envoy_config], input="\n".join(keys) + "\n",
                       capture_output=True, text=True, check=True)
    return set(p.stdout.split())


def plugin_config(bed):
    cfg = L.load_yaml(bed.envoy_config)
    [(_, wasm)] = L.wasm_filters(cfg)
    return L.plugin_config_json(wasm)


def send(port, method, path, headers, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        text = r.read()
        if r.status != 200:
            fail(f"{method} {path}: status {r.status}: {text[:200]!r}")
        return text
    finally:
        conn.close()


def logs(compose, service, env):
    """A service's log lines (compose v2 writes a clear-line escape before each)."""
    out = run(compose + ["logs", "--no-color", "--no-log-prefix", service], env=env).stdout
    return [line.replace("\x1b[2K", "") for line in out.splitlines()]


def envoy_log(compose, env):
    return "\n".join(logs(compose, "envoy", env))


def records(compose, service, env):
    """What an upstream received: its JSON lines (the startup line left out)."""
    lines = [json.loads(line) for line in logs(compose, service, env) if line.startswith("{")]
    return [r for r in lines if "listening" not in r]


def item_id(path):
    """The item id of /api/items/<id>?..., or None."""
    last = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else None


def compare_errors(bed, target, series, mirrored, envoy_lines):
    """What is wrong with a comparing target's verdicts, as a list of messages."""
    label = f'{{target="{bed.target}"}}'
    got = {r: series.get(f"traffic_mirror_compare_{r}{label}") for r in L.compare_result_names()}
    dispatched = series.get(f"traffic_mirror_dispatched{label}")
    buggy = [c for c in mirrored if (item_id(c["path"]) or 1) % BUGGY_EVERY == 0]
    errors = [f"no series traffic_mirror_compare_{r}{label}" for r, v in got.items() if v is None]
    match, body = got.get("match") or 0, got.get("body") or 0
    others = {r: v for r, v in got.items() if v and r not in ("match", "body")}
    if match + body != dispatched or others:
        errors.append(f"compare: match {match} + body {body} is not the {dispatched} copies dispatched (others {others})")
    if body != len(buggy) or not body:
        errors.append(f"compare: body {body}, but {len(buggy)} copies were of items the mirror gets wrong "
                      f"({sorted(item_id(c['path']) for c in buggy)})")
    paths = {k: v for k, v in series.items() if k.startswith("traffic_mirror_compare_path{")}
    want = {f'traffic_mirror_compare_path{{target="{bed.target}",json_path="{BUGGY_PATH}"}}': len(buggy)}
    if paths != want:
        errors.append(f"compare path series {paths}, expected {want}")
    per_minute = target["compare"].get("log_per_minute", DEFAULT_LOG_PER_MINUTE)
    logged = [line for line in envoy_lines if f"traffic-mirror: target {bed.target}: compare " in line]
    at_path = [line for line in logged if re.search(
        rf"compare body at {re.escape(BUGGY_PATH)}: primary 200 .*, mirror 200 .*; (GET|POST) /api/items/(\d+) ", line)
        and int(re.search(r"/api/items/(\d+) ", line).group(1)) % BUGGY_EVERY == 0]
    if len(logged) != min(len(buggy), per_minute) or len(at_path) != len(logged):
        errors.append(f"Envoy logged {len(logged)} mismatches ({len(at_path)} at {BUGGY_PATH} of a wrong item), "
                      f"expected {min(len(buggy), per_minute)}: {logged[:2]}")
    return errors


def check_testbed(bed, compose_base, env):
    project = f"tm-test-{os.getpid()}-{bed.primary}"
    compose = compose_base + ["-p", project, "-f", bed.file]
    port, admin = int(env["TRAFFIC_MIRROR_PORT"]), int(env["TRAFFIC_MIRROR_ADMIN_PORT"])
    target = plugin_config(bed)["targets"][0]
    assert target["name"] == bed.target, target
    t0 = time.monotonic()
    try:
        run(compose + ["up", "-d", "--wait", "--wait-timeout", "120"], timeout=180, env=env)
        started = time.monotonic() - t0

        # Envoy runs as the image's unprivileged user, and loaded the mounted module on
        # each of its two workers.
        status = run(compose + ["exec", "-T", "envoy", "cat", "/proc/1/status"], env=env).stdout
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        if uid == "0":
            fail("Envoy runs as root in its container")
        # (Envoy's log lines: "[time][thread][level][logger] ..."; the main thread
        # configures the plugin too, before it starts the workers.)
        log = envoy_log(compose, env)
        main_thread = re.search(r"\]\[(\d+)\]\[info\]\[main\].*starting main dispatch loop", log)
        workers = set(re.findall(rf"\]\[(\d+)\]\[info\]\[wasm\].*traffic-mirror: configured targets {bed.target}$",
                                 log, re.M)) - {main_thread and main_thread.group(1)}
        if len(workers) != 2:
            fail(f"the module was configured on worker threads {sorted(workers)}, not on each of 2")

        # The requests: keyed GETs, every fifth a POST with a body, then keyless ones.
        sent = []
        for i in range(1, USERS + KEYLESS + 1):
            user = f"user-{i}" if i <= USERS else None
            method = "POST" if i % 5 == 0 else "GET"
            body = json.dumps({"order": i, "pad": "x" * (i * 7)}).encode() if method == "POST" else None
            headers = {"Host": HOST, "Cookie": f"session=s-{i}", "Authorization": f"Bearer t-{i}"}
            if user:
                headers["x-user-id"] = user
            if body is not None:
                headers["content-type"] = "application/json"
            path = f"{bed.path_prefix}{i}?page=1"
            send(port, method, path, headers, body)
            sent.append({"i": i, "user": user, "method": method, "path": path,
                         "body_bytes": len(body or b""), "headers": headers})
        keyed = [s["user"] for s in sent if s["user"]]
        expected = expected_users(bed, keyed)
        if not 0 < len(expected) < len(keyed):
            fail(f"the command picks {len(expected)} of {len(keyed)} users: the check would show nothing")

        comparing = "compare" in target

        def stats():
            series, _ = parse_prometheus(L.http("GET", f"http://127.0.0.1:{admin}/stats/prometheus")[1].decode())
            get = lambda name: series.get(f'traffic_mirror_{name}{{target="{bed.target}"}}')  # noqa: E731
            get.series = series
            return get

        def verdicts(s):
            return sum(v for k, v in s.series.items()
                       if re.match(rf'traffic_mirror_compare_[a-z_]+{{target="{bed.target}"}}$', k)
                       and not k.startswith("traffic_mirror_compare_path"))
        # Every copy answered and counted (and, comparing, judged), and the histogram
        # merged (every stats_flush_interval: a second in the testbeds' configs).
        poll("every copy to end and the latency histogram to count it",
             lambda: (s := stats())("in_flight") == 0 and s("dispatched") is not None
             and s("responses_2xx") == s("dispatched") and s("latency_ms_count") == s("dispatched")
             and (not comparing or verdicts(s) == s("dispatched")),
             timeout=30, interval=0.2)
        s = stats()
        # The mirror logs a copy before it answers, so all are in its log by now.
        mirrored = records(compose, bed.mirror, env)

        # The primary: every request, unchanged, once.
        primary = records(compose, bed.primary, env)
        if len(primary) != len(sent):
            fail(f"{bed.primary} received {len(primary)} requests, {len(sent)} were sent")
        by_id = {}
        for want, got in zip(sent, primary):
            h = got["headers"]
            seen = (got["method"], got["path"], got["authority"], got["body_bytes"], h.get("x-user-id"),
                    h.get("cookie"), h.get("authorization"), h.get("x-traffic-mirror"))
            should = (want["method"], want["path"], HOST, want["body_bytes"], want["user"],
                      want["headers"]["Cookie"], want["headers"]["Authorization"], None)
            if seen != should:
                fail(f"{bed.primary} received {seen}, not {should}")
            by_id[h["x-request-id"]] = want

        # The mirror: exactly the sampled users, each once, shaped by the config.
        ops = target.get("headers", {})
        users = [r["headers"].get("x-user-id") for r in mirrored]
        keyed_copies = sorted(u for u in users if u)
        if keyed_copies != sorted(expected):
            fail(f"{bed.mirror} received users {keyed_copies}, traffic-mirror sample names {sorted(expected)}")
        keyless_copies = len(users) - len(keyed_copies)
        if target.get("on_missing_key", "skip") == "skip" and keyless_copies:
            fail(f"{keyless_copies} requests without x-user-id were copied under on_missing_key skip")
        for copy in mirrored:
            h = copy["headers"]
            want = by_id.get(h.get("x-request-id"))
            if want is None:
                fail(f"a copy whose x-request-id the primary never saw: {copy}")
            problems = []
            if (copy["method"], copy["path"], copy["body_bytes"]) != (want["method"], want["path"], want["body_bytes"]):
                problems.append("method, path or body differ from the request's")
            if h.get("x-traffic-mirror") != bed.target:
                problems.append("no loop header with the target's name")
            if copy["authority"] != HOST + target.get("host_suffix", "-shadow"):
                problems.append(f"authority {copy['authority']}")
            if "cookie" in ops.get("remove", []) and "cookie" in h:
                problems.append("cookie not removed")
            if "authorization" in ops.get("redact", []):
                if h.get("authorization") != "[REDACTED]":
                    problems.append("authorization not redacted")
            elif h.get("authorization") != want["headers"]["Authorization"]:
                problems.append("authorization changed")
            for name, value in ops.get("set", {}).items():
                if h.get(name) != value:
                    problems.append(f"{name} is {h.get(name)!r}, not {value!r}")
            if problems:
                fail(f"copy of request {want['i']}: {'; '.join(problems)}: {copy}")

        # The counters say the same.
        skip = target.get("on_missing_key", "skip") == "skip"
        want_stats = {
            "requests": len(sent), "sampled": len(mirrored), "dispatched": len(mirrored),
            "responses_2xx": len(mirrored), "skipped_missing_key": KEYLESS if skip else 0,
            "dispatch_failed": 0, "responses_failed": 0, "responses_5xx": 0, "in_flight": 0,
            "latency_ms_count": len(mirrored),
        }
        got_stats = {name: s(name) for name in want_stats}
        if got_stats != want_stats:
            fail(f"/stats/prometheus: {got_stats}, expected {want_stats}")
        compared = ""
        if comparing:
            errors = compare_errors(bed, target, s.series, mirrored, logs(compose, "envoy", env))
            if errors:
                fail("; ".join(errors))
            compared = (f"; compared: match {s('compare_match'):.0f}, body {s('compare_body'):.0f} "
                        f"at json_path=\"{BUGGY_PATH}\"")
        bad = [line for line in logs(compose, "envoy", env)
               if "[critical]" in line or ("[error]" in line and "wasm" in line) or "panic" in line]
        if bad:
            fail("Envoy logged errors:\n" + "\n".join(bad[:5]))
        print(f"     {bed.name}: up in {started:.1f}s; {len(sent)} requests, {len(keyed_copies)} of {len(keyed)} "
              f"users copied as `traffic-mirror sample` names them, {keyless_copies} of {KEYLESS} keyless "
              f"({'never' if skip else 'drawn at random'}){compared}; Envoy uid {uid}", flush=True)
    except BaseException:
        dump = subprocess.run(compose + ["logs", "--no-color", "--timestamps"], capture_output=True, text=True, env=env)
        print(f"---- {bed.name}: docker compose logs ----\n{dump.stdout}{dump.stderr}---- end of logs ----", flush=True)
        raise
    finally:
        down = subprocess.run(compose + ["down", "-v", "--remove-orphans", "--timeout", "5"],
                              capture_output=True, text=True, env=env, timeout=120)
        left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).stdout.split()
        if down.returncode != 0 or left:
            fail(f"docker compose down left {left} (exit {down.returncode}: {down.stderr})")


def documented_commands(bed):
    """The commands a compose file's header gives (its lines "#   COMMAND")."""
    commands = []
    with open(bed.file) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith("#   ") and line[4:].strip():
                commands.append(line[4:].rstrip("\n"))
    return commands


def check_documented(bed, env):
    """Runs the header's commands as written, from the repository's top: only the ports
    (the published ones, and in the commands) and the images (by their variables) are
    this run's. Each must succeed; the file's own `down` ends it, and no container of its
    project is left."""
    port, admin = env["TRAFFIC_MIRROR_PORT"], env["TRAFFIC_MIRROR_ADMIN_PORT"]
    commands = documented_commands(bed)
    if not any(" up -d --wait" in c for c in commands) or not commands[-1].endswith(" down"):
        fail(f"{os.path.relpath(bed.file, L.REPO)}: its header gives no up ... down sequence: {commands}")
    compose = L.load_yaml(bed.file)
    project = compose["name"]
    shell_env = dict(env, PATH=os.path.expanduser("~/.cargo/bin") + os.pathsep + env.get("PATH", ""))
    ran = []
    try:
        for command in commands:
            command = command.replace("localhost:10000", f"localhost:{port}").replace("localhost:9901", f"localhost:{admin}")
            p = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=L.REPO, env=shell_env,
                               capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                fail(f"`{command}` exited {p.returncode}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
            ran.append(command)
    finally:
        if len(ran) < len(commands):
            subprocess.run(["bash", "scripts/compose.sh", "-f", bed.file, "down", "-v", "--remove-orphans"],
                           cwd=L.REPO, env=shell_env, capture_output=True, timeout=120)
        left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).stdout.split()
        if left:
            fail(f"project {project} left containers {left}")
    print(f"     {os.path.relpath(bed.file, L.REPO)}: its {len(commands)} header commands ran as written "
          f"(ports {port} and {admin}, the stand-in images)", flush=True)


def main():
    # A SIGTERM (CI's timeout) still takes the testbeds down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not engine_answers():
        if os.environ.get("CI") == "true":
            print("FAIL no Docker engine answers (docker info): the compose testbeds cannot start", flush=True)
            return 1
        print("SKIPPED the compose testbeds: no Docker engine answers (docker info); under CI=true this fails",
              flush=True)
        return 0
    L.require_module()
    if not os.access(COMMAND, os.X_OK):
        print(f"FAIL {COMMAND} is missing: cargo build --release -p traffic-mirror-cli", flush=True)
        return 1
    state = {}

    def prepare():
        state["compose"] = compose_command()
        python_image, envoy_image = run(["bash", IMAGES], timeout=900).stdout.split()
        state["env"] = dict(os.environ, TRAFFIC_MIRROR_ENVOY_IMAGE=envoy_image, TRAFFIC_MIRROR_PYTHON_IMAGE=python_image)

    def bed_check(bed):
        def check():
            if not state:
                fail("not started: the images or Compose are missing (above)")
            env = dict(state["env"], TRAFFIC_MIRROR_PORT=str(free_port()), TRAFFIC_MIRROR_ADMIN_PORT=str(free_port()))
            check_testbed(bed, state["compose"], env)
        return check

    def documented(bed):
        def check():
            if not state:
                fail("not started: the images or Compose are missing (above)")
            env = dict(state["env"], TRAFFIC_MIRROR_PORT=str(free_port()), TRAFFIC_MIRROR_ADMIN_PORT=str(free_port()))
            check_documented(bed, env)
        return check

    return L.run_checks(
        [("compose: the test images (tests/deploy/compose_images.sh) and Compose v2", prepare)]
        + [(f"compose testbed, {bed.name} ({os.path.relpath(bed.file, L.REPO)}): started, "
            f"every request at {bed.primary}, the sampled users at {bed.mirror}, stats agree, torn down",
            bed_check(bed)) for bed in TESTBEDS]
        + [(f"compose testbed, {bed.name}: the commands its file's header gives, as written (scripts/compose.sh)",
            documented(bed)) for bed in TESTBEDS])


if __name__ == "__main__":
    sys.exit(main())
