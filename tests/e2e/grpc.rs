//! HTTP/2 and gRPC as first-class traffic: HTTP/2 clients (prior knowledge, cleartext,
//! bodies in several DATA frames, cookies in several fields) are copied byte for byte
//! and decided exactly as over HTTP/1.1; gRPC unary and client-streaming calls reach a
//! gRPC mirror whole, with their metadata; a gRPC mirror failing every call shows in the
//! per-code counter (its answers trailers-only, proven on the wire) while the client's
//! calls are unaffected, as do Envoy's own answers to gRPC copies (grpc-status 14 for a
//! refused connection and a timeout); and every copy's latency lands in the right
//! histogram bucket.
//! The peers are real: grpcio and h2 (tests/support/http2.py).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::python::{
    grpc_calls, grpc_checkout_direct, h2_requests, GrpcRequest, GrpcServer, H2Request,
};
use crate::support::{wait_for, Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_accounted, pattern, send_all, SETTLE};
use traffic_mirror_core::sampling::{bucket, threshold};

/// The users whose key the target (salt, percent) samples, by the specification's rule.
fn sampled(salt: &str, percent: f64, keys: &[String]) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| bucket(salt.as_bytes(), k.as_bytes()) < threshold(percent))
        .cloned()
        .collect()
}

#[test]
fn http2_requests_are_copied_byte_for_byte_and_decided_as_over_http1() {
    const USERS: usize = 40;
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [
        {"name": "by-header", "cluster": "mirror", "percent": 50, "salt": "h",
         "sample_by": {"header": "x-user-id"}},
        {"name": "by-cookie", "cluster": "mirror", "percent": 50, "salt": "c",
         "sample_by": {"cookie": "uid"}}
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    let body = |i: usize| pattern(30_000, i as u64);

    // HTTP/2: three DATA frames of 10 000 bytes; the cookie in a second `cookie` field.
    let requests: Vec<H2Request> = (0..USERS)
        .map(|i| H2Request {
            headers: vec![
                (":method".into(), "POST".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), format!("/h2/{i}?q=1")),
                (":authority".into(), "shop.example".into()),
                ("x-user-id".into(), users[i].clone()),
                ("cookie".into(), "theme=dark".into()),
                ("cookie".into(), format!("uid={}; lang=en", users[i])),
            ],
            chunks: body(i).chunks(10_000).map(<[u8]>::to_vec).collect(),
            cancel: false,
        })
        .collect();
    for (i, response) in h2_requests(envoy.listener(), &requests).iter().enumerate() {
        assert_eq!(response.header(":status"), Some("200"), "h2 request {i}");
        assert_eq!(response.header("x-upstream"), Some("primary"));
    }
    // The same users over HTTP/1.1.
    let h1: Vec<Request> = (0..USERS)
        .map(|i| {
            Request::post(&format!("/h1/{i}?q=1"), body(i))
                .host("shop.example")
                .header("x-user-id", &users[i])
                .header("cookie", format!("theme=dark; uid={}; lang=en", users[i]))
        })
        .collect();
    send_all(envoy.listener(), &h1, 2, 2);
    // A stream the client resets before its end (a cancelled call): never copied.
    let before = envoy.mirror_stats("by-header");
    let cancelled = h2_requests(
        envoy.listener(),
        &[H2Request {
            headers: vec![
                (":method".into(), "POST".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/h2/cancelled".into()),
                (":authority".into(), "shop.example".into()),
                // A user the by-header target samples (by-cookie finds no cookie).
                ("x-user-id".into(), "user-always".into()),
            ],
            chunks: vec![pattern(5000, 99)],
            cancel: true,
        }],
    );
    assert_eq!(cancelled[0].frames, ["RST_STREAM sent"]);
    wait_for(
        SETTLE,
        "the cancelled stream to end in Envoy",
        || match envoy.stat("http.ingress.downstream_rq_active") {
            0 => Ok(()),
            n => Err(format!("{n} active")),
        },
    );
    let after = assert_accounted(&envoy, "by-header");
    assert_eq!(
        (
            after["sampled"] - before["sampled"],
            after["skipped_incomplete"] - before["skipped_incomplete"],
            after["dispatched"] - before["dispatched"]
        ),
        (1, 1, 0),
        "{after:?}"
    );
    assert_accounted(&envoy, "by-cookie");
    assert_eq!(primary.count(), 2 * USERS);

    let copies = mirror.received();
    for (target, salt) in [("by-header", "h"), ("by-cookie", "c")] {
        let expected = sampled(salt, 50.0, &users);
        assert!(
            !expected.is_empty() && expected.len() < USERS,
            "{target}: {expected:?}"
        );
        for protocol in ["h2", "h1"] {
            let got: BTreeSet<String> = copies
                .iter()
                .filter(|c| c.header_str("x-traffic-mirror").as_deref() == Some(target))
                .filter(|c| c.target.starts_with(&format!("/{protocol}/")))
                .map(|c| c.header_str("x-user-id").unwrap())
                .collect();
            assert_eq!(got, expected, "{target} over {protocol}");
        }
    }
    for copy in &copies {
        let i: usize = copy.target[4..].split('?').next().unwrap().parse().unwrap();
        assert_eq!(copy.body, body(i), "{} {}", copy.method, copy.target);
        assert_eq!(copy.method, "POST");
        assert!(copy.target.ends_with("?q=1"));
        assert_eq!(
            copy.header_str("host").as_deref(),
            Some("shop.example-shadow")
        );
        if copy.target.starts_with("/h2/") {
            // Envoy joins an HTTP/2 request's cookie fields into one header.
            assert_eq!(
                copy.header_texts("cookie"),
                [format!("theme=dark; uid={}; lang=en", users[i])]
            );
        }
    }
}

/// A gRPC call, unary or client-streaming, from `user`.
fn call(method: &str, user: &str, messages: Vec<Vec<u8>>) -> GrpcRequest {
    GrpcRequest {
        method: method.to_string(),
        streaming: messages.len() > 1,
        messages,
        metadata: vec![("x-user-id".to_string(), user.to_string())],
    }
}

#[test]
fn grpc_calls_reach_a_grpc_mirror_whole_and_a_failing_mirror_shows_in_its_status_counter() {
    let primary = GrpcServer::start("primary", 0);
    let staging = GrpcServer::start("staging", 0);
    let failing = GrpcServer::start("failing", 14);
    // One service to the healthy mirror, one method of it to the failing one.
    let plugin = json!({"targets": [
        {"name": "cart", "cluster": "staging", "percent": 100,
         "sample_by": {"header": "x-user-id"}, "match": {"path_prefix": "/shop.Cart/"}},
        {"name": "checkout", "cluster": "failing", "percent": 100,
         "sample_by": {"header": "x-user-id"}, "match": {"path_exact": "/shop.Cart/Checkout"}},
        {"name": "gone", "cluster": "gone", "percent": 100, "match": {"path_prefix": "/shop.Other/"}},
        {"name": "late", "cluster": "late", "percent": 100, "timeout_ms": 300,
         "match": {"path_prefix": "/shop.Other/"}}
    ]});
    let late = GrpcServer::start_with("late", 0, Duration::from_secs(2));
    // A mirror that is not there: its port refuses connections.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), staging.addr())
            .http2("primary")
            .http2("mirror")
            .cluster("staging", staging.addr())
            .http2("staging")
            .cluster("failing", failing.addr())
            .http2("failing")
            .cluster("gone", gone)
            .http2("gone")
            .cluster("late", late.addr())
            .http2("late"),
    );
    let calls = vec![
        call("/shop.Cart/Checkout", "u1", vec![b"order-1".to_vec()]),
        call("/shop.Cart/Checkout", "u2", vec![vec![0, 0xff, 7]]),
        call("/shop.Cart/Checkout", "u3", vec![Vec::new()]),
        call(
            "/shop.Cart/Upload",
            "u4",
            vec![b"part-1".to_vec(), pattern(20_000, 4), b"part-3".to_vec()],
        ),
        call(
            "/shop.Cart/Upload",
            "u5",
            vec![b"a".to_vec(), b"b".to_vec()],
        ),
        call("/shop.Other/Ping", "u6", vec![b"ping".to_vec()]),
    ];
    let outcomes = grpc_calls(envoy.listener(), &calls);
    for (call, outcome) in calls.iter().zip(&outcomes) {
        // The primary answered every call, the failing mirror notwithstanding.
        let mut reply = b"reply:".to_vec();
        reply.extend_from_slice(&call.messages[0]);
        assert_eq!(
            (outcome.code, outcome.reply.as_deref()),
            (0, Some(&reply[..])),
            "{}",
            call.method
        );
    }
    assert_eq!(primary.wait_calls(calls.len(), SETTLE).len(), calls.len());

    // The healthy mirror decoded every call of the service, whole, with its metadata.
    let mut copies = staging.wait_calls(5, SETTLE);
    copies.sort_by(|a, b| a.metadata("x-user-id").cmp(&b.metadata("x-user-id")));
    assert_eq!(copies.len(), 5, "{copies:?}");
    for (copy, call) in copies.iter().zip(&calls) {
        assert_eq!(copy.method, call.method);
        assert_eq!(copy.messages, call.messages, "{}", call.method);
        assert_eq!(
            copy.metadata("x-user-id"),
            Some(call.metadata[0].1.as_str())
        );
        assert_eq!(copy.metadata("x-traffic-mirror"), Some("cart"));
    }
    let failed = failing.wait_calls(3, SETTLE);
    assert!(failed.iter().all(|c| c.method == "/shop.Cart/Checkout"));

    // The healthy mirror's answers carry grpc-status 0 in trailers; the failing one's
    // are trailers-only: one HEADERS frame ending the stream, with grpc-status 14.
    let ok = grpc_checkout_direct(staging.addr());
    assert_eq!(ok.frames, ["HEADERS", "DATA", "HEADERS", "END_STREAM"]);
    assert!(ok.trailers.contains(&("grpc-status".into(), "0".into())));
    let trailers_only = grpc_checkout_direct(failing.addr());
    assert_eq!(trailers_only.frames, ["HEADERS", "END_STREAM"]);
    assert_eq!(trailers_only.header("grpc-status"), Some("14"));

    // HTTP 200 for every copy; the codes tell the healthy mirror from the failing one.
    assert_accounted(&envoy, "cart");
    assert_accounted(&envoy, "checkout");
    let grpc = |target: &str| -> Vec<(String, u64)> {
        envoy
            .plugin_stats()
            .into_iter()
            .filter_map(|(name, value)| {
                let code =
                    name.strip_prefix(&format!("wasmcustom.traffic_mirror.{target}.grpc_status."))?;
                Some((code.to_string(), value))
            })
            .collect()
    };
    assert_eq!(grpc("cart"), [("0".to_string(), 5)]);
    assert_eq!(grpc("checkout"), [("14".to_string(), 3)]);
    // Envoy's own answers to a gRPC copy are gRPC too: HTTP 200 with grpc-status 14
    // (UNAVAILABLE) for a refused connection and past timeout_ms, where an HTTP copy
    // gets a 503 or a 504. The mirror cluster's stats say which.
    for (target, cluster_stat) in [
        ("gone", "upstream_cx_connect_fail"),
        ("late", "upstream_rq_timeout"),
    ] {
        let stats = assert_accounted(&envoy, target);
        assert_eq!(
            (stats["responses_2xx"], stats["responses_5xx"]),
            (1, 0),
            "{target}: {stats:?}"
        );
        assert_eq!(grpc(target), [("14".to_string(), 1)], "{target}");
        assert!(
            envoy.stat(&format!("cluster.{target}.{cluster_stat}")) >= 1,
            "{target}"
        );
    }
    let prometheus = envoy.prometheus();
    for line in [
        r#"traffic_mirror_grpc_status{target="cart",grpc_status="0"} 5"#,
        r#"traffic_mirror_grpc_status{target="checkout",grpc_status="14"} 3"#,
        r#"traffic_mirror_responses_2xx{target="checkout"} 3"#,
    ] {
        assert!(
            prometheus.lines().any(|l| l == line),
            "no {line} in:\n{prometheus}"
        );
    }
    // Said once in the log, with the code.
    let log = envoy.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("target checkout: the mirror answered grpc-status 14"))
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn copy_latency_is_a_histogram_per_target_with_each_copy_in_its_bucket() {
    const COPIES: u64 = 12;
    let primary = Upstream::start("primary");
    let slow = Upstream::start_delayed("slow", Duration::from_millis(300));
    let fast = Upstream::start("fast");
    let plugin = json!({"targets": [
        {"name": "slow", "cluster": "mirror", "percent": 100},
        {"name": "fast", "cluster": "fast", "percent": 100}
    ]});
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), slow.addr())
            .cluster("fast", fast.addr())
            .stats_flush(Duration::from_millis(200)),
    );
    let requests: Vec<Request> = (0..COPIES)
        .map(|i| Request::get(&format!("/latency/{i}")))
        .collect();
    send_all(envoy.listener(), &requests, 4, 1);
    assert_accounted(&envoy, "slow");
    assert_accounted(&envoy, "fast");
    // A histogram reaches the admin page when Envoy next merges it (stats_flush).
    let series = |text: &str, name: &str, target: &str, le: Option<&str>| -> Option<f64> {
        text.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let labels = key
                .strip_prefix(name)?
                .strip_prefix('{')?
                .strip_suffix('}')?;
            let mut labels: Vec<&str> = labels.split(',').collect();
            labels.sort_unstable();
            let mut want = vec![format!("target=\"{target}\"")];
            if let Some(le) = le {
                want.push(format!("le=\"{le}\""));
            }
            want.sort();
            (labels == want).then(|| value.parse().ok())?
        })
    };
    let prometheus = wait_for(SETTLE, "both histograms to count every copy", || {
        let text = envoy.prometheus();
        let counts =
            ["slow", "fast"].map(|t| series(&text, "traffic_mirror_latency_ms_count", t, None));
        if counts == [Some(COPIES as f64); 2] {
            Ok(text)
        } else {
            Err(format!("{counts:?}"))
        }
    });
    let bucket = |target: &str, le: &str| {
        series(
            &prometheus,
            "traffic_mirror_latency_ms_bucket",
            target,
            Some(le),
        )
        .unwrap_or_else(|| panic!("no bucket le={le} for {target} in:\n{prometheus}"))
    };
    // The slow mirror answers 300 ms after each copy arrives: every copy in (250, 500].
    assert_eq!(bucket("slow", "250"), 0.0);
    assert_eq!(bucket("slow", "500"), COPIES as f64);
    assert_eq!(bucket("fast", "250"), COPIES as f64);
    let sum = series(&prometheus, "traffic_mirror_latency_ms_sum", "slow", None).unwrap();
    assert!(
        (300.0 * COPIES as f64..500.0 * COPIES as f64).contains(&sum),
        "sum {sum}"
    );
    assert!(
        prometheus
            .lines()
            .any(|l| l == "# TYPE traffic_mirror_latency_ms histogram"),
        "{prometheus}"
    );
}
