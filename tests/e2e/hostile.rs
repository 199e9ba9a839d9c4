//! Hostile input: huge, binary, empty and malformed headers, cookies and queries. Every
//! client request still reaches the primary; each key is decided on its raw bytes (or
//! counted missing); the filter goes on mirroring normally; Envoy's log shows no panic.

use std::collections::BTreeMap;

use serde_json::json;

use crate::sampling::{case_of, CASE};
use crate::support::{Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_counters, send_all, wait_settled};

/// A hostile request and which targets have a usable key in it (cookie, query, header).
struct Case {
    request: Request,
    keys: [bool; 3],
}

fn case(request: Request, cookie: bool, query: bool, header: bool) -> Case {
    Case {
        request,
        keys: [cookie, query, header],
    }
}

fn hostile_cases() -> Vec<Case> {
    // Envoy refuses more than 100 headers (max_headers_count) with a 431 of its own.
    let many = (0..80).fold(Request::get("/h/many"), |r, i| {
        r.header(&format!("x-h-{i}"), format!("value {i}"))
    });
    vec![
        case(
            Request::get("/h/big")
                .header("x-big", "a".repeat(8192))
                .header("x-user-id", "u-big"),
            false,
            false,
            true,
        ),
        case(
            Request::get("/h/bytes")
                .header("x-user-id", b"caf\xe9")
                .header("x-note", b"\xff\xfe\x80 raw"),
            false,
            false,
            true,
        ),
        case(
            Request::get("/h/empty-cookie").header("cookie", ""),
            false,
            false,
            false,
        ),
        case(
            Request::get("/h/c1").header("cookie", ";;=;"),
            false,
            false,
            false,
        ),
        case(
            Request::get("/h/c2").header("cookie", "uid"),
            false,
            false,
            false,
        ),
        case(
            Request::get("/h/c3").header("cookie", "=x"),
            false,
            false,
            false,
        ),
        case(
            Request::get("/h/c4").header("cookie", "uid="),
            false,
            false,
            false,
        ),
        // The value is everything after the first '=': "=a".
        case(
            Request::get("/h/c5").header("cookie", "uid==a"),
            true,
            false,
            false,
        ),
        case(
            Request::get("/h/c6").header("cookie", "a=1;uid=\"q\";"),
            true,
            false,
            false,
        ),
        case(Request::get("/h/q1?"), false, false, false),
        case(Request::get("/h/q2?&&"), false, false, false),
        case(Request::get("/h/q3?sid"), false, false, false),
        case(Request::get("/h/q4?sid="), false, false, false),
        case(Request::get("/h/q5?=x"), false, false, false),
        case(Request::get("/h/q6?sid=%00"), false, true, false),
        case(Request::get("/h/q7?sid=a%ZZ&sid=b"), false, true, false),
        case(Request::get("/h/%00/nul"), false, false, false),
        case(
            Request::get(&format!("/h/long/{}", "p".repeat(4000))),
            false,
            false,
            false,
        ),
        case(many.header("x-user-id", ""), false, false, false),
    ]
}

#[test]
fn hostile_input_is_decided_on_raw_bytes_and_the_filter_keeps_working() {
    let primary = Upstream::start("primary");
    let mirrors = [
        Upstream::start("by-cookie"),
        Upstream::start("by-query"),
        Upstream::start("by-header"),
    ];
    let names = ["by-cookie", "by-query", "by-header"];
    let plugin = json!({"targets": [
        {"name": "by-cookie", "cluster": "by-cookie", "percent": 100, "sample_by": {"cookie": "uid"}},
        {"name": "by-query", "cluster": "by-query", "percent": 100, "sample_by": {"query": "sid"}},
        {"name": "by-header", "cluster": "by-header", "percent": 100, "sample_by": {"header": "x-user-id"}},
    ]});
    let mut config = EnvoyConfig::new(&plugin.to_string(), primary.addr(), mirrors[0].addr());
    for (name, mirror) in names.iter().zip(&mirrors) {
        config = config.cluster(name, mirror.addr());
    }
    let envoy = Envoy::start(config);

    let cases = hostile_cases();
    let hostile: Vec<Request> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| c.request.clone().header(CASE, i.to_string()))
        .collect();
    // Every one of them reaches the primary with a 200.
    send_all(envoy.listener(), &hostile, 1, 1);
    // Then normal traffic, with every key: all of it is mirrored by every target.
    let normal: Vec<Request> = (0..20)
        .map(|i| {
            let n = cases.len() + i;
            Request::get(&format!("/normal/{i}?sid=s{i}"))
                .header("cookie", format!("uid=c{i}"))
                .header("x-user-id", format!("h{i}"))
                .header(CASE, n.to_string())
        })
        .collect();
    send_all(envoy.listener(), &normal, 1, 1);

    let total = (cases.len() + normal.len()) as u64;
    for (t, (name, mirror)) in names.iter().zip(&mirrors).enumerate() {
        let with_key: Vec<usize> = (0..cases.len())
            .filter(|&i| cases[i].keys[t])
            .chain(cases.len()..cases.len() + normal.len())
            .collect();
        let n = with_key.len() as u64;
        wait_settled(&envoy, name);
        assert_counters(
            &envoy,
            name,
            &[
                ("requests", total),
                ("sampled", n),
                ("dispatched", n),
                ("responses_2xx", n),
                ("skipped_missing_key", total - n),
            ],
        );
        let mut got: Vec<usize> = mirror.received().iter().map(case_of).collect();
        got.sort_unstable();
        assert_eq!(got, with_key, "{name}: requests mirrored");
    }

    // Raw bytes travel unchanged to the copy.
    let copies: BTreeMap<usize, _> = mirrors[2]
        .received()
        .into_iter()
        .map(|c| (case_of(&c), c))
        .collect();
    let bytes = &copies[&1];
    assert_eq!(bytes.header("x-user-id"), Some(&b"caf\xe9"[..]));
    assert_eq!(bytes.header("x-note"), Some(&b"\xff\xfe\x80 raw"[..]));
    assert_eq!(copies[&0].header("x-big").map(<[u8]>::len), Some(8192));
    let query_copies: Vec<String> = mirrors[1]
        .received()
        .iter()
        .map(|c| c.target.clone())
        .collect();
    assert!(
        query_copies.iter().any(|t| t == "/h/q6?sid=%00"),
        "{query_copies:?}"
    );

    let log = envoy.log();
    for bad in ["panic", "critical", "re-entrant"] {
        assert!(
            !log.to_lowercase().contains(bad),
            "Envoy's log mentions {bad:?}:\n{log}"
        );
    }
}
