//! W3C Baggage (<https://www.w3.org/TR/baggage/>), as far as lanes need it: the value of
//! one key read from a request's `baggage` fields, and the list rewritten with that key's
//! entry set or removed, every other byte as it was.
//!
//! ```text
//! baggage-string = list-member *( OWS "," OWS list-member )
//! list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
//! key            = token (RFC 7230)
//! value          = *baggage-octet, percent-encoded
//! baggage-octet  = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//! OWS            = *( SP / HTAB )
//! ```
//!
//! Every `baggage` field of a request is one part of one list (fields joined by `,`).
//! Properties are ignored; a malformed entry is skipped, never the whole list; the first
//! entry with a key wins; only the first [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes
//! are read (an entry that does not end within them is not read).

use crate::wire::trim_ows;

/// Most entries read.
pub const MAX_ENTRIES: usize = 64;
/// Most bytes of the list read (its fields joined by `,`).
pub const MAX_BYTES: usize = 8192;

/// The `baggage` fields of a request as one list: its bytes, fields joined by `,`.
pub fn join(fields: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            list.push(b',');
        }
        list.extend_from_slice(field);
    }
    list
}

/// An entry of the list as read: where its bytes are (between its commas, whitespace
/// included), its key and its raw (still percent-encoded) value.
struct Entry<'a> {
    start: usize,
    end: usize,
    key: &'a [u8],
    value: &'a [u8],
}

/// The entries that are read, in order: well-formed, within the limits.
fn entries(list: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    well_formed(list, true)
}

/// The well-formed entries, in order, within the limits or all of them.
fn well_formed(list: &[u8], within_limits: bool) -> impl Iterator<Item = Entry<'_>> {
    let mut start = 0;
    let mut read = 0;
    std::iter::from_fn(move || loop {
        if start > list.len() || (within_limits && read == MAX_ENTRIES) {
            return None;
        }
        let rest = list.get(start..)?;
        let end = start + rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        if within_limits && end > MAX_BYTES {
            return None;
        }
        let raw = list.get(start..end)?;
        let from = start;
        start = end + 1;
        if trim_ows(raw).is_empty() {
            continue;
        }
        read += 1;
        if let Some((key, value)) = member(raw) {
            return Some(Entry {
                start: from,
                end,
                key,
                value,
            });
        }
    })
}

/// An entry's key and raw value; `None` when it is malformed.
fn member(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let member = raw.split(|&b| b == b';').next()?;
    let equals = member.iter().position(|&b| b == b'=')?;
    let key = trim_ows(member.get(..equals)?);
    let value = trim_ows(member.get(equals + 1..)?);
    let valid = !key.is_empty()
        && key.iter().all(|&b| is_token(b))
        && value.iter().all(|&b| is_baggage_octet(b))
        && percent_encoded(value);
    valid.then_some((key, value))
}

/// RFC 7230 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Whether every `%` of a value is followed by two hex digits (checked without decoding).
fn percent_encoded(value: &[u8]) -> bool {
    value
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'%')
        .all(|(at, _)| {
            value
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        })
}

/// A value percent-decoded; `None` for a `%` not followed by two hex digits.
fn decode(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut at = 0;
    while let Some(&b) = value.get(at) {
        if b == b'%' {
            let hex = value.get(at + 1..at + 3)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            at += 3;
        } else {
            out.push(b);
            at += 1;
        }
    }
    Some(out)
}

/// A value percent-encoded: every byte that is not a baggage octet, and `%`.
fn encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if is_baggage_octet(b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The decoded value of the first entry with `key` in the list.
pub fn find(list: &[u8], key: &str) -> Option<Vec<u8>> {
    entries(list)
        .find(|entry| entry.key == key.as_bytes())
        .and_then(|entry| decode(entry.value))
}

/// What becomes of a request's `baggage` when one key's entry is set or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// It already says so: leave it as it arrived.
    Unchanged,
    /// Replace every `baggage` field with this one value.
    Set(Vec<u8>),
    /// Remove the header: nothing is left of it.
    Remove,
}

