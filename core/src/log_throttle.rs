//! Failure logging at most once a minute per target and reason, so a broken mirror
//! never floods Envoy's log. The one throttle of the filter: the copies' failures (per
//! target), and the host's (its calls, its stats), which the shell logs.

const WINDOW_NANOS: u64 = 60 * 1_000_000_000;

/// Why a copy failed, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `dispatch_http_call` was refused (unknown cluster, bad headers, ...).
    DispatchRefused,
    /// The copy ended without a response (reset).
    NoResponse,
    /// The mirror answered 5xx (Envoy's own 503 for a refused connection, 504 for a timeout).
    ServerError,
    /// An answer longer than `max_answer_bytes` arrived whole: Envoy's answer buffer is
    /// not limited to it (its runtime value is not set).
    AnswerNotLimited,
    /// A gRPC mirror answered with a status other than OK.
    GrpcError,
    /// A host call failed (its value is treated as absent).
    HostCall,
    /// Updating a stat failed.
    StatUpdate,
}

impl Failure {
    const COUNT: usize = 7;

    fn index(self) -> usize {
        self as usize
    }
}

/// Remembers when each (target, reason) was last logged.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    last: Vec<[Option<u64>; Failure::COUNT]>,
}

impl LogThrottle {
    pub fn new(targets: usize) -> Self {
        LogThrottle {
            last: vec![[None; Failure::COUNT]; targets],
        }
    }

    /// Whether a failure of this kind may be logged now; if so, the minute starts over.
    pub fn allow(&mut self, target: usize, failure: Failure, now_nanos: u64) -> bool {
        let Some(slot) = self
            .last
            .get_mut(target)
            .and_then(|reasons| reasons.get_mut(failure.index()))
        else {
            return false;
        };
        match *slot {
            Some(last) if now_nanos.saturating_sub(last) < WINDOW_NANOS => false,
            _ => {
                *slot = Some(now_nanos);
                true
            }
        }
    }
}

/// At most a number of lines a minute per target (a comparing target's mismatches).
#[derive(Debug, Clone)]
pub struct MinuteQuota {
    /// Per target: when its minute began, and the lines logged in it.
    windows: Vec<(u64, u32)>,
}

impl MinuteQuota {
    pub fn new(targets: usize) -> Self {
        MinuteQuota {
            windows: vec![(0, 0); targets],
        }
    }

    /// Whether one more line of `target` may be logged now, at most `per_minute` a
    /// minute; if so, it is counted.
    pub fn allow(&mut self, target: usize, per_minute: u32, now_nanos: u64) -> bool {
        let Some((start, logged)) = self.windows.get_mut(target) else {
            return false;
        };
        if now_nanos.saturating_sub(*start) >= WINDOW_NANOS || *logged == 0 {
            *start = now_nanos;
            *logged = 0;
        }
        if *logged >= per_minute {
            return false;
        }
        *logged += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn logs_once_a_minute_per_target_and_reason() {
        let mut throttle = LogThrottle::new(2);
        let t0 = 5_000_000_000;
        assert!(throttle.allow(0, Failure::NoResponse, t0));
        assert!(!throttle.allow(0, Failure::NoResponse, t0 + 59_000_000_000));
        assert!(throttle.allow(0, Failure::ServerError, t0));
        assert!(throttle.allow(0, Failure::AnswerNotLimited, t0));
        assert!(!throttle.allow(0, Failure::AnswerNotLimited, t0 + 1));
        assert!(throttle.allow(1, Failure::NoResponse, t0));
        assert!(throttle.allow(0, Failure::NoResponse, t0 + WINDOW_NANOS));
        assert!(!throttle.allow(2, Failure::NoResponse, t0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_quota_allows_so_many_a_minute_per_target() {
        let mut quota = MinuteQuota::new(2);
        let t0 = 7_000_000_000;
        assert!((0..3).all(|_| quota.allow(0, 3, t0)));
        assert!(!quota.allow(0, 3, t0 + 59_000_000_000));
        assert!(quota.allow(1, 3, t0));
        assert!(quota.allow(0, 3, t0 + WINDOW_NANOS));
        assert!(!quota.allow(0, 0, t0 + 3 * WINDOW_NANOS), "0: never");
        assert!(!quota.allow(5, 3, t0));
    }
}
