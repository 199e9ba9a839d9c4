//! Every relative link in the project's documentation resolves: README.md,
//! CONTRIBUTING.md, CHANGELOG.md and docs/*.md. A link names a file or directory that
//! exists (relative to the Markdown file that holds it, and inside the repository),
//! and a `#anchor` names a heading of the target Markdown file (or of the same file) by
//! GitHub's heading slug. Links to http(s):// and mailto: addresses are not followed;
//! fenced code blocks and code spans hold no links.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// GitHub's anchor for a heading: lower case; letters, digits, `-` and `_` kept;
/// each space a `-`; everything else (punctuation, backticks) dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The text of a heading as GitHub renders it for the slug: a link or image keeps only
/// its text, and a closing sequence of `#` goes.
fn heading_text(raw: &str) -> String {
    let mut text = raw.trim().trim_end_matches('#').trim_end().to_string();
    // `[text](target)` -> `text`
    while let Some(open) = text.find("](") {
        let Some(start) = text[..open].rfind('[') else {
            break;
        };
        let Some(len) = text[open..].find(')') else {
            break;
        };
        let inner = text[start + 1..open].to_string();
        let bang = start > 0 && text.as_bytes()[start - 1] == b'!';
        let from = if bang { start - 1 } else { start };
        text.replace_range(from..open + len + 1, &inner);
    }
    text
}

/// One link found in a Markdown file.
#[derive(Debug, PartialEq)]
struct Link {
    line: usize,
    target: String,
}

/// What a Markdown file holds for this check: its links and its headings' anchors.
#[derive(Debug, Default)]
struct Scan {
    links: Vec<Link>,
    anchors: BTreeSet<String>,
}

/// Byte ranges of the code spans of `text` (backtick runs paired by length).
fn code_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut closed = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    closed = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match closed {
            Some(end) => {
                spans.push((i, end));
                i = end;
            }
            None => i += n,
        }
    }
    spans
}

/// The inline links and images of one paragraph, outside code spans: `[text](target)`,
/// `[text](<target>)`, `[text](target "title")`.
fn inline_links(paragraph: &str, first_line: usize, out: &mut Vec<Link>) {
    let spans = code_spans(paragraph);
    let in_code = |at: usize| spans.iter().any(|&(s, e)| at >= s && at < e);
    let bytes = paragraph.as_bytes();
    let mut from = 0;
    while let Some(found) = paragraph[from..].find("](") {
        let at = from + found;
        from = at + 2;
        if in_code(at) {
            continue;
        }
        let mut i = at + 2;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let target = if bytes.get(i) == Some(&b'<') {
            match paragraph[i + 1..].find('>') {
                Some(len) => paragraph[i + 1..i + 1 + len].to_string(),
                None => continue,
            }
        } else {
            let mut depth = 0usize;
            let mut end = i;
            while end < bytes.len() {
                match bytes[end] {
                    b'(' => depth += 1,
                    b')' if depth == 0 => break,
                    b')' => depth -= 1,
                    b' ' | b'\n' | b'\t' => break,
                    _ => {}
                }
                end += 1;
            }
            paragraph[i..end].to_string()
        };
        let line = first_line + paragraph[..at].matches('\n').count();
        out.push(Link { line, target });
    }
}

/// A fence that opens a code block: its character and length.
fn fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start();
    let c = trimmed.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = trimmed.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// Links and anchors of a Markdown text. Lines are numbered from 1.
