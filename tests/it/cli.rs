//! The command line: config errors stop startup with the key named, and
//! `roomcast token` mints tokens the server accepts with the secret it
//! created in the data directory (and never makes one up itself); what
//! the server logs about its secret and its connections, as text or JSON.

use std::process::{Child, Command};
use std::sync::mpsc::Receiver;

use super::harness::{Client, PATIENCE, Server, spawn_logged};

fn roomcast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_roomcast")).args(args).env_clear().output().expect("run roomcast")
}

#[test]
fn unknown_or_invalid_config_stops_startup_naming_the_key() {
    let out = roomcast(&["serve", "--listen", "127.0.0.1:0", "--set", "limits.no_such_key=1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.no_such_key"), "{out:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("roomcast.toml");
    std::fs::write(&file, "[limits]\nping_interval_ms = \"often\"\n").expect("write config");
    let out = roomcast(&["serve", "--listen", "127.0.0.1:0", "--config", file.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.ping_interval_ms"), "{out:?}");

    let out = roomcast(&["serve", "--listen", "0.0.0.0:0", "--auth-mode", "none"]);
    assert!(!out.status.success(), "dev mode on a public address must not start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{out:?}");

    let out = roomcast(&["serve", "--listen", "127.0.0.1:0", "--jwt-secret", "short"]);
    assert!(!out.status.success(), "a short HS secret must not start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt_secret"), "{out:?}");
}

/// `roomcast serve` on an ephemeral port with a fresh data dir, `env` set;
/// the process must fail at startup, naming `key` on stderr.
fn assert_startup_error_names(args: &[&str], env: &[(&str, &str)], key: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("path");
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-pin", "--data-dir", data])
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run roomcast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} {env:?} started: {stderr}");
    assert!(stderr.contains(key), "{args:?} {env:?}: the error does not name {key}: {stderr}");
    assert!(!stderr.contains("roomcast listening"), "{stderr}");
    // Refused before anything was created: no generated secret to fall back on.
    assert!(!dir.path().join("jwt-secret").exists(), "{args:?} {env:?} generated a secret");
}

#[test]
fn an_empty_jwt_secret_given_explicitly_stops_startup() {
    assert_startup_error_names(&["--jwt-secret", ""], &[], "auth.jwt_secret");
    assert_startup_error_names(&[], &[("ROOMCAST_JWT_SECRET", "")], "auth.jwt_secret");
    assert_startup_error_names(&[], &[("ROOMCAST_AUTH_JWT_SECRET", "")], "auth.jwt_secret");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("roomcast.toml");
    std::fs::write(&file, "[auth]\njwt_secret = \"\"\n").expect("write config");
    assert_startup_error_names(&["--config", file.to_str().expect("path")], &[], "auth.jwt_secret");
}

#[test]
fn an_invalid_log_level_stops_startup() {
    assert_startup_error_names(&["--log-level", "verbose"], &[], "log_level");
    assert_startup_error_names(&[], &[("ROOMCAST_LOG_LEVEL", "roomcast=loud")], "log_level");
}

#[test]
fn serve_help_documents_every_key() {
    let out = roomcast(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for key in
        ["message_inbound_bytes_max", "outbound_queue_bytes_max", "ping_interval_ms", "allow_origins", "echo_listen"]
    {
        assert!(help.contains(key), "--help lacks {key}");
    }
}

#[test]
fn token_uses_the_secret_serve_created_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("path").to_string();
    // No secret configured: serve creates <data_dir>/jwt-secret (mode 0600).
    let server = Server::start_raw(&["serve", "--listen", "127.0.0.1:0", "--no-pin", "--data-dir", &data]);
    let secret_file = dir.path().join("jwt-secret");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret_file).expect("secret file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = roomcast(&["token", "--data-dir", &data, "--sub", "alice", "--room", "demo", "--name", "Alice"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().expect("a token line").trim();
    let mut client = Client::connect(&server.url("demo", &format!("token={token}"))).expect("token accepted");
    let welcome = client.next_of_type("welcome");
    assert_eq!(welcome["user"], "alice");
    match Client::connect(&server.url("elsewhere", &format!("token={token}"))) {
        Err(super::harness::Refused::Status(403, _)) => {}
        other => panic!("a --room demo token must not enter another room: {:?}", other.map(|_| "accepted")),
    }
    drop(server);
}

/// The cores this test process may run on.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that sched_getaffinity fills in.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).filter(|&core| libc::CPU_ISSET(core, &set)).collect()
    }
}

