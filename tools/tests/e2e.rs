//! End to end: the tool's engine against its own sink server, over real
//! loopback sockets. Synchronised on events only: the sink's "listening on"
//! line (it binds port 0 and prints the port) and the fanout's exit; every
//! wait has a deadline, and both processes are ended by their handles.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
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
    start_sink_with(&[])
}

/// `start_sink` with extra sink flags.
fn start_sink_with(extra: &[&str]) -> (Reap, String) {
    let (sink, mut addrs) = start_sinks(1, extra);
    (sink, addrs.remove(0))
}

/// One sink listening on `n` addresses (127.0.0.1:0 each; one loop, rooms
/// shared by all its listeners, as a cluster's nodes share them), and the
/// addresses it bound, from its `n` "listening on ADDR" lines.
fn start_sinks(n: usize, extra: &[&str]) -> (Reap, Vec<String>) {
    let listen = vec!["127.0.0.1:0"; n].join(",");
    let mut child = Command::new(BIN)
        .args(["sink", "--listen", &listen, "--duration", "60", "--quiet"])
        .args(extra)
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
        let mut told = 0;
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                told += 1;
                if told == n {
                    break;
                }
            }
        }
        // Keep draining so the sink never blocks on a full pipe.
        for _ in lines {}
    });
    let addrs = (0..n)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("the sink did not say where it listens"))
        .collect();
    (sink, addrs)
}

/// Runs the tool with `args` and returns the last line of its stdout.
fn run_tool(args: &[&str], limit: Duration) -> String {
    let (ok, out, err) = run_tool_status(args, limit);
    assert!(ok, "roomcast-load {args:?} failed\n{err}");
    out.lines().last().unwrap_or_else(|| panic!("no output\n{err}")).to_string()
}

/// Runs the tool with `args` (it must exit within `limit`): success,
/// stdout, stderr.
fn run_tool_status(args: &[&str], limit: Duration) -> (bool, String, String) {
    run_tool_env(args, &[], limit)
}

/// `run_tool_status` with `env` set, and nothing else of this test's
/// environment that the tool reads (a ROOMCAST_JWT_SECRET there would
/// count as `--jwt-secret`).
fn run_tool_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("ROOMCAST_JWT_SECRET")
        .envs(env.iter().copied())
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
    (status.success(), out, err)
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
    // One --url: the summary has no per-target part.
    assert_eq!(v["url"], url.as_str(), "{v}");
    assert!(v.get("targets").is_none(), "{v}");
}

