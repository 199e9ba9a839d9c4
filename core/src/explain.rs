//! What the filter would do with one request, for the `traffic-mirror explain` command:
//! the request's lane, and for each target whether it is mirrored and why, with the
//! bucket and the threshold, and the copy's headers. It renders the very value the
//! filter computes at a request's headers ([`crate::decision::decide`]), on a request
//! held in memory, and builds the copy with the filter's own builder, so its answers are
//! the module's.

use crate::compare::{BodyMode, Compare};
use crate::config::{Plan, Target};
use crate::copy::copy_headers;
use crate::decision::{decide, Gate, Mode, Sampling, TargetDecision};
use crate::lanes::{Assign, How, BAGGAGE};
use crate::matching::Mismatch;
use crate::request::{HeaderList, RequestView};
use crate::sampling::{Rng, SampleKey};
use crate::wire;

/// Why a target mirrors a request or not (the JSON `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request carries `loop_header`.
    Loop,
    /// A `match` condition failed (or the request is a `CONNECT` or an upgrade).
    NoMatch,
    /// No key, and `on_missing_key` is `skip`.
    MissingKey,
    /// The key's bucket is at or above the threshold.
    NotSampled,
    /// Sampled (or drawn), but the request declares a `content-length` over
    /// `max_body_bytes`.
    BodyTooLarge,
    /// The key's bucket is below the threshold.
    Sampled,
    /// A random draw decides, per request.
    Random,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Loop => "loop",
            Reason::NoMatch => "no_match",
            Reason::MissingKey => "missing_key",
            Reason::NotSampled => "not_sampled",
            Reason::BodyTooLarge => "body_too_large",
            Reason::Sampled => "sampled",
            Reason::Random => "random",
        }
    }
}

/// One target's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    /// `None`: drawn at random for each request.
    pub mirrored: Option<bool>,
    pub reason: Reason,
    /// In words: which condition failed, which key was hashed.
    pub detail: String,
    pub bucket: Option<u32>,
    pub threshold: u32,
    /// The copy's headers, for a target that mirrors (or may mirror) the request.
    pub copy: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// How the copy's answer is compared with the primary's, for a comparing target that
    /// mirrors (or may mirror) the request.
    pub compared: Option<String>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The lane the request is in (assigned or kept); `None`: no lane header.
    pub lane: Option<String>,
    /// How the lane was decided, in words (empty without lanes).
    pub lane_detail: String,
    /// The request's `baggage` as the filter leaves it, when it writes the lane there
    /// (`Some(None)`: none).
    pub baggage: Option<Option<String>>,
    /// The request is a gRPC call (by its `content-type`).
    pub grpc: bool,
    pub targets: Vec<Verdict>,
}

/// Explains `request` under `plan`. The request is changed as the filter changes it
/// (the lane header).
pub fn explain(plan: &Plan, request: &mut HeaderList) -> Explanation {
    // Random draws are shown as such, never made: any seed will do.
    let decision = decide(plan, request, &mut Rng::new(0), Mode::Explain);
    let (lane, lane_detail) = match (&plan.lanes, decision.lane) {
        (Some(lanes), Some(decided)) => {
            let key = |assign: Option<&Assign>| {
                assign.map_or_else(String::new, |a| key_name(&a.sample_by))
            };
            let baggage_key = lanes.baggage.as_deref().unwrap_or_default();
            let detail = match decided.how {
                How::Kept => "kept the lane it arrived with (keep_incoming)".to_string(),
                How::KeptFromBaggage => format!(
                    "kept the lane it arrived with in baggage {baggage_key} (keep_incoming)"
                ),
                How::Hashed { bucket } => format!(
                    "bucket {bucket} of {} (salt {:?})",
                    key(lanes.assign()),
                    lanes
                        .assign()
                        .map(|a| String::from_utf8_lossy(&a.salt).into_owned())
                        .unwrap_or_default()
                ),
                How::MissingKey => format!("no {}: the default lane", key(lanes.assign())),
                How::Random { .. } => format!(
                    "no {}: drawn at random for each request",
                    key(lanes.assign())
                ),
                How::Followed => format!("followed from baggage {baggage_key}"),
                How::NotFollowed { unknown: true } => format!(
                    "baggage {baggage_key}={} is not a lane this hop follows",
                    lanes
                        .baggage_lane(request)
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_default()
                ),
                How::NotFollowed { unknown: false } => {
                    format!("no {baggage_key} in baggage")
                }
            };
            let lane = if decided.how == How::Kept {
                request
                    .header(&lanes.header)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            } else {
                decided.lane.and_then(|l| lanes.name(l)).map(str::to_string)
            };
            (lane, detail)
        }
        _ => (None, String::new()),
    };
    let map = request.header_map();
    let pairs = wire::parse(&map).unwrap_or_default();
    let targets = plan
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let (mirrored, reason, detail, bucket) = match decision.gate {
                Gate::NotMirrorable => (
                    Some(false),
                    Reason::NoMatch,
                    "CONNECT and upgrade requests are never mirrored".to_string(),
                    None,
                ),
                Gate::Loop => (
                    Some(false),
                    Reason::Loop,
                    format!("the request carries {}", plan.loop_header),
                    None,
                ),
                Gate::Open => match decision.targets.get(index) {
                    Some(decided) => verdict(target, decided, decision.declared_length),
                    None => (Some(false), Reason::NoMatch, String::new(), None),
                },
            };
            let copy = (mirrored != Some(false)).then(|| {
                let headers = copy_headers(&pairs, target, &plan.loop_header);
                wire::parse(&headers)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect()
            });
            let head = request.method() == b"HEAD";
            let compared = target
                .compare
                .as_ref()
                .filter(|_| mirrored != Some(false))
                .map(|compare| how_compared(compare, head));
            Verdict {
                name: target.name.clone(),
                mirrored,
                reason,
                detail,
                bucket,
                threshold: target.threshold,
                copy,
                compared,
            }
        })
        .collect();
    let baggage = plan
        .lanes
        .as_ref()
        .filter(|lanes| lanes.baggage.is_some() && lanes.assign().is_some())
        .map(|_| {
            request
                .joined_header(BAGGAGE)
                .map(|list| String::from_utf8_lossy(&list).into_owned())
        });
    Explanation {
        lane,
        lane_detail,
        baggage,
        grpc: decision.grpc,
        targets,
    }
}

