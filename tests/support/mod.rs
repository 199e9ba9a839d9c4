//! The end-to-end harness: the built module in a real Envoy, recording upstreams and a
//! client written here on `std::net`, all on 127.0.0.1 with ports picked by the kernel.
//!
//! - [`upstream`]: the recording HTTP/1.1 server (also `examples/upstream.rs`).
//! - [`client`]: an HTTP/1.1 client with keep-alive and chunked uploads.
//! - [`envoy`]: a real Envoy, one concept to a file under `envoy/`: where things are and
//!   work directories (`files`), the configuration (`config`) and the bootstrap YAML it
//!   is written out as (`template`), the running process (`process`), ECDS delivery
//!   (`ecds`), `/stats` (`stats`), memory held (`memory`), `--mode validate`
//!   (`validation`).
//! - [`command`]: the `traffic-mirror` command, as the tests run it.
//! - [`python`]: HTTP/2 and gRPC peers (grpcio, h2) from `tests/support/http2.py`.
//! - [`scripted`]: an HTTP/1.1 server answering each path as the test scripts it (the
//!   `compare` tests' primary and mirror).
//!
//! Every wait is a poll with a deadline ([`wait_until`], [`wait_for`]); nothing sleeps
//! a fixed time hoping that something happened.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod client;
pub mod command;
pub mod envoy;
pub mod python;
pub mod scripted;
pub mod upstream;

use std::time::{Duration, Instant};

pub use client::{send, Body, Connection, HeldUpload, Request, Response};
pub use envoy::{validate, Envoy, EnvoyConfig};
pub use upstream::{Received, Upstream};

/// How often conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `condition` until it returns `Ok`, and returns that value; panics after
/// `timeout` with `what` and the last `Err` (the state observed).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition() {
            Ok(value) => return value,
            Err(state) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {state}");
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `condition` until it holds; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(timeout, what, || {
        if condition() {
            Ok(())
        } else {
            Err("condition false".to_string())
        }
    });
}
