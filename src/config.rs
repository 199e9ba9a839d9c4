//! The plugin configuration: parsed strictly from JSON, validated with JSON paths in
//! every error, and compiled once into the [`Plan`] the per-request path uses.
//!
//! Parsing walks a `serde_json::Value` by hand rather than deriving `Deserialize`, so
//! that every error names the exact JSON path (`targets[0].percent`) and says what was
//! expected and what was found.

use serde_json::{Map, Value};
use std::fmt;

use crate::lanes::{LaneOnMissingKey, Lanes, MAX_SPLIT};
use crate::matching::{HeaderCondition, HostPattern, Match};
use crate::sampling::{threshold, SampleKey, BUCKETS};
use crate::suggest::closest;

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
            parts.push(format!(
                "lanes {} (header {})",
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
        Some((path, value)) => Some(parse_lanes(&path, value, &loop_header)?),
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
        let target = parse_target(&path, value)?;
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

fn parse_lanes(path: &str, value: &Value, loop_header: &str) -> Result<Lanes> {
    let mut fields = Fields::new(value, path, &format!("{path}."), LANES_FIELDS)?;

    let (p, v) = fields.required("header")?;
    let header = header_name(&p, v)?;
    if header.starts_with(':')
        || matches!(
            header.as_str(),
            "host" | "content-length" | "transfer-encoding"
        )
    {
        return error(
            &p,
            format!("header \"{header}\" is reserved and cannot be the lane header"),
        );
    }
    if header == loop_header {
        return error(
            &p,
            format!("header \"{header}\" is the loop_header and cannot be the lane header"),
        );
    }

    let (p, v) = fields.required("sample_by")?;
    let sample_by = parse_sample_key(&p, v)?;
    if sample_by == SampleKey::Random {
        return error(
            &p,
            "must be a header, cookie or query parameter: a random lane would not keep its users",
        );
    }

    let (p, v) = fields.required("salt")?;
    let salt = string(&p, v)?.into_bytes();

    let (p, v) = fields.required("split")?;
    let split = array(&p, v)?;
    if split.is_empty() || split.len() > MAX_SPLIT {
        return error(
            &p,
            format!("must hold 1 to {MAX_SPLIT} lanes, got {}", split.len()),
        );
    }
    let mut names: Vec<String> = Vec::with_capacity(split.len() + 1);
    let mut ends: Vec<u32> = Vec::with_capacity(split.len());
    let mut total = 0.0f64;
    for (i, item) in split.iter().enumerate() {
        let ip = format!("{p}[{i}]");
        let mut lane = Fields::new(item, &ip, &format!("{ip}."), SPLIT_FIELDS)?;
        let (np, nv) = lane.required("lane")?;
        let name = lane_name(&np, nv)?;
        if names.contains(&name) {
            return error(&np, format!("duplicate lane name \"{name}\""));
        }
        let (pp, pv) = lane.required("percent")?;
        let percent = number(&pp, pv)?;
        if !(0.0..=100.0).contains(&percent) {
            return error(&pp, format!("must be between 0 and 100, got {}", show(pv)));
        }
        total += percent;
        let end = threshold(total);
        if (total * 10_000.0 + 0.5).floor() > BUCKETS as f64 {
            return error(
                &pp,
                format!(
                    "the split's percents add up to {} here, more than 100",
                    show(&Value::from(total))
                ),
            );
        }
        names.push(name);
        ends.push(end);
    }

    let default = match fields.optional("default") {
        None | Some((_, Value::Null)) => None,
        Some((p, v)) => {
            let name = lane_name(&p, v)?;
            if names.contains(&name) {
                return error(
                    &p,
                    format!("lane \"{name}\" is already in split (the default lane takes every other user)"),
                );
            }
            names.push(name);
            Some(names.len() - 1)
        }
    };

    let on_missing_key = match fields.optional("on_missing_key") {
        None => LaneOnMissingKey::Default,
        Some((p, v)) => match string(&p, v)?.as_str() {
            "default" => LaneOnMissingKey::Default,
            "random" => LaneOnMissingKey::Random,
            other => {
                return error(
                    &p,
                    format!(
                        "must be \"default\" or \"random\", got \"{}\"",
                        other.escape_debug()
                    ),
                )
            }
        },
    };

    let keep_incoming = match fields.optional("keep_incoming") {
        None => false,
        Some((_, Value::Bool(keep))) => *keep,
        Some((p, other)) => return error(&p, format!("expected a boolean, got {}", kind(other))),
    };
    Ok(Lanes {
        header,
        sample_by,
        salt,
        names,
        ends,
        default,
        on_missing_key,
        keep_incoming,
    })
}

/// A lane name: `[a-z0-9_-]{1,32}`, as target names.
fn lane_name(path: &str, value: &Value) -> Result<String> {
    let name = string(path, value)?;
    if !valid_target_name(&name) {
        return error(
            path,
            format!(
                "must match [a-z0-9_-]{{1,32}}, got \"{}\"",
                name.escape_debug()
            ),
        );
    }
    Ok(name)
}

fn parse_target(path: &str, value: &Value) -> Result<Target> {
    let mut fields = Fields::new(value, path, &format!("{path}."), TARGET_FIELDS)?;

    let (p, v) = fields.required("name")?;
    let name = string(&p, v)?;
    if !valid_target_name(&name) {
        return error(
            &p,
            format!(
                "must match [a-z0-9_-]{{1,32}}, got \"{}\"",
                name.escape_debug()
            ),
        );
    }

    let (p, v) = fields.required("cluster")?;
    let cluster = string(&p, v)?;
    if cluster.is_empty() {
        return error(&p, "must not be empty");
    }

    let (p, v) = fields.required("percent")?;
    let percent = number(&p, v)?;
    if !(0.0..=100.0).contains(&percent) {
        return error(&p, format!("must be between 0 and 100, got {}", show(v)));
    }

    let sample_by = match fields.optional("sample_by") {
        None => SampleKey::Header(DEFAULT_SAMPLE_HEADER.to_string()),
        Some((p, v)) => parse_sample_key(&p, v)?,
    };

    let on_missing_key = match fields.optional("on_missing_key") {
        None => OnMissingKey::Skip,
        Some((p, v)) => match string(&p, v)?.as_str() {
            "skip" => OnMissingKey::Skip,
            "random" => OnMissingKey::Random,
            other => {
                return error(
                    &p,
                    format!(
                        "must be \"skip\" or \"random\", got \"{}\"",
                        other.escape_debug()
                    ),
                )
            }
        },
    };

    let salt = match fields.optional("salt") {
        None => name.clone(),
        Some((p, v)) => string(&p, v)?,
    };

    let matcher = match fields.optional("match") {
        None => Match::default(),
        Some((p, v)) => parse_match(&p, v)?,
    };

    let fixed_authority = match fields.optional("authority") {
        None | Some((_, Value::Null)) => None,
        Some((p, v)) => {
            let authority = string(&p, v)?;
            if authority.is_empty() || !valid_header_value(&authority) {
                return error(&p, "must be a non-empty host[:port] or null");
            }
            Some(authority)
        }
    };
    let host_suffix = match fields.optional("host_suffix") {
        None => DEFAULT_HOST_SUFFIX.to_string(),
        Some((p, v)) => {
            let suffix = string(&p, v)?;
            if !valid_header_value(&suffix) || suffix.contains(':') {
                return error(&p, "must not contain ':' or control characters");
            }
            suffix
        }
    };
    let authority = match fixed_authority {
        Some(a) => Authority::Fixed(a),
        None => Authority::Suffix(host_suffix),
    };

    let header_ops = match fields.optional("headers") {
        None => HeaderOps::default(),
        Some((p, v)) => parse_header_ops(&p, v)?,
    };

    let max_body_bytes = match fields.optional("max_body_bytes") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some((p, v)) => integer_in(&p, v, 0, MAX_BODY_BYTES_LIMIT)?,
    };
    let timeout_ms = match fields.optional("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some((p, v)) => integer_in(&p, v, 1, 60_000)?,
    };
    let max_rps = match fields.optional("max_rps") {
        None | Some((_, Value::Null)) => None,
        Some((p, v)) => {
            let rps = number(&p, v)?;
            if rps <= 0.0 || !rps.is_finite() {
                return error(
                    &p,
                    format!("must be greater than 0 or null, got {}", show(v)),
                );
            }
            Some(rps)
        }
    };
    let max_in_flight = match fields.optional("max_in_flight") {
        None => DEFAULT_MAX_IN_FLIGHT,
        Some((p, v)) => integer_in(&p, v, 1, 100_000)?,
    };

    Ok(Target {
        name,
        cluster,
        threshold: threshold(percent),
        sample_by,
        on_missing_key,
        salt: salt.into_bytes(),
        matcher,
        authority,
        header_ops,
        // Both bounds were checked above, so these conversions cannot fail.
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
        max_rps,
        max_in_flight: u32::try_from(max_in_flight).unwrap_or(u32::MAX),
    })
}

fn parse_sample_key(path: &str, value: &Value) -> Result<SampleKey> {
    let object = object(path, value)?;
    let mut entries = object.iter();
    let (kind, inner) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        _ => {
            return error(
                path,
                format!(
                    "must have exactly one of \"header\", \"cookie\", \"query\", \"random\", got {} fields",
                    object.len()
                ),
            )
        }
    };
    let p = member(path, kind);
    match kind.as_str() {
        "header" => Ok(SampleKey::Header(header_name(&p, inner)?)),
        "cookie" => Ok(SampleKey::Cookie(non_empty_token(&p, inner)?)),
        "query" => Ok(SampleKey::Query(non_empty_token(&p, inner)?)),
        "random" => match inner {
            Value::Bool(true) => Ok(SampleKey::Random),
            other => error(&p, format!("must be true, got {}", show(other))),
        },
        _ => {
            let hint = match closest(kind, SAMPLE_BY_FIELDS) {
                Some(meant) => format!(", did you mean \"{meant}\"?"),
                None => String::new(),
            };
            error(
                &p,
                format!(
                    "unknown field{hint} (expected one of: {})",
                    SAMPLE_BY_FIELDS.join(", ")
                ),
            )
        }
    }
}

