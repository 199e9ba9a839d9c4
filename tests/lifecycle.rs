//! The whole lifecycle without Envoy: a worker's contexts driven as Envoy drives them
//! (configure, request headers, body chunks, trailers, answers, done, delete), against a
//! fake host that records the calls sent. Each scenario checks what was sent, the
//! counters, and after it every identity: `sampled` is the sum of its outcomes,
//! `dispatched` the sum of the `responses_*`, `in_flight` back to 0, both budgets empty.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::json;

use traffic_mirror::fake_host::{FakeAnswer, FakeHost};
use traffic_mirror::host::Refusal;
use traffic_mirror::lifecycle::{Contexts, Worker};
use traffic_mirror::metrics::{Counter, LaneStat, Tally};
use traffic_mirror::request::HeaderList;

/// A worker's VM with one configured root (context 1).
struct Vm {
    contexts: Contexts<Tally>,
    host: FakeHost,
    next_context: u32,
}

const ROOT: u32 = 1;

impl Vm {
    fn new(config: serde_json::Value) -> Vm {
        let mut vm = Vm {
            contexts: Contexts::default(),
            host: FakeHost::new(),
            next_context: 100,
        };
        vm.configure(ROOT, config);
        vm
    }

    fn configure(&mut self, root: u32, config: serde_json::Value) {
        self.contexts.create(root, 0);
        let worker = Worker::configure(config.to_string().as_bytes(), 7, &mut self.host, |_| {
            Ok(Tally::default())
        })
        .expect("a valid configuration");
        self.contexts.configure(root, worker);
    }

    fn tally(&self, root: u32) -> &Tally {
        &self.contexts.root(root).expect("configured").metrics
    }

    /// A request under `root`: its headers, then each chunk (`end`: the last ends it).
    fn request(&mut self, root: u32, headers: &[(&str, &str)], chunks: &[&[u8]], end: bool) -> u32 {
        self.next_context += 1;
        let context = self.next_context;
        self.contexts.create(context, root);
        let mut request = HeaderList::new(
            &headers
                .iter()
                .map(|(n, v)| (*n, v.as_bytes()))
                .collect::<Vec<_>>(),
        );
        let headers_end = chunks.is_empty() && end;
        self.contexts
            .request_headers(context, &mut request, headers_end, &mut self.host);
        for (i, chunk) in chunks.iter().enumerate() {
            let last = end && i == chunks.len() - 1;
            let data = chunk.to_vec();
            self.contexts
                .request_body(context, data.len(), last, |_| Some(data), &mut self.host);
        }
        context
    }

    /// A complete request, done with (as Envoy is after the response).
    fn complete(&mut self, headers: &[(&str, &str)], chunks: &[&[u8]]) -> u32 {
        let context = self.request(ROOT, headers, chunks, true);
        assert!(self.contexts.done(context, &mut self.host));
        context
    }

    /// An answer; whether a replaced root drained with it.
    fn answer(&mut self, root: u32, token: u32, answer: FakeAnswer, body: usize) -> bool {
        let trailers = answer.trailers.len();
        let mut answer = answer;
        self.contexts
            .call_answered(root, token, &mut answer, body, trailers, &mut self.host)
            .is_some()
    }

    /// Every identity of the specification, for every target of `root`.
    fn assert_accounted(&self, root: u32, targets: usize) {
        let tally = self.tally(root);
        for t in 0..targets {
            let outcomes: u64 = Counter::SAMPLED_OUTCOMES
                .iter()
                .map(|&c| tally.get(t, c))
                .sum();
            let ended: u64 = Counter::RESPONSES.iter().map(|&c| tally.get(t, c)).sum();
            assert_eq!(
                tally.get(t, Counter::Sampled),
                outcomes,
                "target {t}: {tally:?}"
            );
            assert_eq!(
                tally.get(t, Counter::Dispatched),
                ended,
                "target {t}: {tally:?}"
            );
            assert_eq!(tally.in_flight(t), 0, "target {t}");
            assert_eq!(
                tally.latencies(t).len() as u64,
                ended,
                "target {t}: one latency an end"
            );
        }
        assert_eq!(
            self.contexts.budgets().buffered.held(),
            0,
            "max_buffered_bytes"
        );
        assert_eq!(
            self.contexts.budgets().in_flight.held(),
            0,
            "max_in_flight_bytes"
        );
    }
}

