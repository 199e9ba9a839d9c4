//! A request's whole way through the filter, written once, and every context of a
//! worker's VM ([`Vm`]): each of its methods is one proxy-wasm callback, so the module's
//! shell is translation only. On one worker, under one configuration (a root context,
//! [`Root`]), a request ([`Request`]) goes:
//!
//! 1. **headers** ([`Request::on_headers`]): the headers decide, as one value
//!    ([`crate::decision`]): the lane (written on the request, so that routes see it),
//!    `CONNECT` and upgrades, the loop header, and each target's `match`, key and declared
//!    length. The value is counted, and the copies it asks for are begun, their headers
//!    built once ([`crate::capture`]);
//! 2. **body** ([`Request::on_body`]): each chunk flows on to the upstream and is copied,
//!    its bytes reserved in `max_buffered_bytes` first; a body past `max_body_bytes`, or
//!    one that does not fit, drops the copies;
//! 3. **complete** (the body's end, or [`Request::on_trailers`]): each copy goes past its
//!    target's limits (`max_rps`, `max_in_flight`, `max_in_flight_bytes`) to the host
//!    ([`crate::host::Host::http_call`]), and the body's bytes go back to
//!    `max_buffered_bytes`;
//! 4. **answer** ([`Vm::on_http_call_response`]), whenever it comes, also long after the
//!    request, also after a configuration update: the copy ends in exactly one
//!    `responses_*` counter (and its gRPC status, and its latency), and its bytes go back
//!    to `max_in_flight_bytes`;
//! 5. a request that ends before it is complete ([`Request::on_end`]) sends nothing,
//!    counts in `skipped_incomplete`, and gives its bytes back;
//! 6. a replaced configuration ([`Vm::on_done`]) stays until every copy it sent has ended
//!    and been counted, then tells the host it is done ([`crate::retirement`]).
//!
//! Every count goes through the configuration's stats ([`Stats`]) and every host call
//! through [`Env`], which logs a failed one and goes on without it.

use crate::budget::{Budget, Budgets};
use crate::capture::{Capture, Dropped, ReadyCopy};
use crate::compare::{CompareResult, Response};
use crate::comparison::{
    let_go, read_response, Comparison, Ended, MirrorSide, Primary, PrimaryWatch, RequestInfo,
};
use crate::config::{self, Plan, ANSWER_BUFFER_RUNTIME_KEY};
use crate::decision::{decide, Decision, Mode};
use crate::host::{BufferType, Env, Host, LogLevel, MapType};
use crate::id_map::IdMap;
use crate::lanes::How;
use crate::log_throttle::{Failure, LogThrottle, MinuteQuota};
use crate::outbox::Outbox;
use crate::request::{HostRequest, RequestView};
use crate::retirement::Retirement;
use crate::sampling::Rng;
use crate::stats::{grpc_status_code, Counter, LaneStat, Stats};
use crate::wire;

/// One configuration on one worker (a root context): its plan, its stats, the copies it
/// has in flight, and its place in a configuration update. During an update a worker
/// holds two: the new one, and the old one until its copies have ended.
pub struct Root {
    plan: Plan,
    stats: Stats,
    outbox: Outbox,
    /// When each target's copy failures were last logged.
    failures: LogThrottle,
    rng: Rng,
    retirement: Retirement,
    /// Comparing copies sent, by call token, waiting for both sides.
    comparisons: IdMap<Comparison>,
    /// The mismatches each comparing target has logged this minute.
    mismatch_logs: MinuteQuota,
}

