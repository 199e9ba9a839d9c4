//! The copy is the request as it arrived at the filter: method, path with query,
//! headers in order and body byte for byte, plus the loop header and the mirror's
//! `:authority`.

use serde_json::json;

use crate::support::upstream::escaped;
use crate::support::{Body, Envoy, EnvoyConfig, Received, Request, Upstream};
use crate::{assert_counters, pattern, send_all, wait_settled};

/// Headers without `host`, and without the named ones, in order; values [`escaped`].
fn without(headers: &[(String, Vec<u8>)], excluded: &[&str]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("host")
                && !excluded.iter().any(|e| name.eq_ignore_ascii_case(e))
        })
        .map(|(name, value)| (name.clone(), escaped(value)))
        .collect()
}

/// The one value of a header that must occur exactly once.
fn single<'a>(request: &'a Received, name: &str, side: &str) -> &'a [u8] {
    let values = request.header_values(name);
    assert_eq!(
        values.len(),
        1,
        "{side} {} {}: header {name} must occur once: {:?}",
        request.method,
        request.target,
        request.headers
    );
    values[0]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks one copy against the primary's request.
///
/// What Envoy adds on each side, excluded from the strict comparison and checked on
/// its own (found by looking at both sides of this very test):
/// - primary: `x-envoy-expected-rq-timeout-ms` (the route's timeout, 15000), added by the
///   router after the filter; a chunked upload keeps its `transfer-encoding: chunked`.
/// - copy: `x-traffic-mirror` (the loop header, value: the target's name, set by the
///   filter); `x-envoy-internal: true` and `x-envoy-expected-rq-timeout-ms` (the
///   target's `timeout_ms`), added by Envoy to every `dispatch_http_call`; for a chunked
///   upload a `content-length` instead of the `transfer-encoding` (Envoy sends the
///   call's body whole).
/// - `host` (`:authority`) differs by design and is compared by the caller.
///
/// Everything else — every other header, with its value bytes, its name and its place
/// in the order, duplicates included — must be the same on both sides.
pub fn assert_copy_of(copy: &Received, primary: &Received, target: &str, timeout_ms: u64) {
    let what = format!("copy to {target} of {} {}", primary.method, primary.target);
    assert_eq!(copy.method, primary.method, "{what}: method");
    assert_eq!(copy.target, primary.target, "{what}: path with query");
    assert!(copy.body == primary.body, "{what}: body differs");

    assert_eq!(
        text(single(primary, "x-envoy-expected-rq-timeout-ms", "primary")),
        "15000",
        "{what}"
    );
    let mut primary_excluded = vec!["x-envoy-expected-rq-timeout-ms"];
    let mut copy_excluded = vec![
        "x-traffic-mirror",
        "x-envoy-internal",
        "x-envoy-expected-rq-timeout-ms",
    ];
    assert_eq!(
        text(single(copy, "x-traffic-mirror", "copy")),
        target,
        "{what}: loop header"
    );
    assert_eq!(
        text(single(copy, "x-envoy-internal", "copy")),
        "true",
        "{what}"
    );
    assert_eq!(
        text(single(copy, "x-envoy-expected-rq-timeout-ms", "copy")),
        timeout_ms.to_string(),
        "{what}: the copy's timeout"
    );
    if primary.chunked {
        assert_eq!(
            text(single(primary, "transfer-encoding", "primary")),
            "chunked",
            "{what}"
        );
        primary_excluded.push("transfer-encoding");
        assert!(
            !copy.chunked,
            "{what}: the copy is sent with a content-length"
        );
        assert_eq!(
            text(single(copy, "content-length", "copy")),
            primary.body.len().to_string(),
            "{what}"
        );
        copy_excluded.push("content-length");
    }
    assert_eq!(
        without(&copy.headers, &copy_excluded),
        without(&primary.headers, &primary_excluded),
        "{what}: headers (left: copy, right: primary)"
    );
}

