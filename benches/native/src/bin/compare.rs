//! `compare N`: the comparison of row 8b of the Envoy benchmark (two 4 KiB JSON answers of
//! the catalog, equal but for the ignored `/updated_at`), N times.
use std::hint::black_box;
use traffic_mirror_core::compare::pointer::Pattern;
use traffic_mirror_core::compare::{compare, BodyMode, Compare, CompareResult, Response};

fn answer(body: &[u8]) -> Response {
    Response {
        status: Some(200),
        grpc_status: None,
        headers: Vec::new(),
        content_type: Some(b"application/json".to_vec()),
        content_encoding: None,
        length: body.len(),
        body: body.to_vec(),
    }
}

fn main() {
    let times: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let config = Compare {
        headers: Vec::new(),
        body: BodyMode::Auto,
        ignore: vec![Pattern::parse("/updated_at").expect("a pattern")],
        unordered: Vec::new(),
        max_body_bytes: 65536,
        max_paths: 32,
        log_per_minute: 6,
    };
    let primary = answer(include_bytes!("../../data/primary.json"));
    let mirror = answer(include_bytes!("../../data/mirror.json"));
    for _ in 0..times {
        let found = compare(
            black_box(&config),
            false,
            black_box(&primary),
            black_box(&mirror),
        );
        assert_eq!(found.result, CompareResult::Match);
    }
}
