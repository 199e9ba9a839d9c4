//! `traffic-mirror explain FILE [...]`: what the filter would do with one request.

use serde_json::json;
use traffic_mirror_core::config::{self, Plan};
use traffic_mirror_core::explain::{explain, Explanation};
use traffic_mirror_core::request::HeaderList;

use crate::cli::ExplainArgs;
use crate::input::{self, Problem};

/// The one configuration in FILE, compiled; on failure the exit status (its error line
/// printed: 1 for an invalid configuration, 2 for anything else).
pub fn one_plan(file: &str) -> Result<Plan, u8> {
    let found = input::read(file)
        .map_err(Problem::Unreadable)
        .and_then(|bytes| input::configurations(file, &bytes))
        .map_err(|problem| {
            match problem {
                Problem::Unreadable(e) | Problem::NoConfiguration(e) => eprintln!("{e}"),
            }
            2
        })?;
    let [only] = found.as_slice() else {
        eprintln!(
            "{file}: holds {} traffic-mirror configurations; give a file with one",
            found.len()
        );
        return Err(2);
    };
    let bytes = only.configuration.as_ref().map_err(|why| {
        eprintln!("{}: traffic-mirror: {why}", only.location);
        1
    })?;
    config::parse(bytes).map_err(|e| {
        eprintln!("{}: {e}", only.location);
        1
    })
}

pub fn run(args: &ExplainArgs) -> u8 {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for header in &args.headers {
        match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => headers.push((
                name.trim().to_ascii_lowercase(),
                value.trim().as_bytes().to_vec(),
            )),
            _ => return usage(&format!("-H takes 'name: value', got {header:?}")),
        }
    }
    // Envoy refuses a request whose path does not start with '/' (400, before any filter).
    if !args.path.starts_with('/') {
        return usage(&format!(
            "--path must start with '/' (Envoy refuses any other path before the filter sees it), got {:?}",
            args.path
        ));
    }
    let (method, path, authority) = (
        args.method.to_ascii_uppercase(),
        args.path.clone(),
        args.authority.clone(),
    );
    let file = &args.file;
    let plan = match one_plan(file) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    // The request as it reaches the filter: pseudo-headers first, as Envoy orders them.
    let mut request = HeaderList::default();
    for (name, value) in [
        (":authority", authority.as_bytes()),
        (":path", path.as_bytes()),
        (":method", method.as_bytes()),
        (":scheme", b"http".as_slice()),
    ] {
        request.headers.push((name.to_string(), value.to_vec()));
    }
    request.headers.extend(headers);
    let explanation = explain(&plan, &mut request);
    if args.json {
        println!("{}", to_json(&explanation));
    } else {
        print_text(&plan, &method, &path, &authority, &explanation);
    }
    0
}

fn to_json(explanation: &Explanation) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = explanation
        .targets
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "mirrored": t.mirrored,
                "reason": t.reason.name(),
                "bucket": t.bucket,
                "threshold": t.threshold,
            })
        })
        .collect();
    json!({"lane": explanation.lane, "targets": targets})
}

fn print_text(plan: &Plan, method: &str, path: &str, authority: &str, explanation: &Explanation) {
    println!("request: {method} {path} (:authority {authority})");
    // Said only when a copy may be sent.
    if explanation.grpc
        && explanation
            .targets
            .iter()
            .any(|t| t.mirrored != Some(false))
    {
        println!(
            "a gRPC call: if mirrored, a copy is sent once the client has sent its last message, to a mirror cluster that speaks HTTP/2, and its answer is counted by grpc-status too (grpc_status.<code>)"
        );
    }
    if let Some(lanes) = &plan.lanes {
        match &explanation.lane {
            Some(lane) => println!(
                "lane: {lane} ({}: {lane}; {})",
                lanes.header, explanation.lane_detail
            ),
            None => println!(
                "lane: none ({} removed; {})",
                lanes.header, explanation.lane_detail
            ),
        }
        match &explanation.baggage {
            Some(Some(list)) => println!("baggage: {list}"),
            Some(None) => println!("baggage: none"),
            None => {}
        }
    }
    for (verdict, target) in explanation.targets.iter().zip(&plan.targets) {
        let outcome = match verdict.mirrored {
            Some(true) => "mirrored".to_string(),
            Some(false) => format!("not mirrored ({})", verdict.reason.name()),
            None => "mirrored or not, at random (random)".to_string(),
        };
        println!("target {}: {outcome}: {}", verdict.name, verdict.detail);
        if let Some(copy) = &verdict.copy {
            println!(
                "  the copy, to cluster {} (timeout {} ms), if the body and the limits allow:",
                target.cluster, target.timeout_ms
            );
            for (name, value) in copy {
                println!(
                    "    {}: {}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(value)
                );
            }
        }
        if let Some(compared) = &verdict.compared {
            println!("  {compared}");
        }
    }
    if plan.targets.is_empty() {
        println!("no targets: nothing is mirrored");
    }
}

fn usage(problem: &str) -> u8 {
    eprintln!("traffic-mirror explain: {problem}\n(traffic-mirror explain --help says more)");
    2
}
