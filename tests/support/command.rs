//! The `traffic-mirror` command, as the tests run it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `traffic-mirror ARGS` in the repository with `stdin` on its standard input.
pub fn traffic_mirror(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_traffic-mirror"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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
