//! A small HTTP/1.1 client on `std::net`: keep-alive connections, content-length and
//! chunked request bodies (several chunks, each written on its own), content-length and
//! chunked responses.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// No single exchange in these tests may take longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body and no framing headers.
    Empty,
    /// Sent with `content-length`.
    Fixed(Vec<u8>),
    /// Sent with `transfer-encoding: chunked`, one chunk per element, each written on
    /// its own.
    Chunked(Vec<Vec<u8>>),
}

impl Body {
    /// The body bytes as the server should see them.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::Fixed(bytes) => bytes.clone(),
            Body::Chunked(chunks) => chunks.concat(),
        }
    }
}

/// A request to send. The `host` header is written first, then `headers` in order,
/// then the framing header for the body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub host: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            host: "example.com".to_string(),
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", target).body(Body::Fixed(body.into()))
    }

    pub fn host(mut self, host: &str) -> Request {
        self.host = host.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: Body) -> Request {
        self.body = body;
        self
    }

    /// The body sent chunked, cut into chunks of at most `chunk` bytes.
    pub fn chunked(mut self, body: &[u8], chunk: usize) -> Request {
        self.body = Body::Chunked(body.chunks(chunk.max(1)).map(<[u8]>::to_vec).collect());
        self
    }

    fn head(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            self.method, self.target, self.host
        )
        .into_bytes();
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Body::Empty => {}
            Body::Fixed(bytes) => {
                head.extend_from_slice(format!("content-length: {}\r\n", bytes.len()).as_bytes());
            }
            Body::Chunked(_) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// From the first byte written to the last byte read.
    pub elapsed: Duration,
    /// When the last byte was read.
    pub finished: Instant,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
pub struct Connection {
    addr: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects; panics on failure.
    pub fn open(addr: SocketAddr) -> Connection {
        Self::try_open(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    pub fn try_open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(Connection {
            addr,
            writer,
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// Sends a request and reads its response; panics on any I/O or protocol error.
    pub fn send(&mut self, request: &Request) -> Response {
        let addr = self.addr;
        self.try_send(request)
            .unwrap_or_else(|e| panic!("{} {} to {addr}: {e}", request.method, request.target))
    }

    /// Sends a request and reads its response.
    pub fn try_send(&mut self, request: &Request) -> io::Result<Response> {
        let start = Instant::now();
        let head = request.head();
        match &request.body {
            Body::Empty => self.writer.write_all(&head)?,
            Body::Fixed(bytes) => {
                let mut all = head;
                all.extend_from_slice(bytes);
                self.writer.write_all(&all)?;
            }
            Body::Chunked(chunks) => {
                self.writer.write_all(&head)?;
                for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(chunk);
                    framed.extend_from_slice(b"\r\n");
                    self.writer.write_all(&framed)?;
                }
                self.writer.write_all(b"0\r\n\r\n")?;
            }
        }
        self.response(start, request.method == "HEAD")
    }

    /// Reads the response to a request whose sending began at `start`.
    fn response(&mut self, start: Instant, head_request: bool) -> io::Result<Response> {
        let (status, headers, body) = read_response(&mut self.reader, head_request)?;
        let finished = Instant::now();
        Ok(Response {
            status,
            headers,
            body,
            elapsed: finished - start,
            finished,
        })
    }
}

/// Sends one request on a connection of its own, closed afterwards; panics on failure.
pub fn send(addr: SocketAddr, request: &Request) -> Response {
    Connection::open(addr).send(request)
}

/// Sends one request on a connection of its own, closed afterwards.
pub fn try_send(addr: SocketAddr, request: &Request) -> io::Result<Response> {
    Connection::try_open(addr)?.try_send(request)
}

/// `GET target` on a connection of its own; panics unless the status is 200.
pub fn get_ok(addr: SocketAddr, target: &str) -> String {
    let response = send(addr, &Request::get(target).host("localhost"));
    assert_eq!(
        response.status,
        200,
        "GET {target} on {addr}: {}",
        response.text()
    );
    response.text()
}

fn io_error(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io_error("connection closed before a complete line"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| io_error("line is not text"))
}

type Headers = Vec<(String, Vec<u8>)>;
type Head = (u16, Headers);

fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let status_line = read_line(reader)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io_error(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io_error(format!("bad header line {line:?}")))?;
        headers.push((name.to_string(), value.trim().as_bytes().to_vec()));
    }
}

fn read_response(
    reader: &mut impl BufRead,
    head_request: bool,
) -> io::Result<(u16, Headers, Vec<u8>)> {
    // Skip interim (1xx) responses.
    let (status, headers) = loop {
        let (status, headers) = read_head(reader)?;
        if !(100..200).contains(&status) {
            break (status, headers);
        }
    };
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    if head_request || status == 204 || status == 304 {
        return Ok((status, headers, Vec::new()));
    }
    let body = if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line = read_line(reader)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io_error(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break body;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(length) = value("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| io_error("bad content-length"))?;
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok((status, headers, body))
}

/// An upload held open part of the way: the head and part of the body are sent, the
/// rest is sent later ([`HeldUpload::finish`]) or never ([`HeldUpload::hang_up`]).
pub struct HeldUpload {
    connection: Connection,
    chunked: bool,
    head_request: bool,
}

impl HeldUpload {
    /// Sends `request`'s head and the first bytes of its body: with a content-length of
    /// `declared`, or chunked (`None`, `first` as one chunk).
    pub fn start(
        addr: SocketAddr,
        request: &Request,
        declared: Option<usize>,
        first: &[u8],
    ) -> HeldUpload {
        let mut framed = request.clone();
        framed.body = Body::Empty;
        let mut bytes = framed.head();
        // The head ends with an empty line: put the framing header before it.
        bytes.truncate(bytes.len() - 2);
        match declared {
            Some(length) => {
                bytes.extend_from_slice(format!("content-length: {length}\r\n\r\n").as_bytes())
            }
            None => bytes.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        }
        let mut upload = HeldUpload {
            connection: Connection::open(addr),
            chunked: declared.is_none(),
            head_request: request.method == "HEAD",
        };
        upload.connection.writer.write_all(&bytes).unwrap();
        upload.send(first);
        upload
    }

    /// Sends more of the body (one chunk, if chunked).
    pub fn send(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut framed = Vec::with_capacity(bytes.len() + 16);
        if self.chunked {
            framed.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
        }
        framed.extend_from_slice(bytes);
        if self.chunked {
            framed.extend_from_slice(b"\r\n");
        }
        self.connection.writer.write_all(&framed).unwrap();
    }

    /// Sends the rest of the body and reads the response.
    pub fn finish(mut self, rest: &[u8]) -> io::Result<Response> {
        let start = Instant::now();
        self.send(rest);
        if self.chunked {
            self.connection.writer.write_all(b"0\r\n\r\n")?;
        }
        self.connection.response(start, self.head_request)
    }

    /// Closes the connection with the body incomplete.
    pub fn hang_up(self) {
        let _ = self.connection.writer.shutdown(std::net::Shutdown::Both);
    }
}
