//! A worker's copies in flight: the limits that admit a complete copy, and the calls
//! awaiting an answer, so that every copy's end is counted exactly once and every byte
//! it held in `max_in_flight_bytes` comes back.
//!
//! A copy holds, from the moment it is handed to Envoy until it ends, its headers and
//! body (Envoy's copy of them, in its buffers or its sockets' while the mirror reads)
//! and room for its answer (Envoy buffers the whole answer of a call, up to its runtime
//! value that `max_answer_bytes` describes).

use crate::budget::Budget;
use crate::config::Plan;
use crate::id_map::IdMap;
use crate::limits::{InFlight, TokenBucket};
use crate::metrics::{grpc_status_code, Counter, Metrics};

#[derive(Debug, Clone)]
struct TargetLimits {
    rate: Option<TokenBucket>,
    /// Copies admitted and not yet ended.
    slots: InFlight,
}

/// A copy past every limit, holding its slot and its bytes until it is handed to the
/// host ([`Outbox::sent`]) or refused ([`Outbox::refused`]).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an admitted copy holds a slot and bytes until sent or refused"]
pub struct Admitted {
    target: usize,
    bytes: usize,
}

impl Admitted {
    pub fn target(&self) -> usize {
        self.target
    }
}

/// A call awaiting its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    target: usize,
    /// Held in `max_in_flight_bytes` until the call ends.
    bytes: usize,
    /// A gRPC call: its answer's `grpc-status` is counted too.
    grpc: bool,
    /// When it was handed to Envoy.
    sent_nanos: u64,
}

/// A call that has ended, out of the outbox (its slot and bytes given back), to be
/// counted by how it ended ([`EndedCall::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an ended call is counted once"]
pub struct EndedCall {
    pub target: usize,
    /// A gRPC call: read its answer's `grpc-status` for [`EndedCall::count`].
    pub grpc: bool,
    sent_nanos: u64,
}

impl EndedCall {
    /// Counts the end of the call at `now_nanos`: the answer's status class
    /// (`status` none: it ended without a complete answer), its gRPC status when the
    /// answer has one, the time since it was handed to Envoy, and one copy fewer in
    /// flight. Returns the status class counter.
    pub fn count(
        &self,
        status: Option<&[u8]>,
        grpc_status: Option<&[u8]>,
        now_nanos: u64,
        metrics: &mut impl Metrics,
    ) -> Counter {
        let counter = Counter::for_response(status);
        metrics.count(self.target, counter);
        if let Some(code) = grpc_status.and_then(grpc_status_code) {
            metrics.count_grpc_status(self.target, code);
        }
        metrics.record_latency(
            self.target,
            now_nanos.saturating_sub(self.sent_nanos) / NANOS_PER_MILLI,
        );
        metrics.add_in_flight(self.target, -1);
        counter
    }
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// Copies admitted and not yet ended.
#[derive(Debug, Default)]
pub struct Outbox {
    limits: Vec<TargetLimits>,
    /// Call token -> its target and bytes.
    calls: IdMap<Call>,
    /// The configuration's `max_in_flight_bytes`.
    max_bytes: usize,
    /// The configuration's `max_answer_bytes`: what every copy holds for its answer.
    answer_bytes: usize,
}

impl Outbox {
    pub fn new(plan: &Plan) -> Self {
        Outbox {
            limits: plan
                .targets
                .iter()
                .map(|t| TargetLimits {
                    rate: t.max_rps.map(TokenBucket::new),
                    slots: InFlight::new(t.max_in_flight),
                })
                .collect(),
            calls: IdMap::default(),
            max_bytes: plan.max_in_flight_bytes,
            answer_bytes: plan.max_answer_bytes,
        }
    }

