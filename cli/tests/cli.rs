//! The `traffic-mirror` command as a user runs it, without an Envoy: `check` over every
//! shipped configuration and over every bad configuration the unit tests know, its exit
//! statuses, standard input, `explain` and `sample`. (Its agreement with the module in a
//! real Envoy is in tests/e2e/command.rs.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../tests/support/command.rs"]
mod command;

use std::path::{Path, PathBuf};
use std::process::Output;

fn repo() -> PathBuf {
    command::repo()
}

/// Runs the command in the repository with `stdin`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    command::traffic_mirror(args, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every shipped file with a traffic-mirror configuration.
fn shipped() -> Vec<String> {
    let mut files = vec![
        "envoy/envoy.yaml".to_string(),
        "envoy/sidecar.yaml".to_string(),
        "envoy/lanes.yaml".to_string(),
        "envoy/grpc.yaml".to_string(),
        "envoy/compare.yaml".to_string(),
        "envoy/swimlanes.yaml".to_string(),
        "envoy/compose/envoy.yaml".to_string(),
        "envoy/compose/sidecar-envoy.yaml".to_string(),
    ];
    // The WasmPlugin manifests (proxy-runtime/ holds the proxies' runtime value, no
    // plugin configuration).
    let mut istio: Vec<String> = std::fs::read_dir(repo().join("envoy/istio"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| format!("envoy/istio/{}", e.file_name().to_string_lossy()))
        .collect();
    istio.sort();
    files.extend(istio);
    files
}

#[test]
fn check_passes_every_shipped_configuration() {
    let files = shipped();
    let args: Vec<&str> = std::iter::once("check")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = run(&args, b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // The one warning of each compose config: it names the module by its path in the
    // container.
    let (warnings, lines): (Vec<&str>, Vec<&str>) =
        stdout.lines().partition(|l| l.contains(": warning: "));
    let warning = |file: &str, listener: &str, summary: &str| {
        format!(
            "{file}: {listener} > envoy.filters.network.http_connection_manager > \
             envoy.filters.http.wasm: warning: vm_config.code.local.filename: no file \
             /etc/envoy/traffic_mirror.wasm on this machine: where Envoy runs (a container, \
             another host) it must be there, or Envoy fails to load the filter ({summary})"
        )
    };
    assert_eq!(
        warnings,
        [
            warning("envoy/compose/envoy.yaml", "ingress", "targets mirror"),
            warning(
                "envoy/compose/sidecar-envoy.yaml",
                "inbound",
                "targets staging"
            )
        ],
        "(the module must be built: cargo build --target wasm32-wasip1 --release --lib)"
    );
    // One line for each configuration.
    assert_eq!(lines.len() + warnings.len(), files.len(), "{stdout}");
    for line in &lines {
        assert!(files.iter().any(|f| line.starts_with(f.as_str())), "{line}");
        assert!(line.contains(": ok ("), "{line}");
    }
    assert!(stdout.contains("envoy/lanes.yaml: ingress > envoy.filters.network.http_connection_manager > envoy.filters.http.wasm: ok (lanes canary, beta, stable (header x-lane))"), "{stdout}");
    assert!(stdout.contains("envoy/istio/wasmplugin-sidecar.yaml: WasmPlugin shop/traffic-mirror: ok (targets staging)"), "{stdout}");
    assert!(stdout.contains("envoy/istio/swimlanes-hop.yaml: WasmPlugin shop/swimlanes-hop: ok (lanes followed feature-17 (header x-lane, baggage lane))"), "{stdout}");
    assert!(stdout.contains("envoy/swimlanes.yaml: outbound_reviews > envoy.filters.network.http_connection_manager > envoy.filters.http.wasm: ok (lanes followed feature-17 (header x-lane, baggage lane))"), "{stdout}");
}

#[test]
fn check_takes_directories_and_globs_and_skips_files_without_a_configuration() {
    for path in ["envoy/", "envoy/*.yaml"] {
        let out = run(&["check", path], b"");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{path}: {stdout}{stderr}");
        assert!(
            stdout.contains("envoy/grpc.yaml: ingress > envoy.filters.network.http_connection_manager > envoy.filters.http.wasm: ok (targets staging)"),
            "{path}: {stdout}"
        );
        assert!(
            stderr.contains(
                "note: envoy/docker-compose.yaml: holds no traffic-mirror configuration; skipped"
            ),
            "{path}: {stderr}"
        );
    }
    let dir = run(&["check", "envoy/"], b"");
    let stdout = text(&dir.stdout);
    // Recursive: the compose and Istio files under envoy/ too.
    for nested in [
        "envoy/compose/envoy.yaml: ",
        "envoy/istio/wasmplugin-sidecar.yaml: ",
    ] {
        assert!(stdout.contains(nested), "{nested} in {stdout}");
    }
    let none = run(&["check", "envoy/nothing-*.yaml"], b"");
    assert_eq!(none.status.code(), Some(2));
    assert_eq!(
        text(&none.stderr),
        "envoy/nothing-*.yaml: matches no file\n"
    );
}

/// Runs `check` on `content` written to a file `name` of its own; (exit status, stdout).
fn check_file(name: &str, content: &str) -> (Option<i32>, String) {
    let dir = tempdir("mistakes");
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let out = run(&["check", path.to_str().unwrap()], b"");
    let stdout = text(&out.stdout).replace(&format!("{}/", dir.display()), "");
    (
        out.status.code(),
        stdout + &text(&out.stderr).replace(&format!("{}/", dir.display()), ""),
    )
}

#[test]
fn check_names_a_mirror_cluster_envoy_does_not_define() {
    let shipped = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let typo = shipped.replace(r#""cluster": "staging""#, r#""cluster": "stagging""#);
    assert_ne!(typo, shipped);
    let location = "envoy.yaml: ingress > envoy.filters.network.http_connection_manager > envoy.filters.http.wasm";
    assert_eq!(
        check_file("envoy.yaml", &typo),
        (
            Some(1),
            format!(
                "{location}: error: targets[0].cluster: no cluster \"stagging\" in this Envoy \
                 configuration: did you mean \"staging\"? it defines primary, staging; every copy \
                 would count in dispatch_failed (targets staging)\n"
            )
        )
    );
    // Clusters may also come from CDS: a warning only.
    let cds = typo.replacen(
        "static_resources:",
        "dynamic_resources:\n  cds_config: {ads: {}}\nstatic_resources:",
        1,
    );
    let (status, out) = check_file("envoy.yaml", &cds);
    assert_eq!(status, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{location}: warning: targets[0].cluster: no cluster \"stagging\" among the static ones (primary, staging); it must come from CDS"
        )),
        "{out}"
    );
}

#[test]
fn check_names_a_wasmplugin_cluster_that_is_not_istios_and_a_misspelt_spec_field() {
    let plugin = |spec: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: tm, namespace: shop}}\nspec:\n  url: oci://registry.example.com/traffic-mirror:0.1.0\n{spec}"
        )
    };
    let (status, out) = check_file(
        "wp.yaml",
        &plugin(
            "  pluginConfig:\n    targets: [{name: t, cluster: checkout-staging, percent: 1}]\n",
        ),
    );
    assert_eq!(status, Some(1), "{out}");
    assert_eq!(
        out,
        "wp.yaml: WasmPlugin shop/tm: error: targets[0].cluster: \"checkout-staging\" is not a \
         cluster Istio defines: Istio names the cluster of a service port \
         outbound|PORT|SUBSET|HOST, e.g. outbound|8080||checkout-staging.NAMESPACE.svc.cluster.local; \
         every copy would count in dispatch_failed (targets t)\n"
    );
    let (status, out) = check_file(
        "wp.yaml",
        &plugin("  pluginConfig:\n    targets: [{name: t, cluster: \"outbound|8080||c.shop-staging.svc.cluster.local\", percent: 1}]\n"),
    );
    assert_eq!((status, out.lines().count()), (Some(0), 1), "{out}");
    let (status, out) = check_file(
        "wp.yaml",
        &plugin("  pluginconfig:\n    targets: [{name: t, cluster: c, percent: 1}]\n"),
    );
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.starts_with(
            "wp.yaml: WasmPlugin shop/tm: error: spec.pluginconfig: unknown field, did you mean \"pluginConfig\"? (a WasmPlugin's spec has: selector, "
        ),
        "{out}"
    );
}

