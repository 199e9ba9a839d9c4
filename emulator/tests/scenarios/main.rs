//! A worker's VM driven as Envoy drives it (contexts created and configured, request
//! headers, body chunks, trailers, answers, done), without Envoy. Every scenario runs
//! twice, as coraza-proxy-wasm runs its own: natively, on the core (`native::`), and on
//! the built module `target/wasm32-wasip1/release/traffic_mirror.wasm` in the emulated
//! host of this crate (`module::`), both against the same fake host. Each checks what was sent, the stats by their Envoy names, and, where they are the
//! cost of a request, the exact host calls made (the same list on both: the module's
//! shell adds none). After each, every identity holds: `sampled` is the sum of its
//! outcomes, `dispatched` the sum of the `responses_*` and of the latencies recorded,
//! `in_flight` back to 0, and (natively, where they can be seen) both budgets empty.
//!
//! The real Envoy suite (tests/e2e) keeps what only Envoy can show: real sockets,
//! protocols, routing, Envoy's own answers and memory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod agreement;
mod calls;
mod compare;
mod lifecycle;

use serde_json::{json, Value};

use traffic_mirror_core::lifecycle::Vm;
use traffic_mirror_core::stats::Counter;
use traffic_mirror_core::testing::{Envoy, Exports, FakeHost};
use traffic_mirror_emulator::Module;

/// The root context most scenarios configure.
pub const ROOT: u32 = 1;

/// Runs each scenario (a function generic over the filter) natively and on the module.
macro_rules! scenarios {
    ($($path:ident :: $name:ident),* $(,)?) => {
        mod native {
            $(#[test]
            fn $name() {
                crate::$path::$name(crate::Envoy::new(crate::native()));
            })*
        }
        mod module {
            $(#[test]
            fn $name() {
                crate::$path::$name(crate::Envoy::new(crate::module()));
            })*
        }
    };
}

scenarios! {
    calls::an_unsampled_request_reads_the_header_map_once_and_counts_once,
    calls::a_lanes_only_request_reads_the_map_writes_the_lane_and_counts_it,
    calls::an_edge_writes_the_lane_and_its_baggage_and_copies_them_without_reading_again,
    calls::a_hop_reads_the_map_writes_the_followed_lane_and_counts_it,
    calls::a_copy_is_dispatched_with_one_clock_read,
    calls::an_answer_is_counted_by_its_status_latency_and_gauge,
    calls::a_request_reset_mid_body_reads_each_chunk_and_counts_incomplete,
    calls::a_configuration_update_drains_and_then_says_done,
    calls::the_stats_of_a_configuration_are_defined_by_their_envoy_names,
    lifecycle::a_bodiless_request_is_copied_at_its_headers_and_its_answer_counted,
    lifecycle::a_body_in_chunks_is_copied_whole_once_the_request_is_complete,
    lifecycle::a_request_with_trailers_is_complete_at_its_trailers,
    lifecycle::a_body_the_host_cannot_read_is_never_sent_in_part,
    lifecycle::a_refused_call_counts_and_is_logged_once_a_minute,
    lifecycle::copies_past_max_in_flight_bytes_wait_for_none,
    lifecycle::a_replaced_configuration_shares_the_budgets_while_it_drains,
    lifecycle::contexts_are_forgotten_when_the_host_is_done_with_them,
    lifecycle::an_answer_for_a_token_the_root_does_not_hold_is_ignored,
    lifecycle::a_grpc_answer_is_counted_by_its_status_from_trailers_or_headers,
    lifecycle::an_answer_longer_than_max_answer_bytes_is_logged_once,
    lifecycle::lanes_are_written_before_the_targets_decide_and_counted,
    lifecycle::a_looping_request_is_counted_by_every_target_and_never_copied,
    lifecycle::a_declared_length_over_the_cap_is_skipped_at_the_headers,
    lifecycle::failed_host_calls_are_logged_once_a_minute_and_never_stop_a_request,
    lifecycle::a_bad_configuration_is_refused_with_one_line,
    agreement::explain_and_the_filter_agree_on_generated_requests,
    compare::equal_answers_match_in_either_order,
    compare::a_body_difference_is_counted_by_its_path_and_logged_without_values,
    compare::status_grpc_status_and_headers_are_compared_first,
    compare::the_mirror_failing_is_told_from_its_own_errors,
    compare::a_primary_that_does_not_complete_is_primary_incomplete,
    compare::a_body_ended_by_an_empty_chunk_is_kept_whole,
    compare::the_comparison_outlives_the_clients_stream,
    compare::a_response_before_the_request_is_complete_is_compared_too,
    compare::bodies_past_the_cap_undecodable_or_not_json_are_told_apart,
    compare::gzip_on_one_side_only_is_compared_decoded,
    compare::a_head_request_and_bodiless_statuses_compare_no_body,
    compare::ignore_and_unordered_quiet_volatile_fields,
    compare::paths_past_max_paths_count_as_other,
    compare::a_primary_body_that_does_not_fit_skips_the_comparison,
    compare::a_replaced_configuration_drains_its_comparisons,
    compare::an_unsampled_request_with_compare_reads_no_response,
}

