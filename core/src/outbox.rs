//! A worker's copies in flight: the limits that admit a ready copy, and the copies sent
//! and awaiting their answer, so that every copy's end is known exactly once and every
//! byte it held in `max_in_flight_bytes` comes back. It counts nothing: the lifecycle
//! counts what each step returns.
//!
//! A copy holds, from the moment it is handed to Envoy until it ends, its headers and
//! body (Envoy's copy of them, in its buffers or its sockets' while the mirror reads)
//! and room for its answer (Envoy buffers the whole answer of a call, up to its runtime
//! value that `max_answer_bytes` describes).

use crate::budget::Budget;
use crate::config::Plan;
use crate::id_map::IdMap;
use crate::limits::{InFlight, TokenBucket};
use crate::stats::Counter;

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
pub struct AdmittedCopy {
    target: usize,
    bytes: usize,
}

/// A copy handed to the host, awaiting its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SentCopy {
    target: usize,
    /// Held in `max_in_flight_bytes` until the copy ends.
    bytes: usize,
    /// A gRPC call: its answer's `grpc-status` is counted too.
    grpc: bool,
    /// When it was handed to the host.
    sent_nanos: u64,
}

/// A copy that has ended, out of the outbox (its slot and bytes given back), to be
/// counted by how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an ended copy is counted once"]
pub struct EndedCopy {
    pub target: usize,
    /// A gRPC call: read its answer's `grpc-status`.
    pub grpc: bool,
    sent_nanos: u64,
}

