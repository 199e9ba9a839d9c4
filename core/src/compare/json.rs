//! JSON as `compare` reads it: each body parsed once into a flat tree (one `Vec` of nodes,
//! one of container items, strings as ranges of the body or, when they hold escapes, of
//! one buffer of their decoded bytes), then the two trees walked together in the
//! primary's document order until the first difference.
//!
//! The rules (docs/compare.md): `ignore` paths are left out on both sides; object members
//! are matched by name whatever their order, a duplicate name's last value wins; numbers
//! are equal by value, exactly (`1`, `1.0`, `1e0` and `10e-1` are equal, as are `0` and
//! `-0`; no rounding through floating point); strings after unescaping; arrays in order,
//! but as multisets at the `unordered` paths. The difference is named by its path: a
//! member on one side only differs at its own path, an array with elements past the
//! other's end at the first of them, and an `unordered` array that differs at its own
//! path.
//!
//! Why trees and not a streaming comparison: members may come in any order, so one side
//! must be indexed anyway, and the first difference in the primary's order needs the
//! primary walked in order with the mirror looked up. Two flat trees of a 4 KiB body cost
//! a few allocations, and their size is bounded by the body's (`MAX_DEPTH` bounds the
//! recursion): a node and an item each per value, about 28 bytes for a value that takes
//! at least 2 bytes of JSON.

use xxhash_rust::xxh64::xxh64;

use super::pointer::{any_matches, Pattern, Step};

/// Deeper nesting is not compared: such a body is `not_json`.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    True,
    False,
    Number,
    /// A string: its bytes, decoded.
    String,
    Array,
    Object,
}

/// A value. Scalars: `start..end` of the body (a number's literal) or of the decoded
/// strings (`in_decoded`); containers: `start..end` of [`Doc::items`], and for an object
/// `in_decoded` says whether a name comes twice (rare: then the last one counts).
#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    start: u32,
    end: u32,
    in_decoded: bool,
}

/// A container's item: an object member's name (a string range, as a [`Node`]'s) and
/// value, or an array element (no name).
#[derive(Debug, Clone, Copy)]
struct Item {
    key_start: u32,
    key_end: u32,
    key_in_decoded: bool,
    value: u32,
}

/// A parsed body.
#[derive(Debug)]
pub struct Doc<'a> {
    src: &'a [u8],
    /// The strings that held escapes, decoded.
    decoded: Vec<u8>,
    nodes: Vec<Node>,
    items: Vec<Item>,
}

/// The comparison's rules: the paths left out and the arrays compared as multisets.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub ignore: &'a [Pattern],
    pub unordered: &'a [Pattern],
}

/// Parses a body as JSON; `None` when it is not (or nests deeper than [`MAX_DEPTH`]).
///
/// Every value but the last takes at least two bytes of JSON (`0,`, `[]`), so a body of
/// `n` bytes holds at most `n / 2 + 1` values: the tree's vectors are allocated at that
/// size once, never grown by doubling, and what a parse can take is known: 12 bytes a
/// node, 16 an item, 16 a pending item, and the decoded strings, at most `n` bytes, so
/// about 23 bytes for each byte of the body at worst ([`worst_case_bytes`]).
pub fn parse(src: &[u8]) -> Option<Doc<'_>> {
    let values = src.len() / 2 + 2;
    let mut parser = Parser {
        doc: Doc {
            src,
            decoded: Vec::new(),
            nodes: Vec::with_capacity(values),
            items: Vec::with_capacity(values),
        },
        at: 0,
        pending: Vec::with_capacity(values),
    };
    parser.document()?;
    Some(parser.doc)
}

/// The most a parse of a body of `n` bytes allocates, beyond the body itself.
pub fn worst_case_bytes(n: usize) -> usize {
    let values = n / 2 + 2;
    values * (std::mem::size_of::<Node>() + 2 * std::mem::size_of::<Item>()) + n
}

/// Where two documents first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path, every array index as `*` (what is counted and logged).
    pub path: String,
    /// The path with the primary's array indices (to find the values).
    pub exact_path: String,
}

/// The first place where two documents differ, under `rules`; `None` when they are
/// equal.
pub fn first_difference(
    primary: &Doc<'_>,
    mirror: &Doc<'_>,
    rules: Rules<'_>,
) -> Option<Difference> {
    let mut walk = Walk {
        primary,
        mirror,
        rules,
        path: Vec::with_capacity(16),
        difference: None,
    };
    if walk.ignored() {
        return None;
    }
    walk.values(0, 0);
    walk.difference
}

/// Whether two bodies are equal under `rules`, read side by side without building
/// anything: the fast way for the common case of two serializers that write the same
/// members in the same order. `Some(true)` is exact (members matched by position are
/// matched by name too, and the last of a duplicated name is at the same position on
/// both sides). `None` means "not sure": the members are in another order, the values
/// differ, a string's escapes differ, or a body is not valid JSON; the trees then give the
/// answer and its path ([`parse`], [`first_difference`]).
///
/// Only the primary's body is read token by token; the mirror's follows it by runs of
/// equal bytes, found eight at a time, and is read token by token only where a run ends
/// (a value that differs, an ignored one, other whitespace).
pub fn equal_in_order(primary: &[u8], mirror: &[u8], rules: Rules<'_>) -> Option<bool> {
    // The mirror's body is UTF-8 where it has the primary's bytes; where not, it is
    // checked as it is read.
    std::str::from_utf8(primary).ok()?;
    let depths = rules.ignore.iter().fold(0u64, |mask, pattern| {
        mask | 1u64 << pattern.segments.len().min(63)
    });
    // Values are 1 deep or more: with nothing ignored, no path is kept.
    let steps = rules.ignore.iter().map(|p| p.segments.len()).max();
    let mut walk = Lockstep {
        p: Scan {
            src: primary,
            at: 0,
        },
        m: Scan { src: mirror, at: 0 },
        run: Run::default(),
        mark: 0,
        rules,
        path: Vec::new(),
        depths,
        steps: steps.unwrap_or_default(),
    };
    walk.resync(0, 0);
    walk.body()?;
    walk.follow();
    (walk.p.end() && walk.m.end()).then_some(true)
}

