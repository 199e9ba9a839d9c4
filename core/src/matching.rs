//! Match rules: which requests a target considers at all.

use crate::request::RequestView;

/// A header condition of `match.headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    /// The header is present (with any value).
    Present,
    /// The header's value equals this, byte for byte.
    Equals(Vec<u8>),
}

/// A host of `match.hosts`, lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host exactly.
    Exact(String),
    /// `*.example.com`: any subdomain of it at any depth (held as `.example.com`), not
    /// the domain itself.
    Subdomains(String),
}

impl HostPattern {
    fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(suffix.as_bytes()))
            }
        }
    }
}

/// All given conditions must hold; an empty `Match` matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    /// Upper-case methods; empty: any method.
    pub methods: Vec<String>,
    /// Lower-case names.
    pub headers: Vec<(String, HeaderCondition)>,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    pub exclude_path_prefixes: Vec<String>,
}

/// The first condition of a [`Match`] a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch<'a> {
    Method,
    PathPrefix,
    PathExact,
    /// The path starts with this excluded prefix.
    ExcludedPath(&'a str),
    Host,
    /// This header is absent or has another value.
    Header(&'a str),
}

impl Match {
    /// Whether the request satisfies every condition.
    pub fn matches(&self, request: &mut impl RequestView) -> bool {
        self.check(request).is_ok()
    }

    /// The first condition the request fails, if any. Cheap conditions go first and the
    /// first one that fails ends the check.
    pub fn check(&self, request: &mut impl RequestView) -> Result<(), Mismatch<'_>> {
        if !self.methods.is_empty() {
            let method = request.method();
            if !self.methods.iter().any(|m| m.as_bytes() == method) {
                return Err(Mismatch::Method);
            }
        }
        if self.path_prefix.is_some()
            || self.path_exact.is_some()
            || !self.exclude_path_prefixes.is_empty()
        {
            let path = path_without_query(request.path());
            if let Some(prefix) = &self.path_prefix {
                if !path.starts_with(prefix.as_bytes()) {
                    return Err(Mismatch::PathPrefix);
                }
            }
            if let Some(exact) = &self.path_exact {
                if path != exact.as_bytes() {
                    return Err(Mismatch::PathExact);
                }
            }
            if let Some(excluded) = self
                .exclude_path_prefixes
                .iter()
                .find(|prefix| path.starts_with(prefix.as_bytes()))
            {
                return Err(Mismatch::ExcludedPath(excluded));
            }
        }
        if !self.hosts.is_empty() {
            let authority = request.header(":authority").unwrap_or_default();
            let host = host_without_port(authority);
            if !self.hosts.iter().any(|pattern| pattern.matches(host)) {
                return Err(Mismatch::Host);
            }
        }
        for (name, condition) in &self.headers {
            let holds = match (condition, request.header(name)) {
                (_, None) => false,
                (HeaderCondition::Present, Some(_)) => true,
                (HeaderCondition::Equals(expected), Some(value)) => value == *expected,
            };
            if !holds {
                return Err(Mismatch::Header(name));
            }
        }
        Ok(())
    }
}

/// The path without its query string (and without a fragment).
pub fn path_without_query(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}