fn parse_match(path: &str, value: &Value) -> Result<Match> {
    let mut fields = Fields::new(value, path, &format!("{path}."), MATCH_FIELDS)?;
    let mut matcher = Match::default();
    if let Some((p, v)) = fields.optional("path_prefix") {
        matcher.path_prefix = Some(path_string(&p, v)?);
    }
    if let Some((p, v)) = fields.optional("path_exact") {
        matcher.path_exact = Some(path_string(&p, v)?);
    }
    if let Some((p, v)) = fields.optional("methods") {
        let list = array(&p, v)?;
        if list.is_empty() {
            return error(&p, "must not be empty (leave it out to match every method)");
        }
        for (i, item) in list.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let method = string(&ip, item)?;
            if method.is_empty() || !method.bytes().all(is_token_byte) {
                return error(
                    &ip,
                    format!("not an HTTP method: \"{}\"", method.escape_debug()),
                );
            }
            matcher.methods.push(method.to_ascii_uppercase());
        }
    }
    if let Some((p, v)) = fields.optional("headers") {
        for (name, condition) in object(&p, v)? {
            let hp = member(&p, name);
            let lower = checked_header_name(&hp, name)?;
            let condition = match condition {
                Value::Bool(true) => HeaderCondition::Present,
                Value::String(s) => HeaderCondition::Equals(s.clone().into_bytes()),
                other => {
                    return error(
                        &hp,
                        format!(
                            "must be a string (exact value) or true (present), got {}",
                            show(other)
                        ),
                    )
                }
            };
            matcher.headers.push((lower, condition));
        }
    }
    if let Some((p, v)) = fields.optional("hosts") {
        let list = array(&p, v)?;
        if list.is_empty() {
            return error(&p, "must not be empty (leave it out to match every host)");
        }
        for (i, item) in list.iter().enumerate() {
            matcher
                .hosts
                .push(host_pattern(&format!("{p}[{i}]"), item)?);
        }
    }
    if let Some((p, v)) = fields.optional("exclude_path_prefixes") {
        for (i, item) in array(&p, v)?.iter().enumerate() {
            let prefix = path_string(&format!("{p}[{i}]"), item)?;
            matcher.exclude_path_prefixes.push(prefix);
        }
    }
    Ok(matcher)
}