/// The primary gets the client's headers unchanged, in order: the filter never changes
/// the client's request. Envoy adds `x-forwarded-proto`, `x-request-id` (when the client
/// sent none) and `x-envoy-expected-rq-timeout-ms`, and frames the body itself
/// (`content-length` / `transfer-encoding`): those are left out of the comparison.
fn assert_primary_got_what_was_sent(original: &Received, request: &Request) {
    let sent: Vec<(String, String)> = std::iter::once(("host".to_string(), request.host.clone()))
        .chain(
            request
                .headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), escaped(value))),
        )
        .collect();
    let client_sent_id = sent.iter().any(|(name, _)| name == "x-request-id");
    let received: Vec<(String, String)> = original
        .headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "x-forwarded-proto"
                    | "x-envoy-expected-rq-timeout-ms"
                    | "content-length"
                    | "transfer-encoding"
            ) && (client_sent_id || name != "x-request-id")
        })
        .map(|(name, value)| (name.clone(), escaped(value)))
        .collect();
    assert_eq!(
        received, sent,
        "{} {}: headers at the primary (left) and as sent (right)",
        request.method, request.target
    );
}

fn request_id(request: &Received) -> String {
    text(single(request, "x-request-id", "request"))
}

/// The requests of the copy test: a GET with a query and custom headers (Envoy makes
/// its x-request-id), a POST with a binary body, a chunked PUT, a DELETE.
fn requests() -> Vec<Request> {
    let host = "example.com:8080";
    vec![
        Request::get("/api/items/42?id=42&q=a%20b&empty=&flag&sort=-date&x=%E2%9C%93")
            .host(host)
            .header("User-Agent", "e2e-client/1.0")
            .header("Accept", "application/json, text/plain;q=0.5")
            .header(
                "X-Custom-Header",
                "Mixed Case  Value, with \"quotes\" and ;=,",
            )
            .header("x-dup", "1")
            .header("x-dup", "2")
            .header("cookie", "a=1; session=s3cr3t")
            .header("authorization", "Bearer t0k3n")
            .header("x-user-id", "alice"),
        Request::post("/api/orders?src=e2e&n=1", pattern(3000, 1))
            .host(host)
            .header("content-type", "application/octet-stream")
            .header("x-request-id", "req-post-1")
            .header("x-dup", "b")
            .header("X-Dup", "a"),
        Request::new("PUT", "/api/blob/9?v=2")
            .host(host)
            .header("x-request-id", "req-put-1")
            .header("content-type", "application/octet-stream")
            .chunked(&pattern(2500, 2), 700),
        Request::new("DELETE", "/api/items/7")
            .host(host)
            .header("x-request-id", "req-delete-1"),
    ]
}

#[test]
fn copies_carry_the_method_path_headers_and_body_the_primary_received() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let mirror2 = Upstream::start("mirror2");
    let plugin = json!({"targets": [
        {"name": "shadow", "cluster": "mirror", "percent": 100},
        {"name": "second", "cluster": "mirror2", "percent": 100, "timeout_ms": 2500},
    ]});
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), mirror.addr())
            .cluster("mirror2", mirror2.addr()),
    );
    let requests = requests();
    // One keep-alive connection, in order.
    send_all(envoy.listener(), &requests, 1, 1);

    for (target, timeout) in [("shadow", 5000), ("second", 2500)] {
        wait_settled(&envoy, target);
        assert_counters(
            &envoy,
            target,
            &[
                ("requests", 4),
                ("sampled", 4),
                ("dispatched", 4),
                ("responses_2xx", 4),
            ],
        );
        let upstream = if target == "shadow" {
            &mirror
        } else {
            &mirror2
        };
        let copies = upstream.received();
        let originals = primary.received();
        assert_eq!(originals.len(), 4);
        assert_eq!(copies.len(), 4, "copies at {target}");
        for (request, original) in requests.iter().zip(&originals) {
            // The primary got what the client sent, and no loop header.
            assert_eq!(
                (&original.method, &original.target),
                (&request.method, &request.target)
            );
            assert_eq!(original.body, request.body.bytes());
            assert_eq!(original.chunked, matches!(request.body, Body::Chunked(_)));
            assert_eq!(original.header("x-traffic-mirror"), None, "primary");
            assert_eq!(original.header_str("host").unwrap(), "example.com:8080");
            assert_primary_got_what_was_sent(original, request);

            // Copies are joined to their original by x-request-id.
            let id = request_id(original);
            assert!(!id.is_empty());
            let matching: Vec<&Received> = copies
                .iter()
                .filter(|c| c.header_values("x-request-id") == [id.as_bytes()])
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "copies to {target} with x-request-id {id}"
            );
            let copy = matching[0];
            assert_eq!(
                copy.header_str("host").unwrap(),
                "example.com-shadow:8080",
                "suffix before the port"
            );
            assert_copy_of(copy, original, target, timeout);
        }
        // The ids the client chose survive on both sides; the GET got one from Envoy.
        let ids: Vec<String> = originals.iter().map(request_id).collect();
        assert_eq!(ids[1..], ["req-post-1", "req-put-1", "req-delete-1"]);
        assert_eq!(
            originals[0].header_texts("x-dup"),
            ["1", "2"],
            "repeated headers reach the primary in order"
        );
    }
}