fn scan(text: &str) -> Scan {
    let mut scan = Scan::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut open_fence: Option<(char, usize)> = None;
    let mut paragraph = String::new();
    let mut paragraph_line = 0;
    let flush = |paragraph: &mut String, line: usize, links: &mut Vec<Link>| {
        if !paragraph.is_empty() {
            inline_links(paragraph, line, links);
            paragraph.clear();
        }
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some((c, n)) = open_fence {
            let trimmed = line.trim();
            if trimmed.chars().take_while(|&x| x == c).count() >= n
                && trimmed.chars().all(|x| x == c)
            {
                open_fence = None;
            }
            continue;
        }
        if let Some(f) = fence(line) {
            flush(&mut paragraph, paragraph_line, &mut scan.links);
            open_fence = Some(f);
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut paragraph, paragraph_line, &mut scan.links);
            continue;
        }
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        let is_heading = line.len() - trimmed.len() <= 3
            && (1..=6).contains(&hashes)
            && (trimmed.len() == hashes || trimmed[hashes..].starts_with(' '));
        if is_heading {
            flush(&mut paragraph, paragraph_line, &mut scan.links);
            let raw = &trimmed[hashes..];
            inline_links(raw, number, &mut scan.links);
            let base = slug(&heading_text(raw));
            let count = seen.entry(base.clone()).or_insert(0);
            let anchor = if *count == 0 {
                base.clone()
            } else {
                format!("{base}-{count}")
            };
            *count += 1;
            scan.anchors.insert(anchor);
            continue;
        }
        // A reference definition: `[label]: target`.
        if trimmed.starts_with('[') && line.len() - trimmed.len() <= 3 {
            if let Some(close) = trimmed.find("]:") {
                let target = trimmed[close + 2..].split_whitespace().next();
                if let Some(target) = target {
                    flush(&mut paragraph, paragraph_line, &mut scan.links);
                    let target = target.trim_start_matches('<').trim_end_matches('>');
                    scan.links.push(Link {
                        line: number,
                        target: target.to_string(),
                    });
                    continue;
                }
            }
        }
        if paragraph.is_empty() {
            paragraph_line = number;
        } else {
            paragraph.push('\n');
        }
        paragraph.push_str(line);
    }
    flush(&mut paragraph, paragraph_line, &mut scan.links);
    scan
}

/// `%20` and the like, as a browser would decode the path of a link.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `base/rel` with `.` and `..` resolved, or `None` when it leaves `root`.
fn resolve(root: &Path, base: &Path, rel: &str) -> Option<PathBuf> {
    let joined = base.join(rel);
    let mut parts: Vec<Component> = Vec::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    let path: PathBuf = parts.iter().collect();
    path.starts_with(root).then_some(path)
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
}

/// The broken links of `file`, each as `file:line: target: why`.
fn broken_links(root: &Path, file: &Path, scans: &mut BTreeMap<PathBuf, Scan>) -> Vec<String> {
    let scan_of = |path: &Path, scans: &mut BTreeMap<PathBuf, Scan>| {
        if !scans.contains_key(path) {
            let text =
                std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            scans.insert(path.to_path_buf(), scan(&text));
        }
    };
    scan_of(file, scans);
    let links: Vec<(usize, String)> = scans[file]
        .links
        .iter()
        .map(|l| (l.line, l.target.clone()))
        .collect();
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let dir = file.parent().unwrap();
    let mut broken = Vec::new();
    for (line, target) in links {
        if is_external(&target) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let mut fail = |why: String| broken.push(format!("{shown}:{line}: {target}: {why}"));
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            match resolve(root, dir, &percent_decode(path)) {
                Some(p) => p,
                None => {
                    fail("leaves the repository".into());
                    continue;
                }
            }
        };
        if !resolved.exists() {
            fail(format!("no such file ({})", resolved.display()));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        // Anchors are checked in Markdown files only (a code file's `#L10` is GitHub's).
        if resolved.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        if resolved.is_dir() {
            fail("an anchor on a directory".into());
            continue;
        }
        scan_of(&resolved, scans);
        let anchors = &scans[&resolved].anchors;
        if !anchors.contains(anchor) {
            fail(format!(
                "no heading with the anchor #{anchor} in {}",
                resolved.strip_prefix(root).unwrap_or(&resolved).display()
            ));
        }
    }
    broken
}

