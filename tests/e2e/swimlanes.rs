//! Swim lanes across services in real Envoys: an edge that assigns lanes and writes them
//! into W3C `baggage`, chained to a hop that follows the baggage lane, as a service whose
//! application forwards what it received (OpenTelemetry does, by default) would chain
//! them. Every request reaches the version of its lane at the hop, carrying one merged
//! `baggage` field with every other entry kept; a forged lane (header or baggage entry)
//! is never trusted. At a hop alone: baggage spread over several fields, a stale or
//! forged header, an unknown lane and a percent-encoded one; Envoy selects the route
//! again after the filter sets or removes the header (the route the incoming header
//! would pick is the wrong one in each case). The counters add up on both.

use std::collections::BTreeMap;

use serde_json::json;

use crate::lanes::{lane_stats, rule_lane};
use crate::sampling::keys;
use crate::support::{send, Envoy, EnvoyConfig, Received, Request, Upstream};

const LANE: &str = "feature-17";
const SPLIT: [(&str, f64); 1] = [(LANE, 30.0)];

/// An assigning filter that writes the lane into baggage; no default lane.
fn edge_plugin() -> String {
    json!({"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"},
                     "salt": crate::lanes::SALT,
                     "split": [{"lane": LANE, "percent": SPLIT[0].1}], "baggage": "lane"}})
    .to_string()
}

/// A hop following the baggage lane `feature-17`.
fn hop_plugin() -> String {
    json!({"lanes": {"header": "x-lane", "baggage": "lane", "follow": [LANE]}}).to_string()
}

/// The service behind the hop: its main instance (the default route) and its lane
/// instance (`x-lane: feature-17`), and the hop's Envoy in front of them.
struct Hop {
    main: Upstream,
    lane: Upstream,
    envoy: Envoy,
}

impl Hop {
    fn start() -> Hop {
        let (main, lane) = (Upstream::start("main"), Upstream::start(LANE));
        let unused = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let envoy = Envoy::start(
            EnvoyConfig::new(&hop_plugin(), main.addr(), unused)
                .cluster("lane", lane.addr())
                .route_on("x-lane", LANE, "lane"),
        );
        Hop { main, lane, envoy }
    }

    /// Where each request arrived, by request target: the instance, and the request.
    fn arrivals(&self) -> BTreeMap<String, (&'static str, Received)> {
        let mut out = BTreeMap::new();
        for (name, upstream) in [("main", &self.main), (LANE, &self.lane)] {
            for r in upstream.received() {
                assert!(out.insert(r.target.clone(), (name, r)).is_none());
            }
        }
        out
    }

    fn lane_stats(&self) -> BTreeMap<String, u64> {
        lane_stats(&self.envoy)
    }
}