#[test]
fn copy_authority_is_suffixed_fixed_or_kept_as_configured() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [
        {"name": "default", "cluster": "mirror", "percent": 100},
        {"name": "canary", "cluster": "mirror", "percent": 100, "host_suffix": "-canary"},
        {"name": "fixed", "cluster": "mirror", "percent": 100,
         "authority": "mirror.internal:9000"},
        {"name": "keep", "cluster": "mirror", "percent": 100, "host_suffix": ""},
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let hosts = ["example.com:8080", "example.com", "api.example.com:443"];
    let requests: Vec<Request> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            Request::get(&format!("/hosts/{i}"))
                .host(host)
                .header("x-request-id", format!("host-{i}"))
        })
        .collect();
    send_all(envoy.listener(), &requests, 1, 1);

    let expected = [
        (
            "default",
            [
                "example.com-shadow:8080",
                "example.com-shadow",
                "api.example.com-shadow:443",
            ],
        ),
        (
            "canary",
            [
                "example.com-canary:8080",
                "example.com-canary",
                "api.example.com-canary:443",
            ],
        ),
        (
            "fixed",
            [
                "mirror.internal:9000",
                "mirror.internal:9000",
                "mirror.internal:9000",
            ],
        ),
        ("keep", hosts),
    ];
    for (target, _) in &expected {
        wait_settled(&envoy, target);
        assert_counters(
            &envoy,
            target,
            &[
                ("requests", 3),
                ("sampled", 3),
                ("dispatched", 3),
                ("responses_2xx", 3),
            ],
        );
    }
    let copies = mirror.received();
    assert_eq!(copies.len(), 12);
    let originals = primary.received();
    for (target, authorities) in &expected {
        for (i, authority) in authorities.iter().enumerate() {
            let id = format!("host-{i}");
            let matching: Vec<&Received> = copies
                .iter()
                .filter(|c| {
                    c.header_str("x-request-id").as_deref() == Some(id.as_str())
                        && c.header_str("x-traffic-mirror").as_deref() == Some(target)
                })
                .collect();
            assert_eq!(matching.len(), 1, "{target} copy of {id}");
            assert_eq!(
                matching[0].header_texts("host"),
                [*authority],
                "{target} copy of {id}"
            );
            assert_copy_of(matching[0], &originals[i], target, 5000);
            assert_eq!(originals[i].header_str("host").unwrap(), hosts[i]);
        }
    }
}

#[test]
fn header_bytes_outside_utf8_are_copied_byte_for_byte() {
    // Envoy lets bytes 0x80-0xFF through in header values. The copy must carry them
    // unchanged (the header map travels as the bytes the host serialized), the sampling
    // key is hashed as received, and the filter goes on mirroring afterwards.
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [{"name": "t", "cluster": "mirror", "percent": 100,
                                     "sample_by": {"header": "x-user-id"}}]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let odd = Request::get("/latin1")
        .header("x-user-id", b"caf\xe9")
        .header("x-note", b"\xff\xfe raw");
    send_all(envoy.listener(), &[odd], 1, 1);
    let after = [
        Request::get("/after/1").header("x-user-id", "u1"),
        Request::get("/after/2").header("x-user-id", "u2"),
    ];
    send_all(envoy.listener(), &after, 1, 1);

    wait_settled(&envoy, "t");
    let original = &primary.received()[0];
    assert_eq!(original.header_texts("x-user-id"), ["caf\\xe9"]);
    assert_eq!(original.header_texts("x-note"), ["\\xff\\xfe raw"]);
    let mut paths: Vec<String> = mirror.received().iter().map(|c| c.target.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/after/1", "/after/2", "/latin1"]);
    let copies = mirror.received();
    let copy = copies.iter().find(|c| c.target == "/latin1").unwrap();
    assert_eq!(copy.header("x-user-id"), Some(&b"caf\xe9"[..]));
    assert_eq!(copy.header("x-note"), Some(&b"\xff\xfe raw"[..]));
    assert_counters(
        &envoy,
        "t",
        &[
            ("requests", 3),
            ("sampled", 3),
            ("dispatched", 3),
            ("responses_2xx", 3),
        ],
    );
}
