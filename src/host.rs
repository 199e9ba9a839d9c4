//! The core's [`Host`], implemented with the proxy-wasm ABI: one host function a method,
//! and nothing else. What the filter makes of an answer or a failure is the core's.

use traffic_mirror_core::host::{BufferType, Host, LogLevel, MapType, MetricType, Status};

use crate::abi;

/// Envoy, as the module reaches it: through the ABI's host functions.
pub struct AbiHost;

impl Host for AbiHost {
    fn log(&mut self, level: LogLevel, message: &str) {
        abi::log(level, message);
    }

    fn now_nanos(&mut self) -> Result<u64, Status> {
        abi::now_nanos()
    }

    fn header_map(&mut self, map: MapType) -> Result<Vec<u8>, Status> {
        abi::header_map(map)
    }

    fn header(&mut self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
        abi::header(map, name)
    }

    fn replace_header(&mut self, map: MapType, name: &str, value: &[u8]) -> Result<(), Status> {
        abi::replace_header(map, name, value)
    }

    fn remove_header(&mut self, map: MapType, name: &str) -> Result<(), Status> {
        abi::remove_header(map, name)
    }

    fn buffer(
        &mut self,
        buffer: BufferType,
        start: usize,
        max_size: usize,
    ) -> Result<Vec<u8>, Status> {
        abi::buffer(buffer, start, max_size)
    }

    fn http_call(
        &mut self,
        cluster: &str,
        headers: &[u8],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        abi::http_call(cluster, headers, body, timeout_ms)
    }

    fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32, Status> {
        abi::define_metric(kind, name)
    }

    fn increment_metric(&mut self, id: u32, offset: i64) -> Result<(), Status> {
        abi::increment_metric(id, offset)
    }

    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), Status> {
        abi::record_metric(id, value)
    }

    fn done(&mut self) -> Result<(), Status> {
        abi::done()
    }

    fn random_seed(&mut self) -> u64 {
        // WASI's random_get, i.e. the host's random source. Should it fail, the draws
        // are as uniform from 0, only foreseeable.
        abi::random_u64().unwrap_or(0)
    }
}
