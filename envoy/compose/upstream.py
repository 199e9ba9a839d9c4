#!/usr/bin/env python3
"""A tiny HTTP upstream for the docker-compose testbed (and the deployment tests).

Answers every request with 200 and a short text, and logs one JSON line per request it
received on stdout: its name, method, path, authority, the headers that show what the
mirror did (x-user-id, x-request-id, x-traffic-mirror, authorization, cookie) and the
body length. So `docker compose logs primary mirror` shows what each side received.
GET /healthz (the compose health checks) is answered and not logged.

    python3 upstream.py --name primary --port 8080 [--host 0.0.0.0]

With --port 0 it binds a free port; the first line it prints is always
{"listening": PORT, "name": NAME}.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN_HEADERS = ("x-user-id", "x-request-id", "x-traffic-mirror", "x-lane", "x-env", "authorization", "cookie")


_log_lock = threading.Lock()


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
    args = parser.parse_args()

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
            self.answer(f"{args.name}: {self.command} {self.path}\n".encode())

        def answer(self, reply):
            self.send_response(200)
            self.send_header("content-type", "text/plain")
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
