//! `compare`: each result of the specification's table, both orders of arrival, the
//! client's stream ending first, a configuration update with comparisons pending, the
//! budget, the path counters and their cap, the log line and its rate.

use serde_json::json;
use traffic_mirror_core::compare::CompareResult;
use traffic_mirror_core::testing::{Envoy, Exports, FakeAnswer};

use crate::{assert_accounted, configured, get, refs, stat, target, ROOT};

const JSON: (&str, &str) = ("content-type", "application/json");

/// A comparing target (`extra`: more of its `compare`).
fn comparing(extra: serde_json::Value) -> serde_json::Value {
    let mut compare = json!({});
    compare
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"targets": [target(json!({"compare": compare}))]})
}

/// Every comparing copy dispatched ended in exactly one `compare.*` counter.
fn assert_compared<E: Exports>(envoy: &mut Envoy<E>, target: &str) {
    let host = envoy.host();
    let results: i64 = CompareResult::ALL
        .iter()
        .map(|r| host.target_stat(target, &format!("compare.{}", r.name())))
        .sum();
    assert_eq!(
        results,
        host.target_stat(target, "dispatched"),
        "{target}: every copy compared once"
    );
    assert_accounted(envoy, &[target]);
}

fn result<E: Exports>(envoy: &mut Envoy<E>, result: CompareResult) -> i64 {
    stat(envoy, "staging", &format!("compare.{}", result.name()))
}

/// A GET answered by the primary with `primary` and by the mirror with `mirror`, the
/// mirror's answer first or last: the result counted.
fn one<E: Exports>(
    envoy: &mut Envoy<E>,
    primary: (u16, &[(&str, &str)], &[u8]),
    mirror: FakeAnswer,
    mirror_first: bool,
) {
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
    let token = envoy.host().sent.last().unwrap().token;
    let size = mirror.body.len();
    if mirror_first {
        envoy.answer(token, mirror.clone(), size);
    }
    let mut headers = vec![(":status", primary.0.to_string())];
    headers.extend(primary.1.iter().map(|(n, v)| (*n, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let chunks: Vec<&[u8]> = if primary.2.is_empty() {
        vec![]
    } else {
        vec![primary.2]
    };
    envoy.respond(context, &headers, &chunks, &[]);
    assert!(envoy.done(context));
    if !mirror_first {
        envoy.answer(token, mirror, size);
    }
}

fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> FakeAnswer {
    let mut answer = FakeAnswer::status(status).body(body);
    for (name, value) in headers {
        answer = answer.header(name, value);
    }
    answer
}

pub fn equal_answers_match_in_either_order<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    let primary = br#"{"id": 7, "items": [{"price": 5}], "tags": ["a"]}"#;
    let mirror = br#"{"tags": ["a"], "items": [{"price": 5.0}], "id": 7}"#;
    for mirror_first in [true, false] {
        one(
            &mut envoy,
            (200, &[JSON], primary),
            answer(200, &[JSON], mirror),
            mirror_first,
        );
    }
    assert_eq!(result(&mut envoy, CompareResult::Match), 2);
    assert_compared(&mut envoy, "staging");
}

pub fn a_body_difference_is_counted_by_its_path_and_logged_without_values<E: Exports>(
    envoy: Envoy<E>,
) {
    let mut envoy = configured(envoy, comparing(json!({"log_per_minute": 1})));
    let primary = br#"{"items": [{"sku": "zebra", "price": 5}, {"sku": "okapi", "price": 61234}]}"#;
    let mirror = br#"{"items": [{"sku": "zebra", "price": 5}, {"sku": "okapi", "price": 71234}]}"#;
    let mut headers = get("u1");
    headers.push(("x-request-id", "req-42".into()));
    let context = envoy.request(ROOT, &refs(&headers), &[], true);
    let token = envoy.host().sent[0].token;
    envoy.host().advance_millis(3);
    envoy.respond(context, &[(":status", "200"), JSON], &[primary], &[]);
    assert!(envoy.done(context));
    envoy.host().advance_millis(9);
    envoy.answer(token, answer(200, &[JSON], mirror), mirror.len());
    assert_eq!(result(&mut envoy, CompareResult::Body), 1);
    assert_eq!(
        envoy
            .host()
            .stat("traffic_mirror.staging.compare.path./items/*/price"),
        1
    );
    let line = format!(
        "traffic-mirror: target staging: compare body at /items/*/price: primary 200 ({} bytes, 3 ms), mirror 200 ({} bytes, 12 ms); GET /api/items x-request-id req-42; logged at most 1 a minute",
        primary.len(),
        mirror.len()
    );
    assert_eq!(
        envoy.host().logged(&line),
        1,
        "{:?}",
        envoy.host().log_lines().collect::<Vec<_>>()
    );
    // A second mismatch in the same minute is counted, not logged.
    one(
        &mut envoy,
        (200, &[JSON], primary),
        answer(200, &[JSON], mirror),
        false,
    );
    assert_eq!(result(&mut envoy, CompareResult::Body), 2);
    assert_eq!(envoy.host().logged("compare body"), 1);
    for value in ["okapi", "zebra", "61234", "71234", "sku"] {
        assert_eq!(envoy.host().logged(value), 0, "no value logged: {value}");
    }
    assert_compared(&mut envoy, "staging");
}

pub fn status_grpc_status_and_headers_are_compared_first<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        comparing(json!({"headers": ["content-type", "x-version"]})),
    );
    one(
        &mut envoy,
        (200, &[JSON], b"{}"),
        answer(500, &[JSON], b"{}"),
        false,
    );
    one(
        &mut envoy,
        (200, &[JSON, ("grpc-status", "0")], b"{}"),
        answer(200, &[JSON, ("grpc-status", "14")], b"{}"),
        true,
    );
    one(
        &mut envoy,
        (200, &[JSON, ("x-version", "1")], b"{}"),
        answer(200, &[JSON], b"{}"),
        false,
    );
    one(
        &mut envoy,
        (200, &[("content-type", "text/plain")], b"a"),
        answer(200, &[("content-type", "text/html")], b"a"),
        true,
    );
    assert_eq!(result(&mut envoy, CompareResult::Status), 1);
    assert_eq!(result(&mut envoy, CompareResult::GrpcStatus), 1);
    assert_eq!(result(&mut envoy, CompareResult::Header), 2);
    assert_eq!(envoy.host().logged("compare header in header x-version"), 1);
    assert_eq!(
        envoy.host().logged("compare header in header content-type"),
        1
    );
    assert_compared(&mut envoy, "staging");
}

