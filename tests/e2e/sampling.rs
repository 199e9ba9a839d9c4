//! Hash sampling: the set of requests mirrored is exactly the set the normative rule
//! picks, computed here independently of the crate, for header, cookie and query keys,
//! on one and on two workers, and again after a restart.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use xxhash_rust::xxh64::xxh64;

use crate::support::upstream::escaped;
use crate::support::{Envoy, EnvoyConfig, Received, Request, Upstream};
use crate::{assert_counters, send_all, wait_settled};

/// The normative rule (docs/specification.md, "The sampling decision"), written out on its own:
///
/// ```text
/// h         = XXH64(bytes(S) ++ b":" ++ bytes(K), seed = 0)
/// bucket    = h mod 1_000_000
/// threshold = floor(percent * 10_000 + 0.5)
/// mirror    = bucket < threshold
/// ```
pub fn rule_picks(salt: &str, key: &[u8], percent: f64) -> bool {
    let mut input = salt.as_bytes().to_vec();
    input.push(b':');
    input.extend_from_slice(key);
    let bucket = xxh64(&input, 0) % 1_000_000;
    let threshold = (percent * 10_000.0 + 0.5).floor() as u64;
    bucket < threshold
}

/// Which request a copy is a copy of.
pub const CASE: &str = "x-case";

pub fn case_of(copy: &Received) -> usize {
    copy.header_str(CASE)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("copy without {CASE}: {copy:?}"))
}

/// `n` distinct keys of several shapes (plain, hex, spaces, UTF-8, percent signs).
pub fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 5 {
            0 => format!("user-{i}"),
            1 => format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            2 => format!("Jane Doe #{i}"),
            3 => format!("usér-{i}@exämple.com"),
            _ => format!("k{i}%2F%20{}", i * 7),
        })
        .collect()
}

/// One target `name` to cluster `mirror` with these settings.
fn plugin(name: &str, percent: f64, sample_by: Value, salt: Option<&str>) -> String {
    let mut target = json!({"name": name, "cluster": "mirror", "percent": percent,
                            "sample_by": sample_by, "on_missing_key": "skip"});
    if let Some(salt) = salt {
        target["salt"] = json!(salt);
    }
    json!({ "targets": [target] }).to_string()
}

/// Sends `keyed` (request `i` made from key `i`, tagged with its index) and `missing`
/// (requests without a usable key), then asserts that the mirror received exactly the
/// copies of the keyed requests the rule picks, once each, and the target's counters.
/// `clients`: client threads, and keep-alive connections per thread. Returns the
/// indices mirrored.
#[allow(clippy::too_many_arguments)]
fn check_decisions(
    envoy: &Envoy,
    mirror: &Upstream,
    target: &str,
    salt: &str,
    percent: f64,
    keys: &[String],
    keyed: impl Fn(&str) -> Request,
    missing: Vec<Request>,
    clients: (usize, usize),
) -> BTreeSet<usize> {
    let already = mirror.count();
    let expected: BTreeSet<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, key)| rule_picks(salt, key.as_bytes(), percent))
        .map(|(i, _)| i)
        .collect();
    // The rule must pick a plausible share, or this test tests nothing.
    let share = expected.len() as f64 / keys.len() as f64 * 100.0;
    assert!(
        (percent - 8.0..percent + 8.0).contains(&share),
        "the rule picks {share:.1} % of the keys at {percent} %"
    );

    let mut requests: Vec<Request> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| keyed(key).header(CASE, i.to_string()))
        .collect();
    let n_missing = missing.len();
    requests.extend(
        missing
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.header(CASE, (keys.len() + i).to_string())),
    );
    let (threads, connections) = clients;
    send_all(envoy.listener(), &requests, threads, connections);

    let e = expected.len() as u64;
    wait_settled(envoy, target);
    assert_counters(
        envoy,
        target,
        &[
            ("requests", requests.len() as u64),
            ("sampled", e),
            ("dispatched", e),
            ("responses_2xx", e),
            ("skipped_missing_key", n_missing as u64),
        ],
    );
    let copies = mirror.received().split_off(already);
    let mut cases: Vec<usize> = copies.iter().map(case_of).collect();
    cases.sort_unstable();
    let got: BTreeSet<usize> = cases.iter().copied().collect();
    assert_eq!(got.len(), cases.len(), "some request was copied twice");
    let missed: Vec<&String> = expected.difference(&got).map(|&i| &keys[i]).collect();
    let extra: Vec<String> = got
        .difference(&expected)
        .map(|&i| {
            keys.get(i)
                .cloned()
                .unwrap_or(format!("(request without key #{i})"))
        })
        .collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "mirrored set differs from the rule's: {} picked by the rule but not mirrored: \
         {missed:?}; {} mirrored but not picked: {extra:?}",
        missed.len(),
        extra.len()
    );
    got
}