/// The core, natively.
pub fn native() -> Vm<FakeHost> {
    Vm::new(FakeHost::new())
}

/// The built module, in the emulator.
pub fn module() -> Module {
    Module::built()
}

/// A plugin configuration.
pub fn config(value: Value) -> String {
    value.to_string()
}

/// The target most scenarios use, with `extra` fields.
pub fn target(extra: Value) -> Value {
    let mut t = json!({"name": "staging", "cluster": "mirror", "percent": 100,
                       "sample_by": {"header": "x-user-id"}});
    t.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    t
}

/// A GET from `user`.
pub fn get(user: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", "/api/items?x=1".into()),
        (":authority", "shop:8080".into()),
        ("x-user-id", user.into()),
    ]
}

/// As the driver takes them.
pub fn refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// A configured filter: `configuration` on [`ROOT`].
pub fn configured<E: Exports>(mut envoy: Envoy<E>, configuration: Value) -> Envoy<E> {
    assert!(
        envoy.configure(ROOT, &config(configuration)),
        "a valid configuration: {:?}",
        envoy.host().log_lines().collect::<Vec<_>>()
    );
    envoy
}

/// A target's counter or gauge.
pub fn stat<E: Exports>(envoy: &mut Envoy<E>, target: &str, name: &str) -> i64 {
    envoy.host().target_stat(target, name)
}

/// Every identity of the specification, for each of `targets`: `sampled` is the sum of
/// where sampled requests end, `dispatched` the sum of the `responses_*` and of the
/// latencies recorded, `in_flight` 0; and, where they can be seen, both budgets empty.
pub fn assert_accounted<E: Exports>(envoy: &mut Envoy<E>, targets: &[&str]) {
    let host = envoy.host();
    for target in targets {
        let get = |c: &Counter| host.target_stat(target, c.name());
        let outcomes: i64 = Counter::SAMPLED_OUTCOMES.iter().map(get).sum();
        let ended: i64 = Counter::RESPONSES.iter().map(get).sum();
        assert_eq!(get(&Counter::Sampled), outcomes, "{target}: sampled");
        assert_eq!(get(&Counter::Dispatched), ended, "{target}: dispatched");
        assert_eq!(
            host.target_stat(target, "in_flight"),
            0,
            "{target}: in_flight"
        );
        let latencies = host.histogram(&format!("traffic_mirror.{target}.latency_ms"));
        assert_eq!(
            latencies.len() as i64,
            ended,
            "{target}: one latency an end"
        );
    }
    if let Some((buffered, in_flight)) = envoy.filter.held_bytes() {
        assert_eq!(buffered, 0, "max_buffered_bytes");
        assert_eq!(in_flight, 0, "max_in_flight_bytes");
    }
}
