//! The copies of a request being captured: decided at its headers (see
//! [`crate::decision`]), their headers built once, the body copied chunk by chunk as it
//! flows on to the upstream, every byte reserved in `max_buffered_bytes` before it is
//! allocated, until the request is complete and the copies go to the limits and the host.

use std::rc::Rc;

use crate::budget::Budget;
use crate::config::Plan;
use crate::copy::copy_headers;
use crate::decision::{decide_request, Decision, Gate};
use crate::metrics::{Counter, Metrics};
use crate::request::RequestView;
use crate::sampling::Rng;
use crate::wire;

/// A copy being captured: which target, and its headers, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Capturing {
    target: usize,
    max_body_bytes: usize,
    /// Serialized header map (see [`crate::wire`]).
    headers: Vec<u8>,
}

/// The body of a request being captured. Every buffer is allocated at its final size,
/// never grown by doubling: what the budget reserved is what memory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Body {
    /// The body so far in one buffer: the first chunk as read from the host, or a
    /// buffer of the declared `content-length`.
    joined: Vec<u8>,
    /// Later chunks of a body without a declared length (or past it), joined into one
    /// buffer once the request is complete.
    rest: Vec<Vec<u8>>,
    /// Bytes received.
    len: usize,
}

/// The copies of one request, while its body arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    copies: Vec<Capturing>,
    /// The request is a gRPC call.
    grpc: bool,
    /// The request's declared `content-length`.
    declared: Option<usize>,
    body: Body,
    /// Bytes held in the worker's [`Budget`] for this request.
    reserved: usize,
    /// The configuration's `max_buffered_bytes`.
    limit: usize,
}

/// A complete copy, ready for the limits and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyCopy {
    pub target: usize,
    /// A gRPC call (`content-type: application/grpc...`): its answer's `grpc-status`
    /// is counted too.
    pub grpc: bool,
    /// Serialized header map (see [`crate::wire`]).
    pub headers: Vec<u8>,
    /// Shared by every target's copy of the same request.
    pub body: Rc<Vec<u8>>,
}

/// A request's complete copies, still holding their bytes in the budget: hand them to
/// the host, then [`Finished::release`] them.
#[derive(Debug)]
#[must_use = "the copies hold budget until released"]
pub struct Finished {
    pub copies: Vec<ReadyCopy>,
    held: usize,
}

impl Finished {
    /// The copies were handed over (or dropped): their bytes go back to the budget.
    pub fn release(self, budget: &mut Budget) {
        budget.release(self.held);
    }
}

/// Decides every target for a request at its headers. Returns a capture when at least
/// one target sampled it, `None` (having allocated nothing) otherwise.
pub fn begin<R: RequestView>(
    plan: &Plan,
    request: &mut R,
    rng: &mut Rng,
    metrics: &mut impl Metrics,
) -> Option<Capture> {
    let mut sampled: Vec<usize> = Vec::new();
    let mut content_length: Option<Option<usize>> = None;
    let gate = decide_request(
        plan,
        request,
        rng,
        false,
        |index, target, decision, request| {
            match decision {
                Decision::NotMatched(_) => return,
                Decision::MissingKey => {
                    metrics.count(index, Counter::Requests);
                    metrics.count(index, Counter::SkippedMissingKey);
                    return;
                }
                decision => {
                    metrics.count(index, Counter::Requests);
                    if !decision.is_sampled() {
                        return;
                    }
                    metrics.count(index, Counter::Sampled);
                }
            }
            // A declared length over the cap is known now: skip before copying anything.
            let declared = *content_length.get_or_insert_with(|| declared_length(request));
            if declared.is_some_and(|len| len > target.max_body_bytes) {
                metrics.count(index, Counter::SkippedBodyTooLarge);
                return;
            }
            sampled.push(index);
        },
    );
    if gate == Gate::Loop {
        for target in 0..plan.targets.len() {
            metrics.count(target, Counter::SkippedLoop);
        }
    }
    if sampled.is_empty() {
        return None;
    }
    // Read the header map once for all the copies of this request.
    let map = request.header_map();
    let pairs = wire::parse(&map).unwrap_or_default();
    let grpc = pairs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"content-type"))
        .is_some_and(|(_, value)| is_grpc_content_type(value));
    let copies = sampled
        .into_iter()
        .filter_map(|index| {
            let target = plan.targets.get(index)?;
            Some(Capturing {
                target: index,
                max_body_bytes: target.max_body_bytes,
                headers: copy_headers(&pairs, target, &plan.loop_header),
            })
        })
        .collect();
    Some(Capture {
        copies,
        grpc,
        declared: content_length.flatten(),
        body: Body::default(),
        reserved: 0,
        limit: plan.max_buffered_bytes,
    })
}