#[test]
fn check_names_a_misspelt_field_in_yaml_and_gives_a_yaml_error_alone() {
    let (status, out) = check_file(
        "plugin.yaml",
        "targts:\n- {name: t, cluster: c, percent: 1}\n",
    );
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.starts_with(
            "plugin.yaml: traffic-mirror: invalid configuration: targts: unknown field, did you mean \"targets\"?"
        ),
        "{out}"
    );
    let (status, out) = check_file(
        "plugin.yaml",
        "targets:\n- {name: t, cluster: c, precent: 1}\n",
    );
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.starts_with(
            "plugin.yaml: traffic-mirror: invalid configuration: targets[0].precent: unknown field, did you mean \"percent\"?"
        ),
        "{out}"
    );
    let (status, out) = check_file("broken.yaml", "targets: [\n  - a: b\n");
    assert_eq!(status, Some(2), "{out}");
    assert!(out.starts_with("broken.yaml: not valid YAML: "), "{out}");
    assert!(!out.contains("JSON"), "{out}");
}

#[test]
fn the_command_keeps_command_line_habits() {
    for args in [
        &["--help"][..],
        &["check", "--help"],
        &["explain", "--help"],
        &["sample", "--help"],
        &["help", "check"],
        &["--version"],
        &["completions", "bash"],
    ] {
        let out = run(args, b"");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    assert!(text(&run(&["check", "--help"], b"").stdout).contains("Exit status: 0"));
    assert_eq!(
        text(&run(&["--version"], b"").stdout),
        format!("traffic-mirror {}\n", env!("CARGO_PKG_VERSION"))
    );
    let unknown = run(&["chek", "envoy/envoy.yaml"], b"");
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = text(&unknown.stderr);
    assert!(
        stderr.contains("unrecognized subcommand 'chek'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a similar subcommand exists: 'check'"),
        "{stderr}"
    );
    // --flag=value as well as --flag value.
    let equals = run(
        &[
            "explain",
            "envoy/envoy.yaml",
            "--path=/api/x",
            "--header=x-user-id: u-1",
        ],
        b"",
    );
    assert_eq!(equals.status.code(), Some(0), "{}", text(&equals.stderr));
    assert!(text(&equals.stdout).starts_with("request: GET /api/x (:authority example.com)"));
}

#[test]
fn explain_refuses_a_path_envoy_would_refuse() {
    let out = run(&["explain", "envoy/envoy.yaml", "--path", "api/items"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("traffic-mirror explain: --path must start with '/'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sample_suggests_lanes_and_says_what_it_reads_at_a_terminal() {
    let out = run(&["sample", "envoy/lanes.yaml"], b"user-1\n");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "traffic-mirror sample: envoy/lanes.yaml has lanes but no target: sample --lanes prints each key's lane\n"
    );
    // At a terminal (script(1) gives the command one), it says it reads keys.
    let binary = env!("CARGO_BIN_EXE_traffic-mirror");
    let out = std::process::Command::new("timeout")
        .args([
            "20",
            "script",
            "-qec",
            &format!("{binary} sample envoy/envoy.yaml"),
            "/dev/null",
        ])
        .current_dir(repo())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("timeout(1) and script(1), from coreutils and util-linux");
    let all = text(&out.stdout);
    assert!(
        all.contains("reading sampling keys from standard input, one per line (end with Ctrl-D)"),
        "{all}"
    );
}

#[test]
fn check_prints_the_parsers_line_for_every_bad_configuration() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/data/bad_configs.json")).unwrap(),
    )
    .unwrap();
    for case in &cases {
        let config = case["config"].as_str().unwrap();
        let out = run(&["check", "-"], config.as_bytes());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{config}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            format!("-: {}\n", case["error"].as_str().unwrap()),
            "{config}"
        );
    }
}

