//! The `traffic-mirror` command, as the tests run it: the command's own tests
//! (cli/tests/cli.rs) run the binary Cargo built for them; the end-to-end tests run
//! `target/release/traffic-mirror`, which scripts/test.sh builds first (or
//! `$TRAFFIC_MIRROR_BIN`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository: the directory of the workspace's `Cargo.lock`.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("the workspace holds a Cargo.lock")
        .to_path_buf()
}

/// The command's binary.
pub fn binary() -> PathBuf {
    let binary = match (
        option_env!("CARGO_BIN_EXE_traffic-mirror"),
        std::env::var_os("TRAFFIC_MIRROR_BIN"),
    ) {
        (Some(built), _) => PathBuf::from(built),
        (None, Some(given)) => PathBuf::from(given),
        (None, None) => repo().join("target/release/traffic-mirror"),
    };
    assert!(
        binary.is_file(),
        "the command {} is missing: build it with `cargo build --release -p traffic-mirror-cli`",
        binary.display()
    );
    binary
}

/// Runs `traffic-mirror ARGS` in the repository with `stdin` on its standard input.
pub fn traffic_mirror(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running traffic-mirror: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    // The command may answer before it has read everything (a usage error): ignore EPIPE.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("traffic-mirror ran")
}
