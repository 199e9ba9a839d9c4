//! Comparisons piling up in a real Envoy stay within the memory bound of
//! docs/operations.md ("Memory"), count exactly, and never slow a client. The primary
//! answers every GET at once with a JSON catalogue of about 60 KiB (near the default
//! `compare.max_body_bytes`, 64 KiB); the mirror answers the same catalogue (half the
//! paths with one price changed) after 1 to 2 s, so that hundreds of comparisons wait at
//! once, each holding the primary's body in `max_in_flight_bytes` and its copy's room
//! for the answer. One worker, the filter's defaults.
//!
//! - The same load unsampled (Envoy's own cost), copied without `compare`, and copied
//!   with it: what Envoy holds (resident memory plus the bytes queued in its sockets, at
//!   the peak, over what it held before) grows with comparing within the bound for one
//!   worker, 120 MiB, plus the comparison's parse (about 3 MiB): the bodies held are
//!   inside `max_in_flight_bytes`.
//! - Once settled, the target's counters add up: `dispatched` is the sum of its
//!   `compare.*`, `sampled` is `dispatched` plus the skips, `in_flight` is 0.
//! - With a small `max_in_flight_bytes`, held primary bodies hit the budget: their
//!   comparisons end `skipped_budget`, their copies are still sent (and answered), and
//!   every byte comes back (later requests fill the budget exactly as before).
//! - Every client request gets the primary's 200 within a second, while the mirror takes
//!   one to two.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use traffic_mirror_core::compare::CompareResult;
use traffic_mirror_core::stats::IN_FLIGHT;

use crate::support::envoy::stats::parse_stats;
use crate::support::envoy::PeakMemory;
use crate::support::scripted::{Answer, Scripted};
use crate::support::{client, wait_for, wait_until, Connection, Envoy, EnvoyConfig, Request};
use crate::{assert_accounted, SETTLE};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The filter's defaults: `max_buffered_bytes`, `max_in_flight_bytes`,
/// `max_answer_bytes`.
const MAX_BUFFERED_BYTES: u64 = 32 * MIB;
const MAX_IN_FLIGHT_BYTES: u64 = 64 * MIB;
const MAX_ANSWER_BYTES: u64 = 64 * KIB;
/// Envoy's own cost of each copy in flight beyond its bytes, times the most copies in
/// flight with the defaults (docs/operations.md).
const SLACK: u64 = 24 * MIB;
/// The comparison's parse: the module grows by about 2.7 MiB once at the default
/// `compare.max_body_bytes` (emulator/tests/memory.rs).
const PARSE: u64 = 3 * MIB;
/// The bound for one worker with the defaults, comparing.
const BOUND: u64 = MAX_BUFFERED_BYTES + MAX_IN_FLIGHT_BYTES + SLACK + PARSE;
/// No client request may take this long: the mirror takes at least this long to answer,
/// so a filter that waited for it would.
const CLIENT_LIMIT: Duration = Duration::from_secs(1);
/// The catalogue's size, near the default `compare.max_body_bytes` (65536).
const BODY_BYTES: usize = 60 * 1024;
/// Paths `/items/0` to `/items/9`: the mirror answers path `g` after 1 s + g × 100 ms;
/// on odd paths its catalogue has one price changed.
const PATHS: usize = 10;
const TARGET: &str = "shop";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// A JSON catalogue of at most [`BODY_BYTES`]: items with an id, a SKU, a name, a price,
/// stock and tags. `changed`: the item whose price is one cent more.
fn catalogue(changed: Option<usize>) -> Vec<u8> {
    let mut body = String::from("{\"currency\":\"EUR\",\"items\":[");
    for i in 0.. {
        let price = 100 + (i * 37) % 9000 + usize::from(changed == Some(i));
        let item = format!(
            "{{\"id\":{i},\"sku\":\"SKU-{i:05}\",\"name\":\"Item number {i}\",\"price\":{price},\"stock\":{},\"tags\":[\"t{}\",\"t{}\"],\"active\":{}}}",
            (i * 13) % 250,
            i % 7,
            i % 11,
            i % 3 != 0
        );
        // The item, its comma, and "]}" must fit.
        if body.len() + item.len() + 3 > BODY_BYTES {
            break;
        }
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item);
    }
    body.push_str("]}");
    body.into_bytes()
}

