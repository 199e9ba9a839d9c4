//! What comparing answers makes the module's own memory hold, measured on the built
//! module: a wasm VM's memory never shrinks, so what counts is its high-water mark. With
//! the default `compare.max_body_bytes` (64 KiB), bodies built to cost the parser the
//! most (a flat array of `0`s, an object of one-letter members, strings full of escapes,
//! deep nesting, a large unordered array) are compared again and again with a mirror's
//! body that differs in its very last value, so that both are read side by side to the
//! end and then parsed into trees: the memory grows once, by a bounded amount
//! (docs/compare.md), and never with the number of comparisons.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use traffic_mirror_core::testing::{Envoy, FakeAnswer};
use traffic_mirror_emulator::Module;

const ROOT: u32 = 1;
const LIMIT: usize = 65_536;

/// JSON of exactly `LIMIT` bytes or just under, in each shape that costs the most.
fn worst_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let fill = |open: &str, item: &str, close: &str| {
        let mut body = open.to_string();
        while body.len() + item.len() + close.len() < LIMIT {
            if body.len() > open.len() {
                body.push(',');
            }
            body.push_str(item);
        }
        body.push_str(close);
        body.into_bytes()
    };
    let mut members = String::from("{");
    let mut i = 0usize;
    while members.len() < LIMIT - 16 {
        if i > 0 {
            members.push(',');
        }
        members.push_str(&format!("\"{i:x}\":0"));
        i += 1;
    }
    members.push('}');
    let depth = 120;
    let mut deep = "[".repeat(depth);
    while deep.len() + 2 + depth <= LIMIT {
        deep.push_str(if deep.len() == depth { "0" } else { ",0" });
    }
    deep.push_str(&"]".repeat(depth));
    vec![
        ("zeros", fill("[", "0", "]")),
        ("members", members.into_bytes()),
        ("escapes", fill("[", "\"\\u00e9\\n\"", "]")),
        ("deep", deep.into_bytes()),
        ("unordered", fill("{\"tags\":[", "[1]", "]}")),
    ]
}

/// `body` with its last `0` written `1` (or its last `1` written `2`): still JSON, and
/// different only at its end.
fn last_value_changed(body: &[u8]) -> Vec<u8> {
    let mut other = body.to_vec();
    let (at, by) = match body.iter().rposition(|&b| b == b'0') {
        Some(at) => (at, b'1'),
        None => (body.iter().rposition(|&b| b == b'1').unwrap(), b'2'),
    };
    other[at] = by;
    other
}

/// Compares `body` (the primary's) with `mirror`, `times` times; the module's memory
/// after.
fn compare_n(envoy: &mut Envoy<Module>, body: &[u8], mirror: &[u8], times: usize) -> usize {
    for i in 0..times {
        let user = format!("u{i}");
        let headers = [
            (":method", "GET"),
            (":path", "/api/items"),
            (":authority", "shop"),
            ("x-user-id", user.as_str()),
        ];
        let context = envoy.request(ROOT, &headers, &[], true);
        let token = envoy.host().sent.last().unwrap().token;
        envoy.respond(
            context,
            &[(":status", "200"), ("content-type", "application/json")],
            &[body],
            &[],
        );
        assert!(envoy.done(context));
        let answer = FakeAnswer::status(200)
            .header("content-type", "application/json")
            .body(mirror);
        envoy.answer(token, answer, mirror.len());
    }
    envoy.filter.memory_bytes()
}

#[test]
fn comparing_grows_the_module_once_by_a_bounded_amount() {
    let mut envoy = Envoy::new(Module::built());
    let configuration = r#"{"targets": [{"name": "t", "cluster": "mirror", "percent": 100,
        "sample_by": {"header": "x-user-id"}, "compare": {"unordered": ["/tags"]}}]}"#;
    assert!(envoy.configure(ROOT, configuration));
    // A small comparison first: what any traffic takes.
    let small = b"{\"a\": [1, 2, 3]}";
    let baseline = compare_n(&mut envoy, small, small, 20);
    let mut peak = baseline;
    let mut lines = Vec::new();
    for (shape, body) in worst_bodies() {
        assert!(body.len() <= LIMIT, "{shape}: {} bytes", body.len());
        let mirror = last_value_changed(&body);
        let once = compare_n(&mut envoy, &body, &mirror, 1);
        let many = compare_n(&mut envoy, &body, &mirror, 5);
        assert_eq!(many, once, "{shape}: 5 more comparisons grew the module");
        peak = peak.max(many);
        lines.push(format!("{shape}: {} KiB", (once - baseline) / 1024));
    }
    let host = envoy.host();
    assert_eq!(host.stat("traffic_mirror.t.compare.match"), 20);
    assert_eq!(
        host.stat("traffic_mirror.t.compare.body"),
        5 * 6,
        "every large comparison ran to the end and found the last value"
    );
    let growth = peak - baseline;
    println!(
        "module memory: {} KiB before, {} KiB at the peak, +{} KiB ({})",
        baseline / 1024,
        peak / 1024,
        growth / 1024,
        lines.join(", ")
    );
    // The bound docs/compare.md states for the defaults: 4 MiB.
    assert!(growth <= 4 << 20, "grew {growth} bytes");
}
