//! One request's way through the plan, as the specification orders it: loop guard,
//! match, sampling, body cap. A request that is not mirrored leaves at the first check
//! that fails, having copied nothing; a sampled one is captured here (headers at once,
//! body chunk by chunk as it flows on to the upstream) until it is complete.

use std::rc::Rc;

use crate::config::{OnMissingKey, Plan, Target};
use crate::copy::copy_headers;
use crate::metrics::{Counter, Metrics};
use crate::request::RequestView;
use crate::sampling::{cookie_value, is_sampled, query_value, random_bucket, Rng, SampleKey};
use crate::wire;

/// What sampling made of one request for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    NotMatched,
    MissingKey,
    NotSampled,
    Sampled,
}

/// Whether this kind of request is ever mirrored: not `CONNECT`, not an upgrade.
pub fn is_mirrorable(request: &mut impl RequestView) -> bool {
    request.method() != b"CONNECT" && request.header("upgrade").is_none()
}

/// Match and sample one target.
pub fn decide(target: &Target, request: &mut impl RequestView, rng: &mut Rng) -> Decision {
    if !target.matcher.matches(request) {
        return Decision::NotMatched;
    }
    // Hashed where the key is read, so that no copy of it is made.
    let sample = |key: &[u8]| is_sampled(&target.salt, key, target.threshold);
    let keyed: Option<bool> = match &target.sample_by {
        SampleKey::Header(name) => request
            .header(name)
            .filter(|v| !v.is_empty())
            .map(|key| sample(&key)),
        SampleKey::Cookie(name) => request
            .header("cookie")
            .and_then(|cookies| cookie_value(&cookies, name).map(sample)),
        SampleKey::Query(name) => query_value(request.path(), name).map(sample),
        SampleKey::Random => None,
    };
    let sampled = match keyed {
        Some(sampled) => sampled,
        None if target.sample_by == SampleKey::Random
            || target.on_missing_key == OnMissingKey::Random =>
        {
            random_bucket(rng.next_u64()) < target.threshold
        }
        None => return Decision::MissingKey,
    };
    if sampled {
        Decision::Sampled
    } else {
        Decision::NotSampled
    }
}

/// A copy being captured: which target, and its headers, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Capturing {
    target: usize,
    max_body_bytes: usize,
    /// Serialized header map (see [`crate::wire`]).
    headers: Vec<u8>,
}

/// The copies of one request, while its body arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    copies: Vec<Capturing>,
    body: Vec<u8>,
}

/// A complete copy, ready for the limits and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyCopy {
    pub target: usize,
    /// Serialized header map (see [`crate::wire`]).
    pub headers: Vec<u8>,
    /// Shared by every target's copy of the same request.
    pub body: Rc<Vec<u8>>,
}

/// Decides every target for a request at its headers. Returns a capture when at least
/// one target sampled it, `None` (having allocated nothing) otherwise.
pub fn begin<R: RequestView>(
    plan: &Plan,
    request: &mut R,
    rng: &mut Rng,
    metrics: &mut impl Metrics,
) -> Option<Capture> {
    if !is_mirrorable(request) {
        return None;
    }
    if request.header(&plan.loop_header).is_some() {
        for target in 0..plan.targets.len() {
            metrics.count(target, Counter::SkippedLoop);
        }
        return None;
    }
    let mut sampled: Vec<usize> = Vec::new();
    let mut content_length: Option<Option<usize>> = None;
    for (index, target) in plan.targets.iter().enumerate() {
        match decide(target, request, rng) {
            Decision::NotMatched => continue,
            Decision::MissingKey => {
                metrics.count(index, Counter::Requests);
                metrics.count(index, Counter::SkippedMissingKey);
                continue;
            }
            Decision::NotSampled => {
                metrics.count(index, Counter::Requests);
                continue;
            }
            Decision::Sampled => {
                metrics.count(index, Counter::Requests);
                metrics.count(index, Counter::Sampled);
            }
        }
        // A declared length over the cap is known now: skip before copying anything.
        let declared = *content_length.get_or_insert_with(|| {
            request
                .header("content-length")
                .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
        });
        if declared.is_some_and(|len| len > target.max_body_bytes) {
            metrics.count(index, Counter::SkippedBodyTooLarge);
            continue;
        }
        sampled.push(index);
    }
    if sampled.is_empty() {
        return None;
    }
    // Read the header map once for all the copies of this request.
    let map = request.header_map();
    let pairs = wire::parse(&map).unwrap_or_default();
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
        body: Vec::new(),
    })
}

