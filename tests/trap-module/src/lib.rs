//! A proxy-wasm (ABI 0.2.1) HTTP filter for tests only, with no dependencies:
//!
//! - every request gets the header `x-plugin-vm: <id>`, where `<id>` is the host clock
//!   (nanoseconds) when this VM instance started: the upstream sees whether the plugin
//!   ran on a request, and in which VM;
//! - a request carrying the header `x-trap` makes the VM trap (`unreachable`), as a
//!   bug in a real plugin would.
//!
//! `no_std` and no allocator: the only buffer the host ever hands over is the value of
//! `x-trap`, which is never read, so it goes to one static scratch area.
#![no_std]

use core::sync::atomic::{AtomicU64, Ordering};

/// Header map: the request's headers.
const REQUEST_HEADERS: u32 = 0;
/// Host call status: OK.
const OK: u32 = 0;
/// `proxy_log` level: info.
const INFO: u32 = 2;
/// Request callbacks' return value: continue.
const CONTINUE: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
}

/// This VM instance's id: the host clock at `proxy_on_vm_start` (a new VM starts with
/// fresh memory, so with 0 here until then).
static VM_ID: AtomicU64 = AtomicU64::new(0);

/// Where the host writes the buffers it hands over (see the crate's doc).
const SCRATCH_SIZE: usize = 4096;
static mut SCRATCH: [u8; SCRATCH_SIZE] = [0; SCRATCH_SIZE];

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Nothing to construct: no static constructors, no allocator.
#[no_mangle]
pub extern "C" fn _initialize() {}

/// Every buffer the host hands over lands in the scratch area, overwriting the last
/// one; a buffer too large for it is refused (null).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size <= SCRATCH_SIZE {
        // Only the address is taken: this module never reads or writes through it.
        (&raw mut SCRATCH).cast()
    } else {
        core::ptr::null_mut()
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _configuration_size: usize) -> u32 {
    let mut now = 0u64;
    // SAFETY: `now` outlives the call.
    unsafe { proxy_get_current_time_nanoseconds(&mut now) };
    VM_ID.store(now, Ordering::Relaxed);
    // `trap-module: VM <id, 20 digits> started`, for the test to find in Envoy's log.
    let mut line = *b"trap-module: VM 00000000000000000000 started";
    decimal(now, &mut line[16..36]);
    // SAFETY: pointer and length describe a live array.
    unsafe { proxy_log(INFO, line.as_ptr(), line.len()) };
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_context_id: u32, _configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    _context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    let trap = b"x-trap";
    let mut value: *mut u8 = core::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the name is a live array; the out-pointers outlive the call. The value
    // (in the scratch area) is not read.
    let found = unsafe {
        proxy_get_header_map_value(
            REQUEST_HEADERS,
            trap.as_ptr(),
            trap.len(),
            &mut value,
            &mut size,
        )
    };
    if found == OK {
        // The failure under test: the VM traps in the middle of a callback.
        core::arch::wasm32::unreachable();
    }
    let name = b"x-plugin-vm";
    let mut id = [b'0'; 20];
    decimal(VM_ID.load(Ordering::Relaxed), &mut id);
    // SAFETY: pointers and lengths describe live arrays. A failure only shows as a
    // missing header upstream, which is what the test looks at.
    unsafe {
        proxy_add_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            id.as_ptr(),
            id.len(),
        )
    };
    CONTINUE
}

/// Writes `n` in decimal, right-aligned and zero-padded, into `out` (20 digits hold any
/// u64).
fn decimal(mut n: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}
