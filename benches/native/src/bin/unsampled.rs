//! `unsampled N`: row 3d of the Envoy benchmark, a request not mirrored by a target with
//! `compare`, N times through the core's callbacks (context created, request headers,
//! response headers and body, done), against a host that answers at once.
use traffic_mirror_core::host::{BufferType, Host, LogLevel, MapType, MetricType, Status};
use traffic_mirror_core::lifecycle::Vm;
use traffic_mirror_core::wire;

const CONFIGURATION: &str = r#"{"targets":[{"name":"bench","cluster":"mirror","percent":0,"compare":{"ignore":["/updated_at"]}}]}"#;

/// wrk's request as Envoy hands it to the filter.
const REQUEST: [(&[u8], &[u8]); 6] = [
    (b":authority", b"127.0.0.1:10000"),
    (b":path", b"/bench/item?id=1"),
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b"x-forwarded-proto", b"http"),
    (b"x-request-id", b"8a3c54f1-7a3e-4bd1-9f5e-2b1c0d9e8f7a"),
];

struct QuickHost {
    map: Vec<u8>,
}

impl Host for QuickHost {
    fn log(&mut self, _: LogLevel, _: &str) {}
    fn now_nanos(&mut self) -> Result<u64, Status> {
        Ok(1)
    }
    fn header_map(&mut self, _: MapType) -> Result<Vec<u8>, Status> {
        Ok(self.map.clone())
    }
    fn header(&mut self, _: MapType, _: &str) -> Result<Option<Vec<u8>>, Status> {
        Ok(None)
    }
    fn replace_header(&mut self, _: MapType, _: &str, _: &[u8]) -> Result<(), Status> {
        Ok(())
    }
    fn remove_header(&mut self, _: MapType, _: &str) -> Result<(), Status> {
        Ok(())
    }
    fn buffer(&mut self, _: BufferType, _: usize, _: usize) -> Result<Vec<u8>, Status> {
        Ok(CONFIGURATION.as_bytes().to_vec())
    }
    fn http_call(&mut self, _: &str, _: &[u8], _: &[u8], _: u32) -> Result<u32, Status> {
        Ok(1)
    }
    fn define_metric(&mut self, _: MetricType, _: &str) -> Result<u32, Status> {
        Ok(1)
    }
    fn increment_metric(&mut self, _: u32, _: i64) -> Result<(), Status> {
        Ok(())
    }
    fn record_metric(&mut self, _: u32, _: u64) -> Result<(), Status> {
        Ok(())
    }
    fn done(&mut self) -> Result<(), Status> {
        Ok(())
    }
    fn random_seed(&mut self) -> u64 {
        7
    }
}

fn main() {
    let times: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut vm = Vm::new(QuickHost {
        map: wire::serialize(&REQUEST),
    });
    vm.on_context_create(1, 0);
    assert!(vm.on_configure(1, CONFIGURATION.len()));
    for request in 0..times {
        let context = 100 + request;
        vm.on_context_create(context, 1);
        vm.on_request_headers(context, REQUEST.len(), true);
        vm.on_response_headers(context, 3, false);
        vm.on_response_body(context, 10, true);
        vm.on_done(context);
    }
    assert_eq!(vm.requests_in_progress(), 0);
}
