//! One request's way through the plan, as the specification orders it: loop guard,
//! match, sampling, body cap. A request that is not mirrored leaves at the first check
//! that fails, having copied nothing; a sampled one is captured here (headers at once,
//! body chunk by chunk as it flows on to the upstream) until it is complete.

use std::rc::Rc;

use crate::config::{OnMissingKey, Plan, Target};
use crate::copy::{copy_headers, Header};
use crate::metrics::{Counter, Metrics};
use crate::request::RequestView;
use crate::sampling::{cookie_value, is_sampled, query_value, random_bucket, Rng, SampleKey};

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
    let key: Option<Vec<u8>> = match &target.sample_by {
        SampleKey::Header(name) => request.header(name).filter(|v| !v.is_empty()),
        SampleKey::Cookie(name) => request
            .header("cookie")
            .and_then(|cookies| cookie_value(&cookies, name).map(<[u8]>::to_vec)),
        SampleKey::Query(name) => query_value(request.path(), name).map(<[u8]>::to_vec),
        SampleKey::Random => None,
    };
    let sampled = match key {
        Some(key) => is_sampled(&target.salt, &key, target.threshold),
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
    headers: Vec<Header>,
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
    pub headers: Vec<Header>,
    /// Shared by every target's copy of the same request.
    pub body: Rc<[u8]>,
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
    let mut capture: Option<Capture> = None;
    let mut request_headers: Option<Vec<Header>> = None;
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
        let headers = request_headers.get_or_insert_with(|| request.all_headers());
        capture
            .get_or_insert_with(Capture::default)
            .copies
            .push(Capturing {
                target: index,
                max_body_bytes: target.max_body_bytes,
                headers: copy_headers(headers, target, &plan.loop_header),
            });
    }
    capture
}

impl Capture {
    /// Whether any copy is still being captured.
    pub fn is_active(&self) -> bool {
        !self.copies.is_empty()
    }

    /// Appends a body chunk; copies whose cap it exceeds are abandoned and counted.
    pub fn add_body(&mut self, chunk: &[u8], metrics: &mut impl Metrics) {
        let total = self.body.len().saturating_add(chunk.len());
        self.copies.retain(|copy| {
            let fits = total <= copy.max_body_bytes;
            if !fits {
                metrics.count(copy.target, Counter::SkippedBodyTooLarge);
            }
            fits
        });
        if self.copies.is_empty() {
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    /// The request is complete: the copies, sharing one body.
    pub fn finish(self) -> Vec<ReadyCopy> {
        let body: Rc<[u8]> = Rc::from(self.body);
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
