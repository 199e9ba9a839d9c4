//! `envoy --mode validate` runs the module's `on_configure`: a bad configuration is
//! refused with one line naming the JSON path and the problem; a good one is accepted.

use serde_json::json;

use crate::support::command::traffic_mirror;
use crate::support::validate;

const PREFIX: &str = "traffic-mirror: invalid configuration: ";

/// The plugin's error lines in Envoy's output, from the prefix to the end of the line.
fn error_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|line| line.find(PREFIX).map(|at| &line[at..]))
        .collect()
}

/// Every bad configuration the unit tests know, with the line it gives.
fn bad_configurations() -> Vec<(String, String)> {
    let path = crate::support::envoy::repo().join("tests/data/bad_configs.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    cases
        .iter()
        .map(|case| {
            let field = |name: &str| case[name].as_str().unwrap().to_string();
            (field("config"), field("error"))
        })
        .collect()
}

#[test]
fn validate_refuses_each_bad_configuration_with_the_line_the_unit_tests_expect() {
    let cases = bad_configurations();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    // A few Envoys at a time: each one compiles the module.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, bool, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some((config, _)) = cases.get(i) else {
                            return out;
                        };
                        let (ok, output) = validate(config);
                        out.push((i, ok, output));
                    }
                })
            })
            .collect();
        runs.into_iter()
            .flat_map(|run| run.join().unwrap())
            .collect()
    });
    results.sort_by_key(|(i, _, _)| *i);
    assert_eq!(results.len(), cases.len());
    for ((config, expected), (_, ok, output)) in cases.iter().zip(&results) {
        assert!(!ok, "Envoy accepted {config}\n{output}");
        assert_eq!(
            error_lines(output),
            [expected.as_str()],
            "{config}\nEnvoy's output:\n{output}"
        );
        assert!(
            output.contains("Unable to create Wasm plugin traffic_mirror"),
            "Envoy refused {config} for another reason:\n{output}"
        );
        // The command prints the very line the module logged.
        let check = traffic_mirror(&["check", "-"], config.as_bytes());
        assert_eq!(check.status.code(), Some(1), "{config}");
        assert_eq!(
            String::from_utf8_lossy(&check.stdout),
            format!("-: {}\n", error_lines(output)[0]),
            "traffic-mirror check on {config}"
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
        "loop_header": "x-mirrored-by",
        "max_buffered_bytes": 16_777_216
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