pub fn the_mirror_failing_is_told_from_its_own_errors<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    // Reset (no answer at all), and Envoy's own 503 and 504: mirror_failed.
    for failed in [
        FakeAnswer::none(),
        FakeAnswer::from_envoy(503),
        FakeAnswer::from_envoy(504),
    ] {
        one(&mut envoy, (200, &[JSON], b"{}"), failed, false);
    }
    // The mirror's own 503: a status difference.
    one(
        &mut envoy,
        (200, &[JSON], b"{}"),
        answer(503, &[JSON], b"{}"),
        false,
    );
    assert_eq!(result(&mut envoy, CompareResult::MirrorFailed), 3);
    assert_eq!(result(&mut envoy, CompareResult::Status), 1);
    assert_compared(&mut envoy, "staging");
}

pub fn a_primary_that_does_not_complete_is_primary_incomplete<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    // The mirror answers first; the client goes before the primary's body ends.
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
    let token = envoy.host().sent[0].token;
    envoy.answer(token, answer(200, &[JSON], b"{}"), 2);
    envoy
        .host()
        .requests
        .get_mut(&context)
        .unwrap()
        .response_headers = vec![(":status".into(), b"200".to_vec())];
    envoy.filter.on_response_headers(context, 1, false);
    assert!(envoy.done(context));
    // The client goes before the primary answers at all; the mirror answers later.
    let context = envoy.request(ROOT, &refs(&get("u2")), &[], true);
    let token = envoy.host().sent[1].token;
    assert!(envoy.done(context));
    envoy.answer(token, answer(200, &[JSON], b"{}"), 2);
    assert_eq!(result(&mut envoy, CompareResult::PrimaryIncomplete), 2);
    assert_compared(&mut envoy, "staging");
}

pub fn a_body_ended_by_an_empty_chunk_is_kept_whole<E: Exports>(envoy: Envoy<E>) {
    // Envoy often passes a body, then an empty chunk with end_of_stream.
    let mut envoy = configured(envoy, comparing(json!({})));
    for (mirror, expected) in [
        (&b"{\"a\":1}"[..], CompareResult::Match),
        (b"{}", CompareResult::Body),
    ] {
        let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
        let token = envoy.host().sent.last().unwrap().token;
        envoy.respond(
            context,
            &[(":status", "200"), JSON],
            &[b"{\"a\":", b"1}", b""],
            &[],
        );
        assert!(envoy.done(context));
        envoy.answer(token, answer(200, &[JSON], mirror), mirror.len());
        assert_eq!(result(&mut envoy, expected), 1, "{expected:?}");
    }
    assert_compared(&mut envoy, "staging");
}

