//! The proxy-wasm header map serialization, as the host hands a map out
//! (`proxy_get_header_map_pairs`) and takes one in (`proxy_http_call`):
//!
//! ```text
//! u32 count, then count x (u32 name length, u32 value length),
//! then each name and value, each followed by a NUL byte (all integers little-endian)
//! ```
//!
//! Working on this form keeps header values as raw bytes end to end (Envoy lets bytes
//! 0x80-0xFF through) and copies a request's headers without decoding each one.

use std::borrow::Cow;

/// A header as borrowed from a serialized map: name, value.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

/// Parses a serialized map into borrowed pairs; `None` if it is malformed.
pub fn parse(bytes: &[u8]) -> Option<Vec<Pair<'_>>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)?;
    let sizes_end = count.checked_mul(8)?.checked_add(4)?;
    if sizes_end > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = sizes_end;
    for i in 0..count {
        let name_len = read_u32(bytes, 4 + i * 8)?;
        let value_len = read_u32(bytes, 8 + i * 8)?;
        let name = bytes.get(at..at.checked_add(name_len)?)?;
        at = at.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(at..at.checked_add(value_len)?)?;
        at = at.checked_add(value_len)?.checked_add(1)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The value of the first header named `name` (the host's names are lower-case) in a
/// serialized map, found without allocating; `None` when absent or the map is malformed.
pub fn first<'a>(bytes: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    values(bytes, name).next()
}

/// The values of the headers named `name`, in order, found without allocating (none if
/// the map is malformed).
pub fn values<'a: 'n, 'n>(bytes: &'a [u8], name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + 'n {
    let count = read_u32(bytes, 0).unwrap_or(0);
    let mut at = count.saturating_mul(8).saturating_add(4);
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < count {
            let name_len = read_u32(bytes, 4 + i * 8)?;
            let value_len = read_u32(bytes, 8 + i * 8)?;
            i += 1;
            let this = bytes.get(at..at.checked_add(name_len)?)?;
            at = at.checked_add(name_len)?.checked_add(1)?;
            let value = bytes.get(at..at.checked_add(value_len)?)?;
            at = at.checked_add(value_len)?.checked_add(1)?;
            if this == name {
                return Some(value);
            }
        }
        None
    })
}

/// Every value of the headers named `name`, in order, joined by `,` (as HTTP reads a
/// header sent in several fields), borrowed when there is one; `None` when there is none.
pub fn joined<'a>(bytes: &'a [u8], name: &[u8]) -> Option<Cow<'a, [u8]>> {
    join(values(bytes, name))
}

/// Values joined by `,`, borrowed when there is one; `None` when there is none.
pub fn join<'a>(mut all: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut out = first.to_vec();
    for value in std::iter::once(second).chain(all) {
        out.push(b',');
        out.extend_from_slice(value);
    }
    Some(Cow::Owned(out))
}

/// The map with every header named `name` removed and, with a value, one added at its
/// end: what the host's replace (and remove) does to it. `None` if it is malformed.
pub fn with_header(bytes: &[u8], name: &[u8], value: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut pairs = parse(bytes)?;
    pairs.retain(|(this, _)| *this != name);
    if let Some(value) = value {
        pairs.push((name, value));
    }
    Some(serialize(&pairs))
}

/// A header value's part without the optional whitespace (spaces and tabs) around it.
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Serializes pairs into one buffer, allocated once.
pub fn serialize(pairs: &[Pair<'_>]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len_u32(name.len()));
        out.extend_from_slice(&len_u32(value.len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn len_u32(len: usize) -> [u8; 4] {
    // Header maps are far below 4 GiB; saturate rather than wrap if one ever is not.
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips_raw_bytes_in_order() {
        let pairs: Vec<Pair> = vec![
            (b":method", b"GET"),
            (b"x-bytes", b"caf\xe9\x00\xff"),
            (b"x-empty", b""),
            (b"x-dup", b"1"),
            (b"x-dup", b"2"),
        ];
        let bytes = serialize(&pairs);
        assert_eq!(parse(&bytes).unwrap(), pairs);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn layout_is_the_proxy_wasm_one() {
        let bytes = serialize(&[(b"ab", b"c")]);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, b'a', b'b', 0, b'c', 0]
        );
        assert_eq!(serialize(&[]), [0, 0, 0, 0]);
        assert_eq!(parse(&[]).unwrap(), vec![]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_finds_a_header_without_parsing_the_whole_map() {
        let map = serialize(&[
            (b":method", b"GET"),
            (b"x-dup", b"1"),
            (b"x-dup", b"2"),
            (b"empty", b""),
        ]);
        assert_eq!(first(&map, b":method"), Some(&b"GET"[..]));
        assert_eq!(first(&map, b"x-dup"), Some(&b"1"[..]));
        assert_eq!(first(&map, b"empty"), Some(&b""[..]));
        assert_eq!(first(&map, b"absent"), None);
        assert_eq!(first(&[], b":method"), None);
        assert_eq!(first(&map[..map.len() - 3], b"empty"), None, "truncated");
        assert_eq!(first(&[9, 0, 0, 0], b"x"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_header_in_several_fields_reads_as_one_and_is_replaced_as_one() {
        let map = serialize(&[
            (b"baggage", b"a=1"),
            (b":path", b"/"),
            (b"baggage", b"lane=x, b=2"),
        ]);
        assert_eq!(*joined(&map, b"baggage").unwrap(), *b"a=1,lane=x, b=2");
        assert_eq!(*joined(&map, b":path").unwrap(), *b"/");
        assert!(matches!(joined(&map, b":path"), Some(Cow::Borrowed(_))));
        assert_eq!(
            values(&map[..map.len() - 4], b"baggage").count(),
            1,
            "truncated"
        );
        assert_eq!(joined(&map, b"absent"), None);
        let replaced = with_header(&map, b"baggage", Some(b"lane=y")).unwrap();
        assert_eq!(
            parse(&replaced).unwrap(),
            vec![(&b":path"[..], &b"/"[..]), (b"baggage", b"lane=y")]
        );
        let removed = with_header(&map, b"baggage", None).unwrap();
        assert_eq!(parse(&removed).unwrap(), vec![(&b":path"[..], &b"/"[..])]);
        assert_eq!(with_header(&[9, 0, 0, 0], b"x", None), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_maps_are_refused_not_panicked_on() {
        let good = serialize(&[(b"ab", b"c")]);
        // Every cut short of the value itself is refused (a missing final NUL is not).
        for cut in 1..good.len() - 1 {
            assert_eq!(parse(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse(&[255, 255, 255, 255]), None);
        assert_eq!(parse(&[1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]), None);
    }
}
