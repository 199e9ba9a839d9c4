//! traffic-mirror's core: everything the filter decides and does, with no proxy-wasm
//! dependency. The module (the workspace's `traffic-mirror` crate) is a thin shell that
//! implements [`host::Host`] with the proxy-wasm ABI and hands each of Envoy's callbacks
//! to one method of [`lifecycle::Vm`]; the command (`traffic-mirror-cli`) calls the same
//! code without a host.
//!
//! A request's whole way is [`lifecycle`]. Its steps: [`decision`] (the value a request's
//! headers decide: the lane, [`lanes`], which may travel in W3C [`baggage`]; `CONNECT`,
//! upgrades and the loop header; each target's [`matching`], [`sampling`] and declared
//! length), counted through the [`stats`] catalog; [`capture`] (the body, against
//! [`budget`]); [`copy`] (the copy's headers, in the host's map format, [`wire`]);
//! [`outbox`] (the limits, [`limits`], and the copies in flight, in an [`id_map`]);
//! [`retirement`] (a replaced configuration's); [`compare`] and [`comparison`] (a copy's
//! answer against the primary's response).
//! [`host`] is what the filter asks of its host and how it treats its failures;
//! [`request`] reads a request's headers; [`config`] parses and compiles the
//! configuration; [`log_throttle`] keeps failures from flooding the log; [`suggest`]
//! finds the name a misspelt one meant; [`explain`] renders a request's decision in words
//! for the command; [`istio`] renders a `pluginConfig` as Istio hands it over.
//! `testing` (feature `testing`) is a fake host that records every call, and a driver
//! that plays Envoy's part, for tests, fuzzing and the emulator.

pub mod baggage;
pub mod budget;
pub mod capture;
pub mod compare;
pub mod comparison;
pub mod config;
pub mod copy;
pub mod decision;
pub mod explain;
pub mod host;
pub mod id_map;
pub mod istio;
pub mod lanes;
pub mod lifecycle;
pub mod limits;
pub mod log_throttle;
pub mod matching;
pub mod outbox;
pub mod request;
pub mod retirement;
pub mod sampling;
pub mod stats;
pub mod suggest;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;
