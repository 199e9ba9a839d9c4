//! The host, faked, and Envoy's part played, for the tests, the fuzz targets and the
//! emulator (feature `testing`; never in the module).
//!
//! - [`FakeHost`] implements [`Host`]: it holds what Envoy would (each request's headers
//!   and body chunk, the plugin configuration, a call's answer, the stats by name, a
//!   clock, the log) and records every call the filter makes, in order ([`Call`]).
//! - [`Exports`] is what a host calls in a filter, the proxy-wasm callbacks. The core's
//!   [`Vm`] implements it natively; the emulator implements it with the built module, its
//!   imports answered by the same [`FakeHost`]. So one scenario runs on both, and the
//!   calls each made can be compared one for one.
//! - [`Envoy`] drives a filter through [`Exports`] as Envoy does: contexts created,
//!   configured, requests' headers and body chunks, answers delivered to the root that
//!   sent the call, contexts done.

use std::collections::BTreeMap;
use std::fmt;

use crate::host::{BufferType, Host, LogLevel, MapType, MetricType, Status};
use crate::lifecycle::Vm;
use crate::wire;

/// A header as the fake host holds it.
pub type Header = (String, Vec<u8>);

/// One call the filter made to the host, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Log(LogLevel, String),
    Now,
    HeaderMap(MapType),
    Header(MapType, String),
    ReplaceHeader(MapType, String, Vec<u8>),
    RemoveHeader(MapType, String),
    Buffer(BufferType, usize, usize),
    HttpCall(String),
    Define(MetricType, String),
    /// By the stat's name.
    Increment(String, i64),
    Record(String, u64),
    Done,
}

impl fmt::Display for Call {
    /// One short line: `increment traffic_mirror.a.requests +1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Log(level, line) => write!(f, "log {level:?}: {line}"),
            Call::Now => write!(f, "now"),
            Call::HeaderMap(map) => write!(f, "header_map {map:?}"),
            Call::Header(map, name) => write!(f, "header {map:?} {name}"),
            Call::ReplaceHeader(map, name, value) => write!(
                f,
                "replace_header {map:?} {name}: {}",
                String::from_utf8_lossy(value)
            ),
            Call::RemoveHeader(map, name) => write!(f, "remove_header {map:?} {name}"),
            Call::Buffer(buffer, start, size) => write!(f, "buffer {buffer:?} {start}+{size}"),
            Call::HttpCall(cluster) => write!(f, "http_call {cluster}"),
            Call::Define(kind, name) => write!(f, "define {kind:?} {name}"),
            Call::Increment(name, offset) => write!(f, "increment {name} {offset:+}"),
            Call::Record(name, value) => write!(f, "record {name} {value}"),
            Call::Done => write!(f, "done"),
        }
    }
}

/// A call the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCall {
    pub token: u32,
    /// The context that sent it (its answer goes to that context's root).
    pub context: u32,
    pub cluster: String,
    /// The copy's headers, in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

impl SentCall {
    /// The first value of a header of the copy.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// A request as the host holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeRequest {
    pub headers: Vec<Header>,
    /// The body chunk passing now.
    pub chunk: Vec<u8>,
    /// The primary's response headers, trailers and the body chunk passing now.
    pub response_headers: Vec<Header>,
    pub response_trailers: Vec<Header>,
    pub response_chunk: Vec<u8>,
}

/// A call's answer: its headers (`:status` among them) and trailers. No headers at all:
/// the call ended without a complete answer (a reset, an answer cut at the buffer limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAnswer {
    pub headers: Vec<Header>,
    pub trailers: Vec<Header>,
    pub body: Vec<u8>,
}