/// One target's decision, in words.
fn verdict(
    target: &Target,
    decided: &TargetDecision<'_>,
    declared: Option<usize>,
) -> (Option<bool>, Reason, String, Option<u32>) {
    let key = key_name(&target.sample_by);
    let (mirrored, reason, detail, bucket) = match decided.sampling {
        Sampling::NotMatched(mismatch) => (
            Some(false),
            Reason::NoMatch,
            mismatch_text(target, mismatch),
            None,
        ),
        Sampling::MissingKey => {
            let hint = if target.sample_by == SampleKey::Header("x-request-id".into()) {
                "; Envoy gives every request an x-request-id: pass one with -H"
            } else {
                ""
            };
            (
                Some(false),
                Reason::MissingKey,
                format!("no {key} (on_missing_key: skip){hint}"),
                None,
            )
        }
        Sampling::Keyed { bucket, sampled } => {
            let detail = format!(
                "bucket {} of {key} (salt {:?}) {} threshold {}",
                bucket.unwrap_or_default(),
                String::from_utf8_lossy(&target.salt),
                if sampled { "<" } else { ">=" },
                target.threshold
            );
            let reason = if sampled {
                Reason::Sampled
            } else {
                Reason::NotSampled
            };
            (Some(sampled), reason, detail, bucket)
        }
        Sampling::Drawn { .. } => {
            let detail = match target.sample_by {
                SampleKey::Random => "sample_by random: drawn for each request".to_string(),
                _ => format!("no {key}: drawn at random for each request (on_missing_key: random)"),
            };
            (None, Reason::Random, detail, None)
        }
    };
    if decided.body_too_large {
        let detail = format!(
            "the request declares content-length {} over max_body_bytes {} ({detail})",
            declared.unwrap_or_default(),
            target.max_body_bytes
        );
        return (Some(false), Reason::BodyTooLarge, detail, bucket);
    }
    (mirrored, reason, detail, bucket)
}

/// How a copy's answer is compared with the primary's, in words.
pub fn how_compared(compare: &Compare, head: bool) -> String {
    let mut parts = vec!["status".to_string(), "grpc-status".to_string()];
    if !compare.headers.is_empty() {
        parts.push(format!("headers {}", compare.headers.join(", ")));
    }
    let body = match (head, compare.body) {
        (true, _) => "no body (a HEAD request has none)".to_string(),
        (false, BodyMode::None) => "no body (body: none)".to_string(),
        (false, mode) => {
            let how = match mode {
                BodyMode::Json => "the body as JSON",
                BodyMode::Bytes => "the body as bytes",
                _ => "the body (as JSON when both sides' content-type is JSON, else as bytes)",
            };
            let mut body = format!(
                "{how}, up to {} bytes decoded (gzip, deflate)",
                compare.max_body_bytes
            );
            let pointers = |list: &[crate::compare::pointer::Pattern]| {
                list.iter()
                    .map(crate::compare::pointer::write_pattern)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !compare.ignore.is_empty() {
                body.push_str(&format!(", ignoring {}", pointers(&compare.ignore)));
            }
            if !compare.unordered.is_empty() {
                body.push_str(&format!(", in any order: {}", pointers(&compare.unordered)));
            }
            body
        }
    };
    parts.push(body);
    format!("compared with the primary's answer: {}", parts.join("; "))
}

fn key_name(key: &SampleKey) -> String {
    match key {
        SampleKey::Header(name) => format!("header {name}"),
        SampleKey::Cookie(name) => format!("cookie {name}"),
        SampleKey::Query(name) => format!("query parameter {name}"),
        SampleKey::Random => "random".to_string(),
    }
}

fn mismatch_text(target: &Target, mismatch: Mismatch<'_>) -> String {
    let m = &target.matcher;
    match mismatch {
        Mismatch::Method => format!("match.methods: not one of {}", m.methods.join(", ")),
        Mismatch::PathPrefix => format!(
            "match.path_prefix: the path does not start with {}",
            m.path_prefix.as_deref().unwrap_or_default()
        ),
        Mismatch::PathExact => format!(
            "match.path_exact: the path is not {}",
            m.path_exact.as_deref().unwrap_or_default()
        ),
        Mismatch::ExcludedPath(prefix) => {
            format!("match.exclude_path_prefixes: the path starts with {prefix}")
        }
        Mismatch::Host => "match.hosts: the host is none of them".to_string(),
        Mismatch::Header(name) => format!("match.headers.{name}: absent or another value"),
    }
}
