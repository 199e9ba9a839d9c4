//! The copy: the request's headers as they arrived, then the target's header
//! operations, then the loop header, then `:authority`. The body is carried as is.

use crate::config::{Authority, Target};
use crate::wire::{self, Pair};

/// The value written over redacted headers.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Builds the copy's header map (serialized for the host) from the request's headers,
/// in arrival order.
pub fn copy_headers(request: &[Pair<'_>], target: &Target, loop_header: &str) -> Vec<u8> {
    let ops = &target.header_ops;
    let named =
        |list: &[String], name: &[u8]| list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name));
    let original_authority = request
        .iter()
        .find(|(name, _)| *name == b":authority")
        .map(|(_, value)| *value);
    let authority: Option<Vec<u8>> = match (&target.authority, original_authority) {
        (Authority::Fixed(fixed), _) => Some(fixed.as_bytes().to_vec()),
        (suffix, Some(original)) => Some(copy_authority(suffix, original)),
        (_, None) => None,
    };
    let mut headers: Vec<Pair<'_>> = Vec::with_capacity(request.len() + ops.set.len() + 2);
    for &(name, value) in request {
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(loop_header.as_bytes())
            || named(&ops.remove, name)
            || ops
                .set
                .iter()
                .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        {
            // Envoy sends the copy's body with a content-length of its own.
            continue;
        }
        if name == b":authority" {
            if let Some(authority) = &authority {
                headers.push((name, authority));
            }
        } else if named(&ops.redact, name) {
            headers.push((name, REDACTED));
        } else {
            headers.push((name, value));
        }
    }
    if original_authority.is_none() {
        if let Some(authority) = &authority {
            headers.push((b":authority", authority));
        }
    }
    for (name, value) in &ops.set {
        headers.push((name.as_bytes(), value.as_bytes()));
    }
    headers.push((loop_header.as_bytes(), target.name.as_bytes()));
    wire::serialize(&headers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn target(extra: &str) -> Target {
        let json = format!(
            r#"{{"targets": [{{"name": "shadow", "cluster": "c", "percent": 100{extra}}}]}}"#
        );
        parse(json.as_bytes()).unwrap().targets.remove(0)
    }

    fn request() -> Vec<Pair<'static>> {
        let list: [(&'static str, &'static [u8]); 12] = [
            (":authority", b"example.com:8080"),
            (":path", b"/api/x?a=1&b=%20"),
            (":method", b"POST"),
            (":scheme", b"http"),
            ("cookie", b"uid=1"),
            ("authorization", b"Bearer secret"),
            ("x-env", b"prod"),
            ("x-request-id", b"rid-1"),
            ("transfer-encoding", b"chunked"),
            ("x-bytes", b"caf\xe9"),
            ("x-dup", b"1"),
            ("x-dup", b"2"),
        ];
        list.iter().map(|(n, v)| (n.as_bytes(), *v)).collect()
    }

    /// The copy's headers, decoded for comparison.
    fn pairs(serialized: &[u8]) -> Vec<(String, Vec<u8>)> {
        wire::parse(serialized)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
            .collect()
    }

    fn expect(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn copy_keeps_headers_in_order_and_adds_suffix_and_loop_header() {
        let copy = copy_headers(&request(), &target(""), "x-traffic-mirror");
        assert_eq!(
            pairs(&copy),
            expect(&[
                (":authority", &b"example.com-shadow:8080"[..]),
                (":path", b"/api/x?a=1&b=%20"),
                (":method", b"POST"),
                (":scheme", b"http"),
                ("cookie", b"uid=1"),
                ("authorization", b"Bearer secret"),
                ("x-env", b"prod"),
                ("x-request-id", b"rid-1"),
                ("x-bytes", b"caf\xe9"),
                ("x-dup", b"1"),
                ("x-dup", b"2"),
                ("x-traffic-mirror", b"shadow"),
            ])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn header_operations_apply_to_the_copy_case_insensitively() {
        let t = target(
            r#", "headers": {"remove": ["Cookie", "X-Dup"], "set": {"X-Env": "staging", "x-new": "1"}, "redact": ["AUTHORIZATION", "x-absent"]}"#,
        );
        let copy = copy_headers(&request(), &t, "x-loop");
        assert_eq!(
            pairs(&copy),
            expect(&[
                (":authority", &b"example.com-shadow:8080"[..]),
                (":path", b"/api/x?a=1&b=%20"),
                (":method", b"POST"),
                (":scheme", b"http"),
                ("authorization", b"[REDACTED]"),
                ("x-request-id", b"rid-1"),
                ("x-bytes", b"caf\xe9"),
                ("x-env", b"staging"),
                ("x-new", b"1"),
                ("x-loop", b"shadow"),
            ])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn authority_is_fixed_or_suffixed_or_kept() {
        let fixed_target = target(r#", "authority": "mirror.internal""#);
        let fixed = pairs(&copy_headers(&request(), &fixed_target, "l"));
        assert_eq!(fixed[0], (":authority".into(), b"mirror.internal".to_vec()));
        let kept = pairs(&copy_headers(
            &request(),
            &target(r#", "host_suffix": """#),
            "l",
        ));
        assert_eq!(kept[0], (":authority".into(), b"example.com:8080".to_vec()));
        let without: Vec<Pair> = request().into_iter().skip(1).collect();
        let added = pairs(&copy_headers(
            &without,
            &target(r#", "authority": "m""#),
            "l",
        ));
        assert!(added.contains(&(":authority".into(), b"m".to_vec())));
        let none = pairs(&copy_headers(&without, &target(""), "l"));
        assert!(!none.iter().any(|(n, _)| n == ":authority"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn host_suffix_goes_before_any_port() {
        for (authority, expected) in [
            ("example.com", "example.com-shadow"),
            ("example.com:8080", "example.com-shadow:8080"),
            ("10.0.0.1:80", "10.0.0.1-shadow:80"),
            ("[::1]:8080", "[::1]-shadow:8080"),
            ("[::1]", "[::1]-shadow"),
            ("::1", "::1-shadow"),
            ("host:", "host-shadow:"),
            ("", "-shadow"),
        ] {
            assert_eq!(
                with_host_suffix(authority.as_bytes(), b"-shadow"),
                expected.as_bytes(),
                "{authority}"
            );
        }
    }
}
