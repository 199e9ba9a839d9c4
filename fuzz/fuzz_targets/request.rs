//! The whole request path over arbitrary requests, through the filter's own VM
//! (`Vm`, driven as Envoy drives it by the `testing` driver, against the fake host): headers (names,
//! values, cookies, queries, `:path`), body chunks, a request that ends before it is
//! complete, the copies sent, refused or answered. The plan uses every key kind, match
//! rule and header operation, with a small `max_buffered_bytes` and a small
//! `max_in_flight_bytes` that another request and its copy already partly hold. Never
//! panics, never copies more than the cap, never holds more than either budget, gives
//! every byte back, and every sampled request and every copy is accounted for exactly
//! once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use traffic_mirror_core::config::{parse, Plan};
use traffic_mirror_core::host::Status;
use traffic_mirror_core::lifecycle::Vm;
use traffic_mirror_core::stats::Counter;
use traffic_mirror_core::testing::{Envoy, FakeAnswer, FakeHost};
use traffic_mirror_core::wire;

const PLAN: &str = r#"{
  "targets": [
    {"name": "by-header", "cluster": "a", "percent": 50, "sample_by": {"header": "x-user"},
     "headers": {"remove": ["cookie"], "set": {"x-env": "staging"}, "redact": ["authorization"]},
     "max_body_bytes": 64},
    {"name": "by-cookie", "cluster": "b", "percent": 50, "sample_by": {"cookie": "uid"},
     "on_missing_key": "random", "match": {"path_prefix": "/api", "methods": ["GET", "POST"],
               "hosts": ["shop.test", "*.example.com"], "exclude_path_prefixes": ["/api/health"]},
     "max_body_bytes": 0, "authority": "mirror.internal"},
    {"name": "by-query", "cluster": "c", "percent": 99.5, "sample_by": {"query": "sid"},
     "match": {"headers": {"x-env": "prod", "x-flag": true}}, "host_suffix": "",
     "max_in_flight": 2, "max_rps": 3, "max_body_bytes": 1024},
    {"name": "random", "cluster": "d", "percent": 100, "sample_by": {"random": true},
     "match": {"path_exact": "/", "headers": {"x-lane": "canary"}}, "max_body_bytes": 2048}
  ],
  "max_buffered_bytes": 4096,
  "max_in_flight_bytes": 6000,
  "max_answer_bytes": 1000,
  "lanes": {"header": "x-lane", "sample_by": {"cookie": "uid"}, "salt": "lanes",
            "split": [{"lane": "canary", "percent": 30}, {"lane": "beta", "percent": 0.5}],
            "default": "stable", "on_missing_key": "random", "keep_incoming": true}
}"#;

fn plan() -> &'static Plan {
    static PLAN_CELL: OnceLock<Plan> = OnceLock::new();
    PLAN_CELL.get_or_init(|| parse(PLAN.as_bytes()).expect("the fuzz plan is valid"))
}

const ROOT: u32 = 1;

