//! What Envoy does to client requests when the plugin's VM fails, under each wasm
//! `failure_policy`. A module of our own (`tests/trap-module`) stamps every request it sees
//! with the id of its VM instance (`x-plugin-vm`: the host clock, in nanoseconds, when that
//! VM started) and traps (`unreachable`) on a request carrying `x-trap`. Each test starts
//! one Envoy (one worker) with that module and one policy, puts two requests in flight on
//! the VM, makes it trap, and records for every request what the client got, whether the
//! primary got it and which VM had stamped it (the timeline is printed: `--nocapture`).
//!
//! Observed alike in Envoy 1.36.4, 1.38.2 and 1.40.0, and pinned here:
//!
//! - Under every policy, the trapping request is answered 503 by Envoy (empty body) and
//!   never reaches the primary; a request in flight on the failed VM is answered 503 at its
//!   next callback: one whose body was still arriving never reaches the primary, one that
//!   was at the primary awaiting its answer was served there, but its client gets a 503
//!   instead of that answer. Envoy logs, at error level, `Function:
//!   proxy_on_request_headers failed: Uncaught RuntimeError: unreachable`.
//! - FAIL_OPEN: every later request passes without the plugin (200, unstamped), for as
//!   long as the worker runs; no VM is created again and no `wasm.*` stat moves.
//! - FAIL_CLOSED: every later request is answered 503, for as long as the worker runs.
//! - FAIL_RELOAD: the next request gets a new VM, unless the failed VM was loaded less
//!   than the reload backoff ago (1 s, drawn again for each request from [1 s, 1.5 s)):
//!   requests in that window are answered 503 and counted in
//!   `wasm.<plugin>.vm_reload_backoff`, each reload in `vm_reload_success` and in
//!   `wasm.envoy.wasm.runtime.v8.created`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::envoy::{envoy_bin, repo};
use crate::support::{client, wait_until, Connection, Envoy, EnvoyConfig, Request, Upstream};

/// How to build the trap module.
const BUILD: &str =
    "cargo build --release --target wasm32-wasip1 --manifest-path tests/trap-module/Cargo.toml";
/// The plugin's name in the harness's configuration (its `wasm.<name>.*` stats).
const PLUGIN: &str = "traffic_mirror";
/// What Envoy logs when the module traps.
const TRAP_LOG: &str =
    "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable";
/// What the trap module logs when a VM starts (`trap-module: VM <id, 20 digits> started`).
const VM_STARTED: &str = "trap-module: VM ";
/// Envoy's reload backoff with the default `reload_config`: a base interval of 1 s,
/// jittered for each new request to [1 s, 1.5 s), counted from the VM's last load.
const BACKOFF_MIN: Duration = Duration::from_millis(1000);
const BACKOFF_MAX: Duration = Duration::from_millis(1500);
/// Allowance between the host's clock at a VM's start and Envoy's record of its load.
const CLOCK_SLACK: Duration = Duration::from_millis(100);
/// How long a policy that does not reload is watched after the trap: past FAIL_RELOAD's
/// longest backoff.
const WATCH: Duration = Duration::from_secs(3);
/// Time between two requests while watching.
const PACE: Duration = Duration::from_millis(50);
/// How long the primary holds its answer to the request in flight at it.
const HOLD: Duration = Duration::from_secs(1);
/// Deadline for readiness polls and for a reload.
const DEADLINE: Duration = Duration::from_secs(10);

/// The built trap module; panics with the build command when missing.
fn trap_module() -> PathBuf {
    let path = repo().join("tests/trap-module/target/wasm32-wasip1/release/trap_module.wasm");
    assert!(
        path.is_file(),
        "the trap module {} is missing: build it with `{BUILD}`",
        path.display()
    );
    path
}

/// The version `envoy --version` prints (`.../1.40.0/Clean/RELEASE/...`).
fn envoy_version() -> String {
    let output = Command::new(envoy_bin())
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} --version: {e}", envoy_bin().display()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split("version: ")
        .nth(1)
        .and_then(|v| v.split('/').nth(1))
        .unwrap_or_else(|| panic!("no version in {text:?}"))
        .to_string()
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// 503 from Envoy; the primary never got it.
    Refused,
    /// 200 from the primary, which got it without the plugin's stamp.
    Bypassed,
    /// 200 from the primary, which got it stamped by this VM.
    Stamped(u64),
    /// The primary got it (stamped by this VM, if any) and answered, but the client got
    /// a 503.
    ServedButRefused(Option<u64>),
    Other(String),
}

