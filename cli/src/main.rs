//! `traffic-mirror`: asks the filter's own code, without an Envoy, whether a
//! configuration is valid, what it does with a request, and which users it picks.
//!
//! ```text
//! traffic-mirror check PATH...
//! traffic-mirror explain FILE [--method M] [--path P] [--authority A] [-H 'name: value']... [--json]
//! traffic-mirror sample FILE [--target NAME | --lanes]
//! traffic-mirror compare FILE [--target NAME] PRIMARY MIRROR [--json]
//! traffic-mirror completions SHELL
//! ```
//!
//! A FILE is a plugin configuration (JSON, or YAML as in `pluginConfig`), an Envoy
//! configuration (YAML or JSON) holding traffic-mirror filters, or Kubernetes YAML holding
//! `WasmPlugin` documents; `-` is standard input. The command is built for the host
//! from the core (`traffic-mirror-core`), the code the module runs.

mod check;
mod compare;
mod completions;
mod explain;
mod input;
mod mistakes;
mod sample;
mod yaml;

mod cli {
    use clap::{CommandFactory, Parser, Subcommand};

    /// Ask traffic-mirror, without an Envoy, whether a configuration is valid, what it
    /// does with a request, and which users it picks. Its answers are the module's own:
    /// it runs the same code.
    #[derive(Debug, Parser)]
    #[command(name = "traffic-mirror", version, max_term_width = 100)]
    #[command(
        after_help = "A FILE is a plugin configuration (JSON, or YAML as in a WasmPlugin's pluginConfig), an Envoy configuration (YAML or JSON), or Kubernetes YAML with WasmPlugin documents; - reads standard input."
    )]
    pub struct Cli {
        #[command(subcommand)]
        pub command: Command,
    }

    #[derive(Debug, Subcommand)]
    pub enum Command {
        /// Check every traffic-mirror configuration found, with the filter's own parser
        ///
        /// PATH is a file, a directory (its YAML and JSON files, recursively) or a glob.
        /// One line per configuration: its location and `ok` with its targets and lanes,
        /// or the error line the module would log; in place of `ok`, the likely mistakes
        /// the module cannot see, the worst first (a cluster Envoy does not define, a
        /// cluster name Istio does not use, a module file that is not there, Envoy's
        /// answer buffer). Files that hold no configuration are skipped with a note.
        ///
        /// Exit status: 0 all valid (warnings allowed); 1 any invalid or an error-level
        /// mistake; 2 a PATH that cannot be read or parsed, or no configuration at all.
        Check {
            /// Files, directories or globs
            #[arg(required = true, value_name = "PATH")]
            paths: Vec<String>,
        },
        /// Say what the filter would do with one request: its lane, each target's
        /// decision and why, and the copy's headers
        ///
        /// FILE must hold one configuration. Exit status 2 for a usage error or a FILE
        /// that cannot be read, 1 for an invalid configuration.
        Explain(ExplainArgs),
        /// Print the sampling keys a target mirrors, or each key's lane, from keys read
        /// on standard input, one per line
        ///
        /// A summary (how many of how many, and the share) goes to standard error.
        Sample {
            /// The configuration (one)
            file: String,
            /// The target (default: the first)
            #[arg(long, value_name = "NAME", conflicts_with = "lanes")]
            target: Option<String>,
            /// Print each key and its lane, separated by a tab
            #[arg(long)]
            lanes: bool,
        },
        /// Compare two saved answers as a target's `compare` would: the primary's and the
        /// mirror's, each as `curl -si` saves it
        ///
        /// Prints `match`, or the result with the differing path or header and both
        /// values. Exit status 0 for match, 1 for any other result, 2 when a file cannot
        /// be read or the target does not compare.
        Compare {
            /// The configuration (one)
            file: String,
            /// The comparing target (default: the first that compares)
            #[arg(long, value_name = "NAME")]
            target: Option<String>,
            /// The primary's answer (`curl -si URL > primary.txt`)
            primary: String,
            /// The mirror's answer
            mirror: String,
            /// One JSON object instead of text: {"result", "path", "header"}
            #[arg(long)]
            json: bool,
        },
        /// Print a completion script for SHELL to standard output
        ///
        /// e.g. `traffic-mirror completions bash > ~/.local/share/bash-completion/completions/traffic-mirror`
        Completions {
            /// bash, zsh, fish, elvish or powershell
            shell: clap_complete::Shell,
        },
    }

    #[derive(Debug, clap::Args)]
    pub struct ExplainArgs {
        /// The configuration (one)
        pub file: String,
        /// The request's method
        #[arg(long, default_value = "GET")]
        pub method: String,
        /// The request's path with its query; it must start with '/'
        #[arg(long, default_value = "/")]
        pub path: String,
        /// The request's :authority (host)
        #[arg(long, default_value = "example.com")]
        pub authority: String,
        /// A request header, 'name: value' (repeat for more)
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        pub headers: Vec<String>,
        /// One JSON object instead of text
        #[arg(long)]
        pub json: bool,
    }

    /// Writes the completion script for `shell` (a reader that goes away early, such as
    /// `head`, is not an error).
    pub fn completions(shell: clap_complete::Shell) {
        use std::io::Write;
        let script = crate::completions::script(shell, &mut Cli::command());
        let _ = std::io::stdout().write_all(&script);
    }
}

fn main() -> std::process::ExitCode {
    use clap::Parser;
    use cli::{Cli, Command};

    // Usage errors exit 2 (clap's own), --help and --version 0.
    let code = match Cli::parse().command {
        Command::Check { paths } => check::run(&paths),
        Command::Explain(args) => explain::run(&args),
        Command::Sample {
            file,
            target,
            lanes,
        } => sample::run(&file, target.as_deref(), lanes),
        Command::Compare {
            file,
            target,
            primary,
            mirror,
            json,
        } => compare::run(&file, target.as_deref(), &primary, &mirror, json),
        Command::Completions { shell } => {
            cli::completions(shell);
            0
        }
    };
    std::process::ExitCode::from(code)
}