impl Root {
    /// Parses and compiles a configuration, and defines its stats. Logs the
    /// configuration's one error line (the host then refuses the plugin) or the line
    /// saying what it runs.
    fn configure(configuration: &[u8], env: &mut Env<impl Host>) -> Option<Root> {
        let plan = match config::parse(configuration) {
            Ok(plan) => plan,
            Err(e) => {
                env.log(LogLevel::Error, &e.to_string());
                return None;
            }
        };
        let stats = match Stats::define(&plan, env.host()) {
            Ok(stats) => stats,
            Err(status) => {
                env.log(
                    LogLevel::Error,
                    &format!(
                        "traffic-mirror: defining stats failed: status {}",
                        status.code()
                    ),
                );
                return None;
            }
        };
        let seed = env.host().random_seed();
        env.log(
            LogLevel::Info,
            &format!("traffic-mirror: configured {}", plan.summary()),
        );
        Some(Root {
            outbox: Outbox::new(&plan),
            failures: LogThrottle::new(plan.targets.len()),
            mismatch_logs: MinuteQuota::new(plan.targets.len()),
            stats,
            rng: Rng::new(seed),
            plan,
            retirement: Retirement::Serving,
            comparisons: IdMap::default(),
        })
    }

    /// Counts what a request's headers decided: its lane, and each target's counters.
    fn count_decision(&self, decision: &Decision<'_>, env: &mut Env<impl Host>) {
        if let Some(lane) = &decision.lane {
            let stat = match lane.how {
                How::Kept | How::KeptFromBaggage => LaneStat::Kept,
                How::Followed => LaneStat::Followed,
                How::NotFollowed { unknown: true } => {
                    self.stats.count_unknown_lane(env);
                    LaneStat::Followed
                }
                _ => LaneStat::Assigned,
            };
            if let Some(index) = lane.lane {
                self.stats.count_lane(index, stat, env);
            }
        }
        decision.for_each_count(self.plan.targets.len(), |target, counter| {
            self.stats.count(target, counter, env);
        });
    }

    /// Counts copies dropped before they were sent.
    fn count_dropped(&self, dropped: Dropped, env: &mut Env<impl Host>) {
        for (target, counter) in dropped {
            self.stats.count(target, counter, env);
        }
    }