impl FakeAnswer {
    /// An answer with this status.
    pub fn status(code: u16) -> Self {
        FakeAnswer {
            headers: vec![
                (":status".to_string(), code.to_string().into_bytes()),
                // What Envoy's router sets on every answer that came from the mirror.
                ("x-envoy-upstream-service-time".to_string(), b"1".to_vec()),
            ],
            trailers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// No answer: the call ended without one.
    pub fn none() -> Self {
        FakeAnswer::default()
    }

    /// One of Envoy's own answers (a refused connection's 503, a timeout's 504): no
    /// `x-envoy-upstream-service-time`.
    pub fn from_envoy(code: u16) -> Self {
        FakeAnswer {
            headers: vec![
                (":status".to_string(), code.to_string().into_bytes()),
                ("content-type".to_string(), b"text/plain".to_vec()),
            ],
            ..FakeAnswer::default()
        }
    }

    /// With this body.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }
}

/// A stat as the host holds it, by name (several ids may name one stat, as in Envoy, which
/// gives each definition a new id).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    kind: MetricType,
    name: String,
    value: i64,
    samples: Vec<u64>,
}

/// The host: what it holds for the filter, and every call the filter made.
#[derive(Debug, Clone)]
pub struct FakeHost {
    /// The context the host is calling the filter for (the "effective context").
    pub context: u32,
    /// Every call the filter made, in order.
    pub calls: Vec<Call>,
    /// Each request's headers and body chunk, by context.
    pub requests: BTreeMap<u32, FakeRequest>,
    /// The plugin configuration of each root, by context.
    pub configurations: BTreeMap<u32, Vec<u8>>,
    /// The answer being delivered.
    pub answer: FakeAnswer,
    /// Every call sent, in order.
    pub sent: Vec<SentCall>,
    /// While set, every call is refused so.
    pub refuse: Option<Status>,
    /// Host functions (by their ABI name, `proxy_increment_metric`) that fail so.
    pub failing: BTreeMap<&'static str, Status>,
    /// The clock, in nanoseconds.
    pub now_nanos: u64,
    /// The random seed handed out.
    pub seed: u64,
    /// Roots that said they are done (`proxy_done`).
    pub done: Vec<u32>,
    stats: Vec<Stat>,
    /// A stat id -> its index in `stats`.
    ids: Vec<usize>,
    next_token: u32,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost::new()
    }
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost {
            context: 0,
            calls: Vec::new(),
            requests: BTreeMap::new(),
            configurations: BTreeMap::new(),
            answer: FakeAnswer::default(),
            sent: Vec::new(),
            refuse: None,
            failing: BTreeMap::new(),
            now_nanos: 1_000_000_000,
            seed: 7,
            done: Vec::new(),
            stats: Vec::new(),
            ids: Vec::new(),
            next_token: 0,
        }
    }

    /// Moves the clock on.
    pub fn advance_millis(&mut self, millis: u64) {
        self.now_nanos += millis * 1_000_000;
    }

    /// Lines logged that contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log_lines()
            .filter(|(_, line)| line.contains(text))
            .count()
    }

    /// Every line logged, in order.
    pub fn log_lines(&self) -> impl Iterator<Item = (LogLevel, &str)> {
        self.calls.iter().filter_map(|call| match call {
            Call::Log(level, line) => Some((*level, line.as_str())),
            _ => None,
        })
    }

    /// The calls made since `mark` (a length of [`FakeHost::calls`]), one line each.
    pub fn calls_since(&self, mark: usize) -> Vec<String> {
        self.calls
            .get(mark..)
            .unwrap_or_default()
            .iter()
            .map(Call::to_string)
            .collect()
    }

    /// A counter's or a gauge's value by its name (without Envoy's `wasmcustom.`); 0 for
    /// a stat never defined.
    pub fn stat(&self, name: &str) -> i64 {
        self.stats
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.value)
    }

    /// A histogram's values, in order.
    pub fn histogram(&self, name: &str) -> &[u64] {
        self.stats
            .iter()
            .find(|s| s.name == name)
            .map_or(&[], |s| s.samples.as_slice())
    }

    /// Whether a stat of this name was defined.
    pub fn has_stat(&self, name: &str) -> bool {
        self.stats.iter().any(|s| s.name == name)
    }

    /// Every stat's name and kind, in the order first defined.
    pub fn stat_names(&self) -> Vec<(MetricType, &str)> {
        self.stats
            .iter()
            .map(|s| (s.kind, s.name.as_str()))
            .collect()
    }

    /// A target's counter or gauge (`traffic_mirror.<target>.<name>`).
    pub fn target_stat(&self, target: &str, name: &str) -> i64 {
        self.stat(&format!("traffic_mirror.{target}.{name}"))
    }

    fn fails(&self, function: &str) -> Result<(), Status> {
        match self.failing.get(function) {
            Some(&status) => Err(status),
            None => Ok(()),
        }
    }

    fn stat_mut(&mut self, id: u32) -> Result<&mut Stat, Status> {
        let index = usize::try_from(id)
            .ok()
            .and_then(|id| self.ids.get(id))
            .copied()
            .ok_or(Status::NotFound)?;
        self.stats.get_mut(index).ok_or(Status::NotFound)
    }

    fn stat_name(&self, id: u32) -> String {
        usize::try_from(id)
            .ok()
            .and_then(|id| self.ids.get(id))
            .and_then(|&index| self.stats.get(index))
            .map_or_else(|| format!("#{id}"), |s| s.name.clone())
    }

    fn map(&self, map: MapType) -> Option<&[Header]> {
        match map {
            MapType::RequestHeaders => self
                .requests
                .get(&self.context)
                .map(|r| r.headers.as_slice()),
            MapType::ResponseHeaders => self
                .requests
                .get(&self.context)
                .map(|r| r.response_headers.as_slice()),
            MapType::ResponseTrailers => self
                .requests
                .get(&self.context)
                .map(|r| r.response_trailers.as_slice()),
            MapType::HttpCallResponseHeaders => Some(&self.answer.headers),
            MapType::HttpCallResponseTrailers => Some(&self.answer.trailers),
            _ => None,
        }
    }
}

