//! What the decision reads from a request, behind a trait: the filter reads the host's
//! request headers ([`HostRequest`]: the whole map once, at the first need), the command
//! and the tests a plain list ([`HeaderList`]).

use std::borrow::Cow;

use crate::host::{Env, Host, MapType};
use crate::wire;

/// Read access to the request headers as they arrived at the filter.
pub trait RequestView {
    /// `:method` (empty when absent).
    fn method(&mut self) -> &[u8];
    /// `:path` with its query (empty when absent).
    fn path(&mut self) -> &[u8];
    /// The first value of a header, by lower-case name.
    fn header(&mut self, name: &str) -> Option<&[u8]>;
    /// Every value of a header, by lower-case name, joined by `,` (a header sent in
    /// several fields, as `baggage` may be); `None` when absent.
    fn joined_header(&mut self, name: &str) -> Option<Cow<'_, [u8]>>;
    /// The whole header map in arrival order, serialized as the host hands it out
    /// (see [`crate::wire`]): read only for a request that is being copied.
    fn header_map(&mut self) -> Vec<u8>;
    /// Sets a header on the request itself (every value replaced), or removes it
    /// (`None`): what the lane assignment writes.
    fn set_header(&mut self, name: &str, value: Option<&[u8]>);
}

/// The request headers as the filter reads them from the host: the whole map, read
/// once at the first need (one host call where looking headers up one by one took four or
/// more), then looked up in the VM. What the filter writes is kept beside the map and read
/// in its place, so the map is not read again; it is written into the map only if a copy
/// is made of it (as the host writes it: every field of the name replaced by one at the
/// end). If the host refuses a write, the map is read again at the next need.
pub struct HostRequest<'e, H> {
    env: &'e mut Env<H>,
    /// The map as the host serialized it (see [`crate::wire`]).
    map: Option<Vec<u8>>,
    /// Headers written since the map was read: name, value (`None`: removed).
    written: Vec<(String, Option<Vec<u8>>)>,
}

impl<'e, H: Host> HostRequest<'e, H> {
    pub fn new(env: &'e mut Env<H>) -> Self {
        HostRequest {
            env,
            map: None,
            written: Vec::new(),
        }
    }

    fn map(&mut self) -> &[u8] {
        let env = &mut *self.env;
        self.map.get_or_insert_with(|| {
            // Empty when the host cannot give it: every header reads as absent, and a
            // copy made of it is refused by the host (counted in dispatch_failed).
            env.header_map(MapType::RequestHeaders, "reading the request header map")
        })
    }

    /// A header written since the map was read: `Some(value)`, `None` if not written.
    fn written(&self, name: &str) -> Option<Option<&[u8]>> {
        self.written
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    fn first(&mut self, name: &str) -> Option<&[u8]> {
        if self.written(name).is_some() {
            return self.written(name).flatten();
        }
        wire::first(self.map(), name.as_bytes())
    }
}

impl<H: Host> RequestView for HostRequest<'_, H> {
    fn method(&mut self) -> &[u8] {
        self.first(":method").unwrap_or_default()
    }

    fn path(&mut self) -> &[u8] {
        self.first(":path").unwrap_or_default()
    }

    fn header(&mut self, name: &str) -> Option<&[u8]> {
        self.first(name)
    }

    fn joined_header(&mut self, name: &str) -> Option<Cow<'_, [u8]>> {
        if self.written(name).is_some() {
            return self.written(name).flatten().map(Cow::Borrowed);
        }
        wire::joined(self.map(), name.as_bytes())
    }

    fn set_header(&mut self, name: &str, value: Option<&[u8]>) {
        let written = self.env.write_header(
            MapType::RequestHeaders,
            name,
            value,
            "writing the lane header",
        );
        if written && self.map.is_some() {
            self.written
                .push((name.to_string(), value.map(<[u8]>::to_vec)));
        } else {
            self.map = None;
            self.written.clear();
        }
    }

    fn header_map(&mut self) -> Vec<u8> {
        let map = match self.map.take() {
            Some(map) => map,
            None => self
                .env
                .header_map(MapType::RequestHeaders, "reading the request header map"),
        };
        let mut map = map;
        for (name, value) in std::mem::take(&mut self.written) {
            map = wire::with_header(&map, name.as_bytes(), value.as_deref()).unwrap_or_default();
        }
        map
    }
}

/// A request held as a list of headers: for the command, tests and fuzzing.
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

    fn joined_header(&mut self, name: &str) -> Option<Cow<'_, [u8]>> {
        wire::join(
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice()),
        )
    }

    fn set_header(&mut self, name: &str, value: Option<&[u8]>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_string(), value.to_vec()));
        }
    }

    fn header_map(&mut self) -> Vec<u8> {
        let pairs: Vec<wire::Pair> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_slice()))
            .collect();
        wire::serialize(&pairs)
    }
}
