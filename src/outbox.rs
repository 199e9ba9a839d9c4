//! A worker's copies in flight: the limits that admit a complete copy, and the calls
//! awaiting an answer, so that every copy's end is counted exactly once.

use std::collections::HashMap;

use crate::config::Plan;
use crate::limits::{InFlight, TokenBucket};
use crate::metrics::{Counter, Metrics};

#[derive(Debug, Clone)]
struct TargetLimits {
    rate: Option<TokenBucket>,
    /// Copies admitted and not yet ended.
    slots: InFlight,
}

/// Copies admitted and not yet ended.
#[derive(Debug, Default)]
pub struct Outbox {
    limits: Vec<TargetLimits>,
    /// Call token -> target.
    calls: HashMap<u32, usize>,
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
            calls: HashMap::new(),
        }
    }

    /// Admits a complete copy of `target` past `max_rps` and `max_in_flight` (taking
    /// a slot), or counts why not. `now_nanos` is only asked for under a rate limit.
    pub fn admit(
        &mut self,
        target: usize,
        now_nanos: impl FnOnce() -> u64,
        metrics: &mut impl Metrics,
    ) -> bool {
        let Some(limits) = self.limits.get_mut(target) else {
            return false;
        };
        if let Some(bucket) = &mut limits.rate {
            if !bucket.try_take(now_nanos()) {
                metrics.count(target, Counter::SkippedRateLimited);
                return false;
            }
        }
        if !limits.slots.try_reserve() {
            metrics.count(target, Counter::SkippedInFlight);
            return false;
        }
        true
    }

    /// The host accepted the copy as call `token`.
    pub fn sent(&mut self, token: u32, target: usize, metrics: &mut impl Metrics) {
        metrics.count(target, Counter::Dispatched);
        metrics.add_in_flight(target, 1);
        self.calls.insert(token, target);
    }

    /// The host refused the copy.
    pub fn refused(&mut self, target: usize, metrics: &mut impl Metrics) {
        metrics.count(target, Counter::DispatchFailed);
        self.release(target);
    }

    /// Call `token` ended with this `:status` (none: no response). Returns the target
    /// and the counter it went to, or `None` for a call that is not ours.
    pub fn ended(
        &mut self,
        token: u32,
        status: Option<&[u8]>,
        metrics: &mut impl Metrics,
    ) -> Option<(usize, Counter)> {
        let target = self.calls.remove(&token)?;
        let counter = Counter::for_response(status);
        metrics.count(target, counter);
        metrics.add_in_flight(target, -1);
        self.release(target);
        Some((target, counter))
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
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    fn outbox(extra: &str) -> Outbox {
        let json =
            format!(r#"{{"targets": [{{"name": "a", "cluster": "c", "percent": 100{extra}}}]}}"#);
        Outbox::new(&parse(json.as_bytes()).unwrap())
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn every_sent_copy_ends_in_exactly_one_response_counter() {
        let mut out = outbox("");
        let mut tally = Tally::default();
        for token in 10..13 {
            assert!(out.admit(0, || 0, &mut tally));
            out.sent(token, 0, &mut tally);
        }
        assert_eq!(tally.in_flight(0), 3);
        assert_eq!(
            out.ended(10, Some(b"200"), &mut tally),
            Some((0, Counter::Responses2xx))
        );
        assert_eq!(
            out.ended(11, Some(b"503"), &mut tally),
            Some((0, Counter::Responses5xx))
        );
        assert_eq!(
            out.ended(12, None, &mut tally),
            Some((0, Counter::ResponsesFailed))
        );
        assert_eq!(out.ended(12, Some(b"200"), &mut tally), None, "ends once");
        assert_eq!(out.ended(99, Some(b"200"), &mut tally), None, "not ours");
        assert_eq!(tally.get(0, Counter::Dispatched), 3);
        assert_eq!(tally.in_flight(0), 0);
        assert_eq!(out.occupied(0), 0);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn in_flight_limit_drops_and_counts_and_frees_on_end() {
        let mut out = outbox(r#", "max_in_flight": 2"#);
        let mut tally = Tally::default();
        assert!(out.admit(0, || 0, &mut tally));
        assert!(out.admit(0, || 0, &mut tally));
        assert!(!out.admit(0, || 0, &mut tally));
        assert_eq!(tally.get(0, Counter::SkippedInFlight), 1);
        out.sent(1, 0, &mut tally);
        out.refused(0, &mut tally);
        assert_eq!(tally.get(0, Counter::DispatchFailed), 1);
        assert!(out.admit(0, || 0, &mut tally));
        assert!(!out.admit(0, || 0, &mut tally));
        out.ended(1, Some(b"204"), &mut tally);
        assert!(out.admit(0, || 0, &mut tally));
        assert_eq!(tally.get(0, Counter::SkippedInFlight), 2);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn rate_limit_drops_and_counts_and_asks_the_clock_only_when_set() {
        let mut unlimited = outbox("");
        let mut tally = Tally::default();
        assert!(unlimited.admit(0, || panic!("clock read without max_rps"), &mut tally));
        let mut out = outbox(r#", "max_rps": 2"#);
        let admitted = (0..5)
            .filter(|_| out.admit(0, || 1_000, &mut tally))
            .count();
        assert_eq!(admitted, 2);
        assert_eq!(tally.get(0, Counter::SkippedRateLimited), 3);
        assert!(out.admit(0, || 500_001_000, &mut tally));
    }
}
