//! What a request's headers decide, as one value ([`Decision`]), in the order of the
//! specification (docs/specification.md): the lane first (written on the request, so that
//! routing and the targets see it); then, for the request as a whole, `CONNECT` and
//! upgrades (never mirrored) and the loop header; then, target by target, `match`, the key
//! (its hash against the threshold) or a random draw, and a declared `content-length`
//! against `max_body_bytes`. A request that is not mirrored leaves each target at the
//! first check that fails, having copied nothing.
//!
//! The filter counts this value and captures what it says to copy
//! ([`crate::lifecycle`]); the command's `explain` renders the same value
//! ([`crate::explain`]), so the two cannot tell different stories.

use crate::config::{OnMissingKey, Plan, Target};
use crate::lanes::LaneDecision;
use crate::matching::Mismatch;
use crate::request::RequestView;
use crate::sampling::{bucket, is_sampled, random_bucket, with_key, Rng, SampleKey};
use crate::stats::Counter;

/// What the request as a whole allows, before any target decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The targets decided (or there are none: a lanes-only configuration, which reads
    /// nothing more of the request).
    Open,
    /// A `CONNECT` or upgrade request: never mirrored, not counted.
    NotMirrorable,
    /// The request carries the loop header: counted by every target as `skipped_loop`.
    Loop,
}

/// How one target sampled a request it considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling<'a> {
    /// A `match` condition failed: this one.
    NotMatched(Mismatch<'a>),
    /// No key, and `on_missing_key` is `skip`.
    MissingKey,
    /// The key's bucket decided (`None`: not computed, the threshold alone decided).
    Keyed { bucket: Option<u32>, sampled: bool },
    /// A random draw decided (`sample_by` random, or no key with `on_missing_key`
    /// random).
    Drawn { sampled: bool },
}

impl Sampling<'_> {
    pub fn is_sampled(&self) -> bool {
        matches!(
            self,
            Sampling::Keyed { sampled: true, .. } | Sampling::Drawn { sampled: true }
        )
    }
}

/// One target's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetDecision<'a> {
    pub sampling: Sampling<'a>,
    /// The request declares a `content-length` over the target's `max_body_bytes`:
    /// known at the headers, so a sampled request is skipped before anything is copied.
    /// Looked at only for a target that sampled the request (or, for `explain`, that
    /// draws at random).
    pub body_too_large: bool,
}

impl TargetDecision<'_> {
    /// Whether the request is to be copied for this target.
    pub fn copies(&self) -> bool {
        self.sampling.is_sampled() && !self.body_too_large
    }
}

/// Everything a request's headers decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The request's lane, when the configuration has lanes.
    pub lane: Option<LaneDecision>,
    pub gate: Gate,
    /// Each target's decision, in the configuration's order, when the gate is open;
    /// empty otherwise.
    pub targets: Vec<TargetDecision<'a>>,
    /// The request's declared `content-length` (read only once a target samples it).
    pub declared_length: Option<usize>,
    /// The request is a gRPC call (by its `content-type`; read only when a target copies
    /// it): its copies' answers are read for their `grpc-status`.
    pub grpc: bool,
}

