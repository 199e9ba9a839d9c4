//! Fire and forget: a slow mirror adds no latency to the client's requests, and the
//! copies still complete, and are counted, after the client's requests are long done.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{send, wait_for, Connection, Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_counters, pattern, send_all, wait_settled, SETTLE};

const MIRROR_DELAY: Duration = Duration::from_millis(1500);
/// Far below the mirror's delay, far above a loopback round trip through Envoy.
const FAST: Duration = Duration::from_millis(500);

#[test]
fn slow_mirror_adds_no_latency_and_its_late_answers_are_counted() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start_delayed("mirror", MIRROR_DELAY);
    let plugin = json!({"targets": [{"name": "slow", "cluster": "mirror", "percent": 100}]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));

    let requests = [
        Request::get("/slow/0"),
        Request::post("/slow/1", pattern(10_000, 1)),
        Request::get("/slow/2?q=1"),
        Request::post("/slow/3", Vec::new()).chunked(&pattern(50_000, 3), 8192),
        // A client that hangs up as soon as it has its answer.
        Request::get("/slow/4").header("connection", "close"),
    ];
    let n = requests.len();
    let mut responses = Vec::new();
    let mut connection = Connection::open(envoy.listener());
    for request in &requests[..n - 1] {
        responses.push(connection.send(request));
    }
    responses.push(send(envoy.listener(), &requests[n - 1]));
    drop(connection);
    for (request, response) in requests.iter().zip(&responses) {
        assert_eq!(response.status, 200, "{}", request.target);
        assert!(
            response.elapsed < FAST,
            "{} took {:?} with a mirror answering after {MIRROR_DELAY:?}",
            request.target,
            response.elapsed
        );
    }
    let clients_done = responses.iter().map(|r| r.finished).max().unwrap();

    // Every copy arrives while the mirror sits on it.
    wait_for(SETTLE, "every copy to reach the mirror", || {
        let count = mirror.count();
        if count >= n {
            Ok(())
        } else {
            Err(format!("{count} of {n}"))
        }
    });
    // All in flight now, unless this test was slower than the mirror's delay: the gauge
    // is checked only if the mirror had begun no answer before nor after reading it.
    let none_answered = || mirror.received().iter().all(|c| c.answered.is_none());
    let before = none_answered();
    let gauge = envoy.mirror_stat("slow", "in_flight");
    if before && none_answered() {
        assert_eq!(
            gauge, n as u64,
            "in_flight while the mirror holds every copy"
        );
    } else {
        eprintln!("note: the mirror answered before in_flight could be read; not checked");
    }

    wait_settled(&envoy, "slow");
    assert_counters(
        &envoy,
        "slow",
        &[
            ("requests", n as u64),
            ("sampled", n as u64),
            ("dispatched", n as u64),
            ("responses_2xx", n as u64),
        ],
    );
    let copies = mirror.received();
    assert_eq!(copies.len(), n);
    for copy in &copies {
        let answered = copy
            .answered
            .unwrap_or_else(|| panic!("copy {} never answered", copy.target));
        assert!(answered >= copy.completed + MIRROR_DELAY, "{}", copy.target);
        assert!(
            answered > clients_done,
            "copy {} answered before the clients were done",
            copy.target
        );
    }
    let mut paths: Vec<&str> = copies.iter().map(|c| c.target.as_str()).collect();
    paths.sort_unstable();
    let mut sent: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    sent.sort_unstable();
    assert_eq!(paths, sent);
}

/// A port on 127.0.0.1 where nothing listens: port 1, which no test binds (the kernel
/// hands out ports from the ephemeral range for port 0), checked to refuse connections.
/// (A port bound and released again could be handed to a test running in parallel.)
fn closed_port() -> SocketAddr {
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| e.kind() == ErrorKind::ConnectionRefused);
    assert_eq!(refused.err(), Some(true), "something listens on {addr}");
    addr
}

