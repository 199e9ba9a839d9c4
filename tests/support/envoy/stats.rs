//! Reading Envoy's stats from its admin: `/stats` (counters and gauges), the plugin's
//! and one target's, and `/stats/prometheus`.

use std::collections::BTreeMap;

use super::super::client;
use super::process::Envoy;

impl Envoy {
    /// The admin `/stats/prometheus` page.
    pub fn prometheus(&self) -> String {
        client::get_ok(self.admin(), "/stats/prometheus")
    }

    /// Every counter and gauge on the admin `/stats` (histograms left out).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        parse_stats(&client::get_ok(self.admin(), "/stats"))
    }

    /// The plugin's stats: `wasmcustom.traffic_mirror.*`.
    pub fn plugin_stats(&self) -> BTreeMap<String, u64> {
        parse_stats(&client::get_ok(self.admin(), "/stats?filter=wasmcustom"))
            .into_iter()
            .filter(|(name, _)| name.starts_with("wasmcustom.traffic_mirror."))
            .collect()
    }

    /// One stat by full name; panics when Envoy has no such stat.
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.stats();
        match stats.get(name) {
            Some(value) => *value,
            None => panic!("Envoy has no stat {name}; it has: {stats:#?}"),
        }
    }

    /// A stat Envoy creates only when it first counts (a cluster's `upstream_rq_<code>`):
    /// 0 until then, so that a poll waits for it rather than failing.
    pub fn created_on_first_count(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// A counter or gauge of one target: `wasmcustom.traffic_mirror.<target>.<name>`.
    pub fn mirror_stat(&self, target: &str, name: &str) -> u64 {
        self.mirror_stats(target)
            .get(name)
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "Envoy has no stat wasmcustom.traffic_mirror.{target}.{name}; it has: {:#?}",
                    self.plugin_stats()
                )
            })
    }

    /// One target's counters and gauge, by short name (`requests`, `in_flight`, ...).
    pub fn mirror_stats(&self, target: &str) -> BTreeMap<String, u64> {
        let prefix = format!("wasmcustom.traffic_mirror.{target}.");
        self.plugin_stats()
            .into_iter()
            .filter_map(|(name, value)| Some((name.strip_prefix(&prefix)?.to_string(), value)))
            .collect()
    }
}

/// Parses `/stats` text lines `name: value`; lines whose value is not an integer
/// (histograms) are left out.
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