impl Decision<'_> {
    /// The targets that copy the request, by index.
    pub fn copying(&self) -> impl Iterator<Item = usize> + '_ {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.copies())
            .map(|(index, _)| index)
    }

    /// Whether any target copies the request.
    pub fn copies_any(&self) -> bool {
        self.targets.iter().any(TargetDecision::copies)
    }

    /// Hands `count` each per-target counter this decision adds one to, target by target
    /// (`targets`: how many the configuration has). A looping request counts in every
    /// target's `skipped_loop`; a `CONNECT` or upgrade request and a request a target's
    /// `match` leaves out count nowhere. (The lane is counted apart.)
    pub fn for_each_count(&self, targets: usize, mut count: impl FnMut(usize, Counter)) {
        match self.gate {
            Gate::NotMirrorable => {}
            Gate::Loop => (0..targets).for_each(|target| count(target, Counter::SkippedLoop)),
            Gate::Open => {
                for (target, decision) in self.targets.iter().enumerate() {
                    match decision.sampling {
                        Sampling::NotMatched(_) => {}
                        Sampling::MissingKey => {
                            count(target, Counter::Requests);
                            count(target, Counter::SkippedMissingKey);
                        }
                        sampling => {
                            count(target, Counter::Requests);
                            if sampling.is_sampled() {
                                count(target, Counter::Sampled);
                                if decision.body_too_large {
                                    count(target, Counter::SkippedBodyTooLarge);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Who asks: the filter, which skips the work its answer does not need, or `explain`,
/// which shows the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The hash is skipped where the threshold alone decides (0 % and 100 %).
    Filter,
    /// Every keyed target's bucket is computed, and a target that draws at random is
    /// checked against its body cap too (its draw is made per request).
    Explain,
}

/// Decides everything a request's headers decide. The lane is written on the request
/// (the targets' `match` and the copies see it, as routing does).
pub fn decide<'a>(
    plan: &'a Plan,
    request: &mut impl RequestView,
    rng: &mut Rng,
    mode: Mode,
) -> Decision<'a> {
    let lane = plan.lanes.as_ref().map(|lanes| {
        let lane = lanes.decide(request, rng);
        lanes.write(&lane, request);
        lane
    });
    let mut decision = Decision {
        lane,
        gate: Gate::Open,
        targets: Vec::new(),
        declared_length: None,
        grpc: false,
    };
    if plan.targets.is_empty() {
        return decision;
    }
    if !is_mirrorable(request) {
        decision.gate = Gate::NotMirrorable;
        return decision;
    }
    if request.header(&plan.loop_header).is_some() {
        decision.gate = Gate::Loop;
        return decision;
    }
    decision.targets.reserve_exact(plan.targets.len());
    // The declared length, read once, at the first target that needs it.
    let mut declared: Option<Option<usize>> = None;
    for target in &plan.targets {
        let sampling = sample(target, request, rng, mode == Mode::Explain);
        let weigh = sampling.is_sampled()
            || (mode == Mode::Explain && matches!(sampling, Sampling::Drawn { .. }));
        let body_too_large = weigh
            && declared
                .get_or_insert_with(|| declared_length(request))
                .is_some_and(|len| len > target.max_body_bytes);
        decision.targets.push(TargetDecision {
            sampling,
            body_too_large,
        });
    }
    decision.declared_length = declared.flatten();
    if decision.copies_any() || mode == Mode::Explain {
        decision.grpc = request
            .header("content-type")
            .is_some_and(is_grpc_content_type);
    }
    decision
}

/// Whether this kind of request is ever mirrored: not `CONNECT`, not an upgrade.
pub fn is_mirrorable(request: &mut impl RequestView) -> bool {
    request.method() != b"CONNECT" && request.header("upgrade").is_none()
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

/// Match and sample one target (`always_hash`: compute the bucket even where the
/// threshold alone decides).
fn sample<'a>(
    target: &'a Target,
    request: &mut impl RequestView,
    rng: &mut Rng,
    always_hash: bool,
) -> Sampling<'a> {
    if let Err(mismatch) = target.matcher.check(request) {
        return Sampling::NotMatched(mismatch);
    }
    with_key(&target.sample_by, request, |key| {
        sample_key(target, Some(key), rng, always_hash)
    })
    .unwrap_or_else(|| sample_key(target, None, rng, always_hash))
}

/// Samples a key (`None`: missing) for one target that the request matches: its bucket
/// against the threshold, or a random draw for `sample_by` random and for a missing key
/// with `on_missing_key` random. (The command's `sample` decides its keys with this.)
pub fn sample_key<'a>(
    target: &Target,
    key: Option<&[u8]>,
    rng: &mut Rng,
    always_hash: bool,
) -> Sampling<'a> {
    match key {
        Some(key) if always_hash => {
            let bucket = bucket(&target.salt, key);
            Sampling::Keyed {
                bucket: Some(bucket),
                sampled: bucket < target.threshold,
            }
        }
        Some(key) => Sampling::Keyed {
            bucket: None,
            sampled: is_sampled(&target.salt, key, target.threshold),
        },
        None if target.sample_by == SampleKey::Random
            || target.on_missing_key == OnMissingKey::Random =>
        {
            Sampling::Drawn {
                sampled: random_bucket(rng.next_u64()) < target.threshold,
            }
        }
        None => Sampling::MissingKey,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::request::HeaderList;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn plan(targets: &str) -> Plan {
        parse(format!(r#"{{"targets": [{targets}]}}"#).as_bytes()).unwrap()
    }

    fn request(extra: &[(&str, &[u8])]) -> HeaderList {
        let mut headers: Vec<(&str, &[u8])> = vec![
            (":method", b"POST"),
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
        let mut grpc = request(&[("content-type", b"application/grpc")]);
        assert!(decide(&plan, &mut grpc, &mut Rng::new(1), Mode::Filter).grpc);
        assert!(!decide(&plan, &mut request(&[]), &mut Rng::new(1), Mode::Filter).grpc);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_declared_length_over_the_cap_is_decided_at_the_headers() {
        let plan = plan(
            r#"{"name": "small", "cluster": "c", "percent": 100, "max_body_bytes": 10},
               {"name": "big", "cluster": "c", "percent": 100, "max_body_bytes": 20},
               {"name": "never", "cluster": "c", "percent": 0, "max_body_bytes": 10}"#,
        );
        let mut post = request(&[("content-length", b"15")]);
        let decision = decide(&plan, &mut post, &mut Rng::new(1), Mode::Filter);
        assert_eq!(decision.declared_length, Some(15));
        let too_large: Vec<bool> = decision.targets.iter().map(|t| t.body_too_large).collect();
        // Not looked at for a target that did not sample the request.
        assert_eq!(too_large, [true, false, false]);
        assert_eq!(decision.copying().collect::<Vec<_>>(), [1]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_looping_request_decides_nothing_per_target() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let mut looping = request(&[("x-traffic-mirror", b"a")]);
        let decision = decide(&plan, &mut looping, &mut Rng::new(1), Mode::Filter);
        assert_eq!(decision.gate, Gate::Loop);
        assert!(decision.targets.is_empty());
        let mut connect = HeaderList::new(&[(":method", b"CONNECT"), (":authority", b"h:443")]);
        let decision = decide(&plan, &mut connect, &mut Rng::new(1), Mode::Filter);
        assert_eq!(decision.gate, Gate::NotMirrorable);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_filter_skips_the_hash_where_the_threshold_decides_and_explain_does_not() {
        let plan = plan(r#"{"name": "a", "cluster": "c", "percent": 100}"#);
        let filter = decide(&plan, &mut request(&[]), &mut Rng::new(1), Mode::Filter);
        assert_eq!(
            filter.targets[0].sampling,
            Sampling::Keyed {
                bucket: None,
                sampled: true
            }
        );
        let explain = decide(&plan, &mut request(&[]), &mut Rng::new(1), Mode::Explain);
        assert_eq!(
            explain.targets[0].sampling,
            Sampling::Keyed {
                bucket: Some(bucket(b"a", b"rid")),
                sampled: true
            }
        );
    }
}