/// The mirror's delay on path `g`.
fn mirror_delay(g: usize) -> Duration {
    Duration::from_millis(1000 + 100 * g as u64)
}

/// A primary answering every path at once, and a mirror answering the same after 1 to
/// 2 s (one price changed on odd paths).
fn upstreams() -> (Scripted, Scripted) {
    let primary = Scripted::start("primary");
    let mirror = Scripted::start("mirror");
    let same = catalogue(None);
    let changed = catalogue(Some(42));
    assert!(same.len() <= BODY_BYTES && same.len() > BODY_BYTES - 200);
    for g in 0..PATHS {
        let path = format!("/items/{g}");
        primary.answer(&path, Answer::json(200, same.clone()));
        let body = if g % 2 == 1 { &changed } else { &same };
        mirror.answer(
            &path,
            Answer::json(200, body.clone()).delay(mirror_delay(g)),
        );
    }
    (primary, mirror)
}

/// The plugin: one target copying every request at `percent`, comparing when `compare`
/// is given; the filter's defaults, but the top-level fields given.
fn plugin(percent: f64, compare: Option<Value>, top: Value) -> String {
    let mut target = json!({"name": TARGET, "cluster": "mirror", "percent": percent});
    if let Some(compare) = compare {
        target["compare"] = compare;
    }
    let mut config = json!({ "targets": [target] });
    config
        .as_object_mut()
        .unwrap()
        .extend(top.as_object().unwrap().clone());
    config.to_string()
}

/// `count` GETs over the paths in turn, each with an `x-request-id` of its own.
fn gets(label: &str, count: usize) -> Vec<Request> {
    (0..count)
        .map(|i| {
            Request::get(&format!("/items/{}?n={i}", i % PATHS))
                .header("x-request-id", format!("{label}-{i}"))
        })
        .collect()
}

/// The most copies of the target in flight at once (its `in_flight` gauge), polled on
/// Envoy's admin every few milliseconds by a thread of its own until [`PeakInFlight::stop`].
struct PeakInFlight {
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<u64>>,
}

