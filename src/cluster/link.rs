//! One connection to Redis: connect, handshake (RESP3, so one connection
//! can both subscribe and run commands, in order), then split into a write
//! half for the writer thread and a read half for the reader thread. The
//! `redis` crate encodes every command and parses every reply; nothing
//! here speaks RESP by hand.

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, Value};

/// How long a connect or a handshake reply may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A socket to Redis, TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Ends both halves: the reader's blocking read returns.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cluster.redis {url:?} is not a Redis URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cluster.redis: TLS (rediss://) is not supported; use a local TLS relay (stunnel) and redis://")]
    Tls,
    #[error("cannot reach Redis: {0}")]
    Io(#[from] io::Error),
    #[error("Redis refused the handshake: {0}")]
    Handshake(String),
}

/// Checks `url` as `cluster.redis` (at config time, so a typo stops startup).
pub fn check_url(url: &str) -> Result<(), LinkError> {
    let info = url.into_connection_info().map_err(|e| LinkError::BadUrl { url: url.into(), reason: e.to_string() })?;
    match info.addr() {
        ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_) => Ok(()),
        _ => Err(LinkError::Tls),
    }
}

/// A handshaken connection: the read half (with its parser) and the write half.
pub struct Link {
    pub reader: BufReader<Stream>,
    pub parser: redis::Parser,
    pub writer: Stream,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("writer", &self.writer).finish_non_exhaustive()
    }
}

impl Link {
    /// Connects to `url` and switches to RESP3 (authenticating and
    /// selecting the database the URL names).
    pub fn connect(url: &str, client_name: &str) -> Result<Link, LinkError> {
        let info =
            url.into_connection_info().map_err(|e| LinkError::BadUrl { url: url.into(), reason: e.to_string() })?;
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let addr =
                    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))?.next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("{host}:{port} resolves to nothing"))
                    })?;
                let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                tcp.set_nodelay(true)?;
                Stream::Tcp(tcp)
            }
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            _ => return Err(LinkError::Tls),
        };
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let settings = info.redis_settings();
        let mut hello = redis::cmd("HELLO");
        hello.arg(3);
        if let Some(password) = settings.password() {
            hello.arg("AUTH").arg(settings.username().unwrap_or("default")).arg(password);
        }
        hello.arg("SETNAME").arg(client_name);
        let mut link = Link {
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            parser: redis::Parser::new(),
            writer: stream,
        };
        link.call(&hello)?;
        if settings.db() != 0 {
            link.call(redis::cmd("SELECT").arg(settings.db()))?;
        }
        Ok(link)
    }

    /// Ends the handshake's read timeout: from here the reader thread
    /// blocks on the socket for as long as Redis is quiet.
    pub fn ready(&self) -> io::Result<()> {
        self.writer.set_read_timeout(None)
    }

    /// Runs one command and waits for its reply (handshake and
    /// registration only, before the reader thread owns the read half).
    pub fn call(&mut self, cmd: &redis::Cmd) -> Result<Value, LinkError> {
        self.writer.write_all(&cmd.get_packed_command())?;
        loop {
            let value = self.parser.parse_value(&mut self.reader).map_err(|e| LinkError::Handshake(e.to_string()))?;
            match value {
                // A push (a subscription's confirmation) is not this reply.
                Value::Push { .. } => continue,
                Value::ServerError(e) => return Err(LinkError::Handshake(format!("{e:?}"))),
                value => return Ok(value),
            }
        }
    }
}