/// A host name (or an IPv6 literal in brackets), or `*.` and a domain: lower-cased.
fn host_pattern(path: &str, value: &Value) -> Result<HostPattern> {
    let given = string(path, value)?;
    let lower = given.to_ascii_lowercase();
    let (subdomains, name) = match lower.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, lower.as_str()),
    };
    let dns = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let ipv6 = name.len() > 2
        && name.starts_with('[')
        && name.ends_with(']')
        && name
            .bytes()
            .skip(1)
            .take(name.len() - 2)
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && (name.bytes().all(dns) || (ipv6 && !subdomains));
    if !valid {
        return error(
            path,
            format!(
                "must be a host name or *. and a domain, got \"{}\"",
                given.escape_debug()
            ),
        );
    }
    Ok(if subdomains {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

fn parse_header_ops(path: &str, value: &Value) -> Result<HeaderOps> {
    let mut fields = Fields::new(value, path, &format!("{path}."), HEADER_OPS_FIELDS)?;
    let mut ops = HeaderOps::default();
    // Every name, with the path where it was given, to refuse one named twice.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |p: &str, name: &str| -> Result<()> {
        forbid_reserved(p, name)?;
        if let Some((first, _)) = seen
            .iter()
            .find(|(_, n)| n == name)
            .map(|(fp, n)| (fp.clone(), n))
        {
            return error(p, format!("header \"{name}\" is already named at {first}"));
        }
        seen.push((p.to_string(), name.to_string()));
        Ok(())
    };
    if let Some((p, v)) = fields.optional("remove") {
        for (i, item) in array(&p, v)?.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let name = header_name(&ip, item)?;
            note(&ip, &name)?;
            ops.remove.push(name);
        }
    }
    if let Some((p, v)) = fields.optional("set") {
        for (name, item) in object(&p, v)? {
            let ip = member(&p, name);
            let lower = checked_header_name(&ip, name)?;
            note(&ip, &lower)?;
            let value = string(&ip, item)?;
            if !valid_header_value(&value) {
                return error(&ip, "value must not contain control characters");
            }
            ops.set.push((lower, value));
        }
    }
    if let Some((p, v)) = fields.optional("redact") {
        for (i, item) in array(&p, v)?.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let name = header_name(&ip, item)?;
            note(&ip, &name)?;
            ops.redact.push(name);
        }
    }
    Ok(ops)
}

