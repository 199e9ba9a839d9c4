//! The root context: owns the configuration, sends every copy (so that its answer
//! comes back here even when the client's request is long gone), counts every end.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, MetricType};

use super::host;
use super::stream::Stream;
use super::{SharedWorker, Worker};
use crate::config::{self, Plan};
use crate::metrics::{metric_name, Counter, Metrics, IN_FLIGHT};
use crate::outbox::Outbox;
use crate::sampling::Rng;
use crate::throttle::{Failure, LogThrottle};

/// Envoy stats of every target: counters by [`Counter::index`], and the gauge.
pub struct HostMetrics {
    counters: Vec<[u32; Counter::ALL.len()]>,
    in_flight: Vec<u32>,
    failed: bool,
}

impl HostMetrics {
    fn define(plan: &Plan) -> Result<Self, host::HostError> {
        let mut counters = Vec::with_capacity(plan.targets.len());
        let mut in_flight = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            let mut ids = [0u32; Counter::ALL.len()];
            for (id, counter) in ids.iter_mut().zip(Counter::ALL) {
                *id = host::define_metric(
                    MetricType::Counter,
                    &metric_name(&target.name, counter.name()),
                )?;
            }
            counters.push(ids);
            in_flight.push(host::define_metric(
                MetricType::Gauge,
                &metric_name(&target.name, IN_FLIGHT),
            )?);
        }
        Ok(HostMetrics {
            counters,
            in_flight,
            failed: false,
        })
    }

    fn record(&mut self, id: Option<u32>, delta: i64) {
        let result = id.map(|id| host::increment_metric(id, delta));
        if let Some(Err(e)) = result {
            if !self.failed {
                self.failed = true;
                error!("traffic-mirror: updating a stat failed with status {}", e.0);
            }
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
}

pub struct Root {
    worker: SharedWorker,
}

impl Root {
    pub fn new() -> Self {
        Root {
            worker: Rc::new(RefCell::new(None)),
        }
    }

    fn configure(&mut self) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let plan = match config::parse(&bytes) {
            Ok(plan) => plan,
            Err(e) => {
                error!("{e}");
                return false;
            }
        };
        let metrics = match HostMetrics::define(&plan) {
            Ok(metrics) => metrics,
            Err(e) => {
                error!("traffic-mirror: defining stats failed with status {}", e.0);
                return false;
            }
        };
        let targets: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
        info!("traffic-mirror: configured targets {}", targets.join(", "));
        let seed = RandomState::new().hash_one(host::now_nanos());
        *self.worker.borrow_mut() = Some(Worker {
            outbox: Outbox::new(&plan),
            throttle: LogThrottle::new(plan.targets.len()),
            metrics,
            rng: Rng::new(seed),
            tick_armed: false,
            plan,
        });
        true
    }

    /// Hands every queued copy to the host.
    fn send_queued(&mut self) {
        let mut guard = self.worker.borrow_mut();
        let Some(worker) = guard.as_mut() else {
            return;
        };
        while let Some(copy) = worker.outbox.take_queued() {
            let Some(target) = worker.plan.targets.get(copy.target) else {
                continue;
            };
            let mut headers: Vec<(&str, &str)> = Vec::with_capacity(copy.headers.len());
            let mut not_text = false;
            for (name, value) in &copy.headers {
                match std::str::from_utf8(value) {
                    Ok(value) => headers.push((name.as_str(), value)),
                    Err(_) => not_text = true,
                }
            }
            if not_text {
                worker.outbox.refused(copy.target, &mut worker.metrics);
                if worker
                    .throttle
                    .allow(copy.target, Failure::NotText, host::now_nanos())
                {
                    warn!(
                        "traffic-mirror: target {}: copy not sent: a header value is not valid UTF-8",
                        target.name
                    );
                }
                continue;
            }
            let body = (!copy.body.is_empty()).then_some(copy.body.as_ref());
            let timeout = Duration::from_millis(u64::from(target.timeout_ms));
            match self.dispatch_http_call(&target.cluster, headers, body, vec![], timeout) {
                Ok(token) => worker.outbox.sent(token, copy.target, &mut worker.metrics),
                Err(status) => {
                    worker.outbox.refused(copy.target, &mut worker.metrics);
                    if worker.throttle.allow(
                        copy.target,
                        Failure::DispatchRefused,
                        host::now_nanos(),
                    ) {
                        warn!(
                            "traffic-mirror: target {}: Envoy refused the copy to cluster \"{}\" ({:?})",
                            target.name, target.cluster, status
                        );
                    }
                }
            }
        }
        if let Err(e) = host::set_tick_period_ms(0) {
            if worker
                .throttle
                .allow(0, Failure::HostCall, host::now_nanos())
            {
                warn!(
                    "traffic-mirror: stopping the tick failed with status {}",
                    e.0
                );
            }
        }
        worker.tick_armed = false;
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        let status = self.get_http_call_response_header_bytes(":status");
        let mut guard = self.worker.borrow_mut();
        let Some(worker) = guard.as_mut() else {
            return;
        };
        let Some((index, counter)) =
            worker
                .outbox
                .ended(token_id, status.as_deref(), &mut worker.metrics)
        else {
            return;
        };
        let failure = match counter {
            Counter::ResponsesFailed => Failure::NoResponse,
            Counter::Responses5xx => Failure::ServerError,
            _ => return,
        };
        if worker.throttle.allow(index, failure, host::now_nanos()) {
            let name = worker
                .plan
                .targets
                .get(index)
                .map_or("", |t| t.name.as_str());
            let status = status
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            warn!("traffic-mirror: target {name}: copy failed: {failure:?} {status}");
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        info!(
            "traffic-mirror {} starting (proxy-wasm, fire-and-forget mirroring)",
            env!("CARGO_PKG_VERSION")
        );
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure()
    }

    fn on_tick(&mut self) {
        self.send_queued();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream::new(Rc::clone(&self.worker))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
