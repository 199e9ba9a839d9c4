//! JSON Pointers (RFC 6901) as `compare` uses them: the patterns of `ignore` and
//! `unordered`, where a segment `*` matches any array index or member name, and the
//! paths where two bodies differ, written with every array index as `*`
//! (`/items/*/price`).

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `*`: any array index or member name.
    Any,
    /// A member name, or an array index written in decimal (`0`, `17`).
    Name(String),
}

/// A compiled pattern: its segments, from the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a JSON Pointer: `""` (the whole document) or `/`-separated segments with
    /// `~0` for `~` and `~1` for `/`; a segment that is exactly `*` matches anything.
    pub fn parse(pointer: &str) -> Result<Pattern, String> {
        if pointer.is_empty() {
            return Ok(Pattern {
                segments: Vec::new(),
            });
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err("must be \"\" or start with '/' (a JSON Pointer)".to_string());
        };
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            if raw == "*" {
                segments.push(Segment::Any);
                continue;
            }
            let mut name = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => name.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => name.push('~'),
                        Some('1') => name.push('/'),
                        _ => {
                            return Err(format!(
                                "\"~\" must be followed by 0 or 1 (~0 is \"~\", ~1 is \"/\"), in segment {raw:?}"
                            ))
                        }
                    },
                }
            }
            segments.push(Segment::Name(name));
        }
        Ok(Pattern { segments })
    }
}

/// A pattern written back as a JSON Pointer.
pub fn write_pattern(pattern: &Pattern) -> String {
    let mut out = String::new();
    for segment in &pattern.segments {
        out.push('/');
        match segment {
            Segment::Any => out.push('*'),
            Segment::Name(name) => {
                out.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
        }
    }
    out
}

/// Where the comparison is in a document: each step a member name or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Member(&'a [u8]),
    Index(usize),
}

/// Whether `path` is exactly what `pattern` names.
pub fn matches(pattern: &Pattern, path: &[Step<'_>]) -> bool {
    pattern.segments.len() == path.len()
        && pattern
            .segments
            .iter()
            .zip(path)
            .all(|(segment, step)| match (segment, step) {
                (Segment::Any, _) => true,
                (Segment::Name(name), Step::Member(member)) => name.as_bytes() == *member,
                (Segment::Name(name), Step::Index(index)) => {
                    name.parse::<usize>().is_ok_and(|n| n == *index)
                        && !(name.len() > 1 && name.starts_with('0'))
                }
            })
}

/// Whether any of `patterns` names `path`.
pub fn any_matches(patterns: &[Pattern], path: &[Step<'_>]) -> bool {
    patterns.iter().any(|p| matches(p, path))
}

/// A path as a JSON Pointer, every array index written `*` and member names escaped as
/// RFC 6901 says (`~` as `~0`, `/` as `~1`); a member name that is not UTF-8 is written
/// with U+FFFD. The whole document is `""`.
pub fn render(path: &[Step<'_>]) -> String {
    write(path, false)
}

/// As [`render`], each array index written as it is (a pointer to one value).
pub fn render_exact(path: &[Step<'_>]) -> String {
    write(path, true)
}

fn write(path: &[Step<'_>], exact: bool) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Index(index) if exact => out.push_str(&index.to_string()),
            Step::Index(_) => out.push('*'),
            Step::Member(name) => {
                for c in String::from_utf8_lossy(name).chars() {
                    match c {
                        '~' => out.push_str("~0"),
                        '/' => out.push_str("~1"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn pointers_parse_as_rfc_6901_says_with_star_for_any() {
        assert_eq!(Pattern::parse("").unwrap().segments, []);
        assert_eq!(
            Pattern::parse("/items/*/e~1tag~0x").unwrap().segments,
            [
                Segment::Name("items".into()),
                Segment::Any,
                Segment::Name("e/tag~x".into())
            ]
        );
        assert_eq!(
            Pattern::parse("/").unwrap().segments,
            [Segment::Name(String::new())]
        );
        assert!(Pattern::parse("items").is_err());
        assert!(Pattern::parse("/a~2").is_err());
        assert!(Pattern::parse("/a~").is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_pattern_names_members_and_indices() {
        let p = Pattern::parse("/items/*/etag").unwrap();
        let path = [
            Step::Member(b"items"),
            Step::Index(3),
            Step::Member(b"etag"),
        ];
        assert!(matches(&p, &path));
        assert!(!matches(&p, &path[..2]));
        let indexed = Pattern::parse("/items/3").unwrap();
        assert!(matches(&indexed, &path[..2]));
        assert!(!matches(&Pattern::parse("/items/03").unwrap(), &path[..2]));
        assert!(matches(&Pattern::parse("/*/*").unwrap(), &path[..2]));
        assert!(matches(&Pattern::parse("").unwrap(), &[]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn paths_are_written_with_indices_as_stars_and_names_escaped() {
        assert_eq!(render(&[]), "");
        assert_eq!(
            render(&[Step::Member(b"a/b~c"), Step::Index(7), Step::Member(b"p.q")]),
            "/a~1b~0c/*/p.q"
        );
        assert_eq!(render(&[Step::Member("é日".as_bytes())]), "/é日");
    }
}
