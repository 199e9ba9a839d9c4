//! A request's whole way, scenario by scenario: bodies, resets, refusals, limits,
//! configuration updates, gRPC answers, lanes, the loop header, host failures.

use serde_json::json;
use traffic_mirror_core::host::Status;
use traffic_mirror_core::testing::{Envoy, Exports, FakeAnswer};

use crate::{assert_accounted, config, configured, get, refs, stat, target, ROOT};

pub fn a_bodiless_request_is_copied_at_its_headers_and_its_answer_counted<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    envoy.complete(ROOT, &refs(&get("u1")), &[]);
    assert_eq!(envoy.host().sent.len(), 1);
    let copy = envoy.host().sent[0].clone();
    assert_eq!(copy.cluster, "mirror");
    assert_eq!(copy.header(":authority"), Some(&b"shop-shadow:8080"[..]));
    assert_eq!(copy.header("x-traffic-mirror"), Some(&b"staging"[..]));
    assert_eq!(copy.header(":path"), Some(&b"/api/items?x=1"[..]));
    assert_eq!(copy.timeout_ms, 5000);
    assert!(copy.body.is_empty());
    assert_eq!(stat(&mut envoy, "staging", "in_flight"), 1);
    if let Some((_, in_flight)) = envoy.filter.held_bytes() {
        assert!(in_flight > 65_536, "headers and room for the answer");
    }
    // The answer comes 40 ms later, long after the request was done with.
    envoy.host().advance_millis(40);
    envoy.answer(copy.token, FakeAnswer::status(204), 0);
    assert_eq!(stat(&mut envoy, "staging", "responses_2xx"), 1);
    assert_eq!(
        envoy.host().histogram("traffic_mirror.staging.latency_ms"),
        [40]
    );
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_body_in_chunks_is_copied_whole_once_the_request_is_complete<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "POST".into();
    headers.push(("content-length", "9".into()));
    let context = envoy.request(ROOT, &refs(&headers), &[b"abc", b"def"], false);
    assert!(
        envoy.host().sent.is_empty(),
        "nothing before the request is complete"
    );
    if let Some((buffered, _)) = envoy.filter.held_bytes() {
        assert!(buffered >= 9, "the declared length is held");
    }
    envoy.body(context, b"ghi", true);
    assert_eq!(envoy.host().sent.len(), 1);
    assert_eq!(envoy.host().sent[0].body, b"abcdefghi");
    if let Some((buffered, _)) = envoy.filter.held_bytes() {
        assert_eq!(buffered, 0, "bytes back once handed over");
    }
    assert!(envoy.done(context));
    let token = envoy.host().sent[0].token;
    envoy.answer(token, FakeAnswer::status(200), 2);
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_request_with_trailers_is_complete_at_its_trailers<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "POST".into();
    let context = envoy.request(ROOT, &refs(&headers), &[b"body"], false);
    envoy.trailers(context);
    assert_eq!(envoy.host().sent.len(), 1, "sent at the trailers");
    assert_eq!(
        envoy.host().sent[0].body,
        b"body",
        "trailers are not copied"
    );
    assert!(envoy.done(context));
    let token = envoy.host().sent[0].token;
    envoy.answer(token, FakeAnswer::status(200), 0);
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_body_the_host_cannot_read_is_never_sent_in_part<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "POST".into();
    let context = envoy.request(ROOT, &refs(&headers), &[b"first"], false);
    envoy
        .host()
        .failing
        .insert("proxy_get_buffer_bytes", Status::Other(6));
    envoy.body(context, b"second", true);
    assert!(envoy.done(context));
    assert!(envoy.host().sent.is_empty());
    assert_eq!(stat(&mut envoy, "staging", "dispatch_failed"), 1);
    assert_eq!(
        envoy.host().logged(
            "traffic-mirror: reading a request body chunk failed with status 6; logged at most once a minute"
        ),
        1
    );
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_refused_call_counts_and_is_logged_once_a_minute<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    envoy.host().refuse = Some(Status::BadArgument);
    for user in ["u1", "u2", "u3"] {
        envoy.complete(ROOT, &refs(&get(user)), &[]);
    }
    assert_eq!(stat(&mut envoy, "staging", "dispatch_failed"), 3);
    assert_eq!(
        envoy.host().logged(
            "Envoy refused the copy to cluster \"mirror\" (status 2: unknown cluster or bad headers)"
        ),
        1
    );
    envoy.host().advance_millis(60_000);
    envoy.complete(ROOT, &refs(&get("u4")), &[]);
    assert_eq!(envoy.host().logged("Envoy refused the copy"), 2);
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn copies_past_max_in_flight_bytes_wait_for_none<E: Exports>(envoy: Envoy<E>) {
    // Room for two copies: each holds its headers and 1000 bytes for its answer.
    let mut envoy = configured(
        envoy,
        json!({"max_in_flight_bytes": 2500, "max_answer_bytes": 1000,
               "targets": [target(json!({"max_body_bytes": 0}))]}),
    );
    for user in ["u1", "u2", "u3"] {
        envoy.complete(ROOT, &refs(&get(user)), &[]);
    }
    assert_eq!(envoy.host().sent.len(), 2);
    assert_eq!(stat(&mut envoy, "staging", "skipped_in_flight"), 1);
    let first = envoy.host().sent[0].token;
    envoy.answer(first, FakeAnswer::none(), 0);
    envoy.complete(ROOT, &refs(&get("u4")), &[]);
    assert_eq!(envoy.host().sent.len(), 3, "room again once an answer came");
    for call in envoy.host().sent.clone().into_iter().skip(1) {
        envoy.answer(call.token, FakeAnswer::status(200), 0);
    }
    assert_eq!(stat(&mut envoy, "staging", "responses_failed"), 1);
    assert_eq!(
        envoy
            .host()
            .logged("the copy ended without a complete answer"),
        1
    );
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_replaced_configuration_shares_the_budgets_while_it_drains<E: Exports>(envoy: Envoy<E>) {
    let budgets = |name: &str| {
        json!({"max_in_flight_bytes": 3000, "max_answer_bytes": 1000,
               "targets": [target(json!({"name": name, "max_body_bytes": 0}))]})
    };
    let mut envoy = configured(envoy, budgets("staging"));
    for user in ["u1", "u2"] {
        envoy.complete(ROOT, &refs(&get(user)), &[]);
    }
    // An update: a new root; the old one is asked whether it is done, and is not.
    const NEW: u32 = 2;
    assert!(envoy.configure(NEW, &config(budgets("renamed"))));
    assert!(!envoy.done(ROOT), "two copies in flight");
    // The new configuration finds the budget held by the old one's copies.
    envoy.complete(NEW, &refs(&get("u3")), &[]);
    assert_eq!(stat(&mut envoy, "renamed", "skipped_in_flight"), 1);
    // The old copies' answers come to the old root, which drains on the last.
    let tokens: Vec<u32> = envoy.host().sent.iter().map(|c| c.token).collect();
    envoy.answer(tokens[0], FakeAnswer::status(200), 0);
    assert!(envoy.host().done.is_empty());
    envoy.answer(tokens[1], FakeAnswer::status(503), 0);
    assert_eq!(envoy.host().done, [ROOT], "drained, and said so");
    assert_eq!(envoy.host().logged("replaced configuration drained"), 1);
    assert_eq!(stat(&mut envoy, "staging", "responses_5xx"), 1);
    envoy.complete(NEW, &refs(&get("u4")), &[]);
    let token = envoy.host().sent.last().unwrap().token;
    envoy.answer(token, FakeAnswer::status(200), 0);
    assert_accounted(&mut envoy, &["staging", "renamed"]);
}

pub fn contexts_are_forgotten_when_the_host_is_done_with_them<E: Exports>(envoy: Envoy<E>) {
    // Envoy calls proxy_on_done and then proxy_on_delete; the filter exports only the
    // first, so that is where a request, and a root with nothing in flight, go.
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], false);
    assert!(envoy.done(context));
    assert_eq!(stat(&mut envoy, "staging", "skipped_incomplete"), 1);
    assert!(
        envoy.host().sent.is_empty(),
        "an incomplete request sends nothing"
    );
    envoy.complete(ROOT, &refs(&get("u2")), &[]);
    assert!(!envoy.done(ROOT), "a copy in flight");
    let token = envoy.host().sent[0].token;
    envoy.answer(token, FakeAnswer::status(200), 0);
    assert_eq!(envoy.host().done, [ROOT], "drained");
    // Gone: a later request under it is not served.
    let late = envoy.host().calls.len();
    envoy.complete(ROOT, &refs(&get("u3")), &[]);
    assert!(envoy.host().calls_since(late).is_empty());
    assert_accounted(&mut envoy, &["staging"]);
    // A root with nothing in flight goes at once.
    assert!(envoy.configure(2, &config(json!({"targets": [target(json!({}))]}))));
    assert!(envoy.done(2), "nothing in flight");
}

