//! The bootstrap YAML an [`EnvoyConfig`] is written out as: listener, routes, the wasm
//! filter (inline, or found through ECDS), clusters, runtime and `stats_tags`.

use std::path::Path;

use super::config::{Delivery, EnvoyConfig};
use super::ecds::ECDS_FILE;

impl EnvoyConfig {
    /// The `Wasm` filter config (its `config` message) holding `plugin`, as YAML
    /// indented by `indent` spaces.
    pub(super) fn wasm_config(&self, plugin: &str, indent: usize) -> String {
        // A JSON string literal is a valid YAML double-quoted scalar: the plugin
        // configuration goes through byte for byte, however broken it is.
        let configuration = serde_json::to_string(plugin).unwrap();
        let module = serde_json::to_string(&self.module.display().to_string()).unwrap();
        let policy = &self.failure_policy;
        let (name, root_id, vm_id) = match &self.delivery {
            Delivery::Inline => (
                "traffic_mirror".to_string(),
                "traffic_mirror",
                "\n  vm_id: traffic_mirror",
            ),
            Delivery::Ecds { namespace, name } => {
                (format!("{namespace}.{name}"), "traffic_mirror", "")
            }
        };
        let yaml = format!(
            r#"name: {name}
root_id: {root_id}
failure_policy: {policy}
vm_config:{vm_id}
  runtime: envoy.wasm.runtime.v8
  code:
    local: {{ filename: {module} }}
configuration:
  "@type": type.googleapis.com/google.protobuf.StringValue
  value: {configuration}
"#
        );
        let pad = " ".repeat(indent);
        yaml.lines().map(|line| format!("{pad}{line}\n")).collect()
    }

    /// The bootstrap YAML; `ecds_dir` is where an ECDS-delivered plugin's resource
    /// file is watched.
    pub fn yaml_in(&self, ecds_dir: &Path) -> String {
        let filter = match &self.delivery {
            Delivery::Inline => format!(
                r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
{}"#,
                self.wasm_config(&self.plugin, 16)
            ),
            Delivery::Ecds { .. } => format!(
                r#"          - name: {name}
            config_discovery:
              config_source:
                path_config_source:
                  path: {path}
                  watched_directory: {{ path: {dir} }}
              type_urls: ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
"#,
                name = self.filter_name(),
                path =
                    serde_json::to_string(&ecds_dir.join(ECDS_FILE).display().to_string()).unwrap(),
                dir = serde_json::to_string(&ecds_dir.display().to_string()).unwrap(),
            ),
        };
        let limit = self
            .buffer_limit
            .map(|bytes| format!("per_connection_buffer_limit_bytes: {bytes}"))
            .unwrap_or_default();
        let routes: String = self
            .header_routes
            .iter()
            .map(|(header, value, cluster)| {
                format!(
                    "              - match: {{ prefix: \"/\", headers: [{{ name: {header}, string_match: {{ exact: {value} }} }}] }}\n                route: {{ cluster: {cluster} }}\n"
                )
            })
            .collect();
        let runtime = self
            .answer_buffer_limit
            .map(|bytes| {
                format!(
                    "layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      http.async_response_buffer_limit: {bytes}\n"
                )
            })
            .unwrap_or_default();
        let flush = self
            .stats_flush
            .map(|every| format!("stats_flush_interval: {}s\n", every.as_secs_f64()))
            .unwrap_or_default();
        let mut yaml = format!(
            r#"node: {{ id: e2e, cluster: e2e }}
{runtime}{flush}{STATS_TAGS}admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 0 }}
    {limit}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}              - match: {{ prefix: "/" }}
                route: {{ cluster: primary }}
          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
"#
        );
        for (name, addr, max) in &self.clusters {
            let protocol = if self.http2.contains(name) {
                "\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }"
            } else {
                ""
            };
            yaml.push_str(&format!(
                r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s{protocol}
    {limit}
    circuit_breakers:
      thresholds:
      - {{ max_connections: {max}, max_pending_requests: {max}, max_requests: {max} }}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}
"#,
                ip = addr.ip(),
                port = addr.port(),
                limit = self
                    .buffer_limit
                    .map(|bytes| format!("per_connection_buffer_limit_bytes: {bytes}"))
                    .unwrap_or_default(),
            ));
        }
        yaml
    }

    /// The bootstrap YAML of an inline plugin.
    pub fn yaml(&self) -> String {
        self.yaml_in(Path::new("/nonexistent"))
    }
}

/// The shipped configurations' `stats_tags`: the target, lane and gRPC status become
/// labels on `/stats/prometheus`.
const STATS_TAGS: &str = r#"stats_config:
  stats_tags:
  - tag_name: target
    regex: '^wasmcustom\.traffic_mirror\.(([a-z0-9_-]+)\.)'
  - tag_name: lane
    regex: '^wasmcustom\.traffic_lanes\.(([a-z0-9_-]+)\.)'
  - tag_name: grpc_status
    regex: '^wasmcustom\.traffic_mirror\.[a-z0-9_-]+\.grpc_status(\.([0-9]+))$'
  - tag_name: json_path
    regex: '^wasmcustom\.traffic_mirror\.[a-z0-9_-]+\.compare\.path(\.([^.]*))$'
"#;
