//! Sticky release lanes in a real Envoy that routes on the lane header to three
//! upstreams: every user's requests reach the lane the normative rule gives (computed
//! here on its own), on both workers and after a restart; growing the last lane only
//! moves default users into it; a client-sent lane is replaced, or kept under
//! `keep_incoming`; a request without the key gets the default lane, or no header; a
//! target matching the lane header mirrors exactly that lane's users; the stats count it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{json, Value};
use xxhash_rust::xxh64::xxh64;

use crate::sampling::keys;
use crate::support::envoy::istio_json;
use crate::support::{Connection, Envoy, EnvoyConfig, Received, Request, Upstream};
use crate::{assert_counters, wait_settled};

const HEADER: &str = "x-lane";
pub(crate) const SALT: &str = "checkout-2026-11";

/// The normative assignment (docs/specification.md, "Lane assignment"), written out on its own: the lane of
/// `key` under `split`, or `default`.
pub(crate) fn rule_lane<'a>(
    key: &str,
    split: &[(&'a str, f64)],
    default: Option<&'a str>,
) -> Option<&'a str> {
    let bucket = xxh64(format!("{SALT}:{key}").as_bytes(), 0) % 1_000_000;
    let t = |x: f64| (x * 10_000.0 + 0.5).floor() as u64;
    let mut sum = 0.0;
    for &(lane, percent) in split {
        let start = t(sum);
        sum += percent;
        if (start..t(sum)).contains(&bucket) {
            return Some(lane);
        }
    }
    default
}

fn lanes_config(split: &[(&str, f64)], extra: Value) -> Value {
    let split: Vec<Value> = split
        .iter()
        .map(|(lane, percent)| json!({"lane": lane, "percent": percent}))
        .collect();
    let mut lanes = json!({"header": HEADER, "sample_by": {"header": "x-user-id"},
                           "salt": SALT, "split": split, "default": "stable"});
    if let (Some(lanes), Some(extra)) = (lanes.as_object_mut(), extra.as_object()) {
        lanes.extend(extra.clone());
    }
    lanes
}

/// The three versions: stable (the route's default, cluster `primary`), canary, beta.
pub(crate) struct Versions {
    stable: Upstream,
    canary: Upstream,
    beta: Upstream,
}

impl Versions {
    pub(crate) fn start() -> Versions {
        Versions {
            stable: Upstream::start("stable"),
            canary: Upstream::start("canary"),
            beta: Upstream::start("beta"),
        }
    }

    /// Envoy routing `x-lane: canary` and `beta` to their versions, everything else to
    /// stable, with this plugin configuration.
    pub(crate) fn envoy(&self, plugin: &str, mirror: SocketAddr) -> EnvoyConfig {
        EnvoyConfig::new(plugin, self.stable.addr(), mirror)
            .cluster("canary", self.canary.addr())
            .cluster("beta", self.beta.addr())
            .route_on(HEADER, "canary", "canary")
            .route_on(HEADER, "beta", "beta")
    }

    /// Where each request arrived (by request target), and its lane header there.
    pub(crate) fn arrivals(&self) -> BTreeMap<String, (String, Option<String>)> {
        let mut out = BTreeMap::new();
        for upstream in [&self.stable, &self.canary, &self.beta] {
            for r in upstream.received() {
                let previous = out.insert(
                    r.target.clone(),
                    (upstream.name().to_string(), r.header_str(HEADER)),
                );
                assert!(previous.is_none(), "{} arrived twice", r.target);
            }
        }
        out
    }
}

/// Sends every request through `threads` threads of `connections` keep-alive
/// connections each; every answer must be a 200.
pub(crate) fn send_spread(
    addr: SocketAddr,
    requests: &[Request],
    threads: usize,
    connections: usize,
) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let mut open: Vec<Connection> =
                    (0..connections).map(|_| Connection::open(addr)).collect();
                for (n, i) in (t..requests.len()).step_by(threads).enumerate() {
                    let response = open[n % connections].send(&requests[i]);
                    assert_eq!(
                        response.status,
                        200,
                        "{}: {}",
                        requests[i].target,
                        response.text()
                    );
                }
            });
        }
    });
}

/// The plugin's lane stats, by short name (`canary.assigned`, `unknown`, ...).
pub(crate) fn lane_stats(envoy: &Envoy) -> BTreeMap<String, u64> {
    envoy
        .stats()
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                name.strip_prefix("wasmcustom.traffic_lanes.")?.to_string(),
                value,
            ))
        })
        .collect()
}