pub fn the_comparison_outlives_the_clients_stream<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
    let token = envoy.host().sent[0].token;
    envoy.respond(
        context,
        &[(":status", "200"), JSON],
        &[b"{\"a\":", b"1}"],
        &[],
    );
    assert!(envoy.done(context), "the stream is gone");
    if let Some((_, in_flight)) = envoy.filter.held_bytes() {
        assert!(
            in_flight > 6,
            "the primary's body is held for the comparison"
        );
    }
    envoy.host().advance_millis(500);
    envoy.answer(token, answer(200, &[JSON], b"{\"a\": 2}"), 8);
    assert_eq!(result(&mut envoy, CompareResult::Body), 1);
    assert_eq!(
        envoy.host().stat("traffic_mirror.staging.compare.path./a"),
        1
    );
    assert_compared(&mut envoy, "staging");
}

pub fn a_response_before_the_request_is_complete_is_compared_too<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    let mut post = get("u1");
    post[0].1 = "POST".into();
    let context = envoy.request(ROOT, &refs(&post), &[b"part"], false);
    // The primary answers before the client has sent its whole body.
    envoy.respond(context, &[(":status", "200"), JSON], &[b"[1]"], &[]);
    envoy.body(context, b" two", true);
    let token = envoy.host().sent[0].token;
    assert!(envoy.done(context));
    envoy.answer(token, answer(200, &[JSON], b"[1]"), 3);
    assert_eq!(result(&mut envoy, CompareResult::Match), 1);
    assert_compared(&mut envoy, "staging");
}

pub fn bodies_past_the_cap_undecodable_or_not_json_are_told_apart<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({"max_body_bytes": 16})));
    let long = b"{\"a\": \"0123456789abcdef\"}";
    one(
        &mut envoy,
        (200, &[JSON], long),
        answer(200, &[JSON], long),
        false,
    );
    one(
        &mut envoy,
        (200, &[JSON], b"{}"),
        answer(200, &[JSON], long),
        true,
    );
    one(
        &mut envoy,
        (200, &[JSON, ("content-encoding", "br")], b"x"),
        answer(200, &[JSON, ("content-encoding", "br")], b"x"),
        false,
    );
    one(
        &mut envoy,
        (200, &[JSON], b"{oops"),
        answer(200, &[JSON], b"{}"),
        false,
    );
    // Not JSON by content-type (auto): as bytes.
    one(
        &mut envoy,
        (200, &[("content-type", "text/plain")], b"{oops"),
        answer(200, &[("content-type", "text/plain")], b"{oops"),
        false,
    );
    assert_eq!(result(&mut envoy, CompareResult::TooLarge), 2);
    assert_eq!(result(&mut envoy, CompareResult::Encoding), 1);
    assert_eq!(result(&mut envoy, CompareResult::NotJson), 1);
    assert_eq!(result(&mut envoy, CompareResult::Match), 1);
    assert_compared(&mut envoy, "staging");
}

pub fn gzip_on_one_side_only_is_compared_decoded<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    let plain = br#"{"items":[1,2,3],"name":"x"}"#;
    let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    gzip.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(plain, 6));
    gzip.extend_from_slice(&[0; 4]);
    gzip.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    one(
        &mut envoy,
        (200, &[JSON, ("content-encoding", "gzip")], &gzip),
        answer(200, &[JSON], plain),
        false,
    );
    assert_eq!(result(&mut envoy, CompareResult::Match), 1);
    assert_compared(&mut envoy, "staging");
}

pub fn a_head_request_and_bodiless_statuses_compare_no_body<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    let mut head = get("u1");
    head[0].1 = "HEAD".into();
    let context = envoy.request(ROOT, &refs(&head), &[], true);
    let token = envoy.host().sent[0].token;
    envoy.respond(
        context,
        &[(":status", "200"), JSON, ("content-length", "9")],
        &[],
        &[],
    );
    assert!(envoy.done(context));
    envoy.answer(token, answer(200, &[JSON], b""), 0);
    one(
        &mut envoy,
        (204, &[JSON], b""),
        answer(204, &[JSON], b"ignored"),
        false,
    );
    assert_eq!(result(&mut envoy, CompareResult::Match), 2);
    assert_compared(&mut envoy, "staging");
}