#[test]
fn broken_mirrors_add_no_error_and_each_copy_end_is_counted_by_status_class() {
    let primary = Upstream::start("primary");
    let unavailable = Upstream::start("unavailable");
    unavailable.set_status(503);
    let not_found = Upstream::start("not-found");
    not_found.set_status(404);
    let redirect = Upstream::start("redirect");
    redirect.set_status(302);
    let late = Upstream::start_delayed("late", Duration::from_secs(3));
    // A mirror whose cluster admits one copy at a time: Envoy answers the others itself.
    let tight = Upstream::start_delayed("tight", Duration::from_millis(300));
    let plugin = json!({"targets": [
        {"name": "tight", "cluster": "tight", "percent": 100},
        {"name": "unavailable", "cluster": "mirror", "percent": 100},
        {"name": "not-found", "cluster": "not_found", "percent": 100},
        {"name": "redirect", "cluster": "redirect", "percent": 100},
        {"name": "dead", "cluster": "dead", "percent": 100},
        {"name": "late", "cluster": "late", "percent": 100, "timeout_ms": 200},
        {"name": "nowhere", "cluster": "no_such_cluster", "percent": 100},
    ]});
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), unavailable.addr())
            .cluster("not_found", not_found.addr())
            .cluster("redirect", redirect.addr())
            .cluster("dead", closed_port())
            .cluster("late", late.addr())
            .cluster("tight", tight.addr())
            .circuit_breaker("tight", 1),
    );
    // Bodiless, with a body, chunked; over two keep-alive connections.
    let requests: Vec<Request> = (0..9u64)
        .map(|i| {
            let path = format!("/broken/{i}");
            match i % 3 {
                0 => Request::get(&path),
                1 => Request::post(&path, pattern(100, i)),
                _ => Request::new("PUT", &path).chunked(&pattern(3000, i), 1000),
            }
        })
        .collect();
    let n = requests.len() as u64;
    // Every client request a 200 from the primary, fast.
    for (request, response) in requests
        .iter()
        .zip(send_all(envoy.listener(), &requests, 1, 2))
    {
        assert!(
            response.elapsed < FAST,
            "{} took {:?}",
            request.target,
            response.elapsed
        );
    }

    let ended = |class: &'static str| {
        vec![
            ("requests", n),
            ("sampled", n),
            ("dispatched", n),
            (class, n),
        ]
    };
    let expected: [(&str, Vec<(&str, u64)>); 6] = [
        ("unavailable", ended("responses_5xx")),
        ("not-found", ended("responses_4xx")),
        ("redirect", ended("responses_3xx")),
        // Envoy's own 503 (connection refused) and 504 (past timeout_ms).
        ("dead", ended("responses_5xx")),
        ("late", ended("responses_5xx")),
        // Envoy refuses a call to an unknown cluster.
        (
            "nowhere",
            vec![("requests", n), ("sampled", n), ("dispatch_failed", n)],
        ),
    ];
    for (target, counters) in &expected {
        wait_settled(&envoy, target);
        assert_counters(&envoy, target, counters);
    }
    // Envoy's own answers, told apart by the mirror cluster's stats (as docs/metrics.md says):
    // a refused connection, a copy past timeout_ms, a copy past the circuit breakers.
    let cluster = |name: &str, stat: &str| envoy.stat(&format!("cluster.{name}.{stat}"));
    assert_eq!(cluster("dead", "upstream_cx_connect_fail"), n);
    assert_eq!(cluster("late", "upstream_rq_timeout"), n);
    // Past the circuit breakers Envoy refuses the call outright: dispatch_failed.
    let tight_stats = wait_settled(&envoy, "tight");
    let overflow = cluster("tight", "upstream_rq_pending_overflow");
    assert!(overflow > 0, "no copy overflowed the circuit breakers");
    assert_eq!(tight_stats["dispatch_failed"], overflow, "{tight_stats:?}");
    assert_eq!(tight_stats["responses_5xx"], 0, "{tight_stats:?}");
    assert_eq!(
        tight_stats["responses_2xx"] + overflow,
        n,
        "{tight_stats:?}"
    );
    assert_eq!(tight.count() as u64, n - overflow);
    for name in ["mirror", "not_found", "redirect"] {
        assert_eq!(cluster(name, "upstream_rq_pending_overflow"), 0, "{name}");
        assert_eq!(cluster(name, "upstream_rq_timeout"), 0, "{name}");
    }
    for upstream in [&unavailable, &not_found, &redirect, &late] {
        assert_eq!(upstream.count() as u64, n, "copies at {}", upstream.name());
    }
    assert_eq!(primary.count() as u64, n);

    // Failures are logged, at most once a minute per target and reason: one line each
    // for nine failed copies, naming what happened.
    let log = envoy.log();
    for (target, detail) in [
        ("unavailable", "503"),
        ("dead", "503"),
        ("late", "504"),
        ("nowhere", "no_such_cluster\" (status 2: unknown cluster"),
        ("tight", "circuit breakers are full"),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(&format!("traffic-mirror: target {target}: ")))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "log lines for {target}:\n{}",
            lines.join("\n")
        );
        assert!(lines[0].contains(detail), "{}", lines[0]);
    }
}

