//! The copy: the request's headers as they arrived, then the target's header
//! operations, then the loop header, then `:authority`. The body is carried as is.

use crate::config::{Authority, Target};

/// The value written over redacted headers.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// One header of a copy: lower-case name, raw value.
pub type Header = (String, Vec<u8>);

/// Builds the copy's headers from the request's headers (in arrival order).
pub fn copy_headers(request: &[Header], target: &Target, loop_header: &str) -> Vec<Header> {
    let ops = &target.header_ops;
    let named = |list: &[String], name: &str| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    let mut headers: Vec<Header> = Vec::with_capacity(request.len() + ops.set.len() + 1);
    let mut has_authority = false;
    for (name, value) in request {
        if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case(loop_header)
            || named(&ops.remove, name)
            || ops.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            // Envoy sends the copy's body with a content-length of its own.
            continue;
        }
        if name == ":authority" {
            has_authority = true;
            let authority = copy_authority(&target.authority, value);
            headers.push((name.clone(), authority));
        } else if named(&ops.redact, name) {
            headers.push((name.clone(), REDACTED.to_vec()));
        } else {
            headers.push((name.clone(), value.clone()));
        }
    }
    if !has_authority {
        if let Authority::Fixed(fixed) = &target.authority {
            headers.push((":authority".to_string(), fixed.as_bytes().to_vec()));
        }
    }
    for (name, value) in &ops.set {
        headers.push((name.clone(), value.as_bytes().to_vec()));
    }
    headers.push((loop_header.to_string(), target.name.as_bytes().to_vec()));
    headers
}

/// The copy's `:authority` for a request that arrived with `original`.
pub fn copy_authority(authority: &Authority, original: &[u8]) -> Vec<u8> {
    match authority {
        Authority::Fixed(fixed) => fixed.as_bytes().to_vec(),
        Authority::Suffix(suffix) => with_host_suffix(original, suffix.as_bytes()),
    }
}

/// Inserts `suffix` after the host and before any `:port` (`[v6]:port` included).
pub fn with_host_suffix(authority: &[u8], suffix: &[u8]) -> Vec<u8> {
    let port_at = match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let after = authority.get(colon + 1..).unwrap_or_default();
            let before = authority.get(..colon).unwrap_or_default();
            let is_port = after.iter().all(u8::is_ascii_digit);
            // A bare IPv6 literal has colons but no port.
            let bracketed_ok = !before.contains(&b':') || before.ends_with(b"]");
            if is_port && bracketed_ok {
                colon
            } else {
                authority.len()
            }
        }
        None => authority.len(),
    };
    let (host, port) = authority.split_at(port_at);
    let mut out = Vec::with_capacity(authority.len() + suffix.len());
    out.extend_from_slice(host);
    out.extend_from_slice(suffix);
    out.extend_from_slice(port);
    out
}
