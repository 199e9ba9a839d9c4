//! Finding traffic-mirror configurations: the files a path names (a file, a directory's
//! YAML and JSON files, a glob), and in each file a plugin configuration itself, the
//! `configuration` of every traffic-mirror filter in an Envoy configuration, or the
//! `pluginConfig` of every `WasmPlugin` in Kubernetes YAML, rendered as Istio hands it to
//! the filter. What comes out is the bytes the module would be given, with what the
//! file says around them (the clusters Envoy defines, the module it loads, ...).

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use traffic_mirror_core::config::{ANSWER_BUFFER_RUNTIME_KEY, CONFIGURATION_FIELDS};
use traffic_mirror_core::istio::istio_json;
use traffic_mirror_core::suggest::closest;

use crate::yaml;

const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// One traffic-mirror configuration and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `FILE`, or `FILE: listener ingress, filter envoy.filters.http.wasm`, or
    /// `FILE: WasmPlugin shop/traffic-mirror`.
    pub location: String,
    /// What the module would be given as its configuration; `Err`: why none could be
    /// (the configuration is of a type the filter cannot read).
    pub configuration: Result<Vec<u8>, String>,
    /// What the Envoy that runs it sets its answer buffer to.
    pub answer_buffer: AnswerBuffer,
    /// Where it was found.
    pub context: Context,
}

/// What surrounds a configuration in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// A plugin configuration on its own.
    Plugin,
    /// A traffic-mirror filter in an Envoy configuration.
    Envoy {
        /// The clusters the bootstrap defines (`None`: not a bootstrap, e.g. an ECDS
        /// resource, so the clusters are not known here).
        clusters: Option<Vec<String>>,
        /// Clusters may also come from CDS (`dynamic_resources.cds_config`).
        cds: bool,
        /// The module file the filter loads (`vm_config.code.local.filename`).
        module: Option<String>,
    },
    /// A `WasmPlugin`'s `pluginConfig`: Istio names the clusters.
    WasmPlugin,
}

/// Why a file gave no configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It cannot be read, or parsed as JSON or YAML.
    Unreadable(String),
    /// It holds no traffic-mirror configuration.
    NoConfiguration(String),
}

/// The fields of a `WasmPlugin`'s `spec` (Istio's CRD, `extensions.istio.io/v1alpha1`).
const WASM_PLUGIN_SPEC_FIELDS: &[&str] = &[
    "selector",
    "targetRef",
    "targetRefs",
    "url",
    "sha256",
    "imagePullPolicy",
    "imagePullSecret",
    "verificationKey",
    "pluginConfig",
    "pluginName",
    "phase",
    "priority",
    "failStrategy",
    "vmConfig",
    "match",
    "type",
];

/// The files a PATH names: itself; every `.yaml`, `.yml` and `.json` file under a
/// directory, in order; or the files a glob (`*`, `?`, `[`) matches. `-` is standard
/// input.
pub fn files(path: &str) -> Result<Vec<String>, String> {
    let p = Path::new(path);
    if path == "-" || p.is_file() {
        return Ok(vec![path.to_string()]);
    }
    if p.is_dir() {
        let mut found = Vec::new();
        walk(p, &mut found).map_err(|e| format!("{path}: cannot read: {e}"))?;
        found.sort();
        return Ok(found);
    }
    if path.contains(['*', '?', '[']) {
        let matches = glob::glob(path).map_err(|e| format!("{path}: not a glob: {e}"))?;
        let found: Vec<String> = matches
            .filter_map(Result::ok)
            .filter(|m| m.is_file())
            .map(|m| m.display().to_string())
            .collect();
        if found.is_empty() {
            return Err(format!("{path}: matches no file"));
        }
        return Ok(found);
    }
    Err(format!("{path}: cannot read: no such file or directory"))
}

fn walk(dir: &Path, found: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            found.push(path.display().to_string());
        }
    }
    Ok(())
}

/// The runtime value `http.async_response_buffer_limit` of the Envoy bootstrap a filter
/// was found in: how much of each copy's answer that Envoy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerBuffer {
    /// Not known from this file: a plugin configuration, a `WasmPlugin` (Istio sets
    /// runtime values in the proxy config), an Envoy resource that is not a bootstrap, or
    /// a bootstrap whose runtime has layers other than static and admin ones.
    Unknown,
    /// A bootstrap whose static runtime layers do not set it: Envoy's 32 MiB.
    Unset,
    /// Set in a static layer, to this many bytes.
    Set(u64),
    /// Set in a static layer to something that is not a number of bytes.
    Invalid(String),
}

