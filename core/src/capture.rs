//! The copies of a request while its body arrives: begun at its headers for the targets
//! that decided to copy it ([`crate::decision`]), their headers built once, the body
//! copied chunk by chunk as it flows on to the upstream, every byte reserved in
//! `max_buffered_bytes` before it is allocated, until the request is complete and the
//! copies go to the limits and the host. It counts nothing: each step returns the copies
//! it dropped and why, and the lifecycle counts them.

use std::rc::Rc;

use crate::budget::Budget;
use crate::config::Plan;
use crate::copy::copy_headers;
use crate::decision::Decision;
use crate::stats::Counter;
use crate::wire;

/// Copies that will not be sent: each target's, with the counter it ends in.
pub type Dropped = Vec<(usize, Counter)>;

/// A copy whose body is still arriving: which target, and its headers, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingCopy {
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
    copies: Vec<PendingCopy>,
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

/// A request's ready copies, still holding their bytes in the budget: hand them to the
/// host, then [`ReadyCopies::release`] them.
#[derive(Debug)]
#[must_use = "the copies hold budget until released"]
pub struct ReadyCopies {
    pub copies: Vec<ReadyCopy>,
    held: usize,
}

impl ReadyCopies {
    /// The copies were handed over (or dropped): their bytes go back to the budget.
    pub fn release(self, budget: &mut Budget) {
        budget.release(self.held);
    }
}

impl Capture {
    /// Begins the copies a request's headers decided on, from its serialized header map
    /// (read once for all of them). Allocates nothing for the body yet.
    pub fn begin(plan: &Plan, decision: &Decision<'_>, map: &[u8]) -> Capture {
        let pairs = wire::parse(map).unwrap_or_default();
        let copies = decision
            .copying()
            .filter_map(|index| {
                let target = plan.targets.get(index)?;
                Some(PendingCopy {
                    target: index,
                    max_body_bytes: target.max_body_bytes,
                    headers: copy_headers(&pairs, target, &plan.loop_header),
                })
            })
            .collect();
        Capture {
            copies,
            grpc: decision.grpc,
            declared: decision.declared_length,
            body: Body::default(),
            reserved: 0,
            limit: plan.max_buffered_bytes,
        }
    }

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
    pub fn hold(&mut self, budget: &mut Budget) -> Dropped {
        let mut dropped = Dropped::new();
        self.settle(0, budget, &mut dropped);
        dropped
    }