/// The host of an `:authority`: without a `:port`; an IPv6 literal keeps its brackets.
pub fn host_without_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon)
            if authority
                .get(colon + 1..)
                .is_some_and(|port| port.iter().all(u8::is_ascii_digit)) =>
        {
            authority.get(..colon).unwrap_or(authority)
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::request::HeaderList;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn matcher(rules: &str) -> Match {
        let json = format!(
            r#"{{"targets": [{{"name": "t", "cluster": "c", "percent": 1, "match": {rules}}}]}}"#
        );
        parse(json.as_bytes()).unwrap().targets.remove(0).matcher
    }

    fn request(method: &str, path: &str, extra: &[(&str, &[u8])]) -> HeaderList {
        let mut headers: Vec<(&str, &[u8])> =
            vec![(":method", method.as_bytes()), (":path", path.as_bytes())];
        headers.extend_from_slice(extra);
        HeaderList::new(&headers)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_match_takes_every_request() {
        assert!(Match::default().matches(&mut request("DELETE", "/", &[])));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_rules_ignore_the_query() {
        let prefix = matcher(r#"{"path_prefix": "/api/"}"#);
        assert!(prefix.matches(&mut request("GET", "/api/users?x=1", &[])));
        assert!(!prefix.matches(&mut request("GET", "/apix", &[])));
        assert!(!prefix.matches(&mut request("GET", "/static?/api/", &[])));
        let exact = matcher(r#"{"path_exact": "/health"}"#);
        assert!(exact.matches(&mut request("GET", "/health?full=1", &[])));
        assert!(!exact.matches(&mut request("GET", "/health/x", &[])));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn methods_and_headers_must_all_hold() {
        let m = matcher(
            r#"{"methods": ["get", "POST"], "headers": {"X-Env": "prod", "x-flag": true}}"#,
        );
        let ok: &[(&str, &[u8])] = &[("x-env", b"prod"), ("x-flag", b"")];
        assert!(m.matches(&mut request("GET", "/", ok)));
        assert!(m.matches(&mut request("POST", "/", ok)));
        assert!(!m.matches(&mut request("PUT", "/", ok)));
        assert!(!m.matches(&mut request("GET", "/", &[("x-env", b"prod")])));
        assert!(!m.matches(&mut request(
            "GET",
            "/",
            &[("x-env", b"Prod"), ("x-flag", b"1")]
        )));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hosts_match_exactly_or_any_subdomain_without_the_port() {
        let m = matcher(r#"{"hosts": ["Shop.Example.com", "*.api.example.com"]}"#);
        let host = |authority: &str| request("GET", "/", &[(":authority", authority.as_bytes())]);
        for yes in [
            "shop.example.com",
            "SHOP.example.COM:8443",
            "v1.api.example.com",
            "a.b.api.example.com:80",
        ] {
            assert!(m.matches(&mut host(yes)), "{yes}");
        }
        for no in [
            "api.example.com",
            "xapi.example.com",
            "shop.example.com.evil",
            "example.com",
            ".api.example.com",
            "",
        ] {
            assert_eq!(m.check(&mut host(no)), Err(Mismatch::Host), "{no}");
        }
        assert_eq!(
            m.check(&mut request("GET", "/", &[])),
            Err(Mismatch::Host),
            "no :authority"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn excluded_prefixes_win_over_everything_else() {
        let m =
            matcher(r#"{"path_prefix": "/", "exclude_path_prefixes": ["/health", "/internal/"]}"#);
        assert!(m.matches(&mut request("GET", "/api/x?p=/health", &[])));
        assert_eq!(
            m.check(&mut request("GET", "/healthz", &[])),
            Err(Mismatch::ExcludedPath("/health"))
        );
        assert_eq!(
            m.check(&mut request("POST", "/internal/x", &[])),
            Err(Mismatch::ExcludedPath("/internal/"))
        );
        assert!(m.matches(&mut request("GET", "/internal", &[])));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_failed_condition_is_named() {
        let m = matcher(
            r#"{"methods": ["GET"], "path_prefix": "/api/", "path_exact": "/api/a", "headers": {"x-a": "1", "x-b": true}}"#,
        );
        assert_eq!(
            m.check(&mut request("PUT", "/x", &[])),
            Err(Mismatch::Method)
        );
        assert_eq!(
            m.check(&mut request("GET", "/x", &[])),
            Err(Mismatch::PathPrefix)
        );
        assert_eq!(
            m.check(&mut request("GET", "/api/b", &[])),
            Err(Mismatch::PathExact)
        );
        assert_eq!(
            m.check(&mut request("GET", "/api/a", &[("x-a", b"2")])),
            Err(Mismatch::Header("x-a"))
        );
        assert_eq!(
            m.check(&mut request("GET", "/api/a", &[("x-a", b"1")])),
            Err(Mismatch::Header("x-b"))
        );
        assert_eq!(
            m.check(&mut request(
                "GET",
                "/api/a",
                &[("x-a", b"1"), ("x-b", b"")]
            )),
            Ok(())
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn host_loses_its_port_but_not_its_brackets() {
        assert_eq!(host_without_port(b"a.example:8080"), b"a.example");
        assert_eq!(host_without_port(b"a.example"), b"a.example");
        assert_eq!(host_without_port(b"[::1]:443"), b"[::1]");
        assert_eq!(host_without_port(b"[::1]"), b"[::1]");
        assert_eq!(host_without_port(b"a:b"), b"a:b");
        assert_eq!(host_without_port(b"a:"), b"a");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn path_without_query_cuts_at_query_or_fragment() {
        assert_eq!(path_without_query(b"/a?b#c"), b"/a");
        assert_eq!(path_without_query(b"/a#c"), b"/a");
        assert_eq!(path_without_query(b"/a"), b"/a");
    }
}