/// Reads a file (`-`: standard input).
pub fn read(path: &str) -> Result<Vec<u8>, String> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("-: cannot read standard input: {e}"))?;
        Ok(bytes)
    } else {
        std::fs::read(path).map_err(|e| format!("{path}: cannot read: {e}"))
    }
}

/// A plugin configuration given as it is.
fn plugin(name: &str, bytes: &[u8]) -> Vec<Found> {
    vec![Found {
        location: name.to_string(),
        configuration: Ok(bytes.to_vec()),
        answer_buffer: AnswerBuffer::Unknown,
        context: Context::Plugin,
    }]
}

/// Every traffic-mirror configuration in a file's bytes; `Err` when there is none.
pub fn configurations(name: &str, bytes: &[u8]) -> Result<Vec<Found>, Problem> {
    let yaml_file = name.ends_with(".yaml") || name.ends_with(".yml");
    let documents = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) if is_plugin_configuration(&value) => return Ok(plugin(name, bytes)),
        Ok(value) => vec![value],
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            match yaml::documents(&text) {
                Ok(docs) => docs,
                // Broken JSON is given to the filter, which says what is wrong with it.
                Err(_) if looks_like_json(bytes) && !yaml_file => return Ok(plugin(name, bytes)),
                // Not JSON either, but that is no news for a YAML file: the YAML error alone.
                Err(yaml_error) => {
                    return Err(Problem::Unreadable(format!(
                        "{name}: not valid YAML: {yaml_error}"
                    )))
                }
            }
        }
    };
    let mut found = Vec::new();
    for (i, doc) in documents.iter().enumerate() {
        let at = if documents.len() > 1 {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_string()
        };
        if doc.get("kind").and_then(Value::as_str) == Some("WasmPlugin") {
            found.extend(wasm_plugin(&at, doc));
        } else if documents.len() == 1 && looks_like_plugin_configuration(doc) {
            // A pluginConfig written in YAML.
            found.push(Found {
                location: at,
                configuration: Ok(istio_json(doc).into_bytes()),
                answer_buffer: AnswerBuffer::Unknown,
                context: Context::Plugin,
            });
        } else {
            let answer_buffer = answer_buffer(doc);
            let (clusters, cds) = clusters(doc);
            let first = found.len();
            envoy_filters(&at, doc, &mut Vec::new(), &mut found);
            for filter in found.iter_mut().skip(first) {
                filter.answer_buffer = answer_buffer.clone();
                if let Context::Envoy {
                    clusters: known,
                    cds: from_cds,
                    ..
                } = &mut filter.context
                {
                    known.clone_from(&clusters);
                    *from_cds = cds;
                }
            }
        }
    }
    if found.is_empty() {
        Err(Problem::NoConfiguration(format!(
            "{name}: holds no traffic-mirror configuration"
        )))
    } else {
        Ok(found)
    }
}

/// A YAML mapping that is a plugin configuration: it has `targets` or `lanes`, or a
/// field one or two letters away from a configuration field (misspelt, which the
/// parser then names), and nothing that makes it an Envoy or Kubernetes document.
fn looks_like_plugin_configuration(doc: &Value) -> bool {
    let Some(object) = doc.as_object() else {
        return false;
    };
    let fields = object.keys().any(|key| {
        CONFIGURATION_FIELDS.contains(&key.as_str()) || closest(key, CONFIGURATION_FIELDS).is_some()
    });
    fields && is_plugin_configuration(doc)
}

/// The clusters an Envoy bootstrap defines (`None` for a document that is not one), and
/// whether more may come from CDS.
fn clusters(doc: &Value) -> (Option<Vec<String>>, bool) {
    let Some(statics) = doc.get("static_resources") else {
        return (None, false);
    };
    let names = statics
        .get("clusters")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let cds = doc.pointer("/dynamic_resources/cds_config").is_some();
    (Some(names), cds)
}

/// A plugin configuration itself: an object with `targets` or `lanes` and nothing that
/// makes it an Envoy or Kubernetes document.
fn is_plugin_configuration(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        // Not an object: the filter will say so.
        return true;
    };
    let envoy_or_kubernetes = [
        "static_resources",
        "admin",
        "node",
        "resources",
        "kind",
        "apiVersion",
        "typed_config",
    ]
    .iter()
    .any(|key| object.contains_key(*key));
    !envoy_or_kubernetes
}

fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[') | None
    )
}

