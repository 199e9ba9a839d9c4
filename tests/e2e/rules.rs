//! Per-target rules: `match` picks the requests a target considers; `headers` changes
//! the copy only, never the request the primary gets.

use serde_json::json;

use crate::support::{Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_counters, send_all, wait_settled};

#[test]
fn copy_headers_are_removed_set_and_redacted_on_the_copy_only() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [{
        "name": "scrubbed", "cluster": "mirror", "percent": 100,
        "headers": {
            "remove": ["cookie", "X-Internal-Token"],
            "set": {"x-env": "staging", "X-New": "added"},
            "redact": ["authorization", "X-Api-Key", "x-absent"]
        }
    }]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let request = Request::get("/scrub")
        .header("cookie", "session=s3cr3t")
        .header("x-internal-token", "t0k3n")
        .header("X-Env", "prod")
        .header("authorization", "Bearer abc")
        .header("x-api-key", "k1")
        .header("x-api-key", "k2")
        .header("x-keep", "kept");
    send_all(envoy.listener(), &[request], 1, 1);
    wait_settled(&envoy, "scrubbed");
    assert_counters(
        &envoy,
        "scrubbed",
        &[
            ("requests", 1),
            ("sampled", 1),
            ("dispatched", 1),
            ("responses_2xx", 1),
        ],
    );

    let copy = &mirror.received()[0];
    let values = |name: &str| copy.header_texts(name);
    assert_eq!(values("cookie"), Vec::<String>::new());
    assert_eq!(values("x-internal-token"), Vec::<String>::new());
    assert_eq!(values("x-env"), ["staging"]);
    assert_eq!(values("x-new"), ["added"]);
    assert_eq!(values("authorization"), ["[REDACTED]"]);
    assert_eq!(values("x-api-key"), ["[REDACTED]", "[REDACTED]"]);
    assert_eq!(
        values("x-absent"),
        Vec::<String>::new(),
        "redact adds nothing"
    );
    assert_eq!(values("x-keep"), ["kept"]);

    let original = &primary.received()[0];
    let originals = |name: &str| original.header_texts(name);
    assert_eq!(originals("cookie"), ["session=s3cr3t"]);
    assert_eq!(originals("x-internal-token"), ["t0k3n"]);
    assert_eq!(originals("x-env"), ["prod"]);
    assert_eq!(originals("x-new"), Vec::<String>::new());
    assert_eq!(originals("authorization"), ["Bearer abc"]);
    assert_eq!(originals("x-api-key"), ["k1", "k2"]);
}

#[test]
fn only_requests_meeting_every_match_condition_are_considered() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [
        {"name": "api", "cluster": "mirror", "percent": 100,
         "match": {"path_prefix": "/api/", "methods": ["get", "POST"],
                   "headers": {"X-Env": "prod", "x-flag": true}}},
        {"name": "exact", "cluster": "mirror", "percent": 100,
         "match": {"path_exact": "/search"}},
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let api = |method: &str, path: &str| {
        Request::new(method, path)
            .header("x-env", "prod")
            .header("x-flag", "1")
    };
    // (request, considered by "api", considered by "exact")
    let cases = [
        (api("GET", "/api/a"), true, false),
        (api("POST", "/api/b?x=1"), true, false),
        (api("GET", "/api/?q=/other"), true, false),
        (api("PUT", "/api/c"), false, false),
        (api("GET", "/api"), false, false),
        (api("GET", "/other/api/"), false, false),
        (api("GET", "/apix?p=/api/"), false, false),
        (
            Request::get("/api/d")
                .header("x-env", "staging")
                .header("x-flag", "1"),
            false,
            false,
        ),
        (Request::get("/api/e").header("x-env", "prod"), false, false),
        (Request::get("/search?q=/api/"), false, true),
        (Request::get("/search"), false, true),
        (Request::get("/search/x"), false, false),
        (Request::get("/searc"), false, false),
    ];
    let requests: Vec<Request> = cases
        .iter()
        .enumerate()
        .map(|(i, (request, _, _))| request.clone().header("x-case", i.to_string()))
        .collect();
    send_all(envoy.listener(), &requests, 1, 1);

    for (target, column) in [("api", 1), ("exact", 2)] {
        let want: Vec<String> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| if column == 1 { c.1 } else { c.2 })
            .map(|(i, _)| i.to_string())
            .collect();
        let n = want.len() as u64;
        wait_settled(&envoy, target);
        assert_counters(
            &envoy,
            target,
            &[
                ("requests", n),
                ("sampled", n),
                ("dispatched", n),
                ("responses_2xx", n),
            ],
        );
        let mut got: Vec<String> = mirror
            .received()
            .iter()
            .filter(|c| c.header_str("x-traffic-mirror").as_deref() == Some(target))
            .map(|c| c.header_str("x-case").unwrap())
            .collect();
        got.sort_by_key(|c| c.parse::<usize>().unwrap());
        assert_eq!(got, want, "requests mirrored by {target}");
    }
}