/// Whether a `content-type` is gRPC's: `application/grpc`, alone or with a `+format`
/// or parameters (not gRPC-Web, whose status travels in the body).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value
        .get(..GRPC.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(GRPC))
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// The request's `content-length`, when it declares a valid one.
fn declared_length(request: &mut impl RequestView) -> Option<usize> {
    request
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
}

impl Capture {
    /// Whether any copy is still being captured.
    pub fn is_active(&self) -> bool {
        !self.copies.is_empty()
    }

    /// Bytes this request holds in the budget.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// The request has a body to come: reserve what is known now, the copies' headers
    /// and a declared `content-length`. If that does not fit, no copy is made.
    pub fn hold(&mut self, budget: &mut Budget, metrics: &mut impl Metrics) {
        self.settle(0, budget, metrics);
    }

    /// Appends a body chunk, as read from the host: copies whose cap the body now
    /// exceeds are abandoned (`skipped_body_too_large`), and if the rest does not fit in
    /// the budget none is made (`skipped_buffer_full`).
    pub fn add_body_chunk(
        &mut self,
        chunk: Vec<u8>,
        budget: &mut Budget,
        metrics: &mut impl Metrics,
    ) {
        if !self.is_active() || chunk.is_empty() {
            return;
        }
        let len = self.body.len.saturating_add(chunk.len());
        self.copies.retain(|copy| {
            let fits = len <= copy.max_body_bytes;
            if !fits {
                metrics.count(copy.target, Counter::SkippedBodyTooLarge);
            }
            fits
        });
        if !self.settle(chunk.len(), budget, metrics) {
            return;
        }
        let body = &mut self.body;
        match self.declared {
            // The first chunk of a body of unknown length, or the whole declared body
            // in one chunk: kept as read, without another copy.
            _ if body.len == 0 && self.declared.is_none_or(|d| d == chunk.len()) => {
                body.joined = chunk;
            }
            Some(declared) if len <= declared => {
                if body.joined.capacity() < declared {
                    let mut joined = Vec::with_capacity(declared);
                    joined.extend_from_slice(&body.joined);
                    body.joined = joined;
                }
                body.joined.extend_from_slice(&chunk);
            }
            _ => body.rest.push(chunk),
        }
        body.len = len;
    }

    /// As [`Capture::add_body_chunk`], from a borrowed chunk.
    pub fn add_body(&mut self, chunk: &[u8], budget: &mut Budget, metrics: &mut impl Metrics) {
        self.add_body_chunk(chunk.to_vec(), budget, metrics);
    }

    /// Gives up every copy still being captured (the body could not be read), counting
    /// each as a copy that could not be handed to Envoy.
    pub fn abandon(&mut self, budget: &mut Budget, metrics: &mut impl Metrics) {
        self.drop_copies(Counter::DispatchFailed, budget, metrics);
    }

    /// The request ended before it was complete (client or upstream reset): nothing
    /// is sent, every copy counts in `skipped_incomplete`.
    pub fn end_incomplete(mut self, budget: &mut Budget, metrics: &mut impl Metrics) {
        self.drop_copies(Counter::SkippedIncomplete, budget, metrics);
    }

