//! `traffic-mirror check FILE...`: every configuration found, through the filter's own
//! parser; one line each.

use traffic_mirror::config;

use crate::input;

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
                    let line = match &configuration.configuration {
                        Err(why) => Err(format!("traffic-mirror: {why}")),
                        Ok(bytes) => config::parse(bytes)
                            .map(|plan| plan.summary())
                            .map_err(|e| e.to_string()),
                    };
                    match line {
                        Ok(summary) => println!("{}: ok ({summary})", configuration.location),
                        Err(error) => {
                            println!("{}: {error}", configuration.location);
                            status = status.max(INVALID);
                        }
                    }
                }
            }
        }
    }
    status
}
