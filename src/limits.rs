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
