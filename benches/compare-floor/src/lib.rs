//! The floor of a comparing filter (see Cargo.toml): the ABI spoken directly, no state
//! kept, every callback but the request's headers returning at once.

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

const REQUEST_HEADERS: u32 = 0;
const COUNTER: u32 = 0;
static mut REQUESTS: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> u32 {
    let name = b"floor.requests";
    let mut id = 0u32;
    // SAFETY: the name and the out-pointer are live for the call.
    let status = unsafe { proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) };
    // SAFETY: one thread per VM; written here only, read in the request callback.
    unsafe { REQUESTS = id };
    u32::from(status == 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the out-pointers are live for the call; the map the host placed is taken
    // back and freed.
    unsafe {
        if proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) == 0 && !data.is_null()
        {
            drop(Vec::from_raw_parts(data, size, size));
        }
        proxy_increment_metric(REQUESTS, 1);
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context: u32, _size: usize, _end: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context: u32, _trailers: usize) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}