impl Host for FakeHost {
    fn log(&mut self, level: LogLevel, message: &str) {
        self.calls.push(Call::Log(level, message.to_string()));
    }

    fn now_nanos(&mut self) -> Result<u64, Status> {
        self.calls.push(Call::Now);
        self.fails("proxy_get_current_time_nanoseconds")?;
        Ok(self.now_nanos)
    }

    fn header_map(&mut self, map: MapType) -> Result<Vec<u8>, Status> {
        self.calls.push(Call::HeaderMap(map));
        self.fails("proxy_get_header_map_pairs")?;
        let headers = self.map(map).ok_or(Status::NotFound)?;
        let pairs: Vec<wire::Pair> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_slice()))
            .collect();
        Ok(wire::serialize(&pairs))
    }

    fn header(&mut self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
        self.calls.push(Call::Header(map, name.to_string()));
        self.fails("proxy_get_header_map_value")?;
        Ok(self
            .map(map)
            .and_then(|headers| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.clone()))
    }

    fn replace_header(&mut self, map: MapType, name: &str, value: &[u8]) -> Result<(), Status> {
        self.calls
            .push(Call::ReplaceHeader(map, name.to_string(), value.to_vec()));
        self.fails("proxy_replace_header_map_value")?;
        let context = self.context;
        let request = self
            .requests
            .get_mut(&context)
            .filter(|_| map == MapType::RequestHeaders)
            .ok_or(Status::NotFound)?;
        request
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        request
            .headers
            .push((name.to_ascii_lowercase(), value.to_vec()));
        Ok(())
    }

    fn remove_header(&mut self, map: MapType, name: &str) -> Result<(), Status> {
        self.calls.push(Call::RemoveHeader(map, name.to_string()));
        self.fails("proxy_remove_header_map_value")?;
        let context = self.context;
        if let Some(request) = self
            .requests
            .get_mut(&context)
            .filter(|_| map == MapType::RequestHeaders)
        {
            request
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        Ok(())
    }

    fn buffer(
        &mut self,
        buffer: BufferType,
        start: usize,
        max_size: usize,
    ) -> Result<Vec<u8>, Status> {
        self.calls.push(Call::Buffer(buffer, start, max_size));
        self.fails("proxy_get_buffer_bytes")?;
        let bytes = match buffer {
            BufferType::HttpRequestBody => {
                self.requests.get(&self.context).map(|r| r.chunk.as_slice())
            }
            BufferType::PluginConfiguration => {
                self.configurations.get(&self.context).map(Vec::as_slice)
            }
            BufferType::HttpResponseBody => self
                .requests
                .get(&self.context)
                .map(|r| r.response_chunk.as_slice()),
            BufferType::HttpCallResponseBody => Some(self.answer.body.as_slice()),
            _ => None,
        }
        .unwrap_or_default();
        let end = start.saturating_add(max_size).min(bytes.len());
        Ok(bytes.get(start.min(end)..end).unwrap_or_default().to_vec())
    }

    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[u8],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        self.calls.push(Call::HttpCall(cluster.to_string()));
        self.fails("proxy_http_call")?;
        if let Some(status) = self.refuse {
            return Err(status);
        }
        // Envoy refuses a map without the pseudo-headers a call needs.
        let headers: Vec<(Vec<u8>, Vec<u8>)> = wire::parse(headers)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        let has = |name: &[u8]| headers.iter().any(|(n, _)| n == name);
        if !(has(b":method") && has(b":path") && has(b":authority")) {
            return Err(Status::BadArgument);
        }
        self.next_token += 1;
        let token = self.next_token;
        self.sent.push(SentCall {
            token,
            context: self.context,
            cluster: cluster.to_string(),
            headers,
            body: body.to_vec(),
            timeout_ms,
        });
        Ok(token)
    }

    fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32, Status> {
        self.calls.push(Call::Define(kind, name.to_string()));
        self.fails("proxy_define_metric")?;
        let index = match self.stats.iter().position(|s| s.name == name) {
            Some(index) => index,
            None => {
                self.stats.push(Stat {
                    kind,
                    name: name.to_string(),
                    value: 0,
                    samples: Vec::new(),
                });
                self.stats.len() - 1
            }
        };
        self.ids.push(index);
        u32::try_from(self.ids.len() - 1).map_err(|_| Status::Other(3))
    }

    fn increment_metric(&mut self, id: u32, offset: i64) -> Result<(), Status> {
        let name = self.stat_name(id);
        self.calls.push(Call::Increment(name, offset));
        self.fails("proxy_increment_metric")?;
        let stat = self.stat_mut(id)?;
        stat.value += offset;
        Ok(())
    }

    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), Status> {
        let name = self.stat_name(id);
        self.calls.push(Call::Record(name, value));
        self.fails("proxy_record_metric")?;
        let stat = self.stat_mut(id)?;
        if stat.kind == MetricType::Histogram {
            stat.samples.push(value);
        } else {
            stat.value = i64::try_from(value).unwrap_or(i64::MAX);
        }
        Ok(())
    }

    fn done(&mut self) -> Result<(), Status> {
        self.calls.push(Call::Done);
        self.fails("proxy_done")?;
        self.done.push(self.context);
        Ok(())
    }

    fn random_seed(&mut self) -> u64 {
        self.seed
    }
}

