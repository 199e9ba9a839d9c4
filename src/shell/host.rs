//! The core's host traits, implemented with proxy-wasm calls into Envoy: the request's
//! headers ([`HostRequest`]), a call's answer ([`HostAnswer`]), sending calls, the time
//! and the log ([`AbiHost`]), and the stats ([`HostMetrics`]). A host call that fails is
//! logged (at most once a minute per VM) and its value treated as absent; nothing of it
//! reaches the client.

use std::cell::RefCell;

use super::abi::{self, LogLevel};
use crate::config::Plan;
use crate::host::{Answer, Host, Level, Refusal};
use crate::log_throttle::{Failure, LogThrottle};
use crate::metrics::{
    grpc_status_metric_name, lane_metric_name, metric_name, Counter, LaneStat, Metrics,
    GRPC_STATUS_CODES, IN_FLIGHT, LATENCY_MS,
};
use crate::request::RequestView;

thread_local! {
    /// When a failed host call was last logged (one VM per thread).
    static HOST_FAILURES: RefCell<LogThrottle> = RefCell::new(LogThrottle::new(1));
}

/// Logs a failed host call, at most once a minute per VM: the filter goes on (the
/// caller treats the value as absent, or abandons the copy), the client never sees it.
pub fn host_failed(what: &str, status: abi::Status) {
    let now = abi::now_nanos();
    let allowed = HOST_FAILURES.with(|throttle| {
        throttle
            .try_borrow_mut()
            .is_ok_and(|mut t| t.allow(0, Failure::HostCall, now))
    });
    if allowed {
        abi::log(
            LogLevel::Warn,
            &format!(
                "traffic-mirror: {what} failed with status {}; logged at most once a minute",
                status.0
            ),
        );
    }
}

/// Sending calls, the clock and the log, through the ABI.
pub struct AbiHost;

impl Host for AbiHost {
    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[u8],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Refusal> {
        abi::http_call(cluster, headers, body, timeout_ms).map_err(|status| match status {
            abi::BAD_ARGUMENT => Refusal::BadArgument,
            abi::INTERNAL_FAILURE => Refusal::InternalFailure,
            other => Refusal::Other(other.0),
        })
    }

    fn now_nanos(&mut self) -> u64 {
        abi::now_nanos()
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        abi::log(level, message);
    }
}

/// The request headers, as the filter reads them: the whole map, read from the host once
/// at the first need (one host call where looking headers up one by one took four or
/// more), then looked up in the VM; read again after the filter writes a header.
#[cfg(not(feature = "bench-header-lookups"))]
#[derive(Default)]
pub struct HostRequest {
    /// The map as the host serialized it (see [`crate::wire`]).
    map: Option<Vec<u8>>,
}

#[cfg(not(feature = "bench-header-lookups"))]
impl HostRequest {
    fn map(&mut self) -> &[u8] {
        self.map.get_or_insert_with(request_map)
    }

    fn first(&mut self, name: &str) -> Option<&[u8]> {
        crate::wire::first(self.map(), name.as_bytes())
    }
}

/// The request's header map; empty when the host cannot give it (which makes Envoy
/// refuse a copy, counted in dispatch_failed, and reads every header as absent).
fn request_map() -> Vec<u8> {
    abi::header_map(abi::REQUEST_HEADERS).unwrap_or_else(|status| {
        host_failed("reading the request header map", status);
        Vec::new()
    })
}

#[cfg(not(feature = "bench-header-lookups"))]
impl RequestView for HostRequest {
    fn method(&mut self) -> &[u8] {
        self.first(":method").unwrap_or_default()
    }

    fn path(&mut self) -> &[u8] {
        self.first(":path").unwrap_or_default()
    }

    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.first(name)
    }

    fn set_header(&mut self, name: &str, value: Option<&[u8]>) {
        write_header(name, value);
        self.map = None;
    }

    fn header_map(&mut self) -> Vec<u8> {
        self.map.take().unwrap_or_else(request_map)
    }
}

fn write_header(name: &str, value: Option<&[u8]>) {
    let written = match value {
        Some(value) => abi::set_header(abi::REQUEST_HEADERS, name, value),
        None => abi::remove_header(abi::REQUEST_HEADERS, name),
    };
    if let Err(status) = written {
        host_failed("writing the lane header", status);
    }
}

/// For the benchmark only (feature `bench-header-lookups`): the request headers read
/// from the host one at a time and only when asked, as the filter once did, to measure
/// what reading the map once saves.
#[cfg(feature = "bench-header-lookups")]
#[derive(Default)]
pub struct HostRequest {
    method: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    /// The header looked up last.
    last: Option<Vec<u8>>,
}

#[cfg(feature = "bench-header-lookups")]
fn request_header(name: &str) -> Option<Vec<u8>> {
    abi::header(abi::REQUEST_HEADERS, name).unwrap_or_else(|status| {
        host_failed("reading a request header", status);
        None
    })
}

#[cfg(feature = "bench-header-lookups")]
impl RequestView for HostRequest {
    fn method(&mut self) -> &[u8] {
        self.method
            .get_or_insert_with(|| request_header(":method").unwrap_or_default())
    }

    fn path(&mut self) -> &[u8] {
        self.path
            .get_or_insert_with(|| request_header(":path").unwrap_or_default())
    }

    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.last = request_header(name);
        self.last.as_deref()
    }

    fn set_header(&mut self, name: &str, value: Option<&[u8]>) {
        write_header(name, value);
    }

    fn header_map(&mut self) -> Vec<u8> {
        request_map()
    }
}