impl Capture {
    /// Whether any copy is still being captured.
    pub fn is_active(&self) -> bool {
        !self.copies.is_empty()
    }

    /// Appends a body chunk; copies whose cap it exceeds are abandoned and counted.
    pub fn add_body(&mut self, chunk: &[u8], metrics: &mut impl Metrics) {
        if self.keep_within_caps(self.body.len().saturating_add(chunk.len()), metrics) {
            self.body.extend_from_slice(chunk);
        }
    }

    /// As [`Capture::add_body`], with the chunk as read from the host: a body that
    /// arrives in one chunk is kept as it is rather than copied again.
    pub fn add_body_chunk(&mut self, chunk: Vec<u8>, metrics: &mut impl Metrics) {
        if !self.body.is_empty() {
            self.add_body(&chunk, metrics);
        } else if self.keep_within_caps(chunk.len(), metrics) {
            self.body = chunk;
        }
    }

    /// Abandons (and counts) the copies whose cap a body of `total` bytes exceeds;
    /// whether any copy is left.
    fn keep_within_caps(&mut self, total: usize, metrics: &mut impl Metrics) -> bool {
        self.copies.retain(|copy| {
            let fits = total <= copy.max_body_bytes;
            if !fits {
                metrics.count(copy.target, Counter::SkippedBodyTooLarge);
            }
            fits
        });
        if self.copies.is_empty() {
            self.body = Vec::new();
            false
        } else {
            true
        }
    }

    /// Gives up every copy still being captured (the body could not be read), counting
    /// each as a copy that could not be handed to Envoy.
    pub fn abandon(&mut self, metrics: &mut impl Metrics) {
        for copy in self.copies.drain(..) {
            metrics.count(copy.target, Counter::DispatchFailed);
        }
        self.body = Vec::new();
    }

