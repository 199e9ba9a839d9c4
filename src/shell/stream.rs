//! The HTTP context, one per request: decides at the headers, copies body chunks as
//! they flow on (always `Continue`), and hands complete copies to the root.

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::host;
use super::SharedWorker;
use crate::capture::{self, Capture};
use crate::request::RequestView;
use crate::throttle::Failure;

pub struct Stream {
    worker: SharedWorker,
    capture: Option<Capture>,
}

impl Stream {
    pub fn new(worker: SharedWorker) -> Self {
        Stream {
            worker,
            capture: None,
        }
    }

    /// The request is complete: offer its copies to the limits, and make sure the
    /// root's tick will send them.
    fn hand_over(&mut self) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        let mut guard = self.worker.borrow_mut();
        let Some(worker) = guard.as_mut() else {
            return;
        };
        for copy in capture.finish() {
            worker
                .outbox
                .offer(copy, host::now_nanos, &mut worker.metrics);
        }
        if worker.outbox.has_queued() && !worker.tick_armed {
            match host::set_tick_period_ms(1) {
                Ok(()) => worker.tick_armed = true,
                Err(e) => {
                    if worker
                        .throttle
                        .allow(0, Failure::HostCall, host::now_nanos())
                    {
                        warn!(
                            "traffic-mirror: starting the tick failed with status {}",
                            e.0
                        );
                    }
                }
            }
        }
    }
}

/// The request headers, read from the host one at a time, and only when asked.
#[derive(Default)]
struct HostRequest {
    method: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

impl RequestView for HostRequest {
    fn method(&mut self) -> &[u8] {
        self.method
            .get_or_insert_with(|| request_header(":method").unwrap_or_default())
    }

    fn path(&mut self) -> &[u8] {
        self.path
            .get_or_insert_with(|| request_header(":path").unwrap_or_default())
    }

    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        request_header(name)
    }

    fn all_headers(&mut self) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        {
            let mut guard = self.worker.borrow_mut();
            let Some(worker) = guard.as_mut() else {
                return Action::Continue;
            };
            let mut request = HostRequest::default();
            self.capture = capture::begin(
                &worker.plan,
                &mut request,
                &mut worker.rng,
                &mut worker.metrics,
            );
        }
        if end_of_stream {
            self.hand_over();
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(capture) = self.capture.as_mut() else {
            return Action::Continue;
        };
        if capture.is_active() && body_size > 0 {
            let chunk = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            let mut guard = self.worker.borrow_mut();
            if let Some(worker) = guard.as_mut() {
                capture.add_body(&chunk, &mut worker.metrics);
            }
        }
        if end_of_stream {
            self.hand_over();
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hand_over();
        Action::Continue
    }
}