// Input layout: fields separated by 0xFF. The first field seeds the random source and
// says (its first byte) how much of the budget another request holds, whether the
// request ends complete (its last bit) and whether the host refuses calls (its second
// last bit); then name/value pairs of headers up to an empty field; the rest are body
// chunks (none: the request ends at its headers).
fuzz_target!(|data: &[u8]| {
    // The host's map format, on hostile bytes: refused or parsed, never a panic.
    if let Some(pairs) = wire::parse(data) {
        assert_eq!(wire::parse(&wire::serialize(&pairs)), Some(pairs));
    }
    let mut fields = data.split(|&b| b == 0xFF);
    let seed = fields.next().unwrap_or_default();
    let mut headers = Vec::new();
    while let Some(name) = fields.next() {
        if name.is_empty() {
            break;
        }
        let value = fields.next().unwrap_or_default();
        headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.to_vec(),
        ));
    }
    let chunks: Vec<&[u8]> = fields.collect();
    let body_len: usize = chunks.iter().map(|c| c.len()).sum();
    let complete = seed.last().is_none_or(|b| b & 1 == 0);
    let plan = plan();

    // A fresh VM for each input, its random draws seeded by the input.
    let mut host = FakeHost::new();
    host.seed = seed
        .iter()
        .fold(7u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut envoy = Envoy::new(Vm::new(host));
    assert!(envoy.configure(ROOT, PLAN));

    // Another request holds part of max_buffered_bytes, its body declared and never sent.
    let held = usize::from(seed.first().copied().unwrap_or(0)) * 8;
    let length = held.to_string();
    let holder = envoy.request(
        ROOT,
        &[
            (":method", "POST"),
            (":path", "/"),
            (":authority", "h"),
            ("x-lane", "canary"),
            ("content-length", &length),
        ],
        &[],
        false,
    );

    if seed.len() > 1 && seed.last().is_some_and(|b| b & 2 != 0) {
        envoy.host().refuse = Some(Status::InternalFailure);
    }
    let incoming_lane = headers
        .iter()
        .find(|(n, _)| n == "x-lane")
        .map(|(_, v)| v.clone());
    let refs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let request = envoy.request_bytes(ROOT, &refs, &[], chunks.is_empty() && complete);
    // The lane written on the request, as routes see it.
    if let Some(lanes) = &plan.lanes {
        let written = envoy.host().requests.get(&request).and_then(|r| {
            r.headers
                .iter()
                .find(|(n, _)| *n == lanes.header)
                .map(|(_, v)| v.clone())
        });
        let kept = incoming_lane.is_some_and(|v| !v.is_empty())
            && lanes.assign().is_some_and(|a| a.keep_incoming);
        if !kept {
            assert!(written.is_some_and(|v| lanes.names.iter().any(|n| n.as_bytes() == v)));
        }
    }
    for (i, chunk) in chunks.iter().enumerate() {
        let last = complete && i == chunks.len() - 1;
        envoy.body(request, chunk, last);
        let budgets = envoy.filter.budgets();
        assert!(budgets.buffered.held() <= plan.max_buffered_bytes);
    }
    envoy.done(request);

    let sent = envoy.host().sent.clone();
    for call in &sent {
        let (index, target) = plan
            .targets
            .iter()
            .enumerate()
            .find(|(_, t)| t.cluster == call.cluster)
            .expect("a target's cluster");
        assert!(call.body.len() <= target.max_body_bytes);
        assert_eq!(
            call.body.len(),
            body_len,
            "a copy's body is never truncated"
        );
        assert_eq!(call.timeout_ms, target.timeout_ms);
        let loops: Vec<_> = call
            .headers
            .iter()
            .filter(|(n, _)| n == plan.loop_header.as_bytes())
            .collect();
        assert_eq!(loops.len(), 1, "target {index}");
        assert_eq!(loops[0].1, target.name.as_bytes());
        for name in &target.header_ops.remove {
            assert!(!call
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())));
        }
    }
    let budgets = envoy.filter.budgets();
    assert!(
        budgets.buffered.peak() <= plan.max_buffered_bytes,
        "never past the budget"
    );
    assert!(
        budgets.in_flight.peak() <= plan.max_in_flight_bytes,
        "never past max_in_flight_bytes"
    );
    // Every copy's end, with statuses from the seed, also none at all; a second delivery
    // of the same token counts nothing.
    for (i, call) in sent.iter().enumerate() {
        let status = seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
        let answer = match status % 4 {
            0 => FakeAnswer::none(),
            1 => FakeAnswer::status(200).trailer("grpc-status", &(status % 20).to_string()),
            2 => FakeAnswer::status(503),
            _ => FakeAnswer::status(u16::from(status)),
        };
        envoy.answer(call.token, answer, usize::from(status));
        envoy.answer(call.token, FakeAnswer::status(200), 0);
    }
    envoy.done(holder);
    let budgets = envoy.filter.budgets();
    assert_eq!(budgets.buffered.held(), 0, "every byte given back");
    assert_eq!(
        budgets.in_flight.held(),
        0,
        "every in-flight byte given back"
    );
    let host = envoy.host();
    for target in &plan.targets {
        let get = |c: &Counter| host.target_stat(&target.name, c.name());
        let outcomes: i64 = Counter::SAMPLED_OUTCOMES.iter().map(get).sum();
        let ended: i64 = Counter::RESPONSES.iter().map(get).sum();
        assert_eq!(get(&Counter::Sampled), outcomes, "target {}", target.name);
        assert_eq!(get(&Counter::Dispatched), ended, "each copy ends once");
        let latencies = host.histogram(&format!("traffic_mirror.{}.latency_ms", target.name));
        assert_eq!(latencies.len() as i64, ended, "every end timed");
        assert!(get(&Counter::Sampled) <= get(&Counter::Requests));
        assert_eq!(host.target_stat(&target.name, "in_flight"), 0);
    }
});