#[test]
fn pin_puts_shards_on_the_cores_of_the_process_affinity_mask() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;

    // The last core we may use: on a machine with more than one, not core 0,
    // which is where shard i would land if the mask were ignored.
    let core = *allowed_cores().last().expect("some core");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2", "--pin", "--log-level", "info"])
        .args(["--jwt-secret", super::harness::SECRET, "--data-dir", dir.path().to_str().expect("path")])
        .env_clear()
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec this only calls sched_setaffinity on the
    // child itself, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            match libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut child = command.spawn().expect("start roomcast");
    let stderr = child.stderr.take().expect("piped stderr");
    // Both shards log where they went, before or after "listening": read until both did.
    let pinned: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("shard pinned to core") || line.contains("shard not pinned"))
        .take(2)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    for line in &pinned {
        assert!(line.contains("shard pinned to core") && line.contains(&format!("core={core}")), "{line}");
    }
}

#[test]
fn token_never_creates_a_secret_and_says_where_it_looked() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["token", "--sub", "alice"])
        .current_dir(cwd.path())
        .env_clear()
        .output()
        .expect("run roomcast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no token is printed: {out:?}");
    let looked = cwd.path().canonicalize().expect("cwd").join("roomcast-data").join("jwt-secret");
    assert!(stderr.contains(&looked.display().to_string()), "names the absolute path it read: {stderr}");
    for how in ["--data-dir", "--config", "ROOMCAST_DATA_DIR", "--secret"] {
        assert!(stderr.contains(how), "says how to point it at the server's secret ({how}): {stderr}");
    }
    assert!(!cwd.path().join("roomcast-data").exists(), "token created the data directory");
}

/// `roomcast serve` run directly, its stderr lines kept: for tests that
/// read what the server logs before and after "roomcast listening".
struct LoggingServer {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl LoggingServer {
    fn start(args: &[&str]) -> LoggingServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--no-pin", "--shards", "1"]).args(args).env_clear();
        let (child, lines) = spawn_logged(command);
        LoggingServer { child, lines, seen: Vec::new() }
    }

    /// Blocks until a line containing `needle` is logged; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("never logged {needle:?}; logged: {:#?}", self.seen),
            }
        }
    }
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `addr=…` of a text log line.
fn text_field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key}= in {line:?}")) + key.len() + 1;
    line[start..].split_whitespace().next().unwrap_or_default()
}

#[test]
fn the_server_logs_its_secret_and_a_foreign_token_is_told_where_it_lives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("path").to_string();
    let secret_file = dir.path().canonicalize().expect("dir").join("jwt-secret").display().to_string();

    let mut server = LoggingServer::start(&["--data-dir", &data]);
    let logged = server.wait_for("jwt secret");
    assert!(logged.contains(&secret_file) && logged.contains("created"), "{logged}");
    let listening = server.wait_for("roomcast listening");
    assert!(listening.contains("auth=jwt") || listening.contains("auth=\"jwt\""), "the config's spelling: {listening}");
    let addr = text_field(&listening, "addr").to_string();

    // A token signed with any other secret: the 401 says why, and where the server's secret is.
    let request = roomcast::token::MintRequest { sub: "a", ttl_s: 60, ..Default::default() };
    let now = super::harness::unix_now();
    let foreign = roomcast::token::mint_hs256(b"a-secret-made-up-in-another-directory!!", &request, now).expect("mint");
    match Client::connect(&format!("ws://{addr}/ws/demo?token={foreign}")) {
        Err(super::harness::Refused::Status(401, body)) => {
            assert!(body.contains("token_bad_signature"), "{body}");
            assert!(body.contains("another key") && body.contains(&secret_file), "{body}");
            let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).expect("secret");
            assert!(!body.contains(secret.trim()), "the secret itself is never sent");
        }
        other => panic!("expected 401: {:?}", other.map(|_| "accepted")),
    }
    drop(server);

    // Started again: the same secret, read this time.
    let mut server = LoggingServer::start(&["--data-dir", &data]);
    let logged = server.wait_for("jwt secret");
    assert!(logged.contains(&secret_file) && logged.contains("read"), "{logged}");
}