impl EndedCopy {
    /// Milliseconds from handing the copy to the host to `now_nanos` (0 if the clock went
    /// backwards).
    pub fn latency_millis(&self, now_nanos: u64) -> u64 {
        now_nanos.saturating_sub(self.sent_nanos) / NANOS_PER_MILLI
    }
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// Copies admitted and not yet ended.
#[derive(Debug, Default)]
pub struct Outbox {
    limits: Vec<TargetLimits>,
    /// Call token -> the copy sent under it.
    sent: IdMap<SentCopy>,
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
            sent: IdMap::default(),
            max_bytes: plan.max_in_flight_bytes,
            answer_bytes: plan.max_answer_bytes,
        }
    }

    /// Admits a ready copy of `target` whose headers and body take `copy_bytes`, past
    /// `max_rps`, `max_in_flight` and `max_in_flight_bytes` (reserving a slot and the
    /// copy's bytes with room for its answer in `in_flight`); or the counter of the limit
    /// that refused it. `now_nanos` is only asked for under a rate limit.
    pub fn admit(
        &mut self,
        target: usize,
        copy_bytes: usize,
        in_flight: &mut Budget,
        now_nanos: impl FnOnce() -> u64,
    ) -> Result<AdmittedCopy, Counter> {
        let Some(limits) = self.limits.get_mut(target) else {
            return Err(Counter::DispatchFailed);
        };
        if let Some(bucket) = &mut limits.rate {
            if !bucket.try_take(now_nanos()) {
                return Err(Counter::SkippedRateLimited);
            }
        }
        let bytes = copy_bytes.saturating_add(self.answer_bytes);
        if !limits.slots.try_reserve() {
            return Err(Counter::SkippedInFlight);
        }
        if !in_flight.try_reserve(self.max_bytes, bytes) {
            limits.slots.release();
            return Err(Counter::SkippedInFlight);
        }
        Ok(AdmittedCopy { target, bytes })
    }

    /// The host accepted the copy, a gRPC call or not, as call `token` at `now_nanos`.
    pub fn sent(&mut self, token: u32, copy: AdmittedCopy, grpc: bool, now_nanos: u64) {
        self.sent.insert(
            token,
            SentCopy {
                target: copy.target,
                bytes: copy.bytes,
                grpc,
                sent_nanos: now_nanos,
            },
        );
    }

    /// The host refused the copy: its slot and bytes come back.
    pub fn refused(&mut self, copy: AdmittedCopy, in_flight: &mut Budget) {
        self.release(copy.target);
        in_flight.release(copy.bytes);
    }

    /// Call `token` ended: its slot and bytes come back. `None` for a call that is not
    /// ours (or ended already).
    pub fn end(&mut self, token: u32, in_flight: &mut Budget) -> Option<EndedCopy> {
        let copy = self.sent.remove(&token)?;
        self.release(copy.target);
        in_flight.release(copy.bytes);
        Some(EndedCopy {
            target: copy.target,
            grpc: copy.grpc,
            sent_nanos: copy.sent_nanos,
        })
    }

    /// Copies sent and not yet ended.
    pub fn sent_in_flight(&self) -> usize {
        self.sent.len()
    }

    /// Copies of a target admitted and not yet ended.
    pub fn occupied(&self, target: usize) -> u32 {
        self.limits.get(target).map_or(0, |l| l.slots.current())
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
    use wasm_bindgen_test::wasm_bindgen_test;

    fn outbox(top: &str, extra: &str) -> Outbox {
        let json = format!(
            r#"{{{top}"targets": [{{"name": "a", "cluster": "c", "percent": 100{extra}}}]}}"#
        );
        Outbox::new(&parse(json.as_bytes()).unwrap())
    }

    /// Admits a copy of 100 bytes at time 0.
    fn admit(out: &mut Outbox, budget: &mut Budget) -> Result<AdmittedCopy, Counter> {
        out.admit(0, 100, budget, || 0)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_sent_copy_ends_exactly_once_and_gives_its_bytes_back() {
        let mut out = outbox("", "");
        let mut budget = Budget::new();
        for token in 10..13 {
            let copy = admit(&mut out, &mut budget).unwrap();
            out.sent(token, copy, false, 0);
        }
        assert_eq!(out.sent_in_flight(), 3);
        assert_eq!(budget.held(), 3 * (100 + 65_536));
        for token in 10..13 {
            assert_eq!(out.end(token, &mut budget).map(|c| c.target), Some(0));
        }
        assert_eq!(out.end(12, &mut budget), None, "ends once");
        assert_eq!(out.end(99, &mut budget), None, "not ours");
        assert_eq!(out.sent_in_flight(), 0);
        assert_eq!(out.occupied(0), 0);
        assert_eq!(budget.held(), 0, "every byte comes back");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_ended_copy_knows_whether_it_is_grpc_and_its_latency() {
        let mut out = outbox("", "");
        let mut budget = Budget::new();
        const MS: u64 = 1_000_000;
        for (token, grpc) in [(1, true), (2, false)] {
            let copy = admit(&mut out, &mut budget).unwrap();
            out.sent(token, copy, grpc, 1000 * MS);
        }
        let grpc = out.end(1, &mut budget).unwrap();
        assert!(grpc.grpc);
        assert_eq!(grpc.latency_millis(1250 * MS), 250);
        assert_eq!(grpc.latency_millis(1003 * MS + MS / 2), 3);
        let plain = out.end(2, &mut budget).unwrap();
        assert!(!plain.grpc);
        assert_eq!(
            plain.latency_millis(999 * MS),
            0,
            "the clock went backwards"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn in_flight_limit_refuses_and_frees_a_slot_on_end() {
        let mut out = outbox("", r#", "max_in_flight": 2"#);
        let mut budget = Budget::new();
        let first = admit(&mut out, &mut budget).unwrap();
        let second = admit(&mut out, &mut budget).unwrap();
        assert_eq!(admit(&mut out, &mut budget), Err(Counter::SkippedInFlight));
        out.sent(1, first, false, 0);
        out.refused(second, &mut budget);
        let third = admit(&mut out, &mut budget).unwrap();
        assert_eq!(admit(&mut out, &mut budget), Err(Counter::SkippedInFlight));
        let _ = out.end(1, &mut budget);
        assert!(admit(&mut out, &mut budget).is_ok());
        out.refused(third, &mut budget);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn in_flight_bytes_count_headers_body_and_room_for_the_answer() {
        // Room for two copies of 100 bytes with 400 for each answer, not three.
        let mut out = outbox(
            r#""max_in_flight_bytes": 1000, "max_answer_bytes": 400, "#,
            r#", "max_body_bytes": 0"#,
        );
        let mut budget = Budget::new();
        let first = admit(&mut out, &mut budget).unwrap();
        let second = admit(&mut out, &mut budget).unwrap();
        assert_eq!(budget.held(), 1000);
        assert_eq!(admit(&mut out, &mut budget), Err(Counter::SkippedInFlight));
        assert_eq!(
            out.occupied(0),
            2,
            "a copy refused for its bytes keeps no slot"
        );
        // A smaller copy does not fit either: the budget is full.
        assert!(out.admit(0, 0, &mut budget, || 0).is_err());
        out.sent(7, first, false, 0);
        out.refused(second, &mut budget);
        assert_eq!(budget.held(), 500);
        assert!(out.admit(0, 600, &mut budget, || 0).is_err());
        let fits = out.admit(0, 100, &mut budget, || 0).unwrap();
        out.sent(8, fits, false, 0);
        let _ = out.end(7, &mut budget);
        let _ = out.end(8, &mut budget);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.peak(), 1000);
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
        let big = old.admit(0, 5000, &mut budget, || 0).unwrap();
        old.sent(1, big, false, 0);
        assert!(new.admit(0, 1, &mut budget, || 0).is_err());
        let _ = old.end(1, &mut budget);
        assert!(new.admit(0, 1000, &mut budget, || 0).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rate_limit_refuses_and_asks_the_clock_only_when_set() {
        let mut budget = Budget::new();
        let mut unlimited = outbox("", "");
        let copy = unlimited.admit(0, 1, &mut budget, || panic!("clock read without max_rps"));
        unlimited.refused(copy.unwrap(), &mut budget);
        let mut out = outbox("", r#", "max_rps": 2"#);
        let outcomes: Vec<bool> = (0..5)
            .map(|_| match out.admit(0, 1, &mut budget, || 1_000) {
                Ok(copy) => {
                    out.refused(copy, &mut budget);
                    true
                }
                Err(counter) => {
                    assert_eq!(counter, Counter::SkippedRateLimited);
                    false
                }
            })
            .collect();
        assert_eq!(outcomes, [true, true, false, false, false]);
        assert!(out.admit(0, 1, &mut budget, || 500_001_000).is_ok());
    }
}
