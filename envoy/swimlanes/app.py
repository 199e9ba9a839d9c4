#!/usr/bin/env python3
"""One service of the swim-lane testbed (envoy/docker-compose.swimlanes.yaml runs it as
a, b, b-feature-17 and c). An ordinary application: it knows nothing of lanes.

On each request it calls the next service, if it has one, with the same path, and
answers JSON with its own name and lane label and the next service's answer nested:

    {"service": "a", "lane": "main", "baggage": "...",
     "next": {"service": "b", "lane": "feature-17", "baggage": "...",
              "next": {"service": "c", "lane": "main", "baggage": "...", "next": null}}}

so one answer shows the whole path a request took. `baggage` is the W3C baggage header
the service received, shown so that the path also shows what travelled with it. It
forwards no header by hand: run under OpenTelemetry's auto-instrumentation, its Flask
server takes the incoming trace context and baggage and its `requests` calls carry them
on (the default propagators, tracecontext and baggage).

    SERVICE=a LANE=main NEXT_URL=http://127.0.0.1:15001 PORT=8080 \\
      OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
      opentelemetry-instrument python app.py

SERVICE: its name; LANE: the label it answers with ("main" or a lane's name; only a
label, the app does nothing with it); NEXT_URL: the base URL its calls go to (its
sidecar's outbound listener), unset for the last service; HOST (127.0.0.1) and PORT
(8080): where it listens. If the next service does not answer 200, it answers 502 with
that status and the start of the body under "next". GET /healthz answers "ok" and calls
nothing. One JSON line per request (not /healthz) is logged on stdout.
"""

import json
import os
import sys

import requests
from flask import Flask, Response, request

SERVICE = os.environ["SERVICE"]
LANE = os.environ.get("LANE", "main")
NEXT_URL = os.environ.get("NEXT_URL") or None

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return Response("ok\n", mimetype="text/plain")


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def serve(path):
    answer = {"service": SERVICE, "lane": LANE, "baggage": request.headers.get("baggage"), "next": None}
    status = 200
    if NEXT_URL:
        try:
            reply = requests.get(f"{NEXT_URL}/{path}", timeout=10)
            if reply.status_code == 200:
                answer["next"] = reply.json()
            else:
                answer["next"] = {"status": reply.status_code, "body": reply.text[:200]}
                status = 502
        except requests.RequestException as exc:
            answer["next"] = {"error": str(exc)[:200]}
            status = 502
    print(json.dumps({"service": SERVICE, "lane": LANE, "path": "/" + path, "status": status,
                      "baggage": answer["baggage"], "x-lane": request.headers.get("x-lane"),
                      "traceparent": request.headers.get("traceparent")}), flush=True)
    return Response(json.dumps(answer) + "\n", status=status, mimetype="application/json")


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8080")),
            threaded=True)
    sys.exit(0)
