//! Sticky release lanes: the hash that picks mirrored users also puts users into lanes.
//! The lane is written on the request itself, in a header, before routing, so that
//! routes matching on that header send each lane to its version; a user stays in one
//! lane on every request, every worker, every replica and after every restart.
//!
//! ```text
//! bucket = XXH64(salt ++ ":" ++ key, seed 0) mod 1_000_000
//! T(x)   = floor(x * 10_000 + 0.5)
//! lane i of split (from 1) holds the buckets in [T(p1 + ... + p(i-1)), T(p1 + ... + pi));
//! any other bucket gets the default lane
//! ```

use crate::request::RequestView;
use crate::sampling::{bucket, random_bucket, with_key, Rng, SampleKey};

/// Most lanes a split may hold.
pub const MAX_SPLIT: usize = 8;

/// What a request without the key gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneOnMissingKey {
    /// The default lane.
    Default,
    /// A lane drawn at random with the split's shares.
    Random,
}

/// The compiled `lanes` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Lanes {
    /// Lower-case name of the header set on the request.
    pub header: String,
    /// A header, cookie or query parameter (never random).
    pub sample_by: SampleKey,
    pub salt: Vec<u8>,
    /// Every lane, by index: the split's in order, then the default lane.
    pub names: Vec<String>,
    /// Where each lane of the split ends: lane `i` holds the buckets from `ends[i - 1]`
    /// (0 for the first) up to, not including, `ends[i]`.
    pub ends: Vec<u32>,
    /// The default lane's index in `names`; `None`: no lane (the header is not set).
    pub default: Option<usize>,
    pub on_missing_key: LaneOnMissingKey,
    pub keep_incoming: bool,
}

/// How a request got its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The key's bucket.
    Hashed { bucket: u32 },
    /// No key: the default lane.
    MissingKey,
    /// No key: a random bucket.
    Random { bucket: u32 },
    /// It arrived with a lane and keeps it (`keep_incoming`).
    Kept,
}

/// A request's lane: an index into [`Lanes::names`] (`None`: no lane; or, when kept, a
/// lane that is not one of these), and how it was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneDecision {
    pub lane: Option<usize>,
    pub how: How,
}

impl Lanes {
    /// The lane of a bucket (the normative rule, docs/specification.md).
    pub fn lane_of(&self, bucket: u32) -> Option<usize> {
        self.ends
            .iter()
            .position(|&end| bucket < end)
            .or(self.default)
    }

    /// Decides a request's lane, without changing the request.
    pub fn decide(&self, request: &mut impl RequestView, rng: &mut Rng) -> LaneDecision {
        if self.keep_incoming {
            if let Some(incoming) = request.header(&self.header).filter(|v| !v.is_empty()) {
                let lane = self.names.iter().position(|n| n.as_bytes() == incoming);
                return LaneDecision {
                    lane,
                    how: How::Kept,
                };
            }
        }
        match with_key(&self.sample_by, request, |key| bucket(&self.salt, key)) {
            Some(bucket) => self.decision(How::Hashed { bucket }),
            None => self.decide_key(None, rng),
        }
    }

    /// The lane of a key (`None`: missing, which gets the default lane or a random one).
    /// (The command's `sample --lanes` decides its keys with this.)
    pub fn decide_key(&self, key: Option<&[u8]>, rng: &mut Rng) -> LaneDecision {
        let how = match key {
            Some(key) => How::Hashed {
                bucket: bucket(&self.salt, key),
            },
            None => match self.on_missing_key {
                LaneOnMissingKey::Default => How::MissingKey,
                LaneOnMissingKey::Random => How::Random {
                    bucket: random_bucket(rng.next_u64()),
                },
            },
        };
        self.decision(how)
    }

    fn decision(&self, how: How) -> LaneDecision {
        let lane = match how {
            How::Hashed { bucket } | How::Random { bucket } => self.lane_of(bucket),
            How::MissingKey | How::Kept => self.default,
        };
        LaneDecision { lane, how }
    }

    /// Writes a request's lane on it: sets the header, or removes it for no lane; a kept
    /// lane is left as it arrived.
    pub fn write(&self, decision: &LaneDecision, request: &mut impl RequestView) {
        if decision.how == How::Kept {
            return;
        }
        let name = decision
            .lane
            .and_then(|lane| self.names.get(lane))
            .map(String::as_bytes);
        request.set_header(&self.header, name);
    }

