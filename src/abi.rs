//! The proxy-wasm ABI (0.2.1) as this filter uses it: the host functions it imports,
//! each wrapped so that its status comes back as a value (never a panic) and its kinds
//! are the core's typed ones, and the memory export through which the host hands buffers
//! over.
//!
//! The filter speaks the ABI directly rather than through the Rust SDK for two
//! reasons: the SDK passes header values to `dispatch_http_call` as `&str`, so a value
//! with bytes 0x80-0xFF could not be copied as it arrived, and its dispatcher panics on
//! a call token it did not register. Here a request's header map travels as the bytes
//! the host serialized, and every call's answer is routed by token.

use traffic_mirror_core::host::{BufferType, LogLevel, MapType, MetricType, Status};

const OK: u32 = 0;

/// A status other than OK, as the core's [`Status`].
fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status::from_abi(status))
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_done() -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buffer: *mut u8, size: usize) -> u16;
}

/// Eight bytes from WASI's `random_get` (the host's random source); `None` if it fails.
pub fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: the pointer and length describe a live buffer.
    let errno = unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) };
    (errno == 0).then(|| u64::from_le_bytes(bytes))
}

/// Memory the host asks for to hand a buffer over; ownership comes back through
/// [`take`].
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    // `Vec::with_capacity` allocates exactly `size` bytes for u8, which `take`
    // relies on to free with the same layout.
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

/// Takes ownership of a buffer the host filled in memory from
/// [`proxy_on_memory_allocate`].
///
/// # Safety
/// `pointer` is null or was returned by `proxy_on_memory_allocate(size)`, and is not
/// used again.
unsafe fn take(pointer: *mut u8, size: usize) -> Vec<u8> {
    if pointer.is_null() {
        Vec::new()
    } else {
        // SAFETY: per this function's contract.
        unsafe { Vec::from_raw_parts(pointer, size, size) }
    }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe a live &str. A failed log has nowhere to go.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The first value of a header; `Ok(None)` when absent (the ABI's `NotFound`).
pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the name is a live &str; the out-pointers outlive the call.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    // SAFETY: on success the host wrote a buffer from proxy_on_memory_allocate (or null).
    let value = unsafe { take(data, size) };
    match check(status) {
        Ok(()) => Ok(Some(value)),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets a header (replacing every value it had).
pub fn replace_header(map: MapType, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: name and value are live slices for the duration of the call.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes a header (every value); removing an absent header is not an error.
pub fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
    // SAFETY: the name is a live &str.
    match check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) }) {
        Err(Status::NotFound) => Ok(()),
        other => other,
    }
}

/// The whole header map, serialized (see `traffic_mirror_core::wire`).
pub fn header_map(map: MapType) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers outlive the call.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    // SAFETY: as in `header`.
    let pairs = unsafe { take(data, size) };
    check(status).map(|()| pairs)
}

/// Up to `max_size` bytes of a buffer from `start`; empty when there is none (the ABI's
/// `NotFound`).
pub fn buffer(buffer: BufferType, start: usize, max_size: usize) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers outlive the call.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    // SAFETY: as in `header`.
    let bytes = unsafe { take(data, size) };
    match check(status) {
        Ok(()) => Ok(bytes),
        Err(Status::NotFound) => Ok(Vec::new()),
        Err(status) => Err(status),
    }
}

/// An empty serialized map: the calls carry no trailers.
const NO_TRAILERS: [u8; 4] = [0; 4];

/// Sends a request to `cluster`; returns the call's token. `headers` is a serialized
/// map; an empty body is sent as none.
pub fn http_call(
    cluster: &str,
    headers: &[u8],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, Status> {
    let mut token = 0u32;
    let (body_pointer, body_size) = if body.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (body.as_ptr(), body.len())
    };
    // SAFETY: every pointer and length describes a live slice; `token` outlives the call.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body_pointer,
            body_size,
            NO_TRAILERS.as_ptr(),
            NO_TRAILERS.len(),
            timeout_ms,
            &mut token,
        )
    };
    check(status).map(|()| token)
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: the name is a live &str; `id` outlives the call.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain values only.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// Records a value in a histogram.
pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values only.
    check(unsafe { proxy_record_metric(id, value) })
}

/// Tells the host that the current root context, which answered `proxy_on_done` with
/// "not yet", is done now; the host then deletes it.
pub fn done() -> Result<(), Status> {
    // SAFETY: no arguments.
    check(unsafe { proxy_done() })
}

/// Wall-clock time in nanoseconds.
pub fn now_nanos() -> Result<u64, Status> {
    let mut now = 0u64;
    // SAFETY: `now` outlives the call.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut now) }).map(|()| now)
}