    /// The request is complete: the copies, sharing one body.
    pub fn finish(mut self, budget: &mut Budget, metrics: &mut impl Metrics) -> Finished {
        if !self.body.rest.is_empty() {
            // Joining needs the body's length once more, for as long as it takes.
            let len = self.body.len;
            if !budget.try_reserve(self.limit, len) {
                self.drop_copies(Counter::SkippedBufferFull, budget, metrics);
            } else {
                let mut joined = Vec::with_capacity(len);
                let old = self.body.joined.capacity()
                    + self.body.rest.iter().map(Vec::capacity).sum::<usize>();
                joined.extend_from_slice(&self.body.joined);
                for chunk in self.body.rest.drain(..) {
                    joined.extend_from_slice(&chunk);
                }
                self.body.joined = joined;
                budget.release(old);
                self.reserved = self.reserved + len - old;
            }
        }
        // Shared, not copied: the body's bytes are copied once more only by the host.
        let body = Rc::new(std::mem::take(&mut self.body.joined));
        let copies = self
            .copies
            .drain(..)
            .map(|copy| ReadyCopy {
                target: copy.target,
                grpc: self.grpc,
                headers: copy.headers,
                body: Rc::clone(&body),
            })
            .collect();
        Finished {
            copies,
            held: std::mem::take(&mut self.reserved),
        }
    }

    /// Bytes this request needs in the budget once `incoming` more body bytes are
    /// stored: the copies' headers, and the body's buffers at their final sizes.
    fn needed(&self, incoming: usize) -> usize {
        let headers: usize = self.copies.iter().map(|c| c.headers.capacity()).sum();
        let len = self.body.len.saturating_add(incoming);
        let body = match self.declared {
            Some(declared) if len <= declared => declared,
            _ => len,
        };
        headers.saturating_add(body)
    }

    /// Brings the reservation to what the request needs with `incoming` more bytes;
    /// whether any copy is left. When it does not fit, or no copy is left, every
    /// copy goes and every byte comes back.
    fn settle(&mut self, incoming: usize, budget: &mut Budget, metrics: &mut impl Metrics) -> bool {
        if !self.is_active() {
            self.drop_copies(Counter::SkippedBufferFull, budget, metrics);
            return false;
        }
        let needed = self.needed(incoming);
        if needed > self.reserved {
            if !budget.try_reserve(self.limit, needed - self.reserved) {
                self.drop_copies(Counter::SkippedBufferFull, budget, metrics);
                return false;
            }
        } else {
            budget.release(self.reserved - needed);
        }
        self.reserved = needed;
        true
    }