fn target(extra: serde_json::Value) -> serde_json::Value {
    let mut t = json!({"name": "staging", "cluster": "mirror", "percent": 100,
                       "sample_by": {"header": "x-user-id"}});
    t.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    t
}

fn get(user: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", "/api/items?x=1".into()),
        (":authority", "shop:8080".into()),
        ("x-user-id", user.into()),
    ]
}

fn refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

#[test]
fn a_bodiless_request_is_copied_at_its_headers_and_its_answer_counted() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    vm.complete(&refs(&get("u1")), &[]);
    assert_eq!(vm.host.sent.len(), 1);
    let copy = vm.host.sent[0].clone();
    assert_eq!(copy.cluster, "mirror");
    assert_eq!(copy.header(":authority"), Some(&b"shop-shadow:8080"[..]));
    assert_eq!(copy.header("x-traffic-mirror"), Some(&b"staging"[..]));
    assert_eq!(copy.header(":path"), Some(&b"/api/items?x=1"[..]));
    assert!(copy.body.is_empty());
    assert_eq!(vm.tally(ROOT).in_flight(0), 1);
    assert!(
        vm.contexts.budgets().in_flight.held() > 65_536,
        "headers and room for the answer"
    );
    // The answer comes 40 ms later, long after the request was deleted.
    vm.host.advance_millis(40);
    assert!(!vm.answer(ROOT, copy.token, FakeAnswer::status(204), 0));
    let tally = vm.tally(ROOT);
    assert_eq!(tally.get(0, Counter::Responses2xx), 1);
    assert_eq!(tally.latencies(0), [40]);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn a_body_in_chunks_is_copied_whole_once_the_request_is_complete() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "POST".into();
    headers.push(("content-length", "9".into()));
    let context = vm.request(ROOT, &refs(&headers), &[b"abc", b"def"], false);
    assert!(
        vm.host.sent.is_empty(),
        "nothing before the request is complete"
    );
    assert!(vm.contexts.budgets().buffered.held() >= 9);
    let data = b"ghi".to_vec();
    vm.contexts
        .request_body(context, 3, true, |_| Some(data), &mut vm.host);
    assert_eq!(vm.host.sent.len(), 1);
    assert_eq!(vm.host.sent[0].body, b"abcdefghi");
    assert_eq!(
        vm.contexts.budgets().buffered.held(),
        0,
        "bytes back once handed over"
    );
    assert!(vm.contexts.done(context, &mut vm.host));
    let token = vm.host.sent[0].token;
    vm.answer(ROOT, token, FakeAnswer::status(200), 2);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn a_request_reset_mid_body_sends_nothing_and_counts_incomplete() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "PUT".into();
    let context = vm.request(ROOT, &refs(&headers), &[b"part of it"], false);
    assert!(vm.contexts.budgets().buffered.held() > 0);
    assert!(vm.contexts.done(context, &mut vm.host));
    assert!(vm.host.sent.is_empty());
    assert_eq!(vm.tally(ROOT).get(0, Counter::SkippedIncomplete), 1);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn a_body_the_host_cannot_read_is_never_sent_in_part() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    let mut headers = get("u1");
    headers[0].1 = "POST".into();
    let context = vm.request(ROOT, &refs(&headers), &[b"first"], false);
    vm.contexts
        .request_body(context, 6, true, |_| None, &mut vm.host);
    assert!(vm.contexts.done(context, &mut vm.host));
    assert!(vm.host.sent.is_empty());
    assert_eq!(vm.tally(ROOT).get(0, Counter::DispatchFailed), 1);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn a_refused_call_counts_and_is_logged_once_a_minute() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    vm.host.refuse = Some(Refusal::BadArgument);
    for user in ["u1", "u2", "u3"] {
        vm.complete(&refs(&get(user)), &[]);
    }
    assert_eq!(vm.tally(ROOT).get(0, Counter::DispatchFailed), 3);
    assert_eq!(
        vm.host
            .logged("Envoy refused the copy to cluster \"mirror\" (status 2: unknown cluster or bad headers)"),
        1
    );
    vm.host.advance_millis(60_000);
    vm.complete(&refs(&get("u4")), &[]);
    assert_eq!(vm.host.logged("Envoy refused the copy"), 2);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn copies_past_max_in_flight_bytes_wait_for_none_and_come_back_with_their_answers() {
    // Room for two copies: each holds its headers and 1000 bytes for its answer.
    let mut vm = Vm::new(
        json!({"max_in_flight_bytes": 2500, "max_answer_bytes": 1000,
                                "targets": [target(json!({"max_body_bytes": 0}))]}),
    );
    for user in ["u1", "u2", "u3"] {
        vm.complete(&refs(&get(user)), &[]);
    }
    assert_eq!(vm.host.sent.len(), 2);
    assert_eq!(vm.tally(ROOT).get(0, Counter::SkippedInFlight), 1);
    let first = vm.host.sent[0].token;
    vm.answer(ROOT, first, FakeAnswer::none(), 0);
    vm.complete(&refs(&get("u4")), &[]);
    assert_eq!(vm.host.sent.len(), 3, "room again once an answer came");
    for call in vm.host.sent.clone().into_iter().skip(1) {
        vm.answer(ROOT, call.token, FakeAnswer::status(200), 0);
    }
    let tally = vm.tally(ROOT);
    assert_eq!(tally.get(0, Counter::ResponsesFailed), 1);
    assert_eq!(
        vm.host.logged("the copy ended without a complete answer"),
        1
    );
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn a_replaced_configuration_drains_its_copies_and_shares_the_budgets_meanwhile() {
    let mut vm = Vm::new(
        json!({"max_in_flight_bytes": 3000, "max_answer_bytes": 1000,
                                "targets": [target(json!({"max_body_bytes": 0}))]}),
    );
    for user in ["u1", "u2"] {
        vm.complete(&refs(&get(user)), &[]);
    }
    // An update: a new root; the old one is asked whether it is done, and is not.
    const NEW: u32 = 2;
    vm.configure(
        NEW,
        json!({"max_in_flight_bytes": 3000, "max_answer_bytes": 1000,
               "targets": [target(json!({"name": "renamed", "max_body_bytes": 0}))]}),
    );
    assert!(
        !vm.contexts.done(ROOT, &mut vm.host),
        "two copies in flight"
    );
    // The new configuration finds the budget held by the old one's copies.
    let context = vm.request(NEW, &refs(&get("u3")), &[], true);
    assert!(vm.contexts.done(context, &mut vm.host));
    assert_eq!(vm.tally(NEW).get(0, Counter::SkippedInFlight), 1);
    // The old copies' answers come to the old root, which drains on the last.
    let tokens: Vec<u32> = vm.host.sent.iter().map(|c| c.token).collect();
    assert!(!vm.answer(ROOT, tokens[0], FakeAnswer::status(200), 0));
    assert!(
        vm.answer(ROOT, tokens[1], FakeAnswer::status(503), 0),
        "drained"
    );
    assert_eq!(vm.host.logged("replaced configuration drained"), 1);
    vm.assert_accounted(ROOT, 1);
    assert_eq!(vm.tally(ROOT).get(0, Counter::Responses5xx), 1);
    vm.contexts.delete(ROOT);
    let context = vm.request(NEW, &refs(&get("u4")), &[], true);
    assert!(vm.contexts.done(context, &mut vm.host));
    let token = vm.host.sent.last().unwrap().token;
    vm.answer(NEW, token, FakeAnswer::status(200), 0);
    vm.assert_accounted(NEW, 1);
}

#[test]
fn contexts_are_forgotten_when_the_host_is_done_with_them() {
    // Envoy calls proxy_on_done and then proxy_on_delete; the filter exports only the
    // first, so that is where a request, and a root with nothing in flight, go.
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    let context = vm.request(ROOT, &refs(&get("u1")), &[], false);
    assert_eq!(vm.contexts.requests_in_progress(), 1);
    assert!(vm.contexts.done(context, &mut vm.host));
    assert_eq!(vm.contexts.requests_in_progress(), 0);
    assert_eq!(vm.tally(ROOT).get(0, Counter::SkippedIncomplete), 1);
    let token = vm.host.sent.first().map(|c| c.token);
    assert!(token.is_none(), "an incomplete request sends nothing");
    vm.complete(&refs(&get("u2")), &[]);
    assert!(!vm.contexts.done(ROOT, &mut vm.host), "a copy in flight");
    assert!(vm.contexts.root(ROOT).is_some());
    let token = vm.host.sent[0].token;
    assert!(
        vm.answer(ROOT, token, FakeAnswer::status(200), 0),
        "drained"
    );
    vm.contexts.delete(ROOT);
    assert!(vm.contexts.root(ROOT).is_none());
    assert_eq!(vm.contexts.budgets().in_flight.held(), 0);

    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    assert!(vm.contexts.done(ROOT, &mut vm.host), "nothing in flight");
    assert!(vm.contexts.root(ROOT).is_none());
}

#[test]
fn answers_that_never_come_give_their_bytes_back_when_the_root_goes() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    vm.complete(&refs(&get("u1")), &[]);
    assert!(vm.contexts.budgets().in_flight.held() > 0);
    vm.contexts.delete(ROOT);
    assert_eq!(vm.contexts.budgets().in_flight.held(), 0);
}

