//! The loop header: added to every copy, and a request that carries it is never
//! mirrored (counted in every target's `skipped_loop`).

use serde_json::json;

use crate::support::{Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_counters, send_all, wait_settled};

#[test]
fn request_carrying_the_loop_header_is_not_mirrored_by_any_target() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let mirror2 = Upstream::start("mirror2");
    let plugin = json!({"targets": [
        {"name": "a", "cluster": "mirror", "percent": 100},
        {"name": "b", "cluster": "mirror2", "percent": 100},
    ]});
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), mirror.addr())
            .cluster("mirror2", mirror2.addr()),
    );
    let looping = [
        ("x-traffic-mirror", "a"),
        ("X-Traffic-Mirror", "someone-else"),
        ("x-traffic-mirror", "b"),
    ];
    let mut requests: Vec<Request> = looping
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            Request::get(&format!("/looping/{i}"))
                .header(name, value)
                .header("x-request-id", format!("loop-{i}"))
        })
        .collect();
    // A request without the header afterwards, on the same connection: it is
    // mirrored, so the filter is working and the looping ones were really skipped.
    requests.push(Request::get("/fresh").header("x-request-id", "fresh"));
    send_all(envoy.listener(), &requests, 1, 1);

    for (target, upstream) in [("a", &mirror), ("b", &mirror2)] {
        wait_settled(&envoy, target);
        assert_counters(
            &envoy,
            target,
            &[
                ("skipped_loop", 3),
                ("requests", 1),
                ("sampled", 1),
                ("dispatched", 1),
                ("responses_2xx", 1),
            ],
        );
        let copies = upstream.received();
        let paths: Vec<&str> = copies.iter().map(|c| c.target.as_str()).collect();
        assert_eq!(paths, ["/fresh"], "copies at {target}");
        assert_eq!(copies[0].header_texts("x-traffic-mirror"), [target]);
    }
    // The primary gets every request unchanged, the loop header included.
    let originals = primary.received();
    assert_eq!(originals.len(), 4);
    for (original, (_, value)) in originals.iter().zip(&looping) {
        assert_eq!(original.header_texts("x-traffic-mirror"), [*value]);
    }
    assert_eq!(originals[3].header("x-traffic-mirror"), None);
}

#[test]
fn configured_loop_header_replaces_the_default_one() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({
        "targets": [{"name": "t", "cluster": "mirror", "percent": 100}],
        "loop_header": "X-Mirrored-By",
    });
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let requests = [
        Request::get("/guarded").header("x-mirrored-by", "elsewhere"),
        // The default loop header means nothing now: this one is mirrored.
        Request::get("/default-header").header("x-traffic-mirror", "t"),
        Request::get("/plain"),
    ];
    send_all(envoy.listener(), &requests, 1, 1);
    wait_settled(&envoy, "t");
    assert_counters(
        &envoy,
        "t",
        &[
            ("skipped_loop", 1),
            ("requests", 2),
            ("sampled", 2),
            ("dispatched", 2),
            ("responses_2xx", 2),
        ],
    );
    // Copies may overtake each other (separate upstream connections): sort by path.
    let mut copies = mirror.received();
    copies.sort_by(|a, b| a.target.cmp(&b.target));
    let paths: Vec<&str> = copies.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(paths, ["/default-header", "/plain"]);
    for copy in &copies {
        assert_eq!(copy.header_texts("x-mirrored-by"), ["t"], "{}", copy.target);
    }
    // The copy keeps the request's own headers, an unrelated x-traffic-mirror included.
    assert_eq!(copies[0].header_texts("x-traffic-mirror"), ["t"]);
    assert_eq!(copies[1].header("x-traffic-mirror"), None);
}

#[test]
fn mirror_side_running_the_filter_does_not_mirror_the_copies_again() {
    // Staging runs the same filter (mirroring everything to its own mirror); production
    // mirrors everything to staging's Envoy. A copy reaching staging carries the loop
    // header, so staging passes it on to its upstream and does not copy it again.
    let staging_app = Upstream::start("staging-app");
    let staging_mirror = Upstream::start("staging-mirror");
    let staging_plugin =
        json!({"targets": [{"name": "again", "cluster": "mirror", "percent": 100}]});
    let staging = Envoy::start(EnvoyConfig::new(
        &staging_plugin.to_string(),
        staging_app.addr(),
        staging_mirror.addr(),
    ));
    let production_app = Upstream::start("primary");
    let production_plugin =
        json!({"targets": [{"name": "to-staging", "cluster": "mirror", "percent": 100}]});
    let production = Envoy::start(EnvoyConfig::new(
        &production_plugin.to_string(),
        production_app.addr(),
        staging.listener(),
    ));

    let requests: Vec<Request> = (0..5)
        .map(|i| Request::get(&format!("/storm/{i}")).header("x-request-id", format!("storm-{i}")))
        .collect();
    send_all(production.listener(), &requests, 1, 1);

    wait_settled(&production, "to-staging");
    assert_counters(
        &production,
        "to-staging",
        &[
            ("requests", 5),
            ("sampled", 5),
            ("dispatched", 5),
            ("responses_2xx", 5),
        ],
    );
    assert_eq!(staging_app.count(), 5);
    for copy in staging_app.received() {
        assert_eq!(copy.header_texts("x-traffic-mirror"), ["to-staging"]);
        assert_eq!(copy.header_str("host").unwrap(), "example.com-shadow");
    }
    assert_counters(&staging, "again", &[("skipped_loop", 5)]);
    assert_eq!(staging_mirror.count(), 0, "staging copied a copy");
}
