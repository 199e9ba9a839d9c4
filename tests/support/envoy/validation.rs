//! `envoy --mode validate`: whether Envoy accepts a configuration, without running it.

use std::fs;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use super::config::EnvoyConfig;
use super::files::{envoy_bin, WorkDir};

/// Runs `envoy --mode validate` on a configuration holding this plugin configuration:
/// whether Envoy accepted it, and everything it printed.
pub fn validate(plugin_json: &str) -> (bool, String) {
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    validate_config(&EnvoyConfig::new(plugin_json, unused, unused))
}

/// Runs `envoy --mode validate` on a configuration: whether Envoy accepted it, and
/// everything it printed.
pub fn validate_config(config: &EnvoyConfig) -> (bool, String) {
    let yaml = config.yaml();
    let dir = WorkDir::new("validate");
    let path = dir.path().join("envoy.yaml");
    fs::write(&path, &yaml).unwrap();
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "-l", "info", "-c"])
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} --mode validate: {e}", envoy_bin().display()));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}
