//! `traffic-mirror explain` and the filter tell the same story: over generated requests
//! (methods, paths, hosts, keys in headers, cookies and queries, declared lengths, the
//! loop header, upgrades, incoming lanes in the header and in baggage), each target's
//! verdict and reason in `explain` are what the filter counted and sent, the copy
//! `explain` shows is the copy sent, byte for byte, and so is the baggage it writes.

use serde_json::json;
use traffic_mirror_core::config::parse;
use traffic_mirror_core::explain::{explain, Reason};
use traffic_mirror_core::request::HeaderList;
use traffic_mirror_core::sampling::Rng;
use traffic_mirror_core::testing::{Envoy, Exports, FakeAnswer};

use crate::{configured, ROOT};

const TARGETS: [&str; 4] = ["by-user", "by-cookie", "by-query", "prod-only"];
const COUNTERS: [&str; 7] = [
    "requests",
    "sampled",
    "dispatched",
    "skipped_loop",
    "skipped_missing_key",
    "skipped_body_too_large",
    "skipped_in_flight",
];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[(rng.next_u64() % from.len() as u64) as usize]
}

/// One generated request: its headers (pseudo-headers first, as Envoy orders them) and
/// its body.
fn request(rng: &mut Rng) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, value: String| headers.push((name.to_string(), value.into_bytes()));
    let method = pick(rng, &["GET", "GET", "POST", "PUT", "CONNECT"]);
    let path = pick(
        rng,
        &[
            "/api/items",
            "/api/items?sid=",
            "/api/health/x",
            "/other",
            "/",
        ],
    );
    let sid = rng.next_u64() % 1000;
    let path = if path.ends_with('=') {
        format!("{path}{sid}")
    } else if rng.next_u64().is_multiple_of(2) {
        format!("{path}?sid={sid}")
    } else {
        path.to_string()
    };
    add(
        ":authority",
        pick(rng, &["shop.test", "a.example.com", "other.test:8080"]).into(),
    );
    add(":path", path);
    add(":method", method.into());
    add(":scheme", "http".into());
    if !rng.next_u64().is_multiple_of(4) {
        add("x-user-id", format!("user-{}", rng.next_u64() % 500));
    }
    if rng.next_u64().is_multiple_of(2) {
        add("cookie", format!("a=1; uid=c{}", rng.next_u64() % 300));
    }
    if rng.next_u64().is_multiple_of(2) {
        add("x-env", pick(rng, &["prod", "dev"]).into());
    }
    if rng.next_u64().is_multiple_of(12) {
        add("x-traffic-mirror", "elsewhere".into());
    }
    if rng.next_u64().is_multiple_of(15) {
        add("upgrade", "websocket".into());
    }
    if rng.next_u64().is_multiple_of(5) {
        add("x-lane", pick(rng, &["beta", "unknown", ""]).into());
    }
    if rng.next_u64().is_multiple_of(3) {
        add(
            "baggage",
            pick(
                rng,
                &[
                    "userId=7;p=1",
                    "lane=beta",
                    "a=1, lane=canary",
                    "lane=%zz,b=2",
                    "",
                ],
            )
            .into(),
        );
        if rng.next_u64().is_multiple_of(2) {
            add(
                "baggage",
                pick(rng, &["lane=stable", "k=v", "lane=admin"]).into(),
            );
        }
    }
    let body = match (method, rng.next_u64() % 3) {
        ("POST" | "PUT", 0) => vec![b'a'; 5],
        ("POST" | "PUT", 1) => vec![b'b'; 50],
        _ => Vec::new(),
    };
    if !body.is_empty() {
        add("content-length", body.len().to_string());
    }
    (headers, body)
}

