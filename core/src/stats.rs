//! The stats catalog: which stats each target and lane has, their names (Envoy adds
//! `wasmcustom.`), when each is defined, and how a count reaches the host. Names become
//! Prometheus labels through the shipped `stats_tags` (docs/metrics.md).

use crate::compare::CompareResult;
use crate::config::Plan;
use crate::host::{Env, Host, MetricType, Status};
use crate::lanes::Mode;

/// The per-target counters of the specification (docs/specification.md), in the order
/// of their table in docs/metrics.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Requests,
    Sampled,
    Dispatched,
    SkippedLoop,
    SkippedMissingKey,
    SkippedBodyTooLarge,
    SkippedRateLimited,
    SkippedInFlight,
    SkippedBufferFull,
    SkippedIncomplete,
    DispatchFailed,
    Responses2xx,
    Responses3xx,
    Responses4xx,
    Responses5xx,
    ResponsesFailed,
}

impl Counter {
    pub const ALL: [Counter; 16] = [
        Counter::Requests,
        Counter::Sampled,
        Counter::Dispatched,
        Counter::SkippedLoop,
        Counter::SkippedMissingKey,
        Counter::SkippedBodyTooLarge,
        Counter::SkippedRateLimited,
        Counter::SkippedInFlight,
        Counter::SkippedBufferFull,
        Counter::SkippedIncomplete,
        Counter::DispatchFailed,
        Counter::Responses2xx,
        Counter::Responses3xx,
        Counter::Responses4xx,
        Counter::Responses5xx,
        Counter::ResponsesFailed,
    ];

    /// Where every sampled request ends, exactly once: once no request is in progress,
    /// `sampled` is the sum of these.
    pub const SAMPLED_OUTCOMES: [Counter; 7] = [
        Counter::Dispatched,
        Counter::DispatchFailed,
        Counter::SkippedBodyTooLarge,
        Counter::SkippedBufferFull,
        Counter::SkippedRateLimited,
        Counter::SkippedInFlight,
        Counter::SkippedIncomplete,
    ];

