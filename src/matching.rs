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

/// All given conditions must hold; an empty `Match` matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    /// Upper-case methods; empty: any method.
    pub methods: Vec<String>,
    /// Lower-case names.
    pub headers: Vec<(String, HeaderCondition)>,
}

impl Match {
    /// Whether the request satisfies every condition. Cheap conditions go first and
    /// the first one that fails ends the check.
    pub fn matches(&self, request: &mut impl RequestView) -> bool {
        if !self.methods.is_empty() {
            let method = request.method();
            if !self.methods.iter().any(|m| m.as_bytes() == method) {
                return false;
            }
        }
        if self.path_prefix.is_some() || self.path_exact.is_some() {
            let path = path_without_query(request.path());
            if let Some(prefix) = &self.path_prefix {
                if !path.starts_with(prefix.as_bytes()) {
                    return false;
                }
            }
            if let Some(exact) = &self.path_exact {
                if path != exact.as_bytes() {
                    return false;
                }
            }
        }
        self.headers.iter().all(
            |(name, condition)| match (condition, request.header(name)) {
                (_, None) => false,
                (HeaderCondition::Present, Some(_)) => true,
                (HeaderCondition::Equals(expected), Some(value)) => value == *expected,
            },
        )
    }
}

/// The path without its query string (and without a fragment).
pub fn path_without_query(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::request::HeaderList;
    #[cfg(target_arch = "wasm32")]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn empty_match_takes_every_request() {
        assert!(Match::default().matches(&mut request("DELETE", "/", &[])));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn path_rules_ignore_the_query() {
        let prefix = matcher(r#"{"path_prefix": "/api/"}"#);
        assert!(prefix.matches(&mut request("GET", "/api/users?x=1", &[])));
        assert!(!prefix.matches(&mut request("GET", "/apix", &[])));
        assert!(!prefix.matches(&mut request("GET", "/static?/api/", &[])));
        let exact = matcher(r#"{"path_exact": "/health"}"#);
        assert!(exact.matches(&mut request("GET", "/health?full=1", &[])));
        assert!(!exact.matches(&mut request("GET", "/health/x", &[])));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn path_without_query_cuts_at_query_or_fragment() {
        assert_eq!(path_without_query(b"/a?b#c"), b"/a");
        assert_eq!(path_without_query(b"/a#c"), b"/a");
        assert_eq!(path_without_query(b"/a"), b"/a");
    }
}
