//! Configuration updates under load, delivered exactly as Istio delivers a `WasmPlugin`
//! edit (a new ECDS version): copies of a replaced configuration are neither cancelled
//! nor forgotten, every `in_flight` gauge returns to 0 (also for a target the update
//! removed or renamed), no client request fails, and an update the filter refuses
//! leaves the running configuration mirroring.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::envoy::istio_json;
use crate::support::upstream::Options;
use crate::support::{wait_until, Connection, Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_accounted, pattern, SETTLE};

/// The mirror answers late, so that every update finds copies in flight.
const MIRROR_DELAY: Duration = Duration::from_millis(700);
const CLIENTS: usize = 6;
const PACE: Duration = Duration::from_millis(3);

/// Client threads sending requests until stopped; every answer that is not a 200 from
/// the primary, and every I/O error, is an error.
struct Load {
    stop: AtomicBool,
    sent: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Load {
    fn new() -> Load {
        Load {
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            errors: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn run(&self, addr: SocketAddr, client: usize) {
        let mut connection = Connection::open(addr);
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            let user = format!("user-{client}-{n}");
            let request = if n.is_multiple_of(5) {
                Request::post(&format!("/load/{client}/{n}"), pattern(2000, n))
            } else {
                Request::get(&format!("/load/{client}/{n}"))
            }
            .header("x-user-id", &user);
            let outcome = connection.try_send(&request);
            self.sent.fetch_add(1, Ordering::SeqCst);
            // At most a few hundred requests a second per client: enough to keep
            // hundreds of copies in flight, few enough to count them all.
            std::thread::sleep(PACE);
            let error = match outcome {
                Ok(r) if r.status == 200 && r.header("x-upstream") == Some(b"primary") => continue,
                Ok(r) => format!(
                    "{} {}: {} {}",
                    request.method,
                    request.target,
                    r.status,
                    r.text()
                ),
                Err(e) => format!("{} {}: {e}", request.method, request.target),
            };
            self.errors.lock().unwrap().push(error);
            connection = Connection::open(addr);
        }
    }
}

/// Stops the load when dropped, also when the test panics (the scope would otherwise
/// wait for the client threads forever).
struct StopOnDrop<'a>(&'a Load);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

fn plugin(targets: serde_json::Value) -> String {
    istio_json(&json!({ "targets": targets }))
}

fn target(name: &str, percent: f64) -> serde_json::Value {
    json!({"name": name, "cluster": "mirror", "percent": percent,
           "sample_by": {"header": "x-user-id"}, "max_in_flight": 5000,
           "headers": {"set": {"x-note": "<&>"}}})
}

#[test]
fn updates_under_load_drain_every_copy_and_fail_no_request() {
    let primary = Upstream::start("primary");
    let mut options = Options::new("mirror");
    options.behaviour.delay = MIRROR_DELAY;
    options.record = false;
    let mirror = Upstream::start_with(options).unwrap();
    let mut envoy = Envoy::start(
        EnvoyConfig::new(
            &plugin(json!([target("staging", 50.0)])),
            primary.addr(),
            mirror.addr(),
        )
        .ecds("shop", "traffic-mirror")
        .concurrency(2),
    );
    let in_flight = |envoy: &Envoy, name: &str| {
        envoy
            .mirror_stats(name)
            .get("in_flight")
            .copied()
            .unwrap_or(0)
    };
    let load = Load::new();
    let addr = envoy.listener();
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load);
        for client in 0..CLIENTS {
            let load = &load;
            scope.spawn(move || load.run(addr, client));
        }
        // Each update lands while copies of the running configuration are in flight.
        let updates: [(&str, String, bool); 4] = [
            ("staging", plugin(json!([target("staging", 100.0)])), true),
            // Renamed: the old name's copies are still counted under it.
            (
                "staging",
                plugin(json!([target("staging-v2", 100.0)])),
                true,
            ),
            // Refused: Envoy keeps the running configuration.
            (
                "staging-v2",
                plugin(json!([target("staging-v2", 150.0)])),
                false,
            ),
            (
                "staging-v2",
                plugin(json!([target("staging-v3", 25.0), target("audit", 10.0)])),
                true,
            ),
        ];
        for (running, update, accepted) in &updates {
            wait_until(SETTLE, &format!("copies of {running} in flight"), || {
                in_flight(&envoy, running) > 100
            });
            eprintln!(
                "pushing {update} with {} copies of {running} in flight",
                in_flight(&envoy, running)
            );
            assert_eq!(envoy.push(update), *accepted, "update {update}");
        }
        // The last configuration mirrors too, to both of its targets.
        wait_until(SETTLE, "copies of staging-v3 and audit in flight", || {
            in_flight(&envoy, "staging-v3") > 20 && in_flight(&envoy, "audit") > 5
        });
        load.stop.store(true, Ordering::SeqCst);
    });
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} client errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );

    // Every copy of every configuration ends and is counted under its own target.
    let names = ["staging", "staging-v2", "staging-v3", "audit"];
    let stats: BTreeMap<&str, BTreeMap<String, u64>> = names
        .iter()
        .map(|name| (*name, assert_accounted(&envoy, name)))
        .collect();
    let sum = |counter: &str| -> u64 { stats.values().map(|s| s[counter]).sum() };
    for name in names {
        assert!(stats[name]["dispatched"] > 0, "{name}: {:?}", stats[name]);
        assert_eq!(
            stats[name]["responses_failed"], 0,
            "{name}: a copy was cancelled"
        );
    }
    // Exactly the copies the mirror answered were counted as answered.
    assert_eq!(mirror.count() as u64, mirror.answered());
    assert_eq!(mirror.answered(), sum("responses_2xx"));
    assert_eq!(sum("dispatched"), sum("responses_2xx"));
    assert!(load.sent.load(Ordering::SeqCst) > 100);
    let log = envoy.log();
    assert!(
        log.contains("traffic-mirror: configuration replaced; counting the"),
        "no drain in Envoy's log"
    );
    assert!(
        log.contains("replaced configuration drained"),
        "no drained root in Envoy's log"
    );
}