#[test]
fn exit_status_says_what_went_wrong() {
    let dir = tempdir("exit");
    let good = dir.join("good.json");
    std::fs::write(
        &good,
        r#"{"targets": [{"name": "t", "cluster": "c", "percent": 1}]}"#,
    )
    .unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"targets": []}"#).unwrap();
    let good = good.to_str().unwrap();
    let bad = bad.to_str().unwrap();
    assert_eq!(run(&["check", good], b"").status.code(), Some(0));
    assert_eq!(run(&["check", good, bad], b"").status.code(), Some(1));
    let missing = run(&["check", good, "no/such/file.json"], b"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("no/such/file.json: cannot read"),
        "{}",
        text(&missing.stderr)
    );
    let none = run(&["check", "envoy/docker-compose.yaml"], b"");
    assert_eq!(none.status.code(), Some(2));
    assert_eq!(
        text(&none.stderr),
        "envoy/docker-compose.yaml: holds no traffic-mirror configuration\n"
    );
    assert_eq!(run(&["check"], b"").status.code(), Some(2));
    let unknown = run(&["frobnicate"], b"");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).starts_with("error: unrecognized subcommand 'frobnicate'"),
        "{}",
        text(&unknown.stderr)
    );
}

#[test]
fn check_warns_when_envoy_would_hold_more_of_an_answer_than_max_answer_bytes() {
    let shipped = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let key = "http.async_response_buffer_limit: 65536";
    assert!(shipped.contains(key), "envoy/envoy.yaml sets {key}");
    let dir = tempdir("answer-buffer");
    let check = |name: &str, yaml: &str| {
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        let out = run(&["check", path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(0), "a warning is not an error");
        let stdout = text(&out.stdout);
        let warnings: Vec<String> = stdout
            .lines()
            .filter_map(|l| {
                l.split_once(": warning: layered_runtime: ").map(|(_, w)| {
                    w.strip_suffix(" (targets staging)")
                        .unwrap_or(w)
                        .to_string()
                })
            })
            .collect();
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
        assert!(
            stdout.trim_end().ends_with(" (targets staging)"),
            "{stdout}"
        );
        warnings
    };
    assert_eq!(check("same.yaml", &shipped), Vec::<String>::new());
    let lower = shipped.replace(key, "http.async_response_buffer_limit: 1024");
    assert_eq!(check("lower.yaml", &lower), Vec::<String>::new());
    let unset = shipped.replace(key, "other.key: 1");
    assert_eq!(
        check("unset.yaml", &unset),
        [
            "Envoy's runtime value http.async_response_buffer_limit is not set: set it to \
          max_answer_bytes (65536) in layered_runtime (a static_layer), or Envoy holds each \
          copy's answer up to 32 MiB, outside max_in_flight_bytes"
        ]
    );
    let higher = shipped.replace(key, "http.async_response_buffer_limit: \"1048576\"");
    assert_eq!(
        check("higher.yaml", &higher),
        [
            "Envoy's runtime value http.async_response_buffer_limit is 1048576, more than \
          max_answer_bytes (65536): set it to max_answer_bytes (65536) in layered_runtime (a \
          static_layer), or Envoy holds each copy's answer up to 1048576 bytes, outside \
          max_in_flight_bytes"
        ]
    );
    // A plugin whose max_answer_bytes matches a higher runtime value is fine.
    let raised = higher.replace(
        "\"targets\": [",
        "\"max_answer_bytes\": 1048576, \"targets\": [",
    );
    assert_ne!(raised, higher);
    assert_eq!(check("raised.yaml", &raised), Vec::<String>::new());
}

#[test]
fn a_wasmplugin_is_checked_as_istio_hands_it_over() {
    // Integral numbers arrive without a fraction (a Struct holds doubles), so 1048576.0
    // is a valid max_body_bytes, as it is in the cluster.
    let yaml = b"apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: tm, namespace: shop}
spec:
  url: oci://registry.example.com/traffic-mirror:0.1.0
  pluginConfig:
    targets:
    - {name: t, cluster: \"outbound|80||c.shop.svc.cluster.local\", percent: 10, max_body_bytes: 1048576.0}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: broken, namespace: shop}
spec:
  pluginName: traffic_mirror
  pluginConfig:
    targets:
    - {name: t, cluster: c, percent: 10.5, max_body_bytes: 1.5}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: empty, namespace: shop}
spec:
  pluginName: traffic_mirror
";
    let out = run(&["check", "-"], yaml);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "- (document 1): WasmPlugin shop/tm: ok (targets t)\n\
         - (document 2): WasmPlugin shop/broken: traffic-mirror: invalid configuration: targets[0].max_body_bytes: must be an integer, got 1.5\n\
         - (document 3): WasmPlugin shop/empty: traffic-mirror: invalid configuration: $: invalid JSON: EOF while parsing a value at line 1 column 0\n"
    );
}

