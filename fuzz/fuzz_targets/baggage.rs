//! W3C Baggage over arbitrary bytes: `baggage` fields (split at 0xFF), read and
//! rewritten with the lane set and removed. Never panics; what is written reads back;
//! writing the lane changes nothing but the lane entry (removing it from what was written
//! gives what removing it from the original gives).
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_mirror_core::baggage::{find, join, with_entry, Rewrite};

/// What a request's baggage is after a rewrite, with "nothing" as empty.
fn after(list: &[u8], rewrite: Rewrite) -> Vec<u8> {
    let bytes = match rewrite {
        Rewrite::Unchanged => list.to_vec(),
        Rewrite::Set(out) => out,
        Rewrite::Remove => Vec::new(),
    };
    if bytes.iter().all(|&b| matches!(b, b',' | b' ' | b'\t')) {
        Vec::new()
    } else {
        bytes
    }
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.split(|&b| b == 0xFF).collect();
    let list = join(&fields);
    let _ = find(&list, "lane");
    // Small lists only for the round trips: past the limits (64 entries, 8192 bytes) a
    // prepended entry moves others out of what is read.
    let small = list.len() < 4096 && list.iter().filter(|&&b| b == b',').count() < 60;
    for value in [&b"canary"[..], b"f e%", b""] {
        let written = after(&list, with_entry(&list, "lane", Some(value)));
        if small {
            assert_eq!(find(&written, "lane").as_deref(), Some(value), "reads back");
            assert_eq!(
                after(&written, with_entry(&written, "lane", None)),
                after(&list, with_entry(&list, "lane", None)),
                "nothing but the lane entry changes"
            );
        }
    }
    let removed = after(&list, with_entry(&list, "lane", None));
    if small {
        assert_eq!(find(&removed, "lane"), None, "removed");
    }
});