/// Several --urls (a comma list and a repeated flag): each room's
/// connections go round-robin to them, and every receiver on every target
/// counts in the deliveries and the latency histogram. The three listeners
/// of one sink share its rooms, as the nodes of a cluster do.
#[test]
fn fanout_over_several_urls_spreads_each_room_and_counts_every_member() {
    let (_sink, addrs) = start_sinks(3, &[]);
    let urls: Vec<String> = addrs.iter().map(|a| format!("ws://{a}")).collect();
    let first_two = format!("{},{}", urls[0], urls[1]);
    let out = std::env::temp_dir().join(format!("roomcast-load-e2e-{}-targets", std::process::id()));
    let out_dir = out.to_str().expect("a UTF-8 temp dir");
    let line = run_tool(
        &[
            "fanout",
            "--url",
            &first_two,
            "--url",
            &urls[2],
            "--dev",
            "--json",
            "--procs",
            "2",
            "--rooms",
            "2",
            "--members",
            "30",
            "--rate",
            "100",
            "--duration",
            "1",
            "--drain",
            "3",
            "--threads",
            "2",
            "--out",
            out_dir,
            "--name",
            "spread",
        ],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["url"], urls.join(",").as_str(), "{v}");
    assert_eq!(num(&v, "connected"), 62, "{v}");
    let sent = num(&v, "sent");
    assert!(sent >= 95, "{v}");
    // 30 members per room on 3 targets: every one of the 60 receives.
    assert_eq!(num(&v, "expected"), sent * 30, "{v}");
    assert_eq!(num(&v, "delivered"), sent * 30, "{v}");
    assert_eq!(num(&v, "lost") + num(&v, "duplicates") + num(&v, "out_of_order"), 0, "{v}");
    assert_eq!(v["latency_us"]["count"].as_u64(), Some(sent * 30), "{v}");
    let targets = v["targets"].as_array().unwrap_or_else(|| panic!("no targets in {v}"));
    assert_eq!(targets.len(), 3, "{v}");
    // Room r's slots 0..=30 (the publisher is slot 30) → (r + slot) mod 3:
    // room 0 puts 11, 10, 10 connections on targets 0, 1, 2, room 1 puts
    // 10, 11, 10; each room has 10 receivers on each target.
    for (i, (t, want)) in targets.iter().zip([21, 21, 20]).enumerate() {
        assert_eq!(t["url"], urls[i].as_str(), "{v}");
        assert_eq!(num(t, "connections"), want, "{v}");
        assert_eq!(num(t, "connected"), want, "{v}");
        assert_eq!(num(t, "failed"), 0, "{v}");
        assert_eq!(num(t, "delivered"), sent * 10, "{v}");
        assert_eq!(t["latency_us"]["count"].as_u64(), Some(sent * 10), "{v}");
        assert!(out.join(format!("spread-target{i}.hgrm")).is_file(), "{v}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_cross_shard_use_is_refused_by_name() {
    for args in [
        &["rtt", "--dev", "--cross-shard", "2", "--duration", "1"][..],
        &["fanout", "--proto", "raw", "--cross-shard", "2", "--duration", "1"][..],
        &["fanout", "--dev", "--cross-shard", "2", "--url", "ws://127.0.0.1:1,ws://127.0.0.1:2"][..],
    ] {
        let out =
            Command::new(BIN).args(args).env_remove("ROOMCAST_JWT_SECRET").output().expect("running roomcast-load");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--cross-shard"), "{args:?}: {err}");
    }
}

#[test]
fn bad_numbers_are_refused_by_flag_name() {
    for (args, flag) in [
        (&["fanout", "--dev", "--rate", "-5"][..], "--rate"),
        (&["fanout", "--dev", "--rate", "0"][..], "--rate"),
        (&["fanout", "--dev", "--members", "0"][..], "--members"),
        (&["fanout", "--dev", "--rooms", "0"][..], "--rooms"),
        (&["connect", "--dev", "--rooms", "-3"][..], "--rooms"),
        (&["fanout", "--dev", "--publishers", "-1"][..], "--publishers"),
        (&["fanout", "--dev", "--duration", "-1"][..], "--duration"),
        (&["churn", "--dev", "--churn-rate", "-2"][..], "--churn-rate"),
        (&["rtt", "--dev", "--size", "-64"][..], "--size"),
        (&["connect", "--dev", "--stalled", "2"][..], "--stalled"),
    ] {
        let out =
            Command::new(BIN).args(args).env_remove("ROOMCAST_JWT_SECRET").output().expect("running roomcast-load");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
    }
}

/// Nobody listens: every connection is refused, and the run says so at
/// once instead of waiting out its 60 s --duration.
#[test]
fn all_connections_refused_is_an_early_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
        l.local_addr().expect("probe address").port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let args = ["fanout", "--url", &url, "--dev", "--members", "5", "--duration", "60", "--source-ips", "none"];
    let (ok, _, err) = run_tool_status(&args, Duration::from_secs(30));
    assert!(!ok, "{err}");
    assert!(err.contains("no connection to") && err.contains("refused"), "{err}");
}

/// The sink closes the only publisher after 20 publishes: the rest of the
/// schedule is counted as unsent, and its deliveries as lost.
#[test]
fn a_dropped_publisher_is_counted_not_skipped() {
    let (_sink, addr) = start_sink_with(&["--close-after-publishes", "20"]);
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
            "5",
            "--publishers",
            "1",
            "--rate",
            "100",
            "--duration",
            "1",
            "--drain",
            "1",
        ],
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let (sent, unsent) = (num(&v, "sent"), num(&v, "unsent"));
    assert!(sent >= 20, "{v}");
    assert!(unsent > 0, "{v}");
    // 100/s for 1 s: every message was due, sent or not.
    assert!(sent + unsent >= 95, "{v}");
    assert_eq!(num(&v, "expected"), (sent + unsent) * 5, "{v}");
    // The sink relayed exactly the first 20 publishes.
    assert_eq!(num(&v, "delivered"), 20 * 5, "{v}");
    assert_eq!(num(&v, "lost"), num(&v, "expected") - 100, "{v}");
    assert_eq!(v["closed_by_server"]["close_1011"].as_u64(), Some(1), "{v}");
    assert_eq!(v["pass"], false, "{v}");
}

