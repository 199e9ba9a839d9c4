//! `compare` in a real Envoy: a target with `compare` compares each copy's answer from
//! the mirror with the primary's response to the same request and counts one result per
//! compared copy, `wasmcustom.traffic_mirror.<target>.compare.<result>`. The primary and
//! the mirror are scripted upstreams (`support::scripted`) that answer the same request
//! differently on purpose, path by path; each case has a target of its own (matched by
//! path prefix), so that its counters are exact: once idle, `dispatched` is the sum of
//! the target's `compare.*` counters, and of its `responses_*`, and `in_flight` is 0.
//!
//! Covered: every result of the specification's table (the mirror failing four ways,
//! told from the mirror's own 503 and 504); bodies gzip- or deflate-encoded on one side
//! only, a HEAD request; trailers-only gRPC answers over HTTP/2 (grpcio); body
//! differences counted by JSON path, with member names that need escaping, read back
//! from `/stats` and as the label `json_path` of `/stats/prometheus`; and the mismatch
//! log line: its exact shape, no value of a body or header, `log_per_minute`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use traffic_mirror_core::compare::CompareResult;
use traffic_mirror_core::stats::{Counter, IN_FLIGHT};

use crate::support::python::{compress, grpc_calls, grpc_checkout_direct, GrpcRequest, GrpcServer};
use crate::support::scripted::{Answer, Cut, Scripted};
use crate::support::{wait_for, wait_until, Connection, Envoy, EnvoyConfig, Request};
use crate::{assert_accounted, SETTLE};

/// A comparing target copying every request whose path starts with `prefix` to
/// `cluster` (sampled by `x-request-id`, which every request here has).
fn target(name: &str, cluster: &str, prefix: &str, compare: Value) -> Value {
    json!({"name": name, "cluster": cluster, "percent": 100,
           "match": {"path_prefix": prefix}, "compare": compare})
}

/// The plugin configuration with these targets (and top-level fields).
fn plugin(targets: &[Value], top: Value) -> String {
    let mut config = json!({ "targets": targets });
    config
        .as_object_mut()
        .unwrap()
        .extend(top.as_object().unwrap().clone());
    config.to_string()
}

fn get(path: &str, id: &str) -> Request {
    Request::get(path).header("x-request-id", id)
}

/// Sends each request on one keep-alive connection; each must be answered by the
/// primary with `status`.
fn send(envoy: &Envoy, requests: &[Request], status: u16) {
    let mut connection = Connection::open(envoy.listener());
    for request in requests {
        let response = connection.send(request);
        assert_eq!(
            (
                response.status,
                response
                    .header("x-upstream")
                    .map(String::from_utf8_lossy)
                    .as_deref()
            ),
            (status, Some("primary")),
            "{} {}: {}",
            request.method,
            request.target,
            response.text()
        );
    }
}