pub fn an_answer_for_a_token_the_root_does_not_hold_is_ignored<E: Exports>(envoy: Envoy<E>) {
    // Envoy delivers an answer to the root that sent the call; any other token is not
    // this filter's to count.
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    envoy.complete(ROOT, &refs(&get("u1")), &[]);
    let token = envoy.host().sent[0].token;
    let before = envoy.host().calls.len();
    envoy
        .filter
        .on_http_call_response(ROOT, token + 100, 1, 0, 0);
    assert!(
        envoy.host().calls_since(before).is_empty(),
        "nothing read, nothing counted"
    );
    envoy.answer(token, FakeAnswer::status(200), 0);
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_grpc_answer_is_counted_by_its_status_from_trailers_or_headers<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    let mut grpc = get("u1");
    grpc[0].1 = "POST".into();
    grpc.push(("content-type", "application/grpc".into()));
    for _ in 0..3 {
        envoy.complete(ROOT, &refs(&grpc), &[&[0, 0, 0, 0, 1, 7]]);
    }
    envoy.complete(ROOT, &refs(&get("u2")), &[]);
    let tokens: Vec<u32> = envoy.host().sent.iter().map(|c| c.token).collect();
    envoy.answer(
        tokens[0],
        FakeAnswer::status(200).trailer("grpc-status", "0"),
        7,
    );
    // Trailers-only: the status in the headers.
    envoy.answer(
        tokens[1],
        FakeAnswer::status(200).header("grpc-status", "14"),
        0,
    );
    envoy.answer(tokens[2], FakeAnswer::none(), 0);
    // Not a gRPC call: its grpc-status, were there one, is not read.
    envoy.answer(
        tokens[3],
        FakeAnswer::status(200).header("grpc-status", "5"),
        0,
    );
    let host = envoy.host();
    assert_eq!(host.stat("traffic_mirror.staging.grpc_status.0"), 1);
    assert_eq!(host.stat("traffic_mirror.staging.grpc_status.14"), 1);
    assert!(!host.has_stat("traffic_mirror.staging.grpc_status.5"));
    assert_eq!(host.target_stat("staging", "responses_2xx"), 3);
    assert_eq!(host.logged("the mirror answered grpc-status 14"), 1);
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn an_answer_longer_than_max_answer_bytes_is_logged_once<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    for user in ["u1", "u2"] {
        envoy.complete(ROOT, &refs(&get(user)), &[]);
    }
    for call in envoy.host().sent.clone() {
        envoy.answer(call.token, FakeAnswer::status(200), 1 << 20);
    }
    assert_eq!(
        envoy
            .host()
            .logged("is not set to 65536, so Envoy holds each answer up to 32 MiB"),
        1
    );
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn lanes_are_written_before_the_targets_decide_and_counted<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        json!({
            "lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "s",
                      "split": [{"lane": "canary", "percent": 100}], "keep_incoming": true},
            "targets": [target(json!({"match": {"headers": {"x-lane": "canary"}}}))]}),
    );
    envoy.complete(ROOT, &refs(&get("u1")), &[]);
    assert_eq!(envoy.host().stat("traffic_lanes.canary.assigned"), 1);
    assert_eq!(
        envoy.host().sent.len(),
        1,
        "the target matched the lane just written"
    );
    assert_eq!(envoy.host().sent[0].header("x-lane"), Some(&b"canary"[..]));
    // Kept as it arrived (keep_incoming), and counted as kept.
    let mut forced = get("u2");
    forced.push(("x-lane", "canary".into()));
    envoy.complete(ROOT, &refs(&forced), &[]);
    assert_eq!(envoy.host().stat("traffic_lanes.canary.kept"), 1);
    assert_eq!(envoy.host().stat("traffic_lanes.canary.assigned"), 1);
    for call in envoy.host().sent.clone() {
        envoy.answer(call.token, FakeAnswer::status(200), 0);
    }
    assert_accounted(&mut envoy, &["staging"]);
}

