//! What the headers of a request decide, for every target, in the order of the
//! specification (docs/specification.md): a `CONNECT` or upgrade request and a request
//! carrying the loop header are never mirrored; then, target by target, `match`, then
//! the key (its hash against the threshold), or a random draw. A request that is not
//! mirrored leaves at the first check that fails, having copied nothing. The filter
//! counts what this decides ([`crate::capture`]); `explain` tells it in words.

use crate::config::{OnMissingKey, Plan, Target};
use crate::matching::Mismatch;
use crate::request::RequestView;
use crate::sampling::{bucket, is_sampled, random_bucket, with_key, Rng, SampleKey};

/// What one target made of a request (after the loop check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
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

impl Decision<'_> {
    pub fn is_sampled(&self) -> bool {
        matches!(
            self,
            Decision::Keyed { sampled: true, .. } | Decision::Drawn { sampled: true }
        )
    }
}

/// Whether this kind of request is ever mirrored: not `CONNECT`, not an upgrade.
pub fn is_mirrorable(request: &mut impl RequestView) -> bool {
    request.method() != b"CONNECT" && request.header("upgrade").is_none()
}

/// Match and sample one target. The hot path skips the hash where the threshold alone
/// decides (0 % and 100 %); `always_hash` computes the bucket anyway, for `explain`.
pub fn decide<'a>(
    target: &'a Target,
    request: &mut impl RequestView,
    rng: &mut Rng,
    always_hash: bool,
) -> Decision<'a> {
    if let Err(mismatch) = target.matcher.check(request) {
        return Decision::NotMatched(mismatch);
    }
    with_key(&target.sample_by, request, |key| {
        decide_key(target, Some(key), rng, always_hash)
    })
    .unwrap_or_else(|| decide_key(target, None, rng, always_hash))
}

/// Samples a key (`None`: missing) for one target that the request matches: its bucket
/// against the threshold, or a random draw for `sample_by` random and for a missing key
/// with `on_missing_key` random. (The command's `sample` decides its keys with this too.)
pub fn decide_key<'a>(
    target: &Target,
    key: Option<&[u8]>,
    rng: &mut Rng,
    always_hash: bool,
) -> Decision<'a> {
    match key {
        Some(key) if always_hash => {
            let bucket = bucket(&target.salt, key);
            Decision::Keyed {
                bucket: Some(bucket),
                sampled: bucket < target.threshold,
            }
        }
        Some(key) => Decision::Keyed {
            bucket: None,
            sampled: is_sampled(&target.salt, key, target.threshold),
        },
        None if target.sample_by == SampleKey::Random
            || target.on_missing_key == OnMissingKey::Random =>
        {
            Decision::Drawn {
                sampled: random_bucket(rng.next_u64()) < target.threshold,
            }
        }
        None => Decision::MissingKey,
    }
}

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

/// Decides every target for a request at its headers, in the specification's order,
/// handing each target's decision to `each` (with the request, to read more of it). The
/// hash is skipped where the threshold alone decides, unless `always_hash`.
pub fn decide_request<'a, R: RequestView>(
    plan: &'a Plan,
    request: &mut R,
    rng: &mut Rng,
    always_hash: bool,
    mut each: impl FnMut(usize, &'a Target, Decision<'a>, &mut R),
) -> Gate {
    if plan.targets.is_empty() {
        return Gate::Open;
    }
    if !is_mirrorable(request) {
        return Gate::NotMirrorable;
    }
    if request.header(&plan.loop_header).is_some() {
        return Gate::Loop;
    }
    for (index, target) in plan.targets.iter().enumerate() {
        let decision = decide(target, request, rng, always_hash);
        each(index, target, decision, request);
    }
    Gate::Open
}
