//! A root context: one per plugin per worker VM. It owns the compiled configuration,
//! the worker's limits and calls in flight, and counts every copy's end when the
//! answer comes back (Envoy files every call under the root context, so the answer
//! arrives here even when the request that made it is long gone).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::abi::{self, LogLevel};
use crate::budget::Budget;
use crate::capture::ReadyCopy;
use crate::config::{self, Plan, ANSWER_BUFFER_RUNTIME_KEY};
use crate::drain::Retirement;
use crate::log_throttle::{Failure, LogThrottle};
use crate::metrics::{
    grpc_status_code, grpc_status_metric_name, lane_metric_name, metric_name, Counter, LaneStat,
    Metrics, GRPC_STATUS_CODES, IN_FLIGHT, LATENCY_MS,
};
use crate::outbox::Outbox;
use crate::sampling::Rng;

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
    failed: bool,
}

impl HostMetrics {
    fn define(plan: &Plan) -> Result<Self, abi::Status> {
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
            failed: false,
        })
    }

    fn record(&mut self, id: Option<u32>, delta: i64) {
        if let Some(Err(e)) = id.map(|id| abi::increment_metric(id, delta)) {
            self.failed(e);
        }
    }

    /// Logs the first failed stat update of this configuration.
    fn failed(&mut self, e: abi::Status) {
        if !self.failed {
            self.failed = true;
            abi::log(
                LogLevel::Error,
                &format!("traffic-mirror: updating a stat failed with status {}", e.0),
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

/// A root context once configured.
pub struct Worker {
    pub plan: Plan,
    pub outbox: Outbox,
    pub metrics: HostMetrics,
    pub throttle: LogThrottle,
    pub rng: Rng,
    pub retirement: Retirement,
}

/// Parses the plugin configuration; on error logs the one line and returns `None`,
/// which makes Envoy refuse the plugin.
pub fn configure(configuration: &[u8]) -> Option<Worker> {
    let plan = match config::parse(configuration) {
        Ok(plan) => plan,
        Err(e) => {
            abi::log(LogLevel::Error, &e.to_string());
            return None;
        }
    };
    let metrics = match HostMetrics::define(&plan) {
        Ok(metrics) => metrics,
        Err(e) => {
            abi::log(
                LogLevel::Error,
                &format!("traffic-mirror: defining stats failed with status {}", e.0),
            );
            return None;
        }
    };
    abi::log(
        LogLevel::Info,
        &format!("traffic-mirror: configured {}", plan.summary()),
    );
    Some(Worker {
        outbox: Outbox::new(&plan),
        throttle: LogThrottle::new(plan.targets.len()),
        metrics,
        // RandomState draws its keys from WASI's random_get, i.e. the host.
        rng: Rng::new(RandomState::new().hash_one(abi::now_nanos())),
        plan,
        retirement: Retirement::Serving,
    })
}

impl Worker {
    /// Sends the complete copies of one request, each past its target's limits and
    /// `max_in_flight_bytes`.
    pub fn send(&mut self, copies: &[ReadyCopy], in_flight: &mut Budget) {
        if copies.is_empty() {
            return;
        }
        // One clock read for every copy of the request: when they were handed over
        // (latency), and the rate limits' time.
        let now = abi::now_nanos();
        for copy in copies {
            let Some(target) = self.plan.targets.get(copy.target) else {
                continue;
            };
            let bytes = copy.headers.len().saturating_add(copy.body.len());
            let Some(admitted) =
                self.outbox
                    .admit(copy.target, bytes, in_flight, || now, &mut self.metrics)
            else {
                continue;
            };
            match abi::http_call(
                &target.cluster,
                &copy.headers,
                &copy.body,
                target.timeout_ms,
            ) {
                Ok(token) => self
                    .outbox
                    .sent(token, admitted, copy.grpc, now, &mut self.metrics),
                Err(status) => {
                    self.outbox.refused(admitted, in_flight, &mut self.metrics);
                    if self
                        .throttle
                        .allow(copy.target, Failure::DispatchRefused, now)
                    {
                        let why = match status {
                            abi::BAD_ARGUMENT => "unknown cluster or bad headers",
                            abi::INTERNAL_FAILURE => {
                                "no endpoint, or the cluster's circuit breakers are full"
                            }
                            _ => "see Envoy's log",
                        };
                        abi::log(
                            LogLevel::Warn,
                            &format!(
                                "traffic-mirror: target {}: Envoy refused the copy to cluster \"{}\" (status {}: {why})",
                                target.name, target.cluster, status.0
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Whether call `token` is one of this worker's.
    pub fn owns_call(&self, token: u32) -> bool {
        self.outbox.has_call(token)
    }

    /// Envoy replaced this configuration and asks whether its root may go: at once
    /// when no copy is in flight, otherwise once the last one has ended and been counted.
    pub fn retire(&mut self) -> bool {
        let in_flight = self.outbox.calls_in_flight();
        let done = self.retirement.on_done(in_flight);
        if !done {
            abi::log(
                LogLevel::Info,
                &format!("traffic-mirror: configuration replaced; counting the {in_flight} copies still in flight as they end"),
            );
        }
        done
    }

    /// Call `token` ended with an answer of `body_size` bytes and `trailers` trailers
    /// (none of either when it ended without a complete answer); counts it by the
    /// answer's status (and gRPC status) and gives its bytes back to `in_flight`.
    /// Returns whether this was the last copy a replaced configuration waited for: then
    /// the host must be told that the root is done.
    pub fn call_ended(
        &mut self,
        token: u32,
        body_size: usize,
        trailers: usize,
        in_flight: &mut Budget,
    ) -> bool {
        self.count_answer(token, body_size, trailers, in_flight);
        let drained = self.retirement.on_call_ended(self.outbox.calls_in_flight());
        if drained {
            abi::log(
                LogLevel::Info,
                "traffic-mirror: replaced configuration drained: every copy it sent has ended",
            );
        }
        drained
    }

    fn count_answer(
        &mut self,
        token: u32,
        body_size: usize,
        trailers: usize,
        in_flight: &mut Budget,
    ) {
        let Some(call) = self.outbox.end(token, in_flight) else {
            return;
        };
        let answer = |map: u32, name: &str| {
            abi::header(map, name).unwrap_or_else(|status| {
                super::host_failed("reading a mirror answer's headers", status);
                None
            })
        };
        let status = answer(abi::HTTP_CALL_RESPONSE_HEADERS, ":status");
        // Only a gRPC call's answer is looked at further: in its trailers, or in its
        // headers when it has none (a trailers-only answer).
        let grpc_status = match (call.grpc, trailers) {
            (false, _) => None,
            (true, 0) => answer(abi::HTTP_CALL_RESPONSE_HEADERS, "grpc-status"),
            (true, _) => answer(abi::HTTP_CALL_RESPONSE_TRAILERS, "grpc-status"),
        };
        let now = abi::now_nanos();
        let counter = call.count(
            status.as_deref(),
            grpc_status.as_deref(),
            now,
            &mut self.metrics,
        );
        let index = call.target;
        let name = self.plan.targets.get(index).map_or("", |t| t.name.as_str());
        let limit = self.plan.max_answer_bytes;
        if body_size > limit && self.throttle.allow(index, Failure::AnswerNotLimited, now) {
            abi::log(
                LogLevel::Warn,
                &format!(
                    "traffic-mirror: target {name}: a mirror answer of {body_size} bytes arrived whole, more than max_answer_bytes ({limit}): Envoy's runtime value {ANSWER_BUFFER_RUNTIME_KEY} is not set to {limit}, so Envoy holds each answer up to 32 MiB; set {ANSWER_BUFFER_RUNTIME_KEY}: {limit} in its layered_runtime (Istio: runtimeValues in the proxy config); logged at most once a minute"
                ),
            );
        }
        let grpc_code = grpc_status.as_deref().and_then(grpc_status_code);
        let failure = match (counter, grpc_code) {
            (Counter::ResponsesFailed, _) => Failure::NoResponse,
            (Counter::Responses5xx, _) => Failure::ServerError,
            (_, Some(code)) if code != 0 => Failure::GrpcError,
            _ => return,
        };
        if self.throttle.allow(index, failure, now) {
            let what = match (failure, status, grpc_code) {
                (Failure::ServerError, Some(status), _) => format!(
                    "the mirror answered {} (Envoy answers 503 for a refused connection, 504 past timeout_ms)",
                    String::from_utf8_lossy(&status)
                ),
                (Failure::GrpcError, _, Some(code)) => format!(
                    "the mirror answered grpc-status {code} (counted in grpc_status.{code})"
                ),
                _ => format!(
                    "the copy ended without a complete answer: the mirror closed or reset it, its answer was longer than {ANSWER_BUFFER_RUNTIME_KEY} (max_answer_bytes {limit}), or it was still coming at timeout_ms, which Envoy reports the same way (the mirror cluster's stats tell them apart)"
                ),
            };
            abi::log(
                LogLevel::Warn,
                &format!("traffic-mirror: target {name}: {what}; logged at most once a minute"),
            );
        }
    }
}
