//! A target's `compare`: how each copy's answer is compared with the primary's response,
//! checked and compiled.

use serde_json::Value;

use super::fields::*;
use super::{error, Result};
use crate::compare::pointer::Pattern;
use crate::compare::{BodyMode, Compare};

pub(super) const COMPARE_FIELDS: &[&str] = &[
    "headers",
    "body",
    "ignore",
    "unordered",
    "max_body_bytes",
    "max_paths",
    "log_per_minute",
];

/// Largest `compare.max_body_bytes` (1 MiB).
pub const MAX_COMPARE_BODY_BYTES: u64 = 1024 * 1024;
const DEFAULT_COMPARE_BODY_BYTES: u64 = 65_536;
const DEFAULT_MAX_PATHS: u64 = 32;
const DEFAULT_LOG_PER_MINUTE: u64 = 6;

/// `null` is no comparison.
pub(super) fn parse_compare(path: &str, value: &Value) -> Result<Option<Compare>> {
    if value.is_null() {
        return Ok(None);
    }
    let mut fields = Fields::new(value, path, &format!("{path}."), COMPARE_FIELDS)?;
    let headers = match fields.optional("headers") {
        None => vec!["content-type".to_string()],
        Some((p, v)) => {
            let mut names = Vec::new();
            for (i, item) in array(&p, v)?.iter().enumerate() {
                let name = header_name(&format!("{p}[{i}]"), item)?;
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
        }
    };
    let body = match fields.optional("body") {
        None => BodyMode::Auto,
        Some((p, v)) => one_of(
            &p,
            v,
            &[
                ("auto", BodyMode::Auto),
                ("json", BodyMode::Json),
                ("bytes", BodyMode::Bytes),
                ("none", BodyMode::None),
            ],
        )?,
    };
    let ignore = pointers(&mut fields, "ignore")?;
    let unordered = pointers(&mut fields, "unordered")?;
    let max_body_bytes = match fields.optional("max_body_bytes") {
        None => DEFAULT_COMPARE_BODY_BYTES,
        Some((p, v)) => integer_in(&p, v, 0, MAX_COMPARE_BODY_BYTES)?,
    };
    let max_paths = match fields.optional("max_paths") {
        None => DEFAULT_MAX_PATHS,
        Some((p, v)) => integer_in(&p, v, 0, 256)?,
    };
    let log_per_minute = match fields.optional("log_per_minute") {
        None => DEFAULT_LOG_PER_MINUTE,
        Some((p, v)) => integer_in(&p, v, 0, 600)?,
    };
    Ok(Some(Compare {
        headers,
        body,
        ignore,
        unordered,
        // Every bound was checked above, far below usize::MAX and u32::MAX.
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        max_paths: usize::try_from(max_paths).unwrap_or(usize::MAX),
        log_per_minute: u32::try_from(log_per_minute).unwrap_or(u32::MAX),
    }))
}

/// A list of JSON Pointers (with `*`).
fn pointers(fields: &mut Fields<'_>, key: &'static str) -> Result<Vec<Pattern>> {
    let Some((p, v)) = fields.optional(key) else {
        return Ok(Vec::new());
    };
    let mut patterns = Vec::new();
    for (i, item) in array(&p, v)?.iter().enumerate() {
        let path = format!("{p}[{i}]");
        let pointer = string(&path, item)?;
        match Pattern::parse(&pointer) {
            Ok(pattern) => patterns.push(pattern),
            Err(why) => return error(&path, format!("{why}, got {pointer:?}")),
        }
    }
    Ok(patterns)
}
