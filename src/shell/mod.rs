//! The proxy-wasm shell: the exported callbacks Envoy calls, each translated into one
//! call of the core's [`Contexts`] (see [`crate::lifecycle`]), with the host behind its
//! traits ([`host`]). Envoy runs one VM instance per worker thread and calls it from
//! that thread only, so the VM's state is a thread-local.

mod abi;
mod host;

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::lifecycle::{Contexts, Worker};
use abi::LogLevel;
use host::{host_failed, AbiHost, HostAnswer, HostMetrics, HostRequest};

thread_local! {
    /// Every context of this VM instance.
    static VM: RefCell<Contexts<HostMetrics>> = RefCell::new(Contexts::default());
}

/// Runs `f` on the VM's contexts. Envoy never calls back into a VM that is inside a
/// callback (it defers such calls), so they are never borrowed twice; if they ever were,
/// the callback is skipped rather than the VM taken down.
fn with_vm<R>(default: R, f: impl FnOnce(&mut Contexts<HostMetrics>) -> R) -> R {
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
    with_vm((), |vm| vm.create(context_id, parent_context_id));
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
    // RandomState draws its keys from WASI's random_get, i.e. the host.
    let seed = RandomState::new().hash_one(abi::now_nanos());
    let Some(worker) = Worker::configure(&configuration, seed, &mut AbiHost, HostMetrics::define)
    else {
        return 0;
    };
    with_vm(0, |vm| {
        vm.configure(context_id, worker);
        1
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    with_vm((), |vm| {
        let headers = &mut HostRequest::default();
        vm.request_headers(context_id, headers, end_of_stream != 0, &mut AbiHost);
    });
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> u32 {
    with_vm((), |vm| {
        let eos = end_of_stream != 0;
        vm.request_body(context_id, body_size, eos, host::body_chunk, &mut AbiHost);
    });
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    with_vm((), |vm| vm.request_trailers(context_id, &mut AbiHost));
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
    let drained = with_vm(None, |vm| {
        let answer = &mut HostAnswer;
        vm.call_answered(
            context_id,
            token,
            answer,
            body_size,
            num_trailers,
            &mut AbiHost,
        )
    });
    if let Some(root) = drained {
        // The last copy a replaced configuration waited for: its root may go. The host
        // deletes it once this callback has returned, without asking again.
        match abi::done() {
            Ok(()) => with_vm((), |vm| vm.delete(root)),
            Err(status) => host_failed("telling Envoy a replaced configuration is done", status),
        }
    }
}

/// Envoy is done with a context and asks whether it may delete it. Requests: always, and
/// they are forgotten now. A root context is asked when its configuration has been
/// replaced and no request uses it any more: it stays until every copy it sent has ended
/// and been counted (see [`crate::retirement`]).
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    with_vm(abi::DONE, |vm| {
        if vm.done(context_id, &mut AbiHost) {
            abi::DONE
        } else {
            abi::NOT_DONE
        }
    })
}

// Not exported, because Envoy skips callbacks a module does not export and each one saves
// a call into the VM per request: `proxy_on_delete` (Envoy calls it right after
// `proxy_on_done`, which already forgets the context), `proxy_on_log`, and every response
// callback (the filter never looks at responses).