#[test]
fn header_key_decisions_follow_the_normative_rule() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = plugin("users", 30.0, json!({"header": "x-user-id"}), Some("s1"));
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    let keys = keys(1200);
    let mut missing: Vec<Request> = (0..20)
        .map(|i| Request::get(&format!("/nokey/{i}")))
        .collect();
    missing
        .extend((0..10).map(|i| Request::get(&format!("/emptykey/{i}")).header("x-user-id", "")));
    let picked = check_decisions(
        &envoy,
        &mirror,
        "users",
        "s1",
        30.0,
        &keys,
        |key| Request::get("/items").header("x-user-id", key),
        missing,
        (4, 2),
    );
    // Each copy carries the key it was picked by.
    for copy in mirror.received() {
        let i = case_of(&copy);
        assert!(picked.contains(&i));
        assert_eq!(
            copy.header_texts("x-user-id"),
            [escaped(keys[i].as_bytes())]
        );
    }
}

#[test]
fn decisions_are_the_same_on_two_workers_and_after_a_restart() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = plugin("users", 30.0, json!({"header": "x-user-id"}), Some("s1"));
    let mut envoy =
        Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()).concurrency(2));
    let keys = keys(1000);
    let request = |key: &str| Request::get("/items").header("x-user-id", key);
    // 32 connections: the kernel spreads them over both workers' sockets.
    let first = check_decisions(
        &envoy,
        &mirror,
        "users",
        "s1",
        30.0,
        &keys,
        request,
        vec![],
        (4, 8),
    );

    // Both workers took part (each runs its own copy of the module).
    let stats = envoy.stats();
    for worker in ["worker_0", "worker_1"] {
        let suffix = format!(".{worker}.downstream_cx_total");
        let connections: u64 = stats
            .iter()
            .filter(|(name, _)| name.starts_with("listener.127.0.0.1_") && name.ends_with(&suffix))
            .map(|(_, value)| *value)
            .sum();
        assert!(connections > 0, "{worker} took no connection");
    }

    envoy.restart();
    let second = check_decisions(
        &envoy,
        &mirror,
        "users",
        "s1",
        30.0,
        &keys,
        request,
        vec![],
        (4, 8),
    );
    assert_eq!(first, second);
}

#[test]
fn cookie_key_decisions_follow_the_normative_rule() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = plugin(
        "by-cookie",
        40.0,
        json!({"cookie": "uid"}),
        Some("cookie-salt"),
    );
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    let keys = keys(400);
    let missing = vec![
        Request::get("/nocookie"),
        Request::get("/otherconfig").header("cookie", "theme=dark; lang=en"),
        Request::get("/empty").header("cookie", "theme=dark; uid=; lang=en"),
        Request::get("/prefix").header("cookie", "xuid=1; uidx=2"),
    ];
    check_decisions(
        &envoy,
        &mirror,
        "by-cookie",
        "cookie-salt",
        40.0,
        &keys,
        |key| Request::get("/c").header("cookie", format!("theme=dark; uid={key}; lang=en")),
        missing,
        (2, 2),
    );
}

#[test]
fn query_key_decisions_use_the_raw_value_and_the_target_name_as_default_salt() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = plugin("by-query", 50.0, json!({"query": "sid"}), None);
    let envoy = Envoy::start(EnvoyConfig::new(&plugin, primary.addr(), mirror.addr()));
    // Query keys must be valid in a request line: percent-encode the odd characters
    // (the rule hashes the raw, still-encoded text).
    let keys: Vec<String> = keys(400)
        .into_iter()
        .map(|k| {
            k.replace(' ', "%20")
                .replace('#', "%23")
                .replace("é", "%C3%A9")
                .replace("ä", "%C3%A4")
                .replace('@', "%40")
        })
        .collect();
    let missing = vec![
        Request::get("/search?x=1"),
        Request::get("/search?sid=&x=1"),
        Request::get("/search?x=1&sid"),
        Request::get("/search?xsid=1&sidx=2"),
    ];
    check_decisions(
        &envoy,
        &mirror,
        "by-query",
        "by-query",
        50.0,
        &keys,
        |key| Request::get(&format!("/search?x=1&sid={key}&y=2")),
        missing,
        (2, 2),
    );
}
