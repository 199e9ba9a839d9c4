//! Comparisons piling up in a real Envoy stay within the memory bound of
//! docs/operations.md ("Memory"), count exactly, and never slow a client. The primary
//! answers every GET at once with a JSON catalogue of 60 KiB (near the default
//! `compare.max_body_bytes`, 64 KiB); the mirror answers the same catalogue (on half the
//! paths with one price changed) after 1 to 2 s, so that hundreds of comparisons wait at
//! once, each holding the primary's catalogue in `max_in_flight_bytes` beside its copy's
//! headers and room for the answer. One worker, the filter's defaults.
//!
//! - The same load unsampled (Envoy's own cost), copied without `compare`, and copied
//!   with it. What Envoy holds (its resident memory plus the bytes queued in its sockets,
//!   at the peak, over what it held before) grows with comparing within the bound for one
//!   worker, 120 MiB, plus the comparison's parse (about 3 MiB): the bodies held are
//!   inside `max_in_flight_bytes`. The wasm VM's own memory (its linear memory as V8 maps
//!   it) grows by the catalogues held, each once and at its size, plus the parse.
//! - Once settled, the target's counters add up: `dispatched` is the sum of its
//!   `compare.*`, `sampled` is `dispatched` plus the skips, `in_flight` is 0.
//! - With a small `max_in_flight_bytes`, held primary bodies hit the budget: their
//!   comparisons end `skipped_budget`, their copies are still sent (and answered 2xx), and
//!   every byte comes back (later requests fill the budget exactly as the first did).
//! - Every client request gets the primary's 200 within a second, while the mirror takes
//!   one to two.
//! - A primary body that Envoy passes on in several chunks is held at its reservation,
//!   as one that arrives whole is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use traffic_mirror_core::compare::CompareResult;
use traffic_mirror_core::stats::IN_FLIGHT;

use crate::support::envoy::memory::WasmMemory;
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
/// The comparison's parse: the module grows by about 2.5 MiB once at the default
/// `compare.max_body_bytes` (emulator/tests/memory.rs).
const PARSE: u64 = 3 * MIB;
/// The bound for one worker with the defaults, comparing.
const BOUND: u64 = MAX_BUFFERED_BYTES + MAX_IN_FLIGHT_BYTES + SLACK + PARSE;
/// No client request may take this long: the mirror takes at least this long to answer
/// (see [`mirror_delay`]), so a filter that waited for it would.
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

