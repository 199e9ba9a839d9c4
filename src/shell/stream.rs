//! An HTTP context, one per request: decides at the headers, copies body chunks as
//! they flow on (it always continues), and sends the copies once the request is
//! complete. A request that ends before that sends nothing.

use super::root::Worker;
use super::{abi, host_failed};
use crate::budget::{Budget, Budgets};
use crate::capture::{self, Capture};
use crate::metrics::Metrics;
use crate::request::RequestView;

pub struct Stream {
    /// The root context this request belongs to.
    pub root: u32,
    capture: Option<Capture>,
}

impl Stream {
    pub fn new(root: u32) -> Self {
        Stream {
            root,
            capture: None,
        }
    }

    pub fn on_request_headers(
        &mut self,
        worker: &mut Worker,
        budgets: &mut Budgets,
        end_of_stream: bool,
    ) {
        let mut request = HostRequest::default();
        // The lane first: routing, the targets' match rules and the copies see it.
        if let Some(lanes) = &worker.plan.lanes {
            lanes.assign(&mut request, &mut worker.rng, &mut worker.metrics);
        }
        self.capture = capture::begin(
            &worker.plan,
            &mut request,
            &mut worker.rng,
            &mut worker.metrics,
        );
        if end_of_stream {
            self.finish(worker, budgets);
        } else if let Some(capture) = self.capture.as_mut() {
            capture.hold(&mut budgets.buffered, &mut worker.metrics);
        }
    }

    pub fn on_request_body(
        &mut self,
        worker: &mut Worker,
        budgets: &mut Budgets,
        body_size: usize,
        end_of_stream: bool,
    ) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        if capture.is_active() && body_size > 0 {
            // The chunk that just arrived; it flows on unchanged.
            match abi::buffer(abi::REQUEST_BODY, 0, body_size) {
                Ok(chunk) => {
                    capture.add_body_chunk(chunk, &mut budgets.buffered, &mut worker.metrics)
                }
                Err(status) => {
                    // A copy is never sent with part of its body.
                    host_failed("reading a request body chunk", status);
                    capture.abandon(&mut budgets.buffered, &mut worker.metrics);
                }
            }
        }
        if end_of_stream {
            self.finish(worker, budgets);
        }
    }

    /// The request is complete (its trailers, if any, are not copied): the copies go
    /// to Envoy (into `max_in_flight_bytes`), and their bytes back to
    /// `max_buffered_bytes`.
    pub fn finish(&mut self, worker: &mut Worker, budgets: &mut Budgets) {
        if let Some(capture) = self.capture.take() {
            let finished = capture.finish(&mut budgets.buffered, &mut worker.metrics);
            worker.send(&finished.copies, &mut budgets.in_flight);
            finished.release(&mut budgets.buffered);
        }
    }

    /// The request is gone (`proxy_on_delete`): if it ended before it was complete, its
    /// copies count in `skipped_incomplete` and their bytes go back to the budget.
    pub fn end(self, metrics: &mut impl Metrics, budget: &mut Budget) {
        if let Some(capture) = self.capture {
            capture.end_incomplete(budget, metrics);
        }
    }
}

/// The request headers, read from the host one at a time and only when asked.
#[derive(Default)]
struct HostRequest {
    method: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    abi::header(abi::REQUEST_HEADERS, name).unwrap_or_else(|status| {
        host_failed("reading a request header", status);
        None
    })
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

    fn set_header(&mut self, name: &str, value: Option<&[u8]>) {
        let written = match value {
            Some(value) => abi::set_header(abi::REQUEST_HEADERS, name, value),
            None => abi::remove_header(abi::REQUEST_HEADERS, name),
        };
        if let Err(status) = written {
            host_failed("writing the lane header", status);
        }
    }

    fn header_map(&mut self) -> Vec<u8> {
        // An empty map makes Envoy refuse the copy, which counts in dispatch_failed.
        abi::header_map(abi::REQUEST_HEADERS).unwrap_or_else(|status| {
            host_failed("reading the request header map", status);
            Vec::new()
        })
    }
}
