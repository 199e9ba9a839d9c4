//! A scripted HTTP/1.1 upstream on `std::net` and threads, for the `compare` tests: each
//! path has a fixed answer of its own (status, headers, body), given by the test, after a
//! delay of its own, its body written at once or in paced pieces, or cut off (the
//! connection reset before the answer, or closed or reset in the middle of its body). A primary and a mirror scripted differently answer
//! the same request differently on purpose.
//!
//! Every answer carries `content-length` (the body's length, also to a HEAD request,
//! which gets no body), `x-upstream` (the server's name) and the scripted headers in
//! order; 1xx, 204 and 304 answers have neither length nor body. A path without a script
//! is answered 404. Keep-alive is honoured; each connection gets its own thread. Dropping
//! the server stops it: open connections are shut down, delayed answers abandoned.
//!
//! (The recording upstream, `upstream.rs`, answers every path alike; this one is separate
//! so that neither grows the other's options.)
// Test support: not every user needs every item; panics and indexing are fine here.
#![allow(dead_code, clippy::indexing_slicing, clippy::panic)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::upstream::{invalid, lock, reason, stop_server};

/// Longest request head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(5);

/// How an answer is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// No answer: the connection is reset (RST) once the request has arrived.
    ResetBeforeHead,
    /// The head and this many bytes of the body, then the connection is closed (FIN)
    /// before the rest.
    CloseInBody(usize),
    /// The head and this many bytes of the body, then, once the test has called
    /// [`Scripted::release`] (when it knows that the peer has read them: a reset can
    /// discard what the peer has not read yet), the connection is reset (RST).
    ResetInBody(usize),
}

/// The fixed answer of one path.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Written after `content-length` and `x-upstream`, in order, as given.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Between the whole request having arrived and the answer being written.
    pub delay: Duration,
    pub cut: Option<Cut>,
    /// The body written this many bytes at a time, with this pause after each piece
    /// but the last (`None`: all at once, with the head), so that the peer reads it in
    /// several chunks.
    pub pace: Option<(usize, Duration)>,
}

impl Answer {
    /// `status`, no header, no body.
    pub fn new(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            cut: None,
            pace: None,
        }
    }

    /// `status` with a JSON body (`content-type: application/json`).
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer::new(status)
            .header("content-type", "application/json")
            .body(body)
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Answer {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Answer {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    pub fn cut(mut self, cut: Cut) -> Answer {
        self.cut = Some(cut);
        self
    }

    /// Writes the body `piece` bytes at a time (at least 1), pausing `pause` after each
    /// but the last; the head goes first, on its own.
    pub fn pace(mut self, piece: usize, pause: Duration) -> Answer {
        self.pace = Some((piece.max(1), pause));
        self
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path with query, as sent.
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of a header (name compared case-insensitively), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        path_of(&self.target)
    }
}

fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

struct Shared {
    name: String,
    stop: AtomicBool,
    /// Wakes the threads waiting out a delay or a release when the server stops, and
    /// those waiting for a release when it comes.
    wake: (Mutex<()>, Condvar),
    /// Releases given by [`Scripted::release`] so far.
    released: AtomicU64,
    /// Releases taken by connections waiting to reset.
    taken: Mutex<u64>,
    answers: Mutex<HashMap<String, Answer>>,
    seen: Mutex<Vec<Seen>>,
    /// Answers whose body was cut, so far.
    cut: AtomicU64,
    next_connection: AtomicU64,
    connections: Mutex<Vec<(u64, TcpStream)>>,
}

/// A running scripted upstream; stops when dropped.
pub struct Scripted {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Scripted {
    /// Starts a server on 127.0.0.1 with a free port, with no path scripted.
    pub fn start(name: &str) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("starting scripted upstream {name}: {e}"));
        Scripted::serve_on(name, listener)
    }

    /// [`Scripted::start`], its listening socket's queue of connections not yet accepted
    /// `backlog` long (std's is 128): for hundreds of connections opened at once (a peer
    /// whose SYN finds the queue full retries only a second later).
    pub fn start_with_backlog(name: &str, backlog: i32) -> Scripted {
        use socket2::{Domain, Socket, Type};
        let listener = (|| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
            socket.listen(backlog)?;
            io::Result::Ok(TcpListener::from(socket))
        })()
        .unwrap_or_else(|e| panic!("starting scripted upstream {name}: {e}"));
        Scripted::serve_on(name, listener)
    }

    fn serve_on(name: &str, listener: TcpListener) -> Scripted {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            released: AtomicU64::new(0),
            taken: Mutex::new(0),
            answers: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            cut: AtomicU64::new(0),
            next_connection: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("scripted-{name}"))
            .spawn(move || accept_loop(&listener, &for_thread))
            .unwrap();
        Scripted {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests for `path` (without query; any method) with `answer` from now on.
    pub fn answer(&self, path: &str, answer: Answer) {
        lock(&self.shared.answers).insert(path.to_string(), answer);
    }

    /// Lets one connection waiting in [`Cut::ResetInBody`] reset.
    pub fn release(&self) {
        self.shared.released.fetch_add(1, Ordering::SeqCst);
        let _guard = lock(&self.shared.wake.0);
        self.shared.wake.1.notify_all();
    }

    /// Every request received so far (its whole body read), in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests for `path` (without query) have been received.
    pub fn count(&self, path: &str) -> usize {
        lock(&self.shared.seen)
            .iter()
            .filter(|s| s.path() == path)
            .count()
    }

    /// How many answers were cut in their body so far (written up to the cut).
    pub fn cut_answers(&self) -> u64 {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        stop_server(
            &self.shared.stop,
            &self.shared.wake,
            self.acceptor.take(),
            &self.shared.connections,
        );
    }
}

