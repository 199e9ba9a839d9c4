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

use crate::baggage::{self, Rewrite};
use crate::request::RequestView;
use crate::sampling::{bucket, random_bucket, with_key, Rng, SampleKey};

/// Most lanes a split may hold.
pub const MAX_SPLIT: usize = 8;

/// Most lanes a hop may follow.
pub const MAX_FOLLOW: usize = 64;

/// The header the lane travels in across services (W3C Baggage).
pub const BAGGAGE: &str = "baggage";

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
    /// The `baggage` key the lane travels in across services (`lanes.baggage`).
    pub baggage: Option<String>,
    /// Every lane, by index: assigning, the split's in order, then the default lane;
    /// following, `follow`'s.
    pub names: Vec<String>,
    pub mode: Mode,
}

/// Whether a filter assigns lanes (the edge) or follows the one in baggage (a hop).
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Assign(Assign),
    /// `lanes.follow`: the lane is read from baggage, among [`Lanes::names`].
    Follow,
}

/// How an assigning filter puts users into lanes.
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    /// A header, cookie or query parameter (never random).
    pub sample_by: SampleKey,
    pub salt: Vec<u8>,
    /// Where each lane of the split ends: lane `i` holds the buckets from `ends[i - 1]`
    /// (0 for the first) up to, not including, `ends[i]`.
    pub ends: Vec<u32>,
    /// The default lane's index in [`Lanes::names`]; `None`: no lane (the header is not
    /// set).
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
    /// It arrived with a lane in the header and keeps it (`keep_incoming`).
    Kept,
    /// It arrived with a lane of the configuration in baggage and keeps it
    /// (`keep_incoming`).
    KeptFromBaggage,
    /// Following: baggage names a lane of `follow`.
    Followed,
    /// Following: baggage names no lane (`unknown`: it names one that is not followed).
    NotFollowed { unknown: bool },
}

/// A request's lane: an index into [`Lanes::names`] (`None`: no lane; or, when kept, a
/// lane that is not one of these), and how it was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneDecision {
    pub lane: Option<usize>,
    pub how: How,
}

impl Lanes {
    /// How this filter assigns lanes; `None` for a hop that follows them.
    pub fn assign(&self) -> Option<&Assign> {
        match &self.mode {
            Mode::Assign(assign) => Some(assign),
            Mode::Follow => None,
        }
    }

    /// The lane of a bucket (the normative rule, docs/specification.md); `None` for a
    /// hop, which hashes nothing.
    pub fn lane_of(&self, bucket: u32) -> Option<usize> {
        let assign = self.assign()?;
        assign
            .ends
            .iter()
            .position(|&end| bucket < end)
            .or(assign.default)
    }

    fn index(&self, name: &[u8]) -> Option<usize> {
        self.names.iter().position(|n| n.as_bytes() == name)
    }

    /// The lane named in the request's baggage (every `baggage` field read), decoded.
    pub fn baggage_lane(&self, request: &mut impl RequestView) -> Option<Vec<u8>> {
        let key = self.baggage.as_deref()?;
        let list = request.joined_header(BAGGAGE)?;
        baggage::find(&list, key)
    }

    /// Decides a request's lane, without changing the request.
    pub fn decide(&self, request: &mut impl RequestView, rng: &mut Rng) -> LaneDecision {
        let assign = match &self.mode {
            Mode::Assign(assign) => assign,
            Mode::Follow => {
                return match self.baggage_lane(request) {
                    Some(name) => match self.index(&name) {
                        Some(lane) => LaneDecision {
                            lane: Some(lane),
                            how: How::Followed,
                        },
                        None => LaneDecision {
                            lane: None,
                            how: How::NotFollowed { unknown: true },
                        },
                    },
                    None => LaneDecision {
                        lane: None,
                        how: How::NotFollowed { unknown: false },
                    },
                };
            }
        };
        if assign.keep_incoming {
            if let Some(incoming) = request.header(&self.header).filter(|v| !v.is_empty()) {
                return LaneDecision {
                    lane: self.index(incoming),
                    how: How::Kept,
                };
            }
            if let Some(lane) = self.baggage_lane(request).and_then(|n| self.index(&n)) {
                return LaneDecision {
                    lane: Some(lane),
                    how: How::KeptFromBaggage,
                };
            }
        }
        match with_key(&assign.sample_by, request, |key| bucket(&assign.salt, key)) {
            Some(bucket) => self.decision(How::Hashed { bucket }),
            None => self.decide_key(None, rng),
        }
    }

