//! `traffic-mirror`: asks the filter's own code, without an Envoy, whether a
//! configuration is valid and what it does with a request or a user.
//!
//! ```text
//! traffic-mirror check FILE...
//! traffic-mirror explain FILE [--method M] [--path P] [--authority A] [-H 'name: value']... [--json]
//! traffic-mirror sample FILE [--target NAME | --lanes]
//! ```
//!
//! FILE is a plugin configuration (JSON, or YAML as in `pluginConfig`), an Envoy
//! configuration (YAML or JSON) holding traffic-mirror filters, or Kubernetes YAML holding
//! `WasmPlugin` documents; `-` is standard input. The command runs natively: it is built
//! for the host, never for wasm (the module is the library's `traffic_mirror.wasm`).

#[cfg(not(target_arch = "wasm32"))]
mod check;
#[cfg(not(target_arch = "wasm32"))]
mod explain;
#[cfg(not(target_arch = "wasm32"))]
mod input;
#[cfg(not(target_arch = "wasm32"))]
mod sample;
#[cfg(not(target_arch = "wasm32"))]
mod yaml;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let code = match args.first().map(String::as_str) {
        Some("check") => check::run(rest),
        Some("explain") => explain::run(rest),
        Some("sample") => sample::run(rest),
        Some("--version" | "-V") => {
            println!("traffic-mirror {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprint!("{USAGE}");
            2
        }
    };
    std::process::ExitCode::from(code)
}

/// Built for wasm only because Cargo builds every target of the package: nothing to do.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
const USAGE: &str = "\
usage:
  traffic-mirror check FILE...
      Checks every traffic-mirror configuration in each FILE with the filter's own parser:
      one line each, its location and `ok` with its targets and lanes, or the error line
      the module would log. Exit 0: all valid; 1: any invalid; 2: a FILE cannot be read or
      holds no traffic-mirror configuration.
  traffic-mirror explain FILE [--method M] [--path P] [--authority A] [-H 'name: value']... [--json]
      What the filter would do with that request: its lane, each target's decision and
      why, and the copy's headers. FILE must hold one configuration.
  traffic-mirror sample FILE [--target NAME | --lanes]
      Reads sampling-key values from standard input, one per line, and prints those the
      target mirrors (default: the first target), or with --lanes each key and its lane,
      separated by a tab. A summary goes to standard error.

FILE: a plugin configuration (JSON, or YAML as in a WasmPlugin's pluginConfig), an Envoy
configuration (YAML or JSON), or Kubernetes YAML with WasmPlugin documents; - reads
standard input.
";
