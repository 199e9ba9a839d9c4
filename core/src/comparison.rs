//! Comparisons in progress: for a target with `compare`, each copy's answer is compared
//! with the primary's response to the same request, once both are in, whichever comes
//! first, also when the client's stream is long gone ([`crate::compare`] is the comparison
//! itself).
//!
//! - The request gathers the primary's response as it passes ([`PrimaryWatch`]): its
//!   headers, trailers and body (never paused, only read), the body held in
//!   `max_in_flight_bytes` from the response's headers (its declared length, or
//!   `compare.max_body_bytes`) until the last comparison that needs it has ended. Held
//!   once for every copy of the request.
//! - Each comparing copy sent waits in its configuration ([`Comparison`]) for the mirror's
//!   answer and the primary's response; the mirror's answer, when it comes first, is held
//!   in `max_in_flight_bytes` too.
//! - Whichever side completes the pair runs the comparison, one at a time (a VM runs one
//!   callback at a time), so what parsing takes does not grow with the traffic.

use std::rc::Rc;

use crate::budget::Budget;
use crate::compare::{compare, CompareResult, Found, Response};
use crate::config::Target;
use crate::wire;

/// What a comparison's log line says of the request: never a body or header value, but
/// its `x-request-id` (to find it in the access log), its method and its path without the
/// query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// A HEAD request: its answers have no body to compare.
    pub head: bool,
    pub method: Vec<u8>,
    pub path: Vec<u8>,
    pub request_id: Vec<u8>,
}

/// At most this much of each is kept for the log line.
const INFO_BYTES: usize = 256;

impl RequestInfo {
    pub fn new(method: &[u8], path: &[u8], request_id: Option<&[u8]>) -> RequestInfo {
        let path = crate::matching::path_without_query(path);
        let cut = |bytes: &[u8]| bytes.get(..INFO_BYTES).unwrap_or(bytes).to_vec();
        RequestInfo {
            head: method == b"HEAD",
            method: cut(method),
            path: cut(path),
            request_id: cut(request_id.unwrap_or_default()),
        }
    }
}

/// The primary's whole response, held for the comparisons of one request.
#[derive(Debug)]
pub struct PrimarySide {
    pub response: Response,
    /// From the request's end (when its copies were sent) to the response's end.
    pub latency_millis: u64,
    /// Held in `max_in_flight_bytes` until the last comparison that needs it has ended.
    reserved: usize,
}

/// Where the primary's response is.
#[derive(Debug)]
enum PrimaryState {
    /// Its headers have not arrived.
    Waiting,
    /// Its headers arrived; its body is arriving.
    Receiving {
        response: Response,
        /// Bytes held in `max_in_flight_bytes` for its body.
        reserved: usize,
        /// Whether its body is still kept (false past what can be compared).
        keeping: bool,
    },
    Complete(Rc<PrimarySide>),
    /// Its body would not fit in `max_in_flight_bytes`.
    NoRoom,
}

/// A request's view of its primary response, for the comparing copies it sent.
#[derive(Debug)]
pub struct PrimaryWatch {
    pub info: Rc<RequestInfo>,
    /// Every header a comparing target of the request lists.
    names: Vec<String>,
    /// The most body any of them compares.
    limit: usize,
    state: PrimaryState,
    /// The comparing copies sent, by call token.
    tokens: Vec<u32>,
    /// When the request was complete.
    complete_nanos: Option<u64>,
}

/// How a comparing copy's primary side stands, for its [`Comparison`].
#[derive(Debug, Clone)]
pub enum Primary {
    Pending,
    Done(Rc<PrimarySide>),
    Incomplete,
    NoRoom,
}

/// The mirror's answer to one comparing copy.
#[derive(Debug)]
pub struct MirrorSide {
    pub response: Response,
    /// It ended without a whole answer of the mirror's own (a reset, an answer cut at
    /// the buffer limit, or one Envoy made up: its 503 and 504).
    pub failed: bool,
    pub latency_millis: u64,
    /// Held in `max_in_flight_bytes` while it waits for the primary.
    reserved: usize,
}

/// One comparing copy sent, waiting for both sides.
#[derive(Debug)]
pub struct Comparison {
    pub target: usize,
    pub info: Rc<RequestInfo>,
    pub primary: Primary,
    pub mirror: Option<MirrorSide>,
}

/// A comparison's end: what it found, with both sides for the log line.
#[derive(Debug)]
pub struct Ended {
    pub target: usize,
    pub found: Found,
    pub info: Rc<RequestInfo>,
    /// Status, body length and latency of each side, when it has them.
    pub primary: Option<(Option<u16>, usize, u64)>,
    pub mirror: Option<(Option<u16>, usize, u64)>,
}

