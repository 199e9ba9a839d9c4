//! `traffic-mirror sample FILE [--target NAME | --lanes]`: which of the keys on standard
//! input a target mirrors, or which lane each key is in, by the filter's own rule.

use std::io::{BufRead, IsTerminal, Write};

use traffic_mirror_core::config::Plan;
use traffic_mirror_core::decision::{sample_key, Sampling};
use traffic_mirror_core::lanes::How;
use traffic_mirror_core::sampling::{Rng, SampleKey};

use crate::explain::one_plan;

pub fn run(file: &str, target: Option<&str>, lanes: bool) -> u8 {
    let plan = match one_plan(file) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    if !lanes && target.is_none() && plan.targets.is_empty() {
        eprintln!(
            "traffic-mirror sample: {file} has lanes but no target: sample --lanes prints each key's lane"
        );
        return 2;
    }
    if std::io::stdin().is_terminal() {
        eprintln!("traffic-mirror sample: reading sampling keys from standard input, one per line (end with Ctrl-D)");
    }
    let keys = read_keys();
    if lanes {
        sample_lanes(&plan, &keys)
    } else {
        sample_target(&plan, target, &keys)
    }
}

/// Standard input, one key a line (a trailing `\r` is not part of the key).
fn read_keys() -> Vec<Vec<u8>> {
    std::io::stdin()
        .lock()
        .split(b'\n')
        .map_while(Result::ok)
        .map(|mut line| {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            line
        })
        .collect()
}

fn sample_target(plan: &Plan, name: Option<&str>, keys: &[Vec<u8>]) -> u8 {
    let target = match name {
        Some(name) => plan.targets.iter().find(|t| t.name == name),
        None => plan.targets.first(),
    };
    let Some(target) = target else {
        let names: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "traffic-mirror sample: no target {} (targets: {})",
            name.unwrap_or("at all"),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        return 2;
    };
    if target.sample_by == SampleKey::Random {
        eprintln!(
            "traffic-mirror sample: target {} samples at random (sample_by random): no key decides",
            target.name
        );
        return 2;
    }
    let mut out = std::io::stdout().lock();
    let mut mirrored = 0usize;
    // Random draws (a missing key under on_missing_key random) are made per request:
    // such a key is not listed.
    let mut rng = Rng::new(0);
    for key in keys {
        // An empty key is missing.
        let present = (!key.is_empty()).then_some(key.as_slice());
        let decision = sample_key(target, present, &mut rng, false);
        if matches!(decision, Sampling::Keyed { sampled: true, .. }) {
            mirrored += 1;
            let _ = out.write_all(key);
            let _ = out.write_all(b"\n");
        }
    }
    eprintln!(
        "target {}: {mirrored} of {} keys mirrored ({:.2} %, configured {:.4} %)",
        target.name,
        keys.len(),
        share(mirrored, keys.len()),
        f64::from(target.threshold) / 10_000.0
    );
    0
}

fn sample_lanes(plan: &Plan, keys: &[Vec<u8>]) -> u8 {
    let Some(lanes) = &plan.lanes else {
        eprintln!("traffic-mirror sample: the configuration has no lanes");
        return 2;
    };
    if lanes.assign().is_none() {
        eprintln!(
            "traffic-mirror sample: the configuration follows lanes from baggage and assigns none (try explain -H 'baggage: ...')"
        );
        return 2;
    }
    let mut out = std::io::stdout().lock();
    let mut counts = vec![0usize; lanes.names.len()];
    let (mut none, mut random) = (0usize, 0usize);
    let mut rng = Rng::new(0);
    for key in keys {
        let present = (!key.is_empty()).then_some(key.as_slice());
        let decision = lanes.decide_key(present, &mut rng);
        // A lane drawn at random is drawn per request: not this key's.
        let lane = (!matches!(decision.how, How::Random { .. })).then_some(decision.lane);
        let _ = out.write_all(key);
        let _ = out.write_all(b"\t");
        match lane {
            Some(Some(lane)) => {
                if let Some(count) = counts.get_mut(lane) {
                    *count += 1;
                }
                let _ = out.write_all(lanes.name(lane).unwrap_or_default().as_bytes());
            }
            Some(None) => none += 1,
            None => {
                random += 1;
                let _ = out.write_all(b"(random)");
            }
        }
        let _ = out.write_all(b"\n");
    }
    let mut summary: Vec<String> = lanes
        .names
        .iter()
        .zip(&counts)
        .map(|(name, n)| format!("{name} {n} ({:.2} %)", share(*n, keys.len())))
        .collect();
    if none > 0 {
        summary.push(format!("no lane {none} ({:.2} %)", share(none, keys.len())));
    }
    if random > 0 {
        summary.push(format!("drawn at random {random} (no key)"));
    }
    eprintln!("lanes of {} keys: {}", keys.len(), summary.join(", "));
    0
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}