    /// Where every dispatched copy ends, exactly once: once no copy is in flight,
    /// `dispatched` is the sum of these.
    pub const RESPONSES: [Counter; 5] = [
        Counter::Responses2xx,
        Counter::Responses3xx,
        Counter::Responses4xx,
        Counter::Responses5xx,
        Counter::ResponsesFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "requests",
            Counter::Sampled => "sampled",
            Counter::Dispatched => "dispatched",
            Counter::SkippedLoop => "skipped_loop",
            Counter::SkippedMissingKey => "skipped_missing_key",
            Counter::SkippedBodyTooLarge => "skipped_body_too_large",
            Counter::SkippedRateLimited => "skipped_rate_limited",
            Counter::SkippedInFlight => "skipped_in_flight",
            Counter::SkippedBufferFull => "skipped_buffer_full",
            Counter::SkippedIncomplete => "skipped_incomplete",
            Counter::DispatchFailed => "dispatch_failed",
            Counter::Responses2xx => "responses_2xx",
            Counter::Responses3xx => "responses_3xx",
            Counter::Responses4xx => "responses_4xx",
            Counter::Responses5xx => "responses_5xx",
            Counter::ResponsesFailed => "responses_failed",
        }
    }

    /// The counter a copy's end goes to: its status class, or `responses_failed`
    /// when it ended without a (valid) status.
    pub fn for_response(status: Option<&[u8]>) -> Counter {
        let code = status
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        match code {
            Some(200..=299) => Counter::Responses2xx,
            Some(300..=399) => Counter::Responses3xx,
            Some(400..=499) => Counter::Responses4xx,
            Some(500..=599) => Counter::Responses5xx,
            _ => Counter::ResponsesFailed,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The name of the `in_flight` gauge.
pub const IN_FLIGHT: &str = "in_flight";

/// The name of the copy latency histogram (milliseconds from handing a copy to Envoy to
/// its end).
pub const LATENCY_MS: &str = "latency_ms";

/// gRPC status codes counted per target: 0 (`OK`) to 16 (`UNAUTHENTICATED`).
pub const GRPC_STATUS_CODES: usize = 17;

/// The metric name of a target's counter of answers with gRPC status `code`:
/// `traffic_mirror.<target>.grpc_status.<code>` (the code becomes a label with the
/// shipped `stats_tags`).
pub fn grpc_status_metric_name(target: &str, code: u8) -> String {
    format!("traffic_mirror.{target}.grpc_status.{code}")
}

/// The gRPC status code a `grpc-status` value carries: 0 to 16, `None` for anything
/// else (not counted).
pub fn grpc_status_code(value: &[u8]) -> Option<u8> {
    let code: u8 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    (usize::from(code) < GRPC_STATUS_CODES).then_some(code)
}

/// The metric name the plugin defines; Envoy prefixes it with `wasmcustom.`.
pub fn metric_name(target: &str, metric: &str) -> String {
    format!("traffic_mirror.{target}.{metric}")
}

/// The counters of each lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneStat {
    /// Requests this filter put in the lane (the default lane included).
    Assigned,
    /// Requests that arrived carrying the lane's name and kept it (`keep_incoming`).
    Kept,
    /// A hop's requests given the lane from baggage (`follow`).
    Followed,
}

/// The metric name of a hop's counter of requests whose baggage named a lane it does
/// not follow.
pub const LANES_UNKNOWN: &str = "traffic_lanes.unknown";

impl LaneStat {
    pub const ALL: [LaneStat; 3] = [LaneStat::Assigned, LaneStat::Kept, LaneStat::Followed];

    /// The counters each lane has: an assigning filter's, or a hop's.
    pub fn of(mode: &Mode) -> &'static [LaneStat] {
        match mode {
            Mode::Assign(_) => &[LaneStat::Assigned, LaneStat::Kept],
            Mode::Follow => &[LaneStat::Followed],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LaneStat::Assigned => "assigned",
            LaneStat::Kept => "kept",
            LaneStat::Followed => "followed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The metric name of a target's counter of comparisons that ended in `result`:
/// `traffic_mirror.<target>.compare.<result>`.
pub fn compare_metric_name(target: &str, result: CompareResult) -> String {
    format!("traffic_mirror.{target}.compare.{}", result.name())
}

/// The metric name of a target's counter of body differences first found at JSON
/// `path` (indices as `*`): `traffic_mirror.<target>.compare.path.<path>`, the path
/// encoded ([`encode_path`]) so that the shipped `stats_tags` give it back, as written,
/// as the label `json_path`; the whole document (`""`) is `...compare.path`, with no
/// label.
pub fn path_metric_name(target: &str, path: &str) -> String {
    if path.is_empty() {
        return format!("traffic_mirror.{target}.compare.path");
    }
    format!("traffic_mirror.{target}.compare.path.{}", encode_path(path))
}

/// The metric name of a target's counter of body differences at paths past
/// `compare.max_paths`: its label `json_path` is `other` (a path is `""` or starts with
/// `/`, so no path reads `other`).
pub fn other_paths_metric_name(target: &str) -> String {
    format!("traffic_mirror.{target}.compare.path.other")
}

/// A JSON Pointer as the last part of a stat name, as Envoy keeps it: Envoy splits a
/// stat's name at `.` and drops a trailing one, and the Prometheus text format cannot
/// carry control characters, so `%`, `.` and the ASCII control characters are written
/// `%XX`; so is the `_` of a path that ends like one of Envoy's own response-code stats
/// (`_rq_200`, `_rq_2xx`), which Envoy would read a label from. Everything else, `/`,
/// `~`, `*`, `:`, spaces, quotes and non-ASCII letters among it, stays as written: the
/// label reads like the path, and percent-decoding gives it back exactly.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 2);
    for c in path.chars() {
        match c {
            '%' | '.' | '\u{0}'..='\u{1f}' | '\u{7f}' => {
                out.push_str(&format!("%{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    if ends_like_a_response_code(&out) {
        if let Some(at) = out.rfind("_rq_") {
            out.replace_range(at..=at, "%5F");
        }
    }
    out
}

/// `_rq_` and three digits, or a digit and `xx`, at the end: what Envoy's default tag
/// extractors read as a response code.
fn ends_like_a_response_code(name: &str) -> bool {
    let Some(at) = name.rfind("_rq_") else {
        return false;
    };
    let tail = name.get(at + 4..).unwrap_or_default().as_bytes();
    match tail {
        [a, b, c] => {
            a.is_ascii_digit()
                && ((b.is_ascii_digit() && c.is_ascii_digit()) || (*b == b'x' && *c == b'x'))
        }
        _ => false,
    }
}

/// A percent-encoded path back as written (for tools reading `/stats`).
pub fn decode_path(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The metric name of a lane's counter; Envoy prefixes it with `wasmcustom.`.
pub fn lane_metric_name(lane: &str, stat: LaneStat) -> String {
    format!("traffic_lanes.{lane}.{}", stat.name())
}

/// The stats of one configuration: every stat's id, as the host defined it, by target
/// and counter, gauge, histogram, gRPC code (each defined when first seen) and lane. The
/// host offers only "define" and "update" ([`Host`]); which stats exist, their names and
/// when they are defined are decided here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    counters: Vec<[u32; Counter::ALL.len()]>,
    in_flight: Vec<u32>,
    latency: Vec<u32>,
    grpc: Vec<[Option<u32>; GRPC_STATUS_CODES]>,
    /// Target names, for the gRPC status counters defined later.
    names: Vec<String>,
    /// Each lane's counters, those of its configuration's mode ([`LaneStat::of`]).
    lanes: Vec<[Option<u32>; LaneStat::ALL.len()]>,
    /// A hop's [`LANES_UNKNOWN`].
    lanes_unknown: Option<u32>,
    /// A comparing target's `compare.<result>` counters.
    compare: Vec<Option<[u32; CompareResult::ALL.len()]>>,
    /// A comparing target's counters of body differences by JSON path, each defined when
    /// its path is first seen, up to `compare.max_paths`; `other` past them.
    paths: Vec<PathCounters>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PathCounters {
    ids: Vec<(String, u32)>,
    other: Option<u32>,
}

impl Stats {
    /// Defines every stat of a configuration but the gRPC status counters (defined when
    /// a code is first seen), in order: each target's counters, gauge and histogram, then
    /// each lane's counters. The host's refusal of any of them is the configuration's.
    pub fn define(plan: &Plan, host: &mut impl Host) -> Result<Stats, Status> {
        let mut counters = Vec::with_capacity(plan.targets.len());
        let mut in_flight = Vec::with_capacity(plan.targets.len());
        let mut latency = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            let mut ids = [0u32; Counter::ALL.len()];
            for (id, counter) in ids.iter_mut().zip(Counter::ALL) {
                *id = host.define_metric(
                    MetricType::Counter,
                    &metric_name(&target.name, counter.name()),
                )?;
            }
            counters.push(ids);
            in_flight.push(
                host.define_metric(MetricType::Gauge, &metric_name(&target.name, IN_FLIGHT))?,
            );
            latency.push(host.define_metric(
                MetricType::Histogram,
                &metric_name(&target.name, LATENCY_MS),
            )?);
        }
        let mut compare = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            compare.push(match &target.compare {
                None => None,
                Some(_) => {
                    let mut ids = [0u32; CompareResult::ALL.len()];
                    for (id, result) in ids.iter_mut().zip(CompareResult::ALL) {
                        *id = host.define_metric(
                            MetricType::Counter,
                            &compare_metric_name(&target.name, result),
                        )?;
                    }
                    Some(ids)
                }
            });
        }
        let mut lanes = Vec::new();
        let mut lanes_unknown = None;
        if let Some(config) = &plan.lanes {
            for name in &config.names {
                let mut ids = [None; LaneStat::ALL.len()];
                for &stat in LaneStat::of(&config.mode) {
                    if let Some(id) = ids.get_mut(stat.index()) {
                        *id = Some(
                            host.define_metric(MetricType::Counter, &lane_metric_name(name, stat))?,
                        );
                    }
                }
                lanes.push(ids);
            }
            if config.mode == Mode::Follow {
                lanes_unknown = Some(host.define_metric(MetricType::Counter, LANES_UNKNOWN)?);
            }
        }
        Ok(Stats {
            counters,
            in_flight,
            latency,
            grpc: vec![[None; GRPC_STATUS_CODES]; plan.targets.len()],
            names: plan.targets.iter().map(|t| t.name.clone()).collect(),
            lanes,
            lanes_unknown,
            compare,
            paths: vec![PathCounters::default(); plan.targets.len()],
        })
    }

    /// A comparison of a target's copy ended in `result`.
    pub fn count_compare(&self, target: usize, result: CompareResult, env: &mut Env<impl Host>) {
        if let Some(&id) = self
            .compare
            .get(target)
            .and_then(Option::as_ref)
            .and_then(|ids| ids.get(result.index()))
        {
            env.increment(id, 1);
        }
    }

    /// A body difference of a target at JSON `path`: its counter, defined now if the path
    /// is new and the target counts fewer than `max_paths`; else `other`'s.
    pub fn count_path(
        &mut self,
        target: usize,
        path: &str,
        max_paths: usize,
        env: &mut Env<impl Host>,
    ) {
        let name = self.names.get(target).map_or("", String::as_str);
        let Some(counters) = self.paths.get_mut(target) else {
            return;
        };
        let known = counters
            .ids
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, id)| *id);
        let id = match known {
            Some(id) => id,
            None if counters.ids.len() < max_paths => {
                match env
                    .host()
                    .define_metric(MetricType::Counter, &path_metric_name(name, path))
                {
                    Ok(id) => {
                        counters.ids.push((path.to_string(), id));
                        id
                    }
                    Err(status) => return env.stat_failed(status),
                }
            }
            None => match counters.other {
                Some(id) => id,
                None => match env
                    .host()
                    .define_metric(MetricType::Counter, &other_paths_metric_name(name))
                {
                    Ok(id) => *counters.other.insert(id),
                    Err(status) => return env.stat_failed(status),
                },
            },
        };
        env.increment(id, 1);
    }

    /// One more in a target's counter.
    pub fn count(&self, target: usize, counter: Counter, env: &mut Env<impl Host>) {
        if let Some(&id) = self
            .counters
            .get(target)
            .and_then(|ids| ids.get(counter.index()))
        {
            env.increment(id, 1);
        }
    }

    /// Moves a target's `in_flight` gauge.
    pub fn add_in_flight(&self, target: usize, delta: i64, env: &mut Env<impl Host>) {
        if let Some(&id) = self.in_flight.get(target) {
            env.increment(id, delta);
        }
    }

    /// One more in a lane's counter.
    pub fn count_lane(&self, lane: usize, stat: LaneStat, env: &mut Env<impl Host>) {
        if let Some(&Some(id)) = self.lanes.get(lane).and_then(|ids| ids.get(stat.index())) {
            env.increment(id, 1);
        }
    }

    /// A hop's request whose baggage named a lane it does not follow.
    pub fn count_unknown_lane(&self, env: &mut Env<impl Host>) {
        if let Some(id) = self.lanes_unknown {
            env.increment(id, 1);
        }
    }

    /// A copy's answer carried gRPC status `code` (0 to 16): its counter, defined now if
    /// this is the first.
    pub fn count_grpc_status(&mut self, target: usize, code: u8, env: &mut Env<impl Host>) {
        let Some(slot) = self
            .grpc
            .get_mut(target)
            .and_then(|ids| ids.get_mut(usize::from(code)))
        else {
            return;
        };
        let id = match *slot {
            Some(id) => id,
            None => {
                let name = self.names.get(target).map_or("", String::as_str);
                match env
                    .host()
                    .define_metric(MetricType::Counter, &grpc_status_metric_name(name, code))
                {
                    Ok(id) => *slot.insert(id),
                    Err(status) => return env.stat_failed(status),
                }
            }
        };
        env.increment(id, 1);
    }

    /// A copy ended this many milliseconds after it was handed to the host.
    pub fn record_latency(&self, target: usize, millis: u64, env: &mut Env<impl Host>) {
        if let Some(&id) = self.latency.get(target) {
            env.record(id, millis);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn json_paths_become_stat_names_that_read_back_exactly() {
        assert_eq!(
            path_metric_name("t", "/items/*/price"),
            "traffic_mirror.t.compare.path./items/*/price"
        );
        assert_eq!(path_metric_name("t", ""), "traffic_mirror.t.compare.path");
        for (path, encoded) in [
            ("/a.b", "/a%2Eb"),
            ("/50%", "/50%25"),
            ("/a\nb", "/a%0Ab"),
            ("/a~1b~0c", "/a~1b~0c"),
            ("/é/日本", "/é/日本"),
            ("/a:b \"c\"\\", "/a:b \"c\"\\"),
            ("/x.", "/x%2E"),
            ("/count_rq_200", "/count%5Frq_200"),
            ("/count_rq_2xx", "/count%5Frq_2xx"),
            ("/count_rq_20", "/count_rq_20"),
        ] {
            assert_eq!(encode_path(path), encoded, "{path:?}");
            assert_eq!(decode_path(encoded), path, "{encoded:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn responses_are_counted_by_status_class() {
        for (status, counter) in [
            (Some(&b"200"[..]), Counter::Responses2xx),
            (Some(b"204"), Counter::Responses2xx),
            (Some(b"302"), Counter::Responses3xx),
            (Some(b"404"), Counter::Responses4xx),
            (Some(b"503"), Counter::Responses5xx),
            (Some(b"504"), Counter::Responses5xx),
            (Some(b"600"), Counter::ResponsesFailed),
            (Some(b"abc"), Counter::ResponsesFailed),
            (Some(b""), Counter::ResponsesFailed),
            (None, Counter::ResponsesFailed),
        ] {
            assert_eq!(Counter::for_response(status), counter, "{status:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_status_codes_are_0_to_16() {
        for (value, code) in [
            (&b"0"[..], Some(0)),
            (b"14", Some(14)),
            (b"16", Some(16)),
            (b" 2 ", Some(2)),
            (b"17", None),
            (b"-1", None),
            (b"300", None),
            (b"", None),
            (b"OK", None),
            (b"\xff", None),
        ] {
            assert_eq!(grpc_status_code(value), code, "{value:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn metric_names_follow_the_spec() {
        assert_eq!(
            metric_name("staging", Counter::Requests.name()),
            "traffic_mirror.staging.requests"
        );
        assert_eq!(
            metric_name("a-b", IN_FLIGHT),
            "traffic_mirror.a-b.in_flight"
        );
        assert_eq!(
            lane_metric_name("canary", LaneStat::Assigned),
            "traffic_lanes.canary.assigned"
        );
        assert_eq!(
            lane_metric_name("beta_2", LaneStat::Kept),
            "traffic_lanes.beta_2.kept"
        );
        assert_eq!(
            grpc_status_metric_name("staging", 14),
            "traffic_mirror.staging.grpc_status.14"
        );
        assert_eq!(
            metric_name("staging", LATENCY_MS),
            "traffic_mirror.staging.latency_ms"
        );
        let names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), 16);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