/// `list` with `key`'s entry set to `value` (`None`: removed). The new entry comes first,
/// every entry with that key is taken out (past the limits too: a reader that keeps the
/// last entry of a key, as OpenTelemetry's does, must not find another), and every other
/// byte stays as it was (other entries, their properties and whitespace). Unchanged when
/// the list already has that one entry with the key and no other (or, to remove, none).
pub fn with_entry(list: &[u8], key: &str, value: Option<&[u8]>) -> Rewrite {
    let mut with_key = well_formed(list, false).filter(|entry| entry.key == key.as_bytes());
    let first = with_key.next();
    let only = with_key.next().is_none();
    let current = first.as_ref().and_then(|entry| decode(entry.value));
    if only && current.as_deref() == value && find(list, key).as_deref() == value {
        return Rewrite::Unchanged;
    }
    let mut rest = Vec::with_capacity(list.len());
    let mut kept_from = 0;
    for entry in well_formed(list, false).filter(|entry| entry.key == key.as_bytes()) {
        rest.extend_from_slice(list.get(kept_from..entry.start).unwrap_or_default());
        // The entry and one of the commas around it.
        kept_from = entry.end + 1;
        if entry.end >= list.len() && rest.last() == Some(&b',') {
            rest.pop();
        }
    }
    rest.extend_from_slice(list.get(kept_from..).unwrap_or_default());
    let rest_is_empty = trim_ows(&rest)
        .iter()
        .all(|&b| b == b',' || b == b' ' || b == b'\t');
    match value {
        None if rest_is_empty => Rewrite::Remove,
        None => Rewrite::Set(rest),
        Some(value) => {
            let mut out = Vec::with_capacity(key.len() + 1 + value.len() + 1 + rest.len());
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(&encode(value));
            if !rest_is_empty {
                out.push(b',');
                out.extend_from_slice(&rest);
            }
            Rewrite::Set(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn lane(list: &str) -> Option<String> {
        find(list.as_bytes(), "lane").map(|v| String::from_utf8(v).unwrap())
    }

    fn set(list: &str, value: Option<&str>) -> Rewrite {
        with_entry(list.as_bytes(), "lane", value.map(str::as_bytes))
    }

    fn written(list: &str, value: Option<&str>) -> String {
        match set(list, value) {
            Rewrite::Set(out) => String::from_utf8(out).unwrap(),
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_well_formed_entry_with_the_key_is_read() {
        assert_eq!(lane("lane=canary"), Some("canary".into()));
        assert_eq!(
            lane(" userId=1 ,  lane = canary ;p=1;flag , x=2"),
            Some("canary".into())
        );
        assert_eq!(lane("lane=a,lane=b"), Some("a".into()));
        assert_eq!(lane("lane=f%C3%A9e%2C"), Some("fée,".into()));
        assert_eq!(lane("lane="), Some(String::new()));
        assert_eq!(lane("lanes=a,xlane=b,Lane=c"), None, "keys are exact");
        assert_eq!(lane(""), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_malformed_entry_is_skipped_not_the_list() {
        for bad in [
            "lane=%zz",
            "lane=%4",
            "lane=%+4",
            "lane=a b",
            "lane=\"a\"",
            "lane=a\\b",
            "la ne=a",
            "=a",
            "lane",
            "lane:a",
            "lané=a",
        ] {
            assert_eq!(lane(&format!("{bad},lane=b")), Some("b".into()), "{bad}");
            assert_eq!(lane(bad), None, "{bad}");
        }
        assert_eq!(lane(",, ,lane=b,"), Some("b".into()), "empty entries");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_field_is_read_as_one_list() {
        let fields: [&[u8]; 3] = [b"a=1", b"b=2, lane=beta", b"lane=gamma"];
        let list = join(&fields);
        assert_eq!(list, b"a=1,b=2, lane=beta,lane=gamma");
        assert_eq!(find(&list, "lane"), Some(b"beta".to_vec()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn only_the_first_64_entries_and_8192_bytes_are_read() {
        let mut many: Vec<String> = (0..63).map(|i| format!("k{i}=v")).collect();
        many.push("lane=last".into());
        assert_eq!(lane(&many.join(",")), Some("last".into()));
        many.insert(0, "k=v".into());
        assert_eq!(lane(&many.join(",")), None, "the 65th entry");
        // "lane=canary" ends at byte 8192 exactly, then at 8193.
        let long = format!("k={}", "v".repeat(MAX_BYTES - 14));
        assert_eq!(lane(&format!("{long},lane=canary")), Some("canary".into()));
        assert_eq!(
            lane(&format!("{long}v,lane=canary")),
            None,
            "an entry that does not end within 8192 bytes"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn setting_puts_the_entry_first_and_keeps_every_other_byte() {
        assert_eq!(written("", Some("canary")), "lane=canary");
        assert_eq!(
            written("userId=alice, sessionId=1;p=q", Some("canary")),
            "lane=canary,userId=alice, sessionId=1;p=q"
        );
        assert_eq!(
            written("a=1, lane=forged;p ,b=2", Some("canary")),
            "lane=canary,a=1,b=2"
        );
        assert_eq!(written("a=1,lane=x", Some("canary")), "lane=canary,a=1");
        assert_eq!(written("lane=x,a=1 ", Some("main")), "lane=main,a=1 ");
        assert_eq!(
            written("lane=x,bad entry,lane=y", Some("main")),
            "lane=main,bad entry"
        );
        assert_eq!(written("a=1", Some("f é")), "lane=f%20%C3%A9,a=1");
        assert_eq!(
            set("lane=canary;p, a=1", Some("canary")),
            Rewrite::Unchanged
        );
        assert_eq!(set("a=1,lane=canary", Some("canary")), Rewrite::Unchanged);
        // No second entry is left for a reader that keeps the last (as OpenTelemetry's
        // does), past the limits neither.
        assert_eq!(
            written("a=1, lane=canary,lane=x", Some("canary")),
            "lane=canary,a=1"
        );
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            written(
                &format!("lane=canary,{},lane=x", many.join(",")),
                Some("canary")
            ),
            format!("lane=canary,{}", many.join(","))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn removing_takes_out_every_entry_with_the_key() {
        assert_eq!(written("a=1, lane=x ,b=2,lane=y", None), "a=1,b=2");
        assert_eq!(written("lane=x, a=1", None), " a=1");
        assert_eq!(set("lane=x", None), Rewrite::Remove);
        assert_eq!(set(" lane=x , lane=y", None), Rewrite::Remove);
        assert_eq!(set("a=1", None), Rewrite::Unchanged);
        assert_eq!(set("", None), Rewrite::Unchanged);
    }

    /// The list without its `lane` entries, as the parser sees it.
    fn others(list: &[u8]) -> Vec<Vec<u8>> {
        list.split(|&b| b == b',')
            .filter(|raw| member(raw).is_none_or(|(key, _)| key != b"lane"))
            .filter(|raw| !trim_ows(raw).is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parse_then_write_changes_nothing_but_the_lane_entry() {
        let lists = [
            "a=1,b=2",
            " a = 1 ;p; q=r , lane=x,  b=%20 ",
            "lane=x",
            "bad entry,lane=y,c",
            "x=1,,lane=a,;",
        ];
        for list in lists {
            for value in [None, Some("canary")] {
                let out = match set(list, value) {
                    Rewrite::Set(out) => out,
                    Rewrite::Remove => Vec::new(),
                    Rewrite::Unchanged => list.as_bytes().to_vec(),
                };
                assert_eq!(others(&out), others(list.as_bytes()), "{list:?} {value:?}");
                assert_eq!(
                    find(&out, "lane").as_deref(),
                    value.map(str::as_bytes),
                    "{list:?} {value:?}"
                );
            }
        }
    }
}
