//! What a process holds, Envoy above all: its resident memory and the bytes queued in
//! its TCP sockets ([`Memory`]), now or at its peak while a test runs ([`PeakMemory`]);
//! and the linear memory of each of its wasm VMs ([`WasmMemory`]).

use std::fs;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::process::Envoy;

impl Envoy {
    /// Envoy's resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.pid();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
    }

    /// What Envoy holds now: its resident memory and the bytes queued in its TCP
    /// sockets (see [`Memory`]).
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }
}

/// What a process holds: its resident memory (`VmRSS`) and the payload bytes queued in
/// its TCP sockets, sent and not yet acknowledged or received and not yet read
/// (`tx_queue` and `rx_queue` of `/proc/net/tcp{,6}` for the socket inodes among its
/// file descriptors). Kernel socket memory is not in a process's RSS, but is charged to
/// its memory cgroup: a sidecar's limit counts both. Per process, so tests running
/// beside each other do not disturb it (the system-wide `/proc/net/sockstat` would).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub sockets: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let inodes: std::collections::HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let link = fs::read_link(entry.path()).ok()?;
                let link = link.to_str()?;
                Some(
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .collect();
        let mut sockets = 0;
        for table in ["tcp", "tcp6"] {
            let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(queues), Some(inode)) = (fields.get(4), fields.get(9)) else {
                    continue;
                };
                if !inodes.contains(*inode) {
                    continue;
                }
                if let Some((tx, rx)) = queues.split_once(':') {
                    sockets += u64::from_str_radix(tx, 16).unwrap_or(0)
                        + u64::from_str_radix(rx, 16).unwrap_or(0);
                }
            }
        }
        Memory { rss, sockets }
    }

    /// Both together.
    pub fn total(&self) -> u64 {
        self.rss + self.sockets
    }
}

/// The most a process held while it ran: [`Memory`] sampled every few milliseconds by a
/// thread of its own until [`PeakMemory::stop`].
pub struct PeakMemory {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<Memory>>,
}

impl PeakMemory {
    pub fn start(pid: u32) -> PeakMemory {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peak = Memory::default();
            loop {
                let now = Memory::of(pid);
                if now.total() > peak.total() {
                    peak = now;
                }
                if flag.load(Ordering::SeqCst) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakMemory {
            stop,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling; the sample with the most held in all.
    pub fn stop(mut self) -> Memory {
        self.stop.store(true, Ordering::SeqCst);
        self.sampler
            .take()
            .and_then(|sampler| sampler.join().ok())
            .unwrap_or_default()
    }
}

/// The linear memory of one wasm VM in a process running V8 (Envoy's
/// `envoy.wasm.runtime.v8`), as mapped: V8 reserves a large region for each memory
/// (8 GiB on x86-64; more than 4 GiB on any 64-bit build, for its guard pages) and makes
/// its first `memory.size` bytes readable and writable, so each memory is an anonymous
/// `rw-p` mapping directly followed by an inaccessible (`---p`) rest of the
/// reservation. A wasm memory never shrinks: what it has grown to is its high-water mark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WasmMemory {
    /// Its size (`memory.size`, in bytes).
    pub size: u64,
    /// The part of it resident (touched), in bytes.
    pub rss: u64,
}

impl WasmMemory {
    /// Every wasm memory of process `pid`, in address order (one per VM: Envoy runs one
    /// VM per worker and one on the main thread for each plugin's `vm_id`).
    pub fn of(pid: u32) -> Vec<WasmMemory> {
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        // (start, end, permissions, anonymous, Rss in bytes) of each mapping.
        let mut maps: Vec<(u64, u64, String, bool, u64)> = Vec::new();
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let range = fields.next().unwrap_or_default();
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) =
                    (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
                {
                    let permissions = fields.next().unwrap_or_default().to_string();
                    // offset, device, inode, then the path of a file mapping.
                    let anonymous = fields.nth(3).is_none();
                    maps.push((start, end, permissions, anonymous, 0));
                    continue;
                }
            }
            if let (Some(kb), Some(last)) = (line.strip_prefix("Rss:"), maps.last_mut()) {
                let kb = kb.trim().trim_end_matches("kB").trim();
                last.4 = kb.parse::<u64>().unwrap_or(0) * 1024;
            }
        }
        maps.windows(2)
            .filter_map(|pair| {
                let [memory, rest] = pair else { return None };
                let reserved = rest.1 - rest.0;
                (memory.1 == rest.0
                    && memory.2 == "rw-p"
                    && memory.3
                    && rest.2 == "---p"
                    && rest.3
                    && reserved > 4 << 30)
                    .then_some(WasmMemory {
                        size: memory.1 - memory.0,
                        rss: memory.4,
                    })
            })
            .collect()
    }
}

impl Envoy {
    /// The linear memory of each of Envoy's wasm VMs (see [`WasmMemory`]).
    pub fn wasm_memories(&self) -> Vec<WasmMemory> {
        WasmMemory::of(self.pid())
    }
}
