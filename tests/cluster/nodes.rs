//! A cluster of roomcast nodes on one box: N `roomcast serve` processes,
//! each on its own ephemeral port and data directory, all on one
//! `redis-server` (`--redis unix://…`, `--node-id n1`, …; the `[cluster]`
//! timings in a `--config` file). A node is ready when it has logged both
//! `roomcast listening` and `cluster link up`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use serde_json::Value;

use crate::harness::{Claims, Client, PATIENCE, SECRET, raw_http, spawn_logged, token};
use crate::redis::Redis;

/// The admin key every node is started with.
pub const ADMIN_KEY: &str = "cluster-admin-key-0123456789";

/// What a test changes in the nodes' configuration.
#[derive(Clone, Copy, Default)]
pub struct Settings {
    /// `cluster.heartbeat_ms`; `None`: the default.
    pub heartbeat_ms: Option<u64>,
    /// `cluster.node_ttl_ms`; `None`: the default.
    pub node_ttl_ms: Option<u64>,
    /// `--lobby`: new rooms start with the lobby on.
    pub lobby: bool,
}

pub struct Cluster {
    // Dropped in this order: the nodes first, then Redis under them.
    pub nodes: Vec<Node>,
    pub redis: Redis,
    _config_dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts Redis and `count` nodes `n1`, `n2`, … on it; returns once every
    /// node is listening and has its cluster link up.
    pub fn start(count: usize, settings: Settings) -> Cluster {
        let redis = Redis::start();
        let config_dir = tempfile::tempdir().expect("temp dir");
        let config = config_dir.path().join("cluster.toml");
        std::fs::write(&config, config_toml(settings)).expect("write config");
        // Started together, then waited for, so their startups overlap.
        let mut nodes: Vec<Node> =
            (1..=count).map(|i| Node::spawn(&format!("n{i}"), &redis.url(), &config, settings)).collect();
        for node in &mut nodes {
            node.wait_ready();
        }
        Cluster { nodes, redis, _config_dir: config_dir }
    }
}

/// The configuration file every node of a test reads: rate limits out of
/// the way of the load test, and the test's cluster timings.
fn config_toml(settings: Settings) -> String {
    let mut toml = String::from("[limits]\nrate_messages_per_s = 1000000\nrate_burst = 1000000\n\n[cluster]\n");
    if let Some(ms) = settings.heartbeat_ms {
        toml.push_str(&format!("heartbeat_ms = {ms}\n"));
    }
    if let Some(ms) = settings.node_ttl_ms {
        toml.push_str(&format!("node_ttl_ms = {ms}\n"));
    }
    toml
}

pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    child: Child,
    log: Receiver<String>,
    /// Every log line read so far, in order.
    lines: Vec<String>,
    data_dir: tempfile::TempDir,
}

impl Node {
    fn spawn(id: &str, redis: &str, config: &Path, settings: Settings) -> Node {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--no-pin", "--log-level", "info", "--shards", "2"])
            .args(["--jwt-secret", SECRET, "--admin-key", ADMIN_KEY])
            .args(["--redis", redis, "--node-id", id])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir.path())
            .env_clear();
        if settings.lobby {
            command.arg("--lobby");
        }
        let (child, log) = spawn_logged(command);
        Node { id: id.to_string(), addr: "0.0.0.0:0".parse().expect("addr"), child, log, lines: Vec::new(), data_dir }
    }

    /// Waits for `roomcast listening` (its address) and `cluster link up`,
    /// in whichever order they come.
    fn wait_ready(&mut self) {
        let listening = self.wait_for_log(0, "roomcast listening");
        self.addr = field(&self.lines[listening], "addr").parse().expect("listening addr");
        self.wait_for_log(0, "cluster link up");
    }

    /// The index of the first log line at or after `from` containing
    /// `needle`, reading more lines as they come; fails the test after
    /// `PATIENCE` or when the process has exited.
    pub fn wait_for_log(&mut self, from: usize, needle: &str) -> usize {
        if let Some(i) = self.lines.iter().skip(from).position(|line| line.contains(needle)) {
            return from + i;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let found = line.contains(needle) && self.lines.len() >= from;
                    self.lines.push(line);
                    if found {
                        return self.lines.len() - 1;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let state = self.describe();
                    panic!("{}: never logged {needle:?} ({state})", self.id)
                }
            }
        }
    }

    /// The number of log lines read so far, after taking in every line
    /// already written: a mark for `wait_for_log`.
    pub fn log_mark(&mut self) -> usize {
        while let Ok(line) = self.log.try_recv() {
            self.lines.push(line);
        }
        self.lines.len()
    }

    /// Its exit status (if it exited) and its last log lines, for failure messages.
    pub fn describe(&mut self) -> String {
        self.log_mark();
        let status = self.child.try_wait();
        let tail = self.lines.iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n  ");
        format!("exit: {status:?}; last log lines:\n  {tail}")
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            let state = self.describe();
            panic!("{} is not running: {state}", self.id);
        }
    }

    /// SIGKILL by the child's PID, and reaps it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    #[expect(dead_code, reason = "kept for debugging a failing test: the node's database and secret")]
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn url(&self, room: &str, query: &str) -> String {
        format!("ws://{}/ws/{room}?{query}", self.addr)
    }

    /// Connects to `room` with a token for `claims` (and `query` appended,
    /// starting with `&`); returns the client and its first `welcome`.
    pub fn connect(&self, room: &str, claims: &Claims<'_>, query: &str) -> (Client, Value) {
        let token = token(claims);
        let mut client = Client::connect(&self.url(room, &format!("token={token}{query}")))
            .unwrap_or_else(|e| panic!("{}: handshake for {room} refused: {e:?}", self.id));
        let welcome = client.next_of_type("welcome");
        (client, welcome)
    }

    /// Connects `user` to `room`; returns after its `welcome`.
    pub fn join(&self, room: &str, user: &str) -> (Client, Value) {
        self.connect(room, &Claims { sub: user, ..Claims::default() }, "")
    }

    /// `GET path` with the admin key: the status and the body as JSON.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n");
        let (status, body) = raw_http(self.addr, request.as_bytes());
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// `POST path` with the admin key and `body`: the status and the body as JSON.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, body) = raw_http(self.addr, request.as_bytes());
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// `DELETE path` with the admin key: the status and the body as JSON.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let request = format!("DELETE {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n");
        let (status, body) = raw_http(self.addr, request.as_bytes());
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// The `/metrics` page.
    pub fn metrics(&self) -> String {
        let (status, body) = raw_http(self.addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status, 200, "{}: /metrics: {body}", self.id);
        body
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `key=value` from a tracing log line (text format).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key}= in {line:?}")) + key.len() + 1;
    line[start..].split_whitespace().next().unwrap_or_default().trim_matches('"')
}

/// Calls `probe` until it gives a value, every 50 ms, for at most
/// `PATIENCE`; for state that no event announces (stats, metrics,
/// `/readyz`). `what` names it in the failure, with the last `probe` note.
pub fn poll_until<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what} never came; last seen: {last}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `value` percent-encoded for a URL query (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