/// churn: the setup connections' handshakes and the arrivals' are two
/// figures, each counting only its own connections.
#[test]
fn churn_reports_arrivals_handshakes_apart() {
    let (_sink, addr) = start_sink();
    let url = format!("ws://{addr}");
    let line = run_tool(
        &[
            "churn",
            "--url",
            &url,
            "--dev",
            "--json",
            "--rooms",
            "2",
            "--members",
            "5",
            "--rate",
            "50",
            "--churn-rate",
            "50",
            "--churn-life-ms",
            "200",
            "--duration",
            "1",
            "--drain",
            "1",
        ],
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(num(&v, "connections"), 12, "{v}");
    assert_eq!(v["handshake_us"]["count"].as_u64(), Some(12), "{v}");
    let arrivals = v["churn_handshake_us"]["count"].as_u64().unwrap_or(0);
    assert!(arrivals >= 40 && arrivals <= num(&v, "churn_opened"), "{v}");
    assert_eq!(num(&v, "lost"), 0, "{v}");
}

/// Two processes split the rooms; the parent merges their counts exactly.
#[test]
fn two_processes_merge_exactly() {
    let (_sink, addr) = start_sink();
    let url = format!("ws://{addr}");
    let line = run_tool(
        &[
            "fanout",
            "--url",
            &url,
            "--dev",
            "--json",
            "--procs",
            "2",
            "--rooms",
            "2",
            "--members",
            "10",
            "--rate",
            "100",
            "--duration",
            "1",
            "--drain",
            "2",
        ],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(num(&v, "procs"), 2, "{v}");
    assert_eq!(num(&v, "connected"), 22, "{v}");
    let sent = num(&v, "sent");
    assert!(sent >= 95, "{v}");
    assert_eq!(num(&v, "expected"), sent * 10, "{v}");
    assert_eq!(num(&v, "delivered"), sent * 10, "{v}");
    assert_eq!(num(&v, "lost") + num(&v, "duplicates") + num(&v, "unsent"), 0, "{v}");
}

/// The secret the roomcast server of these tests is started with.
const SECRET: &str = "e2e-load-secret-0123456789abcdef0123";

/// The roomcast server binary, built next to this tool by `cargo test
/// --workspace` (cargo names only this crate's own binaries to its tests).
fn roomcast_bin() -> Option<PathBuf> {
    let bin = std::path::Path::new(BIN).parent()?.join("roomcast");
    bin.is_file().then_some(bin)
}

/// A started roomcast server, its address, and its data directory
/// (removed when the test ends).
struct Roomcast {
    _server: Reap,
    addr: String,
    data_dir: PathBuf,
}

impl Drop for Roomcast {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `roomcast serve` on 127.0.0.1:0 with [`SECRET`], one shard; `None`
/// (the test says so and passes) when the binary has not been built, as
/// under `cargo test -p roomcast-load` in a fresh checkout.
fn start_roomcast(test: &str) -> Option<Roomcast> {
    let Some(bin) = roomcast_bin() else {
        eprintln!("{test}: no roomcast binary next to {BIN}; `cargo test --workspace` builds it. Not run.");
        return None;
    };
    let data_dir = std::env::temp_dir().join(format!("roomcast-load-e2e-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&data_dir).expect("creating the server's data dir");
    let dir = data_dir.to_str().expect("a UTF-8 temp dir").to_string();
    let args = ["serve", "--listen", "127.0.0.1:0", "--shards", "1", "--no-pin", "--log-level", "info"];
    let mut child = Command::new(bin)
        .args(args)
        .args(["--jwt-secret", SECRET, "--data-dir", &dir])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning roomcast");
    let stderr = child.stderr.take().expect("piped");
    let server = Reap(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if line.contains("roomcast listening")
                && let Some(rest) = line.split(" addr=").nth(1)
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("roomcast did not say where it listens");
    Some(Roomcast { _server: server, addr, data_dir })
}

/// A `connect` run of three connections to `url` that should fail: its
/// stderr.
fn failed_connect(url: &str, secret_flags: &[&str]) -> String {
    let args =
        [&["connect", "--url", url, "--rooms", "1", "--members", "3", "--duration", "60"][..], secret_flags].concat();
    let (ok, _, err) = run_tool_status(&args, Duration::from_secs(30));
    assert!(!ok, "{err}");
    err
}

/// A token signed with another secret: the run stops at once and says
/// that the server refused the token and why, not "is the server running".
#[test]
fn a_wrong_secret_is_reported_as_a_refused_token() {
    let Some(server) = start_roomcast("wrong-secret") else { return };
    let err = failed_connect(&format!("ws://{}", server.addr), &["--jwt-secret", "not-the-servers-secret-0123456789"]);
    assert!(err.contains("no connection to") && err.contains("http_401"), "{err}");
    assert!(err.contains("refused the token"), "{err}");
    assert!(err.contains("HTTP 401 token_bad_signature: the token's signature is invalid"), "{err}");
    assert!(!err.contains("is the server running"), "{err}");
}

/// The same refusal from a stand-in that answers every upgrade as roomcast
/// answers a bad signature: the path from the response body to the error
/// is checked even where the roomcast binary has not been built.
#[test]
fn a_refused_handshake_reports_the_servers_reason() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the stand-in");
    let addr = listener.local_addr().expect("stand-in address");
    std::thread::spawn(move || {
        let body = r#"{"error":"token_bad_signature","message":"the token's signature is invalid"}"#;
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    let err = failed_connect(&format!("ws://{addr}"), &["--jwt-secret", "any", "--source-ips", "none"]);
    assert!(err.contains("refused the token"), "{err}");
    assert!(err.contains("HTTP 401 token_bad_signature: the token's signature is invalid (×3)"), "{err}");
    assert!(!err.contains("is the server running"), "{err}");
}

/// The secret from a file (with the newline `echo` adds) or from
/// ROOMCAST_JWT_SECRET signs tokens the server accepts.
#[test]
fn the_secret_from_a_file_or_the_environment_is_accepted() {
    let Some(server) = start_roomcast("secret-file") else { return };
    let url = format!("ws://{}", server.addr);
    let file = server.data_dir.join("load-secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("writing the secret file");
    let file = file.to_str().expect("a UTF-8 path");
    let connect = ["connect", "--url", &url, "--rooms", "1", "--members", "3", "--duration", "0.2", "--json"];
    for (flags, env) in [(&["--jwt-secret-file", file][..], &[][..]), (&[][..], &[("ROOMCAST_JWT_SECRET", SECRET)][..])]
    {
        let (ok, out, err) = run_tool_env(&[&connect[..], flags].concat(), env, Duration::from_secs(30));
        assert!(ok, "{flags:?} {env:?}: {err}");
        let line = out.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{err}"));
        assert_eq!(num(&v, "connected"), 3, "{flags:?} {env:?}: {v}");
    }
}
