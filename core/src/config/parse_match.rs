//! A target's `match`: the conditions a request must meet.

use serde_json::Value;

use super::fields::*;
use super::{error, Result};
use crate::matching::{HeaderCondition, HostPattern, Match};

pub(super) const MATCH_FIELDS: &[&str] = &[
    "path_prefix",
    "path_exact",
    "methods",
    "headers",
    "hosts",
    "exclude_path_prefixes",
];

pub(super) fn parse_match(path: &str, value: &Value) -> Result<Match> {
    let mut fields = Fields::new(value, path, &format!("{path}."), MATCH_FIELDS)?;
    let mut matcher = Match::default();
    if let Some((p, v)) = fields.optional("path_prefix") {
        matcher.path_prefix = Some(path_string(&p, v)?);
    }
    if let Some((p, v)) = fields.optional("path_exact") {
        matcher.path_exact = Some(path_string(&p, v)?);
    }
    if let Some((p, v)) = fields.optional("methods") {
        let list = array(&p, v)?;
        if list.is_empty() {
            return error(&p, "must not be empty (leave it out to match every method)");
        }
        for (i, item) in list.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let method = string(&ip, item)?;
            if method.is_empty() || !method.bytes().all(is_token_byte) {
                return error(
                    &ip,
                    format!("not an HTTP method: \"{}\"", method.escape_debug()),
                );
            }
            matcher.methods.push(method.to_ascii_uppercase());
        }
    }
    if let Some((p, v)) = fields.optional("headers") {
        for (name, condition) in object(&p, v)? {
            let hp = member(&p, name);
            let lower = checked_header_name(&hp, name)?;
            let condition = match condition {
                Value::Bool(true) => HeaderCondition::Present,
                Value::String(s) => HeaderCondition::Equals(s.clone().into_bytes()),
                other => {
                    return error(
                        &hp,
                        format!(
                            "must be a string (exact value) or true (present), got {}",
                            show(other)
                        ),
                    )
                }
            };
            matcher.headers.push((lower, condition));
        }
    }
    if let Some((p, v)) = fields.optional("hosts") {
        let list = array(&p, v)?;
        if list.is_empty() {
            return error(&p, "must not be empty (leave it out to match every host)");
        }
        for (i, item) in list.iter().enumerate() {
            matcher
                .hosts
                .push(host_pattern(&format!("{p}[{i}]"), item)?);
        }
    }
    if let Some((p, v)) = fields.optional("exclude_path_prefixes") {
        for (i, item) in array(&p, v)?.iter().enumerate() {
            let prefix = path_string(&format!("{p}[{i}]"), item)?;
            matcher.exclude_path_prefixes.push(prefix);
        }
    }
    Ok(matcher)
}

/// A host name (or an IPv6 literal in brackets), or `*.` and a domain: lower-cased.
pub(super) fn host_pattern(path: &str, value: &Value) -> Result<HostPattern> {
    let given = string(path, value)?;
    let lower = given.to_ascii_lowercase();
    let (subdomains, name) = match lower.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, lower.as_str()),
    };
    let dns = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let ipv6 = name.len() > 2
        && name.starts_with('[')
        && name.ends_with(']')
        && name
            .bytes()
            .skip(1)
            .take(name.len() - 2)
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && (name.bytes().all(dns) || (ipv6 && !subdomains));
    if !valid {
        return error(
            path,
            format!(
                "must be a host name or *. and a domain, got \"{}\"",
                given.escape_debug()
            ),
        );
    }
    Ok(if subdomains {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}