/// A JSON catalogue of at most `bytes` (and not much less): items with an id, a SKU, a
/// name, a price, stock and tags. `changed`: the item whose price is one cent more.
fn catalogue(bytes: usize, changed: Option<usize>) -> Vec<u8> {
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
        if body.len() + item.len() + 3 > bytes {
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

/// The mirror's delay on path `g`: 1 to 2 s.
fn mirror_delay(g: usize) -> Duration {
    Duration::from_millis(1000 + 100 * g as u64)
}

/// The primary's catalogue: its size, and how the primary writes it.
#[derive(Debug, Clone, Copy)]
struct Shape {
    bytes: usize,
    /// `None`: with its head, at once; else this many bytes at a time, with this pause
    /// after each piece (so that Envoy passes it on in several chunks).
    pace: Option<(usize, Duration)>,
}

/// A catalogue near `compare.max_body_bytes`, written at once.
const AT_ONCE: Shape = Shape {
    bytes: BODY_BYTES,
    pace: None,
};

/// A primary answering every path at once with the catalogue, and a mirror answering
/// the same after 1 to 2 s (one price changed on odd paths).
fn upstreams(shape: Shape) -> (Scripted, Scripted) {
    // Hundreds of connections open at once: std's queue of 128 would drop SYNs, and
    // Envoy's connect timeout (1 s) is the kernel's first retry.
    let primary = Scripted::start_with_backlog("primary", 1024);
    let mirror = Scripted::start_with_backlog("mirror", 1024);
    let same = catalogue(shape.bytes, None);
    let changed = catalogue(shape.bytes, Some(42));
    assert!(same.len() <= shape.bytes && same.len() + 200 > shape.bytes);
    assert_ne!(same, changed);
    for g in 0..PATHS {
        let path = format!("/items/{g}");
        let answer = Answer::json(200, same.clone());
        let answer = match shape.pace {
            Some((piece, pause)) => answer.pace(piece, pause),
            None => answer,
        };
        primary.answer(&path, answer);
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
/// Envoy's admin every 20 ms by a thread of its own until [`PeakInFlight::stop`].
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
    /// How much the wasm VMs' memory grew (it never shrinks: its high-water mark).
    module_growth: u64,
    /// The target's stats once settled.
    stats: BTreeMap<String, u64>,
    /// The slowest client request.
    slowest: Duration,
    /// From the first request sent to the last response read.
    burst: Duration,
    /// The most copies in flight at once.
    peak_in_flight: u64,
}

/// Runs `count` GETs through an Envoy with `plugin`, over `connections` connections at
/// once, against a primary answering `shape`; waits until every request has been
/// answered (each with the primary's whole catalogue) and `settled` has returned (the
/// peak is sampled until then); returns what was measured.
fn run(
    label: &str,
    plugin: &str,
    count: usize,
    connections: usize,
    shape: Shape,
    settled: impl FnOnce(&Envoy),
) -> Run {
    let (primary, mirror) = upstreams(shape);
    let envoy = Envoy::start(EnvoyConfig::new(plugin, primary.addr(), mirror.addr()));
    let requests = gets(label, count);
    let before = envoy.memory();
    let module_before = module_size(&envoy.wasm_memories());
    let memory = PeakMemory::start(envoy.pid());
    let in_flight = PeakInFlight::start(envoy.admin());
    let start = Instant::now();
    let responses = crate::send_all(envoy.listener(), &requests, connections, 1);
    let burst = responses.iter().map(|r| r.finished).max().unwrap() - start;
    let slowest = responses.iter().map(|r| r.elapsed).max().unwrap();
    let length = catalogue(shape.bytes, None).len();
    for (request, response) in requests.iter().zip(&responses) {
        assert_eq!(response.body.len(), length, "{}", request.target);
    }
    wait_until(SETTLE, "every client request to end in Envoy", || {
        envoy.stat("http.ingress.downstream_rq_active") == 0
    });
    settled(&envoy);
    let peak_in_flight = in_flight.stop();
    let peak = memory.stop();
    let growth = peak.total().saturating_sub(before.total());
    let module_growth = module_size(&envoy.wasm_memories()).saturating_sub(module_before);
    let stats = envoy.mirror_stats(TARGET);
    eprintln!(
        "{label}: Envoy grew {:.1} MiB (peak RSS {:.1} MiB + sockets {:.1} MiB; before {:.1} + {:.1}); \
         its wasm VMs' memory grew {:.2} MiB; {count} requests in {burst:?}, slowest {slowest:?}; \
         at most {peak_in_flight} copies in flight; {:?}",
        mib(growth),
        mib(peak.rss),
        mib(peak.sockets),
        mib(before.rss),
        mib(before.sockets),
        mib(module_growth),
        nonzero(&stats),
    );
    Run {
        label: label.to_string(),
        envoy,
        _primary: primary,
        mirror,
        growth,
        module_growth,
        stats,
        slowest,
        burst,
        peak_in_flight,
    }
}

/// The stats that are not 0 (for the figures printed).
fn nonzero(stats: &BTreeMap<String, u64>) -> BTreeMap<&str, u64> {
    stats
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.as_str(), *v))
        .collect()
}

/// The size of the wasm VMs' memories together.
fn module_size(memories: &[WasmMemory]) -> u64 {
    memories.iter().map(|m| m.size).sum()
}

fn get(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

/// The sum of the target's `compare.<result>` counters.
fn compared(stats: &BTreeMap<String, u64>) -> u64 {
    CompareResult::ALL
        .iter()
        .map(|r| get(stats, &format!("compare.{}", r.name())))
        .sum()
}

/// The comparisons that ran (both catalogues held and parsed): `match` and `body`.
fn full(stats: &BTreeMap<String, u64>) -> u64 {
    get(stats, "compare.match") + get(stats, "compare.body")
}

/// Waits until every copy of the target has ended and been compared, then asserts the
/// identities: `sampled` is the sum of where sampled requests end (`dispatched` and the
/// skips), `dispatched` the sum of the `responses_*` and of the `compare.*`, `in_flight`
/// 0; and that every request was sampled, every copy answered 2xx, and compared as it
/// should be: equal catalogues `match`, changed ones `body` at `/items/*/price`, or
/// `skipped_budget`, nothing else. Returns the stats.
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
    let dispatched = get(&stats, "dispatched");
    assert_eq!(
        dispatched,
        compared(&stats),
        "dispatched is the sum of the compare.* counters: {stats:?}"
    );
    assert_eq!(get(&stats, "requests"), get(&stats, "sampled"), "{stats:?}");
    assert_eq!(get(&stats, "responses_2xx"), dispatched, "{stats:?}");
    assert_eq!(
        full(&stats) + get(&stats, "compare.skipped_budget"),
        dispatched,
        "{stats:?}"
    );
    assert_eq!(
        get(&stats, "compare.path./items/*/price"),
        get(&stats, "compare.body"),
        "{stats:?}"
    );
    stats
}

#[test]
fn comparisons_piling_up_stay_within_the_memory_bound_and_never_slow_the_client() {
    // As many GETs as the default max_in_flight, sent well within the mirror's first
    // second: every copy's headers and room for its answer (64 KiB) and every catalogue
    // held (60 KiB) wait together, more than max_in_flight_bytes holds.
    const COUNT: usize = 1000;
    const CONNECTIONS: usize = 16;
    let unsampled = run(
        "unsampled",
        &plugin(0.0, Some(json!({})), json!({})),
        COUNT,
        CONNECTIONS,
        AT_ONCE,
        |_| {},
    );
    let copied = run(
        "copied, not compared",
        &plugin(100.0, None, json!({})),
        COUNT,
        CONNECTIONS,
        AT_ONCE,
        |envoy| {
            assert_accounted(envoy, TARGET);
        },
    );
    let comparing = run(
        "copied and compared",
        &plugin(100.0, Some(json!({})), json!({})),
        COUNT,
        CONNECTIONS,
        AT_ONCE,
        |envoy| {
            assert_compared(envoy);
        },
    );
    let stats = &comparing.stats;
    let held = full(stats) * catalogue(BODY_BYTES, None).len() as u64;
    eprintln!(
        "over unsampled: copied {:.1} MiB, compared {:.1} MiB (bound {:.1} MiB); \
         wasm VMs: copied {:.2} MiB, compared {:.2} MiB for {} catalogues held ({:.2} MiB)",
        mib(copied.growth.saturating_sub(unsampled.growth)),
        mib(comparing.growth.saturating_sub(unsampled.growth)),
        mib(BOUND),
        mib(copied.module_growth),
        mib(comparing.module_growth),
        full(stats),
        mib(held)
    );

    // The load is what it should be: hundreds of comparisons waiting at once, past what
    // max_in_flight_bytes holds, the mirror's catalogues both equal and not.
    assert!(
        comparing.peak_in_flight >= 300,
        "only {} copies in flight at once",
        comparing.peak_in_flight
    );
    assert!(get(stats, "skipped_in_flight") > 0, "{stats:?}");
    assert!(
        get(stats, "compare.match") > 0 && get(stats, "compare.body") > 0,
        "{stats:?}"
    );

    // (1) Within the bound over the same load unsampled.
    let over = comparing.growth.saturating_sub(unsampled.growth);
    assert!(
        over <= BOUND,
        "Envoy grew {:.1} MiB comparing, {:.1} MiB unsampled: {:.1} MiB more, past the bound of {:.1} MiB",
        mib(comparing.growth),
        mib(unsampled.growth),
        mib(over),
        mib(BOUND)
    );
    // The filter's own part of it: the catalogues held, each once and at its size
    // (those held at once, inside max_in_flight_bytes; when the load is slow enough for
    // the first comparisons to end during it, fewer than all), and one parse at a time.
    let at_once = held.min(MAX_IN_FLIGHT_BYTES);
    assert!(
        comparing.module_growth <= at_once + PARSE,
        "the wasm VMs grew {:.2} MiB for {:.2} MiB of catalogues held",
        mib(comparing.module_growth),
        mib(at_once)
    );

    // (2) The counters add up (asserted once settled, by `assert_compared`): every
    // request sampled, each dispatched (and compared) or skipped for want of room.
    assert_eq!(get(stats, "sampled"), COUNT as u64, "{stats:?}");
    assert_eq!(
        get(stats, "sampled"),
        get(stats, "dispatched") + get(stats, "skipped_in_flight"),
        "{stats:?}"
    );
    assert_eq!(
        comparing.mirror.seen().len() as u64,
        get(stats, "dispatched"),
        "the mirror got every copy dispatched"
    );
    assert_eq!(get(&copied.stats, "sampled"), COUNT as u64);

    // (4) No client waited for the mirror.
    for run in [&unsampled, &copied, &comparing] {
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
    // generous guess) and room for its answer; then the primary's catalogue. The budget
    // holds `FULL` whole comparisons, one more copy and half a catalogue: so, for
    // requests one after the other, `FULL` comparisons, then one copy whose catalogue
    // does not fit (`skipped_budget`, the copy sent all the same), then no more copies.
    // (A guess off by δ a copy moves the budget by (FULL + 1) δ, far less than half a
    // catalogue.)
    const HEADERS: u64 = 512;
    const FULL: u64 = 16;
    let body = catalogue(BODY_BYTES, None).len() as u64;
    let copy = HEADERS + MAX_ANSWER_BYTES;
    let budget = FULL * (copy + body) + copy + body / 2;
    let top = json!({ "max_in_flight_bytes": budget });

    // A burst on 8 connections at once, all of it before the mirror's first answer
    // (a few tens of milliseconds against a second):
    // however the requests interleave, a catalogue meets the budget before a copy does
    // (while at most FULL catalogues fit, so does every copy), and at most FULL
    // catalogues are held.
    const COUNT: usize = 100;
    let burst = run(
        "small max_in_flight_bytes, burst",
        &plugin(100.0, Some(json!({})), top),
        COUNT,
        8,
        AT_ONCE,
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
    let skipped_budget = get(stats, "compare.skipped_budget");
    assert!(skipped_budget > 0, "{stats:?}");
    assert!(full(stats) > 0 && full(stats) <= FULL, "{stats:?}");
    // (3) The skipped comparisons' copies were sent, and answered, all the same.
    let dispatched = full(stats) + skipped_budget;
    assert_eq!(get(stats, "dispatched"), dispatched, "{stats:?}");
    assert_eq!(get(stats, "responses_2xx"), dispatched, "{stats:?}");
    assert_eq!(
        burst.mirror.seen().len() as u64,
        dispatched,
        "the mirror got every copy, also those not compared"
    );
    // (2)
    assert_eq!(get(stats, "sampled"), COUNT as u64, "{stats:?}");
    assert_eq!(
        get(stats, "sampled"),
        dispatched + get(stats, "skipped_in_flight"),
        "{stats:?}"
    );
    // (4)
    assert!(
        burst.slowest < CLIENT_LIMIT,
        "a client request took {:?}",
        burst.slowest
    );

    // Every byte came back: requests one after the other (all within the mirror's
    // first second) fill the budget exactly as it was made for, twice.
    for round in 0..2 {
        let before = burst.envoy.mirror_stats(TARGET);
        let start = Instant::now();
        let mut connection = Connection::open(burst.envoy.listener());
        for request in gets(&format!("later-{round}"), FULL as usize + 2) {
            let response = connection.send(&request);
            assert_eq!(response.status, 200, "{}", request.target);
            assert!(
                response.elapsed < CLIENT_LIMIT,
                "{}: {:?}",
                request.target,
                response.elapsed
            );
        }
        let took = start.elapsed();
        assert!(took < mirror_delay(0), "the requests took {took:?}");
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
        eprintln!(
            "one after the other, round {round}: {} compared; {grew:?}",
            full(&after) - full(&before)
        );
        assert_eq!(
            full(&after) - full(&before),
            FULL,
            "round {round}: {after:?}"
        );
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

/// The memory rule for a primary body that Envoy passes on in several chunks: it is
/// held at its reservation (its declared length), in a buffer allocated at that size at
/// its headers, never grown by doubling as chunks arrive: a catalogue of 33.5 KiB in
/// pieces of 8 KiB takes what the same catalogue written at once takes.
#[test]
fn primary_bodies_in_several_chunks_are_held_at_their_reservation() {
    const COUNT: usize = 400;
    const BYTES: usize = 33 * 1024 + 512;
    let held = |run: &Run| full(&run.stats) * catalogue(BYTES, None).len() as u64;
    for pace in [None, Some((8 * 1024, Duration::from_millis(3)))] {
        let label = if pace.is_some() {
            "catalogues in pieces of 8 KiB"
        } else {
            "catalogues at once"
        };
        let run = run(
            label,
            &plugin(100.0, Some(json!({})), json!({})),
            COUNT,
            16,
            Shape { bytes: BYTES, pace },
            |envoy| {
                assert_compared(envoy);
            },
        );
        assert_eq!(full(&run.stats), COUNT as u64, "every catalogue held");
        assert!(
            run.module_growth <= held(&run) + PARSE,
            "{label}: the wasm VMs grew {:.2} MiB for {:.2} MiB of catalogues held (and counted in max_in_flight_bytes)",
            mib(run.module_growth),
            mib(held(&run))
        );
    }
}
