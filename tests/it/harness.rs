//! Starts the real server binary and drives it with real clients.
//!
//! Synchronisation is by events only: the server's "listening" log line tells
//! its port, and clients block on the next frame. Read timeouts exist so that
//! a broken server fails a test instead of hanging it; they never decide a
//! pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use roomcast::token::{MintRequest, mint_hs256};
use serde_json::Value;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// The HS256 secret every test server is started with.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Longest a test waits for any one thing before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub echo_addr: Option<SocketAddr>,
    log: Receiver<String>,
    data_dir: tempfile::TempDir,
}

impl Server {
    /// `roomcast serve` on an ephemeral port with the test secret, 2 shards
    /// unless `extra` says otherwise.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// As `start`, on an existing data directory (one `kill` or `stop` gave back).
    pub fn start_in(data_dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Server::start_with("info", data_dir, extra)
    }

    /// As `start`, logging at `level` instead of `info`, for tests that wait
    /// for a debug line (`wait_for_log`).
    pub fn start_logging(level: &str, extra: &[&str]) -> Server {
        Server::start_with(level, tempfile::tempdir().expect("temp dir"), extra)
    }

    fn start_with(level: &str, data_dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--no-pin", "--log-level", level];
        if !extra.contains(&"--shards") {
            args.extend(["--shards", "2"]);
        }
        if !extra.contains(&"--auth-mode") {
            args.extend(["--jwt-secret", SECRET]);
        }
        let dir = data_dir.path().to_str().expect("utf-8 path").to_string();
        args.extend(["--data-dir", &dir]);
        args.extend(extra);
        Server::spawn(&args, data_dir)
    }

    /// Runs `roomcast` with exactly `args` (which must include `serve`).
    pub fn start_raw(args: &[&str]) -> Server {
        Server::spawn(args, tempfile::tempdir().expect("temp dir"))
    }

    fn spawn(args: &[&str], data_dir: tempfile::TempDir) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command.args(args).env_clear();
        let (child, log) = spawn_logged(command);
        let mut server = Server { child, addr: "0.0.0.0:0".parse().expect("addr"), echo_addr: None, log, data_dir };
        let listening = server.wait_for_log("roomcast listening");
        server.addr = field(&listening, "addr").parse().expect("listening addr");
        if args.contains(&"--echo-listen") {
            let echo = server.wait_for_log("echo listener");
            server.echo_addr = Some(field(&echo, "addr").parse().expect("echo addr"));
        }
        server
    }

    /// Blocks until a log line containing `needle` appears, and returns it.
    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_for_log(&mut self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("server never logged {needle:?} (exit: {:?})", self.child.try_wait()),
            }
        }
    }

    pub fn url(&self, room: &str, query: &str) -> String {
        format!("ws://{}/ws/{room}?{query}", self.addr)
    }

    /// Connects to `room` as `user` with a fresh token; returns after `welcome`.
    pub fn join(&self, room: &str, user: &str) -> (Client, Value) {
        let token = token(&Claims { sub: user, ..Claims::default() });
        let mut client = Client::connect(&self.url(room, &format!("token={token}"))).expect("handshake");
        let welcome = client.next_of_type("welcome");
        (client, welcome)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        signal(&self.child, libc_sigterm());
        self.child.wait().expect("wait for roomcast")
    }

    /// Sends SIGTERM now, without waiting; `wait` then reaps the process.
    pub fn sigterm(&self) {
        signal(&self.child, libc_sigterm());
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().expect("wait for roomcast")
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Sends SIGKILL now, without waiting: the process gets no chance to
    /// write anything more. `kill` then reaps it.
    pub fn sigkill(&self) {
        signal(&self.child, 9);
    }

    /// SIGKILL (if not sent already), waits for the exit, and gives back the
    /// data directory for `start_in`.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"))
    }

    /// SIGTERM, waits for a clean exit, and gives back the data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        signal(&self.child, libc_sigterm());
        let status = self.child.wait().expect("wait for roomcast");
        assert!(status.success(), "exit status {status:?}");
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn libc_sigterm() -> i32 {
    15
}

fn signal(child: &Child, sig: i32) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().expect("kill");
    assert!(status.success(), "kill -{sig} failed");
}

/// `key=value` from a tracing log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key}= in {line:?}")) + key.len() + 1;
    line[start..].split_whitespace().next().unwrap_or_default()
}

/// Claims for a test token.
#[derive(Default, Clone)]
pub struct Claims<'a> {
    pub sub: &'a str,
    pub room: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub host: bool,
    pub groups: &'a [String],
    /// Lifetime; 0 means one hour.
    pub ttl_s: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// An HS256 token signed with `SECRET`.
pub fn token(claims: &Claims<'_>) -> String {
    token_at(claims, unix_now())
}

