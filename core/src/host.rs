//! What the filter asks of its host, in the host's own terms: the proxy-wasm ABI 0.2.1
//! calls the filter makes, one method each, with the ABI's kinds as typed values and its
//! statuses as errors. The module implements it with the ABI, one host function a
//! method and nothing else; the tests, the fuzz targets and the emulator with a fake
//! host (`testing`, feature `testing`). What the filter makes of each answer, and of
//! each failure, is the core's: [`Env`].

use crate::log_throttle::{Failure, LogThrottle};

/// A header map of the host (`proxy_get_header_map_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MapType {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

impl MapType {
    pub const ALL: [MapType; 6] = [
        MapType::RequestHeaders,
        MapType::RequestTrailers,
        MapType::ResponseHeaders,
        MapType::ResponseTrailers,
        MapType::HttpCallResponseHeaders,
        MapType::HttpCallResponseTrailers,
    ];

    /// The ABI's number for a map, back to its kind.
    pub fn from_abi(value: u32) -> Option<MapType> {
        MapType::ALL.into_iter().find(|m| *m as u32 == value)
    }
}

/// A buffer of the host (`proxy_get_buffer_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    HttpCallResponseBody = 4,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

impl BufferType {
    pub const ALL: [BufferType; 5] = [
        BufferType::HttpRequestBody,
        BufferType::HttpResponseBody,
        BufferType::HttpCallResponseBody,
        BufferType::VmConfiguration,
        BufferType::PluginConfiguration,
    ];

    pub fn from_abi(value: u32) -> Option<BufferType> {
        BufferType::ALL.into_iter().find(|b| *b as u32 == value)
    }
}

/// A kind of stat (`proxy_define_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricType {
    pub fn from_abi(value: u32) -> Option<MetricType> {
        [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
        ]
        .into_iter()
        .find(|m| *m as u32 == value)
    }
}

/// How a log line matters (`proxy_log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub fn from_abi(value: u32) -> Option<LogLevel> {
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical,
        ]
        .into_iter()
        .find(|l| *l as u32 == value)
    }
}

/// A host call's status other than OK (the ABI's `WasmResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    NotFound,
    /// A call that cannot be made: an unknown cluster, headers without the
    /// pseudo-headers.
    BadArgument,
    /// A call that could not be started: no endpoint, the cluster's circuit breakers
    /// full.
    InternalFailure,
    /// Any other status, by its number.
    Other(u32),
}

impl Status {
    /// The ABI's status for a number other than 0 (OK).
    pub fn from_abi(value: u32) -> Status {
        match value {
            1 => Status::NotFound,
            2 => Status::BadArgument,
            10 => Status::InternalFailure,
            other => Status::Other(other),
        }
    }

    /// The ABI's number.
    pub fn code(self) -> u32 {
        match self {
            Status::NotFound => 1,
            Status::BadArgument => 2,
            Status::InternalFailure => 10,
            Status::Other(code) => code,
        }
    }

    /// What a refused `http_call` means, for the log.
    pub fn refusal(self) -> &'static str {
        match self {
            Status::BadArgument => "unknown cluster or bad headers",
            Status::InternalFailure => "no endpoint, or the cluster's circuit breakers are full",
            _ => "see Envoy's log",
        }
    }
}

/// The host functions the filter calls, as the ABI defines them (the current context is
/// the one the host called the filter for). Implemented by the module with the ABI, one
/// host function a method; by the tests with `testing::FakeHost`.
pub trait Host {
    /// `proxy_log`.
    fn log(&mut self, level: LogLevel, message: &str);
    /// `proxy_get_current_time_nanoseconds`: wall-clock time.
    fn now_nanos(&mut self) -> Result<u64, Status>;
    /// `proxy_get_header_map_pairs`: a whole map, serialized (see [`crate::wire`]).
    fn header_map(&mut self, map: MapType) -> Result<Vec<u8>, Status>;
    /// `proxy_get_header_map_value`: the first value of a header (`Ok(None)`: absent).
    fn header(&mut self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status>;
    /// `proxy_replace_header_map_value`: sets a header, replacing every value it had.
    fn replace_header(&mut self, map: MapType, name: &str, value: &[u8]) -> Result<(), Status>;
    /// `proxy_remove_header_map_value`: removes a header, every value (absent: `Ok`).
    fn remove_header(&mut self, map: MapType, name: &str) -> Result<(), Status>;
    /// `proxy_get_buffer_bytes`: up to `max_size` bytes of a buffer from `start`
    /// (absent: empty).
    fn buffer(
        &mut self,
        buffer: BufferType,
        start: usize,
        max_size: usize,
    ) -> Result<Vec<u8>, Status>;
    /// `proxy_http_call`: sends a call to `cluster` with a serialized header map and a
    /// body (empty: none), no trailers; the call's token, under which its answer comes
    /// back to the calling context's root.
    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[u8],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status>;
    /// `proxy_define_metric`: a stat's id (Envoy's name: `wasmcustom.` + `name`).
    fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32, Status>;
    /// `proxy_increment_metric`: a counter or a gauge.
    fn increment_metric(&mut self, id: u32, offset: i64) -> Result<(), Status>;
    /// `proxy_record_metric`: a histogram's value (or a gauge set).
    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), Status>;
    /// `proxy_done`: the current root context, which answered `proxy_on_done` with "not
    /// yet", is done now.
    fn done(&mut self) -> Result<(), Status>;
    /// A seed for the random draws (`sample_by` random, `on_missing_key` random): not a
    /// proxy-wasm call; the module reads it from WASI's `random_get`.
    fn random_seed(&mut self) -> u64;
}