    /// Admits a complete copy of `target` whose headers and body take `copy_bytes`,
    /// past `max_rps`, `max_in_flight` and `max_in_flight_bytes` (reserving a slot and
    /// the copy's bytes with room for its answer in `in_flight`), or counts why not.
    /// `now_nanos` is only asked for under a rate limit.
    pub fn admit(
        &mut self,
        target: usize,
        copy_bytes: usize,
        in_flight: &mut Budget,
        now_nanos: impl FnOnce() -> u64,
        metrics: &mut impl Metrics,
    ) -> Option<Admitted> {
        let limits = self.limits.get_mut(target)?;
        if let Some(bucket) = &mut limits.rate {
            if !bucket.try_take(now_nanos()) {
                metrics.count(target, Counter::SkippedRateLimited);
                return None;
            }
        }
        let bytes = copy_bytes.saturating_add(self.answer_bytes);
        if !limits.slots.try_reserve() {
            metrics.count(target, Counter::SkippedInFlight);
            return None;
        }
        if !in_flight.try_reserve(self.max_bytes, bytes) {
            limits.slots.release();
            metrics.count(target, Counter::SkippedInFlight);
            return None;
        }
        Some(Admitted { target, bytes })
    }

    /// The host accepted the copy, a gRPC call or not, as call `token` at `now_nanos`.
    pub fn sent(
        &mut self,
        token: u32,
        copy: Admitted,
        grpc: bool,
        now_nanos: u64,
        metrics: &mut impl Metrics,
    ) {
        metrics.count(copy.target, Counter::Dispatched);
        metrics.add_in_flight(copy.target, 1);
        self.calls.insert(
            token,
            Call {
                target: copy.target,
                bytes: copy.bytes,
                grpc,
                sent_nanos: now_nanos,
            },
        );
    }

    /// The host refused the copy: its slot and bytes come back.
    pub fn refused(&mut self, copy: Admitted, in_flight: &mut Budget, metrics: &mut impl Metrics) {
        metrics.count(copy.target, Counter::DispatchFailed);
        self.release(copy.target);
        in_flight.release(copy.bytes);
    }

    /// Call `token` ended: its slot and bytes come back. `None` for a call that is not
    /// ours (or ended already).
    pub fn end(&mut self, token: u32, in_flight: &mut Budget) -> Option<EndedCall> {
        let call = self.calls.remove(&token)?;
        self.release(call.target);
        in_flight.release(call.bytes);
        Some(EndedCall {
            target: call.target,
            grpc: call.grpc,
            sent_nanos: call.sent_nanos,
        })
    }

    /// The host deleted this configuration's root with calls still in flight, whose
    /// answers will never come: their bytes come back (nothing can be counted).
    pub fn forget_all(&mut self, in_flight: &mut Budget) {
        for (_, call) in self.calls.drain() {
            in_flight.release(call.bytes);
        }
    }

    /// Calls in flight (sent and not yet ended).
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Whether call `token` is in flight here.
    pub fn has_call(&self, token: u32) -> bool {
        self.calls.contains_key(&token)
    }

    /// Copies of a target admitted and not yet ended.
    pub fn occupied(&self, target: usize) -> u32 {
        self.limits.get(target).map_or(0, |l| l.slots.current())
    }

    /// The configuration's `max_answer_bytes`.
    pub fn answer_bytes(&self) -> usize {
        self.answer_bytes
    }