#[test]
fn explain_says_why_for_each_target_and_shows_the_copy() {
    let plugin = r#"{"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "checkout-2026-11",
        "split": [{"lane": "canary", "percent": 5}, {"lane": "beta", "percent": 10}], "default": "stable"},
      "targets": [
        {"name": "canary-only", "cluster": "m", "percent": 100, "sample_by": {"header": "x-user-id"},
         "match": {"headers": {"x-lane": "canary"}}},
        {"name": "api", "cluster": "m", "percent": 50, "sample_by": {"header": "x-user-id"},
         "match": {"path_prefix": "/api/"}, "headers": {"remove": ["cookie"], "redact": ["authorization"]}},
        {"name": "by-cookie", "cluster": "m", "percent": 50, "sample_by": {"cookie": "sid"}}
      ]}"#;
    let args = [
        "explain",
        "-",
        "--path",
        "/shop/x",
        "-H",
        "x-user-id: user-6",
        "--json",
    ];
    let out = run(&args, plugin.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"lane": "canary", "targets": [
            {"name": "canary-only", "mirrored": true, "reason": "sampled", "bucket": 39_008, "threshold": 1_000_000},
            {"name": "api", "mirrored": false, "reason": "no_match", "bucket": null, "threshold": 500_000},
            {"name": "by-cookie", "mirrored": false, "reason": "missing_key", "bucket": null, "threshold": 500_000}
        ]})
    );
    let text_out = run(
        &[
            "explain",
            "-",
            "--method",
            "post",
            "--path",
            "/api/orders?x=1",
            "--authority",
            "shop.example.com:8443",
            "-H",
            "x-user-id: user-6",
            "-H",
            "authorization: Bearer s3cr3t",
            "-H",
            "cookie: sid=abc",
        ],
        plugin.as_bytes(),
    );
    let stdout = text(&text_out.stdout);
    assert!(stdout.starts_with("request: POST /api/orders?x=1 (:authority shop.example.com:8443)\nlane: canary (x-lane: canary; bucket 30175 of header x-user-id"), "{stdout}");
    // Independent buckets (Python xxhash): api:user-6 421728, by-cookie:abc 858212.
    assert!(
        stdout.contains(
            "target api: mirrored: bucket 421728 of header x-user-id (salt \"api\") < threshold 500000\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("target by-cookie: not mirrored (not_sampled): bucket 858212 of cookie sid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    :authority: shop.example.com-shadow:8443\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    authorization: [REDACTED]\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    x-traffic-mirror: canary-only\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    x-lane: canary\n"), "{stdout}");
}

#[test]
fn explain_tells_a_grpc_call_by_its_content_type() {
    // A user the shipped gRPC config mirrors (10 %, salt "staging").
    let user = (0..)
        .map(|i| format!("u-{i}"))
        .find(|u| {
            traffic_mirror_core::sampling::bucket(b"staging", u.as_bytes())
                < traffic_mirror_core::sampling::threshold(10.0)
        })
        .unwrap();
    let header = format!("x-user-id: {user}");
    let args = [
        "explain",
        "envoy/grpc.yaml",
        "--method",
        "POST",
        "--path",
        "/shop.Cart/Checkout",
        "-H",
        "content-type: application/grpc",
        "-H",
        &header,
    ];
    let out = run(&args, b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "request: POST /shop.Cart/Checkout (:authority example.com)"
    );
    assert!(
        lines[1].starts_with("a gRPC call: if mirrored, a copy is sent"),
        "{stdout}"
    );
    assert!(lines[1].contains("grpc_status.<code>"), "{stdout}");
    assert!(
        lines[2].starts_with("target staging: mirrored: "),
        "{stdout}"
    );
    for copied in [
        "    content-type: application/grpc",
        "    x-traffic-mirror: staging",
    ] {
        assert!(lines.contains(&copied), "{copied} in {stdout}");
    }
    // Another service of the same proxy: the match says no; not gRPC: no gRPC line.
    let other = run(
        &[
            "explain",
            "envoy/grpc.yaml",
            "--method",
            "POST",
            "--path",
            "/shop.Orders/List",
            "-H",
            &header,
        ],
        b"",
    );
    let stdout = text(&other.stdout);
    assert!(!stdout.contains("gRPC"), "{stdout}");
    assert!(
        stdout.contains(
            "target staging: not mirrored (no_match): match.path_prefix: the path does not start with /shop.Cart/"
        ),
        "{stdout}"
    );
    // A gRPC call no target copies: nothing on how its copy would be sent.
    let unmatched = run(
        &[
            "explain",
            "envoy/grpc.yaml",
            "--method",
            "POST",
            "--path",
            "/shop.Orders/List",
            "-H",
            "content-type: application/grpc",
            "-H",
            &header,
        ],
        b"",
    );
    let stdout = text(&unmatched.stdout);
    assert!(!stdout.contains("gRPC"), "{stdout}");
}

#[test]
fn explain_says_a_declared_length_over_the_cap_is_not_mirrored() {
    // user-42 is sampled by the shipped target staging (bucket 89171 < 250000), whose
    // max_body_bytes is 1 MiB: the module counts such a request in skipped_body_too_large.
    let args = |length: &'static str| {
        [
            "explain",
            "envoy/envoy.yaml",
            "--method",
            "POST",
            "--path",
            "/api/items",
            "-H",
            "x-user-id: user-42",
            "-H",
            length,
            "--json",
        ]
    };
    let over = run(&args("content-length: 1048577"), b"");
    let json: serde_json::Value = serde_json::from_slice(&over.stdout).unwrap();
    assert_eq!(
        json["targets"][0],
        serde_json::json!({"name": "staging", "mirrored": false, "reason": "body_too_large",
                           "bucket": 89_171, "threshold": 250_000})
    );
    let within = run(&args("content-length: 1048576"), b"");
    let json: serde_json::Value = serde_json::from_slice(&within.stdout).unwrap();
    assert_eq!(json["targets"][0]["reason"], "sampled");
    assert_eq!(json["targets"][0]["mirrored"], true);
}