/// The fields of one JSON object, taken one by one. Its fields are checked against the
/// known ones as soon as it is read, so that a misspelt field is named (with the known
/// name closest to it) before anything else about the object, a missing one included.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, path: &str, prefix: &str, known: &[&str]) -> Result<Self> {
        let map = object(path, value)?;
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let path = format!("{prefix}{}", unknown.escape_debug());
            let hint = match closest(unknown, known) {
                Some(meant) => format!(", did you mean \"{meant}\"?"),
                None => String::new(),
            };
            return error(
                &path,
                format!(
                    "unknown field{hint} (expected one of: {})",
                    known.join(", ")
                ),
            );
        }
        Ok(Fields {
            map,
            prefix: prefix.to_string(),
        })
    }

    fn optional(&mut self, key: &'static str) -> Option<(String, &'a Value)> {
        self.map
            .get(key)
            .map(|value| (format!("{}{key}", self.prefix), value))
    }

    fn required(&mut self, key: &'static str) -> Result<(String, &'a Value)> {
        match self.optional(key) {
            Some(found) => Ok(found),
            None => error(
                &format!("{}{key}", self.prefix),
                "required field is missing",
            ),
        }
    }
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
const TARGET_FIELDS: &[&str] = &[
    "name",
    "cluster",
    "percent",
    "sample_by",
    "on_missing_key",
    "salt",
    "match",
    "authority",
    "host_suffix",
    "headers",
    "max_body_bytes",
    "timeout_ms",
    "max_rps",
    "max_in_flight",
];
const SAMPLE_BY_FIELDS: &[&str] = &["header", "cookie", "query", "random"];
const MATCH_FIELDS: &[&str] = &[
    "path_prefix",
    "path_exact",
    "methods",
    "headers",
    "hosts",
    "exclude_path_prefixes",
];
const HEADER_OPS_FIELDS: &[&str] = &["remove", "set", "redact"];
const LANES_FIELDS: &[&str] = &[
    "header",
    "sample_by",
    "salt",
    "split",
    "default",
    "on_missing_key",
    "keep_incoming",
];
const SPLIT_FIELDS: &[&str] = &["lane", "percent"];

/// The top-level fields of a configuration: to tell a plugin configuration with a
/// misspelt field from a file that is not one at all.
pub const CONFIGURATION_FIELDS: &[&str] = TOP_FIELDS;

/// The path of an object member whose name comes from the input: escaped, so that an
/// error stays one printable line whatever the name holds.
fn member(path: &str, name: &str) -> String {
    format!("{path}.{}", name.escape_debug())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a JSON value for error lines.
fn show(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => kind(other).to_string(),
    }
}

