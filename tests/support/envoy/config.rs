//! What one Envoy runs, as data: [`EnvoyConfig`] (the plugin configuration, the clusters,
//! the worker count, Envoy's buffer limits, extra routes) with its builder methods, and
//! [`Delivery`], inline or through ECDS. How it is written out as Envoy's bootstrap is in
//! `template.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::files::module;

/// The failure policy the shipped configurations use, and so the tests.
pub const FAILURE_POLICY: &str = "FAIL_OPEN";

/// Circuit breaker thresholds of the test clusters unless a test sets its own: far
/// above what any test sends, so that Envoy's own overflow never answers a copy.
const TEST_CIRCUIT_BREAKER: u32 = 100_000;

/// Envoy's runtime value `http.async_response_buffer_limit` as the shipped
/// configurations set it: the plugin's default `max_answer_bytes`.
pub const ANSWER_BUFFER_LIMIT: u64 = 65_536;

/// How the plugin reaches Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Inline in the bootstrap, as the shipped Envoy configurations carry it.
    Inline,
    /// Through ECDS from a watched directory, exactly as Istio delivers a `WasmPlugin`:
    /// the filter named `extensions.istio.io/wasmplugin/<ns>.<name>`, the `Wasm`
    /// config named `<ns>.<name>` with no `vm_id`, and the configuration as compact JSON
    /// with sorted keys. [`Envoy::push`] delivers a new version.
    Ecds { namespace: String, name: String },
}

/// What one Envoy runs: the plugin configuration, the clusters, the worker count.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// The plugin's JSON configuration, passed as is.
    pub plugin: String,
    /// Clusters by name: `primary` (the route's), `mirror`, and any extra, each with
    /// its circuit breaker thresholds.
    pub clusters: Vec<(String, SocketAddr, u32)>,
    /// `--concurrency`.
    pub concurrency: u32,
    /// The wasm module (default: the built traffic_mirror.wasm).
    pub module: PathBuf,
    /// `failure_policy` of the wasm filter.
    pub failure_policy: String,
    pub delivery: Delivery,
    /// `per_connection_buffer_limit_bytes` of the listener and every cluster (Envoy's
    /// default, 1 MiB, when `None`).
    pub buffer_limit: Option<u32>,
    /// Routes before the default one (to `primary`): a request whose header has exactly
    /// this value goes to this cluster. (header, value, cluster)
    pub header_routes: Vec<(String, String, String)>,
    /// The runtime value `http.async_response_buffer_limit` (`None`: not set, Envoy's
    /// default of 32 MiB).
    pub answer_buffer_limit: Option<u64>,
    /// Clusters whose upstreams speak HTTP/2 (cleartext, prior knowledge): gRPC servers.
    pub http2: Vec<String>,
    /// Envoy's `stats_flush_interval` (its default, 5 s, when `None`): how often
    /// histograms are merged for the admin endpoints.
    pub stats_flush: Option<Duration>,
}

impl EnvoyConfig {
    /// Every request routed to `primary`; a cluster `mirror`.
    pub fn new(plugin: &str, primary: SocketAddr, mirror: SocketAddr) -> EnvoyConfig {
        EnvoyConfig {
            plugin: plugin.to_string(),
            clusters: vec![
                ("primary".into(), primary, TEST_CIRCUIT_BREAKER),
                ("mirror".into(), mirror, TEST_CIRCUIT_BREAKER),
            ],
            concurrency: 1,
            module: module(),
            failure_policy: FAILURE_POLICY.to_string(),
            delivery: Delivery::Inline,
            buffer_limit: None,
            header_routes: Vec::new(),
            answer_buffer_limit: Some(ANSWER_BUFFER_LIMIT),
            http2: Vec::new(),
            stats_flush: None,
        }
    }

    /// The upstreams of cluster `name` speak HTTP/2 (cleartext).
    pub fn http2(mut self, name: &str) -> EnvoyConfig {
        self.http2.push(name.to_string());
        self
    }

    /// Merges histograms for the admin endpoints this often.
    pub fn stats_flush(mut self, every: Duration) -> EnvoyConfig {
        self.stats_flush = Some(every);
        self
    }

    /// Sets (or, with `None`, leaves out) the runtime value
    /// `http.async_response_buffer_limit`.
    pub fn answer_buffer_limit(mut self, bytes: Option<u64>) -> EnvoyConfig {
        self.answer_buffer_limit = bytes;
        self
    }

    /// Routes requests whose `header` is exactly `value` to `cluster` (which must be
    /// added), as grey-release routes do with a lane header.
    pub fn route_on(mut self, header: &str, value: &str, cluster: &str) -> EnvoyConfig {
        self.header_routes
            .push((header.to_string(), value.to_string(), cluster.to_string()));
        self
    }

    /// Limits Envoy's own buffering per connection (listener and clusters).
    pub fn buffer_limit(mut self, bytes: u32) -> EnvoyConfig {
        self.buffer_limit = Some(bytes);
        self
    }

    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> EnvoyConfig {
        self.clusters
            .push((name.to_string(), addr, TEST_CIRCUIT_BREAKER));
        self
    }

    /// Sets the circuit breaker thresholds (connections, pending and active requests)
    /// of a cluster already added.
    pub fn circuit_breaker(mut self, name: &str, max: u32) -> EnvoyConfig {
        for cluster in &mut self.clusters {
            if cluster.0 == name {
                cluster.2 = max;
            }
        }
        self
    }

    pub fn concurrency(mut self, workers: u32) -> EnvoyConfig {
        self.concurrency = workers;
        self
    }

    pub fn module(mut self, module: PathBuf) -> EnvoyConfig {
        self.module = module;
        self
    }

    pub fn failure_policy(mut self, policy: &str) -> EnvoyConfig {
        self.failure_policy = policy.to_string();
        self
    }

    /// Delivers the plugin through ECDS as Istio does for `WasmPlugin` `<ns>/<name>`.
    pub fn ecds(mut self, namespace: &str, name: &str) -> EnvoyConfig {
        self.delivery = Delivery::Ecds {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self
    }

    /// The HTTP filter's name in the filter chain.
    pub fn filter_name(&self) -> String {
        match &self.delivery {
            Delivery::Inline => "envoy.filters.http.wasm".to_string(),
            Delivery::Ecds { namespace, name } => {
                format!("extensions.istio.io/wasmplugin/{namespace}.{name}")
            }
        }
    }
}
