#!/usr/bin/env python3
"""HTTP/2 and gRPC peers for the end-to-end tests, on loopback: a real gRPC server
(grpcio) and client, and an HTTP/2 client that writes exactly the frames it is given
(h2). Driven by the Rust tests (tests/support/python.rs) and the deploy checks through
JSON on standard input and output.

  http2.py grpc-server --name NAME [--code N] [--delay-ms N]
      Serves every method of every service on 127.0.0.1 (a free port) with raw bytes (no
      protobuf). Prints {"listening": PORT}, then one JSON line per call as it ends:
      {"server", "method", "metadata": [[key, value]...], "messages": [hex...]}.
      Each call is answered with one message ("reply:" and the first message), or, with
      --code N (N > 0), fails with that status without sending a message (gRPC sends a
      trailers-only answer). Runs until its standard input closes.

  http2.py grpc-call HOST:PORT
      Reads [{"method", "kind": "unary"|"client_stream", "messages": [hex...],
      "metadata": [[key, value]...]}] and makes each call on one channel; prints
      [{"code", "details", "reply": hex|null}].

  http2.py h2 HOST:PORT
      Reads [{"headers": [[name, value]...], "data": [hex...], "cancel": bool}] and
      sends each request on one cleartext HTTP/2 connection (prior knowledge), one after
      the other: its headers as given (repeated names kept, in order), then each data
      chunk as DATA frames of its own (split at the peer's frame size). Prints
      [{"headers", "data": hex, "trailers", "frames": ["HEADERS", "DATA", ...,
      "END_STREAM"]}]. With "cancel", the stream is never ended: after its data the
      client resets it (RST_STREAM, CANCEL) and waits for no answer.
"""

import json
import socket
import sys
import threading
import time
from concurrent import futures

sys.dont_write_bytecode = True


def out(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------
# gRPC server


def grpc_server(name, code, delay_ms):
    import grpc

    lock = threading.Lock()

    def handle(method, request_iterator, context):
        messages = [m.hex() for m in request_iterator]
        metadata = [[k, v if isinstance(v, str) else v.hex()] for k, v in context.invocation_metadata()]
        if delay_ms:
            time.sleep(delay_ms / 1000)
        with lock:
            out({"server": name, "method": method, "metadata": metadata, "messages": messages})
        if code:
            context.abort(grpc.StatusCode(status_code(code)), f"{name} fails every call")
        first = bytes.fromhex(messages[0]) if messages else b""
        yield b"reply:" + first

    class AnyMethod(grpc.GenericRpcHandler):
        """Every method, as a stream of raw messages each way: on the wire a unary call
        is a stream of one."""

        def service(self, details):
            method = details.method
            return grpc.stream_stream_rpc_method_handler(
                lambda request_iterator, context: handle(method, request_iterator, context))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((AnyMethod(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    out({"listening": port})
    try:
        sys.stdin.read()  # until the parent closes it (or goes away)
    finally:
        server.stop(0)


def status_code(code):
    import grpc

    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.value
    raise SystemExit(f"no gRPC status {code}")


# ---------------------------------------------------------------------------------------
# gRPC client


def grpc_call(target, calls):
    import grpc

    results = []
    with grpc.insecure_channel(target) as channel:
        for call in calls:
            messages = [bytes.fromhex(m) for m in call.get("messages", [])]
            metadata = [tuple(kv) for kv in call.get("metadata", [])]
            try:
                if call.get("kind", "unary") == "unary":
                    reply = channel.unary_unary(call["method"])(messages[0], metadata=metadata, timeout=20)
                else:
                    reply = channel.stream_unary(call["method"])(iter(messages), metadata=metadata, timeout=20)
                results.append({"code": 0, "details": "", "reply": reply.hex()})
            except grpc.RpcError as exc:
                results.append({"code": exc.code().value[0], "details": exc.details(), "reply": None})
    out(results)


# ---------------------------------------------------------------------------------------
# HTTP/2 client, frame by frame


def h2_requests(target, requests):
    import h2.config
    import h2.connection
    import h2.events

    host, port = target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    results = []

    def pump(stream_id, result):
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the server closed the connection")
        for event in conn.receive_data(data):
            if getattr(event, "stream_id", stream_id) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                result["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in event.headers]
                result["frames"].append("HEADERS")
            elif isinstance(event, h2.events.DataReceived):
                result["data"] += event.data.hex()
                result["frames"].append("DATA")
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                result["trailers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in event.headers]
                result["frames"].append("HEADERS")
            elif isinstance(event, h2.events.StreamEnded):
                result["frames"].append("END_STREAM")
                result["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                result["frames"].append("RST_STREAM")
                result["ended"] = True
        sock.sendall(conn.data_to_send())

    for request in requests:
        stream_id = conn.get_next_available_stream_id()
        chunks = [bytes.fromhex(c) for c in request.get("data", [])]
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request["headers"]]
        conn.send_headers(stream_id, headers, end_stream=not chunks)
        sock.sendall(conn.data_to_send())
        result = {"headers": [], "data": "", "trailers": [], "frames": [], "ended": False}
        cancel = request.get("cancel", False)
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1 and not cancel
            while True:
                room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if chunk and room <= 0:
                    pump(stream_id, result)  # until the peer opens its window
                    continue
                piece, chunk = chunk[:room], chunk[room:]
                conn.send_data(stream_id, piece, end_stream=last and not chunk)
                sock.sendall(conn.data_to_send())
                if not chunk:
                    break
        if cancel:
            conn.reset_stream(stream_id, error_code=8)
            sock.sendall(conn.data_to_send())
            result["frames"].append("RST_STREAM sent")
            result["ended"] = True
        while not result["ended"]:
            pump(stream_id, result)
        del result["ended"]
        results.append(result)
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    out(results)


def main(argv):
    if len(argv) >= 1 and argv[0] == "grpc-server":
        args = dict(zip(argv[1::2], argv[2::2]))
        grpc_server(args["--name"], int(args.get("--code", "0")), int(args.get("--delay-ms", "0")))
    elif len(argv) == 2 and argv[0] == "grpc-call":
        grpc_call(argv[1], json.load(sys.stdin))
    elif len(argv) == 2 and argv[0] == "h2":
        h2_requests(argv[1], json.load(sys.stdin))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