impl PrimaryWatch {
    /// Watches the primary's response for the comparing targets `targets` of a request.
    pub fn new<'a>(info: RequestInfo, targets: impl Iterator<Item = &'a Target>) -> PrimaryWatch {
        let mut names: Vec<String> = Vec::new();
        let mut limit = 0;
        for compare in targets.filter_map(|t| t.compare.as_ref()) {
            limit = limit.max(compare.max_body_bytes);
            for name in &compare.headers {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        PrimaryWatch {
            info: Rc::new(info),
            names,
            limit,
            state: PrimaryState::Waiting,
            tokens: Vec::new(),
            complete_nanos: None,
        }
    }

    /// Whether the primary's body could not be held (its comparisons are skipped).
    pub fn no_room(&self) -> bool {
        matches!(self.state, PrimaryState::NoRoom)
    }

    /// The comparing copies sent, by call token.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// A comparing copy went as call `token`: how its primary side stands.
    pub fn sent(&mut self, token: u32) -> Primary {
        self.tokens.push(token);
        match &self.state {
            PrimaryState::Complete(side) => Primary::Done(Rc::clone(side)),
            PrimaryState::NoRoom => Primary::NoRoom,
            PrimaryState::Waiting | PrimaryState::Receiving { .. } => Primary::Pending,
        }
    }

    /// The request is complete (its copies sent) at `now_nanos`.
    pub fn request_complete(&mut self, now_nanos: u64) {
        self.complete_nanos.get_or_insert(now_nanos);
    }

    /// The response's headers arrived, as a serialized map. Its body is held from now
    /// on, its room reserved in `in_flight` within `limit`, or the comparisons are skipped
    /// for want of room.
    pub fn headers(&mut self, map: &[u8], in_flight: &mut Budget, limit: usize) {
        if !matches!(self.state, PrimaryState::Waiting) {
            return;
        }
        let pairs = wire::parse(map).unwrap_or_default();
        let response = read_response(&pairs, &self.names);
        let declared: Option<usize> = header(&pairs, "content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
        // A declared length past what can be compared: too large, and nothing is held.
        let (room, keeping) = match declared {
            Some(length) if length > self.limit => (0, false),
            Some(length) => (length, true),
            None => (self.limit, true),
        };
        if !in_flight.try_reserve(limit, room) {
            self.state = PrimaryState::NoRoom;
            return;
        }
        let mut response = response;
        if !keeping {
            response.length = declared.unwrap_or_default();
        }
        self.state = PrimaryState::Receiving {
            response,
            reserved: room,
            keeping,
        };
    }

    /// Whether a body chunk of `size` bytes is wanted (then the caller reads it and hands
    /// it to [`PrimaryWatch::body`]).
    pub fn wants_body(&self, size: usize) -> bool {
        matches!(&self.state, PrimaryState::Receiving { keeping: true, response, .. }
            if response.body.len().saturating_add(size) <= self.limit)
    }

    /// A body chunk of `size` bytes passed; `chunk` is its bytes when they were wanted
    /// and could be read.
    pub fn body(&mut self, size: usize, chunk: Option<Vec<u8>>, in_flight: &mut Budget) {
        // Envoy often ends a body with an empty chunk (end_of_stream alone): nothing to add.
        if size == 0 {
            return;
        }
        let limit = self.limit;
        if let PrimaryState::Receiving {
            response,
            reserved,
            keeping,
        } = &mut self.state
        {
            response.length = response.length.saturating_add(size);
            match chunk {
                Some(chunk) if *keeping && response.body.len() + chunk.len() <= limit => {
                    if response.body.is_empty() && chunk.len() == *reserved {
                        // The whole body at once: kept as it was read.
                        response.body = chunk;
                    } else {
                        // At its final size at once: chunks never grow it past what is
                        // reserved.
                        if response.body.capacity() == 0 {
                            response.body.reserve_exact(*reserved);
                        }
                        response.body.extend_from_slice(&chunk);
                    }
                }
                _ if *keeping => {
                    // Past what can be compared (or unreadable): too large, let go of it.
                    *keeping = false;
                    response.body = Vec::new();
                    in_flight.release(std::mem::take(reserved));
                }
                _ => {}
            }
        }
    }

    /// The response's trailers arrived, with this `grpc-status`.
    pub fn trailers(&mut self, grpc_status: Option<Vec<u8>>) {
        if let PrimaryState::Receiving { response, .. } = &mut self.state {
            if grpc_status.is_some() {
                response.grpc_status = grpc_status;
            }
        }
    }

    /// The response is complete at `now_nanos`: the comparisons waiting for it can run.
    /// Returns it, and the comparing copies sent.
    pub fn complete(
        &mut self,
        now_nanos: u64,
        in_flight: &mut Budget,
    ) -> Option<(Rc<PrimarySide>, &[u32])> {
        if !matches!(self.state, PrimaryState::Receiving { .. }) {
            return None;
        }
        let PrimaryState::Receiving {
            response, reserved, ..
        } = std::mem::replace(&mut self.state, PrimaryState::Waiting)
        else {
            return None;
        };
        // What the body takes, no more, stays held.
        let mut response = response;
        response.body.shrink_to_fit();
        let kept = response.body.capacity().min(reserved);
        in_flight.release(reserved - kept);
        let started = self.complete_nanos.unwrap_or(now_nanos);
        let side = Rc::new(PrimarySide {
            latency_millis: now_nanos.saturating_sub(started) / 1_000_000,
            response,
            reserved: kept,
        });
        self.state = PrimaryState::Complete(Rc::clone(&side));
        Some((side, &self.tokens))
    }

    /// The stream ended. A response that had not completed never will: its comparisons
    /// end as `primary_incomplete` (their tokens returned). What is held goes back, but
    /// for a whole response that comparisons still hold.
    pub fn end(self, in_flight: &mut Budget) -> Vec<u32> {
        match self.state {
            PrimaryState::Complete(side) => {
                let_go(side, in_flight);
                Vec::new()
            }
            PrimaryState::Receiving { reserved, .. } => {
                in_flight.release(reserved);
                self.tokens
            }
            PrimaryState::Waiting => self.tokens,
            PrimaryState::NoRoom => Vec::new(),
        }
    }
}

/// Drops a hold on a primary response; the last one gives its bytes back.
pub fn let_go(side: Rc<PrimarySide>, in_flight: &mut Budget) {
    if let Ok(side) = Rc::try_unwrap(side) {
        in_flight.release(side.reserved);
    }
}

/// The first value of a header in parsed pairs.
fn header<'a>(pairs: &[wire::Pair<'a>], name: &str) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

