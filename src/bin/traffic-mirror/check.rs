//! `traffic-mirror check FILE...`: every configuration found, through the filter's own
//! parser; one line each.

use traffic_mirror::config::{self, Plan, ANSWER_BUFFER_RUNTIME_KEY};

use crate::input::{self, AnswerBuffer};

const OK: u8 = 0;
const INVALID: u8 = 1;
const UNREADABLE: u8 = 2;

pub fn run(files: &[String]) -> u8 {
    if files.is_empty() {
        eprintln!("usage: traffic-mirror check FILE...");
        return UNREADABLE;
    }
    let mut status = OK;
    for file in files {
        let found = input::read(file).and_then(|bytes| input::configurations(file, &bytes));
        match found {
            Err(e) => {
                eprintln!("{e}");
                status = status.max(UNREADABLE);
            }
            Ok(found) => {
                for configuration in found {
                    let plan = match &configuration.configuration {
                        Err(why) => Err(format!("traffic-mirror: {why}")),
                        Ok(bytes) => config::parse(bytes).map_err(|e| e.to_string()),
                    };
                    let location = &configuration.location;
                    match plan {
                        Ok(plan) => {
                            println!("{location}: ok ({})", plan.summary());
                            if let Some(warning) =
                                answer_buffer_warning(&plan, &configuration.answer_buffer)
                            {
                                println!("{location}: warning: {warning}");
                            }
                        }
                        Err(error) => {
                            println!("{location}: {error}");
                            status = status.max(INVALID);
                        }
                    }
                }
            }
        }
    }
    status
}

/// Why the Envoy running a valid plan may hold more of each copy's answer than the plan
/// counts (`max_answer_bytes`), if it may: a warning, which leaves the exit status alone
/// (the configuration is valid; the memory bound is what is at stake).
fn answer_buffer_warning(plan: &Plan, answer_buffer: &AnswerBuffer) -> Option<String> {
    if plan.targets.is_empty() {
        return None;
    }
    let want = plan.max_answer_bytes;
    let key = ANSWER_BUFFER_RUNTIME_KEY;
    let fix = format!(
        "set it to max_answer_bytes ({want}) in layered_runtime (a static_layer), or Envoy holds each copy's answer up to"
    );
    match answer_buffer {
        AnswerBuffer::Unknown => None,
        AnswerBuffer::Set(have) if *have <= want as u64 => None,
        AnswerBuffer::Unset => Some(format!(
            "Envoy's runtime value {key} is not set: {fix} 32 MiB, outside max_in_flight_bytes"
        )),
        AnswerBuffer::Set(have) => Some(format!(
            "Envoy's runtime value {key} is {have}, more than max_answer_bytes ({want}): {fix} {have} bytes, outside max_in_flight_bytes"
        )),
        AnswerBuffer::Invalid(value) => Some(format!(
            "Envoy's runtime value {key} is {value}, not a number of bytes: {fix} 32 MiB, outside max_in_flight_bytes"
        )),
    }
}
