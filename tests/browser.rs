//! The JavaScript side, run from `cargo test`: the TypeScript client's unit
//! tests (`clients/js/test`, Node's test runner against the committed
//! `dist/` build and a real server) and the meeting page in a real Chromium
//! (`tests/browser`, playwright-core driving Debian's `chromium`).
//!
//! Missing tools are installed when that is possible (Chromium with
//! apt-get when running as root, npm packages with `npm ci`); when they
//! cannot be, the test prints `SKIPPED browser test: <reason>` and returns,
//! so a skip is visible in the output and never counted as a browser run.
//! Screenshots of every step land in `target/browser-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to completion within `limit`, killing it past that.
fn run(mut command: Command, limit: Duration) -> Result<Output, String> {
    let name = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    let id = child.id();
    let deadline = Instant::now() + limit;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(output) => return output.map_err(|e| format!("{name}: {e}")),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
                return Err(format!("{name} did not finish within {limit:?}"));
            }
        }
    }
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    run(command(program, args), Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

/// Node 20.10 or later (for `--experimental-websocket`), or why not.
fn node_ready() -> Result<(), String> {
    let probe = command("node", &["--experimental-websocket", "-e", "console.log(typeof WebSocket)"]);
    let output = run(probe, Duration::from_secs(30)).map_err(|e| format!("node is not installed ({e})"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && stdout.trim() == "function" {
        Ok(())
    } else {
        Err(format!("node has no WebSocket even with --experimental-websocket (need Node 20.10+): {stdout}"))
    }
}

/// `npm ci` in `dir` when its `node_modules` lacks `package`.
fn npm_install(dir: &Path, package: &str) -> Result<(), String> {
    if dir.join("node_modules").join(package).exists() {
        return Ok(());
    }
    if !succeeds("npm", &["--version"]) {
        return Err("npm is not installed".into());
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let output = run(npm, Duration::from_secs(300))?;
    if !output.status.success() {
        return Err(format!("npm ci in {} failed: {}", dir.display(), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(())
}

/// Chromium at /usr/bin/chromium, installed with apt-get when missing and
/// running as root; or why not.
fn chromium_ready() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return if Path::new(&path).exists() {
            Ok(PathBuf::from(path))
        } else {
            Err(format!("CHROMIUM={path} does not exist"))
        };
    }
    if Path::new(CHROMIUM).exists() {
        return Ok(PathBuf::from(CHROMIUM));
    }
    let root_user = run(command("id", &["-u"]), Duration::from_secs(10))
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root_user || !succeeds("apt-get", &["--version"]) {
        return Err(format!("{CHROMIUM} is missing and cannot be installed here (needs root and apt-get)"));
    }
    eprintln!("installing chromium with apt-get (once)");
    let install = || {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "--no-install-recommends", "chromium"]).env("DEBIAN_FRONTEND", "noninteractive");
        run(apt, Duration::from_secs(900)).is_ok_and(|o| o.status.success())
    };
    if !install() {
        let _ = run(command("apt-get", &["update"]), Duration::from_secs(300));
        if !install() {
            return Err("apt-get install chromium failed".into());
        }
    }
    if Path::new(CHROMIUM).exists() { Ok(PathBuf::from(CHROMIUM)) } else { Err(format!("{CHROMIUM} still missing")) }
}

/// Runs `node --test` on `files` in `dir`, echoing its report; fails the test on a failure.
fn node_test(dir: &Path, node_flags: &[&str], files: &[&str], env: &[(&str, &Path)], limit: Duration) -> String {
    let mut node = Command::new("node");
    node.args(node_flags)
        .arg("--test")
        .args(files)
        .current_dir(dir)
        .env("ROOMCAST_BIN", env!("CARGO_BIN_EXE_roomcast"));
    for (key, value) in env {
        node.env(key, value);
    }
    let output = run(node, limit).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "node --test failed in {}: see the report above", dir.display());
    assert!(stdout.contains("# fail 0"), "node --test reported failures");
    stdout
}

#[test]
fn js_client_unit_tests() {
    if let Err(reason) = node_ready() {
        println!("SKIPPED js client test: {reason}");
        return;
    }
    let dir = root().join("clients/js");
    node_test(
        &dir,
        &["--experimental-websocket"],
        &["test/logic.test.mjs", "test/server.test.mjs"],
        &[],
        Duration::from_secs(120),
    );
}

#[test]
fn meeting_page_in_chromium() {
    let ready = node_ready().and_then(|()| chromium_ready()).and_then(|chromium| {
        npm_install(&root().join("tests/browser"), "playwright-core")?;
        Ok(chromium)
    });
    let chromium = match ready {
        Ok(path) => path,
        Err(reason) => {
            println!("SKIPPED browser test: {reason}");
            eprintln!("SKIPPED browser test: {reason}");
            return;
        }
    };
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let artifacts = target.join("browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let report = node_test(
        &root().join("tests/browser"),
        &[],
        &["meeting.test.mjs"],
        &[("CHROMIUM", &chromium), ("ROOMCAST_ARTIFACTS", &artifacts)],
        Duration::from_secs(300),
    );
    assert!(report.contains("# skipped 0"), "the browser test skipped itself:\n{report}");
    eprintln!("screenshots in {}", artifacts.display());
}