pub fn a_looping_request_is_counted_by_every_target_and_never_copied<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        json!({"targets": [target(json!({})), target(json!({"name": "b"}))]}),
    );
    let mut headers = get("u1");
    headers.push(("x-traffic-mirror", "staging".into()));
    envoy.complete(ROOT, &refs(&headers), &[]);
    assert!(envoy.host().sent.is_empty());
    for t in ["staging", "b"] {
        assert_eq!(stat(&mut envoy, t, "skipped_loop"), 1);
        assert_eq!(stat(&mut envoy, t, "requests"), 0);
    }
    assert_accounted(&mut envoy, &["staging", "b"]);
}

pub fn a_declared_length_over_the_cap_is_skipped_at_the_headers<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        json!({"targets": [target(json!({"name": "small", "max_body_bytes": 10})),
                           target(json!({"name": "big", "max_body_bytes": 100}))]}),
    );
    let mut headers = get("u1");
    headers[0].1 = "POST".into();
    headers.push(("content-length", "50".into()));
    let context = envoy.request(ROOT, &refs(&headers), &[], false);
    assert_eq!(stat(&mut envoy, "small", "skipped_body_too_large"), 1);
    envoy.body(context, &[7; 50], true);
    assert!(envoy.done(context));
    let sent = envoy.host().sent.clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("x-traffic-mirror"), Some(&b"big"[..]));
    envoy.answer(sent[0].token, FakeAnswer::status(200), 0);
    assert_accounted(&mut envoy, &["small", "big"]);
}

