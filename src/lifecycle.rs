//! A request's whole way through the filter, written once. On one worker, for one
//! configuration ([`Worker`]), a request ([`Request`]) goes:
//!
//! 1. **headers** ([`Request::on_headers`]): its lane is assigned and written on it
//!    (routes see it), then every target decides ([`crate::decision`]: `CONNECT` and
//!    upgrades, the loop header, `match`, the key) and counts; the copies of the targets
//!    that sampled it are begun, their headers built once ([`crate::capture`]);
//! 2. **body** ([`Request::on_body`]): each chunk flows on to the upstream and is copied,
//!    its bytes reserved in `max_buffered_bytes` first; a body past `max_body_bytes`, or
//!    one that does not fit, drops the copies;
//! 3. **complete** (the body's end, or [`Request::on_trailers`]): each copy goes past its
//!    target's limits (`max_rps`, `max_in_flight`, `max_in_flight_bytes`) to the host
//!    ([`crate::host::Host::http_call`]), and the body's bytes go back to
//!    `max_buffered_bytes`;
//! 4. **answer** ([`Worker::answer_arrived`]), whenever it comes, also long after the
//!    request, also after a configuration update: the copy ends in exactly one
//!    `responses_*` counter (and its gRPC status, and its latency), and its bytes go back
//!    to `max_in_flight_bytes`;
//! 5. a request that ends before it is complete ([`Request::on_end`]) sends nothing,
//!    counts in `skipped_incomplete`, and gives its bytes back.
//!
//! [`Contexts`] holds a worker's VM as the host sees it: its configurations and its
//! requests in progress, created and deleted by the host, sharing the budgets. Nothing
//! here calls the host but through [`Host`], [`RequestView`] and [`Answer`]: the shell
//! translates each of Envoy's callbacks into one call of [`Contexts`], and the tests
//! drive the same calls with a fake host ([`crate::fake_host`]).

use crate::budget::{Budget, Budgets};
use crate::capture::{self, Capture, ReadyCopy};
use crate::config::{self, Plan, ANSWER_BUFFER_RUNTIME_KEY};
use crate::host::{Answer, Host, Level};
use crate::id_map::IdMap;
use crate::log_throttle::{Failure, LogThrottle};
use crate::metrics::{grpc_status_code, Counter, Discard, Metrics};
use crate::outbox::Outbox;
use crate::request::RequestView;
use crate::retirement::Retirement;
use crate::sampling::Rng;

/// One configuration on one worker (a root context): its plan, the copies it has in
/// flight, its stats (`M`: Envoy's in the shell, a table in tests) and its place in a
/// configuration update.
pub struct Worker<M> {
    plan: Plan,
    outbox: Outbox,
    pub metrics: M,
    throttle: LogThrottle,
    rng: Rng,
    retirement: Retirement,
}

impl<M: Metrics> Worker<M> {
    /// Parses and compiles a configuration for one worker, its stats defined by
    /// `define`, its random draws seeded with `seed`. Logs the configuration's one
    /// error line (the host then refuses the plugin) or the line saying what it runs.
    pub fn configure(
        configuration: &[u8],
        seed: u64,
        host: &mut impl Host,
        define: impl FnOnce(&Plan) -> Result<M, String>,
    ) -> Option<Self> {
        let plan = match config::parse(configuration) {
            Ok(plan) => plan,
            Err(e) => {
                host.log(Level::Error, &e.to_string());
                return None;
            }
        };
        let metrics = match define(&plan) {
            Ok(metrics) => metrics,
            Err(why) => {
                host.log(
                    Level::Error,
                    &format!("traffic-mirror: defining stats failed: {why}"),
                );
                return None;
            }
        };
        host.log(
            Level::Info,
            &format!("traffic-mirror: configured {}", plan.summary()),
        );
        Some(Worker::new(plan, metrics, seed))
    }