    /// Drops every copy still being captured, counting each in `counter`, and gives
    /// back every byte.
    fn drop_copies(&mut self, counter: Counter, budget: &mut Budget, metrics: &mut impl Metrics) {
        for copy in self.copies.drain(..) {
            metrics.count(copy.target, counter);
        }
        self.body = Body::default();
        budget.release(std::mem::take(&mut self.reserved));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::metrics::Tally;
    use crate::request::HeaderList;
    use crate::sampling::bucket;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn plan(targets: &str) -> Plan {
        parse(format!(r#"{{"targets": [{targets}]}}"#).as_bytes()).unwrap()
    }

    fn get(extra: &[(&str, &[u8])]) -> HeaderList {
        let mut headers: Vec<(&str, &[u8])> = vec![
            (":method", b"GET"),
            (":path", b"/p?sid=q1"),
            (":authority", b"h"),
            ("x-request-id", b"rid"),
        ];
        headers.extend_from_slice(extra);
        HeaderList::new(&headers)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_calls_are_known_by_their_content_type() {
        for (value, grpc) in [
            (&b"application/grpc"[..], true),
            (b"application/grpc+proto", true),
            (b"Application/GRPC;charset=utf-8", true),
            (b"application/grpc-web", false),
            (b"application/grpc-web+proto", false),
            (b"application/grpcx", false),
            (b"application/json", false),
            (b"", false),
        ] {
            assert_eq!(is_grpc_content_type(value), grpc, "{value:?}");
        }
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut grpc = get(&[("content-type", b"application/grpc")]);
        let copies = begin(&plan, &mut grpc, &mut Rng::new(1), &mut tally)
            .unwrap()
            .finish(&mut budget, &mut tally);
        assert!(copies.copies[0].grpc);
        copies.release(&mut budget);
        let plain = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally)
            .unwrap()
            .finish(&mut budget, &mut tally);
        assert!(!plain.copies[0].grpc);
        plain.release(&mut budget);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unsampled_request_leaves_without_a_capture() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 0}"#);
        let mut tally = Tally::default();
        let capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally);
        assert!(capture.is_none());
        assert_eq!(tally.get(0, Counter::Requests), 1);
        assert_eq!(tally.get(0, Counter::Sampled), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn looping_request_counts_in_every_target() {
        let plan = plan(
            r#"{"name": "a", "cluster": "c", "percent": 100}, {"name": "b", "cluster": "c", "percent": 100}"#,
        );
        let mut tally = Tally::default();
        let capture = begin(
            &plan,
            &mut get(&[("x-traffic-mirror", b"a")]),
            &mut Rng::new(1),
            &mut tally,
        );
        assert!(capture.is_none());
        for t in 0..2 {
            assert_eq!(tally.get(t, Counter::SkippedLoop), 1);
            assert_eq!(tally.get(t, Counter::Requests), 0);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn connect_and_upgrade_requests_are_never_mirrored() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut tally = Tally::default();
        let mut connect = HeaderList::new(&[(":method", b"CONNECT"), ("x-request-id", b"r")]);
        assert!(begin(&plan, &mut connect, &mut Rng::new(1), &mut tally).is_none());
        let mut upgrade = get(&[("upgrade", b"websocket"), ("connection", b"upgrade")]);
        assert!(begin(&plan, &mut upgrade, &mut Rng::new(1), &mut tally).is_none());
        assert_eq!(tally, Tally::default());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_key_is_skipped_or_drawn_at_random() {
        let plan = plan(
            r#"{"name": "skip", "cluster": "c", "percent": 100, "sample_by": {"header": "x-user"}},
               {"name": "rand", "cluster": "c", "percent": 100, "sample_by": {"cookie": "uid"}, "on_missing_key": "random"},
               {"name": "none", "cluster": "c", "percent": 0, "sample_by": {"query": "nope"}, "on_missing_key": "random"}"#,
        );
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let capture = begin(
            &plan,
            &mut get(&[("x-user", b""), ("cookie", b"uid=")]),
            &mut Rng::new(1),
            &mut tally,
        )
        .unwrap();
        assert_eq!(tally.get(0, Counter::SkippedMissingKey), 1);
        assert_eq!(tally.get(1, Counter::SkippedMissingKey), 0);
        assert_eq!(tally.get(1, Counter::Sampled), 1);
        assert_eq!(tally.get(2, Counter::Requests), 1);
        assert_eq!(tally.get(2, Counter::Sampled), 0);
        let copies = capture.finish(&mut budget, &mut tally).copies;
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].target, 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_key_kind_follows_the_normative_rule() {
        let cut = |salt: &str, key: &str| bucket(salt.as_bytes(), key.as_bytes()) + 1;
        for (sample_by, request_extra, salt, key) in [
            (
                r#"{"header": "x-user"}"#,
                vec![("x-user", &b"alice"[..])],
                "s",
                "alice",
            ),
            (
                r#"{"cookie": "uid"}"#,
                vec![("cookie", &b"a=1; uid=bob"[..])],
                "s",
                "bob",
            ),
            (r#"{"query": "sid"}"#, vec![], "s", "q1"),
        ] {
            // Exactly at the key's bucket: not sampled; one bucket higher: sampled.
            let just_in = f64::from(cut(salt, key)) / 10_000.0;
            let just_out = f64::from(cut(salt, key) - 1) / 10_000.0;
            for (percent, expected) in [(just_in, true), (just_out, false)] {
                let plan = plan(&format!(
                    r#"{{"name": "a", "cluster": "c", "percent": {percent}, "salt": "{salt}", "sample_by": {sample_by}}}"#
                ));
                let mut tally = Tally::default();
                let got = begin(
                    &plan,
                    &mut get(&request_extra),
                    &mut Rng::new(1),
                    &mut tally,
                )
                .is_some();
                assert_eq!(got, expected, "{sample_by} at {percent}");
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn declared_length_over_the_cap_is_skipped_before_copying() {
        let plan = plan(
            r#"{"name": "small", "cluster": "c", "percent": 100, "max_body_bytes": 10},
               {"name": "big", "cluster": "c", "percent": 100, "max_body_bytes": 100}"#,
        );
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut post = get(&[("content-length", b"50")]);
        let mut capture = begin(&plan, &mut post, &mut Rng::new(1), &mut tally).unwrap();
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        capture.add_body(&[7u8; 50], &mut budget, &mut tally);
        let copies = capture.finish(&mut budget, &mut tally).copies;
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].target, 1);
        assert_eq!(copies[0].body.as_slice(), &[7u8; 50][..]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn over_cap_body_is_skipped_not_truncated() {
        let plan = plan(
            r#"{"name": "small", "cluster": "c", "percent": 100, "max_body_bytes": 10},
               {"name": "big", "cluster": "c", "percent": 100, "max_body_bytes": 20}"#,
        );
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"0123456789", &mut budget, &mut tally);
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 0);
        capture.add_body(b"a", &mut budget, &mut tally);
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        assert!(capture.is_active());
        capture.add_body(b"bcdefghijk", &mut budget, &mut tally);
        assert_eq!(tally.get(1, Counter::SkippedBodyTooLarge), 1);
        assert!(!capture.is_active());
        assert!(capture.finish(&mut budget, &mut tally).copies.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn body_read_in_chunks_is_the_same_whatever_their_sizes() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": 8}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut whole = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        whole.add_body_chunk(b"abcdefgh".to_vec(), &mut budget, &mut tally);
        assert_eq!(
            whole.finish(&mut budget, &mut tally).copies[0]
                .body
                .as_slice(),
            b"abcdefgh"
        );
        let mut split = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        split.add_body_chunk(b"abc".to_vec(), &mut budget, &mut tally);
        split.add_body_chunk(b"defgh".to_vec(), &mut budget, &mut tally);
        assert_eq!(
            split.finish(&mut budget, &mut tally).copies[0]
                .body
                .as_slice(),
            b"abcdefgh"
        );
        let mut over = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        over.add_body_chunk(b"abcdefghi".to_vec(), &mut budget, &mut tally);
        assert!(!over.is_active());
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn abandoned_copies_are_counted_and_never_sent() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"part", &mut budget, &mut tally);
        capture.abandon(&mut budget, &mut tally);
        assert!(!capture.is_active());
        assert!(capture.finish(&mut budget, &mut tally).copies.is_empty());
        assert_eq!(tally.get(0, Counter::DispatchFailed), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn zero_cap_mirrors_only_bodiless_requests() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": 0}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        assert_eq!(capture.finish(&mut budget, &mut tally).copies.len(), 1);
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"x", &mut budget, &mut tally);
        assert!(capture.finish(&mut budget, &mut tally).copies.is_empty());
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_target_gets_its_own_copy_of_one_body() {
        let plan = plan(
            r#"{"name": "a", "cluster": "c", "percent": 100, "headers": {"set": {"x-t": "a"}}},
               {"name": "b", "cluster": "c", "percent": 100, "authority": "b.internal"}"#,
        );
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"hello ", &mut budget, &mut tally);
        capture.add_body(b"world", &mut budget, &mut tally);
        let copies = capture.finish(&mut budget, &mut tally).copies;
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0].body.as_slice(), b"hello world");
        assert!(Rc::ptr_eq(&copies[0].body, &copies[1].body));
        let has = |i: usize, name: &str, value: &str| {
            wire::parse(&copies[i].headers)
                .unwrap()
                .contains(&(name.as_bytes(), value.as_bytes()))
        };
        assert!(has(0, "x-t", "a"));
        assert!(has(0, "x-traffic-mirror", "a"));
        assert!(has(1, ":authority", "b.internal"));
        assert!(has(1, "x-traffic-mirror", "b"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unmatched_request_is_not_counted() {
        let plan = plan(
            r#"{"name": "a", "cluster": "c", "percent": 100, "match": {"methods": ["POST"]}}"#,
        );
        let mut tally = Tally::default();
        assert!(begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).is_none());
        assert_eq!(tally, Tally::default());
    }

    /// Bytes of the copies' headers a capture holds (what it reserves before any body).
    fn header_bytes(capture: &Capture) -> usize {
        capture.copies.iter().map(|c| c.headers.len()).sum()
    }

    fn post(length: Option<usize>) -> HeaderList {
        let len = length.map(|l| l.to_string());
        match &len {
            Some(len) => get(&[("content-length", len.as_bytes())]),
            None => get(&[]),
        }
    }

    fn budget_plan(budget: usize, max_body: usize) -> Plan {
        parse(
            format!(
                r#"{{"max_buffered_bytes": {budget}, "targets": [
                    {{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": {max_body}}},
                    {{"name": "b", "cluster": "c", "percent": 100, "max_body_bytes": {max_body}}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn declared_length_is_reserved_at_the_headers_and_released_once_sent() {
        let plan = budget_plan(1 << 20, 1000);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut post(Some(600)), &mut Rng::new(1), &mut tally).unwrap();
        capture.hold(&mut budget, &mut tally);
        let headers = header_bytes(&capture);
        // One body for both targets: counted once.
        assert_eq!(budget.held(), headers + 600);
        capture.add_body(&[1; 200], &mut budget, &mut tally);
        // The buffer has its final size from the first chunk on: never grown.
        assert_eq!(capture.body.joined.capacity(), 600);
        capture.add_body(&[2; 400], &mut budget, &mut tally);
        assert_eq!(capture.body.joined.capacity(), 600);
        assert_eq!(budget.held(), headers + 600);
        let finished = capture.finish(&mut budget, &mut tally);
        assert_eq!(finished.copies.len(), 2);
        assert_eq!(finished.copies[0].body.len(), 600);
        assert_eq!(budget.held(), headers + 600, "held until handed over");
        finished.release(&mut budget);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.peak(), headers + 600);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn declared_length_that_does_not_fit_is_skipped_at_the_headers() {
        let plan = budget_plan(1000, 1000);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        assert!(budget.try_reserve(1000, 500));
        let mut capture = begin(&plan, &mut post(Some(600)), &mut Rng::new(1), &mut tally).unwrap();
        capture.hold(&mut budget, &mut tally);
        assert!(!capture.is_active());
        for t in 0..2 {
            assert_eq!(tally.get(t, Counter::SkippedBufferFull), 1);
        }
        assert_eq!(budget.held(), 500, "nothing of it stays reserved");
        // Its chunks are not captured, and the request sends nothing.
        capture.add_body(&[0; 600], &mut budget, &mut tally);
        assert_eq!(budget.held(), 500);
        let finished = capture.finish(&mut budget, &mut tally);
        assert!(finished.copies.is_empty());
        finished.release(&mut budget);
        assert_eq!(budget.held(), 500);
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn body_without_length_reserves_as_it_arrives_and_is_never_truncated() {
        let plan = budget_plan(2000, 2000);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut post(None), &mut Rng::new(1), &mut tally).unwrap();
        capture.hold(&mut budget, &mut tally);
        let headers = header_bytes(&capture);
        assert_eq!(budget.held(), headers);
        capture.add_body(&[1; 300], &mut budget, &mut tally);
        assert_eq!(budget.held(), headers + 300);
        capture.add_body(&[2; 300], &mut budget, &mut tally);
        assert_eq!(budget.held(), headers + 600);
        // Every chunk kept at its own size: nothing allocated beyond what arrived.
        assert_eq!(capture.body.joined.capacity(), 300);
        assert_eq!(
            capture.body.rest.iter().map(Vec::capacity).sum::<usize>(),
            300
        );
        // The next chunk would pass the budget: no copy, never a truncated one.
        let room = 2000 - budget.held();
        capture.add_body(&vec![3; room + 1], &mut budget, &mut tally);
        assert!(!capture.is_active());
        assert_eq!(budget.held(), 0);
        for t in 0..2 {
            assert_eq!(tally.get(t, Counter::SkippedBufferFull), 1);
        }
        let finished = capture.finish(&mut budget, &mut tally);
        assert!(finished.copies.is_empty());
        finished.release(&mut budget);
        assert_eq!(budget.held(), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn joining_chunks_needs_the_body_once_more_for_the_moment_it_takes() {
        let mut tally = Tally::default();
        // Headers, then two chunks of 100: room for them, but not to join them.
        let headers = {
            let plan = budget_plan(1 << 20, 200);
            let capture = begin(&plan, &mut post(None), &mut Rng::new(1), &mut tally).unwrap();
            header_bytes(&capture)
        };
        for (limit, joined) in [(headers + 399, false), (headers + 400, true)] {
            let plan = budget_plan(limit, 200);
            let mut tally = Tally::default();
            let mut budget = Budget::new();
            let mut capture = begin(&plan, &mut post(None), &mut Rng::new(1), &mut tally).unwrap();
            capture.hold(&mut budget, &mut tally);
            capture.add_body(&[1; 100], &mut budget, &mut tally);
            capture.add_body(&[2; 100], &mut budget, &mut tally);
            assert_eq!(budget.held(), headers + 200);
            let finished = capture.finish(&mut budget, &mut tally);
            assert_eq!(finished.copies.len() == 2, joined, "limit {limit}");
            if joined {
                let mut expected = vec![1; 100];
                expected.extend_from_slice(&[2; 100]);
                assert_eq!(*finished.copies[0].body, expected);
                assert_eq!(finished.copies[0].body.capacity(), 200);
                assert_eq!(budget.peak(), headers + 400);
                assert_eq!(budget.held(), headers + 200);
            } else {
                assert_eq!(tally.get(0, Counter::SkippedBufferFull), 1);
                assert_eq!(budget.held(), 0);
            }
            finished.release(&mut budget);
            assert_eq!(budget.held(), 0);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn copies_over_their_cap_give_their_bytes_back() {
        let plan = parse(
            br#"{"targets": [
                {"name": "small", "cluster": "c", "percent": 100, "max_body_bytes": 10},
                {"name": "big", "cluster": "c", "percent": 100, "max_body_bytes": 20}]}"#,
        )
        .unwrap();
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut post(None), &mut Rng::new(1), &mut tally).unwrap();
        capture.hold(&mut budget, &mut tally);
        let both = header_bytes(&capture);
        capture.add_body(&[0; 15], &mut budget, &mut tally);
        let big = header_bytes(&capture);
        assert!(big < both);
        assert_eq!(budget.held(), big + 15);
        capture.add_body(&[0; 15], &mut budget, &mut tally);
        assert!(!capture.is_active());
        assert_eq!(budget.held(), 0);
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        assert_eq!(tally.get(1, Counter::SkippedBodyTooLarge), 1);
        assert_eq!(tally.get(1, Counter::SkippedBufferFull), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn abandoned_and_incomplete_requests_give_every_byte_back() {
        let plan = budget_plan(1 << 20, 1000);
        for declared in [Some(500), None] {
            let mut tally = Tally::default();
            let mut budget = Budget::new();
            let mut abandoned =
                begin(&plan, &mut post(declared), &mut Rng::new(1), &mut tally).unwrap();
            abandoned.hold(&mut budget, &mut tally);
            abandoned.add_body(&[0; 100], &mut budget, &mut tally);
            let mut reset =
                begin(&plan, &mut post(declared), &mut Rng::new(1), &mut tally).unwrap();
            reset.hold(&mut budget, &mut tally);
            reset.add_body(&[0; 100], &mut budget, &mut tally);
            reset.add_body(&[0; 100], &mut budget, &mut tally);
            assert!(budget.held() > 0);
            abandoned.abandon(&mut budget, &mut tally);
            assert!(!abandoned.is_active());
            assert_eq!(budget.held(), reset.reserved());
            reset.end_incomplete(&mut budget, &mut tally);
            assert_eq!(budget.held(), 0, "declared {declared:?}");
            let finished = abandoned.finish(&mut budget, &mut tally);
            assert!(finished.copies.is_empty());
            finished.release(&mut budget);
            assert_eq!(budget.held(), 0);
            for t in 0..2 {
                assert_eq!(tally.get(t, Counter::DispatchFailed), 1);
                assert_eq!(tally.get(t, Counter::SkippedIncomplete), 1);
                assert_eq!(tally.get(t, Counter::Sampled), 2);
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn budget_is_shared_by_requests_and_freed_for_the_next_one() {
        let plan = budget_plan(3000, 1000);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut capture =
                begin(&plan, &mut post(Some(1000)), &mut Rng::new(1), &mut tally).unwrap();
            capture.hold(&mut budget, &mut tally);
            held.push(capture);
        }
        // Two fit (each 1000 + headers), the third and fourth not.
        assert_eq!(held.iter().filter(|c| c.is_active()).count(), 2);
        assert_eq!(tally.get(0, Counter::SkippedBufferFull), 2);
        held.remove(0).end_incomplete(&mut budget, &mut tally);
        let mut next = begin(&plan, &mut post(Some(1000)), &mut Rng::new(1), &mut tally).unwrap();
        next.hold(&mut budget, &mut tally);
        assert!(next.is_active());
        next.add_body(&[9; 1000], &mut budget, &mut tally);
        let finished = next.finish(&mut budget, &mut tally);
        assert_eq!(finished.copies.len(), 2);
        finished.release(&mut budget);
        for capture in held {
            capture.end_incomplete(&mut budget, &mut tally);
        }
        assert_eq!(budget.held(), 0);
        for t in 0..2 {
            let outcomes: u64 = Counter::SAMPLED_OUTCOMES
                .iter()
                .map(|&c| tally.get(t, c))
                .sum();
            // Finished copies are not dispatched here; count them as if they were.
            assert_eq!(tally.get(t, Counter::Sampled), outcomes + 1);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bodiless_request_needs_no_budget() {
        let plan = budget_plan(0, 0);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        let finished = capture.finish(&mut budget, &mut tally);
        assert_eq!(finished.copies.len(), 2);
        finished.release(&mut budget);
        // With a body to wait for, even its headers do not fit in a budget of 0.
        let mut capture = begin(&plan, &mut post(None), &mut Rng::new(1), &mut tally).unwrap();
        capture.hold(&mut budget, &mut tally);
        assert!(!capture.is_active());
        assert_eq!(tally.get(0, Counter::SkippedBufferFull), 1);
        assert_eq!(budget.peak(), 0);
    }
}