impl PeakInFlight {
    fn start(admin: SocketAddr) -> PeakInFlight {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let name = format!("wasmcustom.traffic_mirror.{TARGET}.{IN_FLIGHT}");
        let filter = format!("/stats?filter={name}");
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::SeqCst) {
                if let Ok(response) = client::try_send(admin, &Request::get(&filter)) {
                    let now = parse_stats(&response.text()).get(&name).copied();
                    peak = peak.max(now.unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        PeakInFlight {
            stop,
            sampler: Some(sampler),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.sampler
            .take()
            .and_then(|sampler| sampler.join().ok())
            .unwrap_or_default()
    }
}

/// What one run of the load measured, and the Envoy and upstreams it ran with (still
/// running).
struct Run {
    label: String,
    envoy: Envoy,
    _primary: Scripted,
    mirror: Scripted,
    /// Envoy's peak while the load ran and settled, less what it held before.
    growth: u64,
    /// The target's stats once settled.
    stats: BTreeMap<String, u64>,
    /// The slowest client request.
    slowest: Duration,
    /// From the first request sent to the last response read.
    burst: Duration,
    /// The most copies in flight at once.
    peak_in_flight: u64,
}

/// Runs `count` GETs through an Envoy with `plugin` over `connections` connections at
/// once; waits until every request has been answered and `settled` has returned (the
/// peak is sampled until then); returns what was measured.
fn run(
    label: &str,
    plugin: &str,
    count: usize,
    connections: usize,
    settled: impl FnOnce(&Envoy),
) -> Run {
    let (primary, mirror) = upstreams();
    let envoy = Envoy::start(EnvoyConfig::new(plugin, primary.addr(), mirror.addr()));
    let requests = gets(label, count);
    let before = envoy.memory();
    let memory = PeakMemory::start(envoy.pid());
    let in_flight = PeakInFlight::start(envoy.admin());
    let start = Instant::now();
    let responses = crate::send_all(envoy.listener(), &requests, connections, 1);
    let last = responses.iter().map(|r| r.finished).max().unwrap();
    let burst = last - start;
    let slowest = responses.iter().map(|r| r.elapsed).max().unwrap();
    for (request, response) in requests.iter().zip(&responses) {
        assert_eq!(
            response.body.len(),
            catalogue(None).len(),
            "{}: the primary's whole catalogue",
            request.target
        );
    }
    wait_until(SETTLE, "every client request to end in Envoy", || {
        envoy.stat("http.ingress.downstream_rq_active") == 0
    });
    settled(&envoy);
    probe(envoy.pid());
    eprintln!("CLUSTER {:?}", envoy.stats().into_iter().filter(|(k, v)| k.starts_with("cluster.mirror.") && *v > 0 && (k.contains("fail") || k.contains("5") || k.contains("destroy") || k.contains("timeout") || k.contains("overflow") || k.contains("reset"))).collect::<Vec<_>>());
    let peak_in_flight = in_flight.stop();
    let peak = memory.stop();
    let growth = peak.total().saturating_sub(before.total());
    let stats = envoy.mirror_stats(TARGET);
    eprintln!(
        "{label}: Envoy grew {:.1} MiB (peak RSS {:.1} MiB + sockets {:.1} MiB; before {:.1} + {:.1}); \
         {count} requests in {burst:?}, slowest {slowest:?}; at most {peak_in_flight} copies in flight; {stats:?}",
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
        mirror,
        growth,
        stats,
        slowest,
        burst,
        peak_in_flight,
    }
}

/// The sum of the target's `compare.<result>` counters.
fn compared(stats: &BTreeMap<String, u64>) -> u64 {
    CompareResult::ALL
        .iter()
        .map(|r| get(stats, &format!("compare.{}", r.name())))
        .sum()
}

fn get(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

/// Waits until every copy of the target has ended and been compared, then asserts the
/// identities: `sampled` is the sum of where sampled requests end (`dispatched` and the
/// skips), `dispatched` the sum of the `responses_*` and of the `compare.*`, `in_flight`
/// 0; and that every copy was answered 2xx by the mirror and compared as it should be:
/// equal catalogues `match`, changed ones `body` at `/items/*/price`, or `skipped_budget`,
/// nothing else. Returns the stats.
fn assert_compared(envoy: &Envoy) -> BTreeMap<String, u64> {
    wait_for(SETTLE, "every copy to be compared", || {
        let stats = envoy.mirror_stats(TARGET);
        if get(&stats, IN_FLIGHT) == 0 && compared(&stats) >= get(&stats, "dispatched") {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    });
    let stats = assert_accounted(envoy, TARGET);
    let dispatched = stats["dispatched"];
    assert_eq!(
        dispatched,
        compared(&stats),
        "dispatched is the sum of the compare.* counters: {stats:?}"
    );
    assert_eq!(get(&stats, "requests"), get(&stats, "sampled"), "{stats:?}");
    assert_eq!(get(&stats, "responses_2xx"), dispatched, "{stats:?}");
    let (matched, body, budget) = (
        get(&stats, "compare.match"),
        get(&stats, "compare.body"),
        get(&stats, "compare.skipped_budget"),
    );
    assert_eq!(matched + body + budget, dispatched, "{stats:?}");
    assert_eq!(
        get(&stats, "compare.path./items/*/price"),
        body,
        "{stats:?}"
    );
    stats
}

#[test]
fn comparisons_piling_up_stay_within_the_memory_bound_and_never_slow_the_client() {
    // As many GETs as the default max_in_flight, sent within a fraction of the mirror's
    // delay: every copy's room (64 KiB + headers) and every held catalogue (60 KiB) wait
    // together, more than max_in_flight_bytes holds.
    const COUNT: usize = 1000;
    const CONNECTIONS: usize = 16;
    let unsampled = run(
        "unsampled",
        &plugin(0.0, Some(json!({})), json!({})),
        COUNT,
        CONNECTIONS,
        |_| {},
    );
    let copied = run(
        "copied, not compared",
        &plugin(100.0, None, json!({})),
        COUNT,
        CONNECTIONS,
        |envoy| {
            assert_accounted(envoy, TARGET);
        },
    );
    let compared_run = run(
        "copied and compared",
        &plugin(100.0, Some(json!({})), json!({})),
        COUNT,
        CONNECTIONS,
        |envoy| {
            assert_compared(envoy);
        },
    );

    // (1) Within the bound over the same load unsampled.
    let over = compared_run.growth.saturating_sub(unsampled.growth);
    eprintln!(
        "growth over unsampled: copied {:.1} MiB, compared {:.1} MiB (bound {:.1} MiB)",
        mib(copied.growth.saturating_sub(unsampled.growth)),
        mib(over),
        mib(BOUND)
    );
    assert!(
        over <= BOUND,
        "Envoy grew {:.1} MiB comparing, {:.1} MiB unsampled: {:.1} MiB more, past the bound of {:.1} MiB",
        mib(compared_run.growth),
        mib(unsampled.growth),
        mib(over),
        mib(BOUND)
    );
    // The load is what it should be: hundreds of comparisons waiting at once, and more
    // than max_in_flight_bytes holds.
    assert!(
        compared_run.peak_in_flight >= 300,
        "only {} copies in flight at once",
        compared_run.peak_in_flight
    );
    let stats = &compared_run.stats;
    assert!(
        get(stats, "compare.match") > 0 && get(stats, "compare.body") > 0,
        "{stats:?}"
    );

    // (2) The counters add up (asserted once settled, in `assert_compared`): here, every
    // request sampled, each either dispatched or skipped for want of room.
    assert_eq!(get(stats, "sampled"), COUNT as u64, "{stats:?}");
    assert_eq!(
        get(stats, "sampled"),
        get(stats, "dispatched") + get(stats, "skipped_in_flight"),
        "{stats:?}"
    );
    assert_eq!(
        compared_run.mirror.seen().len() as u64,
        get(stats, "dispatched"),
        "the mirror got every copy dispatched"
    );
    let copied_stats = &copied.stats;
    assert_eq!(
        get(copied_stats, "sampled"),
        COUNT as u64,
        "{copied_stats:?}"
    );

    // (4) No client waited for the mirror.
    for run in [&unsampled, &copied, &compared_run] {
        assert!(
            run.slowest < CLIENT_LIMIT,
            "{}: a client request took {:?} (unsampled: {:?})",
            run.label,
            run.slowest,
            unsampled.slowest
        );
    }
}

#[test]
fn primary_bodies_past_max_in_flight_bytes_are_skipped_budget_and_every_byte_comes_back() {
    // What a comparing copy holds: its headers (a few hundred bytes; `HEADERS` is a
    // generous guess) and room for its answer, then the primary's catalogue. The budget
    // holds `FULL` whole comparisons and one more copy, and half a catalogue: so, for
    // requests one after the other, `FULL` comparisons, then one copy whose catalogue
    // does not fit (`skipped_budget`, the copy sent all the same), then no more copies.
    const HEADERS: u64 = 512;
    const FULL: u64 = 16;
    let body = catalogue(None).len() as u64;
    let copy = HEADERS + MAX_ANSWER_BYTES;
    let budget = FULL * (copy + body) + copy + body / 2;
    let top = json!({ "max_in_flight_bytes": budget });

    // A burst on 8 connections at once, all of it before the mirror's first answer
    // (1 s): however the requests interleave, a catalogue meets the budget first (the
    // copies that fit all have room for theirs), and no more than FULL are held.
    const COUNT: usize = 200;
    let burst = run(
        "small max_in_flight_bytes, burst",
        &plugin(100.0, Some(json!({})), top),
        COUNT,
        8,
        |envoy| {
            assert_compared(envoy);
        },
    );
    let stats = &burst.stats;
    assert!(
        burst.burst < mirror_delay(0),
        "the burst took {:?}: the mirror answered during it",
        burst.burst
    );
    let full = get(stats, "compare.match") + get(stats, "compare.body");
    let skipped_budget = get(stats, "compare.skipped_budget");
    assert!(skipped_budget > 0, "{stats:?}");
    assert!(full > 0 && full <= FULL, "{full} compared: {stats:?}");
    // The skipped comparisons' copies were sent and answered all the same.
    assert_eq!(get(stats, "dispatched"), full + skipped_budget, "{stats:?}");
    assert_eq!(get(stats, "responses_2xx"), full + skipped_budget);
    assert_eq!(
        burst.mirror.seen().len() as u64,
        full + skipped_budget,
        "the mirror got every copy, also those not compared"
    );
    assert_eq!(
        get(stats, "sampled"),
        get(stats, "dispatched") + get(stats, "skipped_in_flight"),
        "{stats:?}"
    );
    assert_eq!(get(stats, "sampled"), COUNT as u64);
    assert!(
        burst.slowest < CLIENT_LIMIT,
        "a client request took {:?}",
        burst.slowest
    );

    // Every byte came back: requests one after the other (again within the mirror's
    // first second) fill the budget exactly as it was made for, twice.
    for round in 0..2 {
        let before = burst.envoy.mirror_stats(TARGET);
        let start = Instant::now();
        let mut connection = Connection::open(burst.envoy.listener());
        for request in gets(&format!("later-{round}"), FULL as usize + 2) {
            let response = connection.send(&request);
            assert_eq!(response.status, 200, "{}", request.target);
            assert!(response.elapsed < CLIENT_LIMIT, "{:?}", response.elapsed);
        }
        assert!(
            start.elapsed() < mirror_delay(0),
            "the requests took {:?}",
            start.elapsed()
        );
        let after = assert_compared(&burst.envoy);
        let grew: BTreeMap<&str, u64> = [
            "sampled",
            "dispatched",
            "skipped_in_flight",
            "responses_2xx",
            "compare.skipped_budget",
        ]
        .into_iter()
        .map(|name| (name, get(&after, name) - get(&before, name)))
        .collect();
        let full_now = get(&after, "compare.match") + get(&after, "compare.body")
            - get(&before, "compare.match")
            - get(&before, "compare.body");
        eprintln!("round {round}: {full_now} compared; {grew:?}");
        assert_eq!(full_now, FULL, "round {round}: {after:?}");
        assert_eq!(
            grew,
            BTreeMap::from([
                ("sampled", FULL + 2),
                ("dispatched", FULL + 1),
                ("skipped_in_flight", 1),
                ("responses_2xx", FULL + 1),
                ("compare.skipped_budget", 1),
            ]),
            "round {round}: {after:?}"
        );
    }
}

fn probe(pid: u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut header = String::new();
    let mut size = 0u64;
    for line in text.lines() {
        if line.contains('-') && !line.contains(':') || line.split_whitespace().next().is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')) {
            header = line.to_string();
            continue;
        }
        if let Some(v) = line.strip_prefix("Size:") { size = v.trim().trim_end_matches(" kB").trim().parse().unwrap(); }
        if let Some(v) = line.strip_prefix("Rss:") {
            let rss: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap();
            if size > 1024 * 1024 || rss > 4096 { eprintln!("PROBE {header} size {size} kB rss {rss} kB"); }
        }
    }
}
