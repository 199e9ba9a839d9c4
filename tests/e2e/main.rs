//! End-to-end tests: the built module (`target/wasm32-wasip1/release/traffic_mirror.wasm`,
//! built by `cargo build --target wasm32-wasip1 --release`) in a real Envoy (`$ENVOY_BIN`
//! or the pinned `.venv/bin/envoy`) against recording upstreams, all on 127.0.0.1.
//!
//! A missing Envoy or module fails every test here; nothing is skipped.
// Tests may unwrap, panic and index (the crate denies these outside tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../support/mod.rs"]
mod support;

mod bodies;
mod budget;
mod command;
mod compare;
mod compare_load;
mod copies;
mod failure_policy;
mod fire_and_forget;
mod grpc;
mod hostile;
mod hostile_mirrors;
mod lanes;
mod loop_guard;
mod rules;
mod rules_targets;
mod sampling;
mod swimlanes;
mod updates;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::{wait_for, Connection, Envoy, Request, Response};
use traffic_mirror_core::stats::{Counter, IN_FLIGHT};

/// Deadline for copies to arrive and their answers to be counted (normally a few ms).
pub const SETTLE: Duration = Duration::from_secs(20);

/// Waits until every copy `target` decided on has been dispatched (or refused, or
/// dropped by a limit) and every copy dispatched has ended: `sampled` equals
/// `dispatched` plus the post-sampling skips, `in_flight` is 0, and the `responses_*`
/// add up to `dispatched`. Call it once every client request has been answered: then
/// `requests` and `sampled` are final (the filter counts them at the request's
/// headers). Returns the target's stats then.
pub fn wait_settled(envoy: &Envoy, target: &str) -> BTreeMap<String, u64> {
    wait_for(
        SETTLE,
        &format!("every copy of target {target} to be sent and to end"),
        || {
            let stats = envoy.mirror_stats(target);
            let get = |name: &str| stats.get(name).copied().unwrap_or(0);
            let decided: u64 = Counter::SAMPLED_OUTCOMES
                .iter()
                .map(|c| get(c.name()))
                .sum();
            let ended: u64 = Counter::RESPONSES.iter().map(|c| get(c.name())).sum();
            if decided >= get("sampled") && get("in_flight") == 0 && ended >= get("dispatched") {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        },
    )
}

/// Waits until a target has settled (see [`wait_settled`]), then asserts the
/// specification's identities exactly: `sampled` is the sum of where sampled requests
/// end, `dispatched` the sum of the `responses_*`, `in_flight` is 0. Returns the stats.
pub fn assert_accounted(envoy: &Envoy, target: &str) -> BTreeMap<String, u64> {
    let stats = wait_settled(envoy, target);
    let get = |name: &str| stats.get(name).copied().unwrap_or(0);
    let outcomes: u64 = Counter::SAMPLED_OUTCOMES
        .iter()
        .map(|c| get(c.name()))
        .sum();
    let ended: u64 = Counter::RESPONSES.iter().map(|c| get(c.name())).sum();
    assert_eq!(get("sampled"), outcomes, "target {target}: {stats:?}");
    assert_eq!(get("dispatched"), ended, "target {target}: {stats:?}");
    assert_eq!(get(IN_FLIGHT), 0, "target {target}: {stats:?}");
    stats
}

/// Asserts a target's stats exactly: the counters named here have these values, every
/// other counter and the `in_flight` gauge are 0.
pub fn assert_counters(envoy: &Envoy, target: &str, expected: &[(&str, u64)]) {
    let mut want: BTreeMap<String, u64> = Counter::ALL
        .iter()
        .map(|c| c.name())
        .chain([IN_FLIGHT])
        .map(|name| (name.to_string(), 0))
        .collect();
    for (name, value) in expected {
        assert!(want.contains_key(*name), "no such stat: {name}");
        want.insert(name.to_string(), *value);
    }
    assert_eq!(envoy.mirror_stats(target), want, "stats of target {target}");
}

/// Sends every request through `threads` client threads, each round-robin over
/// `connections` keep-alive connections of its own; returns the responses in request
/// order, after checking that every one is a 200 from the primary.
pub fn send_all(
    addr: SocketAddr,
    requests: &[Request],
    threads: usize,
    connections: usize,
) -> Vec<Response> {
    let mut responses: Vec<Option<Response>> = vec![None; requests.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut open: Vec<Connection> =
                        (0..connections).map(|_| Connection::open(addr)).collect();
                    let mut out = Vec::new();
                    for (n, i) in (t..requests.len()).step_by(threads).enumerate() {
                        let connection = &mut open[n % connections];
                        out.push((i, connection.send(&requests[i])));
                    }
                    out
                })
            })
            .collect();
        for handle in handles {
            for (i, response) in handle.join().unwrap() {
                responses[i] = Some(response);
            }
        }
    });
    responses
        .into_iter()
        .zip(requests)
        .map(|(response, request)| {
            let response = response.unwrap();
            let upstream = response.header("x-upstream").map(String::from_utf8_lossy);
            assert_eq!(
                (response.status, upstream.as_deref()),
                (200, Some("primary")),
                "{} {}: {}",
                request.method,
                request.target,
                response.text()
            );
            response
        })
        .collect()
}

/// Deterministic pseudo-random bytes (so that a reordered or corrupted body shows).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}