/// One request sent and its fate.
struct Sent {
    label: String,
    target: String,
    /// When it was sent, on the wall clock (as the VM ids).
    at: SystemTime,
    /// Whether it was in flight on the VM when it trapped (else it began after, or
    /// before and ended before).
    in_flight: bool,
    fate: Fate,
}

/// Nanoseconds since the epoch, as the VM ids.
fn nanos(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// How long after the start of VM `vm` `at` is (zero if before).
fn age(vm: u64, at: SystemTime) -> Duration {
    Duration::from_nanos(nanos(at).saturating_sub(vm))
}

/// One Envoy with the trap module under one policy, its primary, and every request sent.
struct Bench {
    policy: &'static str,
    version: String,
    primary: Upstream,
    envoy: Envoy,
    sent: Vec<Sent>,
    /// When the first trap was sent: the timeline's origin.
    trapped: Option<SystemTime>,
}

/// What [`Bench::trap_with_requests_in_flight`] leaves.
struct Trapped {
    /// The VM that trapped.
    vm: u64,
    /// Where in `sent` the requests begun after the trap start.
    after: usize,
    /// Envoy's stats just before the trap.
    stats: BTreeMap<String, u64>,
    /// How many VMs had logged their start before the trap.
    vms_started: usize,
}

impl Bench {
    fn start(policy: &'static str) -> Bench {
        let module = trap_module();
        let version = envoy_version();
        let primary = Upstream::start("primary");
        // The module takes no configuration; the mirror cluster is never used.
        let envoy = Envoy::start(
            EnvoyConfig::new("{}", primary.addr(), primary.addr())
                .module(module)
                .failure_policy(policy)
                .concurrency(1),
        );
        Bench {
            policy,
            version,
            primary,
            envoy,
            sent: Vec::new(),
            trapped: None,
        }
    }

    fn context(&self) -> String {
        format!("[Envoy {}, {}]", self.version, self.policy)
    }

    /// Sends `GET /<label>` (with `x-trap` if `trap`) on `connection`, or on a new one,
    /// and records its fate.
    fn send(&mut self, label: &str, connection: Option<&mut Connection>, trap: bool) -> Fate {
        let target = format!("/{label}");
        let mut request = Request::get(&target);
        if trap {
            request = request.header("x-trap", "1");
        }
        let at = SystemTime::now();
        let response = match connection {
            Some(connection) => connection.try_send(&request),
            None => client::try_send(self.envoy.listener(), &request),
        };
        let status = response.map(|r| r.status).map_err(|e| e.to_string());
        self.record(label, at, false, status)
    }

    /// Records the fate of `/<label>`, sent at `at` and answered with `status`.
    fn record(
        &mut self,
        label: &str,
        at: SystemTime,
        in_flight: bool,
        status: Result<u16, String>,
    ) -> Fate {
        let target = format!("/{label}");
        let at_primary = self
            .primary
            .received()
            .iter()
            .find(|r| r.target == target)
            .map(|r| r.header_str("x-plugin-vm"));
        let stamp = |value: Option<String>| match value {
            None => Ok(None),
            Some(text) => text.parse::<u64>().map(Some).map_err(|_| text),
        };
        let fate = match (status, at_primary.map(stamp)) {
            (Ok(503), None) => Fate::Refused,
            (Ok(200), Some(Ok(None))) => Fate::Bypassed,
            (Ok(200), Some(Ok(Some(vm)))) => Fate::Stamped(vm),
            (Ok(503), Some(Ok(vm))) => Fate::ServedButRefused(vm),
            (status, at_primary) => Fate::Other(format!(
                "client: {status:?}; at the primary: {at_primary:?}"
            )),
        };
        self.sent.push(Sent {
            label: label.to_string(),
            target,
            at,
            in_flight,
            fate: fate.clone(),
        });
        fate
    }

    /// Asserts the fate of the request `label`.
    fn expect(&self, label: &str, want: &Fate) {
        let sent = self
            .sent
            .iter()
            .find(|s| s.label == label)
            .unwrap_or_else(|| panic!("no request {label}"));
        assert_eq!(
            &sent.fate,
            want,
            "{} request {label} (GET {}): expected {want:?}, got {:?}",
            self.context(),
            sent.target,
            sent.fate
        );
    }

    /// The requests sent from `from` on (indexes into `sent`).
    fn since(&self, from: usize) -> &[Sent] {
        &self.sent[from..]
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name)
    }

    fn log_count(&self, needle: &str) -> usize {
        self.envoy
            .log()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until Envoy has logged `needle` `n` times, then checks it is not more.
    fn expect_logged(&self, needle: &str, n: usize) {
        wait_until(
            DEADLINE,
            &format!("{} Envoy to log {needle:?} {n} times", self.context()),
            || self.log_count(needle) >= n,
        );
        assert_eq!(
            self.log_count(needle),
            n,
            "{} times Envoy logged {needle:?}",
            self.context()
        );
    }

    /// The sequence every policy goes through: a request stamped by the VM; an upload
    /// whose body is still arriving and a request held at the primary, both in flight on
    /// the VM; the trapping request; at once a request on the same connection
    /// (`trap-connection-again`) and one on a connection used before the trap
    /// (`keep-alive-again`); the upload's end; the held answer. Asserts what every policy
    /// does to the trapping request and to those in flight (see the module's doc).
    fn trap_with_requests_in_flight(&mut self) -> Trapped {
        let listener = self.envoy.listener();
        let context = self.context();
        let mut keep_alive = Connection::open(listener);
        let vm = match self.send("before", Some(&mut keep_alive), false) {
            Fate::Stamped(vm) => vm,
            other => panic!("{context} request before the trap: expected a stamp, got {other:?}"),
        };
        let vms_started = self.log_count(VM_STARTED);

        // In flight 1: the headers and half the body are at Envoy, the rest comes later.
        let upload_at = SystemTime::now();
        let mut upload = start_upload(listener, "/uploading");
        wait_until(
            DEADLINE,
            &format!("{context} the upload to reach the primary"),
            || {
                self.envoy
                    .stats()
                    .get("cluster.primary.upstream_rq_active")
                    .is_some_and(|&n| n >= 1)
            },
        );
        // In flight 2: at the primary, which holds its answer.
        self.primary.set_delay(HOLD);
        let (after, stats, trapped_at) = std::thread::scope(|scope| {
            let held_at = SystemTime::now();
            let held = scope.spawn(move || client::try_send(listener, &Request::get("/held")));
            wait_until(
                DEADLINE,
                &format!("{context} /held to reach the primary"),
                || self.primary.received().iter().any(|r| r.target == "/held"),
            );
            self.primary.set_delay(Duration::ZERO);

            let stats = self.envoy.stats();
            let mut trap_connection = Connection::open(listener);
            let trapped_at = Instant::now();
            self.trapped = Some(SystemTime::now());
            self.send("trap", Some(&mut trap_connection), true);
            let after = self.sent.len();
            self.send("trap-connection-again", Some(&mut trap_connection), false);
            self.send("keep-alive-again", Some(&mut keep_alive), false);

            let uploaded = finish_upload(&mut upload);
            self.record("uploading", upload_at, true, uploaded);
            let held = held.join().unwrap();
            let held = held.map(|r| r.status).map_err(|e| e.to_string());
            self.record("held", held_at, true, held);
            (after, stats, trapped_at)
        });

        self.expect("trap", &Fate::Refused);
        self.expect("uploading", &Fate::Refused);
        // The primary served it, after the trap, but its answer never reached the client.
        self.expect("held", &Fate::ServedButRefused(Some(vm)));
        let answered = self
            .primary
            .received()
            .iter()
            .find(|r| r.target == "/held")
            .and_then(|r| r.answered);
        assert!(
            answered.is_some_and(|a| a > trapped_at),
            "{context} the primary answered /held before the trap: the test was too slow for \
             HOLD ({HOLD:?})"
        );
        self.expect_logged(TRAP_LOG, 1);
        Trapped {
            vm,
            after,
            stats,
            vms_started,
        }
    }

    /// Sends a request on a new connection every [`PACE`] for `span`; returns the index
    /// of the first in `sent`.
    fn watch(&mut self, prefix: &str, span: Duration) -> usize {
        let from = self.sent.len();
        let end = Instant::now() + span;
        let mut n = 0;
        while Instant::now() < end {
            n += 1;
            self.send(&format!("{prefix}-{n}"), None, false);
            std::thread::sleep(PACE);
        }
        from
    }

    /// Sends a request on a new connection every [`PACE`] until one is not refused (at
    /// most [`DEADLINE`]); returns the index of the first in `sent`.
    fn until_served(&mut self, prefix: &str) -> usize {
        let from = self.sent.len();
        let start = Instant::now();
        for n in 1.. {
            if self.send(&format!("{prefix}-{n}"), None, false) != Fate::Refused {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} every request refused for {DEADLINE:?} after a trap",
                self.context()
            );
            std::thread::sleep(PACE);
        }
        from
    }

    /// Asserts that the requests begun from `from` on (those in flight left out) were
    /// refused while the failed VM `old` was in its reload backoff, then all stamped by
    /// one new VM, loaded at least [`BACKOFF_MIN`] after `old`; no request sent
    /// [`BACKOFF_MAX`] after `old` started was refused. Returns the new VM and how many
    /// were refused.
    fn expect_reload(&self, from: usize, old: u64) -> (u64, u64) {
        let context = self.context();
        let begun: Vec<&Sent> = self.since(from).iter().filter(|s| !s.in_flight).collect();
        let first_served = begun
            .iter()
            .position(|s| s.fate != Fate::Refused)
            .unwrap_or_else(|| panic!("{context} no request served after VM {old} failed"));
        let (refused, served) = begun.split_at(first_served);
        for sent in refused {
            assert!(
                age(old, sent.at) < BACKOFF_MAX + CLOCK_SLACK,
                "{context} {} refused {:?} after VM {old} started: past the longest backoff",
                sent.target,
                age(old, sent.at)
            );
        }
        let Fate::Stamped(new) = served[0].fate else {
            panic!(
                "{context} {}: expected a request stamped by a new VM, got {:?}",
                served[0].target, served[0].fate
            )
        };
        assert_ne!(
            new, old,
            "{context} {}: the failed VM ran again",
            served[0].target
        );
        for sent in served {
            assert_eq!(sent.fate, Fate::Stamped(new), "{context} {}", sent.target);
        }
        let gap = Duration::from_nanos(new.saturating_sub(old));
        assert!(
            gap + CLOCK_SLACK >= BACKOFF_MIN,
            "{context} VM {new} started {gap:?} after VM {old}: within the backoff"
        );
        (new, refused.len() as u64)
    }

    /// Whether a request begun from `from` on has been served.
    fn served_since(&self, from: usize) -> bool {
        self.since(from)
            .iter()
            .any(|s| !s.in_flight && s.fate != Fate::Refused)
    }

    /// Waits until Envoy's 2xx and 5xx counts of client requests match what the clients
    /// got.
    fn expect_downstream_counts(&self) {
        let count = |status: u16| {
            self.sent
                .iter()
                .filter(|s| match &s.fate {
                    Fate::Bypassed | Fate::Stamped(_) => status == 200,
                    Fate::Refused | Fate::ServedButRefused(_) => status == 503,
                    Fate::Other(_) => false,
                })
                .count() as u64
        };
        let want = (count(200), count(503));
        wait_until(
            DEADLINE,
            &format!(
                "{} http.ingress.downstream_rq_2xx and _5xx to be {want:?}",
                self.context()
            ),
            || {
                let stats = self.envoy.stats();
                let get = |name: &str| stats.get(name).copied().unwrap_or(0);
                (
                    get("http.ingress.downstream_rq_2xx"),
                    get("http.ingress.downstream_rq_5xx"),
                ) == want
            },
        );
    }
}

