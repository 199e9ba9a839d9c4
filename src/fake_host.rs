//! A fake host, for the tests and the fuzz target: it plays Envoy's part around
//! [`crate::lifecycle::Contexts`] as the shell does, without an Envoy. It records every
//! call the filter sends (with its headers parsed and its body), can refuse them, keeps
//! a clock the test moves, and keeps every log line. Requests are
//! [`crate::request::HeaderList`]s and stats a [`crate::metrics::Tally`]; answers are
//! [`FakeAnswer`]s. Compiled natively only: the module never carries it.

use crate::host::{Answer, Host, Level, Refusal};
use crate::wire;

/// A call the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCall {
    pub token: u32,
    pub cluster: String,
    /// The copy's headers, in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

impl SentCall {
    /// The first value of a header of the copy.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// The host: calls, the clock, the log.
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    /// Every call sent, in order.
    pub sent: Vec<SentCall>,
    /// While set, every call is refused so.
    pub refuse: Option<Refusal>,
    /// The clock, in nanoseconds.
    pub now_nanos: u64,
    /// Every line logged.
    pub log: Vec<(Level, String)>,
    next_token: u32,
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost {
            now_nanos: 1_000_000_000,
            ..FakeHost::default()
        }
    }

    /// Moves the clock on.
    pub fn advance_millis(&mut self, millis: u64) {
        self.now_nanos += millis * 1_000_000;
    }

    /// The lines logged that contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log
            .iter()
            .filter(|(_, line)| line.contains(text))
            .count()
    }
}

impl Host for FakeHost {
    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[u8],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Refusal> {
        if let Some(refusal) = self.refuse {
            return Err(refusal);
        }
        // Envoy refuses a map without the pseudo-headers a call needs.
        let headers: Vec<(Vec<u8>, Vec<u8>)> = wire::parse(headers)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        let has = |name: &[u8]| headers.iter().any(|(n, _)| n == name);
        if !(has(b":method") && has(b":path") && has(b":authority")) {
            return Err(Refusal::BadArgument);
        }
        self.next_token += 1;
        let token = self.next_token;
        self.sent.push(SentCall {
            token,
            cluster: cluster.to_string(),
            headers,
            body: body.to_vec(),
            timeout_ms,
        });
        Ok(token)
    }

    fn now_nanos(&mut self) -> u64 {
        self.now_nanos
    }

    fn log(&mut self, level: Level, message: &str) {
        self.log.push((level, message.to_string()));
    }
}

/// A call's answer: its headers (`:status` among them) and trailers. No headers at all:
/// the call ended without a complete answer (a reset, an answer cut at the buffer limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAnswer {
    pub headers: Vec<(String, Vec<u8>)>,
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl FakeAnswer {
    /// An answer with this status.
    pub fn status(code: u16) -> Self {
        FakeAnswer {
            headers: vec![(":status".to_string(), code.to_string().into_bytes())],
            trailers: Vec::new(),
        }
    }

    /// No answer: the call ended without one.
    pub fn none() -> Self {
        FakeAnswer::default()
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }
}

fn first(list: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    list.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

impl Answer for FakeAnswer {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        first(&self.headers, name)
    }

    fn trailer(&mut self, name: &str) -> Option<Vec<u8>> {
        first(&self.trailers, name)
    }
}