    fn release(&mut self, target: usize) {
        if let Some(limits) = self.limits.get_mut(target) {
            limits.slots.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::metrics::Tally;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn outbox(top: &str, extra: &str) -> Outbox {
        let json = format!(
            r#"{{{top}"targets": [{{"name": "a", "cluster": "c", "percent": 100{extra}}}]}}"#
        );
        Outbox::new(&parse(json.as_bytes()).unwrap())
    }

    /// Ends call `token` with this `:status` at time 0: its target and counter.
    fn ended(
        out: &mut Outbox,
        token: u32,
        status: Option<&[u8]>,
        budget: &mut Budget,
        tally: &mut Tally,
    ) -> Option<(usize, Counter)> {
        let call = out.end(token, budget)?;
        Some((call.target, call.count(status, None, 0, tally)))
    }

    /// Admits a copy of 100 bytes at time 0.
    fn admit(out: &mut Outbox, budget: &mut Budget, tally: &mut Tally) -> Option<Admitted> {
        out.admit(0, 100, budget, || 0, tally)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_sent_copy_ends_in_exactly_one_response_counter() {
        let mut out = outbox("", "");
        let mut budget = Budget::new();
        let mut tally = Tally::default();
        for token in 10..13 {
            let copy = admit(&mut out, &mut budget, &mut tally).unwrap();
            out.sent(token, copy, false, 0, &mut tally);
        }
        assert_eq!(tally.in_flight(0), 3);
        assert_eq!(budget.held(), 3 * (100 + 65_536));
        assert_eq!(
            ended(&mut out, 10, Some(b"200"), &mut budget, &mut tally),
            Some((0, Counter::Responses2xx))
        );
        assert_eq!(
            ended(&mut out, 11, Some(b"503"), &mut budget, &mut tally),
            Some((0, Counter::Responses5xx))
        );
        assert_eq!(
            ended(&mut out, 12, None, &mut budget, &mut tally),
            Some((0, Counter::ResponsesFailed))
        );
        assert_eq!(
            ended(&mut out, 12, Some(b"200"), &mut budget, &mut tally),
            None,
            "ends once"
        );
        assert_eq!(
            ended(&mut out, 99, Some(b"200"), &mut budget, &mut tally),
            None,
            "not ours"
        );
        assert_eq!(tally.get(0, Counter::Dispatched), 3);
        assert_eq!(tally.in_flight(0), 0);
        assert_eq!(out.occupied(0), 0);
        assert_eq!(budget.held(), 0, "every byte comes back");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_ended_call_counts_its_grpc_status_and_its_latency() {
        let mut out = outbox("", "");
        let mut budget = Budget::new();
        let mut tally = Tally::default();
        const MS: u64 = 1_000_000;
        for (token, grpc) in [(1, true), (2, true), (3, false), (4, true)] {
            let copy = admit(&mut out, &mut budget, &mut tally).unwrap();
            out.sent(token, copy, grpc, 1000 * MS, &mut tally);
        }
        // A failing gRPC mirror answers HTTP 200: the class says 2xx, the code says 14.
        let call = out.end(1, &mut budget).unwrap();
        assert!(call.grpc);
        assert_eq!(
            call.count(Some(b"200"), Some(b"14"), 1250 * MS, &mut tally),
            Counter::Responses2xx
        );
        let call = out.end(2, &mut budget).unwrap();
        let _ = call.count(Some(b"200"), Some(b"0"), 1003 * MS + MS / 2, &mut tally);
        let call = out.end(3, &mut budget).unwrap();
        assert!(!call.grpc);
        let _ = call.count(Some(b"503"), None, 1000 * MS, &mut tally);
        // No complete answer, or a code out of range: no gRPC status; the clock going
        // backwards: 0 ms.
        let call = out.end(4, &mut budget).unwrap();
        let _ = call.count(None, Some(b"99"), 999 * MS, &mut tally);
        assert_eq!(tally.grpc_status(0, 14), 1);
        assert_eq!(tally.grpc_status(0, 0), 1);
        assert_eq!((0..17).map(|c| tally.grpc_status(0, c)).sum::<u64>(), 2);
        assert_eq!(tally.latencies(0), [250, 3, 0, 0]);
        assert_eq!(tally.get(0, Counter::Responses2xx), 2);
        assert_eq!(tally.get(0, Counter::ResponsesFailed), 1);
        assert_eq!(tally.in_flight(0), 0);
        assert_eq!(budget.held(), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn in_flight_limit_drops_and_counts_and_frees_on_end() {
        let mut out = outbox("", r#", "max_in_flight": 2"#);
        let mut budget = Budget::new();
        let mut tally = Tally::default();
        let first = admit(&mut out, &mut budget, &mut tally).unwrap();
        let second = admit(&mut out, &mut budget, &mut tally).unwrap();
        assert!(admit(&mut out, &mut budget, &mut tally).is_none());
        assert_eq!(tally.get(0, Counter::SkippedInFlight), 1);
        out.sent(1, first, false, 0, &mut tally);
        out.refused(second, &mut budget, &mut tally);
        assert_eq!(tally.get(0, Counter::DispatchFailed), 1);
        let third = admit(&mut out, &mut budget, &mut tally).unwrap();
        assert!(admit(&mut out, &mut budget, &mut tally).is_none());
        ended(&mut out, 1, Some(b"204"), &mut budget, &mut tally);
        assert!(admit(&mut out, &mut budget, &mut tally).is_some());
        assert_eq!(tally.get(0, Counter::SkippedInFlight), 2);
        out.refused(third, &mut budget, &mut tally);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn in_flight_bytes_count_headers_body_and_room_for_the_answer() {
        // Room for two copies of 100 bytes with 400 for each answer, not three.
        let mut out = outbox(
            r#""max_in_flight_bytes": 1000, "max_answer_bytes": 400, "#,
            r#", "max_body_bytes": 0"#,
        );
        let mut budget = Budget::new();
        let mut tally = Tally::default();
        let first = admit(&mut out, &mut budget, &mut tally).unwrap();
        let second = admit(&mut out, &mut budget, &mut tally).unwrap();
        assert_eq!(budget.held(), 1000);
        assert!(admit(&mut out, &mut budget, &mut tally).is_none());
        assert_eq!(tally.get(0, Counter::SkippedInFlight), 1);
        assert_eq!(
            out.occupied(0),
            2,
            "a copy refused for its bytes keeps no slot"
        );
        // A smaller copy does not fit either: the budget is full.
        assert!(out.admit(0, 0, &mut budget, || 0, &mut tally).is_none());
        out.sent(7, first, false, 0, &mut tally);
        out.refused(second, &mut budget, &mut tally);
        assert_eq!(budget.held(), 500);
        assert!(out.admit(0, 600, &mut budget, || 0, &mut tally).is_none());
        let fits = out.admit(0, 100, &mut budget, || 0, &mut tally).unwrap();
        out.sent(8, fits, false, 0, &mut tally);
        ended(&mut out, 7, None, &mut budget, &mut tally);
        ended(&mut out, 8, Some(b"200"), &mut budget, &mut tally);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.peak(), 1000);
        assert_eq!(tally.get(0, Counter::SkippedInFlight), 3);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_configuration_draws_on_the_one_budget_within_its_own_limit() {
        // A retiring configuration with a large limit holds bytes; the new one, with a
        // smaller limit, sees them.
        let mut old = outbox(
            r#""max_in_flight_bytes": 100000, "max_answer_bytes": 0, "#,
            r#", "max_body_bytes": 0"#,
        );
        let mut new = outbox(
            r#""max_in_flight_bytes": 1000, "max_answer_bytes": 0, "#,
            r#", "max_body_bytes": 0"#,
        );
        let mut budget = Budget::new();
        let mut tally = Tally::default();
        let big = old.admit(0, 5000, &mut budget, || 0, &mut tally).unwrap();
        old.sent(1, big, false, 0, &mut tally);
        assert!(new.admit(0, 1, &mut budget, || 0, &mut tally).is_none());
        ended(&mut old, 1, Some(b"200"), &mut budget, &mut tally);
        assert!(new.admit(0, 1000, &mut budget, || 0, &mut tally).is_some());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_deleted_root_gives_its_calls_bytes_back() {
        let mut out = outbox("", "");
        let mut budget = Budget::new();
        let mut tally = Tally::default();
        for token in 1..=3 {
            let copy = admit(&mut out, &mut budget, &mut tally).unwrap();
            out.sent(token, copy, false, 0, &mut tally);
        }
        assert!(budget.held() > 0);
        out.forget_all(&mut budget);
        assert_eq!(budget.held(), 0);
        assert_eq!(out.calls_in_flight(), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rate_limit_drops_and_counts_and_asks_the_clock_only_when_set() {
        let mut budget = Budget::new();
        let mut unlimited = outbox("", "");
        let mut tally = Tally::default();
        let copy = unlimited.admit(
            0,
            1,
            &mut budget,
            || panic!("clock read without max_rps"),
            &mut tally,
        );
        unlimited.refused(copy.unwrap(), &mut budget, &mut tally);
        let mut out = outbox("", r#", "max_rps": 2"#);
        let admitted: Vec<Admitted> = (0..5)
            .filter_map(|_| out.admit(0, 1, &mut budget, || 1_000, &mut tally))
            .collect();
        assert_eq!(admitted.len(), 2);
        assert_eq!(tally.get(0, Counter::SkippedRateLimited), 3);
        assert!(out
            .admit(0, 1, &mut budget, || 500_001_000, &mut tally)
            .is_some());
    }
}