    /// A worker for a compiled plan, its stats in `metrics`, its random draws seeded
    /// with `seed`.
    pub fn new(plan: Plan, metrics: M, seed: u64) -> Self {
        Worker {
            outbox: Outbox::new(&plan),
            throttle: LogThrottle::new(plan.targets.len()),
            metrics,
            rng: Rng::new(seed),
            plan,
            retirement: Retirement::Serving,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether call `token` is one of this configuration's.
    pub fn owns_call(&self, token: u32) -> bool {
        self.outbox.has_call(token)
    }

    /// Copies sent and not yet ended.
    pub fn calls_in_flight(&self) -> usize {
        self.outbox.calls_in_flight()
    }

    /// The host replaced this configuration and asks whether it may go: at once when
    /// no copy is in flight, otherwise once the last one has ended and been counted.
    pub fn retire(&mut self, host: &mut impl Host) -> bool {
        let in_flight = self.outbox.calls_in_flight();
        let done = self.retirement.on_done(in_flight);
        if !done {
            host.log(
                Level::Info,
                &format!("traffic-mirror: configuration replaced; counting the {in_flight} copies still in flight as they end"),
            );
        }
        done
    }

    /// The host deleted this configuration with calls in flight, whose answers can no
    /// longer come: their bytes go back to `max_in_flight_bytes`.
    pub fn forget_calls(&mut self, in_flight: &mut Budget) {
        self.outbox.forget_all(in_flight);
    }

    /// Sends the complete copies of one request, each past its target's limits and
    /// `max_in_flight_bytes`.
    fn send(&mut self, copies: &[ReadyCopy], in_flight: &mut Budget, host: &mut impl Host) {
        if copies.is_empty() {
            return;
        }
        // One clock read for every copy of the request: when they were handed over
        // (latency), and the rate limits' time.
        let now = host.now_nanos();
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
            match host.http_call(
                &target.cluster,
                &copy.headers,
                &copy.body,
                target.timeout_ms,
            ) {
                Ok(token) => self
                    .outbox
                    .sent(token, admitted, copy.grpc, now, &mut self.metrics),
                Err(refusal) => {
                    self.outbox.refused(admitted, in_flight, &mut self.metrics);
                    if self
                        .throttle
                        .allow(copy.target, Failure::DispatchRefused, now)
                    {
                        let (status, why) = refusal.describe();
                        host.log(
                            Level::Warn,
                            &format!(
                                "traffic-mirror: target {}: Envoy refused the copy to cluster \"{}\" (status {status}: {why})",
                                target.name, target.cluster
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Call `token` ended with an answer of `body_size` bytes and `trailers` trailers
    /// (none of either when it ended without a complete answer): counted by its status
    /// class, its gRPC status (read only for a gRPC call) and its latency, and its bytes
    /// given back to `in_flight`. Returns whether this was the last copy a replaced
    /// configuration waited for: then the host must be told that it is done.
    pub fn answer_arrived(
        &mut self,
        token: u32,
        answer: &mut impl Answer,
        body_size: usize,
        trailers: usize,
        in_flight: &mut Budget,
        host: &mut impl Host,
    ) -> bool {
        self.count_answer(token, answer, body_size, trailers, in_flight, host);
        let drained = self.retirement.on_call_ended(self.outbox.calls_in_flight());
        if drained {
            host.log(
                Level::Info,
                "traffic-mirror: replaced configuration drained: every copy it sent has ended",
            );
        }
        drained
    }

    fn count_answer(
        &mut self,
        token: u32,
        answer: &mut impl Answer,
        body_size: usize,
        trailers: usize,
        in_flight: &mut Budget,
        host: &mut impl Host,
    ) {
        let Some(call) = self.outbox.end(token, in_flight) else {
            return;
        };
        let status = answer.header(":status");
        // Only a gRPC call's answer is looked at further: in its trailers, or in its
        // headers when it has none (a trailers-only answer).
        let grpc_status = match (call.grpc, trailers) {
            (false, _) => None,
            (true, 0) => answer.header("grpc-status"),
            (true, _) => answer.trailer("grpc-status"),
        };
        let now = host.now_nanos();
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
            host.log(
                Level::Warn,
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
            host.log(
                Level::Warn,
                &format!("traffic-mirror: target {name}: {what}; logged at most once a minute"),
            );
        }
    }
}

/// One request's way, from its headers to its copies handed over (or dropped).
#[derive(Debug, Default)]
pub struct Request {
    /// The copies being captured; `None` when no target sampled the request (nothing
    /// more of it is read), or once they have gone.
    capture: Option<Capture>,
}

impl Request {
    /// The request's headers arrived (`end_of_stream`: and nothing else will). The lane
    /// first: routing, the targets' `match` and the copies see it.
    pub fn on_headers<M: Metrics>(
        &mut self,
        worker: &mut Worker<M>,
        budgets: &mut Budgets,
        request: &mut impl RequestView,
        end_of_stream: bool,
        host: &mut impl Host,
    ) {
        if let Some(lanes) = &worker.plan.lanes {
            lanes.assign(request, &mut worker.rng, &mut worker.metrics);
        }
        self.capture = capture::begin(&worker.plan, request, &mut worker.rng, &mut worker.metrics);
        if end_of_stream {
            self.complete(worker, budgets, host);
        } else if let Some(capture) = self.capture.as_mut() {
            capture.hold(&mut budgets.buffered, &mut worker.metrics);
        }
    }

    /// A body chunk of `size` bytes passed on to the upstream (`end_of_stream`: the
    /// last). `read` reads it from the host, only when a copy still wants it; `None`: the
    /// host could not, and no copy is sent with part of its body.
    pub fn on_body<M: Metrics>(
        &mut self,
        worker: &mut Worker<M>,
        budgets: &mut Budgets,
        size: usize,
        end_of_stream: bool,
        read: impl FnOnce(usize) -> Option<Vec<u8>>,
        host: &mut impl Host,
    ) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        if capture.is_active() && size > 0 {
            match read(size) {
                Some(chunk) => {
                    capture.add_body_chunk(chunk, &mut budgets.buffered, &mut worker.metrics)
                }
                None => capture.abandon(&mut budgets.buffered, &mut worker.metrics),
            }
        }
        if end_of_stream {
            self.complete(worker, budgets, host);
        }
    }

    /// The request's trailers arrived: it is complete (trailers are not copied).
    pub fn on_trailers<M: Metrics>(
        &mut self,
        worker: &mut Worker<M>,
        budgets: &mut Budgets,
        host: &mut impl Host,
    ) {
        self.complete(worker, budgets, host);
    }

    /// The request is gone. If it ended before it was complete (a client or upstream
    /// reset), its copies count in `skipped_incomplete` and their bytes go back.
    pub fn on_end(self, metrics: &mut impl Metrics, budgets: &mut Budgets) {
        if let Some(capture) = self.capture {
            capture.end_incomplete(&mut budgets.buffered, metrics);
        }
    }

    /// The request is complete: the copies go to the host (into
    /// `max_in_flight_bytes`), and their bytes back to `max_buffered_bytes`.
    fn complete<M: Metrics>(
        &mut self,
        worker: &mut Worker<M>,
        budgets: &mut Budgets,
        host: &mut impl Host,
    ) {
        if let Some(capture) = self.capture.take() {
            let finished = capture.finish(&mut budgets.buffered, &mut worker.metrics);
            worker.send(&finished.copies, &mut budgets.in_flight, host);
            finished.release(&mut budgets.buffered);
        }
    }
}

/// Every context of one worker's VM, as the host creates, calls and deletes them: the
/// configurations (root contexts, `None` until configured), the requests in progress
/// (HTTP contexts, each under its root) and the budgets all of them share.
pub struct Contexts<M> {
    roots: IdMap<Option<Worker<M>>>,
    requests: IdMap<(u32, Request)>,
    budgets: Budgets,
}

impl<M> Default for Contexts<M> {
    fn default() -> Self {
        Contexts {
            roots: IdMap::default(),
            requests: IdMap::default(),
            budgets: Budgets::default(),
        }
    }
}

impl<M: Metrics> Contexts<M> {
    /// The host created a context: a root (no parent) or a request under `parent`.
    pub fn create(&mut self, context: u32, parent: u32) {
        if parent == 0 {
            self.roots.insert(context, None);
        } else {
            self.requests.insert(context, (parent, Request::default()));
        }
    }

    /// A root was configured (see [`Worker::configure`]).
    pub fn configure(&mut self, context: u32, worker: Worker<M>) {
        self.roots.insert(context, Some(worker));
    }

    /// Runs `f` on a request in progress, its configured root and the budgets.
    fn with_request(
        &mut self,
        context: u32,
        f: impl FnOnce(&mut Request, &mut Worker<M>, &mut Budgets),
    ) {
        let Some((root, request)) = self.requests.get_mut(&context) else {
            return;
        };
        if let Some(Some(worker)) = self.roots.get_mut(root) {
            f(request, worker, &mut self.budgets);
        }
    }

    /// A request's headers arrived ([`Request::on_headers`]).
    pub fn request_headers(
        &mut self,
        context: u32,
        headers: &mut impl RequestView,
        end_of_stream: bool,
        host: &mut impl Host,
    ) {
        self.with_request(context, |request, worker, budgets| {
            request.on_headers(worker, budgets, headers, end_of_stream, host);
        });
    }

    /// A body chunk passed ([`Request::on_body`]).
    pub fn request_body(
        &mut self,
        context: u32,
        size: usize,
        end_of_stream: bool,
        read: impl FnOnce(usize) -> Option<Vec<u8>>,
        host: &mut impl Host,
    ) {
        self.with_request(context, |request, worker, budgets| {
            request.on_body(worker, budgets, size, end_of_stream, read, host);
        });
    }

    /// A request's trailers arrived ([`Request::on_trailers`]).
    pub fn request_trailers(&mut self, context: u32, host: &mut impl Host) {
        self.with_request(context, |request, worker, budgets| {
            request.on_trailers(worker, budgets, host);
        });
    }

    /// Call `token`'s answer came to root `context` ([`Worker::answer_arrived`]).
    /// Should it come elsewhere, the root that owns the token counts it. Returns the root
    /// that, replaced, has just drained with it: the host must be told that root is done
    /// (and, once told, it goes: [`Contexts::delete`]).
    pub fn call_answered(
        &mut self,
        context: u32,
        token: u32,
        answer: &mut impl Answer,
        body_size: usize,
        trailers: usize,
        host: &mut impl Host,
    ) -> Option<u32> {
        let owner = match self.roots.get(&context) {
            Some(Some(worker)) if worker.owns_call(token) => context,
            _ => self.roots.iter().find_map(|(&id, worker)| {
                worker
                    .as_ref()
                    .is_some_and(|w| w.owns_call(token))
                    .then_some(id)
            })?,
        };
        let worker = self.roots.get_mut(&owner)?.as_mut()?;
        worker
            .answer_arrived(
                token,
                answer,
                body_size,
                trailers,
                &mut self.budgets.in_flight,
                host,
            )
            .then_some(owner)
    }

    /// The host is done with a context (`proxy_on_done`) and asks whether it may delete
    /// it: a request, always, and it goes now; a replaced root once every copy it sent has
    /// ended ([`Worker::retire`]), and then it goes too. The host deletes a context only
    /// after this, so the filter forgets it here and needs no `proxy_on_delete`, which
    /// saves a call into the VM per request.
    pub fn done(&mut self, context: u32, host: &mut impl Host) -> bool {
        let done = match self.roots.get_mut(&context) {
            Some(Some(worker)) => worker.retire(host),
            _ => true,
        };
        if done {
            self.delete(context);
        }
        done
    }

    /// Forgets a context. A request that had not completed counts as incomplete
    /// ([`Request::on_end`]); a root with calls still in flight gives their bytes back
    /// ([`Worker::forget_calls`]).
    pub fn delete(&mut self, context: u32) {
        if let Some((root, request)) = self.requests.remove(&context) {
            // Envoy is done with a root only after its requests, so the root is there.
            match self.roots.get_mut(&root) {
                Some(Some(worker)) => request.on_end(&mut worker.metrics, &mut self.budgets),
                _ => request.on_end(&mut Discard, &mut self.budgets),
            }
        } else if let Some(Some(mut worker)) = self.roots.remove(&context) {
            worker.forget_calls(&mut self.budgets.in_flight);
        }
    }

    /// The budgets every context shares.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// A configured root.
    pub fn root(&self, context: u32) -> Option<&Worker<M>> {
        self.roots.get(&context).and_then(Option::as_ref)
    }

    /// Requests in progress.
    pub fn requests_in_progress(&self) -> usize {
        self.requests.len()
    }
}
