//! Any bytes as the plugin configuration: `parse` returns a plan or one error line,
//! and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_mirror_core::config::parse;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(plan) => {
            assert!(!plan.targets.is_empty() && plan.targets.len() <= 16);
            for target in &plan.targets {
                assert!(target.threshold <= 1_000_000);
            }
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("traffic-mirror: invalid configuration: "));
            assert!(!line.contains('\n'), "one line: {line:?}");
        }
    }
});
