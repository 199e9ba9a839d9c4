//! The whole request path over arbitrary requests: headers (names, values, cookies,
//! queries, `:path`), body chunks, and the copy builder, for a plan that uses every
//! key kind, match rule and header operation, with a small `max_buffered_bytes` that
//! another request already partly holds, and a small `max_in_flight_bytes` that calls
//! already in flight partly hold. Never panics, never copies more than the cap, never
//! holds more than either budget, gives every byte back, and every sampled request is
//! accounted for exactly once, also when it ends before it is complete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use traffic_mirror::budget::Budget;
use traffic_mirror::capture::begin;
use traffic_mirror::config::{parse, Plan};
use traffic_mirror::lanes::How;
use traffic_mirror::metrics::{Counter, Tally};
use traffic_mirror::outbox::Outbox;
use traffic_mirror::request::{HeaderList, RequestView};
use traffic_mirror::sampling::Rng;
use traffic_mirror::wire;

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

// Input layout: fields separated by 0xFF. The first field seeds the random source (its
// first byte also says how much of the budget another request holds, and its last bit
// whether the request ends complete); then name/value pairs of headers up to an empty
// field; the rest are body chunks (none: the request ends at its headers).
fuzz_target!(|data: &[u8]| {
    // The host's map format, on hostile bytes: refused or parsed, never a panic.
    if let Some(pairs) = wire::parse(data) {
        assert_eq!(wire::parse(&wire::serialize(&pairs)), Some(pairs));
    }
    let mut fields = data.split(|&b| b == 0xFF);
    let seed = fields.next().unwrap_or_default();
    let mut rng = Rng::new(
        seed.iter()
            .fold(7u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
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
    let mut request = HeaderList { headers };
    let plan = plan();
    let mut tally = Tally::default();
    let mut budget = Budget::new();
    let other = usize::from(seed.first().copied().unwrap_or(0)) * 16;
    assert!(budget.try_reserve(plan.max_buffered_bytes, other));
    let complete = seed.last().is_none_or(|b| b & 1 == 0);
    let chunks: Vec<&[u8]> = fields.collect();
    let body_len: usize = chunks.iter().map(|c| c.len()).sum();
    // The lane first, as in the filter: what it writes is what the targets see.
    if let Some(lanes) = &plan.lanes {
        let decision = lanes.assign(&mut request, &mut rng, &mut tally);
        let header = request.header(&lanes.header);
        match decision.lane.and_then(|l| lanes.name(l)) {
            Some(name) if decision.how != How::Kept => {
                assert_eq!(header.as_deref(), Some(name.as_bytes()))
            }
            None if decision.how != How::Kept => assert_eq!(header, None),
            _ => assert!(header.is_some_and(|v| !v.is_empty())),
        }
    }
    let copies = match begin(plan, &mut request, &mut rng, &mut tally) {
        None => Vec::new(),
        Some(mut capture) => {
            if !chunks.is_empty() {
                capture.hold(&mut budget, &mut tally);
            }
            for (i, chunk) in chunks.iter().enumerate() {
                // Both ways a chunk comes in: borrowed, or as read from the host.
                if i % 2 == 0 {
                    capture.add_body_chunk(chunk.to_vec(), &mut budget, &mut tally);
                } else {
                    capture.add_body(chunk, &mut budget, &mut tally);
                }
                assert!(budget.held() <= plan.max_buffered_bytes);
                assert!(budget.held() >= other + capture.reserved());
            }
            if complete {
                let finished = capture.finish(&mut budget, &mut tally);
                let copies = finished.copies.clone();
                finished.release(&mut budget);
                copies
            } else {
                capture.end_incomplete(&mut budget, &mut tally);
                Vec::new()
            }
        }
    };
    assert!(
        budget.peak() <= plan.max_buffered_bytes,
        "never past the budget"
    );
    assert_eq!(budget.held(), other, "every byte given back");
    let mut outbox = Outbox::new(plan);
    // Calls of other requests already in flight hold part of max_in_flight_bytes.
    let mut in_flight = Budget::new();
    let others = usize::from(seed.get(1).copied().unwrap_or(0)) * 23;
    assert!(in_flight.try_reserve(plan.max_in_flight_bytes, others));
    let mut open = Vec::new();
    let mut calls = 0usize;
    for copy in &copies {
        let target = &plan.targets[copy.target];
        assert!(copy.body.len() <= target.max_body_bytes);
        assert_eq!(
            copy.body.len(),
            body_len,
            "a copy's body is never truncated"
        );
        let headers = wire::parse(&copy.headers).expect("the copy's map is well formed");
        let loops: Vec<_> = headers
            .iter()
            .filter(|(n, _)| *n == plan.loop_header.as_bytes())
            .collect();
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].1, target.name.as_bytes());
        for name in &target.header_ops.remove {
            assert!(!headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())));
        }
        // Through the limits and a call's whole life: every admitted copy ends once,
        // the later ones of this request while the earlier ones are still in flight.
        let bytes = copy.headers.len() + copy.body.len();
        if let Some(admitted) = outbox.admit(copy.target, bytes, &mut in_flight, || 0, &mut tally) {
            assert!(in_flight.held() <= plan.max_in_flight_bytes);
            let token = u32::try_from(calls).unwrap_or(u32::MAX);
            calls += 1;
            if seed.last().is_some_and(|b| b & 2 != 0) {
                outbox.refused(admitted, &mut in_flight, &mut tally);
            } else {
                outbox.sent(token, admitted, copy.grpc, 7, &mut tally);
                open.push(token);
            }
        }
    }
    for token in open {
        let call = outbox
            .end(token, &mut in_flight)
            .expect("a call in flight ends");
        let _ = call.count(seed.get(..3), seed.get(1..3), 5, &mut tally);
        assert!(
            outbox.end(token, &mut in_flight).is_none(),
            "a call ends once"
        );
    }
    assert!(
        in_flight.peak() <= plan.max_in_flight_bytes,
        "never past max_in_flight_bytes"
    );
    assert_eq!(in_flight.held(), others, "every in-flight byte given back");
    for (index, _) in plan.targets.iter().enumerate() {
        let sampled = tally.get(index, Counter::Sampled);
        let copied = copies.iter().filter(|c| c.target == index).count() as u64;
        // Where every sampled request ended; the copied ones went through the outbox.
        let outcomes: u64 = Counter::SAMPLED_OUTCOMES
            .iter()
            .map(|&c| tally.get(index, c))
            .sum();
        let through_outbox = tally.get(index, Counter::Dispatched)
            + tally.get(index, Counter::DispatchFailed)
            + tally.get(index, Counter::SkippedInFlight)
            + tally.get(index, Counter::SkippedRateLimited);
        assert_eq!(through_outbox, copied);
        assert_eq!(sampled, outcomes);
        assert!(tally.get(index, Counter::Sampled) <= tally.get(index, Counter::Requests));
        let ended: u64 = Counter::RESPONSES
            .iter()
            .map(|&c| tally.get(index, c))
            .sum();
        assert_eq!(ended, tally.get(index, Counter::Dispatched));
        assert_eq!(
            tally.latencies(index).len() as u64,
            ended,
            "every end timed"
        );
        assert_eq!(tally.in_flight(index), 0);
    }
});
