//! Comparing a copy's answer with the primary's response to the same request: a target
//! with `compare` learns whether the service under test answers like production, and
//! where it does not (docs/compare.md). This module is the comparison itself, on two
//! answers held in memory; the lifecycle gathers them ([`crate::lifecycle`]) and the
//! command compares saved ones.
//!
//! In this order, the first difference names the result: the status code; `grpc-status`
//! (absent on both is equal); each listed header; the body, decoded first
//! ([`decode`]), compared as JSON ([`json`], paths as [`pointer`]s) or as bytes. A HEAD
//! request, and 1xx, 204 and 304 answers, have no body to compare.

pub mod decode;
pub mod json;
pub mod pointer;

use decode::{decode, Encoding, Undecodable};
use pointer::Pattern;
use std::borrow::Cow;

/// How bodies are compared (`compare.body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// As JSON when both sides' `content-type` is JSON, else as bytes.
    Auto,
    Json,
    Bytes,
    /// Not at all.
    None,
}

/// A target's compiled `compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// Response headers compared by value, lower-case.
    pub headers: Vec<String>,
    pub body: BodyMode,
    pub ignore: Vec<Pattern>,
    pub unordered: Vec<Pattern>,
    /// The most body bytes of each side compared, after decoding.
    pub max_body_bytes: usize,
    /// Distinct JSON paths counted per target.
    pub max_paths: usize,
    /// Mismatches logged per target per minute.
    pub log_per_minute: u32,
}

/// What a comparison ended in: each comparing copy ends in exactly one, counted as
/// `compare.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareResult {
    Match,
    Status,
    GrpcStatus,
    Header,
    Body,
    /// The copy ended without a whole answer from the mirror.
    MirrorFailed,
    /// The primary's response did not complete.
    PrimaryIncomplete,
    TooLarge,
    Encoding,
    NotJson,
    /// The primary's body would not fit in `max_in_flight_bytes`.
    SkippedBudget,
}

impl CompareResult {
    pub const ALL: [CompareResult; 11] = [
        CompareResult::Match,
        CompareResult::Status,
        CompareResult::GrpcStatus,
        CompareResult::Header,
        CompareResult::Body,
        CompareResult::MirrorFailed,
        CompareResult::PrimaryIncomplete,
        CompareResult::TooLarge,
        CompareResult::Encoding,
        CompareResult::NotJson,
        CompareResult::SkippedBudget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CompareResult::Match => "match",
            CompareResult::Status => "status",
            CompareResult::GrpcStatus => "grpc_status",
            CompareResult::Header => "header",
            CompareResult::Body => "body",
            CompareResult::MirrorFailed => "mirror_failed",
            CompareResult::PrimaryIncomplete => "primary_incomplete",
            CompareResult::TooLarge => "too_large",
            CompareResult::Encoding => "encoding",
            CompareResult::NotJson => "not_json",
            CompareResult::SkippedBudget => "skipped_budget",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the two answers were found to differ (what is logged).
    pub fn is_difference(self) -> bool {
        matches!(
            self,
            CompareResult::Status
                | CompareResult::GrpcStatus
                | CompareResult::Header
                | CompareResult::Body
        )
    }
}

/// One side's answer, as the comparison reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// `:status`.
    pub status: Option<u16>,
    /// `grpc-status`, from the trailers or, for a trailers-only answer, the headers.
    pub grpc_status: Option<Vec<u8>>,
    /// The first value of each header the comparison may list, by lower-case name
    /// (`None`: absent); a name not here is absent.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub content_type: Option<Vec<u8>>,
    pub content_encoding: Option<Vec<u8>>,
    /// The body as held: all of it, or its first bytes when it is longer than can be
    /// compared (see `length`).
    pub body: Vec<u8>,
    /// The body's whole length, as it arrived.
    pub length: usize,
}

impl Response {
    /// A listed header's value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The answer's status, parsed.
    pub fn parse_status(value: Option<&[u8]>) -> Option<u16> {
        std::str::from_utf8(value?).ok()?.trim().parse().ok()
    }
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub result: CompareResult,
    /// The first differing JSON path, indices as `*` (a `body` result in JSON).
    pub path: Option<String>,
    /// The same path with each index as it is in the primary's document, to find the
    /// values (the command shows them; the filter never does).
    pub exact_path: Option<String>,
    /// The first differing header (a `header` result).
    pub header: Option<String>,
}