/// What the comparison reads of an answer's headers: its status, `grpc-status` (of a
/// trailers-only answer), content type and encoding, and the listed headers.
pub fn read_response(pairs: &[wire::Pair<'_>], names: &[String]) -> Response {
    Response {
        status: Response::parse_status(header(pairs, ":status")),
        grpc_status: header(pairs, "grpc-status").map(<[u8]>::to_vec),
        headers: names
            .iter()
            .map(|name| (name.clone(), header(pairs, name).map(<[u8]>::to_vec)))
            .collect(),
        content_type: header(pairs, "content-type").map(<[u8]>::to_vec),
        content_encoding: header(pairs, "content-encoding").map(<[u8]>::to_vec),
        body: Vec::new(),
        length: 0,
    }
}

impl MirrorSide {
    /// The mirror's answer, read, to be held while it waits (`reserved` bytes of it are
    /// in `max_in_flight_bytes`).
    pub fn new(response: Response, failed: bool, latency_millis: u64) -> MirrorSide {
        MirrorSide {
            response,
            failed,
            latency_millis,
            reserved: 0,
        }
    }
}

impl Comparison {
    /// Whether both sides are in.
    pub fn ready(&self) -> bool {
        self.mirror.is_some() && !matches!(self.primary, Primary::Pending)
    }

    /// Holds the mirror's answer while the primary is awaited: its bytes in `in_flight`
    /// (they were the copy's until its answer came, so they fit).
    pub fn hold_mirror(&mut self, in_flight: &mut Budget, limit: usize) {
        if let Some(mirror) = &mut self.mirror {
            let bytes = mirror.response.body.capacity();
            if in_flight.try_reserve(limit, bytes) {
                mirror.reserved = bytes;
            } else {
                // Cannot happen (the copy held more); were it to, compare without it.
                mirror.response.body = Vec::new();
                mirror.failed = true;
            }
        }
    }

    /// Runs the comparison (both sides in) under the target's `compare`, and gives back
    /// every byte it held.
    pub fn finish(self, target: &Target, in_flight: &mut Budget) -> Ended {
        let Comparison {
            target: index,
            info,
            primary,
            mirror,
        } = self;
        let mirror_summary = mirror
            .as_ref()
            .map(|m| (m.response.status, m.response.length, m.latency_millis));
        let primary_summary = match &primary {
            Primary::Done(side) => Some((
                side.response.status,
                side.response.length,
                side.latency_millis,
            )),
            _ => None,
        };
        let found = match (&primary, &mirror, target.compare.as_ref()) {
            (_, Some(m), _) if m.failed => only(CompareResult::MirrorFailed),
            (Primary::Incomplete, _, _) => only(CompareResult::PrimaryIncomplete),
            (Primary::NoRoom, _, _) => only(CompareResult::SkippedBudget),
            (Primary::Done(side), Some(m), Some(config)) => {
                compare(config, info.head, &side.response, &m.response)
            }
            _ => only(CompareResult::MirrorFailed),
        };
        if let Some(m) = mirror {
            in_flight.release(m.reserved);
        }
        if let Primary::Done(side) = primary {
            let_go(side, in_flight);
        }
        Ended {
            target: index,
            found,
            info,
            primary: primary_summary,
            mirror: mirror_summary,
        }
    }
}

fn only(result: CompareResult) -> Found {
    Found {
        result,
        path: None,
        exact_path: None,
        header: None,
    }
}
