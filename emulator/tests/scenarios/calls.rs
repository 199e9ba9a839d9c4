//! The exact host calls of each step of a request's way: what a request costs Envoy is
//! mostly these (docs/benchmarks.md, "Where the instructions go"), so a change that adds
//! one shows here first, natively and on the module alike.

use serde_json::json;
use traffic_mirror_core::testing::{Envoy, Exports, FakeAnswer};

use crate::{assert_accounted, configured, get, refs, target, ROOT};

/// The calls `f` makes the filter make.
fn calls<E: Exports>(envoy: &mut Envoy<E>, f: impl FnOnce(&mut Envoy<E>)) -> Vec<String> {
    let mark = envoy.host().calls.len();
    f(envoy);
    envoy.host().calls_since(mark)
}

pub fn an_unsampled_request_reads_the_header_map_once_and_counts_once<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({"percent": 0}))]}));
    let made = calls(&mut envoy, |envoy| {
        envoy.complete(ROOT, &refs(&get("u1")), &[]);
    });
    assert_eq!(
        made,
        [
            "header_map RequestHeaders",
            "increment traffic_mirror.staging.requests +1"
        ]
    );
    // A request the target's `match` leaves out is not even counted.
    let only_posts = json!({"targets": [target(json!({"match": {"methods": ["POST"]}}))]});
    assert!(envoy.configure(2, &only_posts.to_string()));
    let made = calls(&mut envoy, |envoy| {
        envoy.complete(2, &refs(&get("u1")), &[]);
    });
    assert_eq!(made, ["header_map RequestHeaders"]);
}

pub fn a_lanes_only_request_reads_the_map_writes_the_lane_and_counts_it<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(
        envoy,
        json!({"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"},
                         "salt": "s", "split": [{"lane": "canary", "percent": 100}]},
               "targets": []}),
    );
    let made = calls(&mut envoy, |envoy| {
        envoy.complete(ROOT, &refs(&get("u1")), &[]);
    });
    assert_eq!(
        made,
        [
            "header_map RequestHeaders",
            "replace_header RequestHeaders x-lane: canary",
            "increment traffic_lanes.canary.assigned +1"
        ]
    );
}

/// The edge of swim lanes: the lane header and baggage written, the map read once (what
/// is written is written into the map held, not read again for the copy).
pub fn an_edge_writes_the_lane_and_its_baggage_and_copies_them_without_reading_again<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(
        envoy,
        json!({"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"},
                         "salt": "s", "split": [{"lane": "canary", "percent": 100}],
                         "baggage": "lane"},
               "targets": [target(json!({}))]}),
    );
    let mut headers = get("u1");
    headers.push(("baggage", "userId=u1, lane=forged".into()));
    headers.push(("baggage", "k=v".into()));
    let made = calls(&mut envoy, |envoy| {
        envoy.complete(ROOT, &refs(&headers), &[]);
    });
    assert_eq!(
        made,
        [
            "header_map RequestHeaders",
            "replace_header RequestHeaders x-lane: canary",
            "replace_header RequestHeaders baggage: lane=canary,userId=u1,k=v",
            "increment traffic_lanes.canary.assigned +1",
            "increment traffic_mirror.staging.requests +1",
            "increment traffic_mirror.staging.sampled +1",
            "now",
            "http_call mirror",
            "increment traffic_mirror.staging.dispatched +1",
            "increment traffic_mirror.staging.in_flight +1",
        ]
    );
    // The copy carries both, as the request now does.
    let sent = envoy.host().sent.last().unwrap();
    let header = |name: &str| {
        sent.headers
            .iter()
            .filter(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("x-lane"), ["canary"]);
    assert_eq!(header("baggage"), ["lane=canary,userId=u1,k=v"]);
}

/// A hop: the lane read from baggage, the header written only when it differs.
pub fn a_hop_reads_the_map_writes_the_followed_lane_and_counts_it<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        json!({"lanes": {"header": "x-lane", "baggage": "lane",
                         "follow": ["feature-17", "canary"]},
               "targets": []}),
    );
    let mut request = |extra: &[(&'static str, &str)]| {
        let mut headers = get("u1");
        headers.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
        calls(&mut envoy, |envoy| {
            envoy.complete(ROOT, &refs(&headers), &[]);
        })
    };
    assert_eq!(
        request(&[("baggage", "a=1,b=2,c=3,d=4,lane=canary")]),
        [
            "header_map RequestHeaders",
            "replace_header RequestHeaders x-lane: canary",
            "increment traffic_lanes.canary.followed +1"
        ]
    );
    // Already right: nothing written. Absent and not wanted: nothing removed.
    assert_eq!(
        request(&[("baggage", "lane=canary"), ("x-lane", "canary")]),
        [
            "header_map RequestHeaders",
            "increment traffic_lanes.canary.followed +1"
        ]
    );
    assert_eq!(request(&[]), ["header_map RequestHeaders"]);
    // Stale or unknown: removed, and an unknown lane counted.
    assert_eq!(
        request(&[("x-lane", "canary")]),
        [
            "header_map RequestHeaders",
            "remove_header RequestHeaders x-lane"
        ]
    );
    assert_eq!(
        request(&[("baggage", "lane=admin"), ("x-lane", "admin")]),
        [
            "header_map RequestHeaders",
            "remove_header RequestHeaders x-lane",
            "increment traffic_lanes.unknown +1"
        ]
    );
}

