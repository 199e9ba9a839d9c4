//! The plugin configuration: parsed strictly from JSON, validated with JSON paths in
//! every error, and compiled once into the [`Plan`] the per-request path uses.
//!
//! Parsing walks a `serde_json::Value` by hand rather than deriving `Deserialize`, so
//! that every error names the exact JSON path (`targets[0].percent`) and says what was
//! expected and what was found.

//!
//! One parser a part of the JSON, each named after what it parses: `parse_target`,
//! `parse_match` (a target's `match`), `parse_headers` (a target's `headers`) and
//! `parse_lanes`, with [`fields`] the JSON walker and the rules several parts share; this
//! one holds the top level and the compiled types.

use serde_json::Value;
use std::fmt;

use crate::compare::Compare;
use crate::lanes::{Lanes, Mode};
use crate::matching::Match;
use crate::sampling::SampleKey;

mod fields;
mod parse_compare;
mod parse_headers;
mod parse_lanes;
mod parse_match;
mod parse_target;

use fields::{array, forbid_reserved, header_name, integer_in, Fields};

/// Most targets one plugin instance may hold.
pub const MAX_TARGETS: usize = 16;
/// Largest accepted `max_body_bytes` (16 MiB).
pub const MAX_BODY_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
const DEFAULT_TIMEOUT_MS: u64 = 5000;
const DEFAULT_MAX_IN_FLIGHT: u64 = 1000;
/// Default `max_buffered_bytes` (32 MiB) and its largest accepted value (1 GiB).
const DEFAULT_MAX_BUFFERED_BYTES: u64 = 32 * 1024 * 1024;
pub const MAX_BUFFERED_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;
/// Default `max_in_flight_bytes` (64 MiB) and its largest accepted value (2 GiB).
const DEFAULT_MAX_IN_FLIGHT_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_IN_FLIGHT_BYTES_LIMIT: u64 = 2 * 1024 * 1024 * 1024;
/// Default `max_answer_bytes` (64 KiB) and its largest accepted value (32 MiB, Envoy's
/// own answer buffer when its runtime value is not set).
pub const DEFAULT_MAX_ANSWER_BYTES: u64 = 64 * 1024;
pub const MAX_ANSWER_BYTES_LIMIT: u64 = 32 * 1024 * 1024;
/// The Envoy runtime value that bounds the answer Envoy buffers for each call; an Envoy
/// running the filter sets it to `max_answer_bytes`.
pub const ANSWER_BUFFER_RUNTIME_KEY: &str = "http.async_response_buffer_limit";
const DEFAULT_LOOP_HEADER: &str = "x-traffic-mirror";
const DEFAULT_HOST_SUFFIX: &str = "-shadow";
const DEFAULT_SAMPLE_HEADER: &str = "x-request-id";

/// The compiled configuration: what the hot path needs, nothing to look up twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// Lower-case header name added to every copy; requests carrying it are never mirrored.
    pub loop_header: String,
    /// Per worker, the most bytes held for copies at once (see [`crate::budget`]).
    pub max_buffered_bytes: usize,
    /// Per worker, the most bytes of copies handed to Envoy and not yet ended, each
    /// counting its headers, its body and `max_answer_bytes` (see [`crate::outbox`]).
    pub max_in_flight_bytes: usize,
    /// The most bytes of one copy's answer Envoy is expected to hold (its runtime value
    /// [`ANSWER_BUFFER_RUNTIME_KEY`] set to this).
    pub max_answer_bytes: usize,
    /// Sticky release lanes, assigned before the targets decide.
    pub lanes: Option<Lanes>,
}

impl Plan {
    /// What the configuration holds, for the log line at start and the command's
    /// `check`: `targets a, b` and `lanes canary, stable (header x-lane)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.targets.is_empty() {
            let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
            parts.push(format!("targets {}", names.join(", ")));
        }
        if let Some(lanes) = &self.lanes {
            let verb = match lanes.mode {
                Mode::Assign(_) => "lanes",
                Mode::Follow => "lanes followed",
            };
            let baggage = lanes
                .baggage
                .as_ref()
                .map(|key| format!(", baggage {key}"))
                .unwrap_or_default();
            parts.push(format!(
                "{verb} {} (header {}{baggage})",
                lanes.names.join(", "),
                lanes.header
            ));
        }
        parts.join("; ")
    }
}

