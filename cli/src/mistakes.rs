//! The likely mistakes in a valid configuration that the module cannot see, because
//! they are in what surrounds it: a mirror cluster Envoy does not define, a cluster name
//! Istio does not use, a module file that is not there, an Envoy that holds more of each
//! answer than `max_answer_bytes` counts. Each names the JSON path it is about.

use std::path::Path;

use traffic_mirror_core::config::{Plan, ANSWER_BUFFER_RUNTIME_KEY};
use traffic_mirror_core::suggest::closest;

use crate::input::{AnswerBuffer, Context, Found};

/// How bad a mistake is: an error makes `check` exit 1; a warning leaves the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One likely mistake: where (a JSON path of the file) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistake {
    pub severity: Severity,
    pub path: String,
    pub problem: String,
}

impl Mistake {
    fn error(path: String, problem: String) -> Mistake {
        Mistake {
            severity: Severity::Error,
            path,
            problem,
        }
    }

    fn warning(path: String, problem: String) -> Mistake {
        Mistake {
            severity: Severity::Warning,
            path,
            problem,
        }
    }
}

/// Clusters Istio's bootstrap and istiod define besides `outbound|PORT|SUBSET|HOST`.
const ISTIO_STATIC_CLUSTERS: &[&str] = &[
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
    "xds-grpc",
    "sds-grpc",
    "agent",
    "prometheus_stats",
];

/// The likely mistakes of a valid `plan` found as `found` says.
pub fn find(plan: &Plan, found: &Found) -> Vec<Mistake> {
    let mut mistakes = Vec::new();
    match &found.context {
        Context::Envoy {
            clusters,
            cds,
            module,
        } => {
            if let Some(clusters) = clusters {
                mistakes.extend(unknown_clusters(plan, clusters, *cds));
            }
            if let Some(module) = module {
                mistakes.extend(missing_module(module));
            }
        }
        Context::WasmPlugin => mistakes.extend(non_istio_clusters(plan)),
        Context::Plugin => {}
    }
    mistakes.extend(answer_buffer(plan, &found.answer_buffer));
    mistakes
}

/// Targets whose cluster the Envoy configuration does not define: an error, or a
/// warning when clusters may also come from CDS.
fn unknown_clusters(plan: &Plan, clusters: &[String], cds: bool) -> Vec<Mistake> {
    let names: Vec<&str> = clusters.iter().map(String::as_str).collect();
    plan.targets
        .iter()
        .enumerate()
        .filter(|(_, t)| !names.contains(&t.cluster.as_str()))
        .map(|(i, t)| {
            let path = format!("targets[{i}].cluster");
            let hint = closest(&t.cluster, &names)
                .map(|meant| format!("did you mean \"{meant}\"? "))
                .unwrap_or_default();
            let defined = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            if cds {
                Mistake::warning(
                    path,
                    format!(
                        "no cluster \"{}\" among the static ones ({defined}); it must come from CDS, or every copy counts in dispatch_failed",
                        t.cluster
                    ),
                )
            } else {
                Mistake::error(
                    path,
                    format!(
                        "no cluster \"{}\" in this Envoy configuration: {hint}it defines {defined}; every copy would count in dispatch_failed",
                        t.cluster
                    ),
                )
            }
        })
        .collect()
}

/// Targets of a `WasmPlugin` whose cluster is not a name Istio gives its clusters.
fn non_istio_clusters(plan: &Plan) -> Vec<Mistake> {
    plan.targets
        .iter()
        .enumerate()
        .filter(|(_, t)| !is_istio_cluster(&t.cluster))
        .map(|(i, t)| {
            Mistake::error(
                format!("targets[{i}].cluster"),
                format!(
                    "\"{}\" is not a cluster Istio defines: Istio names the cluster of a service port outbound|PORT|SUBSET|HOST, e.g. outbound|8080||{}.NAMESPACE.svc.cluster.local; every copy would count in dispatch_failed",
                    t.cluster,
                    t.cluster.split(['.', '|', ':']).next().unwrap_or("SERVICE")
                ),
            )
        })
        .collect()
}

/// `outbound|PORT|SUBSET|HOST` (port 1 to 65535, a host) or one of Istio's own clusters.
fn is_istio_cluster(cluster: &str) -> bool {
    if ISTIO_STATIC_CLUSTERS.contains(&cluster) {
        return true;
    }
    let parts: Vec<&str> = cluster.split('|').collect();
    match parts.as_slice() {
        ["outbound", port, _subset, host] => {
            port.parse::<u16>().is_ok_and(|p| p > 0) && !host.is_empty()
        }
        _ => false,
    }
}

/// A module file that is not there: an absolute path on this machine, a relative one
/// from the current directory, as Envoy would open it from its own.
fn missing_module(module: &str) -> Option<Mistake> {
    if Path::new(module).is_file() {
        return None;
    }
    let message = if Path::new(module).is_absolute() {
        format!(
            "no file {module} on this machine: where Envoy runs (a container, another host) it must be there, or Envoy fails to load the filter"
        )
    } else {
        let here = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".to_string());
        format!(
            "no file {module} from {here}: Envoy opens a relative path from its own working directory, or fails to load the filter"
        )
    };
    Some(Mistake::warning(
        "vm_config.code.local.filename".to_string(),
        message,
    ))
}

/// An Envoy bootstrap that would hold more of each copy's answer than the plan counts
/// (`max_answer_bytes`): a warning, since the configuration is valid and the memory bound
/// is what is at stake.
fn answer_buffer(plan: &Plan, answer_buffer: &AnswerBuffer) -> Option<Mistake> {
    if plan.targets.is_empty() {
        return None;
    }
    let want = plan.max_answer_bytes;
    let key = ANSWER_BUFFER_RUNTIME_KEY;
    let fix = format!(
        "set it to max_answer_bytes ({want}) in layered_runtime (a static_layer), or Envoy holds each copy's answer up to"
    );
    let problem = match answer_buffer {
        AnswerBuffer::Unknown => return None,
        AnswerBuffer::Set(have) if *have <= want as u64 => return None,
        AnswerBuffer::Unset => format!(
            "Envoy's runtime value {key} is not set: {fix} 32 MiB, outside max_in_flight_bytes"
        ),
        AnswerBuffer::Set(have) => format!(
            "Envoy's runtime value {key} is {have}, more than max_answer_bytes ({want}): {fix} {have} bytes, outside max_in_flight_bytes"
        ),
        AnswerBuffer::Invalid(value) => format!(
            "Envoy's runtime value {key} is {value}, not a number of bytes: {fix} 32 MiB, outside max_in_flight_bytes"
        ),
    };
    Some(Mistake::warning("layered_runtime".to_string(), problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_cluster_names_are_outbound_port_subset_host_or_istios_own() {
        for ok in [
            "outbound|8080||checkout.shop-staging.svc.cluster.local",
            "outbound|443|v2|api.example.com",
            "PassthroughCluster",
        ] {
            assert!(is_istio_cluster(ok), "{ok}");
        }
        for bad in [
            "checkout-staging",
            "outbound|8080|checkout",
            "outbound|0||a",
            "outbound|99999||a",
            "outbound|http||a",
            "outbound|8080||",
            "inbound|8080||",
        ] {
            assert!(!is_istio_cluster(bad), "{bad}");
        }
    }
}
