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
        self.headers.iter().all(|(name, condition)| {
            match (condition, request.header(name)) {
                (_, None) => false,
                (HeaderCondition::Present, Some(_)) => true,
                (HeaderCondition::Equals(expected), Some(value)) => value == *expected,
            }
        })
    }
}

/// The path without its query string (and without a fragment).
pub fn path_without_query(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}
