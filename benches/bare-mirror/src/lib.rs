//! The bare mechanics of mirroring through proxy-wasm: read the request's header map,
//! dispatch it unchanged (with its `:authority`) to the cluster `mirror`, ignore the
//! answer. No sampling, no limits, no body, no counting: what any `dispatch_http_call`
//! mirror pays at the least. For the benchmark only.
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BareRoot) });
}}

struct BareRoot;
struct BareStream;

impl Context for BareRoot {}
impl RootContext for BareRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(BareStream))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Context for BareStream {}
impl HttpContext for BareStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let _ = self.dispatch_http_call("mirror", headers, None, vec![], Duration::from_secs(5));
        Action::Continue
    }
}