    /// Appends a body chunk, as read from the host: copies whose cap the body now
    /// exceeds are dropped (`skipped_body_too_large`), and if the rest does not fit in
    /// the budget none is made (`skipped_buffer_full`).
    pub fn add_body_chunk(&mut self, chunk: Vec<u8>, budget: &mut Budget) -> Dropped {
        let mut dropped = Dropped::new();
        if !self.is_active() || chunk.is_empty() {
            return dropped;
        }
        let len = self.body.len.saturating_add(chunk.len());
        self.copies.retain(|copy| {
            let fits = len <= copy.max_body_bytes;
            if !fits {
                dropped.push((copy.target, Counter::SkippedBodyTooLarge));
            }
            fits
        });
        if !self.settle(chunk.len(), budget, &mut dropped) {
            return dropped;
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
        dropped
    }

    /// As [`Capture::add_body_chunk`], from a borrowed chunk.
    pub fn add_body(&mut self, chunk: &[u8], budget: &mut Budget) -> Dropped {
        self.add_body_chunk(chunk.to_vec(), budget)
    }

    /// Gives up every copy still being captured (the body could not be read): each is a
    /// copy that could not be handed to Envoy.
    pub fn abandon(&mut self, budget: &mut Budget) -> Dropped {
        self.drop_copies(Counter::DispatchFailed, budget)
    }

    /// The request ended before it was complete (client or upstream reset): nothing
    /// is sent, every copy counts in `skipped_incomplete`.
    pub fn end_incomplete(mut self, budget: &mut Budget) -> Dropped {
        self.drop_copies(Counter::SkippedIncomplete, budget)
    }

    /// The request is complete: the copies, sharing one body.
    pub fn finish(mut self, budget: &mut Budget) -> (ReadyCopies, Dropped) {
        let mut dropped = Dropped::new();
        if !self.body.rest.is_empty() {
            // Joining needs the body's length once more, for as long as it takes.
            let len = self.body.len;
            if !budget.try_reserve(self.limit, len) {
                dropped = self.drop_copies(Counter::SkippedBufferFull, budget);
            } else {
                let mut joined = Vec::with_capacity(len);
                let old = self
                    .body
                    .joined
                    .capacity()
                    .saturating_add(self.body.rest.iter().map(Vec::capacity).sum::<usize>());
                joined.extend_from_slice(&self.body.joined);
                for chunk in self.body.rest.drain(..) {
                    joined.extend_from_slice(&chunk);
                }
                self.body.joined = joined;
                budget.release(old);
                self.reserved = self.reserved.saturating_add(len).saturating_sub(old);
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
        let ready = ReadyCopies {
            copies,
            held: std::mem::take(&mut self.reserved),
        };
        (ready, dropped)
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
    /// copy goes (into `dropped`) and every byte comes back.
    fn settle(&mut self, incoming: usize, budget: &mut Budget, dropped: &mut Dropped) -> bool {
        if !self.is_active() {
            dropped.append(&mut self.drop_copies(Counter::SkippedBufferFull, budget));
            return false;
        }
        let needed = self.needed(incoming);
        if needed > self.reserved {
            if !budget.try_reserve(self.limit, needed - self.reserved) {
                dropped.append(&mut self.drop_copies(Counter::SkippedBufferFull, budget));
                return false;
            }
        } else {
            budget.release(self.reserved - needed);
        }
        self.reserved = needed;
        true
    }

    /// Drops every copy still being captured, each ending in `counter`, and gives back
    /// every byte.
    fn drop_copies(&mut self, counter: Counter, budget: &mut Budget) -> Dropped {
        self.body = Body::default();
        budget.release(std::mem::take(&mut self.reserved));
        self.copies
            .drain(..)
            .map(|copy| (copy.target, counter))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::decision::{decide, Mode};
    use crate::request::{HeaderList, RequestView};
    use crate::sampling::{bucket, Rng};
    use wasm_bindgen_test::wasm_bindgen_test;

    /// What the lifecycle would count: the decision's counters and the copies dropped.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Tally(Vec<(usize, Counter)>);

    impl Tally {
        fn get(&self, target: usize, counter: Counter) -> u64 {
            self.0.iter().filter(|&&c| c == (target, counter)).count() as u64
        }

        fn add(&mut self, dropped: Dropped) {
            self.0.extend(dropped);
        }
    }

    /// Decides a request at its headers, counts the decision, and begins its copies
    /// when any target copies it, as the lifecycle does.
    fn begin(plan: &Plan, request: &mut HeaderList, tally: &mut Tally) -> Option<Capture> {
        let decision = decide(plan, request, &mut Rng::new(1), Mode::Filter);
        decision.for_each_count(plan.targets.len(), |t, c| tally.0.push((t, c)));
        decision
            .copies_any()
            .then(|| Capture::begin(plan, &decision, &request.header_map()))
    }

    fn finish(capture: Capture, budget: &mut Budget, tally: &mut Tally) -> ReadyCopies {
        let (ready, dropped) = capture.finish(budget);
        tally.add(dropped);
        ready
    }

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
    fn unsampled_request_leaves_without_a_capture() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 0}"#);
        let mut tally = Tally::default();
        let capture = begin(&plan, &mut get(&[]), &mut tally);
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
        let capture = begin(&plan, &mut get(&[("x-traffic-mirror", b"a")]), &mut tally);
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
        assert!(begin(&plan, &mut connect, &mut tally).is_none());
        let mut upgrade = get(&[("upgrade", b"websocket"), ("connection", b"upgrade")]);
        assert!(begin(&plan, &mut upgrade, &mut tally).is_none());
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
            &mut tally,
        )
        .unwrap();
        assert_eq!(tally.get(0, Counter::SkippedMissingKey), 1);
        assert_eq!(tally.get(1, Counter::SkippedMissingKey), 0);
        assert_eq!(tally.get(1, Counter::Sampled), 1);
        assert_eq!(tally.get(2, Counter::Requests), 1);
        assert_eq!(tally.get(2, Counter::Sampled), 0);
        let copies = finish(capture, &mut budget, &mut tally).copies;
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
                let got = begin(&plan, &mut get(&request_extra), &mut tally).is_some();
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
        let mut capture = begin(&plan, &mut post, &mut tally).unwrap();
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        tally.add(capture.add_body(&[7u8; 50], &mut budget));
        let copies = finish(capture, &mut budget, &mut tally).copies;
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
        let mut capture = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(capture.add_body(b"0123456789", &mut budget));
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 0);
        tally.add(capture.add_body(b"a", &mut budget));
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        assert!(capture.is_active());
        tally.add(capture.add_body(b"bcdefghijk", &mut budget));
        assert_eq!(tally.get(1, Counter::SkippedBodyTooLarge), 1);
        assert!(!capture.is_active());
        assert!(finish(capture, &mut budget, &mut tally).copies.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn body_read_in_chunks_is_the_same_whatever_their_sizes() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": 8}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut whole = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(whole.add_body_chunk(b"abcdefgh".to_vec(), &mut budget));
        assert_eq!(
            finish(whole, &mut budget, &mut tally).copies[0]
                .body
                .as_slice(),
            b"abcdefgh"
        );
        let mut split = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(split.add_body_chunk(b"abc".to_vec(), &mut budget));
        tally.add(split.add_body_chunk(b"defgh".to_vec(), &mut budget));
        assert_eq!(
            finish(split, &mut budget, &mut tally).copies[0]
                .body
                .as_slice(),
            b"abcdefgh"
        );
        let mut over = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(over.add_body_chunk(b"abcdefghi".to_vec(), &mut budget));
        assert!(!over.is_active());
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn abandoned_copies_are_counted_and_never_sent() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let mut capture = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(capture.add_body(b"part", &mut budget));
        tally.add(capture.abandon(&mut budget));
        assert!(!capture.is_active());
        assert!(finish(capture, &mut budget, &mut tally).copies.is_empty());
        assert_eq!(tally.get(0, Counter::DispatchFailed), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn zero_cap_mirrors_only_bodiless_requests() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": 0}"#);
        let mut tally = Tally::default();
        let mut budget = Budget::new();
        let capture = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        assert_eq!(finish(capture, &mut budget, &mut tally).copies.len(), 1);
        let mut capture = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(capture.add_body(b"x", &mut budget));
        assert!(finish(capture, &mut budget, &mut tally).copies.is_empty());
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
        let mut capture = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        tally.add(capture.add_body(b"hello ", &mut budget));
        tally.add(capture.add_body(b"world", &mut budget));
        let copies = finish(capture, &mut budget, &mut tally).copies;
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
        assert!(begin(&plan, &mut get(&[]), &mut tally).is_none());
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
        let mut capture = begin(&plan, &mut post(Some(600)), &mut tally).unwrap();
        tally.add(capture.hold(&mut budget));
        let headers = header_bytes(&capture);
        // One body for both targets: counted once.
        assert_eq!(budget.held(), headers + 600);
        tally.add(capture.add_body(&[1; 200], &mut budget));
        // The buffer has its final size from the first chunk on: never grown.
        assert_eq!(capture.body.joined.capacity(), 600);
        tally.add(capture.add_body(&[2; 400], &mut budget));
        assert_eq!(capture.body.joined.capacity(), 600);
        assert_eq!(budget.held(), headers + 600);
        let finished = finish(capture, &mut budget, &mut tally);
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
        let mut capture = begin(&plan, &mut post(Some(600)), &mut tally).unwrap();
        tally.add(capture.hold(&mut budget));
        assert!(!capture.is_active());
        for t in 0..2 {
            assert_eq!(tally.get(t, Counter::SkippedBufferFull), 1);
        }
        assert_eq!(budget.held(), 500, "nothing of it stays reserved");
        // Its chunks are not captured, and the request sends nothing.
        tally.add(capture.add_body(&[0; 600], &mut budget));
        assert_eq!(budget.held(), 500);
        let finished = finish(capture, &mut budget, &mut tally);
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
        let mut capture = begin(&plan, &mut post(None), &mut tally).unwrap();
        tally.add(capture.hold(&mut budget));
        let headers = header_bytes(&capture);
        assert_eq!(budget.held(), headers);
        tally.add(capture.add_body(&[1; 300], &mut budget));
        assert_eq!(budget.held(), headers + 300);
        tally.add(capture.add_body(&[2; 300], &mut budget));
        assert_eq!(budget.held(), headers + 600);
        // Every chunk kept at its own size: nothing allocated beyond what arrived.
        assert_eq!(capture.body.joined.capacity(), 300);
        assert_eq!(
            capture.body.rest.iter().map(Vec::capacity).sum::<usize>(),
            300
        );
        // The next chunk would pass the budget: no copy, never a truncated one.
        let room = 2000 - budget.held();
        tally.add(capture.add_body(&vec![3; room + 1], &mut budget));
        assert!(!capture.is_active());
        assert_eq!(budget.held(), 0);
        for t in 0..2 {
            assert_eq!(tally.get(t, Counter::SkippedBufferFull), 1);
        }
        let finished = finish(capture, &mut budget, &mut tally);
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
            let capture = begin(&plan, &mut post(None), &mut tally).unwrap();
            header_bytes(&capture)
        };
        for (limit, joined) in [(headers + 399, false), (headers + 400, true)] {
            let plan = budget_plan(limit, 200);
            let mut tally = Tally::default();
            let mut budget = Budget::new();
            let mut capture = begin(&plan, &mut post(None), &mut tally).unwrap();
            tally.add(capture.hold(&mut budget));
            tally.add(capture.add_body(&[1; 100], &mut budget));
            tally.add(capture.add_body(&[2; 100], &mut budget));
            assert_eq!(budget.held(), headers + 200);
            let finished = finish(capture, &mut budget, &mut tally);
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
        let mut capture = begin(&plan, &mut post(None), &mut tally).unwrap();
        tally.add(capture.hold(&mut budget));
        let both = header_bytes(&capture);
        tally.add(capture.add_body(&[0; 15], &mut budget));
        let big = header_bytes(&capture);
        assert!(big < both);
        assert_eq!(budget.held(), big + 15);
        tally.add(capture.add_body(&[0; 15], &mut budget));
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
            let mut abandoned = begin(&plan, &mut post(declared), &mut tally).unwrap();
            tally.add(abandoned.hold(&mut budget));
            tally.add(abandoned.add_body(&[0; 100], &mut budget));
            let mut reset = begin(&plan, &mut post(declared), &mut tally).unwrap();
            tally.add(reset.hold(&mut budget));
            tally.add(reset.add_body(&[0; 100], &mut budget));
            tally.add(reset.add_body(&[0; 100], &mut budget));
            assert!(budget.held() > 0);
            tally.add(abandoned.abandon(&mut budget));
            assert!(!abandoned.is_active());
            assert_eq!(budget.held(), reset.reserved());
            tally.add(reset.end_incomplete(&mut budget));
            assert_eq!(budget.held(), 0, "declared {declared:?}");
            let finished = finish(abandoned, &mut budget, &mut tally);
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
            let mut capture = begin(&plan, &mut post(Some(1000)), &mut tally).unwrap();
            tally.add(capture.hold(&mut budget));
            held.push(capture);
        }
        // Two fit (each 1000 + headers), the third and fourth not.
        assert_eq!(held.iter().filter(|c| c.is_active()).count(), 2);
        assert_eq!(tally.get(0, Counter::SkippedBufferFull), 2);
        tally.add(held.remove(0).end_incomplete(&mut budget));
        let mut next = begin(&plan, &mut post(Some(1000)), &mut tally).unwrap();
        tally.add(next.hold(&mut budget));
        assert!(next.is_active());
        tally.add(next.add_body(&[9; 1000], &mut budget));
        let finished = finish(next, &mut budget, &mut tally);
        assert_eq!(finished.copies.len(), 2);
        finished.release(&mut budget);
        for capture in held {
            tally.add(capture.end_incomplete(&mut budget));
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
        let capture = begin(&plan, &mut get(&[]), &mut tally).unwrap();
        let finished = finish(capture, &mut budget, &mut tally);
        assert_eq!(finished.copies.len(), 2);
        finished.release(&mut budget);
        // With a body to wait for, even its headers do not fit in a budget of 0.
        let mut capture = begin(&plan, &mut post(None), &mut tally).unwrap();
        tally.add(capture.hold(&mut budget));
        assert!(!capture.is_active());
        assert_eq!(tally.get(0, Counter::SkippedBufferFull), 1);
        assert_eq!(budget.peak(), 0);
    }
}
