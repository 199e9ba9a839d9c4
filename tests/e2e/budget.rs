//! `max_buffered_bytes` and requests that never complete: hundreds of uploads held open
//! one byte short cost Envoy no more memory than the budget (plus slack) over the same
//! load unsampled; past the budget a request is skipped whole, never truncated; the bytes
//! come back when the uploads end, so later requests are mirrored again; and a request
//! that ends before it is complete sends nothing and counts in `skipped_incomplete`.

use serde_json::json;

use crate::support::upstream::Options;
use crate::support::{wait_until, Envoy, EnvoyConfig, HeldUpload, Request, Upstream};
use crate::{assert_accounted, assert_counters, pattern, send_all, wait_settled, SETTLE};

const MIB: usize = 1024 * 1024;
const UPLOADS: usize = 300;
const UPLOAD_BYTES: usize = MIB;
const BUDGET: usize = 16 * MIB;
/// What Envoy's own memory may vary by between two runs of the same load (its buffers,
/// connections, allocator). With Envoy's buffers per connection at 32 KiB (its default
/// of 1 MiB makes its own growth vary by a hundred MiB from run to run) it varied by a
/// few MiB here.
const SLACK: usize = 16 * MIB;
const ENVOY_BUFFER_LIMIT: u32 = 32 * 1024;

/// An upstream that keeps no record of what it receives (the bodies are large), only
/// counts.
fn counting_upstream(name: &str) -> Upstream {
    let mut options = Options::new(name);
    options.record = false;
    Upstream::start_with(options).unwrap()
}

fn plugin(percent: f64) -> String {
    json!({
        "max_buffered_bytes": BUDGET,
        "targets": [{"name": "uploads", "cluster": "mirror", "percent": percent,
                     "sample_by": {"header": "x-user-id"}, "max_body_bytes": UPLOAD_BYTES}]
    })
    .to_string()
}

/// Holds `UPLOADS` uploads open one byte short (two in three declaring their length, the
/// rest chunked), waits until Envoy has passed every byte sent on to the primary, and
/// returns them with Envoy's RSS before and while they are held.
fn hold_uploads(envoy: &Envoy, user: &str) -> (Vec<HeldUpload>, u64, u64) {
    let before = envoy.rss_bytes();
    let sent_before = envoy.stat("cluster.primary.upstream_cx_tx_bytes_total");
    let body = pattern(UPLOAD_BYTES - 1, 7);
    let uploads: Vec<HeldUpload> = (0..UPLOADS)
        .map(|i| {
            let request = Request::new("POST", &format!("/upload/{i}"))
                .header("x-user-id", format!("{user}-{i}"));
            let declared = (i % 3 != 2).then_some(UPLOAD_BYTES);
            HeldUpload::start(envoy.listener(), &request, declared, &body)
        })
        .collect();
    let expected = (UPLOADS * (UPLOAD_BYTES - 1)) as u64;
    wait_until(
        SETTLE * 3,
        "Envoy to pass every held upload's bytes on",
        || envoy.stat("cluster.primary.upstream_cx_tx_bytes_total") - sent_before >= expected,
    );
    (uploads, before, envoy.rss_bytes())
}

