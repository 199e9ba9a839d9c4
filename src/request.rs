//! What the decision reads from a request, behind a trait so that the shell reads from
//! the host only what a request needs (its header map once, at the first need) and tests
//! can use a plain list.

/// Read access to the request headers as they arrived at the filter.
pub trait RequestView {
    /// `:method` (empty when absent).
    fn method(&mut self) -> &[u8];
    /// `:path` with its query (empty when absent).
    fn path(&mut self) -> &[u8];
    /// The first value of a header, by lower-case name.
    fn header(&mut self, name: &str) -> Option<&[u8]>;
    /// The whole header map in arrival order, serialized as the host hands it out
    /// (see [`crate::wire`]): read only for a request that is being copied.
    fn header_map(&mut self) -> Vec<u8>;
    /// Sets a header on the request itself (every value replaced), or removes it
    /// (`None`): what the lane assignment writes.
    fn set_header(&mut self, name: &str, value: Option<&[u8]>);
}

/// A request held as a list of headers: for tests and fuzzing.
#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    pub headers: Vec<(String, Vec<u8>)>,
}

impl HeaderList {
    pub fn new(headers: &[(&str, &[u8])]) -> Self {
        HeaderList {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        }
    }

    fn first(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl RequestView for HeaderList {
    fn method(&mut self) -> &[u8] {
        self.first(":method").unwrap_or_default()
    }

    fn path(&mut self) -> &[u8] {
        self.first(":path").unwrap_or_default()
    }

    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.first(name)
    }

    fn set_header(&mut self, name: &str, value: Option<&[u8]>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_string(), value.to_vec()));
        }
    }

    fn header_map(&mut self) -> Vec<u8> {
        let pairs: Vec<crate::wire::Pair> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_slice()))
            .collect();
        crate::wire::serialize(&pairs)
    }
}