impl Drop for Bench {
    /// Prints the timeline (shown with `--nocapture`, or when the test fails).
    fn drop(&mut self) {
        let origin = self.trapped.unwrap_or(UNIX_EPOCH);
        println!("{} timeline (ms from the first trap):", self.context());
        for sent in &self.sent {
            let ms = match sent.at.duration_since(origin) {
                Ok(after) => format!("+{}", after.as_millis()),
                Err(before) => format!("-{}", before.duration().as_millis()),
            };
            println!("  {ms:>6} {:<28} {:?}", sent.target, sent.fate);
        }
    }
}

/// Starts a POST whose headers and first half of the body are sent now.
fn start_upload(addr: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head =
        format!("POST {target} HTTP/1.1\r\nhost: example.com\r\ncontent-length: 10\r\n\r\nhello");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Sends the rest of the body and reads the response's status.
fn finish_upload(stream: &mut TcpStream) -> Result<u16, String> {
    stream.write_all(b"world").map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("bad response head {head:?}"))
}

/// The policies that do not reload: after the trap, every request has `fate` (watched for
/// longer than FAIL_RELOAD's backoff, a second trap included), and the failed VM stays:
/// no VM is started again, no `wasm.*` stat moves, the trap is logged once.
fn trap_without_reload(policy: &'static str, fate: &Fate) {
    let mut bench = Bench::start(policy);
    let context = bench.context();
    let trapped = bench.trap_with_requests_in_flight();
    let from = bench.watch("after-trap", WATCH);
    bench.send("second-trap", None, true);
    for sent in bench.since(trapped.after).iter().filter(|s| !s.in_flight) {
        assert_eq!(&sent.fate, fate, "{context} {} after the trap", sent.target);
    }
    assert!(bench.since(from).len() > 1, "{context} watched nothing");

    bench.expect_logged(TRAP_LOG, 1);
    assert_eq!(
        bench.log_count(VM_STARTED),
        trapped.vms_started,
        "{context} VMs started after the trap"
    );
    for name in [
        "vm_reload_backoff",
        "vm_reload_success",
        "vm_reload_failure",
    ] {
        let name = format!("wasm.{PLUGIN}.{name}");
        assert_eq!(bench.stat(&name), 0, "{context} {name}");
    }
    for name in ["created", "active"] {
        let name = format!("wasm.envoy.wasm.runtime.v8.{name}");
        assert_eq!(bench.stat(&name), trapped.stats[&name], "{context} {name}");
    }
    bench.expect_downstream_counts();
}