/// A body read byte by byte, validating as it goes.
struct Scan<'a> {
    src: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn skip_whitespace(&mut self) {
        while matches!(self.src.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace.
    #[inline]
    fn next(&mut self) -> Option<u8> {
        match *self.src.get(self.at)? {
            b' ' | b'\t' | b'\n' | b'\r' => {
                self.skip_whitespace();
                self.src.get(self.at).copied()
            }
            byte => Some(byte),
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then(|| self.at += 1)
    }

    /// Takes `token` if the body has exactly these bytes next (after whitespace) and
    /// `ends` holds for the byte after them: a token already checked on the other side
    /// needs no checking here.
    fn take_same(&mut self, token: &[u8], ends: impl Fn(Option<&u8>) -> bool) -> bool {
        self.skip_whitespace();
        let end = self.at + token.len();
        let same = self.src.get(self.at..end) == Some(token) && ends(self.src.get(end));
        if same {
            self.at = end;
        }
        same
    }

    /// Nothing but whitespace left.
    fn end(&mut self) -> bool {
        self.skip_whitespace();
        self.at == self.src.len()
    }

    /// A string with its quotes, as written (after whitespace), and whether it holds
    /// escapes.
    #[inline(always)]
    fn quoted(&mut self) -> Option<(&'a [u8], bool)> {
        self.skip_whitespace();
        let start = self.at;
        (self.src.get(start) == Some(&b'"')).then_some(())?;
        let (end, escaped) = string_end(self.src, start + 1)?;
        self.at = end + 1;
        Some((self.src.get(start..self.at)?, escaped))
    }

    /// A number literal, checked.
    #[inline(always)]
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        let src = self.src;
        let digits = |at: &mut usize| {
            let from = *at;
            while matches!(src.get(*at), Some(b'0'..=b'9')) {
                *at += 1;
            }
            *at - from
        };
        let mut at = start;
        if src.get(at) == Some(&b'-') {
            at += 1;
        }
        let first = src.get(at).copied()?;
        let integer = digits(&mut at);
        if integer == 0 || (first == b'0' && integer > 1) {
            return None;
        }
        if src.get(at) == Some(&b'.') {
            at += 1;
            (digits(&mut at) > 0).then_some(())?;
        }
        if matches!(src.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(src.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            (digits(&mut at) > 0).then_some(())?;
        }
        self.at = at;
        src.get(start..at)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.src.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Skips a whole value, checking it is valid JSON (`depth`: how deep it starts).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.next()? {
            b'{' | b'[' => {
                let close = if self.next()? == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                if self.next()? == close {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    if object {
                        self.quoted()?;
                        self.eat(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    match self.next()? {
                        b',' => self.at += 1,
                        b if b == close => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.quoted().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| ()),
        }
    }
}

/// The bytes a string is read up to: `"`, `\`, and the control characters, which JSON
/// does not allow in one.
fn stops_string(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// Where a string that starts at `at` (after its `"`) ends (its closing `"`), and whether
/// it holds escapes; `None` for a control character, a bad escape or no end.
#[inline(always)]
fn string_end(src: &[u8], mut at: usize) -> Option<(usize, bool)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut escaped = false;
    loop {
        // Eight bytes at a time to the first that stops the string (the lowest byte
        // flagged is a true one: a false flag only follows a true one); the last few one
        // by one.
        let stop = loop {
            let Some(chunk) = src.get(at..).and_then(<[u8]>::first_chunk::<8>) else {
                break at + src.get(at..)?.iter().position(|&b| stops_string(b))?;
            };
            let word = u64::from_le_bytes(*chunk);
            let quote = word ^ (ONES * u64::from(b'"'));
            let backslash = word ^ (ONES * u64::from(b'\\'));
            let stops = ((quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash)
                | (word.wrapping_sub(ONES * 0x20) & !word))
                & HIGH;
            if stops != 0 {
                break at + (stops.trailing_zeros() / 8) as usize;
            }
            at += 8;
        };
        at = stop;
        match *src.get(at)? {
            b'"' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                match *src.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    b'u' => {
                        let hex = src.get(at + 2..at + 6)?;
                        hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                        at += 6;
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// Two bodies read side by side ([`equal_in_order`]).
struct Lockstep<'p, 'm, 'r> {
    p: Scan<'p>,
    /// Where the mirror's body is read; behind the primary's while a run lasts.
    m: Scan<'m>,
    run: Run,
    /// The end of the last token taken on both sides, in the primary's body; the run
    /// covers it.
    mark: usize,
    rules: Rules<'r>,
    /// Where the walk is, kept only when some path is ignored.
    path: Vec<Step<'p>>,
    /// Bit `n` set when some ignored pattern is `n` steps long (bit 63: that long or
    /// longer).
    depths: u64,
    /// The longest ignored pattern: the path is kept this deep, no deeper.
    steps: usize,
}

/// Bytes of the primary's body, from `p` to `end`, equal to the mirror's from `m`.
#[derive(Default)]
struct Run {
    p: usize,
    m: usize,
    end: usize,
}

/// How many bytes `a` and `b` have in common from their starts, eight at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut at = 0;
    while let (Some(x), Some(y)) = (a.get(at..at + 8), b.get(at..at + 8)) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            break;
        };
        let diff = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if diff != 0 {
            return at + (diff.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let (Some(x), Some(y)) = (a.get(at), b.get(at)) {
        if x != y {
            break;
        }
        at += 1;
    }
    at
}

impl<'p> Lockstep<'p, '_, '_> {
    /// Whether the path is kept at `depth` (a value inside `depth` containers).
    #[inline]
    fn tracks(&self, depth: usize) -> bool {
        depth <= self.steps
    }

    /// Whether the value at `depth`, whose path is kept if it needs be, is ignored.
    #[inline]
    fn ignored(&self, depth: usize) -> bool {
        self.tracks(depth)
            && self.depths >> depth.min(63) & 1 == 1
            && any_matches(self.rules.ignore, &self.path)
    }

    /// A new run from these positions on, ends of a token taken on both sides.
    fn resync(&mut self, p: usize, m: usize) {
        self.mark = p;
        let same = common_prefix(
            self.p.src.get(p..).unwrap_or_default(),
            self.m.src.get(m..).unwrap_or_default(),
        );
        self.run = Run {
            p,
            m,
            end: p + same,
        };
    }

    /// Brings the mirror's reading to the mark.
    fn follow(&mut self) {
        self.m.at = self.run.m + self.mark.saturating_sub(self.run.p);
    }

    /// Takes the next token, `token` of the primary's body ending at `self.p.at`, on the
    /// mirror's side: nothing to do while the run covers it, the whitespace before it
    /// and the byte after it; otherwise the mirror is read from the mark, by `same`, and
    /// a new run starts after the token on both sides.
    #[inline]
    fn take(
        &mut self,
        token: &[u8],
        same: impl FnOnce(&mut Scan<'_>, &[u8]) -> bool,
    ) -> Option<()> {
        if self.p.at < self.run.end {
            self.mark = self.p.at;
            return Some(());
        }
        self.follow();
        same(&mut self.m, token).then_some(())?;
        self.resync(self.p.at, self.m.at);
        Some(())
    }

    /// The byte `byte`, next on the primary's side (after whitespace), on both.
    #[inline]
    fn punctuation(&mut self, byte: u8) -> Option<()> {
        self.p.at += 1;
        self.take(&[byte], |m, token| m.take_same(token, |_| true))
    }

    /// A member's name and its `:` on both sides, and its step on the path (at `depth`).
    #[inline(always)]
    fn name(&mut self, depth: usize) -> Option<()> {
        let (name, escaped) = self.p.quoted()?;
        // The same name, written alike (escaped names are matched by the trees).
        (!escaped).then_some(())?;
        if self.p.src.get(self.p.at) == Some(&b':') && self.p.at + 1 < self.run.end {
            // The name and its `:` in the run, as most are.
            self.p.at += 1;
            self.mark = self.p.at;
        } else {
            self.take(name, |m, token| m.take_same(token, |_| true))?;
            (self.p.next()? == b':').then_some(())?;
            self.punctuation(b':')?;
        }
        if self.tracks(depth) {
            let inner = name.get(1..name.len() - 1).unwrap_or_default();
            self.path.push(Step::Member(inner));
        }
        Some(())
    }

    /// Skips an ignored value on both sides; the mirror's needs only to be valid.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.follow();
        self.p.skip_value(depth)?;
        let from = self.m.at;
        self.m.skip_value(depth)?;
        std::str::from_utf8(self.m.src.get(from..self.m.at)?).ok()?;
        self.resync(self.p.at, self.m.at);
        Some(())
    }

    /// The whole body on each side; `Some(())` when they are equal, `None` when not
    /// sure. One loop, the open containers on a stack: a value, then the separators and
    /// closes after it, until the next value or the end.
    fn body(&mut self) -> Option<()> {
        // The open containers, innermost last: an object, or an array and its index.
        let mut open: Vec<Option<usize>> = Vec::new();
        'value: loop {
            match self.p.next()? {
                byte @ (b'{' | b'[') => {
                    if open.len() >= MAX_DEPTH {
                        return None;
                    }
                    self.punctuation(byte)?;
                    let object = byte == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.p.next()? == close {
                        self.punctuation(close)?;
                    } else {
                        open.push((!object).then_some(0));
                        let depth = open.len();
                        if object {
                            self.name(depth)?;
                        } else if self.tracks(depth) {
                            self.path.push(Step::Index(0));
                        }
                        if !self.ignored(depth) {
                            continue 'value;
                        }
                        self.skip(open.len())?;
                    }
                }
                b'"' => {
                    // Equal raw bytes are equal strings; different ones may decode alike.
                    let (string, _) = self.p.quoted()?;
                    self.take(string, |m, token| m.take_same(token, |_| true))?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => {
                    let number = self.p.number()?;
                    self.take(number, |m, token| {
                        let more = |b: Option<&u8>| {
                            matches!(b, Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                        };
                        if m.take_same(token, |b| !more(b)) {
                            return true;
                        }
                        m.skip_whitespace();
                        m.number().is_some_and(|other| numbers_equal(token, other))
                    })?;
                }
            }
            // A value has ended: what follows it, up to the next value.
            loop {
                let depth = open.len();
                let tracked = self.tracks(depth);
                let Some(container) = open.last_mut() else {
                    return Some(());
                };
                if tracked {
                    self.path.pop();
                }
                let byte = self.p.next()?;
                match (byte, container) {
                    (b',', None) => {
                        self.punctuation(byte)?;
                        self.name(depth)?;
                    }
                    (b',', Some(index)) => {
                        self.punctuation(byte)?;
                        *index += 1;
                        if tracked {
                            self.path.push(Step::Index(*index));
                        }
                    }
                    (b'}', None) | (b']', Some(_)) => {
                        self.punctuation(byte)?;
                        open.pop();
                        continue;
                    }
                    _ => return None,
                }
                if !self.ignored(depth) {
                    continue 'value;
                }
                self.skip(depth)?;
            }
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Option<()> {
        self.p.literal(word)?;
        self.take(word, |m, token| {
            m.skip_whitespace();
            m.literal(token).is_some()
        })
    }
}

/// A container being parsed: its node, where its items start among those pending, and
/// the name of the member whose value comes next (objects).
struct Open {
    node: u32,
    from: usize,
    object: bool,
    key: Option<(u32, u32, bool)>,
}

struct Parser<'a> {
    doc: Doc<'a>,
    at: usize,
    /// The items of the containers still open, innermost last.
    pending: Vec<Item>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.doc.src.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize, in_decoded: bool) -> Option<u32> {
        let index = u32::try_from(self.doc.nodes.len()).ok()?;
        self.doc.nodes.push(Node {
            kind,
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
            in_decoded,
        });
        Some(index)
    }

    /// The whole body: one value, nothing after it but whitespace.
    fn document(&mut self) -> Option<()> {
        std::str::from_utf8(self.doc.src).ok()?;
        let mut stack: Vec<Open> = Vec::new();
        let mut pending = std::mem::take(&mut self.pending);
        'value: loop {
            self.skip_whitespace();
            // A value: a scalar, or a container opened (and closed at once if empty).
            let mut done = match self.peek()? {
                b'{' | b'[' => {
                    let object = self.peek() == Some(b'{');
                    self.at += 1;
                    if stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    let kind = if object { Kind::Object } else { Kind::Array };
                    let node = self.push(kind, 0, 0, false)?;
                    stack.push(Open {
                        node,
                        from: pending.len(),
                        object,
                        key: None,
                    });
                    self.skip_whitespace();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        self.close(&mut stack, &mut pending)?
                    } else {
                        if object {
                            self.member_name(&mut stack)?;
                        }
                        continue 'value;
                    }
                }
                _ => self.scalar()?,
            };
            // After a value: it goes into its container, which may go on or close.
            loop {
                let Some(open) = stack.last_mut() else {
                    self.skip_whitespace();
                    return (self.at == self.doc.src.len()).then_some(());
                };
                let (key_start, key_end, key_in_decoded) = open.key.take().unwrap_or((0, 0, false));
                pending.push(Item {
                    key_start,
                    key_end,
                    key_in_decoded,
                    value: done,
                });
                let object = open.object;
                self.skip_whitespace();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if object {
                            self.member_name(&mut stack)?;
                        }
                        continue 'value;
                    }
                    b'}' if object => {
                        self.at += 1;
                        done = self.close(&mut stack, &mut pending)?;
                    }
                    b']' if !object => {
                        self.at += 1;
                        done = self.close(&mut stack, &mut pending)?;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Closes the innermost container: its items move from `pending` to the document.
    fn close(&mut self, stack: &mut Vec<Open>, pending: &mut Vec<Item>) -> Option<u32> {
        let open = stack.pop()?;
        let start = u32::try_from(self.doc.items.len()).ok()?;
        self.doc.items.extend(pending.drain(open.from..));
        let end = u32::try_from(self.doc.items.len()).ok()?;
        let duplicates = open.object && self.has_duplicate_names(start, end);
        let node = self.doc.nodes.get_mut(usize::try_from(open.node).ok()?)?;
        node.start = start;
        node.end = end;
        node.in_decoded = duplicates;
        Some(open.node)
    }

    /// Whether two of the object's members (items `start..end`) have one name.
    fn has_duplicate_names(&self, start: u32, end: u32) -> bool {
        let doc = &self.doc;
        let items = doc
            .items
            .get(start as usize..end as usize)
            .unwrap_or_default();
        if items.len() <= SMALL {
            return items.iter().enumerate().any(|(i, a)| {
                let name = doc.key(a);
                items
                    .get(i + 1..)
                    .unwrap_or_default()
                    .iter()
                    .any(|b| doc.key(b) == name)
            });
        }
        let mut names: Vec<&[u8]> = items.iter().map(|item| doc.key(item)).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w.first() == w.get(1))
    }

    /// An object member's name and its `:`, kept for the value that follows.
    fn member_name(&mut self, stack: &mut [Open]) -> Option<()> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return None;
        }
        let (start, end, in_decoded) = self.string()?;
        self.expect(b':')?;
        stack.last_mut()?.key = Some((
            u32::try_from(start).ok()?,
            u32::try_from(end).ok()?,
            in_decoded,
        ));
        Some(())
    }

    fn scalar(&mut self) -> Option<u32> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                let (start, end, in_decoded) = self.string()?;
                self.push(Kind::String, start, end, in_decoded)
            }
            b't' => self.literal(b"true", Kind::True),
            b'f' => self.literal(b"false", Kind::False),
            b'n' => self.literal(b"null", Kind::Null),
            b'-' | b'0'..=b'9' => {
                self.number()?;
                self.push(Kind::Number, start, self.at, false)
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<u32> {
        let start = self.at;
        let end = start.checked_add(word.len())?;
        (self.doc.src.get(start..end)? == word).then_some(())?;
        self.at = end;
        self.push(kind, start, end, false)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let first = self.peek()?;
        let integer = self.digits();
        if integer == 0 || (first == b'0' && integer > 1) {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            (self.digits() > 0).then_some(())?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        Some(())
    }

    /// A string at `"`: its range in the body, or, when it holds escapes, of its decoded
    /// bytes in [`Doc::decoded`].
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.at += 1;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some((start, self.at - 1, false));
                }
                b'\\' => break,
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        // Escapes: decode the whole string (the buffer sized once, for every string of the
        // body: decoding never lengthens one).
        if self.doc.decoded.capacity() == 0 {
            self.doc.decoded.reserve_exact(self.doc.src.len());
        }
        let from = self.doc.decoded.len();
        let plain = self.doc.src.get(start..self.at)?;
        self.doc.decoded.extend_from_slice(plain);
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some((from, self.doc.decoded.len(), true));
                }
                b'\\' => {
                    self.at += 1;
                    let escaped = self.peek()?;
                    self.at += 1;
                    let byte = match escaped {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let c = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            self.doc
                                .decoded
                                .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    self.doc.decoded.push(byte);
                }
                0..=0x1f => return None,
                byte => {
                    self.doc.decoded.push(byte);
                    self.at += 1;
                }
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let end = self.at.checked_add(4)?;
        let text = std::str::from_utf8(self.doc.src.get(self.at..end)?).ok()?;
        let value = u32::from_str_radix(text, 16).ok()?;
        self.at = end;
        Some(value)
    }

    /// The character of a `\uXXXX` escape (after the `u`), a surrogate pair joined; a
    /// lone surrogate is U+FFFD, as most JSON parsers read it.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            let rest = self.doc.src.get(self.at..)?;
            if rest.starts_with(b"\\u") {
                let save = self.at;
                self.at += 2;
                let second = self.hex4()?;
                if (0xDC00..0xE000).contains(&second) {
                    let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    return Some(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                self.at = save;
            }
            return Some('\u{FFFD}');
        }
        Some(char::from_u32(first).unwrap_or('\u{FFFD}'))
    }
}

impl Doc<'_> {
    fn node(&self, index: u32) -> Option<Node> {
        self.nodes.get(usize::try_from(index).ok()?).copied()
    }

    fn items(&self, node: Node) -> &[Item] {
        self.items
            .get(node.start as usize..node.end as usize)
            .unwrap_or_default()
    }

    fn bytes(&self, start: u32, end: u32, in_decoded: bool) -> &[u8] {
        let from = if in_decoded {
            &self.decoded[..]
        } else {
            self.src
        };
        from.get(start as usize..end as usize).unwrap_or_default()
    }

    fn text(&self, node: Node) -> &[u8] {
        self.bytes(node.start, node.end, node.in_decoded)
    }

    fn key(&self, item: &Item) -> &[u8] {
        self.bytes(item.key_start, item.key_end, item.key_in_decoded)
    }

    /// An object's members that count (the last of each name), in document order, with
    /// a way to find one by name.
    fn members(&self, node: Node) -> Members<'_> {
        let items = self.items(node);
        let mut sorted: Vec<(&[u8], usize)> = Vec::new();
        if items.len() > SMALL && node.in_decoded {
            sorted = items
                .iter()
                .enumerate()
                .map(|(i, it)| (self.key(it), i))
                .collect();
            sorted.sort_unstable();
        }
        Members {
            doc: self,
            items,
            sorted,
            duplicates: node.in_decoded,
        }
    }
}

/// Objects this small are searched in order; larger ones through a sorted index.
const SMALL: usize = 12;

struct Members<'d> {
    doc: &'d Doc<'d>,
    items: &'d [Item],
    /// (name, position), sorted; only for a large object with a name twice.
    sorted: Vec<(&'d [u8], usize)>,
    /// Whether a name comes twice.
    duplicates: bool,
}

impl<'d> Members<'d> {
    /// The position of the member that counts for `name` (the last of that name),
    /// looked for at `hint` first (where the other side has it).
    fn find_near(&self, name: &[u8], hint: usize) -> Option<usize> {
        if !self.duplicates
            && self
                .items
                .get(hint)
                .is_some_and(|item| self.doc.key(item) == name)
        {
            return Some(hint);
        }
        self.find(name)
    }

    /// The position of the member that counts for `name` (the last of that name).
    fn find(&self, name: &[u8]) -> Option<usize> {
        if self.sorted.is_empty() {
            return self
                .items
                .iter()
                .rposition(|item| self.doc.key(item) == name);
        }
        let end = self.sorted.partition_point(|(key, _)| *key <= name);
        let (key, position) = self.sorted.get(end.checked_sub(1)?)?;
        (*key == name).then_some(*position)
    }

    /// The members that count, in document order: (position, name, value).
    fn counted(&self) -> impl Iterator<Item = (usize, &'d [u8], u32)> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(position, item)| {
                let name = self.doc.key(item);
                (!self.duplicates || self.find(name) == Some(position))
                    .then_some((position, name, item.value))
            })
    }

    fn value(&self, position: usize) -> Option<u32> {
        self.items.get(position).map(|item| item.value)
    }
}

/// Two documents walked together.
struct Walk<'p, 'm, 'r> {
    primary: &'p Doc<'p>,
    mirror: &'m Doc<'m>,
    rules: Rules<'r>,
    /// Where the walk is, in the primary (member names borrowed from it or the mirror).
    path: Vec<Step<'p>>,
    difference: Option<Difference>,
}

impl<'p, 'm: 'p> Walk<'p, 'm, '_> {
    #[inline]
    fn ignored(&self) -> bool {
        any_matches(self.rules.ignore, &self.path)
    }

    fn differ(&mut self) -> bool {
        self.difference = Some(Difference {
            path: super::pointer::render(&self.path),
            exact_path: super::pointer::render_exact(&self.path),
        });
        false
    }

    /// Whether the values at `p` (primary) and `m` (mirror) are equal; the first
    /// difference is recorded.
    fn values(&mut self, p: u32, m: u32) -> bool {
        let (Some(pn), Some(mn)) = (self.primary.node(p), self.mirror.node(m)) else {
            return self.differ();
        };
        let equal = match (pn.kind, mn.kind) {
            (Kind::Object, Kind::Object) => return self.objects(pn, mn),
            (Kind::Array, Kind::Array) => {
                return if any_matches(self.rules.unordered, &self.path) {
                    self.multisets(pn, mn)
                } else {
                    self.arrays(pn, mn)
                }
            }
            (Kind::Number, Kind::Number) => {
                numbers_equal(self.primary.text(pn), self.mirror.text(mn))
            }
            (Kind::String, Kind::String) => self.primary.text(pn) == self.mirror.text(mn),
            (a, b) => a == b && matches!(a, Kind::Null | Kind::True | Kind::False),
        };
        equal || self.differ()
    }

    fn objects(&mut self, pn: Node, mn: Node) -> bool {
        let primary = self.primary.members(pn);
        let mirror = self.mirror.members(mn);
        let mut found = 0;
        for (position, name, value) in primary.counted() {
            self.path.push(Step::Member(name));
            if !self.ignored() {
                let other = mirror.find_near(name, position);
                found += usize::from(other.is_some());
                let equal = match other.and_then(|at| mirror.value(at)) {
                    Some(other) => self.values(value, other),
                    None => self.differ(),
                };
                if !equal {
                    return false;
                }
            }
            self.path.pop();
        }
        // Every member of a mirror without duplicates was found: none is extra.
        if !mirror.duplicates && found == mirror.items.len() {
            return true;
        }
        for (_, name, _) in mirror.counted() {
            if primary.find(name).is_none() {
                self.path.push(Step::Member(name));
                if !self.ignored() {
                    return self.differ();
                }
                self.path.pop();
            }
        }
        true
    }

    fn arrays(&mut self, pn: Node, mn: Node) -> bool {
        let primary = self.primary.items(pn);
        let mirror = self.mirror.items(mn);
        for (index, (p, m)) in primary.iter().zip(mirror).enumerate() {
            self.path.push(Step::Index(index));
            if !self.ignored() && !self.values(p.value, m.value) {
                return false;
            }
            self.path.pop();
        }
        if primary.len() != mirror.len() {
            // The first element past the shorter one's end, unless every one is ignored.
            for index in primary.len().min(mirror.len())..primary.len().max(mirror.len()) {
                self.path.push(Step::Index(index));
                if !self.ignored() {
                    return self.differ();
                }
                self.path.pop();
            }
        }
        true
    }

    /// Arrays compared as multisets: equal when their elements pair up equal in some
    /// order. Elements are matched by a hash of their value under the rules, and each
    /// pair then compared for real, so a hash collision cannot make two arrays equal.
    fn multisets(&mut self, pn: Node, mn: Node) -> bool {
        let primary = self.primary.items(pn);
        let mirror = self.mirror.items(mn);
        let mut equal = primary.len() == mirror.len();
        if equal {
            let mut p: Vec<(u64, usize)> = Vec::with_capacity(primary.len());
            let mut m: Vec<(u64, usize)> = Vec::with_capacity(mirror.len());
            for (index, item) in primary.iter().enumerate() {
                self.path.push(Step::Index(index));
                p.push((
                    hash_value(self.primary, item.value, &mut self.path, self.rules),
                    index,
                ));
                self.path.pop();
            }
            for (index, item) in mirror.iter().enumerate() {
                self.path.push(Step::Index(index));
                m.push((
                    hash_value(self.mirror, item.value, &mut self.path, self.rules),
                    index,
                ));
                self.path.pop();
            }
            p.sort_unstable();
            m.sort_unstable();
            equal = p.iter().zip(&m).all(|(a, b)| a.0 == b.0);
            if equal {
                // Confirm each pair (same hash) is equal, in a quiet walk of its own.
                for ((_, pi), (_, mi)) in p.iter().zip(&m) {
                    let (Some(pv), Some(mv)) = (primary.get(*pi), mirror.get(*mi)) else {
                        equal = false;
                        break;
                    };
                    let mut pair = Walk {
                        primary: self.primary,
                        mirror: self.mirror,
                        rules: self.rules,
                        path: self.path.clone(),
                        difference: None,
                    };
                    pair.path.push(Step::Index(*pi));
                    if !pair.values(pv.value, mv.value) {
                        equal = false;
                        break;
                    }
                }
            }
        }
        equal || self.differ()
    }
}

/// A hash of a value that two equal values (under the rules) share: members in any
/// order, numbers by value, the rules' ignored paths left out, `unordered` arrays in any
/// order.
fn hash_value<'d>(doc: &'d Doc<'d>, index: u32, path: &mut Vec<Step<'d>>, rules: Rules<'_>) -> u64 {
    let Some(node) = doc.node(index) else {
        return 0;
    };
    match node.kind {
        Kind::Null => 1,
        Kind::True => 2,
        Kind::False => 3,
        Kind::String => xxh64(doc.text(node), 4),
        Kind::Number => hash_number(doc.text(node)),
        Kind::Array => {
            let unordered = any_matches(rules.unordered, path);
            let mut hash: u64 = 6;
            for (i, item) in doc.items(node).iter().enumerate() {
                path.push(Step::Index(i));
                if !any_matches(rules.ignore, path) {
                    let h = hash_value(doc, item.value, path, rules);
                    hash = if unordered {
                        hash.wrapping_add(mix(h, 7))
                    } else {
                        mix(hash, h)
                    };
                }
                path.pop();
            }
            hash
        }
        Kind::Object => {
            let members = doc.members(node);
            let mut hash: u64 = 8;
            for (_, name, value) in members.counted() {
                path.push(Step::Member(name));
                if !any_matches(rules.ignore, path) {
                    let h = hash_value(doc, value, path, rules);
                    hash = hash.wrapping_add(mix(xxh64(name, 9), h));
                }
                path.pop();
            }
            hash
        }
    }
}

/// Two hashes into one (a 64-bit finalizer over their combination).
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// A number's value, exactly: its sign, its significant digits and the power of ten of
/// the last one; zero has no digits.
struct Number<'a> {
    negative: bool,
    integer: &'a [u8],
    fraction: &'a [u8],
    /// Index, in integer ++ fraction, of the first and last digit that is not 0.
    first: usize,
    last: usize,
    /// The power of ten of the last significant digit.
    exponent: i64,
}

