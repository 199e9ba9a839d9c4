//! `envoy --mode validate` runs the module's `on_configure`: a bad configuration is
//! refused with one line naming the JSON path and the problem; a good one is accepted.

use serde_json::json;

use crate::support::validate;

const PREFIX: &str = "traffic-mirror: invalid configuration: ";

/// The plugin's error lines in Envoy's output, from the prefix to the end of the line.
fn error_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|line| line.find(PREFIX).map(|at| &line[at..]))
        .collect()
}

fn target(extra: &str) -> String {
    format!(r#"{{"targets": [{{"name": "t", "cluster": "mirror", "percent": 10{extra}}}]}}"#)
}

#[test]
fn validate_refuses_each_kind_of_bad_configuration_with_its_json_path() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "invalid JSON",
            r#"{"targets": [{"name": "t", "#.to_string(),
            "$: invalid JSON: EOF while parsing a value at line 1 column 27",
        ),
        (
            "wrong type",
            target("").replace("10", "\"10\""),
            "targets[0].percent: expected a number, got a string",
        ),
        (
            "unknown top-level field",
            r#"{"targets": [{"name": "t", "cluster": "mirror", "percent": 10}], "target": []}"#
                .to_string(),
            "target: unknown field (expected one of: loop_header, targets)",
        ),
        (
            "unknown field in a target",
            target(r#", "precent": 20"#),
            "targets[0].precent: unknown field (expected one of: name, cluster, percent, \
             sample_by, on_missing_key, salt, match, authority, host_suffix, headers, \
             max_body_bytes, timeout_ms, max_rps, max_in_flight)",
        ),
        (
            "duplicate target name",
            r#"{"targets": [{"name": "a", "cluster": "mirror", "percent": 1},
                            {"name": "b", "cluster": "mirror", "percent": 1},
                            {"name": "a", "cluster": "other", "percent": 2}]}"#
                .to_string(),
            r#"targets[2].name: duplicate target name "a""#,
        ),
        (
            "out-of-range percent",
            target("").replace("10", "150"),
            "targets[0].percent: must be between 0 and 100, got 150",
        ),
        (
            "empty target list",
            r#"{"targets": []}"#.to_string(),
            "targets: must hold 1 to 16 targets, got 0",
        ),
        (
            "pseudo-header in headers.set",
            target(r#", "headers": {"set": {":path": "/elsewhere"}}"#),
            r#"targets[0].headers.set.:path: pseudo-header ":path" cannot be changed on the copy"#,
        ),
    ];
    let results: Vec<(bool, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(_, config, _)| scope.spawn(move || validate(config)))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for ((kind, config, expected), (ok, output)) in cases.iter().zip(&results) {
        assert!(!ok, "{kind}: Envoy accepted {config}\n{output}");
        assert_eq!(
            error_lines(output),
            [format!("{PREFIX}{expected}")],
            "{kind}: {config}\nEnvoy's output:\n{output}"
        );
        assert!(
            output.contains("Unable to create Wasm plugin traffic_mirror"),
            "{kind}: Envoy refused for another reason:\n{output}"
        );
    }
}

#[test]
fn validate_accepts_a_good_configuration() {
    // Every field of the specification's table, with non-default values.
    let config = json!({
        "targets": [
            {
                "name": "staging",
                "cluster": "mirror",
                "percent": 25,
                "sample_by": {"header": "x-user-id"},
                "on_missing_key": "random",
                "salt": "pepper",
                "match": {"path_prefix": "/api/", "methods": ["GET", "POST"],
                          "headers": {"x-env": "prod", "x-flag": true}},
                "authority": null,
                "host_suffix": "-staging",
                "headers": {"remove": ["cookie"], "set": {"x-env": "staging"},
                            "redact": ["authorization"]},
                "max_body_bytes": 16_777_216,
                "timeout_ms": 60000,
                "max_rps": 0.5,
                "max_in_flight": 100_000
            },
            {"name": "by_cookie", "cluster": "mirror", "percent": 0.0001,
             "sample_by": {"cookie": "uid"}, "authority": "shadow.internal:8443"},
            {"name": "by-query", "cluster": "mirror", "percent": 100,
             "sample_by": {"query": "sid"}, "match": {"path_exact": "/search"}},
            {"name": "random", "cluster": "mirror", "percent": 0,
             "sample_by": {"random": true}, "max_body_bytes": 0}
        ],
        "loop_header": "x-mirrored-by"
    });
    let (ok, output) = validate(&config.to_string());
    assert!(ok, "Envoy refused a good configuration:\n{output}");
    assert_eq!(error_lines(&output), Vec::<&str>::new(), "{output}");
    assert!(output.contains("OK"), "{output}");
    assert!(
        output.contains("traffic-mirror: configured targets staging, by_cookie, by-query, random"),
        "{output}"
    );
}