/// What a host calls in a filter: the proxy-wasm callbacks the module exports (the
/// request callbacks' "continue" is checked by whoever implements this: the filter never
/// pauses a request). The host's side of each call is a [`FakeHost`].
pub trait Exports {
    /// The host the filter calls.
    fn host(&mut self) -> &mut FakeHost;
    fn on_context_create(&mut self, context: u32, parent: u32);
    fn on_vm_start(&mut self, root: u32, vm_configuration_size: usize) -> bool;
    fn on_configure(&mut self, root: u32, configuration_size: usize) -> bool;
    fn on_request_headers(&mut self, context: u32, headers: usize, end_of_stream: bool);
    fn on_request_body(&mut self, context: u32, body_size: usize, end_of_stream: bool);
    fn on_request_trailers(&mut self, context: u32, trailers: usize);
    fn on_response_headers(&mut self, context: u32, headers: usize, end_of_stream: bool);
    fn on_response_body(&mut self, context: u32, body_size: usize, end_of_stream: bool);
    fn on_response_trailers(&mut self, context: u32, trailers: usize);
    fn on_http_call_response(
        &mut self,
        root: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    );
    fn on_done(&mut self, context: u32) -> bool;
    /// What the filter holds in its two budgets (`max_buffered_bytes`,
    /// `max_in_flight_bytes`), where that can be seen: natively, not in a module.
    fn held_bytes(&self) -> Option<(usize, usize)> {
        None
    }
}

