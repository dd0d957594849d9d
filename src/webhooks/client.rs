//! A minimal HTTP/1.1 client for one webhook POST: resolve, connect, write
//! the request, read the status line, close. Everything is bounded by one
//! deadline (connect, every write and every read), and at most
//! [`RESPONSE_HEAD_BYTES_MAX`] of the answer are read: only its status
//! matters. One connection per request (`Connection: close`): batches are
//! the unit of efficiency here, not connection reuse. Plain `http://` only.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::WebhookTarget;

/// Bytes of the answer read at most while looking for its status line and
/// headers; a longer head is a bad response.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;

/// Why a POST did not get a 2xx answer. Every variant is retried.
#[derive(Debug)]
pub enum PostError {
    /// The host name did not resolve (or resolved to nothing).
    Resolve(String),
    /// No address accepted a connection in time.
    Connect(io::Error),
    /// Writing the request or reading the answer failed or timed out.
    Io(io::Error),
    /// The answer was not HTTP, or its head was too long.
    BadResponse,
    /// An answer with a status other than 2xx.
    Status(u16),
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Resolve(host) => write!(f, "cannot resolve {host}"),
            PostError::Connect(e) => write!(f, "connect: {e}"),
            PostError::Io(e) => write!(f, "i/o: {e}"),
            PostError::BadResponse => f.write_str("the answer is not an HTTP/1.x response head"),
            PostError::Status(status) => write!(f, "answered HTTP {status}"),
        }
    }
}

/// POSTs `body` (JSON) to `target` with `headers`, all within `timeout`.
/// Returns the 2xx status, or why there was none.
pub fn post(
    target: &WebhookTarget,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<u16, PostError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(target, deadline)?;
    let head = request_head(target, headers, body.len());
    write_all_by(&mut stream, head.as_bytes(), deadline).map_err(PostError::Io)?;
    write_all_by(&mut stream, body, deadline).map_err(PostError::Io)?;
    let status = read_status(&mut stream, deadline)?;
    if (200..300).contains(&status) { Ok(status) } else { Err(PostError::Status(status)) }
}

fn connect(target: &WebhookTarget, deadline: Instant) -> Result<TcpStream, PostError> {
    // Name resolution is the system's, and not bounded by the deadline; an
    // IP address in the URL skips it.
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| PostError::Resolve(format!("{}: {e}", target.host)))?
        .collect();
    let mut last = None;
    for addr in addrs {
        let remaining = remaining(deadline).map_err(PostError::Connect)?;
        match TcpStream::connect_timeout(&addr, remaining) {
            Ok(stream) => {
                // Small requests and one answer: Nagle would only add delay.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| PostError::Resolve(format!("{}: no address", target.host)), PostError::Connect))
}

fn request_head(target: &WebhookTarget, headers: &[(&str, &str)], body_len: usize) -> String {
    let host = if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: roomcast/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {body_len}\r\nConnection: close\r\n",
        target.path,
        target.port,
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Time left before `deadline`, or a `TimedOut` error (a zero timeout would
/// mean "no timeout" to the socket calls).
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(io::Error::new(io::ErrorKind::TimedOut, "webhook request deadline")) } else { Ok(left) }
}

fn write_all_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until the response head is complete and returns its status.
fn read_status(stream: &mut TcpStream, deadline: Instant) -> Result<u16, PostError> {
    let mut buf = vec![0u8; RESPONSE_HEAD_BYTES_MAX];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(PostError::BadResponse);
        }
        stream.set_read_timeout(Some(remaining(deadline).map_err(PostError::Io)?)).map_err(PostError::Io)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(PostError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PostError::Io(e)),
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => return response.code.ok_or(PostError::BadResponse),
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(PostError::BadResponse),
        }
    }
}