/// A `WasmPlugin` whose `pluginConfig` Istio would hand to the filter.
fn wasm_plugin(at: &str, doc: &Value) -> Option<Found> {
    let metadata = &doc["metadata"];
    let name = metadata["name"].as_str().unwrap_or("?");
    let location = match metadata["namespace"].as_str() {
        Some(namespace) => format!("{at}: WasmPlugin {namespace}/{name}"),
        None => format!("{at}: WasmPlugin {name}"),
    };
    let spec = &doc["spec"];
    if !is_traffic_mirror(spec["pluginName"].as_str(), spec["url"].as_str()) {
        return None;
    }
    // A misspelt field of the spec (Kubernetes refuses it): named, not its consequence.
    let unknown = spec.as_object().and_then(|s| {
        s.keys()
            .find(|k| !WASM_PLUGIN_SPEC_FIELDS.contains(&k.as_str()))
    });
    if let Some(unknown) = unknown {
        let hint = closest(unknown, WASM_PLUGIN_SPEC_FIELDS)
            .map(|meant| format!(", did you mean \"{meant}\"?"))
            .unwrap_or_default();
        return Some(Found {
            location,
            configuration: Err(format!(
                "spec.{}: unknown field{hint} (a WasmPlugin's spec has: {})",
                unknown.escape_debug(),
                WASM_PLUGIN_SPEC_FIELDS.join(", ")
            )),
            answer_buffer: AnswerBuffer::Unknown,
            context: Context::WasmPlugin,
        });
    }
    // Istio sends no configuration for a missing or empty pluginConfig.
    let configuration = match &spec["pluginConfig"] {
        Value::Object(map) if !map.is_empty() => istio_json(&spec["pluginConfig"]),
        _ => String::new(),
    };
    Some(Found {
        location,
        configuration: Ok(configuration.into_bytes()),
        answer_buffer: AnswerBuffer::Unknown,
        context: Context::WasmPlugin,
    })
}

/// What an Envoy document sets its answer buffer to (see [`AnswerBuffer`]).
fn answer_buffer(doc: &Value) -> AnswerBuffer {
    let bootstrap = [
        "static_resources",
        "dynamic_resources",
        "layered_runtime",
        "admin",
    ]
    .iter()
    .any(|key| doc.get(*key).is_some());
    if !bootstrap {
        return AnswerBuffer::Unknown;
    }
    let layers = doc
        .pointer("/layered_runtime/layers")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut set = None;
    for layer in layers {
        if let Some(values) = layer.get("static_layer") {
            // Envoy flattens nested keys with dots; a later layer wins.
            let key = ANSWER_BUFFER_RUNTIME_KEY;
            let nested = format!("/{}", key.replace('.', "/"));
            if let Some(value) = values.get(key).or(values.pointer(&nested)) {
                set = Some(value.clone());
            }
        } else if layer.get("admin_layer").is_none() {
            // An RTDS or disk layer may set it: this file cannot tell.
            return AnswerBuffer::Unknown;
        }
    }
    match set {
        None => AnswerBuffer::Unset,
        Some(value) => {
            // Istio writes runtime values as strings; Envoy reads those as numbers too.
            let bytes = match &value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            bytes.map_or_else(
                || AnswerBuffer::Invalid(value.to_string()),
                AnswerBuffer::Set,
            )
        }
    }
}

fn is_traffic_mirror(root_id: Option<&str>, code: Option<&str>) -> bool {
    root_id == Some("traffic_mirror")
        || code.is_some_and(|c| c.contains("traffic-mirror") || c.contains("traffic_mirror"))
}

/// Every traffic-mirror wasm filter in an Envoy configuration (bootstrap, listener, ECDS
/// resource), wherever it is.
fn envoy_filters(at: &str, value: &Value, names: &mut Vec<String>, found: &mut Vec<Found>) {
    match value {
        Value::Object(object) => {
            let named = object
                .get("name")
                .and_then(Value::as_str)
                .map(|n| n.to_string());
            if let Some(name) = &named {
                names.push(name.clone());
            }
            if object.get("@type").and_then(Value::as_str) == Some(WASM_FILTER) {
                let config = &object["config"];
                let code = config
                    .pointer("/vm_config/code/local/filename")
                    .or(config.pointer("/vm_config/code/remote/http_uri/uri"))
                    .and_then(Value::as_str);
                if is_traffic_mirror(config["root_id"].as_str(), code) {
                    found.push(Found {
                        location: format!("{at}: {}", names.join(" > ")),
                        configuration: envoy_configuration(&config["configuration"]),
                        answer_buffer: AnswerBuffer::Unknown,
                        context: Context::Envoy {
                            clusters: None,
                            cds: false,
                            module: config
                                .pointer("/vm_config/code/local/filename")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        },
                    });
                }
            } else {
                for child in object.values() {
                    envoy_filters(at, child, names, found);
                }
            }
            if named.is_some() {
                names.pop();
            }
        }
        Value::Array(items) => {
            for item in items {
                envoy_filters(at, item, names, found);
            }
        }
        _ => {}
    }
}

