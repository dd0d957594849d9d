//! A real `redis-server` for one test: on a unix socket in a temp directory
//! of its own (no TCP port, so tests running in parallel never meet), no
//! persistence, killed by its PID when the fixture is dropped. It can be
//! killed and started again on the same socket, for the tests of a Redis
//! restart.
//!
//! When `redis-server` is not installed, the fixture installs it with
//! `apt-get install -y redis-server`, as `.ci/run` does, once per test
//! binary; if that fails the test fails saying so.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::PATIENCE;

pub struct Redis {
    child: Option<Child>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` and returns once it answers `PING`.
    pub fn start() -> Redis {
        ensure_installed();
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let socket = dir.path().join("redis.sock");
        let mut redis = Redis { child: None, socket, dir };
        redis.launch();
        redis
    }

    /// The URL roomcast takes (`--redis`).
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// SIGKILL by PID (a crash, as far as its clients can tell), and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty `redis-server` on the same socket (after
    /// `kill`) and returns once it answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        // A killed server leaves its socket file behind; the new one would
        // replace it anyway, but then a PING could not tell them apart.
        let _ = std::fs::remove_file(&self.socket);
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_for_pong(&log);
    }

    /// Polls the socket with `PING` until `+PONG` comes back; fails the
    /// test after `PATIENCE` or as soon as the process has exited.
    fn wait_for_pong(&mut self, log: &Path) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if ping(&self.socket) {
                return;
            }
            let child = self.child.as_mut().expect("started");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server exited ({status}) before answering PING; its log:\n{}", read_log(log));
            }
            assert!(Instant::now() < deadline, "redis-server never answered PING; its log:\n{}", read_log(log));
            // Polling a socket that is not there yet: a short pause between
            // attempts, bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `PING` over the unix socket: true when it answered `+PONG`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Installs `redis-server` from the Debian packages when it is missing,
/// once per test binary (the tests run in parallel and share the answer).
fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        if installed() {
            return Ok(());
        }
        // As .ci/run: the package index may be stale on a fresh machine, so
        // a failed install is retried once after `apt-get update`.
        if apt(&["install", "-y", "-qq", "redis-server"]).is_ok() && installed() {
            return Ok(());
        }
        apt(&["update", "-qq"])?;
        apt(&["install", "-y", "-qq", "redis-server"])?;
        if installed() { Ok(()) } else { Err("apt-get installed redis-server but it does not run".into()) }
    });
    if let Err(why) = result {
        panic!(
            "redis-server is not installed and `apt-get install -y redis-server` failed: {why}\n\
             The cluster tests need a real redis-server (install the Debian package redis-server)."
        );
    }
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn apt(args: &[&str]) -> Result<(), String> {
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("apt-get {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apt-get {} exited with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[test]
fn the_fixture_answers_on_its_socket_and_restarts_on_the_same_one() {
    let mut redis = Redis::start();
    assert!(redis.url().starts_with("unix:///"), "{}", redis.url());
    assert!(ping(&redis.socket));
    redis.kill();
    assert!(!ping(&redis.socket), "killed");
    redis.restart();
    assert!(ping(&redis.socket), "answers again on {}", redis.socket.display());
}
