//! The HTTP/2 and gRPC peers of `tests/support/http2.py` (grpcio and h2 in the project's
//! venv, installed by `scripts/setup.sh test`): a real gRPC server that records every
//! call, a real gRPC client, and an HTTP/2 client that sends exactly the frames it is
//! given. A missing venv fails the test that needs it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::envoy::repo;
use super::wait_for;

fn python() -> PathBuf {
    let path = repo().join(".venv/bin/python");
    assert!(
        path.is_file(),
        "no {} (run scripts/setup.sh test: it installs grpcio and h2 there)",
        path.display()
    );
    path
}

fn script() -> PathBuf {
    repo().join("tests/support/http2.py")
}

/// Runs `http2.py ARGS` with `input` as JSON on its standard input; its JSON answer.
fn run(args: &[&str], input: &Value) -> Value {
    let mut child = Command::new(python())
        .arg(script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting http2.py {args:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "http2.py {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("http2.py {args:?}: {e}: {stdout}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap_or_default().to_string(),
                        kv[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One gRPC call as a server received it.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    pub method: String,
    pub metadata: Vec<(String, String)>,
    pub messages: Vec<Vec<u8>>,
}

impl GrpcCall {
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A gRPC server (grpcio) serving every method with raw bytes, answering each call with
/// `reply:` and its first message, or failing it with `code` (trailers-only). Stopped on
/// drop.
pub struct GrpcServer {
    name: String,
    addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    calls: Arc<Mutex<Vec<GrpcCall>>>,
    reader: Option<JoinHandle<()>>,
}

impl GrpcServer {
    /// `code` 0 answers every call; another fails every call with that status.
    pub fn start(name: &str, code: u32) -> GrpcServer {
        Self::start_with(name, code, Duration::ZERO)
    }

    /// As [`GrpcServer::start`], each call answered `delay` after it arrived whole.
    pub fn start_with(name: &str, code: u32, delay: Duration) -> GrpcServer {
        let mut child = Command::new(python())
            .arg(script())
            .args(["grpc-server", "--name", name, "--code", &code.to_string()])
            .args(["--delay-ms", &delay.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the gRPC server {name}: {e}"));
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("the gRPC server {name} did not start"));
        let port = serde_json::from_str::<Value>(&first).unwrap()["listening"]
            .as_u64()
            .unwrap_or_else(|| panic!("gRPC server {name}: {first}"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let Ok(call) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                recorded.lock().unwrap().push(GrpcCall {
                    method: call["method"].as_str().unwrap_or_default().to_string(),
                    metadata: pairs(&call["metadata"]),
                    messages: call["messages"]
                        .as_array()
                        .map(|m| m.iter().map(|h| unhex(h.as_str().unwrap_or(""))).collect())
                        .unwrap_or_default(),
                });
            }
        });
        GrpcServer {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap())),
            child,
            stdin,
            calls,
            reader: Some(reader),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every call received so far, in the order they ended.
    pub fn calls(&self) -> Vec<GrpcCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until `n` calls have been received, and returns them.
    pub fn wait_calls(&self, n: usize, timeout: Duration) -> Vec<GrpcCall> {
        wait_for(timeout, &format!("{n} calls at {}", self.name), || {
            let calls = self.calls();
            if calls.len() >= n {
                Ok(calls)
            } else {
                Err(format!("{} calls", calls.len()))
            }
        })
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// What a gRPC client saw of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOutcome {
    pub code: u64,
    pub reply: Option<Vec<u8>>,
}

/// A gRPC call for [`grpc_calls`]: unary (one message) or client-streaming.
#[derive(Debug, Clone)]
pub struct GrpcRequest {
    pub method: String,
    pub streaming: bool,
    pub messages: Vec<Vec<u8>>,
    pub metadata: Vec<(String, String)>,
}

/// Makes each call with a real gRPC client (grpcio) on one channel to `addr`.
pub fn grpc_calls(addr: SocketAddr, calls: &[GrpcRequest]) -> Vec<GrpcOutcome> {
    let input: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "method": c.method,
                "kind": if c.streaming { "client_stream" } else { "unary" },
                "messages": c.messages.iter().map(|m| hex(m)).collect::<Vec<_>>(),
                "metadata": c.metadata.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
            })
        })
        .collect();
    let results = run(&["grpc-call", &addr.to_string()], &Value::from(input));
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| GrpcOutcome {
            code: r["code"].as_u64().unwrap(),
            reply: r["reply"].as_str().map(unhex),
        })
        .collect()
}

/// An HTTP/2 request for [`h2_requests`]: its header fields as given (repeated names
/// kept), and its body as DATA frames of its own per chunk; `cancel`: the stream is
/// never ended, the client resets it after its data.
#[derive(Debug, Clone)]
pub struct H2Request {
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Vec<u8>>,
    pub cancel: bool,
}

/// An HTTP/2 answer: its header fields, body, trailers, and the frames it came in
/// (`HEADERS`, `DATA`, `END_STREAM`, `RST_STREAM`).
#[derive(Debug, Clone)]
pub struct H2Response {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub frames: Vec<String>,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One unary gRPC call (`/shop.Cart/Checkout`, a 2-byte message) sent straight to a
/// server at `addr`, for what its answer is on the wire.
pub fn grpc_checkout_direct(addr: SocketAddr) -> H2Response {
    let mut body = vec![0, 0, 0, 0, 2];
    body.extend_from_slice(b"hi");
    h2_requests(
        addr,
        &[H2Request {
            headers: vec![
                (":method".into(), "POST".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/shop.Cart/Checkout".into()),
                (":authority".into(), "direct".into()),
                ("content-type".into(), "application/grpc".into()),
                ("te".into(), "trailers".into()),
            ],
            chunks: vec![body],
            cancel: false,
        }],
    )
    .remove(0)
}

/// Sends each request, one after the other, on one cleartext HTTP/2 connection (prior
/// knowledge) to `addr`.
pub fn h2_requests(addr: SocketAddr, requests: &[H2Request]) -> Vec<H2Response> {
    let input: Vec<Value> = requests
        .iter()
        .map(|r| {
            json!({
                "headers": r.headers.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                "data": r.chunks.iter().map(|c| hex(c)).collect::<Vec<_>>(),
                "cancel": r.cancel,
            })
        })
        .collect();
    let results = run(&["h2", &addr.to_string()], &Value::from(input));
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| H2Response {
            headers: pairs(&r["headers"]),
            body: unhex(r["data"].as_str().unwrap_or("")),
            trailers: pairs(&r["trailers"]),
            frames: r["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect(),
        })
        .collect()
}

/// `data` compressed as a `content-encoding` says, by Python's standard library: `gzip`
/// (RFC 1952, `gzip.compress`) or `deflate` (the zlib format of RFC 1950,
/// `zlib.compress`), at the best compression.
pub fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    const SCRIPT: &str = "import sys, gzip, zlib\n\
        data = sys.stdin.buffer.read()\n\
        f = {'gzip': lambda d: gzip.compress(d, 9), 'deflate': lambda d: zlib.compress(d, 9)}[sys.argv[1]]\n\
        sys.stdout.buffer.write(f(data))\n";
    let mut child = Command::new(python())
        .args(["-c", SCRIPT, encoding])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting python to compress: {e}"));
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && !output.stdout.is_empty(),
        "compressing as {encoding}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
