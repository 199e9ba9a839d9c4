//! `traffic-mirror check PATH...`: every configuration found, through the filter's own
//! parser, one line each, and a line for each likely mistake around it.

use traffic_mirror_core::config;

use crate::input::{self, Found, Problem};
use crate::mistakes::{self, Severity};

const OK: u8 = 0;
const INVALID: u8 = 1;
const UNREADABLE: u8 = 2;

pub fn run(paths: &[String]) -> u8 {
    let mut status = OK;
    let mut files = Vec::new();
    for path in paths {
        match input::files(path) {
            Ok(found) => files.extend(found),
            Err(e) => {
                eprintln!("{e}");
                status = UNREADABLE;
            }
        }
    }
    let results: Vec<(String, Result<Vec<Found>, Problem>)> = files
        .into_iter()
        .map(|file| {
            let found = input::read(&file)
                .map_err(Problem::Unreadable)
                .and_then(|bytes| input::configurations(&file, &bytes));
            (file, found)
        })
        .collect();
    let any = results.iter().any(|(_, r)| r.is_ok());
    for (_, result) in results {
        match result {
            Err(Problem::Unreadable(e)) => {
                eprintln!("{e}");
                status = status.max(UNREADABLE);
            }
            // Skipped, as long as something else holds a configuration.
            Err(Problem::NoConfiguration(e)) if any => eprintln!("note: {e}; skipped"),
            Err(Problem::NoConfiguration(e)) => {
                eprintln!("{e}");
                status = status.max(UNREADABLE);
            }
            Ok(found) => {
                for configuration in found {
                    status = status.max(report(&configuration));
                }
            }
        }
    }
    status
}

/// Prints the lines of one configuration; its status.
fn report(found: &Found) -> u8 {
    let location = &found.location;
    let bytes = match &found.configuration {
        Ok(bytes) => bytes,
        Err(why) => {
            println!("{location}: error: {why}");
            return INVALID;
        }
    };
    let plan = match config::parse(bytes) {
        Ok(plan) => plan,
        Err(error) => {
            println!("{location}: {error}");
            return INVALID;
        }
    };
    // One line: the worst finding first (errors, then warnings), any others after it.
    let mut found_mistakes = mistakes::find(&plan, found);
    found_mistakes.sort_by_key(|m| m.severity != Severity::Error);
    let status = if found_mistakes.iter().any(|m| m.severity == Severity::Error) {
        INVALID
    } else {
        OK
    };
    let findings: Vec<String> = found_mistakes
        .iter()
        .map(|mistake| {
            let severity = match mistake.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!("{severity}: {}: {}", mistake.path, mistake.problem)
        })
        .collect();
    let verdict = if findings.is_empty() {
        "ok".to_string()
    } else {
        findings.join("; ")
    };
    println!("{location}: {verdict} ({})", plan.summary());
    status
}