impl<'a> Number<'a> {
    /// Reads a literal the parser accepted.
    fn read(literal: &'a [u8]) -> Option<Number<'a>> {
        let (negative, rest) = match literal.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, literal),
        };
        let mantissa_end = rest
            .iter()
            .position(|b| matches!(b, b'e' | b'E'))
            .unwrap_or(rest.len());
        let (mantissa, exp) = rest.split_at(mantissa_end);
        let (integer, fraction) = match mantissa.iter().position(|&b| b == b'.') {
            Some(dot) => (mantissa.get(..dot)?, mantissa.get(dot + 1..)?),
            None => (mantissa, &[][..]),
        };
        let written: i64 = match exp.get(1..) {
            None | Some([]) => 0,
            Some(digits) => {
                let (sign, digits) = match digits.split_first() {
                    Some((b'-', d)) => (-1, d),
                    Some((b'+', d)) => (1, d),
                    _ => (1, digits),
                };
                sign * digits.iter().fold(0i64, |acc, d| {
                    acc.saturating_mul(10)
                        .saturating_add(i64::from(d.saturating_sub(b'0')))
                })
            }
        };
        let digit = |i: usize| {
            integer
                .get(i)
                .or_else(|| fraction.get(i.checked_sub(integer.len())?))
                .copied()
        };
        let len = integer.len() + fraction.len();
        let first = (0..len).find(|&i| digit(i) != Some(b'0')).unwrap_or(len);
        let last = (0..len)
            .rev()
            .find(|&i| digit(i) != Some(b'0'))
            .unwrap_or(0);
        let fraction_len = i64::try_from(fraction.len()).ok()?;
        let trailing = i64::try_from(len.saturating_sub(1).saturating_sub(last)).ok()?;
        Some(Number {
            negative,
            integer,
            fraction,
            first,
            last,
            exponent: written
                .saturating_sub(fraction_len)
                .saturating_add(trailing),
        })
    }

    fn is_zero(&self) -> bool {
        self.first > self.last || self.first >= self.integer.len() + self.fraction.len()
    }

    fn significant(&self) -> impl Iterator<Item = u8> + '_ {
        (self.first..=self.last).filter_map(move |i| {
            self.integer
                .get(i)
                .or_else(|| self.fraction.get(i.checked_sub(self.integer.len())?))
                .copied()
        })
    }
}