/// An HS256 token as if minted at `now` (so tests can mint expired ones).
pub fn token_at(claims: &Claims<'_>, now: u64) -> String {
    let request = MintRequest {
        sub: claims.sub,
        room: claims.room,
        tenant: claims.tenant,
        host: claims.host,
        groups: claims.groups,
        ttl_s: if claims.ttl_s == 0 { 3600 } else { claims.ttl_s },
        ..MintRequest::default()
    };
    mint_hs256(SECRET.as_bytes(), &request, now).expect("mint")
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

/// What a handshake attempt ended in.
#[derive(Debug)]
pub enum Refused {
    Status(u16, String),
    Other(#[expect(dead_code, reason = "read through Debug in failure messages")] String),
}

impl Client {
    pub fn connect(url: &str) -> Result<Client, Refused> {
        Client::connect_with(url, &[])
    }

    /// Connects with extra request headers.
    pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, Refused> {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("valid url");
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let host = request.uri().authority().expect("authority").as_str().to_string();
        let stream = TcpStream::connect(host).map_err(|e| Refused::Other(e.to_string()))?;
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        match tungstenite::client::client(request, stream) {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                Err(Refused::Status(response.status().as_u16(), body))
            }
            Err(e) => Err(Refused::Other(e.to_string())),
        }
    }

    /// The next frame, whatever it is (pings are answered by tungstenite).
    pub fn next_message(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(message) => return message,
                Err(e) => panic!("connection failed while waiting for a frame: {e}"),
            }
        }
    }

    /// The next text frame, as JSON.
    pub fn next_json(&mut self) -> Value {
        match self.next_message() {
            Message::Text(text) => serde_json::from_str(&text).expect("server frames are JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Skips frames until one of type `kind` arrives.
    pub fn next_of_type(&mut self, kind: &str) -> Value {
        loop {
            let value = self.next_json();
            if value["type"] == kind {
                return value;
            }
        }
    }

    pub fn send(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).expect("send");
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// Writes `frames` (opcode, payload under 126 bytes), masked as a client
    /// must, in one `write` on the socket, so the server reads them in one
    /// go: tests use it to put a request and a Close in the same read.
    pub fn send_frames_in_one_write(&mut self, frames: &[(u8, &[u8])]) {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        let mut bytes = Vec::new();
        for (opcode, payload) in frames {
            assert!(payload.len() < 126, "short frames only");
            bytes.push(0x80 | opcode);
            bytes.push(0x80 | payload.len() as u8);
            bytes.extend_from_slice(&MASK);
            bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        }
        self.ws.get_mut().write_all(&bytes).expect("write frames");
    }

    /// Reads until the server's Close frame and returns its code and reason.
    /// Data frames on the way are skipped.
    /// The code and reason of the Close the server sends, waiting as long as
    /// `keep_waiting` stays true: a read timeout only re-checks it, so a test
    /// whose close comes from a slow outside tool (schemathesis) does not
    /// fail on a quiet stretch. `None`: told to stop before any Close came.
    pub fn close_while(&mut self, keep_waiting: &std::sync::atomic::AtomicBool) -> Option<(u16, String)> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                    return Some((code.into(), reason.to_string()));
                }
                Ok(Message::Close(None)) => return Some((1005, String::new())),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if !keep_waiting.load(std::sync::atomic::Ordering::SeqCst) {
                        return None;
                    }
                }
                Err(e) => panic!("connection ended without a Close frame: {e}"),
            }
        }
    }

    pub fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(CloseFrame { code, reason }))) => return (code.into(), reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => {}
                Err(e) => panic!("connection ended without a Close frame: {e}"),
            }
        }
    }
}

/// Starts `command` (the roomcast binary, arguments set) with no input, no
/// stdout, and its stderr lines sent one by one to the returned receiver.
pub fn spawn_logged(mut command: Command) -> (Child, Receiver<String>) {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start roomcast");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, log) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, log)
}

/// `GET path` with `Authorization: Bearer key`; the status and the body as JSON.
pub fn http_get_json(addr: SocketAddr, path: &str, key: &str) -> (u16, Value) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n");
    let (status, body) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// Sends a raw HTTP request and returns the status and body of the response.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("write request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A GET upgrade request for `path` with a valid key and version 13.
pub fn upgrade_request(path: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
    .into_bytes()
}

impl Server {
    /// Runs `roomcast` with exactly `args` (which must include `serve`) in
    /// `cwd`, with only `envs` in its environment, as a user would from a
    /// shell there; `keep` (the directory holding `cwd`, say) lives as long
    /// as the server.
    pub fn start_at(
        cwd: &std::path::Path,
        envs: &[(String, String)],
        args: &[String],
        keep: tempfile::TempDir,
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command.args(args).current_dir(cwd).env_clear().envs(envs.iter().map(|(name, value)| (name, value)));
        let (child, log) = spawn_logged(command);
        let mut server =
            Server { child, addr: "0.0.0.0:0".parse().expect("addr"), echo_addr: None, log, data_dir: keep };
        let listening = server.wait_for_log("roomcast listening");
        server.addr = field(&listening, "addr").parse().expect("listening addr");
        server
    }

    /// Sends SIGINT (what Ctrl-C sends) now, without waiting; `wait` then
    /// reaps the process.
    pub fn sigint(&self) {
        signal(&self.child, 2);
    }
}
