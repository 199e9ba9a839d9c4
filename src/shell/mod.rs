//! The proxy-wasm shell: the exported callbacks Envoy calls, which read from the host
//! and call the pure core. Envoy runs one VM instance per worker thread and calls it
//! from that thread only, so the VM's state is a thread-local.

mod abi;
mod root;
mod stream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::budget::Budgets;
use crate::metrics::Tally;
use abi::LogLevel;
use root::Worker;
use stream::Stream;

/// Every context of this VM instance.
#[derive(Default)]
struct Vm {
    /// Root contexts (one per plugin configuration); `None` until configured.
    roots: HashMap<u32, Option<Worker>>,
    /// HTTP contexts, one per request in progress.
    streams: HashMap<u32, Stream>,
    /// Bytes held for copies by every request and root (`max_buffered_bytes`), and
    /// bytes of copies handed to Envoy and not yet ended (`max_in_flight_bytes`).
    budgets: Budgets,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
    /// When a failed host call was last logged.
    static HOST_FAILURE_LOGGED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Logs a failed host call, at most once a minute per VM: the filter goes on (the
/// caller treats the value as absent, or abandons the copy), the client never sees it.
fn host_failed(what: &str, status: abi::Status) {
    const MINUTE: u64 = 60 * 1_000_000_000;
    let now = abi::now_nanos();
    HOST_FAILURE_LOGGED.with(|last| {
        if last.get().is_none_or(|t| now.saturating_sub(t) >= MINUTE) {
            last.set(Some(now));
            abi::log(
                LogLevel::Warn,
                &format!(
                    "traffic-mirror: {what} failed with status {}; logged at most once a minute",
                    status.0
                ),
            );
        }
    });
}

/// Runs `f` on the VM state. Envoy never calls back into a VM that is inside a
/// callback (it defers such calls), so the state is never borrowed twice; if it ever
/// were, the callback is skipped rather than the VM taken down.
fn with_vm<R>(default: R, f: impl FnOnce(&mut Vm) -> R) -> R {
    VM.with(|vm| match vm.try_borrow_mut() {
        Ok(mut vm) => f(&mut vm),
        Err(_) => {
            abi::log(
                LogLevel::Error,
                "traffic-mirror: re-entrant callback skipped",
            );
            default
        }
    })
}

/// Runs `f` on an HTTP context, its configured root and the VM's budgets.
fn with_stream(context_id: u32, f: impl FnOnce(&mut Stream, &mut Worker, &mut Budgets)) {
    with_vm((), |vm| {
        let Some(stream) = vm.streams.get_mut(&context_id) else {
            return;
        };
        if let Some(Some(worker)) = vm.roots.get_mut(&stream.root) {
            f(stream, worker, &mut vm.budgets);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: runs the module's static constructors once, as the WASI reactor model
    // expects of `_initialize`.
    unsafe { __wasm_call_ctors() };
    // A panic should never happen (clippy denies the usual causes); if one does, say
    // so in Envoy's log before the VM stops.
    std::panic::set_hook(Box::new(|info| {
        abi::log(
            LogLevel::Critical,
            &format!("traffic-mirror: panic: {info}"),
        );
    }));
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    with_vm((), |vm| {
        if parent_context_id == 0 {
            vm.roots.insert(context_id, None);
        } else {
            vm.streams
                .insert(context_id, Stream::new(parent_context_id));
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    abi::log(
        LogLevel::Info,
        &format!(
            "traffic-mirror {} starting (hash-sampled, fire-and-forget mirroring)",
            env!("CARGO_PKG_VERSION")
        ),
    );
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, configuration_size: usize) -> u32 {
    let configuration = abi::buffer(abi::PLUGIN_CONFIGURATION, 0, configuration_size)
        .unwrap_or_else(|status| {
            host_failed("reading the plugin configuration", status);
            Vec::new()
        });
    let Some(worker) = root::configure(&configuration) else {
        return 0;
    };
    with_vm(0, |vm| {
        vm.roots.insert(context_id, Some(worker));
        1
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    with_stream(context_id, |stream, worker, budgets| {
        stream.on_request_headers(worker, budgets, end_of_stream != 0);
    });
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> u32 {
    with_stream(context_id, |stream, worker, budgets| {
        stream.on_request_body(worker, budgets, body_size, end_of_stream != 0);
    });
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    with_stream(context_id, |stream, worker, budgets| {
        stream.finish(worker, budgets);
    });
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) {
    with_vm((), |vm| {
        // The answer comes to the root that made the call; should a host deliver it
        // elsewhere, the root that owns the token still counts it.
        let worker = match vm.roots.get_mut(&context_id) {
            Some(Some(worker)) if worker.owns_call(token) => Some(worker),
            _ => vm
                .roots
                .values_mut()
                .flatten()
                .find(|worker| worker.owns_call(token)),
        };
        let in_flight = &mut vm.budgets.in_flight;
        if worker.is_some_and(|worker| worker.call_ended(token, body_size, num_trailers, in_flight))
        {
            // The last copy a replaced configuration waited for: its root may go. The
            // host deletes it once this callback has returned.
            if let Err(status) = abi::done() {
                host_failed("telling Envoy a replaced configuration is done", status);
            }
        }
    });
}

/// Envoy asks whether a context may be deleted. Requests: always. A root context is
/// asked when its configuration has been replaced and no request uses it any more: it
/// stays until every copy it sent has ended and been counted (see [`crate::drain`]).
#[cfg_attr(not(feature = "bench-without-drain"), no_mangle)]
#[cfg_attr(feature = "bench-without-drain", allow(dead_code))]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    with_vm(abi::DONE, |vm| match vm.roots.get_mut(&context_id) {
        Some(Some(worker)) => {
            if worker.retire() {
                abi::DONE
            } else {
                abi::NOT_DONE
            }
        }
        _ => abi::DONE,
    })
}

// `proxy_on_log` is not exported: Envoy skips callbacks a module does not export, which
// saves a call into the VM per request. Nor are any of the response callbacks: the
// filter never looks at responses.

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with_vm((), |vm| {
        if let Some(stream) = vm.streams.remove(&context_id) {
            // A request that ended before it was complete. (Envoy deletes a root only
            // after its requests, so the root is there.)
            match vm.roots.get_mut(&stream.root) {
                Some(Some(worker)) => stream.end(&mut worker.metrics, &mut vm.budgets.buffered),
                _ => stream.end(&mut Tally::default(), &mut vm.budgets.buffered),
            }
        } else if let Some(Some(mut worker)) = vm.roots.remove(&context_id) {
            // Envoy deletes a root that said done (nothing in flight), or one it stops
            // without asking (the VM is going away): answers to its calls can no longer
            // come, so their bytes go back.
            worker.outbox.forget_all(&mut vm.budgets.in_flight);
        }
    });
}
