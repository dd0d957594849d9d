//! Python tools the tests run against the real server (kosoku for the
//! Autobahn cases, `prometheus-client`'s parser for `/metrics`), each in its
//! own venv under `target/`, made on the first run and reused while it holds
//! the pinned version; and [`run_bounded`], which runs such a tool with a
//! time limit. Needs `python3` with `venv`/`ensurepip` (Debian:
//! `python3-venv`) and PyPI access on the first run only.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on making a venv (a PyPI download on the first run).
const SETUP_LIMIT: Duration = Duration::from_secs(300);

/// The cargo target directory (`target/`), where the venvs live.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").to_path_buf()
}

/// Makes (or reuses) `target/{name}` with PyPI package `package` at
/// `version`, and returns the venv's directory. `module` is a module of the
/// package that must import for the venv to count as working. A lock file
/// serialises concurrent test runs sharing one target directory.
pub fn python_venv(name: &str, package: &str, version: &str, module: &str) -> PathBuf {
    let target = target_dir();
    let venv = target.join(name);
    let lock = File::create(target.join(format!("{name}.lock"))).expect("create venv lock file");
    lock.lock().expect("lock venv");
    let python = venv.join("bin").join("python");
    if installed_version(&python, package, module).as_deref() == Some(version) {
        return venv;
    }
    // Missing, broken (e.g. python3 upgraded underneath) or another version:
    // start over; `--clear` empties an existing directory.
    let mut make = Command::new("python3");
    make.args(["-m", "venv", "--clear"]).arg(&venv);
    let made = run_bounded(make, SETUP_LIMIT, "python3 -m venv");
    assert!(
        made.status.success(),
        "cannot make the venv {name}; python3 with the venv module (Debian/Ubuntu: apt-get install \
         python3-venv) is required; {}",
        made.describe()
    );
    let mut install = Command::new(&python);
    install
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"])
        .arg(format!("{package}=={version}"));
    let installed = run_bounded(install, SETUP_LIMIT, "pip install");
    assert!(installed.status.success(), "cannot install {package} from PyPI; {}", installed.describe());
    assert_eq!(
        installed_version(&python, package, module).as_deref(),
        Some(version),
        "{package} version in the new venv"
    );
    venv
}

/// The version of `package` installed for `python`, if it runs and `module` imports.
fn installed_version(python: &Path, package: &str, module: &str) -> Option<String> {
    let output = Command::new(python)
        .args(["-c", &format!("import {module}, importlib.metadata as m; print(m.version('{package}'))")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

pub struct Run {
    pub what: &'static str,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!("{} exited with {}\n--- stdout\n{}\n--- stderr\n{}", self.what, self.status, self.stdout, self.stderr)
    }
}

/// Runs `command` to completion, failing the test if it takes longer than
/// `limit` (the child is killed). Waits on the output pipes closing, never
/// on a sleep. Its standard input is `stdin` (empty when `None`).
pub fn run_bounded(command: Command, limit: Duration, what: &'static str) -> Run {
    run_bounded_with_input(command, None, limit, what)
}

/// [`run_bounded`], writing `stdin` to the child's standard input first.
pub fn run_bounded_with_input(mut command: Command, stdin: Option<&[u8]>, limit: Duration, what: &'static str) -> Run {
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"));
    let (done, finished) = channel();
    let stdout = Buffer::default();
    let stderr = Buffer::default();
    drain_pipe(child.stdout.take().expect("piped stdout"), Arc::clone(&stdout), done.clone());
    drain_pipe(child.stderr.take().expect("piped stderr"), Arc::clone(&stderr), done);
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // On a thread, so a child that stops reading cannot hold the test past its limit.
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut pipe, &input);
        });
    }
    let text = |buf: &Buffer| String::from_utf8_lossy(&buf.lock().expect("output buffer")).into_owned();
    let deadline = Instant::now() + limit;
    for _ in 0..2 {
        if finished.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; killed\n--- stdout\n{}\n--- stderr\n{}",
                text(&stdout),
                text(&stderr)
            );
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    Run { what, status, stdout: text(&stdout), stderr: text(&stderr) }
}

/// Output of a child process, shared with the thread that reads it.
type Buffer = Arc<Mutex<Vec<u8>>>;

/// Copies `pipe` into `sink` on a thread and says so on `done` at its end.
fn drain_pipe(mut pipe: impl Read + Send + 'static, sink: Buffer, done: Sender<()>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => sink.lock().expect("output buffer").extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}