/// The Markdown files whose links are checked.
fn documentation(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

#[test]
fn every_relative_link_in_the_documentation_resolves() {
    let root = repo();
    let files = documentation(&root);
    assert!(files.len() > 3, "docs/ holds no page");
    let mut scans = BTreeMap::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        assert!(file.is_file(), "{} is missing", file.display());
        broken.extend(broken_links(&root, file, &mut scans));
        checked += scans[file].links.len();
    }
    assert!(
        checked > 100,
        "only {checked} links found: the scanner is broken"
    );
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_readme_indexes_every_docs_page() {
    let root = repo();
    let readme = scan(&std::fs::read_to_string(root.join("README.md")).unwrap());
    let linked: BTreeSet<String> = readme
        .links
        .iter()
        .map(|l| l.target.split('#').next().unwrap_or("").to_string())
        .collect();
    for page in documentation(&root).iter().skip(3) {
        let rel = page.strip_prefix(&root).unwrap().display().to_string();
        assert!(linked.contains(&rel), "README.md does not link {rel}");
    }
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("Envoy's own answers and the mirror's"),
        "envoys-own-answers-and-the-mirrors"
    );
    assert_eq!(
        slug("The `traffic-mirror` command"),
        "the-traffic-mirror-command"
    );
    assert_eq!(slug("gRPC and HTTP/2"), "grpc-and-http2");
    assert_eq!(
        slug("Envoy: front proxy and sidecar"),
        "envoy-front-proxy-and-sidecar"
    );
    assert_eq!(slug("[0.1.0] - 2026-12-01"), "010---2026-12-01");
    assert_eq!(slug("`max_in_flight_bytes`"), "max_in_flight_bytes");
    assert_eq!(
        heading_text(" [Numbers](benchmarks.md) and more ##"),
        "Numbers and more"
    );
}

#[test]
fn the_scanner_finds_links_outside_code_only() {
    let text = "# Title\n\
        \n\
        See [`envoy.yaml`](envoy/envoy.yaml \"title\") and [a\n\
        section](other.md#some-heading), [site](https://example.com).\n\
        \n\
        ```yaml\n\
        [not a link](nowhere.md)\n\
        ```\n\
        \n\
        `[in code](nowhere.md)` but ![img](pic.png)\n\
        \n\
        ## Title\n\
        \n\
        [ref]: <ref.md#x>\n";
    let scan = scan(text);
    let targets: Vec<(usize, &str)> = scan
        .links
        .iter()
        .map(|l| (l.line, l.target.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            (3, "envoy/envoy.yaml"),
            (4, "other.md#some-heading"),
            (4, "https://example.com"),
            (10, "pic.png"),
            (14, "ref.md#x"),
        ]
    );
    let anchors: Vec<&str> = scan.anchors.iter().map(String::as_str).collect();
    assert_eq!(anchors, ["title", "title-1"]);
}

#[test]
fn broken_links_are_reported() {
    let root = std::env::temp_dir().join(format!("traffic-mirror-docs-{}", std::process::id()));
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Read me\n\n\
         ## Envoy's own answers and the mirror's\n\n\
         [ok](#envoys-own-answers-and-the-mirrors) [ok](docs/page.md#the-traffic-mirror-command)\n\
         [bad anchor](#no-such-heading) [bad page anchor](docs/page.md#nope)\n\
         [missing](docs/missing.md) [outside](../../etc/passwd) [site](https://example.com/x.md)\n\n\
         ```\n[fenced](fenced.md)\n```\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("page.md"),
        "# The `traffic-mirror` command\n\n[back](../README.md#read-me) [self](#the-traffic-mirror-command)\n",
    )
    .unwrap();
    let mut scans = BTreeMap::new();
    let mut broken = broken_links(&root, &root.join("README.md"), &mut scans);
    broken.extend(broken_links(&root, &docs.join("page.md"), &mut scans));
    std::fs::remove_dir_all(&root).unwrap();
    let reported: Vec<&str> = broken
        .iter()
        .map(|b| b.split(": ").nth(1).unwrap_or(b))
        .collect();
    assert_eq!(
        reported,
        [
            "#no-such-heading",
            "docs/page.md#nope",
            "docs/missing.md",
            "../../etc/passwd"
        ],
        "{broken:#?}"
    );
    assert!(broken[0].starts_with("README.md:6: "), "{}", broken[0]);
}