fn object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => error(path, format!("expected an object, got {}", kind(other))),
    }
}

fn array<'a>(path: &str, value: &'a Value) -> Result<&'a Vec<Value>> {
    match value {
        Value::Array(list) => Ok(list),
        other => error(path, format!("expected an array, got {}", kind(other))),
    }
}

fn string(path: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => error(path, format!("expected a string, got {}", kind(other))),
    }
}

fn number(path: &str, value: &Value) -> Result<f64> {
    match value.as_f64() {
        Some(n) if value.is_number() => Ok(n),
        _ => error(path, format!("expected a number, got {}", kind(value))),
    }
}

fn integer_in(path: &str, value: &Value, min: u64, max: u64) -> Result<u64> {
    let n = match value {
        Value::Number(n) => n,
        other => return error(path, format!("expected an integer, got {}", kind(other))),
    };
    match n.as_u64() {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(_) => error(path, format!("must be between {min} and {max}, got {n}")),
        None if n.is_i64() => error(path, format!("must be between {min} and {max}, got {n}")),
        None => error(path, format!("must be an integer, got {n}")),
    }
}

fn path_string(path: &str, value: &Value) -> Result<String> {
    let s = string(path, value)?;
    if !s.starts_with('/') {
        return error(
            path,
            format!("must start with '/', got \"{}\"", s.escape_debug()),
        );
    }
    Ok(s)
}

fn non_empty_token(path: &str, value: &Value) -> Result<String> {
    let s = string(path, value)?;
    if s.is_empty()
        || s.bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b';' || b == b'=' || b == b'&')
    {
        return error(
            path,
            format!("must be a non-empty name, got \"{}\"", s.escape_debug()),
        );
    }
    Ok(s)
}

fn header_name(path: &str, value: &Value) -> Result<String> {
    let s = string(path, value)?;
    checked_header_name(path, &s)
}

/// Validates a header name and returns it in lower case.
fn checked_header_name(path: &str, name: &str) -> Result<String> {
    let body = name.strip_prefix(':').unwrap_or(name);
    if body.is_empty() || !body.bytes().all(is_token_byte) {
        return error(
            path,
            format!("not a valid header name: \"{}\"", name.escape_debug()),
        );
    }
    Ok(name.to_ascii_lowercase())
}

/// Headers the copy must keep as Envoy builds them.
fn forbid_reserved(path: &str, name: &str) -> Result<()> {
    if name.starts_with(':') {
        return error(
            path,
            format!("pseudo-header \"{name}\" cannot be changed on the copy"),
        );
    }
    if matches!(name, "host" | "content-length" | "transfer-encoding") {
        return error(
            path,
            format!(
                "header \"{name}\" cannot be changed on the copy (use \"authority\" for the host)"
            ),
        );
    }
    Ok(())
}

fn valid_target_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    fn line(json: &str) -> String {
        match parse(json.as_bytes()) {
            Ok(plan) => panic!("accepted: {json} -> {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Every bad configuration the tests know, with the one line it gives. Shared with
    /// the end-to-end test, which expects the same line from the module in Envoy.
    const BAD_CONFIGS: &str = include_str!("../tests/data/bad_configs.json");

    fn target(extra: &str) -> String {
        format!(r#"{{"targets": [{{"name": "t", "cluster": "c", "percent": 10{extra}}}]}}"#)
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn bad_configurations_give_one_line_with_the_json_path() {
        let cases: Vec<Value> = serde_json::from_str(BAD_CONFIGS).unwrap();
        assert!(cases.len() >= 60);
        for case in cases {
            let (json, expected) = (case["config"].as_str().unwrap(), &case["error"]);
            assert_eq!(line(json), *expected, "config: {json}");
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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
            assert_eq!(lanes.sample_by, SampleKey::Cookie("uid".into()));
            assert_eq!(lanes.names, ["canary"]);
            assert_eq!(lanes.ends, [25_000]);
            assert_eq!(lanes.default, None);
            assert_eq!(lanes.on_missing_key, LaneOnMissingKey::Default);
            assert!(!lanes.keep_incoming);
        }
        let both = parse(
            format!(r#"{{{lanes}, "targets": [{{"name": "t", "cluster": "c", "percent": 1}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(both.summary(), "targets t; lanes canary (header x-lane)");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
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
