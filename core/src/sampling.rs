//! The sampling key and the normative decision rule (docs/specification.md):
//!
//! ```text
//! bucket    = XXH64(salt ++ ":" ++ key, seed 0) mod 1_000_000
//! threshold = floor(percent * 10_000 + 0.5)
//! mirror    = bucket < threshold
//! ```

use xxhash_rust::xxh64::Xxh64;

use crate::request::RequestView;
use crate::wire;

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

/// A percentage in buckets, before any clamping: `floor(percent * 10_000 + 0.5)` (an
/// IEEE-754 double, half rounds up).
pub fn scaled(percent: f64) -> f64 {
    (percent * 10_000.0 + 0.5).floor()
}

/// The bucket threshold for a percentage in 0..=100 ([`scaled`], within 0..=1_000_000).
pub fn threshold(percent: f64) -> u32 {
    let t = scaled(percent);
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

/// Reads the request's key and hands it to `f` where it is read, so that no copy of it
/// is made; `None` when the key is missing (absent or empty) or `key` is random.
pub fn with_key<T>(
    key: &SampleKey,
    request: &mut impl RequestView,
    f: impl FnOnce(&[u8]) -> T,
) -> Option<T> {
    match key {
        SampleKey::Header(name) => request.header(name).filter(|v| !v.is_empty()).map(f),
        SampleKey::Cookie(name) => request
            .header("cookie")
            .and_then(|cookies| cookie_value(cookies, name).map(f)),
        SampleKey::Query(name) => query_value(request.path(), name).map(f),
        SampleKey::Random => None,
    }
}

/// The raw value of cookie `name` in a `cookie` header value; `None` when absent or empty.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header
        .split(|&b| b == b';')
        .filter_map(|pair| {
            let pair = wire::trim_ows(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = pair.split_at(eq);
            (wire::trim_ows(key) == name.as_bytes())
                .then(|| wire::trim_ows(value.get(1..).unwrap_or_default()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Reference values from an independent XXH64 implementation (Python `xxhash`):
    /// `xxh64_intdigest(salt + ":" + key) % 1_000_000`.
    const VECTORS: &[(&str, &str, u64, u32)] = &[
        ("staging", "user-1", 0xc698_9d3b_8813_4ec5, 349_061),
        ("staging", "user-2", 0xdb06_d6da_9d03_9bc9, 955_913),
        ("s1", "alice", 0x3353_c5f8_815d_688b, 252_939),
        ("s1", "bob", 0xfb70_ed38_93f1_bcb1, 550_129),
        ("", "", 0x787f_0054_9555_1c49, 241_481),
        (
            "salt",
            "9f0c2b1e-4a6d-4e8f-9b1a-2c3d4e5f6a7b",
            0x71c3_4b34_8008_8467,
            859_111,
        ),
    ];

    #[wasm_bindgen_test(unsupported = test)]
    fn bucket_matches_reference_xxh64_vectors() {
        for &(salt, key, hash, expected) in VECTORS {
            let joined = format!("{salt}:{key}");
            assert_eq!(xxhash_rust::xxh64::xxh64(joined.as_bytes(), 0), hash);
            assert_eq!(
                bucket(salt.as_bytes(), key.as_bytes()),
                expected,
                "{salt}:{key}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn threshold_rounds_half_up_at_one_in_a_million() {
        for (percent, expected) in [
            (0.0, 0),
            (0.00005, 1),
            (0.00004999, 0),
            (12.5, 125_000),
            (25.0, 250_000),
            (33.33335, 333_334),
            (99.99995, 1_000_000),
            (100.0, 1_000_000),
        ] {
            assert_eq!(threshold(percent), expected, "{percent}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn decision_is_bucket_below_threshold() {
        // staging:user-1 is in bucket 349061.
        assert!(!is_sampled(b"staging", b"user-1", 349_061));
        assert!(is_sampled(b"staging", b"user-1", 349_062));
        assert!(!is_sampled(b"staging", b"user-1", 0));
        assert!(is_sampled(b"staging", b"user-2", 1_000_000));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn raising_percent_only_adds_keys() {
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        let picked = |p: f64| -> Vec<bool> {
            keys.iter()
                .map(|k| is_sampled(b"nest", k.as_bytes(), threshold(p)))
                .collect()
        };
        let (low, high) = (picked(10.0), picked(30.0));
        assert!(low.iter().zip(&high).all(|(l, h)| !l || *h));
        let (n_low, n_high) = (
            low.iter().filter(|b| **b).count(),
            high.iter().filter(|b| **b).count(),
        );
        assert!((150..250).contains(&n_low), "{n_low}");
        assert!((500..700).contains(&n_high), "{n_high}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cookie_values_are_raw_and_empty_is_missing() {
        let header = b"a=1; uid=abc%20d ;  other=x;flag; empty=; q=\"v\"";
        assert_eq!(cookie_value(header, "uid"), Some(&b"abc%20d"[..]));
        assert_eq!(cookie_value(header, "a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(header, "q"), Some(&b"\"v\""[..]));
        assert_eq!(cookie_value(header, "empty"), None);
        assert_eq!(cookie_value(header, "flag"), None);
        assert_eq!(cookie_value(header, "missing"), None);
        assert_eq!(cookie_value(b"", "a"), None);
        assert_eq!(cookie_value(b";;=;", "a"), None);
        assert_eq!(
            cookie_value(b"uid=first; uid=second", "uid"),
            Some(&b"first"[..])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_values_are_raw_undecoded_and_empty_is_missing() {
        let path = b"/p?x=1&sid=a%2Fb&empty=&flag&sid=second#frag";
        assert_eq!(query_value(path, "sid"), Some(&b"a%2Fb"[..]));
        assert_eq!(query_value(path, "x"), Some(&b"1"[..]));
        assert_eq!(query_value(path, "empty"), None);
        assert_eq!(query_value(path, "flag"), None);
        assert_eq!(query_value(path, "nope"), None);
        assert_eq!(query_value(b"/p", "x"), None);
        assert_eq!(query_value(b"/p?", "x"), None);
        assert_eq!(query_value(b"/p?x=a=b", "x"), Some(&b"a=b"[..]));
        assert_eq!(query_value(b"/p?a=1#x=2", "x"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn random_draws_spread_over_buckets() {
        let mut rng = Rng::new(42);
        let hits = (0..10_000)
            .filter(|_| random_bucket(rng.next_u64()) < threshold(25.0))
            .count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
    }
}