/// The filter's `configuration`: what Envoy hands the module.
fn envoy_configuration(configuration: &Value) -> Result<Vec<u8>, String> {
    match configuration {
        Value::Null => Ok(Vec::new()),
        Value::Object(any) => match any.get("@type").and_then(Value::as_str) {
            Some(STRING_VALUE) => Ok(any
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .as_bytes()
                .to_vec()),
            other => Err(format!(
                "configuration is {}, not a google.protobuf.StringValue holding JSON",
                other.unwrap_or("untyped")
            )),
        },
        _ => Err("configuration is not a google.protobuf.StringValue holding JSON".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_configuration_is_taken_as_it_is() {
        let bytes = br#"{"targets": [{"name": "t", "cluster": "c", "percent": 1}]}"#;
        let found = configurations("p.json", bytes).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "p.json");
        assert_eq!(found[0].configuration.as_deref(), Ok(&bytes[..]));
        // Broken JSON too: the filter says what is wrong with it.
        let broken = configurations("p.json", b"{\"targets\": [").unwrap();
        assert_eq!(
            broken[0].configuration.as_deref(),
            Ok(&b"{\"targets\": ["[..])
        );
    }

    #[test]
    fn envoy_filters_are_found_with_their_location() {
        let yaml = r#"
static_resources:
  listeners:
  - name: ingress
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                root_id: traffic_mirror
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"targets": []}'
          - name: other
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config: {root_id: someone_else}
"#;
        let found = configurations("envoy.yaml", yaml.as_bytes()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].location,
            "envoy.yaml: ingress > envoy.filters.network.http_connection_manager > envoy.filters.http.wasm"
        );
        assert_eq!(
            found[0].configuration.as_deref(),
            Ok(&br#"{"targets": []}"#[..])
        );
    }

    #[test]
    fn the_answer_buffer_is_read_from_the_bootstraps_static_layers() {
        let bootstrap = |runtime: &str| {
            format!(
                r#"
{runtime}
static_resources:
  listeners:
  - name: ingress
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config: {{root_id: traffic_mirror}}
"#
            )
        };
        let read = |runtime: &str| {
            let found = configurations("envoy.yaml", bootstrap(runtime).as_bytes()).unwrap();
            assert_eq!(found.len(), 1);
            found[0].answer_buffer.clone()
        };
        assert_eq!(read(""), AnswerBuffer::Unset);
        assert_eq!(
            read("layered_runtime: {layers: [{name: s, static_layer: {http.async_response_buffer_limit: 65536}}]}"),
            AnswerBuffer::Set(65536)
        );
        assert_eq!(
            read("layered_runtime: {layers: [{name: s, static_layer: {http: {async_response_buffer_limit: '4096'}}}, {name: a, admin_layer: {}}]}"),
            AnswerBuffer::Set(4096)
        );
        assert_eq!(
            read("layered_runtime: {layers: [{name: a, static_layer: {http.async_response_buffer_limit: 1}}, {name: b, static_layer: {http.async_response_buffer_limit: 2}}]}"),
            AnswerBuffer::Set(2),
            "a later layer wins"
        );
        assert_eq!(
            read("layered_runtime: {layers: [{name: s, static_layer: {other: 1}}]}"),
            AnswerBuffer::Unset
        );
        assert_eq!(
            read("layered_runtime: {layers: [{name: s, static_layer: {http.async_response_buffer_limit: big}}]}"),
            AnswerBuffer::Invalid("\"big\"".to_string())
        );
        assert_eq!(
            read("layered_runtime: {layers: [{name: r, rtds_layer: {name: rt}}]}"),
            AnswerBuffer::Unknown
        );
    }

    #[test]
    fn wasm_plugins_are_rendered_as_istio_renders_them() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: x}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: tm, namespace: shop}
spec:
  pluginName: traffic_mirror
  pluginConfig:
    targets:
    - {name: t, percent: 10.0, cluster: "outbound|8080||a<b>&c", max_body_bytes: 1048576, max_rps: 0.5}
"#;
        let found = configurations("k.yaml", yaml.as_bytes()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "k.yaml (document 2): WasmPlugin shop/tm");
        assert_eq!(
            String::from_utf8(found[0].configuration.clone().unwrap()).unwrap(),
            r#"{"targets":[{"cluster":"outbound|8080||a\u003cb\u003e\u0026c","max_body_bytes":1048576,"max_rps":0.5,"name":"t","percent":10}]}"#
        );
    }

    #[test]
    fn a_file_without_a_configuration_is_an_error() {
        assert!(configurations("x.yaml", b"kind: Service\nmetadata: {name: a}\n").is_err());
        assert!(configurations("x", b"a: [").is_err());
    }
}
