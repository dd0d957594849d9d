//! The command line: config errors stop startup with the key named, and
//! `roomcast token` mints tokens the server accepts with the secret it
//! created in the data directory.

use std::process::Command;

use super::harness::{Client, Server};

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