/// Sends one request per user (tagged `/lane/<round>/<i>`) and checks that each reached
/// the version of the lane the rule gives, carrying that lane; returns the lanes.
fn round(
    envoy: &Envoy,
    versions: &Versions,
    users: &[String],
    round: &str,
    split: &[(&str, f64)],
) -> Vec<&'static str> {
    let requests: Vec<Request> = users
        .iter()
        .enumerate()
        .map(|(i, user)| Request::get(&format!("/lane/{round}/{i}")).header("x-user-id", user))
        .collect();
    send_spread(envoy.listener(), &requests, 4, 4);
    let arrivals = versions.arrivals();
    let mut lanes = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let expected = rule_lane(user, split, Some("stable")).unwrap();
        let (version, header) = &arrivals[&format!("/lane/{round}/{i}")];
        assert_eq!(
            (version.as_str(), header.as_deref()),
            (expected, Some(expected)),
            "user {user:?} in round {round}"
        );
        lanes.push(match expected {
            "canary" => "canary",
            "beta" => "beta",
            _ => "stable",
        });
    }
    lanes
}

fn counts(lanes: &[&str]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for lane in ["canary", "beta", "stable"] {
        let n = lanes.iter().filter(|l| **l == lane).count() as u64;
        out.insert(format!("{lane}.assigned"), n);
        out.insert(format!("{lane}.kept"), 0);
    }
    out
}

#[test]
fn every_user_stays_in_the_lane_the_rule_gives_on_both_workers_and_after_a_restart() {
    let versions = Versions::start();
    let users = keys(1000);
    let split = [("canary", 5.0), ("beta", 10.0)];
    let plugin = json!({"lanes": lanes_config(&split, json!({}))}).to_string();
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut envoy = Envoy::start(versions.envoy(&plugin, unused).concurrency(2));

    let first = round(&envoy, &versions, &users, "a", &split);
    // Both workers served users.
    let stats = envoy.stats();
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            stats
                .iter()
                .filter(|(name, _)| {
                    name.starts_with("listener.127.0.0.1_")
                        && name.ends_with(&format!(".worker_{w}.downstream_cx_total"))
                })
                .map(|(_, v)| *v)
                .sum()
        })
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "connections per worker: {per_worker:?}"
    );
    assert_eq!(lane_stats(&envoy), counts(&first));
    let canary = first.iter().filter(|l| **l == "canary").count();
    assert!((25..80).contains(&canary), "{canary} canary users of 1000");

    // The same users in the same lanes after a restart, and again on the same Envoy.
    envoy.restart();
    assert_eq!(round(&envoy, &versions, &users, "b", &split), first);
    assert_eq!(round(&envoy, &versions, &users, "c", &split), first);
    let mut twice = counts(&first);
    twice.values_mut().for_each(|v| *v *= 2);
    assert_eq!(lane_stats(&envoy), twice);
}

#[test]
fn growing_the_last_lane_moves_only_default_users_into_it() {
    let versions = Versions::start();
    let users = keys(1000);
    let split = [("canary", 5.0), ("beta", 10.0)];
    let plugin =
        |split: &[(&str, f64)]| istio_json(&json!({"lanes": lanes_config(split, json!({}))}));
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut envoy = Envoy::start(
        versions
            .envoy(&plugin(&split), unused)
            .ecds("shop", "lanes"),
    );
    let before = round(&envoy, &versions, &users, "before", &split);
    let grown = [("canary", 5.0), ("beta", 25.0)];
    assert!(envoy.push(&plugin(&grown)));
    let after = round(&envoy, &versions, &users, "after", &grown);
    let mut moved = 0;
    for (user, (was, now)) in users.iter().zip(before.iter().zip(&after)) {
        if was != now {
            assert_eq!((*was, *now), ("stable", "beta"), "user {user:?}");
            moved += 1;
        }
    }
    assert!((100..200).contains(&moved), "{moved} users moved into beta");
}

/// The lane header each request arrived with at the version it reached.
fn sent_with(
    envoy: &Envoy,
    versions: &Versions,
    requests: &[(&str, Request)],
) -> Vec<(String, Option<String>)> {
    let all: Vec<Request> = requests.iter().map(|(_, r)| r.clone()).collect();
    send_spread(envoy.listener(), &all, 1, 1);
    let arrivals = versions.arrivals();
    requests
        .iter()
        .map(|(_, r)| arrivals[&r.target].clone())
        .collect()
}

fn user_in(lane: &str, split: &[(&str, f64)]) -> String {
    keys(1000)
        .into_iter()
        .find(|k| rule_lane(k, split, Some("stable")) == Some(lane))
        .unwrap()
}

