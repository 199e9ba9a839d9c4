//! The sampling key and the normative decision rule:
//!
//! ```text
//! bucket    = XXH64(salt ++ ":" ++ key, seed 0) mod 1_000_000
//! threshold = floor(percent * 10_000 + 0.5)
//! mirror    = bucket < threshold
//! ```

use xxhash_rust::xxh64::Xxh64;

/// Buckets per 100 %: the resolution of `percent` is one in a million.
pub const BUCKETS: u64 = 1_000_000;

/// Which part of the request is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleKey {
    /// A request header (lower-case name); the value as received.
    Header(String),
    /// A cookie in the `cookie` header; its raw value.
    Cookie(String),
    /// A query parameter of `:path`; its raw, undecoded value.
    Query(String),
    /// No key: a random draw.
    Random,
}

/// The bucket threshold for a percentage in 0..=100 (IEEE-754 double, half rounds up).
pub fn threshold(percent: f64) -> u32 {
    let t = (percent * 10_000.0 + 0.5).floor();
    if t <= 0.0 {
        0
    } else if t >= BUCKETS as f64 {
        BUCKETS as u32
    } else {
        t as u32
    }
}

/// The bucket (0..1_000_000) of a key under a salt.
pub fn bucket(salt: &[u8], key: &[u8]) -> u32 {
    let mut hasher = Xxh64::new(0);
    hasher.update(salt);
    hasher.update(b":");
    hasher.update(key);
    (hasher.digest() % BUCKETS) as u32
}

/// The bucket of a random 64-bit draw.
pub fn random_bucket(draw: u64) -> u32 {
    (draw % BUCKETS) as u32
}

/// Whether a key is sampled at this threshold.
pub fn is_sampled(salt: &[u8], key: &[u8], threshold: u32) -> bool {
    // Skip the hash where the answer cannot depend on it.
    match threshold {
        0 => false,
        t if u64::from(t) >= BUCKETS => true,
        t => bucket(salt, key) < t,
    }
}

/// The raw value of cookie `name` in a `cookie` header value; `None` when absent or empty.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header
        .split(|&b| b == b';')
        .filter_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = pair.split_at(eq);
            (trim(key) == name.as_bytes()).then(|| trim(value.get(1..).unwrap_or_default()))
        })
        .next()
        .filter(|value| !value.is_empty())
}

/// The raw value of query parameter `name` in a `:path`; `None` when absent or empty.
pub fn query_value<'a>(path: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let start = path.iter().position(|&b| b == b'?')?;
    let query = path.get(start + 1..)?;
    let query = match query.iter().position(|&b| b == b'#') {
        Some(end) => query.get(..end)?,
        None => query,
    };
    query
        .split(|&b| b == b'&')
        .find_map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (pair.get(..eq)?, pair.get(eq + 1..)?),
                None => (pair, &[][..]),
            };
            (key == name.as_bytes()).then_some(value)
        })
        .filter(|value| !value.is_empty())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// A small, fast pseudo-random source (SplitMix64) for `random` sampling, seeded by the
/// host's random source once per VM.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