/// Reads a body chunk of `size` bytes; `None` when the host could not.
pub fn body_chunk(size: usize) -> Option<Vec<u8>> {
    abi::buffer(abi::REQUEST_BODY, 0, size)
        .map_err(|status| host_failed("reading a request body chunk", status))
        .ok()
}

/// The answer of the call being counted.
pub struct HostAnswer;

impl Answer for HostAnswer {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        abi::header(abi::HTTP_CALL_RESPONSE_HEADERS, name).unwrap_or_else(|status| {
            host_failed("reading a mirror answer's headers", status);
            None
        })
    }

    fn trailer(&mut self, name: &str) -> Option<Vec<u8>> {
        abi::header(abi::HTTP_CALL_RESPONSE_TRAILERS, name).unwrap_or_else(|status| {
            host_failed("reading a mirror answer's trailers", status);
            None
        })
    }
}

/// Envoy stats of every target (counters by [`Counter::index`], the gauge, the latency
/// histogram, and the gRPC status counters, each defined when its code is first seen)
/// and of every lane.
pub struct HostMetrics {
    counters: Vec<[u32; Counter::ALL.len()]>,
    in_flight: Vec<u32>,
    latency: Vec<u32>,
    grpc: Vec<[Option<u32>; GRPC_STATUS_CODES]>,
    /// Target names, for the gRPC status counters defined later.
    names: Vec<String>,
    lanes: Vec<[u32; LaneStat::ALL.len()]>,
    /// When a failed stat update was last logged.
    throttle: LogThrottle,
}

impl HostMetrics {
    /// Defines every stat of a configuration; why not, when the host refuses one.
    pub fn define(plan: &Plan) -> Result<Self, String> {
        Self::define_all(plan).map_err(|status| format!("status {}", status.0))
    }

    fn define_all(plan: &Plan) -> Result<Self, abi::Status> {
        let mut counters = Vec::with_capacity(plan.targets.len());
        let mut in_flight = Vec::with_capacity(plan.targets.len());
        let mut latency = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            let mut ids = [0u32; Counter::ALL.len()];
            for (id, counter) in ids.iter_mut().zip(Counter::ALL) {
                *id = abi::define_metric(abi::COUNTER, &metric_name(&target.name, counter.name()))?;
            }
            counters.push(ids);
            in_flight.push(abi::define_metric(
                abi::GAUGE,
                &metric_name(&target.name, IN_FLIGHT),
            )?);
            latency.push(abi::define_metric(
                abi::HISTOGRAM,
                &metric_name(&target.name, LATENCY_MS),
            )?);
        }
        let names = plan.lanes.as_ref().map_or(&[][..], |l| l.names.as_slice());
        let mut lanes = Vec::with_capacity(names.len());
        for name in names {
            let mut ids = [0u32; LaneStat::ALL.len()];
            for (id, stat) in ids.iter_mut().zip(LaneStat::ALL) {
                *id = abi::define_metric(abi::COUNTER, &lane_metric_name(name, stat))?;
            }
            lanes.push(ids);
        }
        Ok(HostMetrics {
            counters,
            in_flight,
            latency,
            grpc: vec![[None; GRPC_STATUS_CODES]; plan.targets.len()],
            names: plan.targets.iter().map(|t| t.name.clone()).collect(),
            lanes,
            throttle: LogThrottle::new(1),
        })
    }

    fn record(&mut self, id: Option<u32>, delta: i64) {
        if let Some(Err(e)) = id.map(|id| abi::increment_metric(id, delta)) {
            self.failed(e);
        }
    }

    /// Logs a failed stat update, at most once a minute per configuration.
    fn failed(&mut self, e: abi::Status) {
        if self
            .throttle
            .allow(0, Failure::StatUpdate, abi::now_nanos())
        {
            abi::log(
                LogLevel::Error,
                &format!(
                    "traffic-mirror: updating a stat failed with status {}; logged at most once a minute",
                    e.0
                ),
            );
        }
    }
}

impl Metrics for HostMetrics {
    fn count(&mut self, target: usize, counter: Counter) {
        let id = self
            .counters
            .get(target)
            .and_then(|ids| ids.get(counter.index()))
            .copied();
        self.record(id, 1);
    }

    fn add_in_flight(&mut self, target: usize, delta: i64) {
        let id = self.in_flight.get(target).copied();
        self.record(id, delta);
    }

    fn count_lane(&mut self, lane: usize, stat: LaneStat) {
        let id = self
            .lanes
            .get(lane)
            .and_then(|ids| ids.get(stat.index()))
            .copied();
        self.record(id, 1);
    }

    fn count_grpc_status(&mut self, target: usize, code: u8) {
        let Some(slot) = self
            .grpc
            .get_mut(target)
            .and_then(|ids| ids.get_mut(usize::from(code)))
        else {
            return;
        };
        let id = match *slot {
            Some(id) => id,
            None => {
                let name = self.names.get(target).map_or("", String::as_str);
                match abi::define_metric(abi::COUNTER, &grpc_status_metric_name(name, code)) {
                    Ok(id) => *slot.insert(id),
                    Err(e) => return self.failed(e),
                }
            }
        };
        self.record(Some(id), 1);
    }

    fn record_latency(&mut self, target: usize, millis: u64) {
        if let Some(Err(e)) = self
            .latency
            .get(target)
            .map(|&id| abi::record_metric(id, millis))
        {
            self.failed(e);
        }
    }
}
