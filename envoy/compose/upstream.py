#!/usr/bin/env python3
"""A tiny HTTP upstream for the docker-compose testbed (and the deployment tests).

Answers every request with 200 and a short text, and logs one JSON line per request it
received on stdout: its name, method, path, authority, the headers that show what the
mirror did (x-user-id, x-request-id, x-traffic-mirror, authorization, cookie) and the
body length. So `docker compose logs primary mirror` shows what each side received.
GET /healthz (the compose health checks) is answered and not logged.

    python3 upstream.py --name primary --port 8080 [--host 0.0.0.0] [--catalog | --catalog-bug]

--catalog answers a small JSON catalog API instead (the `compare` testbed), as
examples/upstream.rs --catalog does, byte for byte: /api/items/<id> (any method) with one
item, /api/items?page=P&per_page=N with a page of them, every field computed from the id
but `updated_at`, the time of the answer (different on every answer); other paths as
without it. --catalog-bug is the same catalog with a seeded bug, as a candidate under
test: the price of every 7th item (ids that are multiples of 7) is one cent too high.

With --port 0 it binds a free port; the first line it prints is always
{"listening": PORT, "name": NAME}.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN_HEADERS = ("x-user-id", "x-request-id", "x-traffic-mirror", "x-lane", "x-env", "authorization", "cookie")


_log_lock = threading.Lock()

# The catalog (--catalog): the same answers as tests/support/upstream.rs's Catalog.
MAX_ID = 999_999_999
BUGGY_EVERY = 7
MAX_PER_PAGE = 50
NAMES = ("lamp", "kettle", "chair", "teapot", "blanket", "mug", "clock", "vase")
TAGS = ("home", "kitchen", "living", "gift")


def now_rfc3339():
    ns = time.time_ns()
    secs, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def price_cents(item_id, bug):
    right = 199 + (item_id * 7919) % 9800
    return right + 1 if bug and item_id % BUGGY_EVERY == 0 else right


def catalog_item(item_id, bug, updated_at=None):
    cents = price_cents(item_id, bug)
    tags = [TAGS[item_id % len(TAGS)]] + (["sale"] if item_id % 3 == 0 else [])
    item = (f'{{"id":{item_id},"name":"{NAMES[item_id % len(NAMES)]} {item_id}",'
            f'"price":{cents // 100}.{cents % 100:02d},"currency":"EUR","stock":{(item_id * 13) % 50},'
            f'"tags":[{",".join(f"{chr(34)}{t}{chr(34)}" for t in tags)}]')
    if updated_at is not None:
        item += f',"updated_at":"{updated_at}"'
    return item + "}"


def digits(text):
    """A decimal number of ASCII digits only (no sign) that fits in 64 bits, or None."""
    if not text or not (text.isascii() and text.isdigit()) or int(text) >= 2**64:
        return None
    return int(text)


def catalog_answer(target, bug):
    """(status, JSON body) for a catalog path, or None."""
    path, _, query = target.partition("?")
    if path.endswith("/"):
        path = path[:-1]
    if path == "/api/items":
        params = {}
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            if eq and key not in params:
                params[key] = value

        def number(name, default):
            value = digits(params.get(name))
            return default if value is None else value

        page = min(max(number("page", 1), 1), MAX_ID)
        per_page = min(max(number("per_page", 5), 1), MAX_PER_PAGE)
        first = (page - 1) * per_page + 1
        items = ",".join(catalog_item(i, bug) for i in range(first, first + per_page) if i <= MAX_ID)
        return 200, f'{{"page":{page},"per_page":{per_page},"items":[{items}],"updated_at":"{now_rfc3339()}"}}'
    if not path.startswith("/api/items/"):
        return None
    item_id = digits(path[len("/api/items/"):])
    if item_id is not None and 1 <= item_id <= MAX_ID:
        return 200, catalog_item(item_id, bug, now_rfc3339())
    return 404, '{"error":"no such item"}'


def log_line(record):
    # One write per line under a lock: concurrent requests never interleave their lines.
    with _log_lock:
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--catalog", action="store_true", help="answer a JSON catalog API")
    parser.add_argument("--catalog-bug", action="store_true",
                        help="the catalog, with every 7th item's price one cent too high")
    args = parser.parse_args()
    catalog = args.catalog or args.catalog_bug

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # http.server writes headers and body in two writes; without this every
        # proxied request waits for a delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def handle_one(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/healthz":
                return self.answer(b"ok\n")
            record = {
                "name": args.name,
                "method": self.command,
                "path": self.path,
                "authority": self.headers.get("host"),
                "headers": {h: self.headers.get(h) for h in SHOWN_HEADERS if h in self.headers},
                "body_bytes": len(body),
            }
            log_line(record)
            found = catalog_answer(self.path, args.catalog_bug) if catalog else None
            if found is not None:
                status, body = found
                return self.answer(body.encode(), status, "application/json")
            self.answer(f"{args.name}: {self.command} {self.path}\n".encode())

        def answer(self, reply, status=200, content_type="text/plain"):
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_one

        def log_message(self, format, *a):  # the JSON line above is the log
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    log_line({"listening": server.server_address[1], "name": args.name})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
