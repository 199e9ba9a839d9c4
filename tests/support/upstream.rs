//! A recording HTTP/1.1 upstream on `std::net` and threads: the primary and the mirrors
//! of the end-to-end tests, and (through `examples/upstream.rs`) a standalone server
//! for the demo.
//!
//! Every request is recorded as it arrived: method, request target (path with query),
//! headers in order with their raw value bytes, the body (content-length or chunked,
//! de-chunked), when its head arrived, when its body was complete and when its answer
//! went out. Keep-alive is honoured; each connection gets its own thread. The answer
//! can be delayed and its status chosen. Dropping the server stops it: the accept loop
//! polls a stop flag, open connections are shut down, delayed answers are abandoned.
//!
//! A hostile mirror, for the memory tests: the answer can be a large body written
//! slowly, or the server can stop reading after a request's head (with a small receive
//! buffer, so that the kernel does not absorb what the peer sends).
//!
//! Self-contained (std and `socket2`), so that the example can include it by path.
// Test support: not every user needs every item; panics and indexing are fine here.
#![allow(dead_code, clippy::indexing_slicing, clippy::panic)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted (the tests send up to a few MiB).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How often sleeping threads look at the stop flag.
const POLL: Duration = Duration::from_millis(5);

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (numbered from 0 in accept order) carried it.
    pub connection: u64,
    pub method: String,
    /// The request target: path with query, exactly as sent.
    pub target: String,
    /// Header lines in order: the name as sent, the value's raw bytes (surrounding
    /// spaces and tabs removed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came with `transfer-encoding: chunked`.
    pub chunked: bool,
    /// When the request line arrived.
    pub arrived: Instant,
    /// When the whole body had arrived.
    pub completed: Instant,
    /// When the upstream began to write its answer, after any delay (`None`: not yet).
    /// Set before the first byte goes out, so that "not answered" seen here means that
    /// the peer cannot have had the answer yet.
    pub answered: Option<Instant>,
}

impl Received {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of a header as text (lossy), for messages and simple checks.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Every value of a header as [`escaped`] text: exact, and readable in messages.
    pub fn header_texts(&self, name: &str) -> Vec<String> {
        self.header_values(name).into_iter().map(escaped).collect()
    }

    /// One log line: name, method, target, a few headers, body length.
    pub fn log_line(&self, server: &str) -> String {
        let mut line = format!("{server} {} {}", self.method, self.target);
        for name in [
            "host",
            "x-request-id",
            "x-user-id",
            "x-traffic-mirror",
            "x-lane",
            "content-length",
            "transfer-encoding",
        ] {
            if let Some(value) = self.header_str(name) {
                let _ = write!(line, " {name}={value}");
            }
        }
        let _ = write!(line, " body={}B", self.body.len());
        line
    }
}

/// Bytes as text, every byte outside printable ASCII (and `\\`) escaped as in Rust
/// literals (`\\xNN`): one-to-one, so comparing these is comparing the bytes.
pub fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// How the upstream answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Status code of every answer.
    pub status: u16,
    /// Time between the whole request having arrived and the answer being written.
    pub delay: Duration,
    /// The answer's body: `None`, a line naming the server and the request; `Some`, this
    /// many bytes, written in slices spread over `time` (a large answer sent slowly).
    pub large_answer: Option<LargeAnswer>,
    /// Read a request's head, then nothing more: neither its body nor anything after,
    /// and never answer (a mirror that stops reading). The connection stays open until
    /// the peer or [`Drop`] closes it.
    pub stop_reading: bool,
    /// Answer the paths of a small JSON catalog API from the request (see [`Catalog`]);
    /// other paths are answered as without it.
    pub catalog: Option<Catalog>,
}

/// A large answer body, sent slowly.
#[derive(Debug, Clone, Copy)]
pub struct LargeAnswer {
    pub bytes: usize,
    pub time: Duration,
}

/// The most of a large answer written at once.
pub const ANSWER_SLICE: usize = 64 * 1024;

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            delay: Duration::ZERO,
            large_answer: None,
            stop_reading: false,
            catalog: None,
        }
    }
}

