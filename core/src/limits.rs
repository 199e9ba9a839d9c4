//! Per-worker limits: a token bucket for `max_rps` and a count of copies in flight
//! for `max_in_flight`. Past a limit a copy is dropped, never queued.

const NANOS_PER_SECOND: f64 = 1e9;

/// Token bucket with burst `max(1, rate)`, starting full.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_nanos: Option<u64>,
}

impl TokenBucket {
    pub fn new(rate_per_second: f64) -> Self {
        let burst = rate_per_second.max(1.0);
        TokenBucket {
            rate: rate_per_second,
            burst,
            tokens: burst,
            last_nanos: None,
        }
    }

    /// Takes one token if there is one at time `now_nanos`.
    pub fn try_take(&mut self, now_nanos: u64) -> bool {
        if let Some(last) = self.last_nanos {
            let elapsed = now_nanos.saturating_sub(last) as f64 / NANOS_PER_SECOND;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last_nanos = Some(self.last_nanos.map_or(now_nanos, |l| l.max(now_nanos)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Copies handed over and not yet ended, against `max_in_flight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    current: u32,
    max: u32,
}

impl InFlight {
    pub fn new(max: u32) -> Self {
        InFlight { current: 0, max }
    }

    /// Reserves a slot if one is free.
    pub fn try_reserve(&mut self) -> bool {
        if self.current < self.max {
            self.current += 1;
            true
        } else {
            false
        }
    }

    pub fn release(&mut self) {
        self.current = self.current.saturating_sub(1);
    }

    pub fn current(&self) -> u32 {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SECOND: u64 = 1_000_000_000;

    #[wasm_bindgen_test(unsupported = test)]
    fn bucket_starts_full_with_burst_of_rate_and_refills() {
        let mut bucket = TokenBucket::new(5.0);
        let t0 = 100 * SECOND;
        assert_eq!((0..10).filter(|_| bucket.try_take(t0)).count(), 5);
        assert!(!bucket.try_take(t0 + SECOND / 10));
        assert!(bucket.try_take(t0 + SECOND / 5));
        // A long pause refills only up to the burst.
        assert_eq!(
            (0..10)
                .filter(|_| bucket.try_take(t0 + 60 * SECOND))
                .count(),
            5
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fractional_rate_has_a_burst_of_one() {
        let mut bucket = TokenBucket::new(0.5);
        assert!(bucket.try_take(0));
        assert!(!bucket.try_take(SECOND));
        assert!(bucket.try_take(2 * SECOND));
        // Time going backwards never mints tokens.
        assert!(!bucket.try_take(SECOND));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn in_flight_refuses_past_max_and_frees_on_release() {
        let mut slots = InFlight::new(2);
        assert!(slots.try_reserve());
        assert!(slots.try_reserve());
        assert!(!slots.try_reserve());
        slots.release();
        assert_eq!(slots.current(), 1);
        assert!(slots.try_reserve());
        slots.release();
        slots.release();
        slots.release();
        assert_eq!(slots.current(), 0);
    }
}