pub fn ignore_and_unordered_quiet_volatile_fields<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        comparing(json!({"ignore": ["/updated_at", "/items/*/etag"], "unordered": ["/tags"]})),
    );
    one(
        &mut envoy,
        (
            200,
            &[JSON],
            br#"{"updated_at": 1, "items": [{"etag": "x", "id": 1}], "tags": ["a", "b"]}"#,
        ),
        answer(
            200,
            &[JSON],
            br#"{"updated_at": 2, "items": [{"etag": "y", "id": 1}], "tags": ["b", "a"]}"#,
        ),
        false,
    );
    assert_eq!(result(&mut envoy, CompareResult::Match), 1);
    assert_compared(&mut envoy, "staging");
}

pub fn paths_past_max_paths_count_as_other<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({"max_paths": 2})));
    for (i, field) in ["a", "b", "c", "d"].iter().enumerate() {
        let primary = format!("{{\"{field}\": 1}}");
        let mirror = format!("{{\"{field}\": {}}}", i + 2);
        one(
            &mut envoy,
            (200, &[JSON], primary.as_bytes()),
            answer(200, &[JSON], mirror.as_bytes()),
            false,
        );
    }
    one(
        &mut envoy,
        (200, &[JSON], b"{\"a\": 1}"),
        answer(200, &[JSON], b"{\"a\": 0}"),
        false,
    );
    let host = envoy.host();
    assert_eq!(host.stat("traffic_mirror.staging.compare.path./a"), 2);
    assert_eq!(host.stat("traffic_mirror.staging.compare.path./b"), 1);
    assert!(!host.has_stat("traffic_mirror.staging.compare.path./c"));
    assert_eq!(host.stat("traffic_mirror.staging.compare.path.other"), 2);
    assert_compared(&mut envoy, "staging");
}

pub fn a_primary_body_that_does_not_fit_skips_the_comparison<E: Exports>(envoy: Envoy<E>) {
    // Room for the copy and its answer, not for the primary's body besides.
    let mut envoy = configured(
        envoy,
        json!({"max_in_flight_bytes": 3000, "max_answer_bytes": 2000,
               "targets": [target(json!({"max_body_bytes": 0, "compare": {"max_body_bytes": 2000}}))]}),
    );
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
    let token = envoy.host().sent[0].token;
    envoy.respond(context, &[(":status", "200"), JSON], &[b"{}"], &[]);
    assert!(envoy.done(context));
    envoy.answer(token, answer(200, &[JSON], b"{}"), 2);
    assert_eq!(result(&mut envoy, CompareResult::SkippedBudget), 1);
    assert_eq!(
        stat(&mut envoy, "staging", "responses_2xx"),
        1,
        "the copy was sent"
    );
    assert_compared(&mut envoy, "staging");
}

pub fn a_replaced_configuration_drains_its_comparisons<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(envoy, comparing(json!({})));
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
    let token = envoy.host().sent[0].token;
    envoy.respond(context, &[(":status", "200"), JSON], &[b"{}"], &[]);
    assert!(envoy.done(context));
    assert!(envoy.configure(2, &comparing(json!({})).to_string()));
    assert!(!envoy.done(ROOT), "a comparison waits for the mirror");
    envoy.answer(token, answer(200, &[JSON], b"{}"), 2);
    assert_eq!(envoy.host().done, [ROOT], "drained once compared");
    assert_eq!(result(&mut envoy, CompareResult::Match), 1);
    assert_compared(&mut envoy, "staging");
}

pub fn an_unsampled_request_with_compare_reads_no_response<E: Exports>(envoy: Envoy<E>) {
    let mut envoy = configured(
        envoy,
        json!({"targets": [target(json!({"percent": 0, "compare": {}}))]}),
    );
    let context = envoy.request(ROOT, &refs(&get("u1")), &[], true);
    let mark = envoy.host().calls.len();
    envoy.respond(
        context,
        &[(":status", "200"), JSON],
        &[b"{}"],
        &[("grpc-status", "0")],
    );
    assert!(envoy.done(context));
    assert_eq!(envoy.host().calls_since(mark), Vec::<String>::new());
}