/// Options for [`Upstream::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Name in the answers (`x-upstream` header and body) and in log lines.
    pub name: String,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    pub behaviour: Behaviour,
    /// Print one line per request to stdout.
    pub log: bool,
    /// Keep every request for [`Upstream::received`] (off for long benchmark runs).
    pub record: bool,
    /// `SO_RCVBUF` of the listening socket, set before it listens (accepted connections
    /// inherit it): a small one keeps the kernel from absorbing megabytes per connection
    /// for a server that stops reading.
    pub receive_buffer: Option<usize>,
}

impl Options {
    pub fn new(name: &str) -> Self {
        Options {
            name: name.to_string(),
            port: 0,
            behaviour: Behaviour::default(),
            log: false,
            record: true,
            receive_buffer: None,
        }
    }
}

struct Shared {
    name: String,
    log: bool,
    record: bool,
    stop: AtomicBool,
    /// Wakes the connections waiting out a delay when the server stops.
    stopped: (Mutex<()>, Condvar),
    next_connection: AtomicU64,
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    /// Requests received and answers begun, recorded or not.
    received_total: AtomicU64,
    answered_total: AtomicU64,
    /// Answers written to the end (a large answer the peer cut off is not).
    answered_whole: AtomicU64,
    /// Request heads read by a server that then stopped reading.
    stalled_total: AtomicU64,
    /// A handle on every open connection, to shut them down when stopping.
    connections: Mutex<Vec<(u64, TcpStream)>>,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the data).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running recording upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream on 127.0.0.1 with a free port, answering 200 at once.
    pub fn start(name: &str) -> Upstream {
        Self::start_with(Options::new(name))
            .unwrap_or_else(|e| panic!("starting upstream {name}: {e}"))
    }

    /// Starts an upstream answering after `delay`.
    pub fn start_delayed(name: &str, delay: Duration) -> Upstream {
        let mut options = Options::new(name);
        options.behaviour.delay = delay;
        Self::start_with(options).unwrap_or_else(|e| panic!("starting upstream {name}: {e}"))
    }

    pub fn start_with(options: Options) -> io::Result<Upstream> {
        let listener = listen(options.port, options.receive_buffer)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: options.name,
            log: options.log,
            record: options.record,
            stop: AtomicBool::new(false),
            stopped: (Mutex::new(()), Condvar::new()),
            next_connection: AtomicU64::new(0),
            behaviour: Mutex::new(options.behaviour),
            received: Mutex::new(Vec::new()),
            received_total: AtomicU64::new(0),
            answered_total: AtomicU64::new(0),
            answered_whole: AtomicU64::new(0),
            stalled_total: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("upstream-{}", shared.name))
            .spawn(move || accept_loop(&listener, &for_thread))?;
        Ok(Upstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request received so far, in order of completion.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// How many requests have been received so far (recorded or not).
    pub fn count(&self) -> usize {
        usize::try_from(self.shared.received_total.load(Ordering::SeqCst)).unwrap_or(usize::MAX)
    }

    /// How many answers the upstream has begun to write (recorded or not).
    pub fn answered(&self) -> u64 {
        self.shared.answered_total.load(Ordering::SeqCst)
    }

    /// How many answers were written to their end (recorded or not).
    pub fn answered_whole(&self) -> u64 {
        self.shared.answered_whole.load(Ordering::SeqCst)
    }

    /// How many request heads a server that stops reading has read.
    pub fn stalled(&self) -> u64 {
        self.shared.stalled_total.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.behaviour).delay = delay;
    }

    pub fn set_status(&self, status: u16) {
        lock(&self.shared.behaviour).status = status;
    }

    /// Runs until the process ends (for the standalone program).
    pub fn serve_forever(self) -> ! {
        loop {
            thread::park();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        stop_server(
            &self.shared.stop,
            &self.shared.stopped,
            self.acceptor.take(),
            &self.shared.connections,
        );
    }
}