pub fn a_copy_is_dispatched_with_one_clock_read<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let made = calls(&mut envoy, |envoy| {
        envoy.complete(ROOT, &refs(&get("u1")), &[]);
    });
    assert_eq!(
        made,
        [
            "header_map RequestHeaders",
            "increment traffic_mirror.staging.requests +1",
            "increment traffic_mirror.staging.sampled +1",
            "now",
            "http_call mirror",
            "increment traffic_mirror.staging.dispatched +1",
            "increment traffic_mirror.staging.in_flight +1",
        ]
    );
}

pub fn an_answer_is_counted_by_its_status_latency_and_gauge<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    envoy.complete(ROOT, &refs(&get("u1")), &[]);
    let token = envoy.host().sent[0].token;
    envoy.host().advance_millis(12);
    let made = calls(&mut envoy, |envoy| {
        envoy.answer(token, FakeAnswer::status(200), 5);
    });
    assert_eq!(
        made,
        [
            "header HttpCallResponseHeaders :status",
            "now",
            "increment traffic_mirror.staging.responses_2xx +1",
            "record traffic_mirror.staging.latency_ms 12",
            "increment traffic_mirror.staging.in_flight -1",
        ]
    );
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_request_reset_mid_body_reads_each_chunk_and_counts_incomplete<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "PUT".into();
    let mut context = 0;
    let made = calls(&mut envoy, |envoy| {
        context = envoy.request(ROOT, &refs(&headers), &[b"part of it"], false);
    });
    assert_eq!(
        made,
        [
            "header_map RequestHeaders",
            "increment traffic_mirror.staging.requests +1",
            "increment traffic_mirror.staging.sampled +1",
            "buffer HttpRequestBody 0+10",
        ]
    );
    let made = calls(&mut envoy, |envoy| {
        assert!(envoy.done(context));
    });
    assert_eq!(
        made,
        ["increment traffic_mirror.staging.skipped_incomplete +1"]
    );
    assert!(envoy.host().sent.is_empty());
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_configuration_update_drains_and_then_says_done<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    envoy.complete(ROOT, &refs(&get("u1")), &[]);
    let token = envoy.host().sent[0].token;
    // The update: a new root, then the old one asked whether it is done.
    let made = calls(&mut envoy, |envoy| {
        assert!(envoy.configure(
            2,
            &json!({"targets": [target(json!({"name": "next"}))]}).to_string()
        ));
        assert!(!envoy.done(ROOT), "a copy in flight");
    });
    assert_eq!(
        made.last().map(String::as_str),
        Some("log Info: traffic-mirror: configuration replaced; counting the 1 copies still in flight as they end")
    );
    let made = calls(&mut envoy, |envoy| {
        envoy.answer(token, FakeAnswer::status(200), 0);
    });
    assert_eq!(
        made,
        [
            "header HttpCallResponseHeaders :status",
            "now",
            "increment traffic_mirror.staging.responses_2xx +1",
            "record traffic_mirror.staging.latency_ms 0",
            "increment traffic_mirror.staging.in_flight -1",
            "log Info: traffic-mirror: replaced configuration drained: every copy it sent has ended",
            "done",
        ]
    );
    assert_eq!(envoy.host().done, [ROOT]);
    assert_accounted(&mut envoy, &["staging", "next"]);
}

pub fn the_stats_of_a_configuration_are_defined_by_their_envoy_names<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = envoy;
    let made = calls(&mut envoy, |envoy| {
        let configuration = json!({
            "lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "s",
                      "split": [{"lane": "canary", "percent": 10}], "default": "main"},
            "targets": [target(json!({"name": "a-1"}))]});
        assert!(envoy.configure(ROOT, &configuration.to_string()));
    });
    let defined: Vec<&str> = made
        .iter()
        .filter_map(|call| call.strip_prefix("define "))
        .collect();
    let mut expected: Vec<String> = [
        "requests",
        "sampled",
        "dispatched",
        "skipped_loop",
        "skipped_missing_key",
        "skipped_body_too_large",
        "skipped_rate_limited",
        "skipped_in_flight",
        "skipped_buffer_full",
        "skipped_incomplete",
        "dispatch_failed",
        "responses_2xx",
        "responses_3xx",
        "responses_4xx",
        "responses_5xx",
        "responses_failed",
    ]
    .iter()
    .map(|name| format!("Counter traffic_mirror.a-1.{name}"))
    .collect();
    expected.push("Gauge traffic_mirror.a-1.in_flight".into());
    expected.push("Histogram traffic_mirror.a-1.latency_ms".into());
    for lane in ["canary", "main"] {
        for stat in ["assigned", "kept"] {
            expected.push(format!("Counter traffic_lanes.{lane}.{stat}"));
        }
    }
    assert_eq!(defined, expected);
    // A gRPC status counter is defined when its code is first seen.
    let mut grpc = get("u1");
    grpc.push(("content-type", "application/grpc".into()));
    envoy.complete(ROOT, &refs(&grpc), &[]);
    let token = envoy.host().sent[0].token;
    let made = calls(&mut envoy, |envoy| {
        envoy.answer(
            token,
            FakeAnswer::status(200).header("grpc-status", "14"),
            0,
        );
    });
    assert!(made.contains(&"define Counter traffic_mirror.a-1.grpc_status.14".to_string()));
    assert_eq!(envoy.host().stat("traffic_mirror.a-1.grpc_status.14"), 1);
}
