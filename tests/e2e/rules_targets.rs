//! Several targets in one plugin: each decides on its own, with its own ratio, salt and
//! mirror, and counts its own outcomes; equal salts pick nested subsets.

use std::collections::BTreeSet;

use serde_json::json;

use crate::sampling::{case_of, keys, rule_picks, CASE};
use crate::support::{Envoy, EnvoyConfig, Request, Upstream};
use crate::{assert_counters, send_all, wait_settled};

#[test]
fn targets_with_different_ratios_decide_independently_and_equal_salts_nest() {
    let primary = Upstream::start("primary");
    let low = Upstream::start("low");
    let high = Upstream::start("high");
    let nested = Upstream::start("nested");
    // "low" and "nested" share a salt (nested subsets); "high" has its own.
    let targets = [
        ("low", 20.0, "a"),
        ("high", 60.0, "b"),
        ("nested", 30.0, "a"),
    ];
    let plugin = json!({"targets": targets.iter().map(|(name, percent, salt)| json!({
        "name": name, "cluster": name, "percent": percent, "salt": salt,
        "sample_by": {"header": "x-user-id"}})).collect::<Vec<_>>()});
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), low.addr())
            .cluster("high", high.addr())
            .cluster("nested", nested.addr())
            .cluster("low", low.addr()),
    );
    let keys = keys(600);
    let mut requests: Vec<Request> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            Request::get(&format!("/multi/{i}"))
                .header("x-user-id", key)
                .header(CASE, i.to_string())
        })
        .collect();
    // And some without the key: each target counts them on its own.
    let keyless = 20;
    requests.extend((0..keyless).map(|i| {
        Request::get(&format!("/multi/nokey/{i}")).header(CASE, (keys.len() + i).to_string())
    }));
    send_all(envoy.listener(), &requests, 2, 2);

    let mut picked: Vec<BTreeSet<usize>> = Vec::new();
    for ((name, percent, salt), mirror) in targets.iter().zip([&low, &high, &nested]) {
        let expected: BTreeSet<usize> = (0..keys.len())
            .filter(|&i| rule_picks(salt, keys[i].as_bytes(), *percent))
            .collect();
        let share = expected.len() as f64 / keys.len() as f64 * 100.0;
        assert!(
            (percent - 6.0..percent + 6.0).contains(&share),
            "the rule picks {share:.1} % of the keys at {percent} %"
        );
        wait_settled(&envoy, name);
        let n = expected.len() as u64;
        assert_counters(
            &envoy,
            name,
            &[
                ("requests", requests.len() as u64),
                ("sampled", n),
                ("dispatched", n),
                ("responses_2xx", n),
                ("skipped_missing_key", keyless as u64),
            ],
        );
        let copies = mirror.received();
        let got: BTreeSet<usize> = copies.iter().map(case_of).collect();
        assert_eq!(
            got.len(),
            copies.len(),
            "{name}: a request was copied twice"
        );
        assert_eq!(
            got, expected,
            "{name}: mirrored set differs from the rule's"
        );
        for copy in &copies {
            assert_eq!(copy.header_str("x-traffic-mirror").as_deref(), Some(*name));
        }
        picked.push(got);
    }
    let (low_set, high_set, nested_set) = (&picked[0], &picked[1], &picked[2]);
    // Equal salts: the 20 % subset lies inside the 30 % one.
    assert!(low_set.is_subset(nested_set), "equal salts must nest");
    assert!(nested_set.len() > low_set.len());
    // Different salts: independent decisions. Neither set contains the other, and they
    // overlap about as much as chance gives (20 % of 60 % of the keys, 72).
    assert!(
        !low_set.is_subset(high_set),
        "salt b must not pick a superset of salt a"
    );
    let overlap = low_set.intersection(high_set).count() as f64;
    let chance = low_set.len() as f64 * high_set.len() as f64 / keys.len() as f64;
    assert!(
        (overlap - chance).abs() < 0.3 * chance,
        "{overlap} keys picked by both low and high; {chance:.0} expected by chance"
    );
}
