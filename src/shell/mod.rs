//! The proxy-wasm shell: reads from the host, calls the pure core, hands copies to the
//! host. One VM instance per worker thread, single-threaded: the root context and the
//! HTTP contexts share a [`Worker`] through `Rc<RefCell<_>>`.

mod host;
mod root;
mod stream;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use crate::config::Plan;
use crate::outbox::Outbox;
use crate::sampling::Rng;
use crate::throttle::LogThrottle;

pub use root::Root;

/// A worker's state once configured.
pub struct Worker {
    pub plan: Plan,
    pub outbox: Outbox,
    pub metrics: root::HostMetrics,
    pub throttle: LogThrottle,
    pub rng: Rng,
    /// Whether the root's tick is running to send queued copies.
    pub tick_armed: bool,
}

pub type SharedWorker = Rc<RefCell<Option<Worker>>>;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // Replaces the SDK's hook (which unwraps the log call): a panic should never happen
    // (clippy denies the usual causes), but if one does, say so in Envoy's log.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("traffic-mirror: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(Root::new())
    });
}}