#[test]
fn an_answer_delivered_to_another_root_is_counted_by_the_one_that_sent_it() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    vm.configure(2, json!({"targets": [target(json!({"name": "other"}))]}));
    vm.complete(&refs(&get("u1")), &[]);
    let token = vm.host.sent[0].token;
    vm.answer(2, token, FakeAnswer::status(200), 0);
    assert_eq!(vm.tally(ROOT).get(0, Counter::Responses2xx), 1);
    assert_eq!(vm.tally(2).get(0, Counter::Responses2xx), 0);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn a_grpc_answer_is_counted_by_its_status_from_trailers_or_headers() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    let mut grpc = get("u1");
    grpc[0].1 = "POST".into();
    grpc.push(("content-type", "application/grpc".into()));
    for _ in 0..3 {
        vm.complete(&refs(&grpc), &[&[0, 0, 0, 0, 1, 7]]);
    }
    vm.complete(&refs(&get("u2")), &[]);
    let tokens: Vec<u32> = vm.host.sent.iter().map(|c| c.token).collect();
    vm.answer(
        ROOT,
        tokens[0],
        FakeAnswer::status(200).trailer("grpc-status", "0"),
        7,
    );
    // Trailers-only: the status in the headers.
    vm.answer(
        ROOT,
        tokens[1],
        FakeAnswer::status(200).header("grpc-status", "14"),
        0,
    );
    vm.answer(ROOT, tokens[2], FakeAnswer::none(), 0);
    // Not a gRPC call: its grpc-status, were there one, is not read.
    vm.answer(
        ROOT,
        tokens[3],
        FakeAnswer::status(200).header("grpc-status", "5"),
        0,
    );
    let tally = vm.tally(ROOT);
    assert_eq!((tally.grpc_status(0, 0), tally.grpc_status(0, 14)), (1, 1));
    assert_eq!(tally.grpc_status(0, 5), 0);
    assert_eq!(tally.get(0, Counter::Responses2xx), 3);
    assert_eq!(vm.host.logged("the mirror answered grpc-status 14"), 1);
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn an_answer_longer_than_max_answer_bytes_says_the_runtime_value_is_not_set_once() {
    let mut vm = Vm::new(json!({"targets": [target(json!({}))]}));
    for user in ["u1", "u2"] {
        vm.complete(&refs(&get(user)), &[]);
    }
    for call in vm.host.sent.clone() {
        vm.answer(ROOT, call.token, FakeAnswer::status(200), 1 << 20);
    }
    assert_eq!(
        vm.host
            .logged("is not set to 65536, so Envoy holds each answer up to 32 MiB"),
        1
    );
    vm.assert_accounted(ROOT, 1);
}

#[test]
fn lanes_are_written_on_the_request_before_the_targets_decide() {
    let mut vm = Vm::new(json!({
        "lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "s",
                  "split": [{"lane": "canary", "percent": 100}]},
        "targets": [target(json!({"match": {"headers": {"x-lane": "canary"}}}))]}));
    vm.complete(&refs(&get("u1")), &[]);
    assert_eq!(vm.tally(ROOT).lane(0, LaneStat::Assigned), 1);
    assert_eq!(
        vm.host.sent.len(),
        1,
        "the target matched the lane just written"
    );
    assert_eq!(vm.host.sent[0].header("x-lane"), Some(&b"canary"[..]));
}

#[test]
fn a_looping_request_is_counted_by_every_target_and_never_copied() {
    let mut vm = Vm::new(json!({"targets": [target(json!({})), target(json!({"name": "b"}))]}));
    let mut headers = get("u1");
    headers.push(("x-traffic-mirror", "staging".into()));
    vm.complete(&refs(&headers), &[]);
    assert!(vm.host.sent.is_empty());
    for t in 0..2 {
        assert_eq!(vm.tally(ROOT).get(t, Counter::SkippedLoop), 1);
    }
    vm.assert_accounted(ROOT, 2);
}
