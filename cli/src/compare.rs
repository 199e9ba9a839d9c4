//! `traffic-mirror compare FILE [--target NAME] PRIMARY MIRROR [--json]`: two saved
//! answers (as `curl -si` writes them: status line, headers, a blank line, the body)
//! compared as the target's `compare` compares a copy's answer with the primary's, with
//! the module's own code, so `ignore` and `unordered` can be tuned offline. Unlike the
//! filter, which never logs a value, it shows both values where they differ: they are the
//! user's own files.

use serde_json::json;
use traffic_mirror_core::compare::decode::{decode, Encoding};
use traffic_mirror_core::compare::{compare, CompareResult, Found, Response};
use traffic_mirror_core::config::Target;

use crate::explain::one_plan;

pub fn run(file: &str, target: Option<&str>, primary: &str, mirror: &str, json: bool) -> u8 {
    let plan = match one_plan(file) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let chosen = match target {
        Some(name) => plan.targets.iter().find(|t| t.name == name),
        None => plan.targets.iter().find(|t| t.compare.is_some()),
    };
    let Some((target, config)) = chosen.and_then(|t| Some((t, t.compare.as_ref()?))) else {
        let comparing: Vec<&str> = plan
            .targets
            .iter()
            .filter(|t| t.compare.is_some())
            .map(|t| t.name.as_str())
            .collect();
        eprintln!(
            "traffic-mirror compare: {} (targets with compare: {})",
            match target {
                Some(name) => format!("target {name} does not compare, or is not there"),
                None => format!("{file} has no target with compare"),
            },
            if comparing.is_empty() {
                "none".to_string()
            } else {
                comparing.join(", ")
            }
        );
        return 2;
    };
    let names = &config.headers;
    let (primary_answer, mirror_answer) = match (read(primary, names), read(mirror, names)) {
        (Ok(p), Ok(m)) => (p, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("traffic-mirror compare: {e}");
            return 2;
        }
    };
    let found = compare(config, false, &primary_answer, &mirror_answer);
    if json {
        println!(
            "{}",
            json!({"result": found.result.name(), "path": found.path, "header": found.header})
        );
    } else {
        println!(
            "{}",
            describe(target, &found, &primary_answer, &mirror_answer)
        );
    }
    u8::from(found.result != CompareResult::Match)
}

/// An answer saved by `curl -si`: the last status block (after any `100 Continue`), its
/// headers and the body as it is in the file.
fn read(path: &str, names: &[String]) -> Result<Response, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    parse_saved(&bytes, names).map_err(|why| format!("{path}: {why}"))
}

/// Parses `curl -si` output.
pub fn parse_saved(mut bytes: &[u8], names: &[String]) -> Result<Response, String> {
    loop {
        let (head, body) = split_head(bytes).ok_or(
            "not a saved HTTP answer: no blank line after the headers (save it with curl -si)",
        )?;
        let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
        let status_line = lines.next().unwrap_or_default();
        let status = parse_status_line(status_line).ok_or_else(|| {
            format!(
                "not a saved HTTP answer: the first line is not a status line: {:?}",
                String::from_utf8_lossy(status_line)
            )
        })?;
        let headers: Vec<(String, Vec<u8>)> = lines
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let (name, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default().trim_ascii();
                Some((
                    String::from_utf8_lossy(name).trim().to_ascii_lowercase(),
                    value.to_vec(),
                ))
            })
            .collect();
        // An interim answer (100 Continue, 103 Early Hints) is followed by the real one.
        if (100..200).contains(&status) && body.starts_with(b"HTTP/") {
            bytes = body;
            continue;
        }
        let first = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        return Ok(Response {
            status: Some(status),
            grpc_status: first("grpc-status"),
            headers: names.iter().map(|n| (n.clone(), first(n))).collect(),
            content_type: first("content-type"),
            content_encoding: first("content-encoding"),
            length: body.len(),
            body: body.to_vec(),
        });
    }
}

/// The head (up to the blank line) and the rest.
fn split_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((bytes.get(..at)?, bytes.get(at + len..)?))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `HTTP/1.1 200 OK`, `HTTP/2 200`: the status.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    words.next().filter(|w| w.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// The result in words, with both values where they differ.
fn describe(target: &Target, found: &Found, primary: &Response, mirror: &Response) -> String {
    let result = found.result.name();
    let show = |value: Option<&[u8]>| match value {
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
        None => "(absent)".to_string(),
    };
    let status = |r: &Response| r.status.map_or("(none)".to_string(), |s| s.to_string());
    match found.result {
        CompareResult::Match => "match".to_string(),
        CompareResult::Status => format!(
            "{result}: primary {}, mirror {}",
            status(primary),
            status(mirror)
        ),
        CompareResult::GrpcStatus => format!(
            "{result}: primary {}, mirror {}",
            show(primary.grpc_status.as_deref()),
            show(mirror.grpc_status.as_deref())
        ),
        CompareResult::Header => {
            let name = found.header.as_deref().unwrap_or_default();
            format!(
                "{result} {name}: primary {}, mirror {}",
                show(primary.header(name)),
                show(mirror.header(name))
            )
        }
        CompareResult::Body => match (&found.path, &found.exact_path) {
            (Some(path), Some(exact)) => {
                let value = |r: &Response| json_value(target, r, exact);
                format!(
                    "{result} at {}{}: primary {}, mirror {}",
                    if path.is_empty() { "the root" } else { path },
                    if exact != path {
                        format!(" ({exact})")
                    } else {
                        String::new()
                    },
                    value(primary),
                    value(mirror)
                )
            }
            _ => format!(
                "{result}: the bytes differ (primary {} bytes, mirror {} bytes)",
                primary.length, mirror.length
            ),
        },
        CompareResult::TooLarge => format!(
            "{result}: a body is longer than compare.max_body_bytes ({}) decoded: primary {} bytes, mirror {} bytes as saved",
            target.compare.as_ref().map_or(0, |c| c.max_body_bytes),
            primary.length,
            mirror.length
        ),
        CompareResult::Encoding => format!(
            "{result}: content-encoding primary {}, mirror {} (gzip and deflate are decoded)",
            show(primary.content_encoding.as_deref()),
            show(mirror.content_encoding.as_deref())
        ),
        CompareResult::NotJson => format!("{result}: a body does not parse as JSON"),
        other => other.name().to_string(),
    }
}

/// The JSON value at `pointer` in an answer's body, compact; `(absent)` when it has none.
fn json_value(target: &Target, response: &Response, pointer: &str) -> String {
    let limit = target.compare.as_ref().map_or(0, |c| c.max_body_bytes);
    let body = decode(
        Encoding::of(response.content_encoding.as_deref()),
        &response.body,
        limit,
    )
    .unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|doc| doc.pointer(pointer).map(|v| v.to_string()))
        .unwrap_or_else(|| "(absent)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_output_is_read_as_the_last_answer() {
        let saved = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Version: 2\r\n\r\n{\"a\": 1}";
        let names = vec!["content-type".to_string(), "x-version".to_string()];
        let response = parse_saved(saved, &names).unwrap();
        assert_eq!(response.status, Some(200));
        assert_eq!(response.header("x-version"), Some(&b"2"[..]));
        assert_eq!(response.body, b"{\"a\": 1}");
        let plain = parse_saved(b"HTTP/2 404\ncontent-type: text/plain\n\nnope", &names).unwrap();
        assert_eq!(plain.status, Some(404));
        assert_eq!(plain.body, b"nope");
        assert!(parse_saved(b"{\"a\": 1}", &names).is_err());
        assert!(parse_saved(b"hello\r\n\r\n", &names).is_err());
    }
}