pub fn explain_and_the_filter_agree_on_generated_requests<E: Exports>(envoy: Envoy<E>) {
    let configuration = json!({
    "lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "lanes",
              "split": [{"lane": "canary", "percent": 20}, {"lane": "beta", "percent": 10}],
              "default": "stable", "keep_incoming": true, "baggage": "lane"},
    "targets": [
        {"name": "by-user", "cluster": "c1", "percent": 50, "sample_by": {"header": "x-user-id"},
         "match": {"methods": ["GET", "POST"]}, "max_body_bytes": 100,
         "headers": {"remove": ["cookie"], "set": {"x-env": "staging"}}},
        {"name": "by-cookie", "cluster": "c2", "percent": 30, "sample_by": {"cookie": "uid"},
         "match": {"path_prefix": "/api", "exclude_path_prefixes": ["/api/health"]},
         "authority": "mirror.internal"},
        {"name": "by-query", "cluster": "c3", "percent": 70, "sample_by": {"query": "sid"},
         "on_missing_key": "random", "match": {"hosts": ["shop.test", "*.example.com"]},
         "host_suffix": ""},
        {"name": "prod-only", "cluster": "c4", "percent": 100, "sample_by": {"header": "x-user-id"},
         "match": {"headers": {"x-env": "prod"}}, "max_body_bytes": 10,
         "headers": {"redact": ["cookie"]}}
    ]});
    let plan = parse(configuration.to_string().as_bytes()).unwrap();
    let mut envoy = configured(envoy, configuration);
    let mut rng = Rng::new(2026);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let (headers, body) = request(&mut rng);
        let mut held = HeaderList {
            headers: headers.clone(),
        };
        let explanation = explain(&plan, &mut held);

        let before: Vec<Vec<i64>> = TARGETS
            .iter()
            .map(|t| {
                COUNTERS
                    .iter()
                    .map(|c| envoy.host().target_stat(t, c))
                    .collect()
            })
            .collect();
        let lanes_before: Vec<i64> = ["canary", "beta", "stable"]
            .iter()
            .flat_map(|l| ["assigned", "kept"].map(|s| format!("traffic_lanes.{l}.{s}")))
            .map(|name| envoy.host().stat(&name))
            .collect();
        let first_sent = envoy.host().sent.len();
        let refs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let chunks: Vec<&[u8]> = if body.is_empty() { vec![] } else { vec![&body] };
        let context = envoy.request_bytes(ROOT, &refs, &chunks, true);
        assert!(envoy.done(context));
        let sent: Vec<_> = envoy.host().sent[first_sent..].to_vec();
        let what = format!("{headers:?}: {explanation:?}");

        for (t, verdict) in explanation.targets.iter().enumerate() {
            let name = TARGETS[t];
            let delta = |counter: &str, envoy: &mut Envoy<E>| {
                let i = COUNTERS.iter().position(|c| *c == counter).unwrap();
                envoy.host().target_stat(name, counter) - before[t][i]
            };
            let copy = sent
                .iter()
                .find(|c| c.header("x-traffic-mirror") == Some(name.as_bytes()));
            seen.insert(verdict.reason.name());
            match verdict.mirrored {
                Some(true) => {
                    let copy = copy.unwrap_or_else(|| panic!("{name} mirrored, not sent: {what}"));
                    assert_eq!(Some(&copy.headers), verdict.copy.as_ref(), "{name}: {what}");
                    assert_eq!(copy.body, body, "{name}: {what}");
                    assert_eq!(delta("dispatched", &mut envoy), 1, "{name}: {what}");
                }
                Some(false) => {
                    assert!(copy.is_none(), "{name} not mirrored, sent: {what}");
                    let counted = match verdict.reason {
                        Reason::Loop => Some("skipped_loop"),
                        Reason::MissingKey => Some("skipped_missing_key"),
                        Reason::BodyTooLarge => Some("skipped_body_too_large"),
                        Reason::NotSampled => Some("requests"),
                        Reason::NoMatch => None,
                        other => panic!("{name}: not mirrored for {other:?}: {what}"),
                    };
                    match counted {
                        Some(counter) => {
                            assert_eq!(delta(counter, &mut envoy), 1, "{name} {counter}: {what}")
                        }
                        None => assert_eq!(delta("requests", &mut envoy), 0, "{name}: {what}"),
                    }
                    assert_eq!(delta("dispatched", &mut envoy), 0, "{name}: {what}");
                }
                None => {
                    assert_eq!(verdict.reason, Reason::Random);
                    assert_eq!(delta("requests", &mut envoy), 1, "{name}: {what}");
                    assert_eq!(
                        delta("dispatched", &mut envoy),
                        i64::from(copy.is_some()),
                        "{name}: {what}"
                    );
                }
            }
        }
        // The lane and the baggage: on every copy, and counted, as explain says.
        let baggage = explanation
            .baggage
            .clone()
            .expect("the lanes write baggage");
        for copy in &sent {
            assert_eq!(
                copy.header("x-lane")
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                explanation.lane,
                "{what}"
            );
            let fields: Vec<String> = copy
                .headers
                .iter()
                .filter(|(n, _)| n == b"baggage")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            let joined = (!fields.is_empty()).then(|| fields.join(","));
            assert_eq!(joined, baggage, "{what}");
        }
        let lanes_after: Vec<i64> = ["canary", "beta", "stable"]
            .iter()
            .flat_map(|l| ["assigned", "kept"].map(|s| format!("traffic_lanes.{l}.{s}")))
            .map(|name| envoy.host().stat(&name))
            .collect();
        let moved: i64 = lanes_after
            .iter()
            .zip(&lanes_before)
            .map(|(a, b)| a - b)
            .sum();
        let named = explanation
            .lane
            .as_deref()
            .is_some_and(|l| ["canary", "beta", "stable"].contains(&l));
        assert_eq!(moved, i64::from(named), "{what}");
        for copy in sent {
            envoy.answer(copy.token, FakeAnswer::status(200), 0);
        }
    }
    // Every reason came up.
    for reason in [
        "loop",
        "no_match",
        "missing_key",
        "not_sampled",
        "body_too_large",
        "sampled",
        "random",
    ] {
        assert!(seen.contains(reason), "{reason} never came up: {seen:?}");
    }
    crate::assert_accounted(&mut envoy, &TARGETS);
}
