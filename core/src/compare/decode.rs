//! A body's `content-encoding` undone before it is compared: `gzip` (RFC 1952) and
//! `deflate` (the zlib format of RFC 1950, or raw RFC 1951 data, which some servers send
//! under that name), with `miniz_oxide`, a pure-Rust inflater. Never more than a limit of
//! decoded bytes is made.

use miniz_oxide::inflate::{
    decompress_to_vec_with_limit, decompress_to_vec_zlib_with_limit, TINFLStatus,
};
use std::borrow::Cow;

/// Why a body could not be had as its plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecodable {
    /// Decoded, it is longer than the limit.
    TooLarge,
    /// An encoding this filter does not decode, or data that is not what its encoding
    /// says.
    Encoding,
}

/// How a body is encoded, by its `content-encoding` (absent: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    /// Any other (`br`, `zstd`, several encodings, ...).
    Other,
}

impl Encoding {
    pub fn of(content_encoding: Option<&[u8]>) -> Encoding {
        let Some(value) = content_encoding else {
            return Encoding::Identity;
        };
        let value = value.trim_ascii();
        if value.is_empty() || value.eq_ignore_ascii_case(b"identity") {
            Encoding::Identity
        } else if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
            Encoding::Gzip
        } else if value.eq_ignore_ascii_case(b"deflate") {
            Encoding::Deflate
        } else {
            Encoding::Other
        }
    }
}

/// The body decoded, at most `limit` bytes of it (a body without encoding as it is, not
/// copied).
pub fn decode(encoding: Encoding, body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, Undecodable> {
    let decoded = match encoding {
        Encoding::Identity => {
            return if body.len() > limit {
                Err(Undecodable::TooLarge)
            } else {
                Ok(Cow::Borrowed(body))
            }
        }
        Encoding::Other => return Err(Undecodable::Encoding),
        Encoding::Gzip => gunzip(body, limit)?,
        Encoding::Deflate => match decompress_to_vec_zlib_with_limit(body, limit) {
            Ok(decoded) => decoded,
            Err(e) if e.status == TINFLStatus::HasMoreOutput => return Err(Undecodable::TooLarge),
            Err(_) => inflate(body, limit)?,
        },
    };
    Ok(Cow::Owned(decoded))
}

/// Raw deflate data.
fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, Undecodable> {
    decompress_to_vec_with_limit(data, limit).map_err(|e| match e.status {
        TINFLStatus::HasMoreOutput => Undecodable::TooLarge,
        _ => Undecodable::Encoding,
    })
}

/// A gzip member: its header skipped, its data inflated, its length checked against the
/// trailer's (the CRC is not checked: inflating already refuses most damaged data).
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, Undecodable> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    const FHCRC: u8 = 2;
    let bad = Undecodable::Encoding;
    let header = body.get(..10).ok_or(bad)?;
    if header.get(..3) != Some(&[0x1f, 0x8b, 8][..]) {
        return Err(bad);
    }
    let flags = header.get(3).copied().ok_or(bad)?;
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let len = body.get(at..at + 2).ok_or(bad)?;
        at += 2 + usize::from(u16::from_le_bytes([
            len.first().copied().ok_or(bad)?,
            len.get(1).copied().ok_or(bad)?,
        ]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = body
                .get(at..)
                .ok_or(bad)?
                .iter()
                .position(|&b| b == 0)
                .ok_or(bad)?;
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let data = body.get(at..).ok_or(bad)?;
    let decoded = inflate(data, limit)?;
    let trailer = body
        .get(body.len().checked_sub(4).ok_or(bad)?..)
        .ok_or(bad)?;
    let size = u32::from_le_bytes(trailer.try_into().map_err(|_| bad)?);
    if size != (decoded.len() as u32) {
        return Err(bad);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};
    use wasm_bindgen_test::wasm_bindgen_test;

    /// A gzip member around raw deflate data, with a file name in its header.
    fn gzip(plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 255];
        out.extend_from_slice(b"body.json\0");
        out.extend_from_slice(&compress_to_vec(plain, 6));
        out.extend_from_slice(&[0; 4]); // CRC, not checked
        out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        out
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn encodings_are_known_by_name() {
        assert_eq!(Encoding::of(None), Encoding::Identity);
        assert_eq!(Encoding::of(Some(b" GZIP ")), Encoding::Gzip);
        assert_eq!(Encoding::of(Some(b"x-gzip")), Encoding::Gzip);
        assert_eq!(Encoding::of(Some(b"deflate")), Encoding::Deflate);
        assert_eq!(Encoding::of(Some(b"identity")), Encoding::Identity);
        assert_eq!(Encoding::of(Some(b"br")), Encoding::Other);
        assert_eq!(Encoding::of(Some(b"gzip, br")), Encoding::Other);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn gzip_and_both_deflates_decode_within_the_limit() {
        let plain = br#"{"items":[1,2,3],"name":"a name repeated a name repeated"}"#.repeat(20);
        assert_eq!(
            *decode(Encoding::Gzip, &gzip(&plain), 1 << 20).unwrap(),
            plain
        );
        let zlib = compress_to_vec_zlib(&plain, 6);
        assert_eq!(*decode(Encoding::Deflate, &zlib, 1 << 20).unwrap(), plain);
        let raw = compress_to_vec(&plain, 6);
        assert_eq!(*decode(Encoding::Deflate, &raw, 1 << 20).unwrap(), plain);
        let limit = plain.len() - 1;
        assert_eq!(
            decode(Encoding::Gzip, &gzip(&plain), limit),
            Err(Undecodable::TooLarge)
        );
        assert_eq!(
            decode(Encoding::Deflate, &zlib, limit),
            Err(Undecodable::TooLarge)
        );
        assert_eq!(
            decode(Encoding::Identity, &plain, limit),
            Err(Undecodable::TooLarge)
        );
        assert_eq!(
            decode(Encoding::Identity, &plain, plain.len()).unwrap(),
            &plain[..]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn damaged_or_unknown_encodings_are_refused() {
        let plain = b"hello hello hello".to_vec();
        let mut wrong_size = gzip(&plain);
        let len = wrong_size.len();
        wrong_size[len - 4] ^= 1;
        assert_eq!(
            decode(Encoding::Gzip, &wrong_size, 100),
            Err(Undecodable::Encoding)
        );
        assert_eq!(
            decode(Encoding::Gzip, &plain, 100),
            Err(Undecodable::Encoding)
        );
        assert_eq!(
            decode(Encoding::Gzip, &[0x1f, 0x8b], 100),
            Err(Undecodable::Encoding)
        );
        assert_eq!(
            decode(Encoding::Deflate, b"\xff\xff\xff", 100),
            Err(Undecodable::Encoding)
        );
        assert_eq!(
            decode(Encoding::Other, &plain, 100),
            Err(Undecodable::Encoding)
        );
    }
}
