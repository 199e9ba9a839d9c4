//! traffic-mirror: a proxy-wasm HTTP filter that copies a hash-sampled share of
//! requests to mirror clusters, fire and forget.
//!
//! Everything that decides and builds is plain Rust without host calls, tested natively
//! and on wasm32: [`config`] (parse, validate, compile), [`matching`], [`sampling`],
//! [`capture`] (one request's way through the plan), [`copy`] (the copy's headers),
//! [`wire`] (the host's header map format), [`limits`], [`outbox`] (admission and
//! calls in flight), [`metrics`] and [`throttle`]. The `shell` module, compiled for
//! `wasm32-wasip1` only, is the proxy-wasm ABI: the callbacks Envoy calls, which read
//! from the host and call into these.

pub mod budget;
pub mod capture;
pub mod config;
pub mod copy;
pub mod drain;
pub mod explain;
pub mod lanes;
pub mod limits;
pub mod matching;
pub mod metrics;
pub mod outbox;
pub mod request;
pub mod sampling;
pub mod throttle;
pub mod wire;

#[cfg(target_os = "wasi")]
mod shell;
