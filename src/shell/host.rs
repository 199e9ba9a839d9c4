//! The few host calls whose SDK wrappers panic on an unexpected status, declared here
//! so that every status comes back as a value to count and log.

use proxy_wasm::types::MetricType;

/// A host call's non-OK status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

const OK: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
}

fn check(status: u32) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

pub fn define_metric(metric_type: MetricType, name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: the name pointer and length describe a live &str; `id` outlives the call.
    check(unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: plain values only.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// Sets the root context's tick period (0 stops the tick); from an HTTP context too.
pub fn set_tick_period_ms(period: u32) -> Result<(), HostError> {
    // SAFETY: plain values only.
    check(unsafe { proxy_set_tick_period_milliseconds(period) })
}

pub fn now_nanos() -> u64 {
    let mut now = 0u64;
    // SAFETY: `now` outlives the call.
    match check(unsafe { proxy_get_current_time_nanoseconds(&mut now) }) {
        Ok(()) => now,
        Err(_) => 0,
    }
}