    /// The lane of a key (`None`: missing, which gets the default lane or a random one).
    /// (The command's `sample --lanes` decides its keys with this.)
    pub fn decide_key(&self, key: Option<&[u8]>, rng: &mut Rng) -> LaneDecision {
        let Some(assign) = self.assign() else {
            return LaneDecision {
                lane: None,
                how: How::NotFollowed { unknown: false },
            };
        };
        let how = match key {
            Some(key) => How::Hashed {
                bucket: bucket(&assign.salt, key),
            },
            None => match assign.on_missing_key {
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
            _ => self.assign().and_then(|assign| assign.default),
        };
        LaneDecision { lane, how }
    }

    /// Writes a request's lane on it: sets the header, or removes it for no lane (a lane
    /// kept in the header is left as it arrived); an assigning filter with `baggage`
    /// writes the lane into baggage too (a lane kept from baggage is left there as it
    /// arrived). A header that already says so is not written again.
    pub fn write(&self, decision: &LaneDecision, request: &mut impl RequestView) {
        let name = decision
            .lane
            .and_then(|lane| self.names.get(lane))
            .map(String::as_bytes);
        if decision.how != How::Kept {
            let current = request.joined_header(&self.header);
            if current.as_deref() != name {
                request.set_header(&self.header, name);
            }
        }
        let key = match (&self.mode, &self.baggage) {
            (Mode::Assign(_), Some(key)) if decision.how != How::KeptFromBaggage => key,
            _ => return,
        };
        let list = request.joined_header(BAGGAGE).unwrap_or_default();
        match baggage::with_entry(&list, key, name) {
            Rewrite::Unchanged => {}
            Rewrite::Set(list) => request.set_header(BAGGAGE, Some(&list)),
            Rewrite::Remove => request.set_header(BAGGAGE, None),
        }
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
        assert_eq!(lanes.assign().unwrap().ends, [50_000, 150_000]);
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
        assert_eq!(
            lanes.assign().unwrap().ends,
            [125_000, 125_000, 499_999, 500_000]
        );
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
        assert_eq!(full.assign().unwrap().ends, [333_000, 666_000, 1_000_000]);
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

    fn baggage_of(request: &mut HeaderList) -> Option<String> {
        request
            .joined_header(BAGGAGE)
            .map(|v| String::from_utf8(v.into_owned()).unwrap())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_edge_writes_the_lane_into_baggage_and_trusts_none_it_receives() {
        let lanes = lanes(r#", "baggage": "lane""#);
        // user-6 is in canary: the lane is written first, every other entry kept.
        let mut request = user("user-6");
        request
            .headers
            .push(("baggage".into(), b"userId=alice;p=1, lane=forged".to_vec()));
        request.headers.push(("baggage".into(), b"b=2".to_vec()));
        let decision = assign(&lanes, &mut request);
        assert_eq!(decision.how, How::Hashed { bucket: 30_175 });
        assert_eq!(request.header("x-lane"), Some(&b"canary"[..]));
        assert_eq!(
            baggage_of(&mut request).as_deref(),
            Some("lane=canary,userId=alice;p=1,b=2")
        );
        assert_eq!(
            request
                .headers
                .iter()
                .filter(|(n, _)| n == "baggage")
                .count(),
            1,
            "one field"
        );
        // No baggage yet: one is started.
        let mut request = user("bob");
        assign(&lanes, &mut request);
        assert_eq!(baggage_of(&mut request).as_deref(), Some("lane=stable"));
        // No lane: the entry goes, and the header with it when nothing else is left.
        let json = r#"{"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"},
                       "salt": "s", "split": [{"lane": "canary", "percent": 0}], "baggage": "lane"}}"#;
        let none = parse(json.as_bytes()).unwrap().lanes.unwrap();
        let mut request = user("bob");
        request
            .headers
            .push(("baggage".into(), b"lane=canary".to_vec()));
        request.headers.push(("x-lane".into(), b"canary".to_vec()));
        assign(&none, &mut request);
        assert_eq!(request.header("x-lane"), None);
        assert_eq!(baggage_of(&mut request), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keep_incoming_keeps_a_baggage_lane_of_the_configuration() {
        let lanes = lanes(r#", "baggage": "lane", "keep_incoming": true"#);
        // bob hashes to stable; his baggage says beta, a lane of the split: kept.
        let mut request = user("bob");
        request
            .headers
            .push(("baggage".into(), b"a=1,lane=beta".to_vec()));
        let decision = assign(&lanes, &mut request);
        assert_eq!(decision.how, How::KeptFromBaggage);
        assert_eq!(request.header("x-lane"), Some(&b"beta"[..]));
        assert_eq!(baggage_of(&mut request).as_deref(), Some("a=1,lane=beta"));
        // A lane the configuration does not have is not kept: bob's own is written.
        let mut request = user("bob");
        request
            .headers
            .push(("baggage".into(), b"lane=admin".to_vec()));
        let decision = assign(&lanes, &mut request);
        assert!(matches!(decision.how, How::Hashed { .. }));
        assert_eq!(baggage_of(&mut request).as_deref(), Some("lane=stable"));
        // A kept header lane travels on in baggage.
        let mut request = user("bob");
        request.headers.push(("x-lane".into(), b"canary".to_vec()));
        let decision = assign(&lanes, &mut request);
        assert_eq!(decision.how, How::Kept);
        assert_eq!(baggage_of(&mut request).as_deref(), Some("lane=canary"));
    }

    fn hop() -> Lanes {
        let json = r#"{"lanes": {"header": "x-lane", "baggage": "lane", "follow": ["feature-17", "canary"]}}"#;
        parse(json.as_bytes()).unwrap().lanes.unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_hop_follows_the_baggage_lane_and_removes_the_header_otherwise() {
        let lanes = hop();
        assert_eq!(lanes.mode, Mode::Follow);
        let follow = |headers: &[(&str, &[u8])]| {
            let mut request = HeaderList::new(headers);
            let decision = assign(&lanes, &mut request);
            let header = request
                .header("x-lane")
                .map(|v| String::from_utf8(v.to_vec()).unwrap());
            (decision, header, baggage_of(&mut request))
        };
        let (decision, header, baggage) = follow(&[("baggage", b"k=v, lane=canary")]);
        assert_eq!(
            decision,
            LaneDecision {
                lane: Some(1),
                how: How::Followed
            }
        );
        assert_eq!(header.as_deref(), Some("canary"));
        assert_eq!(
            baggage.as_deref(),
            Some("k=v, lane=canary"),
            "baggage is left as it is"
        );
        // Every field is read, and the stale header replaced.
        let (decision, header, _) = follow(&[
            ("baggage", b"k=v"),
            ("x-lane", b"canary"),
            ("baggage", b"lane=feature-17"),
        ]);
        assert_eq!(decision.how, How::Followed);
        assert_eq!(header.as_deref(), Some("feature-17"));
        // A lane not followed, or none: the header goes.
        let (decision, header, _) = follow(&[("baggage", b"lane=admin"), ("x-lane", b"canary")]);
        assert_eq!(
            decision,
            LaneDecision {
                lane: None,
                how: How::NotFollowed { unknown: true }
            }
        );
        assert_eq!(header, None);
        let (decision, header, _) = follow(&[("x-lane", b"canary")]);
        assert_eq!(
            decision,
            LaneDecision {
                lane: None,
                how: How::NotFollowed { unknown: false }
            }
        );
        assert_eq!(header, None);
        // Percent-decoded, first entry wins, malformed ones skipped.
        let (decision, _, _) = follow(&[("baggage", b"lane=can%61ry,lane=feature-17")]);
        assert_eq!(decision.lane, Some(1));
        let (decision, _, _) = follow(&[("baggage", b"lane=%zz,lane=feature-17")]);
        assert_eq!(decision.lane, Some(0));
    }
}