#[test]
fn a_missing_config_file_is_named_once_with_the_os_error_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    let path = missing.to_str().expect("path");
    let out = roomcast(&["serve", "--listen", "127.0.0.1:0", "--config", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.matches(path).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
}

#[test]
fn the_defaults_serve_help_prints_paste_into_a_config_file_that_starts() {
    let out = roomcast(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = help.find("# roomcast configuration").expect("the key section in --help");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pasted.toml");
    std::fs::write(&file, &help[start..]).expect("write config");
    let data = dir.path().join("data");
    let mut server =
        LoggingServer::start(&["--config", file.to_str().expect("path"), "--data-dir", data.to_str().expect("path")]);
    server.wait_for("roomcast listening");
}

/// The JSON log line whose `fields.message` is `message`.
fn wait_for_json(server: &mut LoggingServer, message: &str) -> serde_json::Value {
    loop {
        let line = server.wait_for(message);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if value["fields"]["message"] == message {
            return value;
        }
    }
}

#[test]
fn with_log_format_json_connections_open_and_close_at_info_with_who_and_where() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("path");
    let mut server =
        LoggingServer::start(&["--log-format", "json", "--jwt-secret", super::harness::SECRET, "--data-dir", data]);
    let listening = wait_for_json(&mut server, "roomcast listening");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["auth"], "jwt");
    let addr = listening["fields"]["addr"].as_str().expect("addr").to_string();

    let claims = super::harness::Claims { sub: "alice", tenant: Some("acme"), ..Default::default() };
    let token = super::harness::token(&claims);
    let mut client = Client::connect(&format!("ws://{addr}/ws/demo?token={token}")).expect("handshake");
    client.next_of_type("welcome");
    let local = client.ws.get_ref().local_addr().expect("local addr").to_string();

    let opened = wait_for_json(&mut server, "connection opened");
    assert_eq!(opened["level"], "INFO");
    let fields = &opened["fields"];
    assert_eq!(
        (&fields["user"], &fields["tenant"], &fields["room"]),
        (&"alice".into(), &"acme".into(), &"demo".into())
    );
    assert_eq!(fields["peer"], local.as_str());
    let conn = fields["conn"].as_str().expect("conn").to_string();

    client.ws.close(None).expect("close");
    while client.ws.read().is_ok() {}
    let closed = wait_for_json(&mut server, "connection closed");
    let fields = &closed["fields"];
    assert_eq!(closed["level"], "INFO");
    assert_eq!(fields["conn"], conn.as_str());
    assert_eq!(
        (&fields["user"], &fields["tenant"], &fields["room"]),
        (&"alice".into(), &"acme".into(), &"demo".into())
    );
    // The peer address is on the open line only: `conn` ties the two.
    assert!(fields.get("peer").is_none(), "{closed}");
    // A Close without a code is answered 1000, the code logged.
    assert_eq!(fields["close_code"], 1000, "{closed}");
    assert!(fields["reason"].is_string() && fields["by"] == "peer", "{closed}");
    assert!(fields["duration_ms"].is_u64(), "{closed}");
}

#[test]
fn connection_lines_past_the_limit_are_summed_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("path");
    let mut server = LoggingServer::start(&[
        "--jwt-secret",
        super::harness::SECRET,
        "--data-dir",
        data,
        "--set",
        "log.connection_lines_per_s=1",
    ]);
    let addr = text_field(&server.wait_for("roomcast listening"), "addr").to_string();
    let token = super::harness::token(&super::harness::Claims { sub: "bob", ..Default::default() });
    let clients: Vec<Client> = (0..4)
        .map(|_| {
            let mut client = Client::connect(&format!("ws://{addr}/ws/demo?token={token}")).expect("handshake");
            client.next_of_type("welcome");
            client
        })
        .collect();
    let summary = server.wait_for("connection lines suppressed");
    assert!(summary.contains("suppressed="), "{summary}");
    let opened = server.seen.iter().filter(|line| line.contains("connection opened")).count();
    assert!(opened >= 1, "{:#?}", server.seen);
    drop(clients);
}