pub fn failed_host_calls_are_logged_once_a_minute_and_never_stop_a_request<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(envoy, json!({"targets": [target(json!({}))]}));
    // A stat that cannot be updated: said once a minute, and the request goes on.
    envoy
        .host()
        .failing
        .insert("proxy_increment_metric", Status::Other(9));
    for user in ["u1", "u2"] {
        envoy.complete(ROOT, &refs(&get(user)), &[]);
    }
    assert_eq!(envoy.host().sent.len(), 2, "copies sent all the same");
    assert_eq!(
        envoy.host().logged(
            "traffic-mirror: updating a stat failed with status 9; logged at most once a minute"
        ),
        1
    );
    envoy.host().failing.clear();
    // A header map the host cannot give reads as no header at all: no key, not mirrored.
    envoy
        .host()
        .failing
        .insert("proxy_get_header_map_pairs", Status::Other(6));
    envoy.complete(ROOT, &refs(&get("u3")), &[]);
    assert_eq!(envoy.host().sent.len(), 2);
    assert_eq!(stat(&mut envoy, "staging", "skipped_missing_key"), 1);
    assert_eq!(
        envoy
            .host()
            .logged("traffic-mirror: reading the request header map failed with status 6"),
        1
    );
    envoy.host().failing.clear();
    for call in envoy.host().sent.clone() {
        envoy.answer(call.token, FakeAnswer::status(200), 0);
    }
    // The stat updates that failed are lost; what was counted adds up.
    assert_eq!(stat(&mut envoy, "staging", "responses_2xx"), 2);
}

pub fn a_bad_configuration_is_refused_with_one_line<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = envoy;
    assert!(!envoy.configure(
        ROOT,
        r#"{"targets": [{"name": "a", "cluster": "c", "percent": 150}]}"#
    ));
    let errors: Vec<String> = envoy
        .host()
        .log_lines()
        .filter(|(level, _)| *level >= traffic_mirror_core::host::LogLevel::Error)
        .map(|(_, line)| line.to_string())
        .collect();
    assert_eq!(
        errors,
        ["traffic-mirror: invalid configuration: targets[0].percent: must be between 0 and 100, got 150"]
    );
    assert!(envoy.host().stat_names().is_empty(), "no stat defined");
}