/// Stops a test server (this one, or a [`super::scripted`] one): says so to its threads,
/// wakes those that wait on `wake`, waits for its acceptor to end, and shuts every
/// connection it still holds.
pub(crate) fn stop_server(
    stop: &AtomicBool,
    wake: &(Mutex<()>, Condvar),
    acceptor: Option<JoinHandle<()>>,
    connections: &Mutex<Vec<(u64, TcpStream)>>,
) {
    stop.store(true, Ordering::SeqCst);
    {
        let _guard = lock(&wake.0);
        wake.1.notify_all();
    }
    if let Some(acceptor) = acceptor {
        let _ = acceptor.join();
    }
    for (_, stream) in lock(connections).drain(..) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// A listening socket on 127.0.0.1:`port` (0: a free one), with `SO_RCVBUF` set before
/// it listens.
fn listen(port: u16, receive_buffer: Option<usize>) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Waits until the server stops, or `timeout` (`None`: for ever); whether it stopped.
fn wait_for_stop(shared: &Shared, timeout: Option<Duration>) -> bool {
    let guard = lock(&shared.stopped.0);
    let stopping = |_: &mut ()| !shared.stop.load(Ordering::SeqCst);
    match timeout {
        Some(timeout) => drop(
            shared
                .stopped
                .1
                .wait_timeout_while(guard, timeout, stopping),
        ),
        None => drop(shared.stopped.1.wait_while(guard, stopping)),
    }
    shared.stop.load(Ordering::SeqCst)
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                if let Ok(handle) = stream.try_clone() {
                    lock(&shared.connections).push((id, handle));
                }
                let shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name(format!("upstream-{}-{id}", shared.name))
                    .spawn(move || {
                        // Errors end the connection; the peer sees it closed.
                        let _ = serve_connection(stream, id, &shared);
                        lock(&shared.connections).retain(|(c, _)| *c != id);
                    });
                if spawned.is_err() {
                    thread::sleep(POLL);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one CRLF- (or LF-) terminated line without the terminator; `None` at a clean EOF.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader
        .take(u64::try_from(*budget).unwrap_or(u64::MAX).saturating_add(1))
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(invalid("request head too large"));
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err(invalid("connection closed in the middle of a line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Reads the body of a chunked message, then its trailers.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_HEAD_BYTES;
        let line = read_line(reader, &mut budget)?.ok_or_else(|| invalid("EOF in chunk size"))?;
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(trim(size_text)).map_err(|_| invalid("chunk size"))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let line =
                    read_line(reader, &mut budget)?.ok_or_else(|| invalid("EOF in trailers"))?;
                if line.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// The reason phrase of a status line.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes a large answer's body in slices of at most [`ANSWER_SLICE`], at least 16 of
/// them, spread evenly over its time; an error (the peer cut it off) ends the connection.
fn write_slowly(writer: &mut TcpStream, answer: LargeAnswer, shared: &Shared) -> io::Result<()> {
    static SLICE: [u8; ANSWER_SLICE] = [b'a'; ANSWER_SLICE];
    let slices = answer.bytes.div_ceil(ANSWER_SLICE).max(16);
    let slice = answer.bytes.div_ceil(slices).max(1);
    let pause = answer.time / u32::try_from(slices).unwrap_or(u32::MAX);
    let mut left = answer.bytes;
    while left > 0 {
        let n = left.min(slice);
        writer.write_all(&SLICE[..n])?;
        left -= n;
        if left > 0 && wait_for_stop(shared, Some(pause)) {
            return Err(io::Error::other("server stopped"));
        }
    }
    writer.flush()
}

fn serve_connection(stream: TcpStream, connection: u64, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let mut budget = MAX_HEAD_BYTES;
        // Request line (RFC 9112 allows empty lines before it).
        let request_line = loop {
            match read_line(&mut reader, &mut budget)? {
                None => return Ok(()),
                Some(line) if line.is_empty() => continue,
                Some(line) => break line,
            }
        };
        let arrived = Instant::now();
        let text = String::from_utf8(request_line).map_err(|_| invalid("request line"))?;
        let mut parts = text.split(' ');
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) if parts.next().is_none() => {
                (m.to_string(), t.to_string(), v.to_string())
            }
            _ => return Err(invalid(format!("bad request line {text:?}"))),
        };
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let line =
                read_line(&mut reader, &mut budget)?.ok_or_else(|| invalid("EOF in head"))?;
            if line.is_empty() {
                break;
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| invalid("header line without ':'"))?;
            let name = String::from_utf8(line[..colon].to_vec())
                .map_err(|_| invalid("header name not text"))?;
            headers.push((name, trim(&line[colon + 1..]).to_vec()));
        }
        let value_of = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
        };
        if lock(&shared.behaviour).stop_reading {
            // The head is read; the body stays in the sockets, unread, for ever.
            shared.stalled_total.fetch_add(1, Ordering::SeqCst);
            wait_for_stop(shared, None);
            return Ok(());
        }
        let chunked = value_of("transfer-encoding").is_some_and(|te| te.contains("chunked"));
        let close =
            value_of("connection").is_some_and(|c| c.contains("close")) || version == "HTTP/1.0";
        let body = if chunked {
            read_chunked(&mut reader)?
        } else {
            let length = match value_of("content-length") {
                Some(text) => text
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| invalid("bad content-length"))?,
                None => 0,
            };
            if length > MAX_BODY_BYTES {
                return Err(invalid("body too large"));
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
            body
        };
        let record = Received {
            connection,
            method,
            target,
            headers,
            body,
            chunked,
            arrived,
            completed: Instant::now(),
            answered: None,
        };
        if shared.log {
            let line = record.log_line(&shared.name);
            let stdout = io::stdout();
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        let head_only = record.method == "HEAD";
        let summary = format!("{} {} {}\n", shared.name, record.method, record.target);
        // The catalog's answer, when the server answers as one and this is its path.
        let catalog = lock(&shared.behaviour)
            .catalog
            .and_then(|catalog| catalog.answer(&record.target));
        let index = shared.record.then(|| {
            let mut received = lock(&shared.received);
            received.push(record);
            received.len() - 1
        });
        shared.received_total.fetch_add(1, Ordering::SeqCst);

        let behaviour = lock(&shared.behaviour).clone();
        // Sleeps the whole delay at once (a thousand held connections cost nothing),
        // waking early only when the server stops.
        if !behaviour.delay.is_zero() && wait_for_stop(shared, Some(behaviour.delay)) {
            return Ok(());
        }
        let length = behaviour.large_answer.map_or(summary.len(), |a| a.bytes);
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-upstream: {}\r\n{}\r\n",
            behaviour.status,
            reason(behaviour.status),
            length,
            shared.name,
            if close { "connection: close\r\n" } else { "" },
        )
        .into_bytes();
        if !head_only && behaviour.large_answer.is_none() {
            response.extend_from_slice(summary.as_bytes());
        }
        if let (Some(answer), None) = (&catalog, behaviour.large_answer) {
            response = answer.response(&shared.name, close, head_only);
        }
        if let Some(index) = index {
            if let Some(r) = lock(&shared.received).get_mut(index) {
                r.answered = Some(Instant::now());
            }
        }
        shared.answered_total.fetch_add(1, Ordering::SeqCst);
        writer.write_all(&response)?;
        writer.flush()?;
        if let (Some(answer), false) = (behaviour.large_answer, head_only) {
            write_slowly(&mut writer, answer, shared)?;
        }
        shared.answered_whole.fetch_add(1, Ordering::SeqCst);
        if close {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The catalog: a small JSON API answered deterministically, for the `compare` demo.

/// A small JSON catalog API, every answer computed from the request, so that two servers
/// answer alike (a primary and a candidate under test) but for what differs on purpose:
///
/// - `/api/items/<id>` (any method; id 1 to [`Catalog::MAX_ID`]): one item,
///   `{"id":7,"name":"kettle 7","price":61.32,"currency":"EUR","stock":41,"tags":[...],"updated_at":"..."}`;
///   another id: 404 `{"error":"no such item"}`;
/// - `/api/items?page=P&per_page=N` (P from 1, N from 1 to 50, default 1 and 5): items
///   (P-1)*N+1 to P*N, `{"page":P,"per_page":N,"items":[...],"updated_at":"..."}` (the
///   items without `updated_at`).
///
/// `updated_at` is volatile: the time of the answer (RFC 3339, nanoseconds), different
/// on every answer, as a field a `compare` must `ignore`. With `bug` (a candidate with a
/// seeded bug), the price of every item whose id is a multiple of
/// [`Catalog::BUGGY_EVERY`] is one cent too high: a comparison finds it at `/price`
/// (one item) or `/items/*/price` (a page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Catalog {
    pub bug: bool,
}

/// A catalog answer: its status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogAnswer {
    pub status: u16,
    pub body: String,
}

impl Catalog {
    /// Items that exist: ids 1 to this.
    pub const MAX_ID: u64 = 999_999_999;
    /// With `bug`, the ids whose price is wrong: the multiples of this.
    pub const BUGGY_EVERY: u64 = 7;
    const MAX_PER_PAGE: u64 = 50;
    const NAMES: [&'static str; 8] = [
        "lamp", "kettle", "chair", "teapot", "blanket", "mug", "clock", "vase",
    ];
    const TAGS: [&'static str; 4] = ["home", "kitchen", "living", "gift"];

    /// The answer to a request for `target` (path with query), or `None` when it is not
    /// a catalog path.
    pub fn answer(&self, target: &str) -> Option<CatalogAnswer> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = path.strip_suffix('/').unwrap_or(path);
        if path == "/api/items" {
            let param = |name: &str| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(key, _)| *key == name)
                    .and_then(|(_, value)| digits(value))
            };
            let page = param("page").unwrap_or(1).clamp(1, Self::MAX_ID);
            let per_page = param("per_page").unwrap_or(5).clamp(1, Self::MAX_PER_PAGE);
            let first = (page - 1) * per_page + 1;
            let items: Vec<String> = (first..first + per_page)
                .filter(|&id| id <= Self::MAX_ID)
                .map(|id| self.item(id, None))
                .collect();
            let body = format!(
                "{{\"page\":{page},\"per_page\":{per_page},\"items\":[{}],\"updated_at\":\"{}\"}}",
                items.join(","),
                now_rfc3339()
            );
            return Some(CatalogAnswer { status: 200, body });
        }
        let id = path.strip_prefix("/api/items/")?;
        Some(
            match digits(id).filter(|id| (1..=Self::MAX_ID).contains(id)) {
                Some(id) => CatalogAnswer {
                    status: 200,
                    body: self.item(id, Some(&now_rfc3339())),
                },
                None => CatalogAnswer {
                    status: 404,
                    body: "{\"error\":\"no such item\"}".to_string(),
                },
            },
        )
    }

    /// An item's price in cents: the primary's, or with `bug` the candidate's.
    pub fn price_cents(&self, id: u64) -> u64 {
        let right = 199 + (id.wrapping_mul(7919)) % 9800;
        if self.bug && id.is_multiple_of(Self::BUGGY_EVERY) {
            right + 1
        } else {
            right
        }
    }

    /// One item as JSON, with `updated_at` when given.
    pub fn item(&self, id: u64, updated_at: Option<&str>) -> String {
        let index = |n: u64, len: usize| usize::try_from(n % len as u64).unwrap_or(0);
        let name = Self::NAMES[index(id, Self::NAMES.len())];
        let cents = self.price_cents(id);
        let mut tags = vec![Self::TAGS[index(id, Self::TAGS.len())]];
        if id.is_multiple_of(3) {
            tags.push("sale");
        }
        let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
        let mut json = format!(
            "{{\"id\":{id},\"name\":\"{name} {id}\",\"price\":{}.{:02},\"currency\":\"EUR\",\"stock\":{},\"tags\":[{}]",
            cents / 100,
            cents % 100,
            (id * 13) % 50,
            tags.join(",")
        );
        if let Some(at) = updated_at {
            let _ = write!(json, ",\"updated_at\":\"{at}\"");
        }
        json.push('}');
        json
    }
}

impl CatalogAnswer {
    /// The whole HTTP/1.1 answer: head and (but to a HEAD request) body.
    pub fn response(&self, server: &str, close: bool, head_only: bool) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-upstream: {}\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            server,
            if close { "connection: close\r\n" } else { "" },
        )
        .into_bytes();
        if !head_only {
            response.extend_from_slice(self.body.as_bytes());
        }
        response
    }
}

/// A decimal number of ASCII digits only (no sign), as the catalog reads ids and pages.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Now, as RFC 3339 in UTC with nanoseconds (`2025-06-01T12:34:56.123456789Z`).
fn now_rfc3339() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    // Days to a civil date (H. Hinnant's days_from_civil, inverted), from 1970-01-01.
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}
