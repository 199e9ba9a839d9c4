//! traffic-mirror, the module: the proxy-wasm callbacks Envoy calls, each handed to one
//! method of the core's [`Vm`] (`traffic_mirror_core::lifecycle`), with the host behind
//! the core's `Host` trait ([`host`], over the ABI's host functions, [`abi`]). Nothing
//! here decides anything. Envoy runs one VM instance per worker thread and calls it from
//! that thread only, so the VM's state is a thread-local.
//!
//! Built with `cargo build --target wasm32-wasip1 --release`:
//! `target/wasm32-wasip1/release/traffic_mirror.wasm`.

mod abi;
mod host;

use std::cell::RefCell;

use traffic_mirror_core::host::LogLevel;
use traffic_mirror_core::lifecycle::Vm;

use host::AbiHost;

/// What the request callbacks return: go on (the filter never pauses a request).
const CONTINUE: u32 = 0;

thread_local! {
    /// Every context of this VM instance.
    static VM: RefCell<Vm<AbiHost>> = RefCell::new(Vm::new(AbiHost));
}

/// Runs `f` on the VM. Envoy never calls back into a VM that is inside a callback (it
/// defers such calls), so it is never borrowed twice; if it ever were, the callback is
/// skipped rather than the VM taken down.
fn with_vm<R>(default: R, f: impl FnOnce(&mut Vm<AbiHost>) -> R) -> R {
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

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

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
    with_vm((), |vm| vm.on_context_create(context_id, parent_context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(root_context_id: u32, vm_configuration_size: usize) -> u32 {
    with_vm(false, |vm| {
        vm.on_vm_start(root_context_id, vm_configuration_size)
    })
    .into()
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_context_id: u32, configuration_size: usize) -> u32 {
    with_vm(false, |vm| {
        vm.on_configure(root_context_id, configuration_size)
    })
    .into()
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    with_vm((), |vm| {
        vm.on_request_headers(context_id, num_headers, end_of_stream != 0)
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> u32 {
    with_vm((), |vm| {
        vm.on_request_body(context_id, body_size, end_of_stream != 0)
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, num_trailers: usize) -> u32 {
    with_vm((), |vm| vm.on_request_trailers(context_id, num_trailers));
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    with_vm((), |vm| {
        vm.on_response_headers(context_id, num_headers, end_of_stream != 0)
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> u32 {
    with_vm((), |vm| {
        vm.on_response_body(context_id, body_size, end_of_stream != 0)
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, num_trailers: usize) -> u32 {
    with_vm((), |vm| vm.on_response_trailers(context_id, num_trailers));
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root_context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) {
    with_vm((), |vm| {
        vm.on_http_call_response(root_context_id, token, num_headers, body_size, num_trailers)
    });
}

/// 1: the host may delete the context now; 0: not yet (a replaced root with copies in
/// flight, which says `proxy_done` once they have ended).
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    with_vm(true, |vm| vm.on_done(context_id)).into()
}

// Not exported, because Envoy skips callbacks a module does not export and each one saves
// a call into the VM per request: `proxy_on_delete` (Envoy calls it right after
// `proxy_on_done`, which already forgets the context) and `proxy_on_log`. The response
// callbacks are exported for `compare`, which reads the primary's response: Envoy calls
// them for every request, about 2,700 instructions each (docs/benchmarks.md), and they
// return at once for a request without comparing copies.
