//! A mirror under test can never grow the production proxy: what Envoy holds for copies
//! stays within `max_in_flight_bytes` (and the filter's own within `max_buffered_bytes`)
//! whatever the mirror does. Three mirrors written for this, each against the same load
//! unsampled (Envoy's own cost) and, where the mirror is hostile, without the limits
//! (what it would cost today's users without them): one that answers every copy with a
//! large body sent slowly, one that reads a copy's head and then nothing more (small
//! receive buffer, so that its kernel absorbs nothing), and one that answers normally.
//! What is measured is Envoy's resident memory plus the bytes queued in its TCP sockets,
//! sampled every few milliseconds for the peak.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::envoy::PeakMemory;
use crate::support::upstream::{LargeAnswer, Options};
use crate::support::{wait_until, Connection, Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_accounted, SETTLE};

const MIB: u64 = 1024 * 1024;
/// The filter's defaults: `max_buffered_bytes` and `max_in_flight_bytes`.
const MAX_BUFFERED_BYTES: u64 = 32 * MIB;
const MAX_IN_FLIGHT_BYTES: u64 = 64 * MIB;
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// What Envoy's own memory varies by between two runs of the same load, on top of the
/// budgets, and what each copy in flight costs Envoy beyond its counted bytes (its
/// stream, its upstream connection): the bound of docs/operations.md, measured here.
const SLACK: u64 = 24 * MIB;
/// The bound docs/operations.md states for one worker with the defaults.
const BOUND: u64 = MAX_BUFFERED_BYTES + MAX_IN_FLIGHT_BYTES + SLACK;
/// No client request may take this long: a filter that waited for the mirror would.
const CLIENT_LIMIT: Duration = Duration::from_secs(1);

/// What a scenario sends.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// GETs with distinct users over several keep-alive connections at once.
    Gets { count: usize, connections: usize },
    /// POSTs of `bytes`, one after the other on one connection.
    Posts { count: usize, bytes: usize },
}

