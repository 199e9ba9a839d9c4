//! Bodies: copied whole up to `max_body_bytes` (never truncated), with content-length
//! or chunked uploads, up to several MiB.

use serde_json::json;

use crate::support::{Envoy, EnvoyConfig, Received, Request, Upstream};
use crate::{assert_counters, pattern, send_all, wait_settled};

fn by_case<'a>(requests: &'a [Received], case: &str) -> Vec<&'a Received> {
    requests
        .iter()
        .filter(|r| r.header_str("x-case").as_deref() == Some(case))
        .collect()
}

#[test]
fn body_up_to_max_body_bytes_is_mirrored_and_a_longer_one_is_not() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [
        {"name": "small", "cluster": "mirror", "percent": 100, "max_body_bytes": 1024},
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    // (case, body, chunk size (0: content-length), mirrored?)
    let cases = [
        ("fixed-1024", pattern(1024, 10), 0, true),
        ("fixed-1025", pattern(1025, 11), 0, false),
        ("chunked-1024", pattern(1024, 12), 256, true),
        // The last byte comes in a chunk of its own: the cap is crossed mid-stream.
        ("chunked-1025", pattern(1025, 13), 512, false),
        ("fixed-0", Vec::new(), 0, true),
    ];
    let requests: Vec<Request> = cases
        .iter()
        .map(|(case, body, chunk, _)| {
            let request =
                Request::post(&format!("/upload/{case}"), body.clone()).header("x-case", case);
            if *chunk > 0 {
                request.chunked(body, *chunk)
            } else {
                request
            }
        })
        .collect();
    send_all(envoy.listener(), &requests, 1, 1);

    let mirrored = cases.iter().filter(|c| c.3).count() as u64;
    wait_settled(&envoy, "small");
    assert_counters(
        &envoy,
        "small",
        &[
            ("requests", 5),
            ("sampled", 5),
            ("skipped_body_too_large", 2),
            ("dispatched", mirrored),
            ("responses_2xx", mirrored),
        ],
    );
    let originals = primary.received();
    let copies = mirror.received();
    assert_eq!(copies.len() as u64, mirrored);
    for (case, body, chunk, is_mirrored) in &cases {
        let original = by_case(&originals, case);
        assert_eq!(original.len(), 1, "{case} at the primary");
        assert!(original[0].body == *body, "{case}: primary body differs");
        assert_eq!(original[0].chunked, *chunk > 0, "{case}");
        let copy = by_case(&copies, case);
        if *is_mirrored {
            assert_eq!(copy.len(), 1, "{case} at the mirror");
            assert!(copy[0].body == *body, "{case}: copy body differs");
            assert!(!copy[0].chunked, "{case}");
            assert_eq!(
                copy[0].header_str("content-length"),
                Some(body.len().to_string()),
                "{case}"
            );
        } else {
            assert!(copy.is_empty(), "{case} was mirrored");
        }
    }
}

#[test]
fn multi_megabyte_chunked_upload_reaches_primary_and_mirror_intact() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [
        {"name": "big", "cluster": "mirror", "percent": 100, "max_body_bytes": 8_388_608},
    ]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    let body = pattern(5 * 1024 * 1024, 42);
    let request = Request::post("/upload/big", Vec::new()).chunked(&body, 64 * 1024);
    let responses = send_all(envoy.listener(), &[request], 1, 1);
    assert_eq!(responses[0].status, 200);

    wait_settled(&envoy, "big");
    assert_counters(
        &envoy,
        "big",
        &[
            ("requests", 1),
            ("sampled", 1),
            ("dispatched", 1),
            ("responses_2xx", 1),
        ],
    );
    let original = &primary.received()[0];
    assert!(original.chunked);
    assert_eq!(original.body.len(), body.len());
    assert!(original.body == body, "primary body differs");
    let copies = mirror.received();
    assert_eq!(copies.len(), 1);
    assert!(!copies[0].chunked);
    assert_eq!(
        copies[0].header_str("content-length"),
        Some(body.len().to_string())
    );
    assert_eq!(copies[0].body.len(), body.len());
    assert!(copies[0].body == body, "copy body differs");
}