/// Whether two number literals have the same value.
fn numbers_equal(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let (Some(a), Some(b)) = (Number::read(a), Number::read(b)) else {
        return false;
    };
    match (a.is_zero(), b.is_zero()) {
        (true, true) => true,
        (false, false) => {
            a.negative == b.negative
                && a.exponent == b.exponent
                && a.significant().eq(b.significant())
        }
        _ => false,
    }
}

fn hash_number(literal: &[u8]) -> u64 {
    match Number::read(literal) {
        Some(n) if !n.is_zero() => {
            let digits: Vec<u8> = n.significant().collect();
            mix(xxh64(&digits, u64::from(n.negative)), n.exponent as u64)
        }
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn rules(ignore: &[&str], unordered: &[&str]) -> (Vec<Pattern>, Vec<Pattern>) {
        let compile = |list: &[&str]| list.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        (compile(ignore), compile(unordered))
    }

    fn diff_with(a: &str, b: &str, ignore: &[&str], unordered: &[&str]) -> Option<String> {
        let (ignore, unordered) = rules(ignore, unordered);
        let (a, b) = (parse(a.as_bytes()).unwrap(), parse(b.as_bytes()).unwrap());
        first_difference(
            &a,
            &b,
            Rules {
                ignore: &ignore,
                unordered: &unordered,
            },
        )
        .map(|d| d.path)
    }

    fn diff(a: &str, b: &str) -> Option<String> {
        diff_with(a, b, &[], &[])
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn json_is_parsed_strictly() {
        for good in [
            "0",
            "-0.5e+3",
            r#""a\"b\u00e9\ud83d\ude00""#,
            " [1, [], {}, {\"a\": [true, false, null]}] ",
            "{\"\": 1}",
        ] {
            assert!(parse(good.as_bytes()).is_some(), "{good}");
        }
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "1e",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "[1 2]",
            "tru",
            "\"\\x\"",
            "\"a\nb\"",
            "[",
            "{}}",
            "1 2",
            "\"\\u12\"",
            "nul",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(parse(b"\"\xff\"").is_none(), "not UTF-8");
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(deep.as_bytes()).is_some());
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(deeper.as_bytes()).is_none());
    }

    /// The end of a string found eight bytes at a time is where a byte-by-byte reading
    /// finds it, wherever the byte that ends it or stops it falls among the chunks.
    #[wasm_bindgen_test(unsupported = test)]
    fn a_string_ends_where_a_byte_by_byte_reading_ends_it() {
        fn reference(src: &[u8], mut at: usize) -> Option<(usize, bool)> {
            let mut escaped = false;
            loop {
                match *src.get(at)? {
                    b'"' => return Some((at, escaped)),
                    b'\\' => {
                        escaped = true;
                        match *src.get(at + 1)? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                            b'u' => {
                                let hex = src.get(at + 2..at + 6)?;
                                hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                                at += 6;
                            }
                            _ => return None,
                        }
                    }
                    byte if byte < 0x20 => return None,
                    _ => at += 1,
                }
            }
        }
        let specials: [&[u8]; 9] = [
            b"\"",
            b"\\\"",
            b"\\n",
            b"\\u00e9",
            b"\\x",
            b"\n",
            b"\x1f",
            "é".as_bytes(),
            b"\x7f",
        ];
        for len in 0..20 {
            for at in 0..=len {
                for special in specials {
                    let mut src = b"\"".to_vec();
                    src.extend(std::iter::repeat_n(b'a', at));
                    src.extend_from_slice(special);
                    src.extend(std::iter::repeat_n(b'b', len - at));
                    for tail in [&b""[..], b"\"", b"\" ,1]"] {
                        let mut whole = src.clone();
                        whole.extend_from_slice(tail);
                        assert_eq!(
                            string_end(&whole, 1),
                            reference(&whole, 1),
                            "{:?}",
                            String::from_utf8_lossy(&whole)
                        );
                    }
                }
            }
        }
    }

    /// Bytes over 0x7F are JSON only inside strings, and only as UTF-8: the side-by-side
    /// reading refuses a primary's body that is not UTF-8, and a mirror's where it does
    /// not have the primary's bytes.
    #[wasm_bindgen_test(unsupported = test)]
    fn bodies_that_are_not_utf8_are_not_equal_in_order() {
        let plain = Rules {
            ignore: &[],
            unordered: &[],
        };
        let same = |body: &[u8]| equal_in_order(body, body, plain);
        assert_eq!(
            same("{\"name\":\"crème brûlée 😀\"}".as_bytes()),
            Some(true)
        );
        for bad in [
            &b"{\"name\":\"cr\xe8me\"}"[..],
            b"[\"\xc3\"]",
            b"[\"\xed\xa0\x80\"]",
            b"[1, \xc3\xa9]",
            b"\xef\xbb\xbf[1]",
        ] {
            assert_eq!(same(bad), None, "{bad:?}");
        }
        let (ignore, _) = rules(&["/at"], &[]);
        let ignoring = Rules {
            ignore: &ignore,
            unordered: &[],
        };
        assert_eq!(
            equal_in_order(
                b"{\"at\":\"x\",\"n\":1}",
                b"{\"at\":\"\xff\",\"n\":1}",
                ignoring
            ),
            None
        );
        assert_eq!(
            equal_in_order(
                b"{\"at\":\"x\",\"n\":1}",
                "{\"at\":\"é\",\"n\":1}".as_bytes(),
                ignoring
            ),
            Some(true)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn members_are_matched_by_name_and_the_last_duplicate_wins() {
        assert_eq!(diff(r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#), None);
        assert_eq!(diff(r#"{"a":1,"a":2}"#, r#"{"a":2}"#), None);
        assert_eq!(diff(r#"{"a":1,"b":2}"#, r#"{"a":1}"#), Some("/b".into()));
        assert_eq!(diff(r#"{"a":1}"#, r#"{"a":1,"c":3}"#), Some("/c".into()));
        // The first in the primary's order, the mirror's extra members after it.
        assert_eq!(
            diff(
                r#"{"z":1,"a":{"x":1},"m":2}"#,
                r#"{"n":0,"a":{"x":2},"m":3,"z":1}"#
            ),
            Some("/a/x".into())
        );
        assert_eq!(
            diff(r#"{"z":1,"m":2}"#, r#"{"n":0,"m":2,"z":1}"#),
            Some("/n".into())
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn large_objects_are_matched_as_small_ones_are() {
        let members = |skew: usize| {
            let fields: Vec<String> = (0..40)
                .map(|i| format!("\"k{}\":{}", (i + skew) % 40, (i + skew) % 40))
                .collect();
            format!("{{{}}}", fields.join(","))
        };
        assert_eq!(diff(&members(0), &members(17)), None);
        let changed = members(3).replace("\"k9\":9", "\"k9\":10");
        assert_eq!(diff(&members(0), &changed), Some("/k9".into()));
        let dup = members(0).replacen('{', "{\"k5\":99,", 1);
        assert_eq!(diff(&dup, &members(0)), None, "the last k5 wins");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn numbers_are_equal_by_value_exactly() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1e0"),
            ("10", "1e1"),
            ("1", "10e-1"),
            ("0", "-0.0e7"),
            ("123.4500", "1.2345E2"),
            ("-2.5", "-25e-1"),
            ("100000000000000000000001", "100000000000000000000001.0"),
        ] {
            assert_eq!(diff(a, b), None, "{a} = {b}");
        }
        for (a, b) in [
            ("1", "-1"),
            ("1", "1.0000000000000001"),
            ("100000000000000000000001", "100000000000000000000000"),
            ("1e400", "1e401"),
            ("0.1", "1"),
            ("1", "\"1\""),
        ] {
            assert_eq!(diff(a, b), Some(String::new()), "{a} != {b}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn strings_are_compared_after_unescaping() {
        assert_eq!(diff(r#""é/\"""#, r#""\u00e9\/\"""#), None);
        assert_eq!(diff(r#"{"a\u0062":1}"#, r#"{"ab":1}"#), None);
        assert_eq!(diff(r#""😀""#, r#""\ud83d\ude00""#), None);
        assert_eq!(diff(r#"["a"]"#, r#"["b"]"#), Some("/*".into()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn arrays_are_ordered_unless_unordered() {
        assert_eq!(diff("[1,2,3]", "[1,3,2]"), Some("/*".into()));
        assert_eq!(diff("[1,2]", "[1,2,3]"), Some("/*".into()));
        assert_eq!(
            diff_with(r#"{"t":[1,2,3]}"#, r#"{"t":[3,1,2]}"#, &[], &["/t"]),
            None
        );
        assert_eq!(
            diff_with(r#"{"t":[1,2,2]}"#, r#"{"t":[1,1,2]}"#, &[], &["/t"]),
            Some("/t".into())
        );
        assert_eq!(
            diff_with(
                r#"{"t":[{"a":1,"b":[1,2]},{"a":2}]}"#,
                r#"{"t":[{"a":2},{"b":[1,2],"a":1.0}]}"#,
                &[],
                &["/t"]
            ),
            None
        );
        // Inner arrays keep their order unless named too.
        assert_eq!(
            diff_with(
                r#"{"t":[{"b":[1,2]}]}"#,
                r#"{"t":[{"b":[2,1]}]}"#,
                &[],
                &["/t"]
            ),
            Some("/t".into())
        );
        assert_eq!(
            diff_with(
                r#"{"t":[{"b":[1,2]}]}"#,
                r#"{"t":[{"b":[2,1]}]}"#,
                &[],
                &["/t", "/t/*/b"]
            ),
            None
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ignored_paths_are_left_out_on_both_sides() {
        let a = r#"{"id":"x1","updated_at":"2026-12-06","items":[{"etag":"1","price":5},{"etag":"2","price":6}]}"#;
        let b =
            r#"{"id":"x1","updated_at":"2026-12-07","items":[{"etag":"9","price":5},{"price":6}]}"#;
        assert_eq!(diff(a, b), Some("/updated_at".into()));
        assert_eq!(
            diff_with(a, b, &["/updated_at"], &[]),
            Some("/items/*/etag".into())
        );
        assert_eq!(
            diff_with(a, b, &["/updated_at", "/items/*/etag"], &[]),
            None
        );
        assert_eq!(diff_with(a, "[1]", &[""], &[]), None, "the whole document");
        // An ignored member inside an unordered array does not count either.
        assert_eq!(
            diff_with(
                r#"{"t":[{"id":1,"at":5},{"id":2,"at":6}]}"#,
                r#"{"t":[{"id":2,"at":7},{"id":1,"at":8}]}"#,
                &["/t/*/at"],
                &["/t"]
            ),
            None
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn answers_in_the_same_order_match_without_trees() {
        let in_order = |a: &str, b: &str, ignore: &[&str]| {
            let (ignore, unordered) = rules(ignore, &[]);
            equal_in_order(
                a.as_bytes(),
                b.as_bytes(),
                Rules {
                    ignore: &ignore,
                    unordered: &unordered,
                },
            )
        };
        assert_eq!(
            in_order(
                r#"{"a": [1, {"b": null}], "c": "x"}"#,
                r#"{"a":[1.0,{"b":null}],"c":"x"}"#,
                &[]
            ),
            Some(true)
        );
        assert_eq!(
            in_order(
                r#"{"id": 1, "at": "1", "n": [2]}"#,
                r#"{"id": 1, "at": "2", "n": [2]}"#,
                &["/at"]
            ),
            Some(true)
        );
        assert_eq!(
            in_order(r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#, &[]),
            None,
            "reordered: the trees"
        );
        assert_eq!(
            in_order(r#"["é"]"#, r#"["\u00e9"]"#, &[]),
            None,
            "escapes: the trees"
        );
        assert_eq!(in_order("[1,2]", "[1,2,3]", &[]), None);
        assert_eq!(in_order("[1,2]", "[1,2] x", &[]), None);
        assert_eq!(in_order("[01]", "[01]", &[]), None, "not JSON");
        assert_eq!(
            in_order(r#"["a\x"]"#, r#"["a\x"]"#, &[]),
            None,
            "a bad escape"
        );
        let long = format!("[\"{}\", \"tab\there\"]", "s".repeat(40));
        assert_eq!(in_order(&long, &long, &[]), None, "a raw control character");
        let fine = format!("[\"{}\\n{}\"]", "é".repeat(9), "q".repeat(17));
        assert_eq!(in_order(&fine, &fine, &[]), Some(true));

        // Where a run of equal bytes ends: other whitespace before a token, a number
        // that goes on, a literal cut short, a value after an ignored one.
        assert_eq!(in_order("[1,2  ]", "[1,2]", &[]), Some(true));
        assert_eq!(in_order("{\"a\":[]  }", "{\"a\":[] }", &[]), Some(true));
        assert_eq!(in_order("[12,3]", "[123,3]", &[]), None);
        assert_eq!(in_order("[12]", "[12.0]", &[]), Some(true));
        assert_eq!(in_order("[true]", "[truex]", &[]), None);
        assert_eq!(in_order("[1, 2]", "[1, 2", &[]), None);
        assert_eq!(
            in_order(r#"{"t":"a","x":[1,2]}"#, r#"{"t":"bb","x":[1,2]}"#, &["/t"]),
            Some(true)
        );
        assert_eq!(
            in_order(r#"{"t":"a","x":[1,2]}"#, r#"{"t":"bb","x":[1,3]}"#, &["/t"]),
            None
        );
        assert_eq!(
            in_order(r#"{"t":"a","x":1}"#, r#"{"t":[1,,],"x":1}"#, &["/t"]),
            None,
            "an ignored value is still JSON"
        );
        // Bytes that are not UTF-8 in the mirror's body, where it has the primary's
        // bytes around them and in an ignored value.
        let (ignore, unordered) = rules(&["/t"], &[]);
        let bytes = |a: &[u8], b: &[u8]| {
            equal_in_order(
                a,
                b,
                Rules {
                    ignore: &ignore,
                    unordered: &unordered,
                },
            )
        };
        assert_eq!(
            bytes(
                b"{\"t\":\"a\",\"x\":\"\xc3\xa9\"}",
                b"{\"t\":\"a\",\"x\":\"\xc3\xa9\"}"
            ),
            Some(true)
        );
        assert_eq!(
            bytes(
                b"{\"t\":\"a\",\"x\":\"\xc3\xa9\"}",
                b"{\"t\":\"a\",\"x\":\"\xc3\xc3\"}"
            ),
            None
        );
        assert_eq!(
            bytes(b"{\"t\":\"a\",\"x\":1}", b"{\"t\":\"\xff\",\"x\":1}"),
            None
        );
        assert_eq!(
            bytes(b"{\"t\":\"a\",\"x\":1}", b"{\"t\":\"\xc3\xa9\",\"x\":1}"),
            Some(true)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_difference_of_kind_is_at_the_value_itself() {
        assert_eq!(diff(r#"{"a":{"b":1}}"#, r#"{"a":[1]}"#), Some("/a".into()));
        assert_eq!(diff("null", "false"), Some(String::new()));
        assert_eq!(
            diff(r#"{"a/b":{"~":1}}"#, r#"{"a/b":{"~":2}}"#),
            Some("/a~1b/~0".into())
        );
    }

    /// Random documents and small edits of them (a value changed, whitespace added, a
    /// number written otherwise, members swapped): wherever the side-by-side reading is
    /// sure, the trees agree, and it is sure of every document and its unedited copy.
    #[wasm_bindgen_test(unsupported = test)]
    fn the_side_by_side_reading_agrees_with_the_trees() {
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: u64) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 % n
            }
        }
        fn value(rng: &mut Rng, depth: u32, out: &mut String) {
            let kind = if depth > 3 {
                rng.below(4)
            } else {
                rng.below(6)
            };
            match kind {
                0 => out.push_str(["1", "-2.5", "10", "0", "3e2", "12"][rng.below(6) as usize]),
                1 => out.push_str(
                    ["\"a\"", "\"at\"", "\"\\u00e9\"", "\"é\"", "\"\""][rng.below(5) as usize],
                ),
                2 => out.push_str(["true", "false", "null"][rng.below(3) as usize]),
                3 => out.push_str("[]"),
                4 => {
                    out.push('[');
                    for i in 0..rng.below(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        value(rng, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..rng.below(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(
                            ["\"id\"", "\"at\"", "\"x\"", "\"items\""][rng.below(4) as usize],
                        );
                        out.push(':');
                        value(rng, depth + 1, out);
                    }
                    out.push('}');
                }
            }
        }
        let edits: [fn(&str, usize) -> String; 6] = [
            |d, at| format!("{}{}", &d[..at], &d[at..]).replacen("1", "2", 1),
            |d, at| format!("{} {}", &d[..at], &d[at..]),
            |d, _| d.replace("10", "1e1"),
            |d, _| d.replace("\"a\"", "\"b\""),
            |d, _| d.replace("12", "12.0"),
            |d, at| format!("{}{}", &d[at..], &d[..at]),
        ];
        let (ignore, unordered) = rules(&["/at", "/items/*/at", "/x/0"], &[]);
        let rules = Rules {
            ignore: &ignore,
            unordered: &unordered,
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut edited_sure = 0;
        for _ in 0..3000 {
            let mut doc = String::new();
            value(&mut rng, 0, &mut doc);
            let tree = parse(doc.as_bytes()).unwrap();
            assert_eq!(
                equal_in_order(doc.as_bytes(), doc.as_bytes(), rules),
                Some(true),
                "{doc}"
            );
            let boundaries: Vec<usize> = (0..=doc.len())
                .filter(|&i| doc.is_char_boundary(i))
                .collect();
            let at = boundaries[rng.below(boundaries.len() as u64) as usize];
            let edited = edits[rng.below(edits.len() as u64) as usize](&doc, at);
            if equal_in_order(doc.as_bytes(), edited.as_bytes(), rules) == Some(true) {
                let other = parse(edited.as_bytes()).unwrap_or_else(|| panic!("{doc} / {edited}"));
                assert_eq!(
                    first_difference(&tree, &other, rules),
                    None,
                    "{doc} / {edited}"
                );
                edited_sure += 1;
            }
        }
        eprintln!("edited and still sure: {edited_sure}");
        assert!(edited_sure > 300, "{edited_sure}");
    }
}
