//! traffic-mirror: a proxy-wasm HTTP filter that copies a hash-sampled share of
//! requests to mirror clusters, fire and forget.
//!
//! Everything that decides and builds is plain Rust without host calls, tested natively
//! and on wasm32: [`config`] (parse, validate, compile), [`matching`], [`sampling`],
//! [`capture`] (one request's way through the plan), [`copy`] (the copy's headers),
//! [`limits`], [`outbox`] (admission, queue, calls in flight), [`metrics`] and
//! [`throttle`]. The proxy-wasm contexts in `shell` only read from the host and call
//! into these; they are compiled for `wasm32-wasip1` only.

pub mod capture;
pub mod config;
pub mod copy;
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
