//! Metric names and the small trait the shell implements to record them.

/// The per-target counters of the specification, in the order of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Requests,
    Sampled,
    Dispatched,
    SkippedLoop,
    SkippedMissingKey,
    SkippedBodyTooLarge,
    SkippedRateLimited,
    SkippedInFlight,
    DispatchFailed,
    Responses2xx,
    Responses3xx,
    Responses4xx,
    Responses5xx,
    ResponsesFailed,
}

impl Counter {
    pub const ALL: [Counter; 14] = [
        Counter::Requests,
        Counter::Sampled,
        Counter::Dispatched,
        Counter::SkippedLoop,
        Counter::SkippedMissingKey,
        Counter::SkippedBodyTooLarge,
        Counter::SkippedRateLimited,
        Counter::SkippedInFlight,
        Counter::DispatchFailed,
        Counter::Responses2xx,
        Counter::Responses3xx,
        Counter::Responses4xx,
        Counter::Responses5xx,
        Counter::ResponsesFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "requests",
            Counter::Sampled => "sampled",
            Counter::Dispatched => "dispatched",
            Counter::SkippedLoop => "skipped_loop",
            Counter::SkippedMissingKey => "skipped_missing_key",
            Counter::SkippedBodyTooLarge => "skipped_body_too_large",
            Counter::SkippedRateLimited => "skipped_rate_limited",
            Counter::SkippedInFlight => "skipped_in_flight",
            Counter::DispatchFailed => "dispatch_failed",
            Counter::Responses2xx => "responses_2xx",
            Counter::Responses3xx => "responses_3xx",
            Counter::Responses4xx => "responses_4xx",
            Counter::Responses5xx => "responses_5xx",
            Counter::ResponsesFailed => "responses_failed",
        }
    }

    /// The counter a copy's end goes to: its status class, or `responses_failed`
    /// when it ended without a (valid) status.
    pub fn for_response(status: Option<&[u8]>) -> Counter {
        let code = status
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        match code {
            Some(200..=299) => Counter::Responses2xx,
            Some(300..=399) => Counter::Responses3xx,
            Some(400..=499) => Counter::Responses4xx,
            Some(500..=599) => Counter::Responses5xx,
            _ => Counter::ResponsesFailed,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The name of the `in_flight` gauge.
pub const IN_FLIGHT: &str = "in_flight";

/// The metric name the plugin defines; Envoy prefixes it with `wasmcustom.`.
pub fn metric_name(target: &str, metric: &str) -> String {
    format!("traffic_mirror.{target}.{metric}")
}

/// Where counts go: Envoy stats in the shell, a plain table in tests.
pub trait Metrics {
    fn count(&mut self, target: usize, counter: Counter);
    fn add_in_flight(&mut self, target: usize, delta: i64);
}
