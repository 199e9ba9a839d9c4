//! A real Envoy running the built module, one concept to a file:
//!
//! - [`files`]: where things are (the repository, the Envoy binary, the built module)
//!   and [`WorkDir`], a directory of its own for each Envoy or command a test runs.
//! - [`config`]: [`EnvoyConfig`], what one Envoy runs (plugin configuration, clusters,
//!   workers, buffer limits, routes) with its builder methods, and how the plugin
//!   reaches Envoy (inline or through ECDS).
//! - [`template`]: the bootstrap YAML an [`EnvoyConfig`] is written out as.
//! - [`process`]: [`Envoy`], a running Envoy: start-up on free ports (listener and
//!   admin on port 0, learned from the admin), readiness by polling `/ready`, restart,
//!   and the process killed on drop (with its configuration and log printed when the
//!   test is failing).
//! - [`ecds`]: the plugin delivered through ECDS as Istio does: the watched resource
//!   file and [`Envoy::push`] of a new version; [`istio_json`].
//! - [`stats`]: reading `/stats` and `/stats/prometheus` ([`Envoy::stats`],
//!   [`Envoy::mirror_stats`], ...).
//! - [`memory`]: what Envoy holds, resident memory and socket queues, now or at its
//!   peak ([`PeakMemory`]).
//! - [`validation`]: `envoy --mode validate` ([`validate`]).
//!
//! What the tests use is re-exported here (`support::envoy::WorkDir`, ...); the rest
//! is reached through its file's module (`support::envoy::memory::Memory`, ...).

pub mod config;
pub mod ecds;
pub mod files;
pub mod memory;
pub mod process;
pub mod stats;
pub mod template;
pub mod validation;

pub use config::EnvoyConfig;
pub use ecds::istio_json;
pub use files::{envoy_bin, repo, WorkDir};
pub use memory::PeakMemory;
pub use process::Envoy;
pub use validation::validate;
