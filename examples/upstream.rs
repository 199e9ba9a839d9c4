//! A standalone recording HTTP/1.1 upstream (the end-to-end tests' server), for the
//! demo and for trying the filter by hand:
//!
//! ```text
//! cargo run --release --example upstream -- --port 8081 --name primary [--delay-ms 200] [--status 200] [--never-answer] [--quiet] [--catalog] [--catalog-bug]
//! ```
//!
//! Listens on 127.0.0.1:PORT, answers every request with STATUS (after DELAY-MS), and
//! prints one line per request received to stdout: name, method, path with query, a few
//! headers (host, x-request-id, x-user-id, x-traffic-mirror, x-lane, content-length,
//! transfer-encoding) and the body length. Nothing else goes to stdout. `--quiet` prints
//! and keeps nothing (for benchmarks); `--never-answer` holds every request without
//! answering (a stalled mirror).
//!
//! `--catalog` answers a small JSON catalog API (the `compare` demo, `scripts/demo.sh
//! compare`): `/api/items/<id>` with one item and `/api/items?page=P&per_page=N` with a
//! page of them, every field computed from the id but `updated_at`, the time of the
//! answer (different on every answer); other paths as without it. `--catalog-bug` is
//! the same catalog with a seeded bug, as a candidate under test: the price of every
//! 7th item (ids that are multiples of 7) is one cent too high.

#[path = "../tests/support/upstream.rs"]
mod upstream;

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: upstream --port PORT --name NAME [--delay-ms N] [--status CODE] [--never-answer] [--quiet] [--catalog] [--catalog-bug]";

/// Longer than any run that uses `--never-answer`.
const NEVER: Duration = Duration::from_secs(24 * 3600);

fn parse(args: &[String]) -> Result<upstream::Options, String> {
    let mut options = upstream::Options::new("upstream");
    let mut port = None;
    let mut quiet = false;
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                port = Some(v.parse().map_err(|_| format!("bad port {v:?}"))?);
            }
            "--name" => options.name = value()?.clone(),
            "--delay-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().map_err(|_| format!("bad delay {v:?}"))?;
                options.behaviour.delay = Duration::from_millis(ms);
            }
            "--status" => {
                let v = value()?;
                options.behaviour.status = v
                    .parse()
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .ok_or_else(|| format!("bad status {v:?}"))?;
            }
            "--never-answer" => options.behaviour.delay = NEVER,
            "--quiet" => quiet = true,
            "--catalog" => {
                options
                    .behaviour
                    .catalog
                    .get_or_insert_with(upstream::Catalog::default);
            }
            "--catalog-bug" => options.behaviour.catalog = Some(upstream::Catalog { bug: true }),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.port = port.ok_or("--port is required")?;
    options.log = !quiet;
    options.record = !quiet;
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("upstream: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let name = options.name.clone();
    match upstream::Upstream::start_with(options) {
        Ok(server) => {
            eprintln!("upstream {name}: listening on {}", server.addr());
            server.serve_forever()
        }
        Err(e) => {
            eprintln!("upstream {name}: {e}");
            ExitCode::FAILURE
        }
    }
}