#[test]
fn a_client_sent_lane_is_replaced_or_kept_under_keep_incoming() {
    let split = [("canary", 5.0), ("beta", 10.0)];
    let (stable_user, canary_user) = (user_in("stable", &split), user_in("canary", &split));
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    let request = |path: &str, user: &str, lane: Option<&str>| {
        let r = Request::get(path).header("x-user-id", user);
        match lane {
            Some(lane) => r.header("X-Lane", lane),
            None => r,
        }
    };

    // The filter's assignment wins.
    let versions = Versions::start();
    let plugin = json!({"lanes": lanes_config(&split, json!({}))}).to_string();
    let envoy = Envoy::start(versions.envoy(&plugin, unused));
    let got = sent_with(
        &envoy,
        &versions,
        &[
            (
                "stable user claiming canary",
                request("/r/1", &stable_user, Some("canary")),
            ),
            (
                "canary user claiming beta",
                request("/r/2", &canary_user, Some("beta")),
            ),
        ],
    );
    let expect = |v: &str, h: &str| (v.to_string(), Some(h.to_string()));
    assert_eq!(
        got,
        [expect("stable", "stable"), expect("canary", "canary")]
    );
    assert_eq!(lane_stats(&envoy)["stable.kept"], 0);

    // keep_incoming: a non-empty incoming lane stays, and counts as kept when it is one
    // of the configured lanes.
    let versions = Versions::start();
    let plugin = json!({"lanes": lanes_config(&split, json!({"keep_incoming": true}))}).to_string();
    let envoy = Envoy::start(versions.envoy(&plugin, unused));
    let got = sent_with(
        &envoy,
        &versions,
        &[
            (
                "forced into canary",
                request("/k/1", &stable_user, Some("canary")),
            ),
            (
                "forced into beta",
                request("/k/2", &canary_user, Some("beta")),
            ),
            (
                "an unknown lane",
                request("/k/3", &canary_user, Some("experimental")),
            ),
            ("an empty lane", request("/k/4", &canary_user, Some(""))),
            ("no lane", request("/k/5", &stable_user, None)),
        ],
    );
    assert_eq!(
        got,
        [
            expect("canary", "canary"),
            expect("beta", "beta"),
            expect("stable", "experimental"),
            expect("canary", "canary"),
            expect("stable", "stable"),
        ]
    );
    let stats = lane_stats(&envoy);
    assert_eq!(
        (
            stats["canary.kept"],
            stats["beta.kept"],
            stats["stable.kept"]
        ),
        (1, 1, 0)
    );
    assert_eq!(
        (
            stats["canary.assigned"],
            stats["beta.assigned"],
            stats["stable.assigned"]
        ),
        (1, 0, 1)
    );
}

#[test]
fn a_request_without_the_key_gets_the_default_lane_or_no_header() {
    let split = [("canary", 50.0)];
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    let anonymous = |path: &str| Request::get(path).header("x-lane", "canary");
    for (default, expected) in [(json!("stable"), Some("stable")), (Value::Null, None)] {
        let versions = Versions::start();
        let lanes = lanes_config(&split, json!({"default": default}));
        let envoy = Envoy::start(versions.envoy(&json!({ "lanes": lanes }).to_string(), unused));
        let got = sent_with(&envoy, &versions, &[("no key", anonymous("/anonymous"))]);
        // The client's lane is gone either way: the request takes the default route.
        assert_eq!(
            got,
            [("stable".to_string(), expected.map(String::from))],
            "default {default}"
        );
        let stats = lane_stats(&envoy);
        assert_eq!(stats.get("stable.assigned").copied(), expected.map(|_| 1));
        assert_eq!(stats["canary.assigned"], 0);
    }
}

#[test]
fn a_target_matching_the_lane_header_mirrors_exactly_that_lanes_users() {
    let versions = Versions::start();
    let mirror = Upstream::start("mirror");
    let split = [("canary", 10.0), ("beta", 10.0)];
    let plugin = json!({
        "lanes": lanes_config(&split, json!({})),
        "targets": [{"name": "canary-shadow", "cluster": "mirror", "percent": 100,
                     "match": {"headers": {HEADER: "canary"}}}]
    })
    .to_string();
    let envoy = Envoy::start(versions.envoy(&plugin, mirror.addr()));
    let users = keys(300);
    let lanes = round(&envoy, &versions, &users, "m", &split);
    let canary: Vec<String> = lanes
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == "canary")
        .map(|(i, _)| format!("/lane/m/{i}"))
        .collect();
    assert!(!canary.is_empty());
    let n = canary.len() as u64;
    wait_settled(&envoy, "canary-shadow");
    assert_counters(
        &envoy,
        "canary-shadow",
        &[
            ("requests", n),
            ("sampled", n),
            ("dispatched", n),
            ("responses_2xx", n),
        ],
    );
    let copies: Vec<Received> = mirror.received();
    let mut copied: Vec<String> = copies.iter().map(|c| c.target.clone()).collect();
    copied.sort();
    let mut expected = canary.clone();
    expected.sort();
    assert_eq!(copied, expected);
    for copy in &copies {
        assert_eq!(
            copy.header_str(HEADER).as_deref(),
            Some("canary"),
            "{}",
            copy.target
        );
    }
}