/// The sum of a target's `compare.<result>` counters in `stats`.
fn compared(stats: &BTreeMap<String, u64>) -> u64 {
    CompareResult::ALL
        .iter()
        .map(|r| {
            stats
                .get(&format!("compare.{}", r.name()))
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// Waits until every copy of `target` has ended and been compared (`dispatched` is the
/// sum of its `compare.*` counters), then asserts the identities ([`assert_accounted`]),
/// that one, and the target's stats exactly: `copies` requests, each sampled and
/// dispatched, and the counters given (`responses_*`, `compare.*`, `compare.path.*`,
/// `grpc_status.*`); every other counter of the target 0.
fn assert_compared(envoy: &Envoy, target: &str, copies: u64, expected: &[(&str, u64)]) {
    wait_for(
        SETTLE,
        &format!("every copy of target {target} to be compared"),
        || {
            let stats = envoy.mirror_stats(target);
            let get = |name: &str| stats.get(name).copied().unwrap_or(0);
            if get("dispatched") >= copies
                && get(IN_FLIGHT) == 0
                && compared(&stats) >= get("dispatched")
            {
                Ok(())
            } else {
                Err(format!("{stats:?}"))
            }
        },
    );
    let stats = assert_accounted(envoy, target);
    assert_eq!(
        stats["dispatched"],
        compared(&stats),
        "target {target}: dispatched is the sum of the compare.* counters: {stats:?}"
    );
    let mut want: BTreeMap<String, u64> = Counter::ALL
        .iter()
        .map(|c| c.name().to_string())
        .chain([IN_FLIGHT.to_string()])
        .chain(
            CompareResult::ALL
                .iter()
                .map(|r| format!("compare.{}", r.name())),
        )
        .map(|name| (name, 0))
        .collect();
    for name in ["requests", "sampled", "dispatched"] {
        want.insert(name.to_string(), copies);
    }
    for (name, value) in expected {
        want.insert(name.to_string(), *value);
    }
    assert_eq!(stats, want, "stats of target {target}");
}

/// The value of the Prometheus series `name` whose labels are exactly `labels`.
fn series(prometheus: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    prometheus.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let (metric, rest) = key.split_once('{')?;
        if metric != name {
            return None;
        }
        let mut got = prometheus_labels(rest.strip_suffix('}')?)?;
        got.sort();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        (got == want).then(|| value.parse().ok())?
    })
}

/// Label pairs of a Prometheus series (`a="x",b="y"`), their values unescaped (`\\`,
/// `\"`, `\n`) as the text format defines.
fn prometheus_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.push((name, value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(labels)
}

/// Percent-decoding: a stat name's or label's JSON path back as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A port on 127.0.0.1 that refuses connections for as long as the socket is held: bound,
/// never listening (so that no other server of a test running alongside can take it).
fn refusing_port() -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

#[test]
fn the_first_difference_names_the_result_status_grpc_status_header_body_else_match() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let listed = json!({"headers": ["content-type", "x-version"]});
    let plugin = plugin(
        &[
            target("matching", "mirror", "/match/", json!({})),
            target(
                "quieted",
                "mirror",
                "/quieted/",
                json!({"ignore": ["/updated_at", "/items/*/etag"], "unordered": ["/tags"]}),
            ),
            target("status", "mirror", "/status/", listed.clone()),
            target("grpc", "mirror", "/grpc/", listed.clone()),
            target("header", "mirror", "/header/", listed),
            target("body", "mirror", "/body/", json!({})),
        ],
        json!({}),
    );
    // Equal as JSON: members reordered, 1 against 1.0 and 1.25e1 against 12.5,
    // whitespace; a header not listed differs, and so do the bodies' lengths.
    primary.answer(
        "/match/json",
        Answer::json(
            200,
            r#"{"id": 1, "price": 12.5, "ok": true, "none": null, "tags": ["a", "b"],
                "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}"#,
        )
        .header("x-other", "primary"),
    );
    mirror.answer(
        "/match/json",
        Answer::json(
            200,
            r#"{"items":[{"qty":1.0,"sku":"a"},{"qty":2,"sku":"b"}],"tags":["a","b"],"none":null,"ok":true,"price":1.25e1,"id":1.0}"#,
        )
        .header("x-other", "mirror"),
    );
    // Not JSON: the same bytes.
    for server in [&primary, &mirror] {
        server.answer(
            "/match/text",
            Answer::new(200)
                .header("content-type", "text/plain")
                .body("the same text\n"),
        );
    }
    // Equal but for ignored members and an unordered array.
    primary.answer(
        "/quieted/1",
        Answer::json(
            200,
            r#"{"updated_at": 1, "items": [{"etag": "x", "id": 1}], "tags": ["a", "b", "c"]}"#,
        ),
    );
    mirror.answer(
        "/quieted/1",
        Answer::json(
            200,
            r#"{"updated_at": 2, "items": [{"etag": "y", "id": 1}], "tags": ["c", "a", "b"]}"#,
        ),
    );
    // Everything differs: the status is compared first.
    primary.answer(
        "/status/1",
        Answer::json(200, r#"{"a": 1}"#)
            .header("x-version", "1")
            .header("grpc-status", "0"),
    );
    mirror.answer(
        "/status/1",
        Answer::json(500, r#"{"a": 2}"#)
            .header("x-version", "2")
            .header("grpc-status", "13"),
    );
    // The same status; grpc-status (of a trailers-only answer, in its headers), a
    // listed header and the body differ: grpc_status.
    primary.answer(
        "/grpc/1",
        Answer::json(200, r#"{"a": 1}"#)
            .header("x-version", "1")
            .header("grpc-status", "0"),
    );
    mirror.answer(
        "/grpc/1",
        Answer::json(200, r#"{"a": 2}"#)
            .header("x-version", "2")
            .header("grpc-status", "14"),
    );
    // grpc-status on one side only: a difference too.
    primary.answer("/grpc/2", Answer::json(200, r#"{"a": 1}"#));
    mirror.answer(
        "/grpc/2",
        Answer::json(200, r#"{"a": 1}"#).header("grpc-status", "2"),
    );
    // A listed header and the body differ: header (x-version; then content-type, a
    // JSON type on both sides).
    primary.answer(
        "/header/1",
        Answer::json(200, r#"{"a": 1}"#).header("x-version", "1"),
    );
    mirror.answer(
        "/header/1",
        Answer::json(200, r#"{"a": 2}"#).header("x-version", "2"),
    );
    primary.answer("/header/2", Answer::json(200, r#"{"a": 1}"#));
    mirror.answer(
        "/header/2",
        Answer::new(200)
            .header("content-type", "application/problem+json")
            .body(r#"{"a": 1}"#),
    );
    // Only the body differs: at the second item's price (counted as /items/*/price),
    // at /name, and as bytes (no path).
    primary.answer(
        "/body/price",
        Answer::json(
            200,
            r#"{"name": "x", "items": [{"sku": "a", "price": 5}, {"sku": "b", "price": 7}]}"#,
        ),
    );
    mirror.answer(
        "/body/price",
        Answer::json(
            200,
            r#"{"name": "x", "items": [{"sku": "a", "price": 5}, {"sku": "b", "price": 8}]}"#,
        ),
    );
    primary.answer("/body/name", Answer::json(200, r#"{"name": "x", "id": 1}"#));
    mirror.answer("/body/name", Answer::json(200, r#"{"id": 2, "name": "y"}"#));
    primary.answer(
        "/body/text",
        Answer::new(200)
            .header("content-type", "text/plain")
            .body("one"),
    );
    mirror.answer(
        "/body/text",
        Answer::new(200)
            .header("content-type", "text/plain")
            .body("two"),
    );
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    let paths = [
        "/match/json",
        "/match/text",
        "/quieted/1",
        "/status/1",
        "/grpc/1",
        "/grpc/2",
        "/header/1",
        "/header/2",
        "/body/price",
        "/body/name",
        "/body/text",
    ];
    let requests: Vec<Request> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| get(path, &format!("req-{i}")))
        .collect();
    send(&envoy, &requests, 200);

    assert_compared(
        &envoy,
        "matching",
        2,
        &[("responses_2xx", 2), ("compare.match", 2)],
    );
    assert_compared(
        &envoy,
        "quieted",
        1,
        &[("responses_2xx", 1), ("compare.match", 1)],
    );
    assert_compared(
        &envoy,
        "status",
        1,
        &[("responses_5xx", 1), ("compare.status", 1)],
    );
    assert_compared(
        &envoy,
        "grpc",
        2,
        &[("responses_2xx", 2), ("compare.grpc_status", 2)],
    );
    assert_compared(
        &envoy,
        "header",
        2,
        &[("responses_2xx", 2), ("compare.header", 2)],
    );
    assert_compared(
        &envoy,
        "body",
        3,
        &[
            ("responses_2xx", 3),
            ("compare.body", 3),
            ("compare.path./items/*/price", 1),
            ("compare.path./name", 1),
        ],
    );
    // On /stats/prometheus: the target and the path are labels.
    let prometheus = envoy.prometheus();
    for (name, labels, value) in [
        (
            "traffic_mirror_compare_path",
            &[("target", "body"), ("json_path", "/items/*/price")][..],
            1,
        ),
        (
            "traffic_mirror_compare_path",
            &[("target", "body"), ("json_path", "/name")],
            1,
        ),
        ("traffic_mirror_compare_body", &[("target", "body")], 3),
        ("traffic_mirror_compare_match", &[("target", "matching")], 2),
        ("traffic_mirror_compare_status", &[("target", "status")], 1),
        (
            "traffic_mirror_compare_grpc_status",
            &[("target", "grpc")],
            2,
        ),
        ("traffic_mirror_compare_header", &[("target", "header")], 2),
        ("traffic_mirror_compare_match", &[("target", "body")], 0),
    ] {
        assert_eq!(
            series(&prometheus, name, labels),
            Some(value),
            "{name} {labels:?} in:\n{prometheus}"
        );
    }
    assert_eq!(mirror.seen().len(), paths.len());
}

#[test]
fn a_copy_without_a_whole_answer_of_the_mirrors_own_is_mirror_failed_its_own_503_is_status() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let (_held, gone) = refusing_port();
    let plugin = plugin(
        &[
            target("reset", "mirror", "/reset/", json!({})),
            target("reset-body", "resetting", "/reset-body/", json!({})),
            target("refused", "gone", "/refused/", json!({})),
            {
                let mut late = target("late", "mirror", "/late/", json!({}));
                late["timeout_ms"] = json!(300);
                late
            },
            target("long", "mirror", "/long/", json!({})),
            target("own", "mirror", "/own/", json!({})),
        ],
        json!({}),
    );
    let ok = r#"{"ok": true}"#;
    for path in [
        "/reset/1",
        "/reset-body/1",
        "/refused/1",
        "/late/1",
        "/long/1",
        "/own/503",
        "/own/504",
    ] {
        primary.answer(path, Answer::json(200, ok));
    }
    // The mirror resets the connection: before answering (Envoy answers 503 itself),
    // and in the middle of its answer's body (no answer at all).
    mirror.answer("/reset/1", Answer::json(200, ok).cut(Cut::ResetBeforeHead));
    mirror.answer(
        "/reset-body/1",
        Answer::json(200, format!("[{}]", vec![ok; 20].join(","))).cut(Cut::ResetInBody(10)),
    );
    // Past timeout_ms: Envoy answers 504 itself.
    mirror.answer(
        "/late/1",
        Answer::json(200, ok).delay(Duration::from_secs(3)),
    );
    // Longer than max_answer_bytes (Envoy's http.async_response_buffer_limit): cut.
    mirror.answer(
        "/long/1",
        Answer::json(200, format!("[{}]", vec![ok; 10_000].join(","))),
    );
    // The mirror's own 503 and 504 (Envoy passes them on): a status difference.
    mirror.answer("/own/503", Answer::json(503, ok));
    mirror.answer("/own/504", Answer::json(504, ok));
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin, primary.addr(), mirror.addr())
            .cluster("resetting", mirror.addr())
            .cluster("gone", gone),
    );
    let started = Instant::now();
    send(
        &envoy,
        &[
            get("/reset/1", "r1"),
            get("/refused/1", "r2"),
            get("/late/1", "r3"),
            get("/long/1", "r4"),
            get("/own/503", "r5"),
            get("/own/504", "r6"),
            get("/reset-body/1", "r7"),
        ],
        200,
    );
    // The reset in the body once Envoy has the answer's head (counted by its status).
    wait_until(
        SETTLE,
        "Envoy to have the head of the answer to reset",
        || envoy.created_on_first_count("cluster.resetting.upstream_rq_200") == 1,
    );
    mirror.release();

    assert_compared(
        &envoy,
        "reset",
        1,
        &[("responses_5xx", 1), ("compare.mirror_failed", 1)],
    );
    assert_compared(
        &envoy,
        "reset-body",
        1,
        &[("responses_failed", 1), ("compare.mirror_failed", 1)],
    );
    assert_compared(
        &envoy,
        "refused",
        1,
        &[("responses_5xx", 1), ("compare.mirror_failed", 1)],
    );
    assert_compared(
        &envoy,
        "late",
        1,
        &[("responses_5xx", 1), ("compare.mirror_failed", 1)],
    );
    assert_compared(
        &envoy,
        "long",
        1,
        &[("responses_failed", 1), ("compare.mirror_failed", 1)],
    );
    assert_compared(
        &envoy,
        "own",
        2,
        &[("responses_5xx", 2), ("compare.status", 2)],
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the late copy ended at timeout_ms, not at the mirror's answer"
    );
    // Each failure was what it was meant to be, as Envoy's cluster stats tell.
    for (stat, value) in [
        ("cluster.gone.upstream_cx_connect_fail", 1),
        ("cluster.mirror.upstream_rq_timeout", 1),
        ("cluster.mirror.upstream_rq_503", 1),
        ("cluster.mirror.upstream_rq_504", 1),
    ] {
        assert!(envoy.created_on_first_count(stat) >= value, "{stat}");
    }
    for path in ["/reset/1", "/late/1", "/long/1", "/own/503", "/own/504"] {
        assert_eq!(
            mirror.count(path),
            1,
            "the copy of {path} reached the mirror"
        );
    }
}

/// Sends `GET path` on a connection of its own and reads until the response's head and
/// `body_bytes` bytes of its body have come; returns the connection, still open, and
/// what it read.
fn read_head_and(envoy: &Envoy, path: &str, id: &str, body_bytes: usize) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(envoy.listener()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: example.com\r\nx-request-id: {id}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let body = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| got.len() - at - 4);
        if body.is_some_and(|n| n >= body_bytes) {
            return (stream, got);
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "{path}: closed after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_primary_that_does_not_complete_and_bodies_that_cannot_be_compared() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let plugin = plugin(
        &[
            target("incomplete", "mirror", "/incomplete/", json!({})),
            target(
                "large",
                "mirror",
                "/large/",
                json!({"max_body_bytes": 1024}),
            ),
            target("encoding", "mirror", "/encoding/", json!({})),
            target("not-json", "mirror", "/not-json/", json!({})),
        ],
        json!({}),
    );
    let ok = r#"{"ok": true}"#;
    // The primary resets its answer in the middle of the body; the primary answers after
    // the client has gone.
    let long = format!("[{}]", vec![ok; 20].join(","));
    primary.answer(
        "/incomplete/reset",
        Answer::json(200, long.clone()).cut(Cut::ResetInBody(10)),
    );
    primary.answer(
        "/incomplete/gone",
        Answer::json(200, ok).delay(Duration::from_secs(10)),
    );
    for path in ["/incomplete/reset", "/incomplete/gone"] {
        mirror.answer(path, Answer::json(200, long.clone()));
    }
    // Past compare.max_body_bytes (1024): both; the mirror's only; both gzip-encoded
    // under it, decoded past it.
    let big = |n: usize| format!("[{}]", vec![n.to_string(); 400].join(","));
    primary.answer("/large/both", Answer::json(200, big(1000)));
    mirror.answer("/large/both", Answer::json(200, big(2000)));
    primary.answer("/large/mirror", Answer::json(200, ok));
    mirror.answer("/large/mirror", Answer::json(200, big(1000)));
    let (gzip_1, gzip_2) = (
        compress("gzip", big(1000).as_bytes()),
        compress("gzip", big(2000).as_bytes()),
    );
    assert!(gzip_1.len() < 1024 && gzip_2.len() < 1024 && big(1000).len() > 1024);
    primary.answer(
        "/large/gzip",
        Answer::json(200, gzip_1).header("content-encoding", "gzip"),
    );
    mirror.answer(
        "/large/gzip",
        Answer::json(200, gzip_2).header("content-encoding", "gzip"),
    );
    // An encoding the filter does not decode (br): on the mirror's side only; on both
    // with the same bytes.
    primary.answer("/encoding/mirror", Answer::json(200, ok));
    mirror.answer(
        "/encoding/mirror",
        Answer::json(200, b"\x8b\x05\x80{\"ok\": true}\x03".to_vec())
            .header("content-encoding", "br"),
    );
    for server in [&primary, &mirror] {
        server.answer(
            "/encoding/both",
            Answer::json(200, b"\x8b\x05\x80{\"ok\": true}\x03".to_vec())
                .header("content-encoding", "br"),
        );
    }
    // JSON by content-type, not JSON by its bytes: the primary's; the mirror's.
    primary.answer("/not-json/primary", Answer::json(200, r#"{"a": 1,"#));
    mirror.answer("/not-json/primary", Answer::json(200, r#"{"a": 1}"#));
    primary.answer("/not-json/mirror", Answer::json(200, r#"{"a": 1}"#));
    mirror.answer("/not-json/mirror", Answer::json(200, "<html>oops</html>"));
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));

    // The primary resets once the client has the head and the first bytes of the body
    // (a reset could otherwise discard what Envoy has not read yet).
    let (mut stream, mut got) = read_head_and(&envoy, "/incomplete/reset", "i1", 10);
    primary.release();
    // Once the stream has ended in Envoy, what the client got (without waiting out
    // Envoy's delayed close of its connection).
    wait_until(SETTLE, "the reset stream to be compared", || {
        envoy.mirror_stats("incomplete")["compare.primary_incomplete"] == 1
    });
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        got.len() - head < long.len(),
        "the client got the whole body: {}",
        String::from_utf8_lossy(&got)
    );
    // The client goes while the primary holds its answer, once the copy has gone.
    let mut stream = TcpStream::connect(envoy.listener()).unwrap();
    write!(
        stream,
        "GET /incomplete/gone HTTP/1.1\r\nhost: example.com\r\nx-request-id: i2\r\n\r\n"
    )
    .unwrap();
    wait_until(SETTLE, "the copy to reach the mirror", || {
        mirror.count("/incomplete/gone") == 1
    });
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);

    send(
        &envoy,
        &[
            get("/large/both", "l1"),
            get("/large/mirror", "l2"),
            get("/large/gzip", "l3"),
            get("/encoding/mirror", "e1"),
            get("/encoding/both", "e2"),
            get("/not-json/primary", "n1"),
            get("/not-json/mirror", "n2"),
        ],
        200,
    );
    assert_compared(
        &envoy,
        "incomplete",
        2,
        &[("responses_2xx", 2), ("compare.primary_incomplete", 2)],
    );
    assert_compared(
        &envoy,
        "large",
        3,
        &[("responses_2xx", 3), ("compare.too_large", 3)],
    );
    assert_compared(
        &envoy,
        "encoding",
        2,
        &[("responses_2xx", 2), ("compare.encoding", 2)],
    );
    assert_compared(
        &envoy,
        "not-json",
        2,
        &[("responses_2xx", 2), ("compare.not_json", 2)],
    );
    assert_eq!(primary.cut_answers(), 1);
}

#[test]
fn a_primary_body_that_would_not_fit_in_max_in_flight_bytes_is_not_compared_but_copied() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    // Room for a copy and its answer (2000 bytes), not for a primary body of 1500 bytes
    // besides; a body of 100 bytes fits.
    let mut budget = target(
        "budget",
        "mirror",
        "/budget/",
        json!({"max_body_bytes": 2000}),
    );
    budget["max_body_bytes"] = json!(0);
    let plugin = plugin(
        &[budget],
        json!({"max_in_flight_bytes": 3000, "max_answer_bytes": 2000}),
    );
    let body = |n: usize| format!("[{}]", vec!["1"; n / 2 - 1].join(","));
    assert_eq!((body(1500).len(), body(100).len()), (1499, 99));
    primary.answer("/budget/big", Answer::json(200, body(1500)));
    // Its answer comes once the primary's headers have found no room.
    mirror.answer(
        "/budget/big",
        Answer::json(200, body(1500)).delay(Duration::from_millis(200)),
    );
    for server in [&primary, &mirror] {
        server.answer("/budget/small", Answer::json(200, body(100)));
    }
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()).answer_buffer_limit(Some(2000)),
    );
    send(&envoy, &[get("/budget/big", "b1")], 200);
    wait_until(SETTLE, "the big one's copy to end", || {
        compared(&envoy.mirror_stats("budget")) == 1
    });
    send(&envoy, &[get("/budget/small", "b2")], 200);
    assert_compared(
        &envoy,
        "budget",
        2,
        &[
            ("responses_2xx", 2),
            ("compare.skipped_budget", 1),
            ("compare.match", 1),
        ],
    );
    assert_eq!(mirror.count("/budget/big"), 1, "the copy was sent");
}

#[test]
fn gzip_or_deflate_on_one_side_is_decoded_and_a_head_request_compares_no_body() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let plugin = plugin(
        &[
            target("decoded", "mirror", "/decoded/", json!({})),
            target("head", "mirror", "/head/", json!({})),
        ],
        json!({}),
    );
    let doc = br#"{"name": "kettle", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}"#;
    let reordered =
        br#"{"items": [{"qty": 1, "sku": "a"}, {"qty": 2.0, "sku": "b"}], "name": "kettle"}"#;
    let other = br#"{"name": "kettle", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3}]}"#;
    primary.answer(
        "/decoded/gzip",
        Answer::json(200, compress("gzip", doc)).header("content-encoding", "gzip"),
    );
    mirror.answer("/decoded/gzip", Answer::json(200, reordered.to_vec()));
    primary.answer("/decoded/deflate", Answer::json(200, doc.to_vec()));
    mirror.answer(
        "/decoded/deflate",
        Answer::json(200, compress("deflate", reordered)).header("content-encoding", "deflate"),
    );
    primary.answer(
        "/decoded/differs",
        Answer::json(200, compress("gzip", doc)).header("content-encoding", "gzip"),
    );
    mirror.answer("/decoded/differs", Answer::json(200, other.to_vec()));
    // Bodies of different lengths and contents: to a HEAD request, each side answers
    // with its content-length and no body.
    primary.answer("/head/1", Answer::json(200, r#"{"version": 1}"#));
    mirror.answer(
        "/head/1",
        Answer::json(200, r#"{"version": 2, "extra": true}"#),
    );
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    send(
        &envoy,
        &[
            get("/decoded/gzip", "d1"),
            get("/decoded/deflate", "d2"),
            get("/decoded/differs", "d3"),
            Request::new("HEAD", "/head/1").header("x-request-id", "h1"),
            // The same path by GET: the bodies do differ.
            get("/head/1", "h2"),
        ],
        200,
    );
    assert_compared(
        &envoy,
        "decoded",
        3,
        &[
            ("responses_2xx", 3),
            ("compare.match", 2),
            ("compare.body", 1),
            ("compare.path./items/*/qty", 1),
        ],
    );
    assert_compared(
        &envoy,
        "head",
        2,
        &[
            ("responses_2xx", 2),
            ("compare.match", 1),
            ("compare.body", 1),
            ("compare.path./version", 1),
        ],
    );
    // The copies went with their method (in either order: on connections of their own).
    let methods: BTreeSet<String> = mirror
        .seen()
        .iter()
        .filter(|s| s.path() == "/head/1")
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(
        methods,
        BTreeSet::from(["GET".to_string(), "HEAD".to_string()])
    );
}

/// A gRPC call from a real client, routed and matched by its metadata.
fn grpc_call(case: &str, primary_five: bool) -> GrpcRequest {
    let mut metadata = vec![("x-case".to_string(), case.to_string())];
    if primary_five {
        metadata.push(("x-primary".to_string(), "five".to_string()));
    }
    GrpcRequest {
        method: "/shop.Cart/Checkout".to_string(),
        streaming: false,
        messages: vec![b"order-1".to_vec()],
        metadata,
    }
}

#[test]
fn trailers_only_grpc_answers_over_http2_are_compared_by_grpc_status() {
    // Real gRPC servers (grpcio): answering every call, or failing every call with a
    // code (a trailers-only answer), started at once.
    let servers: Vec<GrpcServer> = std::thread::scope(|scope| {
        let handles: Vec<_> = [
            ("primary", 0),
            ("primary-5", 5),
            ("mirror", 0),
            ("mirror-5", 5),
            ("mirror-14", 14),
        ]
        .into_iter()
        .map(|(name, code)| scope.spawn(move || GrpcServer::start(name, code)))
        .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let [primary, primary_5, mirror, mirror_5, mirror_14] = &servers[..] else {
        unreachable!()
    };
    let case = |name: &str, cluster: &str| {
        json!({"name": name, "cluster": cluster, "percent": 100,
               "match": {"headers": {"x-case": name}}, "compare": {}})
    };
    let plugin = plugin(
        &[
            // OK against OK (grpc-status 0 in trailers, the same message).
            case("ok", "mirror"),
            // Trailers-only 5 against trailers-only 5.
            case("same", "mirror-5"),
            // Trailers-only 5 against trailers-only 14.
            case("codes", "mirror-14"),
            // OK (trailers) against trailers-only 14.
            case("failing", "mirror-14"),
        ],
        json!({}),
    );
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin, primary.addr(), mirror.addr())
            .http2("primary")
            .http2("mirror")
            .cluster("primary-5", primary_5.addr())
            .http2("primary-5")
            .route_on("x-primary", "five", "primary-5")
            .cluster("mirror-5", mirror_5.addr())
            .http2("mirror-5")
            .cluster("mirror-14", mirror_14.addr())
            .http2("mirror-14"),
    );
    let calls = [
        grpc_call("ok", false),
        grpc_call("ok", false),
        grpc_call("same", true),
        grpc_call("same", true),
        grpc_call("codes", true),
        grpc_call("codes", true),
        grpc_call("failing", false),
        grpc_call("failing", false),
    ];
    let codes: Vec<u64> = grpc_calls(envoy.listener(), &calls)
        .iter()
        .map(|o| o.code)
        .collect();
    assert_eq!(
        codes,
        [0, 0, 5, 5, 5, 5, 0, 0],
        "the primary answered every call"
    );

    assert_compared(
        &envoy,
        "ok",
        2,
        &[
            ("responses_2xx", 2),
            ("grpc_status.0", 2),
            ("compare.match", 2),
        ],
    );
    assert_compared(
        &envoy,
        "same",
        2,
        &[
            ("responses_2xx", 2),
            ("grpc_status.5", 2),
            ("compare.match", 2),
        ],
    );
    for name in ["codes", "failing"] {
        assert_compared(
            &envoy,
            name,
            2,
            &[
                ("responses_2xx", 2),
                ("grpc_status.14", 2),
                ("compare.grpc_status", 2),
            ],
        );
    }
    // The failing servers' answers are trailers-only on the wire: one HEADERS frame
    // ending the stream, grpc-status in it.
    for (server, code) in [(primary_5, "5"), (mirror_14, "14")] {
        let answer = grpc_checkout_direct(server.addr());
        assert_eq!(answer.frames, ["HEADERS", "END_STREAM"]);
        assert_eq!(answer.header("grpc-status"), Some(code));
    }
}

#[test]
fn json_paths_with_any_member_names_read_back_exactly_from_stats_and_prometheus() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let plugin = plugin(
        &[
            target("paths", "mirror", "/paths/", json!({})),
            target("capped", "mirror", "/capped/", json!({"max_paths": 2})),
        ],
        json!({}),
    );
    // (the primary's document, the mirror's, the JSON Pointer of their first
    // difference, indices as *)
    let one = |name: &str, value: i64| json!({ name: value });
    let mut cases: Vec<(Value, Value, String)> = [
        "a.b",
        "c/d",
        "e~f",
        "50%",
        "k:v",
        "with space",
        "say \"hi\"",
        "back\\slash",
        "café",
        "日本",
        "tab\there",
        "count_rq_200",
        "trailing.",
    ]
    .iter()
    .map(|name| {
        let pointer = format!("/{}", name.replace('~', "~0").replace('/', "~1"));
        (one(name, 1), one(name, 2), pointer)
    })
    .collect();
    cases.push((
        json!({"日本": {"a.b": [0, {"x/y~z": 1}]}, "same": true}),
        json!({"same": true, "日本": {"a.b": [0, {"x/y~z": "1"}]}}),
        "/日本/a.b/*/x~1y~0z".to_string(),
    ));
    for (i, (p, m, _)) in cases.iter().enumerate() {
        primary.answer(&format!("/paths/{i}"), Answer::json(200, p.to_string()));
        mirror.answer(&format!("/paths/{i}"), Answer::json(200, m.to_string()));
    }
    // Past max_paths (2), paths count as `other`: /a, /b, then /c and /d are other.
    let capped = ["a", "b", "c", "a", "d"];
    for (i, name) in capped.iter().enumerate() {
        primary.answer(
            &format!("/capped/{i}"),
            Answer::json(200, one(name, 1).to_string()),
        );
        mirror.answer(
            &format!("/capped/{i}"),
            Answer::json(200, one(name, 2).to_string()),
        );
    }
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    let requests: Vec<Request> = (0..cases.len())
        .map(|i| get(&format!("/paths/{i}"), &format!("p{i}")))
        .collect();
    send(&envoy, &requests, 200);
    // One at a time: the paths counted are the first compared (comparisons of requests
    // sent one after the other may end in another order).
    for i in 0..capped.len() {
        send(
            &envoy,
            &[get(&format!("/capped/{i}"), &format!("c{i}"))],
            200,
        );
        wait_until(SETTLE, "the capped copy to be compared", || {
            compared(&envoy.mirror_stats("capped")) == i as u64 + 1
        });
    }
    let n = cases.len() as u64;
    wait_until(SETTLE, "every copy to be compared", || {
        compared(&envoy.mirror_stats("paths")) == n
    });
    let expected: BTreeSet<String> = cases.iter().map(|(_, _, p)| p.clone()).collect();
    assert_eq!(expected.len(), cases.len());

    // /stats (as JSON, names exactly as Envoy keeps them): one counter per path, its
    // last part the path percent-encoded, with no `.` left in it.
    let text = crate::support::client::get_ok(envoy.admin(), "/stats?format=json");
    let stats: Value = serde_json::from_str(&text).unwrap();
    let prefix = "wasmcustom.traffic_mirror.paths.compare.path.";
    let mut from_stats = BTreeMap::new();
    for stat in stats["stats"].as_array().unwrap() {
        let Some(name) = stat["name"].as_str() else {
            continue;
        };
        if let Some(encoded) = name.strip_prefix(prefix) {
            assert!(!encoded.contains('.'), "{name}");
            from_stats.insert(percent_decode(encoded), stat["value"].as_u64().unwrap());
        }
    }
    assert_eq!(
        from_stats,
        expected.iter().map(|p| (p.clone(), 1)).collect(),
        "paths on /stats"
    );
    // /stats/prometheus: each as the label json_path, which percent-decodes to it.
    let prometheus = envoy.prometheus();
    let mut from_labels: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in prometheus.lines() {
        let Some(rest) = line.strip_prefix("traffic_mirror_compare_path{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let labels = prometheus_labels(labels).unwrap_or_else(|| panic!("{line}"));
        let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(labels.len(), 2, "{line}");
        let target = label("target").unwrap_or_else(|| panic!("no target: {line}"));
        let path = label("json_path").unwrap_or_else(|| panic!("no json_path: {line}"));
        from_labels.insert((target, percent_decode(&path)), value.parse().unwrap());
    }
    let mut want: BTreeMap<(String, String), u64> = expected
        .iter()
        .map(|p| (("paths".to_string(), p.clone()), 1))
        .collect();
    for (path, count) in [("/a", 2), ("/b", 1), ("other", 2)] {
        want.insert(("capped".to_string(), path.to_string()), count);
    }
    assert_eq!(
        from_labels, want,
        "json_path labels on /stats/prometheus:\n{prometheus}"
    );
    assert_compared(
        &envoy,
        "capped",
        capped.len() as u64,
        &[
            ("responses_2xx", capped.len() as u64),
            ("compare.body", capped.len() as u64),
            ("compare.path./a", 2),
            ("compare.path./b", 1),
            ("compare.path.other", 2),
        ],
    );
    // Exactly these stats, each path's name encoded as the specification says.
    let names: Vec<String> = expected
        .iter()
        .map(|p| format!("compare.path.{}", stat_encoded(p)))
        .collect();
    let counters: Vec<(&str, u64)> = names
        .iter()
        .map(|name| (name.as_str(), 1))
        .chain([("responses_2xx", n), ("compare.body", n)])
        .collect();
    assert_compared(&envoy, "paths", n, &counters);
}

/// A JSON Pointer as the specification says it ends a stat name: `%`, `.` and control
/// characters percent-encoded (and the `_` of a `_rq_` + code ending, which Envoy would
/// read a label from).
fn stat_encoded(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        match c {
            '%' | '.' | '\u{0}'..='\u{1f}' | '\u{7f}' => {
                out.push_str(&format!("%{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    if let Some(at) = out.rfind("_rq_") {
        let tail = &out[at + 4..];
        if tail.len() == 3 && tail.bytes().all(|b| b.is_ascii_digit()) {
            out.replace_range(at..=at, "%5F");
        }
    }
    out
}

/// Whether `line` is `template` with each `#` a number; the numbers.
fn numbers(line: &str, template: &str) -> Option<Vec<u64>> {
    let mut numbers = Vec::new();
    let mut rest = line;
    let mut pieces = template.split('#');
    rest = rest.strip_prefix(pieces.next()?)?;
    for piece in pieces {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        numbers.push(rest[..digits].parse().ok()?);
        rest = rest[digits..].strip_prefix(piece)?;
    }
    rest.is_empty().then_some(numbers)
}

#[test]
fn a_mismatch_is_logged_in_one_line_without_values_at_most_log_per_minute() {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let plugin = plugin(
        &[target(
            "logged",
            "mirror",
            "/logged/",
            json!({"headers": ["content-type", "x-version"], "log_per_minute": 2}),
        )],
        json!({}),
    );
    let (p_body, m_body) = (
        r#"{"items": [{"sku": "zebra-4411", "price": 61234}], "owner": "okapi-9"}"#,
        r#"{"items": [{"sku": "zebra-4411", "price": 71234}], "owner": "okapi-9"}"#,
    );
    primary.answer("/logged/body", Answer::json(200, p_body));
    mirror.answer(
        "/logged/body",
        Answer::json(200, m_body).delay(Duration::from_millis(100)),
    );
    primary.answer(
        "/logged/header",
        Answer::json(200, p_body).header("x-version", "secret-v1"),
    );
    mirror.answer(
        "/logged/header",
        Answer::json(200, p_body).header("x-version", "secret-v2"),
    );
    primary.answer("/logged/status", Answer::json(200, p_body));
    mirror.answer(
        "/logged/status",
        Answer::json(503, r#"{"error": "secret-503"}"#),
    );
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    // Five mismatches within the minute: body, header, status, body, body; the first
    // compared (its mirror 100 ms late) before the others are sent, so that the lines
    // come in this order.
    send(
        &envoy,
        &[
            Request::post("/logged/body?token=secret-query", "secret-request-body")
                .header("x-request-id", "req-log-1"),
        ],
        200,
    );
    wait_until(SETTLE, "the first mismatch to be compared", || {
        compared(&envoy.mirror_stats("logged")) == 1
    });
    send(
        &envoy,
        &[
            get("/logged/header?token=secret-query", "req-log-2"),
            get("/logged/status", "req-log-3"),
            get("/logged/body", "req-log-4"),
            get("/logged/body", "req-log-5"),
        ],
        200,
    );
    assert_compared(
        &envoy,
        "logged",
        5,
        &[
            ("responses_2xx", 4),
            ("responses_5xx", 1),
            ("compare.body", 3),
            ("compare.header", 1),
            ("compare.status", 1),
            ("compare.path./items/*/price", 3),
        ],
    );
    let log = wait_for(SETTLE, "the mismatch lines in Envoy's log", || {
        let log = envoy.log();
        if log
            .matches("traffic-mirror: target logged: compare ")
            .count()
            >= 2
        {
            Ok(log)
        } else {
            Err(log)
        }
    });
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("traffic-mirror: target logged: compare "))
        .collect();
    assert_eq!(lines.len(), 2, "log_per_minute 2, five mismatches:\n{log}");
    for line in &lines {
        assert!(line.contains("[info][wasm]"), "{line}");
    }
    let message = |line: &str| line[line.find("traffic-mirror: target").unwrap()..].to_string();
    // The body difference: where, both statuses, body lengths and latencies (the
    // mirror's 100 ms late), the method, the path without its query, x-request-id.
    let first = message(lines[0]);
    let template = format!(
        "traffic-mirror: target logged: compare body at /items/*/price: primary 200 ({} bytes, # ms), mirror 200 ({} bytes, # ms); POST /logged/body x-request-id req-log-1; logged at most 2 a minute",
        p_body.len(),
        m_body.len()
    );
    let latencies = numbers(&first, &template)
        .unwrap_or_else(|| panic!("the line\n  {first}\nis not\n  {template}"));
    assert!(
        latencies[1] >= 100 && latencies[0] < latencies[1],
        "latencies (primary, mirror): {latencies:?}"
    );
    let second = message(lines[1]);
    let template = format!(
        "traffic-mirror: target logged: compare header in header x-version: primary 200 ({} bytes, # ms), mirror 200 ({} bytes, # ms); GET /logged/header x-request-id req-log-2; logged at most 2 a minute",
        p_body.len(),
        p_body.len()
    );
    assert!(
        numbers(&second, &template).is_some(),
        "the line\n  {second}\nis not\n  {template}"
    );
    // No value of a body, a header or the query, anywhere in the log.
    for value in [
        "zebra-4411",
        "61234",
        "71234",
        "okapi-9",
        "sku",
        "owner",
        "secret-v1",
        "secret-v2",
        "secret-503",
        "secret-query",
        "secret-request-body",
    ] {
        assert!(!log.contains(value), "{value} in Envoy's log:\n{log}");
    }
}