impl Found {
    fn only(result: CompareResult) -> Found {
        Found {
            result,
            path: None,
            exact_path: None,
            header: None,
        }
    }
}

/// Compares a mirror's answer with the primary's response to the same request (`head`:
/// it was a HEAD request, whose answers have no body).
pub fn compare(config: &Compare, head: bool, primary: &Response, mirror: &Response) -> Found {
    if primary.status != mirror.status {
        return Found::only(CompareResult::Status);
    }
    if primary.grpc_status != mirror.grpc_status {
        return Found::only(CompareResult::GrpcStatus);
    }
    for name in &config.headers {
        if primary.header(name) != mirror.header(name) {
            return Found {
                header: Some(name.clone()),
                ..Found::only(CompareResult::Header)
            };
        }
    }
    let bodiless = matches!(primary.status, Some(100..=199 | 204 | 304));
    if head || bodiless || config.body == BodyMode::None {
        return Found::only(CompareResult::Match);
    }
    compare_bodies(config, primary, mirror)
}

fn compare_bodies(config: &Compare, primary: &Response, mirror: &Response) -> Found {
    let limit = config.max_body_bytes;
    let (p_encoding, m_encoding) = (
        Encoding::of(primary.content_encoding.as_deref()),
        Encoding::of(mirror.content_encoding.as_deref()),
    );
    if p_encoding == Encoding::Other || m_encoding == Encoding::Other {
        return Found::only(CompareResult::Encoding);
    }
    // An encoded body longer than the limit is not held whole: too large, like a plain one.
    if primary.length > limit || mirror.length > limit {
        return Found::only(CompareResult::TooLarge);
    }
    fn decoded(
        encoding: Encoding,
        body: &[u8],
        limit: usize,
    ) -> Result<Cow<'_, [u8]>, CompareResult> {
        decode(encoding, body, limit).map_err(|e| match e {
            Undecodable::TooLarge => CompareResult::TooLarge,
            Undecodable::Encoding => CompareResult::Encoding,
        })
    }
    let (p_body, m_body) = match (
        decoded(p_encoding, &primary.body, limit),
        decoded(m_encoding, &mirror.body, limit),
    ) {
        (Ok(p), Ok(m)) => (p, m),
        (Err(result), _) | (_, Err(result)) => return Found::only(result),
    };
    let as_json = match config.body {
        BodyMode::Json => true,
        BodyMode::Bytes | BodyMode::None => false,
        BodyMode::Auto => {
            is_json(primary.content_type.as_deref()) && is_json(mirror.content_type.as_deref())
        }
    };
    if !as_json {
        return Found::only(if p_body == m_body {
            CompareResult::Match
        } else {
            CompareResult::Body
        });
    }
    let rules = json::Rules {
        ignore: &config.ignore,
        unordered: &config.unordered,
    };
    // Most answers that match have their members in the same order: read side by side,
    // without a tree, they match at once; anything else is settled by the trees.
    if json::equal_in_order(&p_body, &m_body, rules) == Some(true) {
        return Found::only(CompareResult::Match);
    }
    let (Some(p_doc), Some(m_doc)) = (json::parse(&p_body), json::parse(&m_body)) else {
        return Found::only(CompareResult::NotJson);
    };
    match json::first_difference(&p_doc, &m_doc, rules) {
        None => Found::only(CompareResult::Match),
        Some(difference) => Found {
            path: Some(difference.path),
            exact_path: Some(difference.exact_path),
            ..Found::only(CompareResult::Body)
        },
    }
}

/// Whether a `content-type` is JSON: `application/json`, or any `*/*+json`, with or
/// without parameters.
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let ends_with = |suffix: &[u8]| {
        media.len() >= suffix.len()
            && media
                .get(media.len() - suffix.len()..)
                .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
    };
    media.eq_ignore_ascii_case(b"application/json")
        || (ends_with(b"+json") && media.contains(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn json_is_application_json_or_any_plus_json_in_any_case() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/problem+json",
            "application/vnd.api+JSON;v=2",
        ] {
            assert!(is_json(Some(yes.as_bytes())), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "+json",
            "json",
            "application/json-seq",
            "",
        ] {
            assert!(!is_json(Some(no.as_bytes())), "{no}");
        }
        assert!(!is_json(None));
    }
}