/// What one run of a load measured, and the Envoy it ran in (still running).
struct Run {
    /// What the run was (the label given to [`run`]).
    label: String,
    envoy: Envoy,
    _primary: Upstream,
    /// Envoy's peak while the load ran, less what it held before.
    growth: u64,
    /// The target's stats once the load had run.
    stats: BTreeMap<String, u64>,
    /// The slowest client request.
    slowest: Duration,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The plugin: one target at `percent`, the filter's defaults, except bodies up to the
/// POSTs' size and the extra top-level fields given.
fn plugin(percent: f64, top: serde_json::Value) -> String {
    let mut config = json!({
        "targets": [{"name": "mirror", "cluster": "mirror", "percent": percent,
                     "sample_by": {"header": "x-user-id"}, "max_body_bytes": 8 * MIB}]
    });
    if let (Some(config), Some(top)) = (config.as_object_mut(), top.as_object()) {
        config.extend(top.clone());
    }
    config.to_string()
}

fn counting_upstream(name: &str) -> Upstream {
    let mut options = Options::new(name);
    options.record = false;
    Upstream::start_with(options).unwrap()
}

/// Runs `load` through an Envoy with `plugin` (and the runtime value as given) copying
/// to `mirror`; waits until every request has been answered and `settled` has returned
/// (the peak is sampled until then), and returns what was measured.
fn run(
    label: &str,
    plugin: &str,
    answer_buffer_limit: Option<u64>,
    mirror: &Upstream,
    load: Load,
    settled: impl FnOnce(&Envoy),
) -> Run {
    let primary = counting_upstream("primary");
    let envoy = Envoy::start(
        EnvoyConfig::new(plugin, primary.addr(), mirror.addr())
            .answer_buffer_limit(answer_buffer_limit),
    );
    let before = envoy.memory();
    let sampler = PeakMemory::start(envoy.pid());
    let slowest = match load {
        Load::Gets { count, connections } => {
            let requests: Vec<Request> = (0..count)
                .map(|i| {
                    Request::get(&format!("/get/{i}")).header("x-user-id", format!("{label}-{i}"))
                })
                .collect();
            slowest_of(&crate::send_all(
                envoy.listener(),
                &requests,
                connections,
                1,
            ))
        }
        Load::Posts { count, bytes } => {
            let body = crate::pattern(bytes, 3);
            let mut connection = Connection::open(envoy.listener());
            let mut slowest = Duration::ZERO;
            for i in 0..count {
                let request = Request::post(&format!("/post/{i}"), body.clone())
                    .header("x-user-id", format!("{label}-{i}"));
                let response = connection.send(&request);
                assert_eq!(response.status, 200, "POST {i}: {}", response.text());
                slowest = slowest.max(response.elapsed);
            }
            slowest
        }
    };
    wait_until(SETTLE, "every client request to end in Envoy", || {
        envoy.stat("http.ingress.downstream_rq_active") == 0
    });
    settled(&envoy);
    let peak = sampler.stop();
    let growth = peak.total().saturating_sub(before.total());
    let stats = envoy.mirror_stats("mirror");
    eprintln!(
        "{label}: Envoy grew {:.1} MiB (peak RSS {:.1} MiB + sockets {:.1} MiB; before {:.1} + {:.1}); slowest client request {slowest:?}; {stats:?}",
        mib(growth),
        mib(peak.rss),
        mib(peak.sockets),
        mib(before.rss),
        mib(before.sockets),
    );
    Run {
        label: label.to_string(),
        envoy,
        _primary: primary,
        growth,
        stats,
        slowest,
    }
}

fn slowest_of(responses: &[crate::support::Response]) -> Duration {
    responses
        .iter()
        .map(|r| r.elapsed)
        .max()
        .unwrap_or_default()
}

/// The same load with nothing sampled: Envoy's own cost.
fn baseline(load: Load) -> Run {
    let mirror = Upstream::start("mirror");
    run(
        "baseline",
        &plugin(0.0, json!({})),
        Some(MAX_ANSWER_BYTES),
        &mirror,
        load,
        |_| {},
    )
}

/// Asserts that a run with the limits stayed within the bound over the baseline, and
/// that no client waited.
fn assert_within_bound(limited: &Run, baseline: &Run) {
    let over = limited.growth.saturating_sub(baseline.growth);
    assert!(
        over <= BOUND,
        "Envoy grew {:.1} MiB with copies, {:.1} MiB without: {:.1} MiB more, past the bound of {:.1} MiB",
        mib(limited.growth),
        mib(baseline.growth),
        mib(over),
        mib(BOUND)
    );
    assert!(
        limited.slowest < CLIENT_LIMIT,
        "a client request took {:?} with copies ({:?} without)",
        limited.slowest,
        baseline.slowest
    );
}

/// Asserts that a run without the limits went far past the bound: the load is hostile
/// enough for the bounded run to prove something.
fn assert_past_bound(unlimited: &Run, baseline: &Run) {
    let over = unlimited.growth.saturating_sub(baseline.growth);
    assert!(
        over > 3 * BOUND,
        "without the limits Envoy grew only {:.1} MiB more than without copies: the load \
         does not show that the bound holds (bound {:.1} MiB)",
        mib(over),
        mib(BOUND)
    );
}

/// Asserts that the stats named have these values (a stat missing is wrong too); the
/// others are not looked at. The message says whose stats they are (`what`) and shows
/// them all.
fn assert_stats(what: &str, stats: &BTreeMap<String, u64>, expected: &[(&str, u64)]) {
    let actual: Vec<(&str, Option<u64>)> = expected
        .iter()
        .map(|&(name, _)| (name, stats.get(name).copied()))
        .collect();
    let expected: Vec<(&str, Option<u64>)> = expected
        .iter()
        .map(|&(name, value)| (name, Some(value)))
        .collect();
    assert_eq!(actual, expected, "{what}: {stats:?}");
}

impl Run {
    /// Asserts the target's stats once the load had run (see [`assert_stats`]).
    fn assert_stats(&self, expected: &[(&str, u64)]) {
        assert_stats(&self.label, &self.stats, expected);
    }
}

/// Asserts that the stats named of Envoy's cluster `cluster` (`cluster.<cluster>.<name>`)
/// have these values; a stat Envoy has not created yet counts as 0.
fn assert_cluster_stats(envoy: &Envoy, cluster: &str, expected: &[(&str, u64)]) {
    let stats = envoy.stats();
    let actual: Vec<(&str, u64)> = expected
        .iter()
        .map(|&(name, _)| {
            let value = stats.get(&format!("cluster.{cluster}.{name}")).copied();
            (name, value.unwrap_or(0))
        })
        .collect();
    assert_eq!(actual, expected, "stats of cluster {cluster}");
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

const NOT_SET_LINE: &str = "is not set to 65536";

#[test]
fn a_mirror_answering_huge_bodies_slowly_cannot_grow_envoy() {
    const COPIES: usize = 200;
    const ANSWER: usize = 4 * MIB as usize;
    let load = Load::Gets {
        count: COPIES,
        connections: 8,
    };
    let slow_and_large = || {
        let mut options = Options::new("mirror");
        options.record = false;
        options.behaviour.large_answer = Some(LargeAnswer {
            bytes: ANSWER,
            time: Duration::from_secs(3),
        });
        Upstream::start_with(options).unwrap()
    };
    let baseline = baseline(load);

    // Shipped: Envoy cuts each answer at max_answer_bytes, and the copy ends failed.
    let mirror = slow_and_large();
    let limited = run(
        "answers cut at 64 KiB",
        &plugin(100.0, json!({})),
        Some(MAX_ANSWER_BYTES),
        &mirror,
        load,
        |envoy| {
            assert_accounted(envoy, "mirror");
        },
    );
    assert_within_bound(&limited, &baseline);
    limited.assert_stats(&[
        ("dispatched", COPIES as u64),
        ("responses_failed", COPIES as u64),
    ]);
    assert_eq!(
        mirror.answered_whole(),
        0,
        "Envoy let an answer through whole"
    );
    let log = limited.envoy.log();
    assert_eq!(count(&log, NOT_SET_LINE), 0, "{log}");
    assert_eq!(
        count(&log, "which Envoy reports the same way"),
        1,
        "one line for the failed copies: {log}"
    );
    drop(mirror);

    // Without the runtime value every answer arrives whole: Envoy holds each, and the
    // filter says once what to set.
    let mirror = slow_and_large();
    let unlimited = run(
        "answers whole (runtime value not set)",
        &plugin(100.0, json!({})),
        None,
        &mirror,
        load,
        |envoy| {
            assert_accounted(envoy, "mirror");
        },
    );
    assert_past_bound(&unlimited, &baseline);
    unlimited.assert_stats(&[("responses_2xx", COPIES as u64)]);
    assert_eq!(mirror.answered_whole(), COPIES as u64);
    let log = unlimited.envoy.log();
    assert_eq!(
        count(&log, NOT_SET_LINE),
        1,
        "the runtime value's line once, not once per answer: {log}"
    );
    assert_eq!(
        count(&log, "set http.async_response_buffer_limit: 65536"),
        1
    );
}

/// A mirror that reads a copy's head and never anything more.
fn stops_reading() -> Upstream {
    let mut options = Options::new("mirror");
    options.behaviour.stop_reading = true;
    options.receive_buffer = Some(4096);
    Upstream::start_with(options).unwrap()
}

#[test]
fn a_mirror_that_stops_reading_cannot_grow_envoy() {
    const COPIES: usize = 100;
    const BODY: usize = 8 * MIB as usize;
    let load = Load::Posts {
        count: COPIES,
        bytes: BODY,
    };
    let baseline = baseline(load);

    // Shipped: copies stop being sent once those held fill max_in_flight_bytes.
    // Each copy counts its body, its headers (well under 1 KiB) and room for its answer.
    let fit = MAX_IN_FLIGHT_BYTES / (BODY as u64 + MAX_ANSWER_BYTES + 1024);
    let mirror = stops_reading();
    let limited = run(
        "copies to a mirror that stops reading, limited",
        &plugin(100.0, json!({})),
        Some(MAX_ANSWER_BYTES),
        &mirror,
        load,
        |_| {
            // Every copy that fits has reached the mirror and is stuck there.
            wait_until(SETTLE, "the copies to reach the stalled mirror", || {
                mirror.stalled() == fit
            });
        },
    );
    assert_within_bound(&limited, &baseline);
    limited.assert_stats(&[
        ("dispatched", fit),
        ("in_flight", fit),
        ("skipped_in_flight", COPIES as u64 - fit),
        ("sampled", COPIES as u64),
    ]);
    // The mirror goes away: each stuck copy ends, its bytes come back, and a later
    // request is copied again.
    drop(mirror);
    let stats = assert_accounted(&limited.envoy, "mirror");
    assert_stats("mirror", &stats, &[("responses_5xx", fit)]);
    let mirror = Upstream::start("mirror-again");
    let _ = mirror;
    let mut connection = Connection::open(limited.envoy.listener());
    let later = Request::post("/later", crate::pattern(BODY, 4)).header("x-user-id", "later");
    assert_eq!(connection.send(&later).status, 200);
    let stats = assert_accounted(&limited.envoy, "mirror");
    assert_stats(
        "mirror",
        &stats,
        &[
            ("dispatched", fit + 1),
            ("skipped_in_flight", COPIES as u64 - fit),
        ],
    );

    // Without the limit, every copy is handed over and Envoy holds them all.
    let mirror = stops_reading();
    let unlimited = run(
        "copies to a mirror that stops reading, unlimited",
        &plugin(100.0, json!({"max_in_flight_bytes": 2_147_483_648u64})),
        Some(MAX_ANSWER_BYTES),
        &mirror,
        load,
        |_| {
            wait_until(SETTLE, "the copies to reach the stalled mirror", || {
                mirror.stalled() == COPIES as u64
            });
        },
    );
    assert_past_bound(&unlimited, &baseline);
    unlimited.assert_stats(&[("dispatched", COPIES as u64)]);
}

#[test]
fn copies_held_by_a_mirror_that_never_answers_stop_at_max_in_flight() {
    // GETs: a mirror that stops reading after the head never answers them either. Each
    // copy holds an upstream connection and a stream in Envoy until its timeout.
    const COPIES: usize = 1100;
    const MAX_IN_FLIGHT: u64 = 1000;
    let load = Load::Gets {
        count: COPIES,
        connections: 16,
    };
    let baseline = baseline(load);
    let mirror = stops_reading();
    let held = run(
        "copies held by a mirror that never answers",
        &plugin(100.0, json!({})),
        Some(MAX_ANSWER_BYTES),
        &mirror,
        load,
        |_| {
            wait_until(SETTLE, "the copies to reach the mirror", || {
                mirror.stalled() == MAX_IN_FLIGHT
            });
        },
    );
    assert_within_bound(&held, &baseline);
    held.assert_stats(&[
        ("dispatched", MAX_IN_FLIGHT),
        ("skipped_in_flight", COPIES as u64 - MAX_IN_FLIGHT),
    ]);
    eprintln!(
        "each copy held (no body, no answer) cost Envoy {:.1} KiB",
        held.growth.saturating_sub(baseline.growth) as f64 / MAX_IN_FLIGHT as f64 / 1024.0
    );
    drop(mirror);
    let stats = assert_accounted(&held.envoy, "mirror");
    assert_stats("mirror", &stats, &[("responses_5xx", MAX_IN_FLIGHT)]);
}

#[test]
fn a_mirror_answering_normally_stays_within_the_bound() {
    const COPIES: usize = 100;
    const BODY: usize = 8 * MIB as usize;
    let load = Load::Posts {
        count: COPIES,
        bytes: BODY,
    };
    let baseline = baseline(load);
    let mirror = counting_upstream("mirror");
    let normal = run(
        "copies to a mirror answering normally",
        &plugin(100.0, json!({})),
        Some(MAX_ANSWER_BYTES),
        &mirror,
        load,
        |envoy| {
            assert_accounted(envoy, "mirror");
        },
    );
    assert_within_bound(&normal, &baseline);
    normal.assert_stats(&[
        ("dispatched", COPIES as u64),
        ("responses_2xx", COPIES as u64),
    ]);
    assert_eq!(mirror.count(), COPIES);
}

#[test]
fn in_flight_bytes_are_one_budget_for_a_replaced_configuration_and_its_successor() {
    // Room for three copies of 100 KiB with their answers' 64 KiB, not four.
    const BODY: usize = 100 * 1024;
    let config = |target: &str| {
        json!({
            "max_in_flight_bytes": 3 * (BODY + 65_536 + 1024),
            "targets": [{"name": target, "cluster": "mirror", "percent": 100,
                         "max_body_bytes": BODY}]
        })
        .to_string()
    };
    let primary = counting_upstream("primary");
    let mirror = stops_reading();
    let mut envoy = Envoy::start(
        EnvoyConfig::new(&config("before"), primary.addr(), mirror.addr()).ecds("shop", "mirror"),
    );
    let mut connection = Connection::open(envoy.listener());
    let mut post = |n: usize| {
        for i in 0..n {
            let request = Request::post(&format!("/upload/{i}"), crate::pattern(BODY, i as u64));
            assert_eq!(connection.send(&request).status, 200);
        }
    };
    post(5);
    wait_until(SETTLE, "three copies to reach the stalled mirror", || {
        mirror.stalled() == 3
    });
    assert_stats(
        "before",
        &envoy.mirror_stats("before"),
        &[
            ("dispatched", 3),
            ("skipped_in_flight", 2),
            ("in_flight", 3),
        ],
    );

    // The update replaces the configuration; the old one's copies still hold their
    // bytes, so the new one has no room either.
    assert!(envoy.push(&config("after")), "the update was applied");
    post(2);
    assert_stats(
        "after",
        &envoy.mirror_stats("after"),
        &[("dispatched", 0), ("skipped_in_flight", 2)],
    );

    // The mirror goes away: the old copies end, their bytes come back, and the new
    // configuration copies again (to a closed port now: Envoy answers them 503).
    drop(mirror);
    let before = assert_accounted(&envoy, "before");
    assert_stats("before", &before, &[("responses_5xx", 3)]);
    post(2);
    let after = assert_accounted(&envoy, "after");
    assert_stats(
        "after",
        &after,
        &[("dispatched", 2), ("skipped_in_flight", 2)],
    );
}

#[test]
fn copies_that_end_without_a_complete_answer_are_told_apart_by_the_mirror_clusters_stats() {
    // Three ways a copy ends in responses_failed, each to a mirror of its own: Envoy cut
    // an answer longer than max_answer_bytes, the mirror closed the connection in the
    // middle of its answer, or the answer was still coming at timeout_ms. The plugin
    // sees the three alike; the mirror clusters' stats do not.
    const COPIES: u64 = 5;
    let slow = |name: &str, bytes: usize, secs: u64| {
        let mut options = Options::new(name);
        options.behaviour.large_answer = Some(LargeAnswer {
            bytes,
            time: Duration::from_secs(secs),
        });
        Upstream::start_with(options).unwrap()
    };
    // 64 KiB at once, the next 64 KiB a second later (Envoy cuts it then) or much later;
    // 2 KiB at once, the rest over 4 s.
    let long = slow("long", 16 * 65_536, 16);
    let closing = slow("closing", 16 * 65_536, 160);
    let late = slow("late", 32 * 1024, 4);
    let target = |name: &str, timeout_ms: u32| json!({"name": name, "cluster": name, "percent": 100, "timeout_ms": timeout_ms});
    let plugin =
        json!({"targets": [target("long", 5000), target("closing", 5000), target("late", 500)]});
    let primary = counting_upstream("primary");
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), long.addr())
            .cluster("long", long.addr())
            .cluster("closing", closing.addr())
            .cluster("late", late.addr()),
    );
    let requests: Vec<Request> = (0..COPIES)
        .map(|i| Request::get(&format!("/{i}")).header("x-request-id", format!("r{i}")))
        .collect();
    crate::send_all(envoy.listener(), &requests, 1, 1);
    wait_until(SETTLE, "the closing mirror's answers to begin", || {
        envoy.created_on_first_count("cluster.closing.upstream_rq_200") == COPIES
    });
    drop(closing);
    for name in ["long", "closing", "late"] {
        let stats = assert_accounted(&envoy, name);
        assert_stats(name, &stats, &[("responses_failed", COPIES)]);
    }
    // Envoy cut the long answers: it closed the connections itself.
    assert_cluster_stats(
        &envoy,
        "long",
        &[
            ("upstream_cx_destroy_local_with_active_rq", COPIES),
            ("upstream_cx_destroy_remote_with_active_rq", 0),
            ("upstream_rq_timeout", 0),
        ],
    );
    // The closing mirror closed them.
    assert_cluster_stats(
        &envoy,
        "closing",
        &[
            ("upstream_cx_destroy_remote_with_active_rq", COPIES),
            ("upstream_cx_destroy_local_with_active_rq", 0),
        ],
    );
    // The late answers ran past timeout_ms after their headers: a timeout, not a 504.
    assert_cluster_stats(
        &envoy,
        "late",
        &[
            ("upstream_rq_timeout", COPIES),
            ("upstream_cx_destroy_remote_with_active_rq", 0),
        ],
    );
}