/// The host as the core calls it: a failed call is logged, at most once a minute per
/// kind per VM, and the filter goes on without its value; nothing of it reaches the
/// client.
pub struct Env<H> {
    host: H,
    /// When each kind of failure was last logged.
    failures: LogThrottle,
}

impl<H: Host> Env<H> {
    pub fn new(host: H) -> Self {
        Env {
            host,
            failures: LogThrottle::new(1),
        }
    }

    /// The host itself.
    pub fn host(&mut self) -> &mut H {
        &mut self.host
    }

    /// The host, to read only.
    pub fn host_ref(&self) -> &H {
        &self.host
    }

    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.host.log(level, message);
    }

    /// The time; 0 when the host cannot tell.
    pub fn now_nanos(&mut self) -> u64 {
        self.host.now_nanos().unwrap_or(0)
    }

    /// Logs a failed host call (`what` failed), at most once a minute.
    pub fn failed(&mut self, what: &str, status: Status) {
        self.failed_as(Failure::HostCall, what, status);
    }

    fn failed_as(&mut self, kind: Failure, what: &str, status: Status) {
        let now = self.now_nanos();
        if self.failures.allow(0, kind, now) {
            let level = match kind {
                Failure::StatUpdate => LogLevel::Error,
                _ => LogLevel::Warn,
            };
            self.host.log(
                level,
                &format!(
                    "traffic-mirror: {what} failed with status {}; logged at most once a minute",
                    status.code()
                ),
            );
        }
    }

    /// Logs a failed stat update or definition, at most once a minute.
    pub fn stat_failed(&mut self, status: Status) {
        self.failed_as(Failure::StatUpdate, "updating a stat", status);
    }

    /// Adds `offset` to a counter or a gauge.
    pub fn increment(&mut self, id: u32, offset: i64) {
        if let Err(status) = self.host.increment_metric(id, offset) {
            self.stat_failed(status);
        }
    }

    /// Records a histogram's value.
    pub fn record(&mut self, id: u32, value: u64) {
        if let Err(status) = self.host.record_metric(id, value) {
            self.stat_failed(status);
        }
    }

    /// A header of a map; absent when the host cannot give it (`what`: for the log).
    pub fn header(&mut self, map: MapType, name: &str, what: &str) -> Option<Vec<u8>> {
        self.host.header(map, name).unwrap_or_else(|status| {
            self.failed(what, status);
            None
        })
    }

    /// A whole header map; empty when the host cannot give it.
    pub fn header_map(&mut self, map: MapType, what: &str) -> Vec<u8> {
        self.host.header_map(map).unwrap_or_else(|status| {
            self.failed(what, status);
            Vec::new()
        })
    }

    /// Sets a header (`Some`) or removes it (`None`); whether the host did.
    pub fn write_header(
        &mut self,
        map: MapType,
        name: &str,
        value: Option<&[u8]>,
        what: &str,
    ) -> bool {
        let written = match value {
            Some(value) => self.host.replace_header(map, name, value),
            None => self.host.remove_header(map, name),
        };
        match written {
            Ok(()) => true,
            Err(status) => {
                self.failed(what, status);
                false
            }
        }
    }

    /// A buffer's bytes; `None` when the host cannot give them.
    pub fn buffer(&mut self, buffer: BufferType, size: usize, what: &str) -> Option<Vec<u8>> {
        self.host
            .buffer(buffer, 0, size)
            .map_err(|status| self.failed(what, status))
            .ok()
    }
}
