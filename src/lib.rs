//! traffic-mirror: a proxy-wasm HTTP filter that copies a hash-sampled share of
//! requests to mirror clusters, fire and forget, and puts users into sticky release
//! lanes with the same hash.
//!
//! Everything that decides and builds is plain Rust without host calls, tested natively
//! and on wasm32: [`config`] (parse, validate, compile), [`lanes`], [`matching`],
//! [`sampling`], [`capture`] (one request's way through the plan), [`budget`]
//! (`max_buffered_bytes`, `max_in_flight_bytes`), [`copy`] (the copy's headers), [`wire`] (the host's header map
//! format), [`limits`], [`outbox`] (admission and calls in flight), [`drain`] (a replaced
//! configuration's retirement), [`metrics`], [`log_throttle`] and [`suggest`] (the known
//! name closest to a misspelt one); [`explain`] tells the
//! same steps in words for the `traffic-mirror` command, and [`istio`] renders a
//! `pluginConfig` as Istio hands it over. The `shell` module, compiled for
//! `wasm32-wasip1` only, is the proxy-wasm ABI: the callbacks Envoy calls, which read
//! from the host and call into these.

pub mod budget;
pub mod capture;
pub mod config;
pub mod copy;
pub mod drain;
pub mod explain;
pub mod istio;
pub mod lanes;
pub mod limits;
pub mod log_throttle;
pub mod matching;
pub mod metrics;
pub mod outbox;
pub mod request;
pub mod sampling;
pub mod suggest;
pub mod wire;

#[cfg(target_os = "wasi")]
mod shell;