#[test]
fn sample_prints_the_mirrored_keys_and_the_lanes() {
    let plugin = r#"{"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "checkout-2026-11",
        "split": [{"lane": "canary", "percent": 5}, {"lane": "beta", "percent": 10}]},
      "targets": [{"name": "all", "cluster": "m", "percent": 100}, {"name": "none", "cluster": "m", "percent": 0},
                  {"name": "dice", "cluster": "m", "percent": 50, "sample_by": {"random": true}}]}"#;
    let dir = tempdir("sample");
    let file = dir.join("plugin.json");
    std::fs::write(&file, plugin).unwrap();
    let file = file.to_str().unwrap();
    let keys = b"user-6\nuser-42\r\nuser-1\n\n";
    let lanes = run(&["sample", file, "--lanes"], keys);
    assert_eq!(
        text(&lanes.stdout),
        "user-6\tcanary\nuser-42\tbeta\nuser-1\t\n\t\n"
    );
    assert!(
        text(&lanes.stderr).contains("canary 1 (25.00 %), beta 1 (25.00 %), no lane 2 (50.00 %)"),
        "{}",
        text(&lanes.stderr)
    );
    let all = run(&["sample", file], keys);
    assert_eq!(text(&all.stdout), "user-6\nuser-42\nuser-1\n");
    assert_eq!(
        text(&run(&["sample", file, "--target", "none"], keys).stdout),
        ""
    );
    let dice = run(&["sample", file, "--target", "dice"], keys);
    assert_eq!(dice.status.code(), Some(2));
    assert!(text(&dice.stderr).contains("samples at random"));
    assert_eq!(
        run(&["sample", file, "--target", "nope"], keys)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn explain_shows_the_lane_an_edge_writes_into_baggage_and_the_lane_a_hop_follows() {
    let dir = tempdir("swimlanes");
    let edge = dir.join("edge.json");
    std::fs::write(
        &edge,
        r#"{"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "checkout-2026-11",
            "split": [{"lane": "canary", "percent": 5}], "default": "main", "baggage": "lane"}}"#,
    )
    .unwrap();
    let hop = dir.join("hop.json");
    std::fs::write(
        &hop,
        r#"{"lanes": {"header": "x-lane", "baggage": "lane", "follow": ["canary", "feature-17"]}}"#,
    )
    .unwrap();
    let (edge, hop) = (edge.to_str().unwrap(), hop.to_str().unwrap());

    let check = run(&["check", edge, hop], b"");
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    assert_eq!(
        text(&check.stdout),
        format!(
            "{edge}: ok (lanes canary, main (header x-lane, baggage lane))\n\
             {hop}: ok (lanes followed canary, feature-17 (header x-lane, baggage lane))\n"
        )
    );

    // The edge: a forged lane entry replaced, the other entries and fields kept.
    let out = run(
        &[
            "explain",
            edge,
            "-H",
            "x-user-id: user-6",
            "-H",
            "baggage: userId=alice, lane=admin",
            "-H",
            "baggage: k=v",
        ],
        b"",
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("lane: canary (x-lane: canary; bucket 30175 of header x-user-id"),
        "{stdout}"
    );
    assert!(
        stdout.contains("baggage: lane=canary,userId=alice,k=v\n"),
        "{stdout}"
    );

    // A hop: the baggage lane becomes the header, or the header goes.
    let follows = |baggage: &str| {
        let out = run(
            &[
                "explain",
                hop,
                "-H",
                &format!("baggage: {baggage}"),
                "-H",
                "x-lane: stale",
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(0));
        text(&out.stdout)
    };
    assert!(follows("a=1,lane=feature-17")
        .contains("lane: feature-17 (x-lane: feature-17; followed from baggage lane)\n"));
    assert!(follows("lane=admin").contains(
        "lane: none (x-lane removed; baggage lane=admin is not a lane this hop follows)\n"
    ));
    assert!(follows("a=1").contains("lane: none (x-lane removed; no lane in baggage)\n"));
    let json = run(
        &["explain", hop, "-H", "baggage: lane=canary", "--json"],
        b"",
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["lane"], "canary");

    let sample = run(&["sample", hop, "--lanes"], b"u1\n");
    assert_eq!(sample.status.code(), Some(2));
    assert!(text(&sample.stderr).contains("follows lanes from baggage"));
}

