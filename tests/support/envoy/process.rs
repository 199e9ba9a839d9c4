//! A running Envoy, [`Envoy`]: start-up on free ports (listener and admin on port 0,
//! learned from the admin), readiness by polling `/ready`, restart, and the process
//! killed on drop, with its configuration and the log of each start-up printed when the
//! test is failing.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::super::client::{self, Request};
use super::super::wait_for;
use super::config::{Delivery, EnvoyConfig};
use super::ecds::ECDS_FILE;
use super::files::{envoy_bin, WorkDir};

/// Generous: Envoy compiles the module with V8 at start-up, and tests run in parallel.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Envoy; killed on drop.
pub struct Envoy {
    pub(super) config: EnvoyConfig,
    yaml: String,
    pub(super) dir: WorkDir,
    /// Start-ups so far (each gets its own log files).
    starts: u32,
    child: Option<Child>,
    admin: SocketAddr,
    listener: SocketAddr,
    /// The version of the ECDS resource last delivered.
    pub(super) ecds_version: u32,
}

impl Envoy {
    /// Starts Envoy with this configuration and waits until it is live.
    pub fn start(config: EnvoyConfig) -> Envoy {
        let dir = WorkDir::new("envoy");
        let ecds_dir = dir.path().join("ecds");
        fs::create_dir_all(&ecds_dir).unwrap();
        let yaml = config.yaml_in(&ecds_dir);
        fs::write(dir.path().join("envoy.yaml"), &yaml).unwrap();
        if config.delivery != Delivery::Inline {
            fs::write(
                ecds_dir.join(ECDS_FILE),
                config.ecds_resource(&config.plugin, 1),
            )
            .unwrap();
        }
        let mut envoy = Envoy {
            config,
            yaml,
            dir,
            starts: 0,
            child: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            ecds_version: 1,
        };
        envoy.launch();
        envoy
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("Envoy is running")
    }

    /// Kills Envoy and starts it again with the same configuration (new ports).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.{}", self.starts))
    }

    fn launch(&mut self) {
        self.starts += 1;
        let admin_path = self.file("admin-address");
        // Envoy's log goes to stderr, written line by line (`--log-path` would buffer
        // it for up to 10 s, and a killed Envoy would lose the end of it).
        let out = fs::File::create(self.file("envoy.log")).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(self.dir.path().join("envoy.yaml"))
            .arg("--concurrency")
            .arg(self.config.concurrency.to_string())
            .arg("--use-dynamic-base-id")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "info"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", envoy_bin().display()));
        self.child = Some(child);

        // The admin address file, then `/ready` answering LIVE at that address (a file
        // caught half-written gives an address that does not answer: read it again).
        self.admin = wait_for(START_TIMEOUT, "Envoy's admin to answer LIVE", || {
            self.assert_alive();
            let text = fs::read_to_string(&admin_path)
                .map_err(|e| format!("{}: {e}", admin_path.display()))?;
            let admin: SocketAddr = text
                .trim()
                .parse()
                .map_err(|e| format!("admin address {text:?}: {e}"))?;
            let response = client::try_send(admin, &Request::get("/ready").host("localhost"))
                .map_err(|e| format!("GET /ready on {admin}: {e}"))?;
            match response.text().trim() {
                "LIVE" if response.status == 200 => Ok(admin),
                other => Err(format!("/ready: {} {other}", response.status)),
            }
        });
        let listeners = client::get_ok(self.admin, "/listeners?format=json");
        let json: serde_json::Value = serde_json::from_str(&listeners)
            .unwrap_or_else(|e| panic!("/listeners?format=json: {e}: {listeners}"));
        let port = json["listener_statuses"]
            .as_array()
            .and_then(|list| list.iter().find(|l| l["name"] == "ingress"))
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .unwrap_or_else(|| panic!("no ingress listener port in {listeners}"));
        self.listener = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
    }

    /// Panics when Envoy has exited (the log is printed on the way out).
    fn assert_alive(&mut self) {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => {}
            Some(Ok(Some(status))) => {
                panic!("Envoy exited during start-up with {status}")
            }
            Some(Err(e)) => panic!("waiting for Envoy: {e}"),
            None => panic!("Envoy is not running"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where clients connect.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn yaml(&self) -> &str {
        &self.yaml
    }

    /// Envoy's log (everything it printed) of the current run, so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.file("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== Envoy configuration ({}) =====\n{}",
                self.dir.path().join("envoy.yaml").display(),
                self.yaml
            );
            for start in 1..=self.starts {
                let path = self.dir.path().join(format!("envoy.log.{start}"));
                let text = fs::read_to_string(&path).unwrap_or_default();
                eprintln!("===== Envoy's log: {} =====\n{text}", path.display());
            }
        }
    }
}