/// The core itself, natively.
impl Exports for Vm<FakeHost> {
    fn host(&mut self) -> &mut FakeHost {
        Vm::host(self)
    }

    fn on_context_create(&mut self, context: u32, parent: u32) {
        Vm::on_context_create(self, context, parent);
    }

    fn on_vm_start(&mut self, root: u32, vm_configuration_size: usize) -> bool {
        Vm::on_vm_start(self, root, vm_configuration_size)
    }

    fn on_configure(&mut self, root: u32, configuration_size: usize) -> bool {
        Vm::on_configure(self, root, configuration_size)
    }

    fn on_request_headers(&mut self, context: u32, headers: usize, end_of_stream: bool) {
        Vm::on_request_headers(self, context, headers, end_of_stream);
    }

    fn on_request_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) {
        Vm::on_request_body(self, context, body_size, end_of_stream);
    }

    fn on_request_trailers(&mut self, context: u32, trailers: usize) {
        Vm::on_request_trailers(self, context, trailers);
    }

    fn on_response_headers(&mut self, context: u32, headers: usize, end_of_stream: bool) {
        Vm::on_response_headers(self, context, headers, end_of_stream);
    }

    fn on_response_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) {
        Vm::on_response_body(self, context, body_size, end_of_stream);
    }

    fn on_response_trailers(&mut self, context: u32, trailers: usize) {
        Vm::on_response_trailers(self, context, trailers);
    }

    fn on_http_call_response(
        &mut self,
        root: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        Vm::on_http_call_response(self, root, token, headers, body_size, trailers);
    }

    fn on_done(&mut self, context: u32) -> bool {
        Vm::on_done(self, context)
    }

    fn held_bytes(&self) -> Option<(usize, usize)> {
        let budgets = self.budgets();
        Some((budgets.buffered.held(), budgets.in_flight.held()))
    }
}

/// Envoy's part: drives a filter through [`Exports`] as Envoy drives a plugin on one
/// worker, the host's state kept in the filter's [`FakeHost`].
pub struct Envoy<E> {
    pub filter: E,
    /// Each request's context -> its root (kept after the request: its calls' answers
    /// go to that root).
    roots: BTreeMap<u32, u32>,
    vm_started: bool,
    next_context: u32,
}

impl<E: Exports> Envoy<E> {
    pub fn new(filter: E) -> Self {
        Envoy {
            filter,
            roots: BTreeMap::new(),
            vm_started: false,
            next_context: 100,
        }
    }

    pub fn host(&mut self) -> &mut FakeHost {
        self.filter.host()
    }

    /// Creates root context `root` with this plugin configuration and configures it, as
    /// Envoy does at start-up and, with a new root, at every update; starts the VM
    /// first, once. Whether the filter took the configuration.
    pub fn configure(&mut self, root: u32, configuration: &str) -> bool {
        let host = self.filter.host();
        host.context = root;
        host.configurations
            .insert(root, configuration.as_bytes().to_vec());
        self.filter.on_context_create(root, 0);
        if !self.vm_started {
            self.vm_started = true;
            assert!(self.filter.on_vm_start(root, 0), "the VM starts");
        }
        self.filter.on_configure(root, configuration.len())
    }

    /// A request under `root`: its headers, then each body chunk; `end`: the last chunk
    /// (or the headers, without chunks) ends it. Its context.
    pub fn request(
        &mut self,
        root: u32,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        end: bool,
    ) -> u32 {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        self.request_bytes(root, &headers, chunks, end)
    }