/// Waits up to `timeout` (`None`: for ever) until the server stops or `ready` holds;
/// whether the server stopped.
fn wait(shared: &Shared, timeout: Option<Duration>, mut ready: impl FnMut() -> bool) -> bool {
    let guard = lock(&shared.wake.0);
    let waiting = |_: &mut ()| !shared.stop.load(Ordering::SeqCst) && !ready();
    match timeout {
        Some(timeout) => drop(shared.wake.1.wait_timeout_while(guard, timeout, waiting)),
        None => drop(shared.wake.1.wait_while(guard, waiting)),
    }
    shared.stop.load(Ordering::SeqCst)
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                if let Ok(handle) = stream.try_clone() {
                    lock(&shared.connections).push((id, handle));
                }
                let shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name(format!("scripted-{}-{id}", shared.name))
                    .spawn(move || {
                        // Errors end the connection; the peer sees it closed.
                        let _ = serve(stream, &shared);
                        lock(&shared.connections).retain(|(c, _)| *c != id);
                    });
                if spawned.is_err() {
                    thread::sleep(POLL);
                }
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// One line without its CRLF (or LF); `None` at a clean end of stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_HEAD_BYTES as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("line too long, or cut"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("not text"))
}

fn read_body(reader: &mut impl BufRead, headers: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line = read_line(reader)?.ok_or_else(|| invalid("end in chunk size"))?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("chunk size"))?;
            if size == 0 {
                while !read_line(reader)?.unwrap_or_default().is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(invalid("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    }
    let length: usize = match value("content-length") {
        Some(text) => text.parse().map_err(|_| invalid("content-length"))?,
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err(invalid("body too large"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Resets the connection: closing it with a zero linger sends RST.
fn reset(stream: &TcpStream) -> io::Error {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    io::Error::other("reset on purpose")
}

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let request_line = loop {
            match read_line(&mut reader)? {
                None => return Ok(()),
                Some(line) if line.is_empty() => continue,
                Some(line) => break line,
            }
        };
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(format!("request line {request_line:?}")));
        };
        let (method, target) = (method.to_string(), target.to_string());
        let close_after = version == "HTTP/1.0";
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut reader)?.ok_or_else(|| invalid("end in head"))?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("header line {line:?}")))?;
            headers.push((name.to_string(), value.trim().as_bytes().to_vec()));
        }
        let body = read_body(&mut reader, &headers)?;
        let close = close_after
            || headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection")
                    && String::from_utf8_lossy(v)
                        .to_ascii_lowercase()
                        .contains("close")
            });
        let answer = lock(&shared.answers).get(path_of(&target)).cloned();
        let head_request = method == "HEAD";
        lock(&shared.seen).push(Seen {
            method,
            target: target.clone(),
            headers,
            body,
        });
        let answer = answer.unwrap_or_else(|| {
            Answer::new(404)
                .header("content-type", "text/plain")
                .body(format!(
                    "{}: no answer scripted for {target}\n",
                    shared.name
                ))
        });
        if !answer.delay.is_zero() && wait(shared, Some(answer.delay), || false) {
            return Ok(());
        }
        if answer.cut == Some(Cut::ResetBeforeHead) {
            return Err(reset(&writer));
        }
        let bodiless = matches!(answer.status, 100..=199 | 204 | 304);
        let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
        if !bodiless {
            head.push_str(&format!("content-length: {}\r\n", answer.body.len()));
        }
        head.push_str(&format!("x-upstream: {}\r\n", shared.name));
        let mut bytes = head.into_bytes();
        for (name, value) in &answer.headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(b"\r\n");
        }
        if close {
            bytes.extend_from_slice(b"connection: close\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        let body: &[u8] = if bodiless || head_request {
            &[]
        } else {
            &answer.body
        };
        match answer.cut {
            Some(Cut::CloseInBody(n)) => {
                bytes.extend_from_slice(&body[..n.min(body.len())]);
                writer.write_all(&bytes)?;
                writer.flush()?;
                shared.cut.fetch_add(1, Ordering::SeqCst);
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Cut::ResetInBody(n)) => {
                bytes.extend_from_slice(&body[..n.min(body.len())]);
                writer.write_all(&bytes)?;
                writer.flush()?;
                shared.cut.fetch_add(1, Ordering::SeqCst);
                // One release per connection that waits.
                let stopped = wait(shared, None, || {
                    let mut taken = lock(&shared.taken);
                    if *taken < shared.released.load(Ordering::SeqCst) {
                        *taken += 1;
                        true
                    } else {
                        false
                    }
                });
                if stopped {
                    return Ok(());
                }
                return Err(reset(&writer));
            }
            _ => {}
        }
        match answer.pace {
            Some((piece, pause)) if !body.is_empty() => {
                writer.write_all(&bytes)?;
                writer.flush()?;
                let mut pieces = body.chunks(piece).peekable();
                while let Some(part) = pieces.next() {
                    writer.write_all(part)?;
                    writer.flush()?;
                    if pieces.peek().is_some() && wait(shared, Some(pause), || false) {
                        return Ok(());
                    }
                }
            }
            _ => {
                bytes.extend_from_slice(body);
                writer.write_all(&bytes)?;
                writer.flush()?;
            }
        }
        if close {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}
