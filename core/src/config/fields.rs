//! Reading the configuration's JSON by hand, so that every error names the exact JSON path
//! (`targets[0].percent`) and says what was expected and what was found: the fields of
//! an object, the values' kinds, and the rules several parts share (names, header names,
//! the headers a copy keeps, one of a few words).

use serde_json::{Map, Value};

use super::{error, Result};
use crate::suggest::closest;

/// The fields of one JSON object, taken one by one. Its fields are checked against the
/// known ones as soon as it is read, so that a misspelt field is named (with the known
/// name closest to it) before anything else about the object, a missing one included.
pub(super) struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub(super) fn new(value: &'a Value, path: &str, prefix: &str, known: &[&str]) -> Result<Self> {
        let map = object(path, value)?;
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let path = format!("{prefix}{}", unknown.escape_debug());
            let hint = match closest(unknown, known) {
                Some(meant) => format!(", did you mean \"{meant}\"?"),
                None => String::new(),
            };
            return error(
                &path,
                format!(
                    "unknown field{hint} (expected one of: {})",
                    known.join(", ")
                ),
            );
        }
        Ok(Fields {
            map,
            prefix: prefix.to_string(),
        })
    }

    pub(super) fn optional(&mut self, key: &'static str) -> Option<(String, &'a Value)> {
        self.map
            .get(key)
            .map(|value| (format!("{}{key}", self.prefix), value))
    }

    pub(super) fn required(&mut self, key: &'static str) -> Result<(String, &'a Value)> {
        match self.optional(key) {
            Some(found) => Ok(found),
            None => error(
                &format!("{}{key}", self.prefix),
                "required field is missing",
            ),
        }
    }
}

/// The path of an object member whose name comes from the input: escaped, so that an
/// error stays one printable line whatever the name holds.
pub(super) fn member(path: &str, name: &str) -> String {
    format!("{path}.{}", name.escape_debug())
}

pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a JSON value for error lines.
pub(super) fn show(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => kind(other).to_string(),
    }
}

pub(super) fn object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => error(path, format!("expected an object, got {}", kind(other))),
    }
}

pub(super) fn array<'a>(path: &str, value: &'a Value) -> Result<&'a Vec<Value>> {
    match value {
        Value::Array(list) => Ok(list),
        other => error(path, format!("expected an array, got {}", kind(other))),
    }
}

pub(super) fn string(path: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => error(path, format!("expected a string, got {}", kind(other))),
    }
}

pub(super) fn number(path: &str, value: &Value) -> Result<f64> {
    match value.as_f64() {
        Some(n) if value.is_number() => Ok(n),
        _ => error(path, format!("expected a number, got {}", kind(value))),
    }
}

pub(super) fn integer_in(path: &str, value: &Value, min: u64, max: u64) -> Result<u64> {
    let n = match value {
        Value::Number(n) => n,
        other => return error(path, format!("expected an integer, got {}", kind(other))),
    };
    match n.as_u64() {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(_) => error(path, format!("must be between {min} and {max}, got {n}")),
        None if n.is_i64() => error(path, format!("must be between {min} and {max}, got {n}")),
        None => error(path, format!("must be an integer, got {n}")),
    }
}

pub(super) fn path_string(path: &str, value: &Value) -> Result<String> {
    let s = string(path, value)?;
    if !s.starts_with('/') {
        return error(
            path,
            format!("must start with '/', got \"{}\"", s.escape_debug()),
        );
    }
    Ok(s)
}

pub(super) fn non_empty_token(path: &str, value: &Value) -> Result<String> {
    let s = string(path, value)?;
    if s.is_empty()
        || s.bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b';' || b == b'=' || b == b'&')
    {
        return error(
            path,
            format!("must be a non-empty name, got \"{}\"", s.escape_debug()),
        );
    }
    Ok(s)
}

pub(super) fn header_name(path: &str, value: &Value) -> Result<String> {
    let s = string(path, value)?;
    checked_header_name(path, &s)
}

/// Validates a header name and returns it in lower case.
pub(super) fn checked_header_name(path: &str, name: &str) -> Result<String> {
    let body = name.strip_prefix(':').unwrap_or(name);
    if body.is_empty() || !body.bytes().all(is_token_byte) {
        return error(
            path,
            format!("not a valid header name: \"{}\"", name.escape_debug()),
        );
    }
    Ok(name.to_ascii_lowercase())
}

/// Headers Envoy builds for the copy, which no rule may change: every pseudo-header, and
/// these.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Whether a (lower-case) header name is reserved: a pseudo-header or one of the above.
pub(super) fn is_reserved(name: &str) -> bool {
    name.starts_with(':') || RESERVED_HEADERS.contains(&name)
}

/// A header a copy's rules may not remove, set or redact.
pub(super) fn forbid_reserved(path: &str, name: &str) -> Result<()> {
    if name.starts_with(':') {
        return error(
            path,
            format!("pseudo-header \"{name}\" cannot be changed on the copy"),
        );
    }
    if is_reserved(name) {
        return error(
            path,
            format!(
                "header \"{name}\" cannot be changed on the copy (use \"authority\" for the host)"
            ),
        );
    }
    Ok(())
}

/// The name of a target or a lane: `[a-z0-9_-]{1,32}`, as stats and routes use it.
pub(super) fn name(path: &str, value: &Value) -> Result<String> {
    let name = string(path, value)?;
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return error(
            path,
            format!(
                "must match [a-z0-9_-]{{1,32}}, got \"{}\"",
                name.escape_debug()
            ),
        );
    }
    Ok(name)
}

/// One of a few words, as the value it stands for: `must be "skip" or "random", got
/// "drop"` otherwise.
pub(super) fn one_of<T: Copy>(path: &str, value: &Value, words: &[(&str, T)]) -> Result<T> {
    let word = string(path, value)?;
    if let Some((_, meaning)) = words.iter().find(|(w, _)| *w == word) {
        return Ok(*meaning);
    }
    let quoted: Vec<String> = words.iter().map(|(w, _)| format!("\"{w}\"")).collect();
    let expected = match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    error(
        path,
        format!("must be {expected}, got \"{}\"", word.escape_debug()),
    )
}

pub(super) fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// RFC 9110 `tchar`.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