    /// Sends the ready copies of one request, each past its target's limits and
    /// `max_in_flight_bytes`; a comparing copy sent waits for both sides (`watch`: the
    /// request's primary response).
    fn send(
        &mut self,
        copies: &[ReadyCopy],
        in_flight: &mut Budget,
        mut watch: Option<&mut PrimaryWatch>,
        env: &mut Env<impl Host>,
    ) {
        if copies.is_empty() {
            return;
        }
        // One clock read for every copy of the request: when they were handed over
        // (latency), and the rate limits' time.
        let now = env.now_nanos();
        if let Some(watch) = watch.as_deref_mut() {
            watch.request_complete(now);
        }
        for copy in copies {
            let index = copy.target;
            let Some(target) = self.plan.targets.get(index) else {
                continue;
            };
            let bytes = copy.headers.len().saturating_add(copy.body.len());
            let admitted = match self.outbox.admit(index, bytes, in_flight, || now) {
                Ok(admitted) => admitted,
                Err(counter) => {
                    self.stats.count(index, counter, env);
                    continue;
                }
            };
            match env.host().http_call(
                &target.cluster,
                &copy.headers,
                &copy.body,
                target.timeout_ms,
            ) {
                Ok(token) => {
                    self.outbox.sent(token, admitted, copy.grpc, now);
                    self.stats.count(index, Counter::Dispatched, env);
                    self.stats.add_in_flight(index, 1, env);
                    if let (Some(_), Some(watch)) = (&target.compare, watch.as_deref_mut()) {
                        let primary = watch.sent(token);
                        self.comparisons.insert(
                            token,
                            Comparison {
                                target: index,
                                info: watch.info.clone(),
                                primary,
                                mirror: None,
                            },
                        );
                    }
                }
                Err(status) => {
                    self.outbox.refused(admitted, in_flight);
                    self.stats.count(index, Counter::DispatchFailed, env);
                    if self.failures.allow(index, Failure::DispatchRefused, now) {
                        env.log(
                            LogLevel::Warn,
                            &format!(
                                "traffic-mirror: target {}: Envoy refused the copy to cluster \"{}\" (status {}: {})",
                                target.name,
                                target.cluster,
                                status.code(),
                                status.refusal()
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Call `token` ended with an answer of `body_size` bytes and `trailers` trailers
    /// (none of either when it ended without a complete answer). Returns whether this was
    /// the last copy a replaced configuration waited for.
    fn answer_arrived(
        &mut self,
        token: u32,
        body_size: usize,
        trailers: usize,
        in_flight: &mut Budget,
        env: &mut Env<impl Host>,
    ) -> bool {
        self.count_answer(token, body_size, trailers, in_flight, env);
        let drained = self.retirement.on_call_ended(self.outbox.sent_in_flight());
        if drained {
            env.log(
                LogLevel::Info,
                "traffic-mirror: replaced configuration drained: every copy it sent has ended",
            );
        }
        drained
    }

    /// Counts a copy's end: its status class, its gRPC status (read only for a gRPC
    /// call), its latency, one copy fewer in flight; its bytes go back to `in_flight`.
    fn count_answer(
        &mut self,
        token: u32,
        body_size: usize,
        trailers: usize,
        in_flight: &mut Budget,
        env: &mut Env<impl Host>,
    ) {
        let Some(copy) = self.outbox.end(token, in_flight) else {
            return;
        };
        const HEADERS: &str = "reading a mirror answer's headers";
        const TRAILERS: &str = "reading a mirror answer's trailers";
        let comparing = self.comparisons.contains_key(&token);
        let mut mirror: Option<(Response, bool)> = None;
        let (status, grpc_status) = if comparing {
            // A comparing copy's answer is read whole: its headers once, as a map.
            let names = self
                .plan
                .targets
                .get(copy.target)
                .and_then(|t| t.compare.as_ref())
                .map(|c| (c.headers.as_slice(), c.max_body_bytes))
                .unwrap_or((&[], 0));
            let map = env.header_map(MapType::HttpCallResponseHeaders, HEADERS);
            let pairs = wire::parse(&map).unwrap_or_default();
            let mut response = read_response(&pairs, names.0);
            if trailers > 0 {
                let trailer =
                    env.header(MapType::HttpCallResponseTrailers, "grpc-status", TRAILERS);
                if trailer.is_some() {
                    response.grpc_status = trailer;
                }
            }
            response.length = body_size;
            if body_size > 0 && body_size <= names.1 {
                response.body = env
                    .buffer(
                        BufferType::HttpCallResponseBody,
                        body_size,
                        "reading a mirror answer's body",
                    )
                    .unwrap_or_default();
            }
            let status = wire::first(&map, b":status").map(<[u8]>::to_vec);
            let grpc = copy.grpc.then(|| response.grpc_status.clone()).flatten();
            let failed = status.is_none() || made_by_envoy(&pairs);
            mirror = Some((response, failed));
            (status, grpc)
        } else {
            let status = env.header(MapType::HttpCallResponseHeaders, ":status", HEADERS);
            // Only a gRPC call's answer is looked at further: in its trailers, or in its
            // headers when it has none (a trailers-only answer).
            let grpc_status = match (copy.grpc, trailers) {
                (false, _) => None,
                (true, 0) => env.header(MapType::HttpCallResponseHeaders, "grpc-status", HEADERS),
                (true, _) => env.header(MapType::HttpCallResponseTrailers, "grpc-status", TRAILERS),
            };
            (status, grpc_status)
        };
        let now = env.now_nanos();
        let index = copy.target;
        let counter = Counter::for_response(status.as_deref());
        self.stats.count(index, counter, env);
        let grpc_code = grpc_status.as_deref().and_then(grpc_status_code);
        if let Some(code) = grpc_code {
            self.stats.count_grpc_status(index, code, env);
        }
        self.stats
            .record_latency(index, copy.latency_millis(now), env);
        self.stats.add_in_flight(index, -1, env);
        if let Some((response, failed)) = mirror {
            let limit = self.plan.max_in_flight_bytes;
            if let Some(mut comparison) = self.comparisons.remove(&token) {
                comparison.mirror =
                    Some(MirrorSide::new(response, failed, copy.latency_millis(now)));
                if comparison.ready() {
                    self.finish(comparison, in_flight, env);
                } else {
                    comparison.hold_mirror(in_flight, limit);
                    self.comparisons.insert(token, comparison);
                }
            }
        }

        let name = self.plan.targets.get(index).map_or("", |t| t.name.as_str());
        let limit = self.plan.max_answer_bytes;
        if body_size > limit && self.failures.allow(index, Failure::AnswerNotLimited, now) {
            env.log(
                LogLevel::Warn,
                &format!(
                    "traffic-mirror: target {name}: a mirror answer of {body_size} bytes arrived whole, more than max_answer_bytes ({limit}): Envoy's runtime value {ANSWER_BUFFER_RUNTIME_KEY} is not set to {limit}, so Envoy holds each answer up to 32 MiB; set {ANSWER_BUFFER_RUNTIME_KEY}: {limit} in its layered_runtime (Istio: runtimeValues in the proxy config); logged at most once a minute"
                ),
            );
        }
        let failure = match (counter, grpc_code) {
            (Counter::ResponsesFailed, _) => Failure::NoResponse,
            (Counter::Responses5xx, _) => Failure::ServerError,
            (_, Some(code)) if code != 0 => Failure::GrpcError,
            _ => return,
        };
        if self.failures.allow(index, failure, now) {
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
            env.log(
                LogLevel::Warn,
                &format!("traffic-mirror: target {name}: {what}; logged at most once a minute"),
            );
        }
    }

    /// The host replaced this configuration and asks whether it may go: at once when
    /// no copy is in flight, otherwise once the last one has ended and been counted.
    fn retire(&mut self, env: &mut Env<impl Host>) -> bool {
        let in_flight = self.outbox.sent_in_flight();
        let done = self.retirement.on_done(self.pending());
        if !done {
            env.log(
                LogLevel::Info,
                &format!("traffic-mirror: configuration replaced; counting the {in_flight} copies still in flight as they end"),
            );
        }
        done
    }

    /// What a replaced configuration waits for: copies in flight, and comparisons not
    /// yet run (once its requests are gone, each of those is a copy in flight too).
    fn pending(&self) -> usize {
        self.outbox.sent_in_flight() + self.comparisons.len()
    }

    /// Both sides of a comparison are in, or one side can no longer come: it runs, is
    /// counted and, for a difference, logged (at most `log_per_minute`).
    fn finish(&mut self, comparison: Comparison, in_flight: &mut Budget, env: &mut Env<impl Host>) {
        let Some(target) = self.plan.targets.get(comparison.target) else {
            return;
        };
        let Some(compare) = target.compare.as_ref() else {
            return;
        };
        let (max_paths, per_minute) = (compare.max_paths, compare.log_per_minute);
        let ended = comparison.finish(target, in_flight);
        let index = ended.target;
        let result = ended.found.result;
        self.stats.count_compare(index, result, env);
        if let (CompareResult::Body, Some(path)) = (result, &ended.found.path) {
            self.stats.count_path(index, path, max_paths, env);
        }
        if result.is_difference() {
            let now = env.now_nanos();
            if self.mismatch_logs.allow(index, per_minute, now) {
                let line = mismatch_line(&target.name, &ended, per_minute);
                env.log(LogLevel::Info, &line);
            }
        }
    }

    /// The comparisons waiting for the primary side that has just come (or never will).
    fn primary_settled(
        &mut self,
        tokens: &[u32],
        side: impl Fn() -> Primary,
        in_flight: &mut Budget,
        env: &mut Env<impl Host>,
    ) {
        for token in tokens {
            let Some(comparison) = self.comparisons.get_mut(token) else {
                continue;
            };
            if !matches!(comparison.primary, Primary::Pending) {
                continue;
            }
            comparison.primary = side();
            if comparison.ready() {
                if let Some(comparison) = self.comparisons.remove(token) {
                    self.finish(comparison, in_flight, env);
                }
            }
        }
    }
}

/// One request's way, from its headers to its copies handed over (or dropped).
#[derive(Debug, Default)]
pub struct Request {
    /// The copies being captured; `None` when no target copies the request (nothing
    /// more of it is read), or once they have gone.
    capture: Option<Capture>,
    /// The primary's response, gathered for the comparing copies of the request; `None`
    /// when no comparing target copies it (its response is not read at all).
    primary: Option<Box<PrimaryWatch>>,
}

impl Request {
    /// The request's headers arrived (`end_of_stream`: and nothing else will).
    fn on_headers(
        &mut self,
        root: &mut Root,
        budgets: &mut Budgets,
        end_of_stream: bool,
        env: &mut Env<impl Host>,
    ) {
        {
            let mut request = HostRequest::new(env);
            let decision = decide(&root.plan, &mut request, &mut root.rng, Mode::Filter);
            let compared = decision.copying().any(|t| {
                root.plan
                    .targets
                    .get(t)
                    .is_some_and(|t| t.compare.is_some())
            });
            if compared {
                let method = request.method().to_vec();
                let path = request.path().to_vec();
                let info = RequestInfo::new(&method, &path, request.header("x-request-id"));
                let targets = decision.copying().filter_map(|t| root.plan.targets.get(t));
                self.primary = Some(Box::new(PrimaryWatch::new(info, targets)));
            }
            // The map is read once for all the copies of the request.
            let map = decision.copies_any().then(|| request.header_map());
            root.count_decision(&decision, env);
            if let Some(map) = map {
                self.capture = Some(Capture::begin(&root.plan, &decision, &map));
            }
        }
        if end_of_stream {
            self.complete(root, budgets, env);
        } else if let Some(capture) = self.capture.as_mut() {
            let dropped = capture.hold(&mut budgets.buffered);
            root.count_dropped(dropped, env);
        }
    }

    /// A body chunk of `size` bytes passed on to the upstream (`end_of_stream`: the
    /// last). It is read from the host only when a copy still wants it; when the host
    /// cannot give it, no copy is sent with part of its body.
    fn on_body(
        &mut self,
        root: &mut Root,
        budgets: &mut Budgets,
        size: usize,
        end_of_stream: bool,
        env: &mut Env<impl Host>,
    ) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        if capture.is_active() && size > 0 {
            let chunk = env.buffer(
                BufferType::HttpRequestBody,
                size,
                "reading a request body chunk",
            );
            let dropped = match chunk {
                Some(chunk) => capture.add_body_chunk(chunk, &mut budgets.buffered),
                None => capture.abandon(&mut budgets.buffered),
            };
            root.count_dropped(dropped, env);
        }
        if end_of_stream {
            self.complete(root, budgets, env);
        }
    }

    /// The request's trailers arrived: it is complete (trailers are not copied).
    fn on_trailers(&mut self, root: &mut Root, budgets: &mut Budgets, env: &mut Env<impl Host>) {
        self.complete(root, budgets, env);
    }

    /// The request is gone. If it ended before it was complete (a client or upstream
    /// reset), its copies count in `skipped_incomplete` (under its configuration, if it
    /// is still there) and their bytes go back. A primary response that had not
    /// completed never will: its comparisons end as `primary_incomplete`.
    fn on_end(self, root: Option<&mut Root>, budgets: &mut Budgets, env: &mut Env<impl Host>) {
        let dropped = self
            .capture
            .map(|capture| capture.end_incomplete(&mut budgets.buffered));
        let unanswered = self
            .primary
            .map(|watch| watch.end(&mut budgets.in_flight))
            .unwrap_or_default();
        if let Some(root) = root {
            if let Some(dropped) = dropped {
                root.count_dropped(dropped, env);
            }
            root.primary_settled(
                &unanswered,
                || Primary::Incomplete,
                &mut budgets.in_flight,
                env,
            );
        }
    }

    /// The request is complete: the copies go to the host (into
    /// `max_in_flight_bytes`), and their bytes back to `max_buffered_bytes`.
    fn complete(&mut self, root: &mut Root, budgets: &mut Budgets, env: &mut Env<impl Host>) {
        if let Some(capture) = self.capture.take() {
            let (ready, dropped) = capture.finish(&mut budgets.buffered);
            root.count_dropped(dropped, env);
            root.send(
                &ready.copies,
                &mut budgets.in_flight,
                self.primary.as_deref_mut(),
                env,
            );
            ready.release(&mut budgets.buffered);
        }
    }

    /// The primary's response headers passed (`end_of_stream`: and nothing else will).
    /// Read only for a request with comparing copies.
    fn on_response_headers(
        &mut self,
        root: &mut Root,
        budgets: &mut Budgets,
        end_of_stream: bool,
        env: &mut Env<impl Host>,
    ) {
        let Some(watch) = self.primary.as_mut() else {
            return;
        };
        let map = env.header_map(MapType::ResponseHeaders, "reading the response headers");
        watch.headers(&map, &mut budgets.in_flight, root.plan.max_in_flight_bytes);
        if watch.no_room() {
            let tokens = watch.tokens().to_vec();
            root.primary_settled(&tokens, || Primary::NoRoom, &mut budgets.in_flight, env);
        }
        if end_of_stream {
            self.response_complete(root, budgets, env);
        }
    }

    /// A chunk of the primary's response body passed: kept while it can be compared.
    fn on_response_body(
        &mut self,
        root: &mut Root,
        budgets: &mut Budgets,
        size: usize,
        end_of_stream: bool,
        env: &mut Env<impl Host>,
    ) {
        let Some(watch) = self.primary.as_mut() else {
            return;
        };
        let chunk = if watch.wants_body(size) && size > 0 {
            env.buffer(
                BufferType::HttpResponseBody,
                size,
                "reading a response body chunk",
            )
        } else {
            None
        };
        watch.body(size, chunk, &mut budgets.in_flight);
        if end_of_stream {
            self.response_complete(root, budgets, env);
        }
    }

    /// The primary's response trailers passed: its `grpc-status`, and its end.
    fn on_response_trailers(
        &mut self,
        root: &mut Root,
        budgets: &mut Budgets,
        env: &mut Env<impl Host>,
    ) {
        let Some(watch) = self.primary.as_mut() else {
            return;
        };
        let grpc_status = env.header(
            MapType::ResponseTrailers,
            "grpc-status",
            "reading the response trailers",
        );
        watch.trailers(grpc_status);
        self.response_complete(root, budgets, env);
    }

    /// The primary's response is complete: the comparisons that waited for it run.
    fn response_complete(
        &mut self,
        root: &mut Root,
        budgets: &mut Budgets,
        env: &mut Env<impl Host>,
    ) {
        let Some(watch) = self.primary.as_mut() else {
            return;
        };
        let now = env.now_nanos();
        let Some((side, tokens)) = watch.complete(now, &mut budgets.in_flight) else {
            return;
        };
        let tokens = tokens.to_vec();
        root.primary_settled(
            &tokens,
            || Primary::Done(side.clone()),
            &mut budgets.in_flight,
            env,
        );
        let_go(side, &mut budgets.in_flight);
    }
}

/// A mismatch's log line: what differs and where, both sides' status, body length and
/// latency, and the request's method, path (without its query) and `x-request-id`; never
/// a value of a body or a header.
fn mismatch_line(target: &str, ended: &Ended, per_minute: u32) -> String {
    let what = match (&ended.found.path, &ended.found.header) {
        (Some(path), _) => format!(" at {}", if path.is_empty() { "the root" } else { path }),
        (_, Some(header)) => format!(" in header {header}"),
        _ => String::new(),
    };
    let side = |side: &Option<(Option<u16>, usize, u64)>| match side {
        Some((status, length, millis)) => format!(
            "{} ({length} bytes, {millis} ms)",
            status.map_or_else(|| "no status".to_string(), |s| s.to_string())
        ),
        None => "none".to_string(),
    };
    let info = &ended.info;
    format!(
        "traffic-mirror: target {target}: compare {}{what}: primary {}, mirror {}; {} {} x-request-id {}; logged at most {per_minute} a minute",
        ended.found.result.name(),
        side(&ended.primary),
        side(&ended.mirror),
        String::from_utf8_lossy(&info.method),
        String::from_utf8_lossy(&info.path),
        if info.request_id.is_empty() {
            "(none)".to_string()
        } else {
            String::from_utf8_lossy(&info.request_id).into_owned()
        },
    )
}

/// Whether Envoy made a call's answer up itself rather than passing on the mirror's: its
/// own answers (the 503 of a refused or reset connection, the 504 past `timeout_ms`) lack
/// the `x-envoy-upstream-service-time` that its router sets on every answer from an
/// upstream (`Router::Filter::onUpstreamHeaders`; the async client's router does not
/// suppress it), so a mirror's own 503 or 504 is told from Envoy's (docs/compare.md).
fn made_by_envoy(answer: &[wire::Pair<'_>]) -> bool {
    !answer
        .iter()
        .any(|(name, _)| *name == b"x-envoy-upstream-service-time")
}

/// Every context of one worker's VM instance, as the host creates, calls and deletes
/// them, with the host they call: the configurations (root contexts, `None` until
/// configured), the requests in progress (HTTP contexts, each under its root) and the
/// budgets all of them share. Each `on_*` method is the proxy-wasm callback of that name.
pub struct Vm<H> {
    env: Env<H>,
    roots: IdMap<Option<Root>>,
    requests: IdMap<(u32, Request)>,
    budgets: Budgets,
}

impl<H: Host> Vm<H> {
    pub fn new(host: H) -> Self {
        Vm {
            env: Env::new(host),
            roots: IdMap::default(),
            requests: IdMap::default(),
            budgets: Budgets::default(),
        }
    }

    /// `proxy_on_context_create`: a root (no parent) or a request under `parent`.
    pub fn on_context_create(&mut self, context: u32, parent: u32) {
        if parent == 0 {
            self.roots.insert(context, None);
        } else {
            self.requests.insert(context, (parent, Request::default()));
        }
    }

    /// `proxy_on_vm_start`: says which filter this is; always starts.
    pub fn on_vm_start(&mut self, _root: u32, _vm_configuration_size: usize) -> bool {
        self.env.log(
            LogLevel::Info,
            &format!(
                "traffic-mirror {} starting (hash-sampled, fire-and-forget mirroring)",
                env!("CARGO_PKG_VERSION")
            ),
        );
        true
    }

    /// `proxy_on_configure`: reads the plugin configuration and configures root `root`
    /// with it; false (the host refuses the plugin) for a bad configuration.
    pub fn on_configure(&mut self, root: u32, configuration_size: usize) -> bool {
        let configuration = self
            .env
            .buffer(
                BufferType::PluginConfiguration,
                configuration_size,
                "reading the plugin configuration",
            )
            .unwrap_or_default();
        match Root::configure(&configuration, &mut self.env) {
            Some(configured) => {
                self.roots.insert(root, Some(configured));
                true
            }
            None => false,
        }
    }

    /// Runs `f` on a request in progress, its configured root, the budgets and the host.
    fn with_request(
        &mut self,
        context: u32,
        f: impl FnOnce(&mut Request, &mut Root, &mut Budgets, &mut Env<H>),
    ) {
        let Some((root, request)) = self.requests.get_mut(&context) else {
            return;
        };
        if let Some(Some(root)) = self.roots.get_mut(root) {
            f(request, root, &mut self.budgets, &mut self.env);
        }
    }

    /// `proxy_on_request_headers` ([`Request::on_headers`]). The filter never pauses a
    /// request: the host goes on whatever happens here.
    pub fn on_request_headers(&mut self, context: u32, _headers: usize, end_of_stream: bool) {
        self.with_request(context, |request, root, budgets, env| {
            request.on_headers(root, budgets, end_of_stream, env);
        });
    }

    /// `proxy_on_request_body` ([`Request::on_body`]).
    pub fn on_request_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) {
        self.with_request(context, |request, root, budgets, env| {
            request.on_body(root, budgets, body_size, end_of_stream, env);
        });
    }

    /// `proxy_on_request_trailers` ([`Request::on_trailers`]).
    pub fn on_request_trailers(&mut self, context: u32, _trailers: usize) {
        self.with_request(context, |request, root, budgets, env| {
            request.on_trailers(root, budgets, env);
        });
    }

    /// `proxy_on_response_headers`: the primary's response headers (read only for a
    /// request with comparing copies).
    pub fn on_response_headers(&mut self, context: u32, _headers: usize, end_of_stream: bool) {
        self.with_request(context, |request, root, budgets, env| {
            request.on_response_headers(root, budgets, end_of_stream, env);
        });
    }

    /// `proxy_on_response_body`.
    pub fn on_response_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) {
        self.with_request(context, |request, root, budgets, env| {
            request.on_response_body(root, budgets, body_size, end_of_stream, env);
        });
    }

    /// `proxy_on_response_trailers`.
    pub fn on_response_trailers(&mut self, context: u32, _trailers: usize) {
        self.with_request(context, |request, root, budgets, env| {
            request.on_response_trailers(root, budgets, env);
        });
    }

    /// `proxy_on_http_call_response`: call `token`'s answer came to root `root`, which
    /// counts it. A configuration that was replaced and has just drained with it tells the
    /// host it is done, and goes.
    ///
    /// An answer always comes to the root that sent the call: the host files every call
    /// under the root context of the context that made it (proxy-wasm-cpp-host's
    /// `http_call`: `contextOrEffectiveContext()->root_context()`), and Envoy looks a
    /// token up among that root's calls only (`Context::onHttpCallSuccess`). A token
    /// this root does not hold is ignored.
    pub fn on_http_call_response(
        &mut self,
        root: u32,
        token: u32,
        _headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        let Some(Some(answered)) = self.roots.get_mut(&root) else {
            return;
        };
        let drained = answered.answer_arrived(
            token,
            body_size,
            trailers,
            &mut self.budgets.in_flight,
            &mut self.env,
        );
        if drained {
            // The host deletes the root once this callback has returned, without asking
            // again.
            match self.env.host().done() {
                Ok(()) => {
                    self.roots.remove(&root);
                }
                Err(status) => self
                    .env
                    .failed("telling Envoy a replaced configuration is done", status),
            }
        }
    }

    /// `proxy_on_done`: the host is done with a context and asks whether it may delete
    /// it. A request: always, and it goes now. A root the host replaced: once every copy
    /// it sent has ended ([`crate::retirement`]), and then it goes too. The host deletes
    /// a context only after this, so the filter forgets it here and needs no
    /// `proxy_on_delete`, which saves a call into the VM per request. A root goes only
    /// with no copy in flight, so no answer is ever left uncounted.
    pub fn on_done(&mut self, context: u32) -> bool {
        if let Some((root, request)) = self.requests.remove(&context) {
            let root = self.roots.get_mut(&root).and_then(Option::as_mut);
            request.on_end(root, &mut self.budgets, &mut self.env);
            return true;
        }
        let done = match self.roots.get_mut(&context) {
            Some(Some(root)) => root.retire(&mut self.env),
            _ => true,
        };
        if done {
            self.roots.remove(&context);
        }
        done
    }

    /// The host.
    pub fn host(&mut self) -> &mut H {
        self.env.host()
    }

    /// The host, to read only.
    pub fn host_ref(&self) -> &H {
        self.env.host_ref()
    }

    /// The budgets every context shares.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// A configured root.
    pub fn root(&self, context: u32) -> Option<&Root> {
        self.roots.get(&context).and_then(Option::as_ref)
    }

    /// Requests in progress.
    pub fn requests_in_progress(&self) -> usize {
        self.requests.len()
    }
}