/// One mirror destination with its own sampling, rules and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub cluster: String,
    /// Requests whose bucket (0..1_000_000) is below this are sampled.
    pub threshold: u32,
    pub sample_by: SampleKey,
    pub on_missing_key: OnMissingKey,
    pub salt: Vec<u8>,
    pub matcher: Match,
    pub authority: Authority,
    pub header_ops: HeaderOps,
    pub max_body_bytes: usize,
    pub timeout_ms: u32,
    pub max_rps: Option<f64>,
    pub max_in_flight: u32,
    /// How each copy's answer is compared with the primary's response; `None`: not.
    pub compare: Option<Compare>,
}

/// What to do with a request that lacks the sampling key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissingKey {
    Skip,
    Random,
}

/// How the copy's `:authority` is formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// Always this value.
    Fixed(String),
    /// The original host with this suffix inserted before any `:port` (empty: unchanged).
    Suffix(String),
}

/// Header operations applied to the copy only. All names are lower-case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    pub redact: Vec<String>,
}

/// A configuration error: the JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "traffic-mirror: invalid configuration: {}: {}",
            self.path, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

fn error<T>(path: &str, problem: impl Into<String>) -> Result<T> {
    Err(ConfigError {
        path: path.to_string(),
        problem: problem.into(),
    })
}

