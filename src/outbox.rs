//! The root context's side of mirroring, one per worker: the limits that admit a
//! complete copy, the queue of copies waiting for the root to send them, and the calls
//! in flight, so that every copy's end is counted exactly once.

use std::collections::{HashMap, VecDeque};

use crate::capture::ReadyCopy;
use crate::config::Plan;
use crate::limits::{InFlight, TokenBucket};
use crate::metrics::{Counter, Metrics};

#[derive(Debug, Clone)]
struct TargetLimits {
    rate: Option<TokenBucket>,
    /// Copies queued or awaiting a response.
    slots: InFlight,
}

/// Copies admitted and not yet ended.
#[derive(Debug, Default)]
pub struct Outbox {
    limits: Vec<TargetLimits>,
    queue: VecDeque<ReadyCopy>,
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
            queue: VecDeque::new(),
            calls: HashMap::new(),
        }
    }

    /// Admits a complete copy past `max_in_flight` and `max_rps`, or drops and counts it.
    /// `now_nanos` is only asked for when the target has a rate limit.
    pub fn offer(
        &mut self,
        copy: ReadyCopy,
        now_nanos: impl FnOnce() -> u64,
        metrics: &mut impl Metrics,
    ) -> bool {
        let Some(limits) = self.limits.get_mut(copy.target) else {
            return false;
        };
        if let Some(bucket) = &mut limits.rate {
            if !bucket.try_take(now_nanos()) {
                metrics.count(copy.target, Counter::SkippedRateLimited);
                return false;
            }
        }
        if !limits.slots.try_reserve() {
            metrics.count(copy.target, Counter::SkippedInFlight);
            return false;
        }
        self.queue.push_back(copy);
        true
    }

    /// Whether copies wait to be sent.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The next copy to send.
    pub fn next(&mut self) -> Option<ReadyCopy> {
        self.queue.pop_front()
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

    /// Copies of a target queued or awaiting a response.
    pub fn occupied(&self, target: usize) -> u32 {
        self.limits.get(target).map_or(0, |l| l.slots.current())
    }

    fn release(&mut self, target: usize) {
        if let Some(limits) = self.limits.get_mut(target) {
            limits.slots.release();
        }
    }
}