    /// The request is complete: the copies, sharing one body.
    pub fn finish(self) -> Vec<ReadyCopy> {
        // Shared, not copied: the body's bytes are copied once more only by the host.
        let body = Rc::new(self.body);
        self.copies
            .into_iter()
            .map(|copy| ReadyCopy {
                target: copy.target,
                headers: copy.headers,
                body: Rc::clone(&body),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::metrics::Tally;
    use crate::request::HeaderList;
    use crate::sampling::bucket;
    #[cfg(target_arch = "wasm32")]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn unsampled_request_leaves_without_a_capture() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 0}"#);
        let mut tally = Tally::default();
        let capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally);
        assert!(capture.is_none());
        assert_eq!(tally.get(0, Counter::Requests), 1);
        assert_eq!(tally.get(0, Counter::Sampled), 0);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn connect_and_upgrade_requests_are_never_mirrored() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut tally = Tally::default();
        let mut connect = HeaderList::new(&[(":method", b"CONNECT"), ("x-request-id", b"r")]);
        assert!(begin(&plan, &mut connect, &mut Rng::new(1), &mut tally).is_none());
        let mut upgrade = get(&[("upgrade", b"websocket"), ("connection", b"upgrade")]);
        assert!(begin(&plan, &mut upgrade, &mut Rng::new(1), &mut tally).is_none());
        assert_eq!(tally, Tally::default());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn missing_key_is_skipped_or_drawn_at_random() {
        let plan = plan(
            r#"{"name": "skip", "cluster": "c", "percent": 100, "sample_by": {"header": "x-user"}},
               {"name": "rand", "cluster": "c", "percent": 100, "sample_by": {"cookie": "uid"}, "on_missing_key": "random"},
               {"name": "none", "cluster": "c", "percent": 0, "sample_by": {"query": "nope"}, "on_missing_key": "random"}"#,
        );
        let mut tally = Tally::default();
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
        let copies = capture.finish();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].target, 1);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn declared_length_over_the_cap_is_skipped_before_copying() {
        let plan = plan(
            r#"{"name": "small", "cluster": "c", "percent": 100, "max_body_bytes": 10},
               {"name": "big", "cluster": "c", "percent": 100, "max_body_bytes": 100}"#,
        );
        let mut tally = Tally::default();
        let mut post = get(&[("content-length", b"50")]);
        let mut capture = begin(&plan, &mut post, &mut Rng::new(1), &mut tally).unwrap();
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        capture.add_body(&[7u8; 50], &mut tally);
        let copies = capture.finish();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].target, 1);
        assert_eq!(copies[0].body.as_slice(), &[7u8; 50][..]);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn over_cap_body_is_skipped_not_truncated() {
        let plan = plan(
            r#"{"name": "small", "cluster": "c", "percent": 100, "max_body_bytes": 10},
               {"name": "big", "cluster": "c", "percent": 100, "max_body_bytes": 20}"#,
        );
        let mut tally = Tally::default();
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"0123456789", &mut tally);
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 0);
        capture.add_body(b"a", &mut tally);
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
        assert!(capture.is_active());
        capture.add_body(b"bcdefghijk", &mut tally);
        assert_eq!(tally.get(1, Counter::SkippedBodyTooLarge), 1);
        assert!(!capture.is_active());
        assert!(capture.finish().is_empty());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn body_read_in_chunks_is_the_same_whatever_their_sizes() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": 8}"#);
        let mut tally = Tally::default();
        let mut whole = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        whole.add_body_chunk(b"abcdefgh".to_vec(), &mut tally);
        assert_eq!(whole.finish()[0].body.as_slice(), b"abcdefgh");
        let mut split = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        split.add_body_chunk(b"abc".to_vec(), &mut tally);
        split.add_body_chunk(b"defgh".to_vec(), &mut tally);
        assert_eq!(split.finish()[0].body.as_slice(), b"abcdefgh");
        let mut over = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        over.add_body_chunk(b"abcdefghi".to_vec(), &mut tally);
        assert!(!over.is_active());
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn abandoned_copies_are_counted_and_never_sent() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut tally = Tally::default();
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"part", &mut tally);
        capture.abandon(&mut tally);
        assert!(!capture.is_active());
        assert!(capture.finish().is_empty());
        assert_eq!(tally.get(0, Counter::DispatchFailed), 1);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn zero_cap_mirrors_only_bodiless_requests() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100, "max_body_bytes": 0}"#);
        let mut tally = Tally::default();
        let capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        assert_eq!(capture.finish().len(), 1);
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"x", &mut tally);
        assert!(capture.finish().is_empty());
        assert_eq!(tally.get(0, Counter::SkippedBodyTooLarge), 1);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn every_target_gets_its_own_copy_of_one_body() {
        let plan = plan(
            r#"{"name": "a", "cluster": "c", "percent": 100, "headers": {"set": {"x-t": "a"}}},
               {"name": "b", "cluster": "c", "percent": 100, "authority": "b.internal"}"#,
        );
        let mut tally = Tally::default();
        let mut capture = begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).unwrap();
        capture.add_body(b"hello ", &mut tally);
        capture.add_body(b"world", &mut tally);
        let copies = capture.finish();
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn unmatched_request_is_not_counted() {
        let plan = plan(
            r#"{"name": "a", "cluster": "c", "percent": 100, "match": {"methods": ["POST"]}}"#,
        );
        let mut tally = Tally::default();
        assert!(begin(&plan, &mut get(&[]), &mut Rng::new(1), &mut tally).is_none());
        assert_eq!(tally, Tally::default());
    }
}