/// Parses and validates a configuration, and compiles it into a [`Plan`].
pub fn parse(bytes: &[u8]) -> Result<Plan> {
    let root: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => return error("$", format!("invalid JSON: {e}")),
    };
    let mut top = Fields::new(&root, "$", "", TOP_FIELDS)?;
    let loop_header = match top.optional("loop_header") {
        None => DEFAULT_LOOP_HEADER.to_string(),
        Some((path, value)) => {
            let name = header_name(&path, value)?;
            forbid_reserved(&path, &name)?;
            name
        }
    };
    let max_buffered_bytes = match top.optional("max_buffered_bytes") {
        None => DEFAULT_MAX_BUFFERED_BYTES,
        Some((path, value)) => integer_in(&path, value, 0, MAX_BUFFERED_BYTES_LIMIT)?,
    };
    let max_in_flight_bytes = match top.optional("max_in_flight_bytes") {
        None => DEFAULT_MAX_IN_FLIGHT_BYTES,
        Some((path, value)) => integer_in(&path, value, 0, MAX_IN_FLIGHT_BYTES_LIMIT)?,
    };
    let max_answer_bytes = match top.optional("max_answer_bytes") {
        None => DEFAULT_MAX_ANSWER_BYTES,
        Some((path, value)) => integer_in(&path, value, 0, MAX_ANSWER_BYTES_LIMIT)?,
    };
    let lanes = match top.optional("lanes") {
        None => None,
        Some((path, value)) => Some(parse_lanes::parse_lanes(&path, value, &loop_header)?),
    };
    // With lanes, targets are optional (0 to 16); without, 1 to 16 are required.
    let (targets_path, list) = match (top.optional("targets"), &lanes) {
        (Some((path, value)), _) => {
            let list = array(&path, value)?;
            (path, list.as_slice())
        }
        (None, Some(_)) => ("targets".to_string(), &[][..]),
        (None, None) => {
            return error(
                "targets",
                "required field is missing (a configuration needs targets, lanes or both)",
            )
        }
    };
    let min = if lanes.is_some() { 0 } else { 1 };
    if list.len() < min || list.len() > MAX_TARGETS {
        return error(
            &targets_path,
            format!(
                "must hold {min} to {MAX_TARGETS} targets, got {}",
                list.len()
            ),
        );
    }
    let mut targets: Vec<Target> = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let path = format!("targets[{i}]");
        let target = parse_target::parse_target(&path, value)?;
        if target.max_body_bytes as u64 > max_buffered_bytes {
            return error(
                &format!("{path}.max_body_bytes"),
                format!(
                    "must not exceed max_buffered_bytes ({max_buffered_bytes}), got {}",
                    target.max_body_bytes
                ),
            );
        }
        // A copy of the largest body, with room for its answer, must be able to fit.
        let largest_copy = target.max_body_bytes as u64 + max_answer_bytes;
        if largest_copy > max_in_flight_bytes {
            return error(
                &format!("{path}.max_body_bytes"),
                format!(
                    "plus max_answer_bytes ({max_answer_bytes}) must not exceed max_in_flight_bytes ({max_in_flight_bytes}), got {}",
                    target.max_body_bytes
                ),
            );
        }
        if let Some(compare) = &target.compare {
            if compare.max_body_bytes as u64 > max_answer_bytes {
                return error(
                    &format!("{path}.compare.max_body_bytes"),
                    format!(
                        "must not exceed max_answer_bytes ({max_answer_bytes}): a longer answer is cut by Envoy; got {}{}",
                        compare.max_body_bytes,
                        if value.get("compare").and_then(|c| c.get("max_body_bytes")).is_none() {
                            " (the default)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        if targets.iter().any(|t| t.name == target.name) {
            return error(
                &format!("{path}.name"),
                format!("duplicate target name \"{}\"", target.name),
            );
        }
        targets.push(target);
    }
    Ok(Plan {
        targets,
        loop_header,
        // Checked against a bound far below usize::MAX on every target.
        max_buffered_bytes: usize::try_from(max_buffered_bytes).unwrap_or(usize::MAX),
        max_in_flight_bytes: usize::try_from(max_in_flight_bytes).unwrap_or(usize::MAX),
        max_answer_bytes: usize::try_from(max_answer_bytes).unwrap_or(usize::MAX),
        lanes,
    })
}

/// The fields of each object of the configuration, in the order the errors list them.
const TOP_FIELDS: &[&str] = &[
    "loop_header",
    "max_buffered_bytes",
    "max_in_flight_bytes",
    "max_answer_bytes",
    "lanes",
    "targets",
];

/// The top-level fields of a configuration: to tell a plugin configuration with a
/// misspelt field from a file that is not one at all.
pub const CONFIGURATION_FIELDS: &[&str] = TOP_FIELDS;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lanes::LaneOnMissingKey;
    use crate::matching::HeaderCondition;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn line(json: &str) -> String {
        match parse(json.as_bytes()) {
            Ok(plan) => panic!("accepted: {json} -> {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Every bad configuration the tests know, with the one line it gives. Shared with
    /// the end-to-end test, which expects the same line from the module in Envoy.
    const BAD_CONFIGS: &str = include_str!("../../../tests/data/bad_configs.json");

    fn target(extra: &str) -> String {
        format!(r#"{{"targets": [{{"name": "t", "cluster": "c", "percent": 10{extra}}}]}}"#)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn minimal_target_gets_the_documented_defaults() {
        let plan = parse(target("").as_bytes()).unwrap();
        assert_eq!(plan.loop_header, "x-traffic-mirror");
        assert_eq!(plan.max_buffered_bytes, 33_554_432);
        assert_eq!(plan.max_in_flight_bytes, 67_108_864);
        assert_eq!(plan.max_answer_bytes, 65_536);
        let t = &plan.targets[0];
        assert_eq!(t.name, "t");
        assert_eq!(t.cluster, "c");
        assert_eq!(t.threshold, 100_000);
        assert_eq!(t.sample_by, SampleKey::Header("x-request-id".into()));
        assert_eq!(t.on_missing_key, OnMissingKey::Skip);
        assert_eq!(t.salt, b"t");
        assert_eq!(t.matcher, Match::default());
        assert_eq!(t.authority, Authority::Suffix("-shadow".into()));
        assert_eq!(t.header_ops, HeaderOps::default());
        assert_eq!(t.max_body_bytes, 1_048_576);
        assert_eq!(t.timeout_ms, 5000);
        assert_eq!(t.max_rps, None);
        assert_eq!(t.max_in_flight, 1000);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn spec_example_compiles_to_its_plan() {
        let json = r#"{
          "targets": [{
            "name": "staging", "cluster": "staging_cluster", "percent": 25,
            "sample_by": {"header": "X-User-Id"}, "on_missing_key": "random",
            "salt": "pepper",
            "match": {"path_prefix": "/api/", "path_exact": "/api/x", "methods": ["get", "POST"],
                      "headers": {"X-Env": "prod", "x-flag": true}},
            "authority": null, "host_suffix": "-shadow",
            "headers": {"remove": ["Cookie"], "set": {"X-Env": "staging"}, "redact": ["authorization"]},
            "max_body_bytes": 0, "timeout_ms": 60000, "max_rps": 0.5, "max_in_flight": 100000
          }],
          "loop_header": "X-Mirrored",
          "max_buffered_bytes": 1073741824,
          "max_in_flight_bytes": 2147483648,
          "max_answer_bytes": 33554432
        }"#;
        let plan = parse(json.as_bytes()).unwrap();
        assert_eq!(plan.loop_header, "x-mirrored");
        assert_eq!(plan.max_buffered_bytes, 1 << 30);
        assert_eq!(plan.max_in_flight_bytes, 1 << 31);
        assert_eq!(plan.max_answer_bytes, 1 << 25);
        let t = &plan.targets[0];
        assert_eq!(t.threshold, 250_000);
        assert_eq!(t.sample_by, SampleKey::Header("x-user-id".into()));
        assert_eq!(t.on_missing_key, OnMissingKey::Random);
        assert_eq!(t.salt, b"pepper");
        assert_eq!(t.matcher.methods, vec!["GET", "POST"]);
        assert_eq!(
            t.matcher.headers,
            vec![
                (
                    "x-env".to_string(),
                    HeaderCondition::Equals(b"prod".to_vec())
                ),
                ("x-flag".to_string(), HeaderCondition::Present)
            ]
        );
        assert_eq!(t.matcher.path_prefix.as_deref(), Some("/api/"));
        assert_eq!(t.matcher.path_exact.as_deref(), Some("/api/x"));
        assert_eq!(t.header_ops.remove, vec!["cookie"]);
        assert_eq!(
            t.header_ops.set,
            vec![("x-env".to_string(), "staging".to_string())]
        );
        assert_eq!(t.header_ops.redact, vec!["authorization"]);
        assert_eq!(t.max_body_bytes, 0);
        assert_eq!(t.timeout_ms, 60000);
        assert_eq!(t.max_rps, Some(0.5));
        assert_eq!(t.max_in_flight, 100_000);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn other_sample_keys_and_fixed_authority() {
        let cookie = parse(target(r#", "sample_by": {"cookie": "uid"}"#).as_bytes()).unwrap();
        assert_eq!(cookie.targets[0].sample_by, SampleKey::Cookie("uid".into()));
        let query = parse(target(r#", "sample_by": {"query": "sid"}"#).as_bytes()).unwrap();
        assert_eq!(query.targets[0].sample_by, SampleKey::Query("sid".into()));
        let random = parse(target(r#", "sample_by": {"random": true}"#).as_bytes()).unwrap();
        assert_eq!(random.targets[0].sample_by, SampleKey::Random);
        let fixed = parse(target(r#", "authority": "shadow.internal:8080""#).as_bytes()).unwrap();
        assert_eq!(
            fixed.targets[0].authority,
            Authority::Fixed("shadow.internal:8080".into())
        );
        let keep = parse(target(r#", "host_suffix": """#).as_bytes()).unwrap();
        assert_eq!(keep.targets[0].authority, Authority::Suffix(String::new()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_configurations_give_one_line_with_the_json_path() {
        let cases: Vec<Value> = serde_json::from_str(BAD_CONFIGS).unwrap();
        assert!(cases.len() >= 60);
        for case in cases {
            let (json, expected) = (case["config"].as_str().unwrap(), &case["error"]);
            assert_eq!(line(json), *expected, "config: {json}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lanes_need_no_targets_and_get_the_documented_defaults() {
        let lanes = r#""lanes": {"header": "X-Lane", "sample_by": {"cookie": "uid"}, "salt": "s",
                                "split": [{"lane": "canary", "percent": 2.5}]}"#;
        for json in [
            format!("{{{lanes}}}"),
            format!(r#"{{{lanes}, "targets": []}}"#),
        ] {
            let plan = parse(json.as_bytes()).unwrap();
            assert!(plan.targets.is_empty());
            let lanes = plan.lanes.unwrap();
            assert_eq!(lanes.header, "x-lane");
            assert_eq!(lanes.names, ["canary"]);
            assert_eq!(lanes.baggage, None);
            let assign = lanes.assign().unwrap();
            assert_eq!(assign.sample_by, SampleKey::Cookie("uid".into()));
            assert_eq!(assign.ends, [25_000]);
            assert_eq!(assign.default, None);
            assert_eq!(assign.on_missing_key, LaneOnMissingKey::Default);
            assert!(!assign.keep_incoming);
        }
        let both = parse(
            format!(r#"{{{lanes}, "targets": [{{"name": "t", "cluster": "c", "percent": 1}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(both.summary(), "targets t; lanes canary (header x-lane)");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn percent_bounds_and_sixteen_targets_are_accepted() {
        for percent in ["0", "100", "0.0001", "99.9999"] {
            let json = target("").replace("10", percent);
            assert!(parse(json.as_bytes()).is_ok(), "{json}");
        }
        let sixteen: Vec<String> = (0..16)
            .map(|i| format!(r#"{{"name": "t{i}", "cluster": "c", "percent": 1}}"#))
            .collect();
        let json = format!(r#"{{"targets": [{}]}}"#, sixteen.join(","));
        assert_eq!(parse(json.as_bytes()).unwrap().targets.len(), 16);
    }
}