/// The completion script for `shell`, saved in a file.
fn completion_script(shell: &str) -> PathBuf {
    let out = run(&["completions", shell], b"");
    assert_eq!(out.status.code(), Some(0));
    let path = tempdir("completions").join(format!("traffic-mirror.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// A shell from Debian's packages, which `scripts/setup.sh test` installs.
fn shell(name: &str) -> std::process::Command {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: scripts/setup.sh test installs it (apt-get install {name})"
    );
    let mut command = std::process::Command::new(name);
    command.current_dir(repo());
    command
}

/// What each shell offers for these command lines: a subcommand, a flag of it, a file
/// for its FILE, a flag's value left free, and a fixed list of values.
const COMPLETED: [(&str, &str); 5] = [
    ("traffic-mirror ex", "explain"),
    ("traffic-mirror explain --me", "--method"),
    ("traffic-mirror explain envoy/lan", "envoy/lanes.yaml"),
    ("traffic-mirror check envoy/compa", "envoy/compare.yaml"),
    ("traffic-mirror completions z", "zsh"),
];

#[test]
fn completions_complete_subcommands_flags_and_files_in_bash() {
    let script = completion_script("bash");
    let driver = format!(
        r#"source {script}
offers() {{
    read -r -a COMP_WORDS <<< "$1"
    [[ $1 == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
    COMPREPLY=()
    _traffic_mirror traffic-mirror "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    printf '%s\t%s\n' "$1" "${{COMPREPLY[*]}}"
}}
complete -p traffic-mirror
offers "traffic-mirror ex"
offers "traffic-mirror explain --me"
offers "traffic-mirror explain envoy/lan"
offers "traffic-mirror check envoy/compa"
offers "traffic-mirror completions z"
offers "traffic-mirror explain --method "
offers "traffic-mirror help sa"
"#,
        script = script.display()
    );
    let out = shell("bash").args(["-c", &driver]).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("complete -o filenames -F _traffic_mirror traffic-mirror")
    );
    let offered: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once('\t')).collect();
    for (line, expected) in COMPLETED {
        assert!(
            offered.contains(&(line, expected)),
            "{line:?} should offer {expected:?}: {stdout}"
        );
    }
    assert!(offered.contains(&("traffic-mirror explain --method ", "")));
    assert!(offered.contains(&("traffic-mirror help sa", "sample")));
}

#[test]
fn completions_complete_subcommands_flags_and_files_in_zsh() {
    let script = completion_script("zsh");
    // A real interactive zsh in a pseudo-terminal: each line typed, then Tab; the line
    // as zsh completed it is read back until it shows the completion (or 10 s pass).
    let driver = format!(
        r#"zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit && compinit -u; source {script}; print ready'
wait_for() {{
    local text=$1 out="" chunk i
    for i in {{1..200}}; do
        while zpty -r -t z chunk 2>/dev/null; do out+=$chunk; done
        [[ $out == *$text* ]] && return 0
        sleep 0.05
    done
    print -r -- "timed out waiting for $text in: ${{(q)out}}"
    return 1
}}
wait_for ready || exit 1
for line expected in {pairs}; do
    zpty -w -n z "$line"$'\t'
    if wait_for "$expected"; then print -r -- "$line -> $expected"; fi
    zpty -w -n z $'\C-u'
done
zpty -d z
"#,
        script = script.display(),
        pairs = COMPLETED
            .iter()
            .map(|(line, expected)| {
                let completed = match line.rsplit_once(' ') {
                    Some((head, _)) => format!("{head} {expected}"),
                    None => expected.to_string(),
                };
                format!("'{line}' '{completed}'")
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = shell("zsh").args(["-f", "-c", &driver]).output().unwrap();
    let stdout = text(&out.stdout);
    for (line, expected) in COMPLETED {
        let completed = format!("{} {expected}", line.rsplit_once(' ').unwrap().0);
        assert!(
            stdout.contains(&format!("{line} -> {completed}")),
            "{line:?} should complete to {completed:?}: {stdout}{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn completions_complete_subcommands_flags_and_files_in_fish() {
    let script = completion_script("fish");
    let mut driver = format!("source {}\n", script.display());
    for (line, _) in COMPLETED {
        driver.push_str(&format!(
            "for c in (complete -C '{line}'); echo '{line}'\\t(string split -f1 \\t -- $c); end\n"
        ));
    }
    let out = shell("fish").args(["-c", &driver]).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let offered: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.split_once('\t')).collect();
    for (line, expected) in COMPLETED {
        assert!(
            offered.contains(&(line, expected)),
            "{line:?} should offer {expected:?}: {stdout}"
        );
    }
}

/// The words of a command line as a shell splits them (single and double quotes).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Examples that name a user's own files (the output shown is of those files).
const EXAMPLES_OF_A_USERS_FILES: [&str; 3] = [
    "traffic-mirror check my-envoy.yaml",
    "traffic-mirror compare envoy/compare.yaml target/demo-compare/primary-item-14.txt target/demo-compare/candidate-item-14.txt",
    "traffic-mirror compare envoy/compare.yaml page-1.txt page-1-candidate.txt --json",
];

#[test]
fn every_example_of_the_command_in_the_docs_prints_what_it_shows() {
    let mut ran = 0;
    for page in ["docs/command.md", "docs/swimlanes.md", "docs/grpc.md"] {
        let doc = std::fs::read_to_string(repo().join(page)).unwrap();
        let mut lines = doc.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(command) = line.strip_prefix("$ ") else {
                continue;
            };
            // What it shows: the lines up to the next command or the end of the block.
            let mut shown = String::new();
            while let Some(next) = lines.peek() {
                if next.starts_with("$ ") || next.starts_with("```") {
                    break;
                }
                shown.push_str(lines.next().unwrap());
                shown.push('\n');
            }
            if !command.starts_with("traffic-mirror ")
                || command.contains('|')
                || EXAMPLES_OF_A_USERS_FILES.contains(&command)
            {
                continue;
            }
            let words = shell_words(command);
            let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
            let out = run(&args, b"");
            assert_eq!(
                text(&out.stdout),
                shown,
                "{page}: `{command}` prints something else (stderr: {})",
                text(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 8, "only {ran} examples ran");
}

fn tempdir(label: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