    /// A lane's name.
    pub fn name(&self, lane: usize) -> Option<&str> {
        self.names.get(lane).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::request::HeaderList;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// The specification's example (docs/specification.md): canary 5 %, beta 10 %,
    /// stable for everyone else.
    fn lanes(extra: &str) -> Lanes {
        lanes_with(
            r#"[{"lane": "canary", "percent": 5}, {"lane": "beta", "percent": 10}]"#,
            extra,
        )
    }

    fn lanes_with(split: &str, extra: &str) -> Lanes {
        let json = format!(
            r#"{{"lanes": {{"header": "x-lane", "sample_by": {{"header": "x-user-id"}},
                 "salt": "checkout-2026-11", "split": {split}, "default": "stable"{extra}}}}}"#
        );
        parse(json.as_bytes()).unwrap().lanes.unwrap()
    }

    fn user(id: &str) -> HeaderList {
        HeaderList::new(&[(":path", b"/"), ("x-user-id", id.as_bytes())])
    }

    /// Decides a request's lane and writes it, as the filter does.
    fn assign(lanes: &Lanes, request: &mut HeaderList) -> LaneDecision {
        let decision = lanes.decide(request, &mut Rng::new(1));
        lanes.write(&decision, request);
        decision
    }

    fn lane_name(lanes: &Lanes, request: &mut HeaderList) -> Option<String> {
        let decision = lanes.decide(request, &mut Rng::new(1));
        decision
            .lane
            .and_then(|l| lanes.name(l))
            .map(str::to_string)
    }

    /// Buckets from an independent XXH64 (Python `xxhash`):
    /// `xxh64_intdigest(b"checkout-2026-11:" + key) % 1_000_000`.
    const VECTORS: &[(&str, u32, &str)] = &[
        ("user-6", 30_175, "canary"),
        ("user-42", 81_165, "beta"),
        ("user-3", 101_169, "beta"),
        ("bob", 272_455, "stable"),
        ("user-12", 458_496, "stable"),
        ("user-1", 682_396, "stable"),
        ("user-10", 897_130, "stable"),
    ];

    #[wasm_bindgen_test(unsupported = test)]
    fn users_land_where_the_normative_rule_puts_them() {
        let lanes = lanes("");
        assert_eq!(lanes.names, ["canary", "beta", "stable"]);
        assert_eq!(lanes.ends, [50_000, 150_000]);
        for &(key, expected_bucket, expected_lane) in VECTORS {
            let decision = lanes.decide(&mut user(key), &mut Rng::new(1));
            assert_eq!(
                decision.how,
                How::Hashed {
                    bucket: expected_bucket
                },
                "{key}"
            );
            assert_eq!(
                lane_name(&lanes, &mut user(key)).as_deref(),
                Some(expected_lane),
                "{key}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_range_starts_where_the_last_one_ended() {
        // 12.5 %, 0 %, 37.4999 %, 0.0001 %: bounds at 125000, 125000, 499999, 500000.
        let lanes = lanes_with(
            r#"[{"lane": "a", "percent": 12.5}, {"lane": "empty", "percent": 0},
                {"lane": "b", "percent": 37.4999}, {"lane": "c", "percent": 0.0001}]"#,
            "",
        );
        assert_eq!(lanes.ends, [125_000, 125_000, 499_999, 500_000]);
        let name = |bucket| lanes.lane_of(bucket).and_then(|l| lanes.name(l));
        for (bucket, lane) in [
            (0, "a"),
            (124_999, "a"),
            (125_000, "b"),
            (499_998, "b"),
            (499_999, "c"),
            (500_000, "stable"),
            (999_999, "stable"),
        ] {
            assert_eq!(name(bucket), Some(lane), "bucket {bucket}");
        }
        // The whole range: no default left.
        let full = lanes_with(
            r#"[{"lane": "a", "percent": 33.3}, {"lane": "b", "percent": 33.3}, {"lane": "c", "percent": 33.4}]"#,
            "",
        );
        assert_eq!(full.ends, [333_000, 666_000, 1_000_000]);
        assert_eq!(full.lane_of(999_999).and_then(|l| full.name(l)), Some("c"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn boundaries_hold_for_real_keys() {
        // A split whose first range ends exactly at user-3's bucket: user-3 is the first
        // user of the second lane, and one bucket more takes it into the first.
        for (percent, lane) in [("10.1169", "b"), ("10.117", "a")] {
            let lanes = lanes_with(
                &format!(
                    r#"[{{"lane": "a", "percent": {percent}}}, {{"lane": "b", "percent": 0.0001}}]"#
                ),
                "",
            );
            assert_eq!(
                lane_name(&lanes, &mut user("user-3")).as_deref(),
                Some(lane),
                "{percent}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn growing_the_last_lane_only_takes_default_users() {
        let before = lanes("");
        let grown = lanes_with(
            r#"[{"lane": "canary", "percent": 5}, {"lane": "beta", "percent": 20}]"#,
            "",
        );
        let earlier = lanes_with(
            r#"[{"lane": "canary", "percent": 10}, {"lane": "beta", "percent": 10}]"#,
            "",
        );
        let (mut moved, mut shifted) = (0, 0);
        for i in 0..10_000 {
            let id = format!("u-{i}");
            let was = lane_name(&before, &mut user(&id)).unwrap();
            let now = lane_name(&grown, &mut user(&id)).unwrap();
            if was != now {
                assert_eq!((was.as_str(), now.as_str()), ("stable", "beta"), "{id}");
                moved += 1;
            }
            if lane_name(&earlier, &mut user(&id)).unwrap() != was {
                shifted += 1;
            }
        }
        // About 10 % of users join beta; growing canary instead moves beta users too.
        assert!((800..1200).contains(&moved), "{moved}");
        assert!(shifted > moved, "{shifted}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_lane_is_written_on_the_request() {
        let lanes = lanes("");
        // An incoming lane is replaced by the assigned one.
        let mut request = user("user-6");
        request.set_header("X-Lane", Some(b"stable"));
        assign(&lanes, &mut request);
        assert_eq!(request.header("x-lane"), Some(&b"canary"[..]));
        assert_eq!(
            request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-lane"))
                .count(),
            1
        );
        // Without the key: the default lane.
        let mut anonymous = HeaderList::new(&[(":path", b"/")]);
        let decision = assign(&lanes, &mut anonymous);
        assert_eq!(decision.how, How::MissingKey);
        assert_eq!(anonymous.header("x-lane"), Some(&b"stable"[..]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_a_default_lane_the_header_is_removed() {
        let json = r#"{"lanes": {"header": "x-lane", "sample_by": {"cookie": "uid"}, "salt": "s",
                       "split": [{"lane": "canary", "percent": 0}]}}"#;
        let lanes = parse(json.as_bytes()).unwrap().lanes.unwrap();
        let mut request = HeaderList::new(&[("cookie", b"uid=7"), ("x-lane", b"canary")]);
        let decision = assign(&lanes, &mut request);
        assert_eq!(decision.lane, None);
        assert_eq!(request.header("x-lane"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keep_incoming_keeps_a_non_empty_lane() {
        let lanes = lanes(r#", "keep_incoming": true"#);
        for (incoming, kept) in [(&b"beta"[..], Some("beta")), (b"experimental", None)] {
            let mut request = user("user-6");
            request.set_header("x-lane", Some(incoming));
            let decision = assign(&lanes, &mut request);
            assert_eq!(decision.how, How::Kept);
            assert_eq!(decision.lane.and_then(|l| lanes.name(l)), kept);
            assert_eq!(request.header("x-lane"), Some(incoming));
        }
        // An empty incoming value is no lane: the user's own is assigned.
        let mut request = user("user-6");
        request.set_header("x-lane", Some(b""));
        assign(&lanes, &mut request);
        assert_eq!(request.header("x-lane"), Some(&b"canary"[..]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_key_drawn_at_random_follows_the_shares() {
        let lanes = lanes(r#", "on_missing_key": "random""#);
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..20_000 {
            let decision = lanes.decide(&mut HeaderList::new(&[(":path", b"/")]), &mut rng);
            assert!(matches!(decision.how, How::Random { .. }));
            counts[decision.lane.unwrap()] += 1;
        }
        // 5 %, 10 %, 85 % of 20 000, within a few standard deviations.
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((1700..2300).contains(&counts[1]), "{counts:?}");
        assert!((16_500..17_500).contains(&counts[2]), "{counts:?}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cookie_and_query_keys_are_raw_values() {
        for (sample_by, request) in [
            (
                r#"{"cookie": "uid"}"#,
                HeaderList::new(&[("cookie", b"a=1; uid=user-42")]),
            ),
            (
                r#"{"query": "uid"}"#,
                HeaderList::new(&[(":path", b"/x?a=1&uid=user-42")]),
            ),
        ] {
            let json = format!(
                r#"{{"lanes": {{"header": "x-lane", "sample_by": {sample_by}, "salt": "checkout-2026-11",
                     "split": [{{"lane": "canary", "percent": 5}}, {{"lane": "beta", "percent": 10}}], "default": "stable"}}}}"#
            );
            let lanes = parse(json.as_bytes()).unwrap().lanes.unwrap();
            let mut request = request;
            assert_eq!(
                lane_name(&lanes, &mut request).as_deref(),
                Some("beta"),
                "{sample_by}"
            );
        }
    }
}
