//! What the filter asks of its host, as small traits: the shell implements them with
//! proxy-wasm calls into Envoy, the tests and the fuzz target with a fake host
//! ([`crate::fake_host`]). With [`crate::request::RequestView`] (a request's headers)
//! and [`crate::metrics::Metrics`] (the stats), they are all the core needs.

/// How a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Why the host refused to send a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It cannot be made: an unknown cluster, or headers without the pseudo-headers.
    BadArgument,
    /// It could not be started: no endpoint, or the cluster's circuit breakers are full.
    InternalFailure,
    /// Any other status.
    Other(u32),
}

impl Refusal {
    /// The host's status code and what it means, for the log.
    pub fn describe(self) -> (u32, &'static str) {
        match self {
            Refusal::BadArgument => (2, "unknown cluster or bad headers"),
            Refusal::InternalFailure => (
                10,
                "no endpoint, or the cluster's circuit breakers are full",
            ),
            Refusal::Other(status) => (status, "see Envoy's log"),
        }
    }
}

/// What a worker's configuration asks of the host: sending a copy, the time, the log.
pub trait Host {
    /// Sends a call to `cluster` with this serialized header map (see [`crate::wire`])
    /// and body (empty: none); its token, under which its answer comes back.
    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[u8],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Refusal>;
    /// Wall-clock time in nanoseconds.
    fn now_nanos(&mut self) -> u64;
    /// Writes a line to the host's log.
    fn log(&mut self, level: Level, message: &str);
}

/// A call's answer, while its end is being counted.
pub trait Answer {
    /// The first value of a header of the answer (`:status` too); `None` when absent or
    /// when the call ended without one.
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// The first value of a trailer of the answer.
    fn trailer(&mut self, name: &str) -> Option<Vec<u8>>;
}