#[test]
fn the_edge_writes_the_lane_into_baggage_and_the_next_hop_routes_every_user_by_it() {
    let hop = Hop::start();
    // The edge's only upstream is the hop: the service in between forwards what it got.
    let unused = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let edge = Envoy::start(EnvoyConfig::new(
        &edge_plugin(),
        hop.envoy.listener(),
        unused,
    ));
    let users = keys(60);
    let mut expected = BTreeMap::new();
    for (i, user) in users.iter().enumerate() {
        let in_lane = rule_lane(user, &SPLIT, None) == Some(LANE);
        let target = format!("/users/{i}");
        // Every client forges something: the lane header, or a baggage lane entry in a
        // second field; some carry both.
        let mut request = Request::get(&target)
            .header("x-user-id", user)
            .header("baggage", format!("userId=u{i};p=1, k=v"));
        if i % 2 == 0 {
            request = request.header("x-lane", LANE);
        }
        if i % 3 == 0 {
            request = request.header("baggage", format!("lane={LANE}"));
        }
        let response = send(edge.listener(), &request);
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        let baggage = match (in_lane, i % 3 == 0) {
            // Its one lane entry already says so: left as it came.
            (true, true) => vec![format!("userId=u{i};p=1, k=v"), format!("lane={LANE}")],
            (true, false) => vec![format!("lane={LANE},userId=u{i};p=1, k=v")],
            (false, _) => vec![format!("userId=u{i};p=1, k=v")],
        };
        expected.insert(target, (in_lane, baggage));
    }
    let arrivals = hop.arrivals();
    assert_eq!(arrivals.len(), users.len());
    for (target, (in_lane, baggage)) in &expected {
        let (at, received) = &arrivals[target];
        assert_eq!(*at, if *in_lane { LANE } else { "main" }, "{target}");
        assert_eq!(
            received.header_texts("x-lane"),
            if *in_lane {
                vec![LANE.to_string()]
            } else {
                vec![]
            },
            "{target}"
        );
        assert_eq!(&received.header_texts("baggage"), baggage, "{target}");
    }
    let in_lane = expected.values().filter(|(l, _)| *l).count() as u64;
    assert!(
        in_lane > 5 && in_lane < 55,
        "{in_lane} of 60 users in the lane"
    );
    assert_eq!(
        lane_stats(&edge),
        BTreeMap::from([
            (format!("{LANE}.assigned"), in_lane),
            (format!("{LANE}.kept"), 0)
        ])
    );
    assert_eq!(
        hop.lane_stats(),
        BTreeMap::from([
            (format!("{LANE}.followed"), in_lane),
            ("unknown".to_string(), 0)
        ])
    );
}

#[test]
fn a_hop_follows_baggage_in_any_field_and_envoy_routes_again_on_the_header_it_writes() {
    let hop = Hop::start();
    let cases: [(&str, Request, &str); 7] = [
        // The lane in a second baggage field; no header: set, so routed to the lane.
        (
            "second-field",
            Request::get("/second-field")
                .header("baggage", "a=1")
                .header("baggage", format!("b=2, lane={LANE};p")),
            LANE,
        ),
        // Percent-encoded, and the first of two lane entries.
        (
            "encoded",
            Request::get("/encoded").header("baggage", "lane=feature%2D17,lane=x"),
            LANE,
        ),
        // A header naming another lane would route to main: replaced, so the lane.
        (
            "replaced",
            Request::get("/replaced")
                .header("x-lane", "other")
                .header("baggage", format!("lane={LANE}")),
            LANE,
        ),
        // A stale or forged header without baggage would route to the lane: removed,
        // so main.
        (
            "stale",
            Request::get("/stale").header("x-lane", LANE),
            "main",
        ),
        (
            "forged",
            Request::get("/forged")
                .header("x-lane", LANE)
                .header("baggage", "userId=7"),
            "main",
        ),
        // A lane this hop does not follow: main, counted as unknown.
        (
            "unknown",
            Request::get("/unknown")
                .header("x-lane", LANE)
                .header("baggage", "lane=feature-99"),
            "main",
        ),
        // A malformed lane entry is skipped: none.
        (
            "malformed",
            Request::get("/malformed").header("baggage", "lane=feature 17"),
            "main",
        ),
    ];
    for (name, request, _) in &cases {
        let response = send(hop.envoy.listener(), request);
        assert_eq!(response.status, 200, "{name}: {}", response.text());
    }
    let arrivals = hop.arrivals();
    for (name, _, expected) in &cases {
        let (at, received) = &arrivals[&format!("/{name}")];
        assert_eq!(at, expected, "{name}");
        let header = if *expected == LANE {
            vec![LANE.to_string()]
        } else {
            vec![]
        };
        assert_eq!(received.header_texts("x-lane"), header, "{name}");
    }
    // Baggage itself passes a hop untouched, every field of it.
    assert_eq!(
        arrivals["/second-field"].1.header_texts("baggage"),
        ["a=1".to_string(), format!("b=2, lane={LANE};p")]
    );
    assert_eq!(
        hop.lane_stats(),
        BTreeMap::from([(format!("{LANE}.followed"), 3), ("unknown".to_string(), 1)])
    );
}