#[test]
fn fail_open_refuses_the_requests_on_the_failed_vm_then_passes_every_request_without_the_plugin() {
    // The plugin no longer runs at all: a second trap request passes too.
    trap_without_reload("FAIL_OPEN", &Fate::Bypassed);
}

#[test]
fn fail_closed_refuses_every_request_once_the_vm_has_failed() {
    trap_without_reload("FAIL_CLOSED", &Fate::Refused);
}

#[test]
fn fail_reload_refuses_requests_until_the_backoff_since_the_last_load_then_runs_a_new_vm() {
    let mut bench = Bench::start("FAIL_RELOAD");
    let context = bench.context();
    let trapped = bench.trap_with_requests_in_flight();
    let v1 = trapped.vm;
    let backoff = format!("wasm.{PLUGIN}.vm_reload_backoff");

    // 1. The VM failed moments after its load: new requests are refused until the
    // backoff since that load has passed, then the next one gets a new VM.
    if !bench.served_since(trapped.after) {
        bench.until_served("after-first-trap");
    }
    let (v2, refused_1) = bench.expect_reload(trapped.after, v1);

    // 2. It fails again at once (a crash loop): refused again until the backoff since
    // this VM's load has passed.
    bench.send("second-trap", None, true);
    bench.expect("second-trap", &Fate::Refused);
    let from = bench.until_served("after-second-trap");
    let (v3, refused_2) = bench.expect_reload(from, v2);
    assert!(
        refused_2 >= 1,
        "{context} no request refused after VM {v2} failed right after its load"
    );

    // 3. A VM that has run longer than the backoff fails: the very next request gets a
    // new VM; nothing is refused but the trapping request.
    let mut n = 0;
    while age(v3, SystemTime::now()) < BACKOFF_MAX + CLOCK_SLACK {
        n += 1;
        let label = format!("before-third-trap-{n}");
        bench.send(&label, None, false);
        bench.expect(&label, &Fate::Stamped(v3));
        std::thread::sleep(PACE);
    }
    let backoffs = bench.stat(&backoff);
    bench.send("third-trap", None, true);
    bench.expect("third-trap", &Fate::Refused);
    let from = bench.sent.len();
    bench.send("after-third-trap", None, false);
    let (v4, refused_3) = bench.expect_reload(from, v3);
    assert_eq!(
        refused_3, 0,
        "{context} requests refused after the third trap"
    );
    assert_eq!(
        bench.stat(&backoff),
        backoffs,
        "{context} {backoff} after the third trap"
    );
    bench.send("after-third-trap-again", None, false);
    bench.expect("after-third-trap-again", &Fate::Stamped(v4));

    // Each refused request is a reload skipped for the backoff; each new VM a reload.
    bench.expect_logged(TRAP_LOG, 3);
    for vm in [v2, v3, v4] {
        assert_eq!(
            bench.log_count(&format!("{VM_STARTED}{vm:020} started")),
            1,
            "{context} log line of VM {vm}'s start"
        );
    }
    assert_eq!(
        bench.stat(&backoff),
        refused_1 + refused_2,
        "{context} {backoff}"
    );
    assert_eq!(
        bench.stat(&format!("wasm.{PLUGIN}.vm_reload_success")),
        3,
        "{context}"
    );
    assert_eq!(
        bench.stat(&format!("wasm.{PLUGIN}.vm_reload_failure")),
        0,
        "{context}"
    );
    let created = "wasm.envoy.wasm.runtime.v8.created";
    assert_eq!(
        bench.stat(created),
        trapped.stats[created] + 3,
        "{context} {created}"
    );
    let active = "wasm.envoy.wasm.runtime.v8.active";
    assert_eq!(
        bench.stat(active),
        trapped.stats[active],
        "{context} {active}"
    );
    bench.expect_downstream_counts();
}
