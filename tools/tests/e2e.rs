//! End to end: the tool's engine against its own sink server, over real
//! loopback sockets. Synchronised on events only: the sink's "listening on"
//! line (it binds port 0 and prints the port) and the fanout's exit; every
//! wait has a deadline, and both processes are ended by their handles.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_roomcast-load");

/// Kills the child (a process this test started) when the test ends,
/// whether it passed or panicked.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `roomcast-load sink` on 127.0.0.1:0 and returns it with the
/// address it bound, read from its "listening on ADDR" line.
fn start_sink() -> (Reap, String) {
    let mut child = Command::new(BIN)
        .args(["sink", "--listen", "127.0.0.1:0", "--duration", "60", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the sink");
    let stderr = child.stderr.take().expect("piped");
    let sink = Reap(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                break;
            }
        }
        // Keep draining so the sink never blocks on a full pipe.
        for _ in lines {}
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("the sink did not say where it listens");
    (sink, addr)
}

/// Runs the tool with `args` and returns the last line of its stdout.
fn run_tool(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning roomcast-load");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut child = Reap(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let err = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let out = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("roomcast-load {args:?} did not finish in {limit:?}"));
    let status = child.0.wait().expect("waiting for roomcast-load");
    let err = err.join().unwrap_or_default();
    assert!(status.success(), "roomcast-load {args:?} failed: {status}\n{err}");
    out.lines().last().unwrap_or_else(|| panic!("no output\n{err}")).to_string()
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn fanout_against_the_sink_accounts_exactly() {
    let (_sink, addr) = start_sink();
    let url = format!("ws://{addr}");
    let line = run_tool(
        &[
            "fanout",
            "--url",
            &url,
            "--dev",
            "--json",
            "--rooms",
            "1",
            "--members",
            "20",
            "--publishers",
            "1",
            "--rate",
            "200",
            "--duration",
            "1",
            "--drain",
            "3",
            "--threads",
            "2",
        ],
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["scenario"], "fanout", "{v}");
    assert_eq!(num(&v, "connected"), 21, "{v}");
    assert_eq!(num(&v, "connections"), 21, "{v}");
    let sent = num(&v, "sent");
    // 200/s for 1 s on an open-loop schedule: every message is due and sent.
    assert!(sent >= 190, "{v}");
    assert_eq!(num(&v, "expected"), sent * 20, "{v}");
    assert_eq!(num(&v, "delivered"), num(&v, "expected"), "{v}");
    assert_eq!(num(&v, "lost"), 0, "{v}");
    assert_eq!(num(&v, "duplicates"), 0, "{v}");
    assert_eq!(num(&v, "out_of_order"), 0, "{v}");
    assert_eq!(v["latency_us"]["count"].as_u64(), Some(sent * 20), "{v}");
    assert_eq!(num(&v, "cross_shard"), 0, "{v}");
}

#[test]
fn bad_cross_shard_use_is_refused_by_name() {
    for args in [
        &["rtt", "--dev", "--cross-shard", "2", "--duration", "1"][..],
        &["fanout", "--proto", "raw", "--cross-shard", "2", "--duration", "1"][..],
    ] {
        let out = Command::new(BIN).args(args).output().expect("running roomcast-load");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--cross-shard"), "{args:?}: {err}");
    }
}