#[test]
fn max_in_flight_drops_copies_past_the_limit_without_queueing() {
    let primary = Upstream::start("primary");
    // A mirror that answers after 1 s holds its slots that long.
    let held = Duration::from_secs(1);
    let mirror = Upstream::start_delayed("mirror", held);
    let plugin = json!({"targets": [
        {"name": "bounded", "cluster": "mirror", "percent": 100, "max_in_flight": 2},
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    // Sent one after the other well within the mirror's delay: the first two copies
    // hold both slots, the other six (a body among them) find none.
    let requests: Vec<Request> = (0..8)
        .map(|i| match i {
            5 => Request::post("/bounded/5", pattern(5000, 5)),
            _ => Request::get(&format!("/bounded/{i}")),
        })
        .collect();
    let started = Instant::now();
    // Each one a 200 from the primary...
    let responses = send_all(envoy.listener(), &requests, 1, 1);
    let elapsed = started.elapsed();
    // ... and fast: nothing waits for a slot or for the mirror.
    for (request, response) in requests.iter().zip(&responses) {
        assert!(
            response.elapsed < FAST,
            "{} took {:?} with a mirror answering after {held:?}",
            request.target,
            response.elapsed
        );
    }
    assert!(elapsed < FAST, "sending took {elapsed:?}");
    let clients_done = responses.iter().map(|r| r.finished).max().unwrap();

    // Both slots taken while the mirror sits on the two copies (checked only if the
    // mirror had begun no answer before nor after reading the gauge, as above).
    let none_answered = || mirror.received().iter().all(|c| c.answered.is_none());
    let before = none_answered();
    let gauge = envoy.mirror_stat("bounded", "in_flight");
    if before && none_answered() {
        assert_eq!(gauge, 2, "in_flight while the mirror holds both copies");
    } else {
        eprintln!("note: the mirror answered before in_flight could be read; not checked");
    }

    // Exact counters once the answers came, in_flight back to 0.
    wait_settled(&envoy, "bounded");
    assert_counters(
        &envoy,
        "bounded",
        &[
            ("requests", 8),
            ("sampled", 8),
            ("dispatched", 2),
            ("skipped_in_flight", 6),
            ("responses_2xx", 2),
        ],
    );
    // The first two, answered a second later, long after the clients were done.
    let copies = mirror.received();
    let mut paths: Vec<&str> = copies.iter().map(|c| c.target.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/bounded/0", "/bounded/1"]);
    for copy in &copies {
        let answered = copy.answered.unwrap();
        assert!(answered >= copy.completed + held, "{}", copy.target);
        assert!(answered > clients_done, "{}", copy.target);
    }

    // The slots are free again once the answers came.
    mirror.set_delay(Duration::ZERO);
    send_all(envoy.listener(), &[Request::get("/bounded/after")], 1, 1);
    wait_settled(&envoy, "bounded");
    assert_counters(
        &envoy,
        "bounded",
        &[
            ("requests", 9),
            ("sampled", 9),
            ("dispatched", 3),
            ("skipped_in_flight", 6),
            ("responses_2xx", 3),
        ],
    );
    assert_eq!(mirror.received()[2].target, "/bounded/after");
}

#[test]
fn max_rps_drops_copies_once_the_bucket_is_empty() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    // One token, refilled every 10 s: the first copy goes, the rest of a quick burst not.
    let plugin = json!({"targets": [
        {"name": "limited", "cluster": "mirror", "percent": 100, "max_rps": 0.1},
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let requests: Vec<Request> = (0..10)
        .map(|i| Request::get(&format!("/limited/{i}")))
        .collect();
    let started = Instant::now();
    send_all(envoy.listener(), &requests, 1, 1);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "sending took {elapsed:?}");
    wait_settled(&envoy, "limited");
    assert_counters(
        &envoy,
        "limited",
        &[
            ("requests", 10),
            ("sampled", 10),
            ("dispatched", 1),
            ("skipped_rate_limited", 9),
            ("responses_2xx", 1),
        ],
    );
    let copies = mirror.received();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].target, "/limited/0");
}