    /// As [`Envoy::request`], with header values as bytes.
    pub fn request_bytes(
        &mut self,
        root: u32,
        headers: &[(&str, &[u8])],
        chunks: &[&[u8]],
        end: bool,
    ) -> u32 {
        self.next_context += 1;
        let context = self.next_context;
        self.roots.insert(context, root);
        let host = self.filter.host();
        host.context = context;
        host.requests.insert(
            context,
            FakeRequest {
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
                    .collect(),
                ..FakeRequest::default()
            },
        );
        self.filter.on_context_create(context, root);
        let count = headers.len();
        self.filter
            .on_request_headers(context, count, chunks.is_empty() && end);
        for (i, chunk) in chunks.iter().enumerate() {
            self.body(context, chunk, end && i + 1 == chunks.len());
        }
        context
    }

    /// A body chunk of a request in progress.
    pub fn body(&mut self, context: u32, chunk: &[u8], end_of_stream: bool) {
        let host = self.filter.host();
        host.context = context;
        if let Some(request) = host.requests.get_mut(&context) {
            request.chunk = chunk.to_vec();
        }
        self.filter
            .on_request_body(context, chunk.len(), end_of_stream);
    }

    /// The primary's response to a request: its headers, each body chunk, its trailers
    /// (`end`: the response ends with them).
    pub fn respond(
        &mut self,
        context: u32,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        trailers: &[(&str, &str)],
    ) {
        let list = |pairs: &[(&str, &str)]| -> Vec<Header> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect()
        };
        let host = self.filter.host();
        host.context = context;
        if let Some(request) = host.requests.get_mut(&context) {
            request.response_headers = list(headers);
            request.response_trailers = list(trailers);
        }
        let bodiless = chunks.is_empty() && trailers.is_empty();
        self.filter
            .on_response_headers(context, headers.len(), bodiless);
        for (i, chunk) in chunks.iter().enumerate() {
            let host = self.filter.host();
            host.context = context;
            if let Some(request) = host.requests.get_mut(&context) {
                request.response_chunk = chunk.to_vec();
            }
            let last = i + 1 == chunks.len() && trailers.is_empty();
            self.filter.on_response_body(context, chunk.len(), last);
        }
        if !trailers.is_empty() {
            self.filter.host().context = context;
            self.filter.on_response_trailers(context, trailers.len());
        }
    }

    /// A request's trailers (it is complete).
    pub fn trailers(&mut self, context: u32) {
        self.filter.host().context = context;
        self.filter.on_request_trailers(context, 1);
    }

    /// Envoy is done with a context: a request's stream ended (complete or not), or a
    /// root was replaced. Whether the filter lets it go now.
    pub fn done(&mut self, context: u32) -> bool {
        self.filter.host().context = context;
        let done = self.filter.on_done(context);
        if done {
            self.filter.host().requests.remove(&context);
        }
        done
    }

    /// A complete request under `root`, and its stream done with: its context.
    pub fn complete(&mut self, root: u32, headers: &[(&str, &str)], chunks: &[&[u8]]) -> u32 {
        let context = self.request(root, headers, chunks, true);
        assert!(self.done(context), "a request's context always goes");
        context
    }

    /// Delivers call `token`'s answer (with a body of `body_size` bytes) to the root that
    /// sent it, as Envoy does; [`FakeAnswer::none`]: it ended without one.
    pub fn answer(&mut self, token: u32, answer: FakeAnswer, body_size: usize) {
        let host = self.filter.host();
        let sender = host
            .sent
            .iter()
            .find(|call| call.token == token)
            .map(|call| call.context);
        let root = match sender {
            Some(context) => self.roots.get(&context).copied().unwrap_or(context),
            None => 0,
        };
        let host = self.filter.host();
        host.context = root;
        let (headers, trailers) = (answer.headers.len(), answer.trailers.len());
        host.answer = answer;
        self.filter
            .on_http_call_response(root, token, headers, body_size, trailers);
        self.filter.host().answer = FakeAnswer::default();
    }
}
