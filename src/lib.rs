//! traffic-mirror: a proxy-wasm HTTP filter that copies a hash-sampled share of
//! requests to mirror clusters, fire and forget, and puts users into sticky release
//! lanes with the same hash.
//!
//! Everything that decides and builds is plain Rust without host calls, tested natively
//! and on wasm32. A request's whole way is [`lifecycle`]: a configuration on a worker and
//! one request, driven by the host through small traits ([`host`], [`request`],
//! [`metrics`]). Its steps: [`lanes`]; [`decision`] (the loop header, [`matching`],
//! [`sampling`]); [`capture`] (the body, against [`budget`]); [`copy`] (the copy's
//! headers, in the host's map format, [`wire`]); [`outbox`] (the limits, [`limits`], and
//! the calls in flight, in an [`id_map`]); [`retirement`] (a replaced configuration's). [`config`] parses
//! and compiles the configuration, [`log_throttle`] keeps failures from flooding the log,
//! [`suggest`] finds the name a misspelt one meant, [`explain`] tells a request's way in
//! words for the command, [`istio`] renders a `pluginConfig` as Istio hands it over, and
//! [`fake_host`] (native only) plays the host in tests. The `shell` module, compiled for
//! `wasm32-wasip1` only, is the proxy-wasm ABI: the callbacks Envoy calls, translated
//! into the lifecycle's.

pub mod budget;
pub mod capture;
pub mod config;
pub mod copy;
pub mod decision;
pub mod explain;
#[cfg(not(target_os = "wasi"))]
pub mod fake_host;
pub mod host;
pub mod id_map;
pub mod istio;
pub mod lanes;
pub mod lifecycle;
pub mod limits;
pub mod log_throttle;
pub mod matching;
pub mod metrics;
pub mod outbox;
pub mod request;
pub mod retirement;
pub mod sampling;
pub mod suggest;
pub mod wire;

#[cfg(target_os = "wasi")]
mod shell;