#[test]
fn held_uploads_stay_within_the_budget_and_mirroring_resumes_once_they_end() {
    let mib = |bytes: i64| bytes as f64 / MIB as f64;

    // The same load on an Envoy that samples nothing: Envoy's own cost.
    let baseline_growth = {
        let primary = counting_upstream("primary");
        let mirror = counting_upstream("mirror");
        let envoy = Envoy::start(
            EnvoyConfig::new(&plugin(0.0), primary.addr(), mirror.addr())
                .buffer_limit(ENVOY_BUFFER_LIMIT),
        );
        let (uploads, before, held) = hold_uploads(&envoy, "baseline");
        uploads.into_iter().for_each(HeldUpload::hang_up);
        held as i64 - before as i64
    };

    let primary = counting_upstream("primary");
    let mirror = Upstream::start("mirror");
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin(100.0), primary.addr(), mirror.addr())
            .buffer_limit(ENVOY_BUFFER_LIMIT),
    );
    let (uploads, before, held) = hold_uploads(&envoy, "sampled");
    let growth = held as i64 - before as i64;
    let stats = envoy.mirror_stats("uploads");
    let refused = stats["skipped_buffer_full"];
    let admitted = UPLOADS as u64 - refused;
    eprintln!(
        "RSS growth with {UPLOADS} uploads of 1 MiB held: sampled {:.1} MiB, unsampled {:.1} MiB; \
         {admitted} captured, {refused} skipped_buffer_full",
        mib(growth),
        mib(baseline_growth)
    );
    assert_eq!(stats["sampled"], UPLOADS as u64);
    // Each capture holds a body of 1 MiB and its copy's headers: 15 fit in 16 MiB.
    assert_eq!(
        admitted,
        (BUDGET / (UPLOAD_BYTES + 1024)) as u64,
        "{stats:?}"
    );
    assert!(
        growth - baseline_growth <= (BUDGET + SLACK) as i64,
        "Envoy grew by {:.1} MiB with the uploads sampled, {:.1} MiB unsampled: more than \
         the budget ({} MiB) plus {} MiB",
        mib(growth),
        mib(baseline_growth),
        BUDGET / MIB,
        SLACK / MIB
    );

    // The uploads end: every other one completes, the rest hang up.
    let mut completed = 0;
    for (i, upload) in uploads.into_iter().enumerate() {
        if i % 2 == 0 {
            let response = upload.finish(b"!").unwrap();
            assert_eq!(response.status, 200, "upload {i}");
            completed += 1;
        } else {
            upload.hang_up();
        }
    }
    wait_until(SETTLE, "every upload to end in Envoy", || {
        envoy.stat("http.ingress.downstream_rq_active") == 0
    });
    let stats = assert_accounted(&envoy, "uploads");
    assert_eq!(stats["skipped_buffer_full"], refused);
    assert_eq!(
        stats["dispatched"] + stats["skipped_incomplete"],
        admitted,
        "{stats:?}"
    );
    assert!(
        stats["dispatched"] > 0 && stats["skipped_incomplete"] > 0,
        "{stats:?}"
    );
    // Every copy whole: never a truncated one.
    let copies = mirror.received();
    assert_eq!(copies.len() as u64, stats["dispatched"]);
    let mut body = pattern(UPLOAD_BYTES - 1, 7);
    body.push(b'!');
    for copy in &copies {
        assert!(
            copy.body == body,
            "copy {} has {} bytes",
            copy.target,
            copy.body.len()
        );
    }
    assert_eq!(primary.count(), completed);

    // The budget is free again: a later upload is mirrored.
    let later =
        Request::post("/upload/later", pattern(UPLOAD_BYTES, 9)).header("x-user-id", "later");
    send_all(envoy.listener(), &[later], 1, 1);
    let stats = assert_accounted(&envoy, "uploads");
    assert_eq!(stats["dispatched"], copies.len() as u64 + 1);
    assert_eq!(mirror.count(), copies.len() + 1);
    eprintln!(
        "Envoy RSS: {:.1} MiB before the uploads, {:.1} MiB while held, {:.1} MiB after they ended",
        mib(before as i64),
        mib(held as i64),
        mib(envoy.rss_bytes() as i64),
    );
}

#[test]
fn requests_that_end_before_they_are_complete_send_nothing() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [{"name": "partial", "cluster": "mirror", "percent": 100}]});
    let envoy = Envoy::start(EnvoyConfig::new(
        &plugin.to_string(),
        primary.addr(),
        mirror.addr(),
    ));
    // Declared and chunked uploads, each hung up part-way through its body.
    for i in 0..8usize {
        let request = Request::new("PUT", &format!("/partial/{i}"));
        let declared = (i % 2 == 0).then_some(10_000);
        let mut upload = HeldUpload::start(
            envoy.listener(),
            &request,
            declared,
            &pattern(3000, i as u64),
        );
        upload.send(&pattern(1000, 99));
        // Envoy has passed the head on before the client hangs up.
        wait_until(SETTLE, "the partial upload to reach the primary", || {
            envoy.stat("cluster.primary.upstream_rq_total") > i as u64
        });
        upload.hang_up();
    }
    wait_until(SETTLE, "every partial upload to end in Envoy", || {
        envoy.stat("http.ingress.downstream_rq_active") == 0
    });
    wait_settled(&envoy, "partial");
    assert_counters(
        &envoy,
        "partial",
        &[("requests", 8), ("sampled", 8), ("skipped_incomplete", 8)],
    );
    // A complete request after them is mirrored; nothing of the partial ones arrived.
    send_all(
        envoy.listener(),
        &[Request::post("/partial/whole", pattern(5000, 5))],
        1,
        1,
    );
    wait_settled(&envoy, "partial");
    assert_counters(
        &envoy,
        "partial",
        &[
            ("requests", 9),
            ("sampled", 9),
            ("skipped_incomplete", 8),
            ("dispatched", 1),
            ("responses_2xx", 1),
        ],
    );
    let copies = mirror.received();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].target, "/partial/whole");
}
