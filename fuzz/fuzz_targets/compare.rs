//! The comparison over arbitrary answers: two bodies (split at the first 0xFF byte), each
//! as plain JSON or bytes and as gzip- or deflate-encoded data, with `ignore` and
//! `unordered` patterns that name real paths. Never panics; a body always matches
//! itself; what the side-by-side reading calls equal the trees do too; equality is
//! symmetric.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_mirror_core::compare::decode::{decode, Encoding};
use traffic_mirror_core::compare::json::{equal_in_order, first_difference, parse, Rules};
use traffic_mirror_core::compare::pointer::Pattern;
use traffic_mirror_core::compare::{compare, BodyMode, Compare, CompareResult, Response};

fn answer(body: &[u8], encoding: Option<&str>) -> Response {
    Response {
        status: Some(200),
        grpc_status: None,
        headers: vec![("content-type".into(), Some(b"application/json".to_vec()))],
        content_type: Some(b"application/json".to_vec()),
        content_encoding: encoding.map(|e| e.as_bytes().to_vec()),
        length: body.len(),
        body: body.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&x| x == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    // Decoding hostile bytes: a result or a refusal, within the limit.
    for encoding in [Encoding::Gzip, Encoding::Deflate] {
        if let Ok(decoded) = decode(encoding, a, 4096) {
            assert!(decoded.len() <= 4096);
        }
    }
    let ignore = vec![
        Pattern::parse("/id").unwrap(),
        Pattern::parse("/items/*/at").unwrap(),
    ];
    let unordered = vec![
        Pattern::parse("/tags").unwrap(),
        Pattern::parse("").unwrap(),
    ];
    let rules = Rules {
        ignore: &ignore,
        unordered: &unordered,
    };
    let (pa, pb) = (parse(a), parse(b));
    // The side-by-side reading is never wrong when it is sure.
    if equal_in_order(a, b, rules) == Some(true) {
        let (Some(pa), Some(pb)) = (&pa, &pb) else {
            panic!("equal side by side, yet not JSON");
        };
        assert_eq!(
            first_difference(pa, pb, rules),
            None,
            "equal side by side only"
        );
    }
    if pa.is_none() {
        assert_ne!(
            equal_in_order(a, a, rules),
            Some(true),
            "not JSON, yet equal"
        );
    }
    if let Some(pa) = &pa {
        assert_eq!(
            first_difference(pa, pa, rules),
            None,
            "a body matches itself"
        );
        if let Some(pb) = &pb {
            assert_eq!(
                first_difference(pa, pb, rules).is_none(),
                first_difference(pb, pa, rules).is_none(),
                "equality is symmetric"
            );
        }
    }
    // The whole comparison, as JSON and as bytes.
    for body in [BodyMode::Json, BodyMode::Bytes, BodyMode::Auto] {
        let config = Compare {
            headers: vec!["content-type".into()],
            body,
            ignore: ignore.clone(),
            unordered: unordered.clone(),
            max_body_bytes: 4096,
            max_paths: 4,
            log_per_minute: 1,
        };
        let same = compare(&config, false, &answer(a, None), &answer(a, None));
        let expected = match (body, &pa) {
            (BodyMode::Bytes, _) | (_, Some(_)) if a.len() <= 4096 => CompareResult::Match,
            (_, _) if a.len() > 4096 => CompareResult::TooLarge,
            _ => CompareResult::NotJson,
        };
        assert_eq!(same.result, expected, "an answer compared with itself");
        let other = compare(&config, false, &answer(a, None), &answer(b, Some("gzip")));
        assert_ne!(other.result, CompareResult::MirrorFailed);
    }
});
