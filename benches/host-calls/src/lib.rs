//! Makes one kind of host call a configured number of times per request, at the
//! request's headers, and nothing else: the plugin configuration is `<kind> <times>`,
//! e.g. `increment 10`. The difference to `none 0`, divided by the times, is what one
//! such call costs Envoy per request, crossings included. For the benchmark only.
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};

// The raw calls, so that nothing but the call and its allocation is measured.
extern "C" {
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

const REQUEST_HEADERS: u32 = 0;

/// Frees what the host allocated in the VM for a returned value.
fn free(data: *mut u8, size: usize) {
    if !data.is_null() {
        // SAFETY: the host allocated `size` bytes at `data` through the SDK's
        // proxy_on_memory_allocate, which hands out a Vec's buffer of that capacity.
        drop(unsafe { Vec::from_raw_parts(data, size, size) });
    }
}

fn header(name: &str) {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the pointers are valid for the call; the host writes the value's buffer.
    unsafe {
        proxy_get_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    };
    free(data, size);
}

fn map() {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: as above.
    unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
    free(data, size);
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plan: Plan { kind: Kind::None, times: 0, metric: 0 } })
    });
}}

#[derive(Clone, Copy)]
enum Kind {
    None,
    /// `proxy_increment_metric` on a counter.
    Increment,
    /// `proxy_record_metric` on a histogram.
    Record,
    /// `proxy_get_current_time_nanoseconds`.
    Clock,
    /// `proxy_get_header_map_value` of a header that is there (`:method`): the host
    /// also calls into the VM to allocate the value.
    Header,
    /// `proxy_get_header_map_value` of a header that is not there.
    HeaderMissing,
    /// `proxy_get_header_map_pairs` of the request: the whole map, allocated in the VM.
    Map,
}

#[derive(Clone, Copy)]
struct Plan {
    kind: Kind,
    times: u32,
    metric: u32,
}

struct Root {
    plan: Plan,
}

impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let mut words = config.trim_matches('"').split_whitespace();
        let kind = match words.next() {
            Some("increment") => Kind::Increment,
            Some("record") => Kind::Record,
            Some("clock") => Kind::Clock,
            Some("header") => Kind::Header,
            Some("header_missing") => Kind::HeaderMissing,
            Some("map") => Kind::Map,
            _ => Kind::None,
        };
        let times = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let metric = match kind {
            Kind::Record => hostcalls::define_metric(MetricType::Histogram, "host_calls.histogram"),
            _ => hostcalls::define_metric(MetricType::Counter, "host_calls.counter"),
        }
        .unwrap_or(0);
        self.plan = Plan {
            kind,
            times,
            metric,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { plan: self.plan }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    plan: Plan,
}

impl Context for Stream {}
impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Plan {
            kind,
            times,
            metric,
        } = self.plan;
        for _ in 0..times {
            let _ = match kind {
                Kind::None => Ok(()),
                Kind::Increment => hostcalls::increment_metric(metric, 1),
                Kind::Record => hostcalls::record_metric(metric, 7),
                Kind::Clock => hostcalls::get_current_time().map(drop),
                Kind::Header => Ok(header(":method")),
                Kind::HeaderMissing => Ok(header("x-absent")),
                Kind::Map => Ok(map()),
            };
        }
        Action::Continue
    }
}
