//! A target: where its copies go, which requests it picks, how the copy is changed, its
//! limits.

use serde_json::Value;

use super::fields::*;
use super::parse_compare::parse_compare;
use super::parse_headers::parse_header_ops;
use super::parse_match::parse_match;
use super::{
    error, Authority, HeaderOps, OnMissingKey, Result, Target, DEFAULT_HOST_SUFFIX,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SAMPLE_HEADER, DEFAULT_TIMEOUT_MS,
    MAX_BODY_BYTES_LIMIT,
};
use crate::matching::Match;
use crate::sampling::{threshold, SampleKey};
use crate::suggest::closest;

pub(super) const TARGET_FIELDS: &[&str] = &[
    "name",
    "cluster",
    "percent",
    "sample_by",
    "on_missing_key",
    "salt",
    "match",
    "authority",
    "host_suffix",
    "headers",
    "max_body_bytes",
    "timeout_ms",
    "max_rps",
    "max_in_flight",
    "compare",
];

pub(super) const SAMPLE_BY_FIELDS: &[&str] = &["header", "cookie", "query", "random"];

pub(super) fn parse_target(path: &str, value: &Value) -> Result<Target> {
    let mut fields = Fields::new(value, path, &format!("{path}."), TARGET_FIELDS)?;

    let (p, v) = fields.required("name")?;
    let name = name(&p, v)?;

    let (p, v) = fields.required("cluster")?;
    let cluster = string(&p, v)?;
    if cluster.is_empty() {
        return error(&p, "must not be empty");
    }

    let (p, v) = fields.required("percent")?;
    let percent = number(&p, v)?;
    if !(0.0..=100.0).contains(&percent) {
        return error(&p, format!("must be between 0 and 100, got {}", show(v)));
    }

    let sample_by = match fields.optional("sample_by") {
        None => SampleKey::Header(DEFAULT_SAMPLE_HEADER.to_string()),
        Some((p, v)) => parse_sample_key(&p, v)?,
    };

    let on_missing_key = match fields.optional("on_missing_key") {
        None => OnMissingKey::Skip,
        Some((p, v)) => one_of(
            &p,
            v,
            &[
                ("skip", OnMissingKey::Skip),
                ("random", OnMissingKey::Random),
            ],
        )?,
    };

    let salt = match fields.optional("salt") {
        None => name.clone(),
        Some((p, v)) => string(&p, v)?,
    };

    let matcher = match fields.optional("match") {
        None => Match::default(),
        Some((p, v)) => parse_match(&p, v)?,
    };

    let fixed_authority = match fields.optional("authority") {
        None | Some((_, Value::Null)) => None,
        Some((p, v)) => {
            let authority = string(&p, v)?;
            if authority.is_empty() || !valid_header_value(&authority) {
                return error(&p, "must be a non-empty host[:port] or null");
            }
            Some(authority)
        }
    };
    let host_suffix = match fields.optional("host_suffix") {
        None => DEFAULT_HOST_SUFFIX.to_string(),
        Some((p, v)) => {
            let suffix = string(&p, v)?;
            if !valid_header_value(&suffix) || suffix.contains(':') {
                return error(&p, "must not contain ':' or control characters");
            }
            suffix
        }
    };
    let authority = match fixed_authority {
        Some(a) => Authority::Fixed(a),
        None => Authority::Suffix(host_suffix),
    };

    let header_ops = match fields.optional("headers") {
        None => HeaderOps::default(),
        Some((p, v)) => parse_header_ops(&p, v)?,
    };

    let max_body_bytes = match fields.optional("max_body_bytes") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some((p, v)) => integer_in(&p, v, 0, MAX_BODY_BYTES_LIMIT)?,
    };
    let timeout_ms = match fields.optional("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some((p, v)) => integer_in(&p, v, 1, 60_000)?,
    };
    let max_rps = match fields.optional("max_rps") {
        None | Some((_, Value::Null)) => None,
        Some((p, v)) => {
            let rps = number(&p, v)?;
            if rps <= 0.0 || !rps.is_finite() {
                return error(
                    &p,
                    format!("must be greater than 0 or null, got {}", show(v)),
                );
            }
            Some(rps)
        }
    };
    let max_in_flight = match fields.optional("max_in_flight") {
        None => DEFAULT_MAX_IN_FLIGHT,
        Some((p, v)) => integer_in(&p, v, 1, 100_000)?,
    };
    let compare = match fields.optional("compare") {
        None => None,
        Some((p, v)) => parse_compare(&p, v)?,
    };

    Ok(Target {
        name,
        cluster,
        threshold: threshold(percent),
        sample_by,
        on_missing_key,
        salt: salt.into_bytes(),
        matcher,
        authority,
        header_ops,
        // Both bounds were checked above, so these conversions cannot fail.
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
        max_rps,
        max_in_flight: u32::try_from(max_in_flight).unwrap_or(u32::MAX),
        compare,
    })
}

pub(super) fn parse_sample_key(path: &str, value: &Value) -> Result<SampleKey> {
    let object = object(path, value)?;
    let mut entries = object.iter();
    let (kind, inner) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        _ => {
            return error(
                path,
                format!(
                    "must have exactly one of \"header\", \"cookie\", \"query\", \"random\", got {} fields",
                    object.len()
                ),
            )
        }
    };
    let p = member(path, kind);
    match kind.as_str() {
        "header" => Ok(SampleKey::Header(header_name(&p, inner)?)),
        "cookie" => Ok(SampleKey::Cookie(non_empty_token(&p, inner)?)),
        "query" => Ok(SampleKey::Query(non_empty_token(&p, inner)?)),
        "random" => match inner {
            Value::Bool(true) => Ok(SampleKey::Random),
            other => error(&p, format!("must be true, got {}", show(other))),
        },
        _ => {
            let hint = match closest(kind, SAMPLE_BY_FIELDS) {
                Some(meant) => format!(", did you mean \"{meant}\"?"),
                None => String::new(),
            };
            error(
                &p,
                format!(
                    "unknown field{hint} (expected one of: {})",
                    SAMPLE_BY_FIELDS.join(", ")
                ),
            )
        }
    }
}
