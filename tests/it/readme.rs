//! The README's tour, walked against the real binary, so that its commands
//! and sample frames cannot go stale.
//!
//! The README marks each step with an HTML comment before a fenced block:
//! `<!-- tour: serve -->` / `<!-- tour: shell -->` (shell commands),
//! `<!-- tour: connect NAME -->` (a WebSocket client opened as NAME),
//! `<!-- tour: NAME sends -->` and `<!-- tour: NAME receives -->` (JSON
//! frames, one a line). This test reads those blocks in order and does what
//! they say: it runs `roomcast serve` and `roomcast token` with the README's
//! arguments, in the directories the README `cd`s to, connects to the URLs it
//! shows, sends its frames verbatim, and compares every frame and HTTP answer
//! it shows with the real one by shape (`compare_shape`). A command the
//! interpreter below does not know fails the test, as does an unmarked
//! `json` block: every sample frame in the README is checked.
//!
//! Deviations from a user's run, on purpose: the server listens on
//! 127.0.0.1:0 instead of 8080 (tests run in parallel; URLs are rewritten to
//! the real address) and does not pin its shards (the box is shared); "a
//! fresh directory" is a temp dir; and where the README says Ctrl-C, the
//! test sends SIGINT, which is what Ctrl-C sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

use super::harness::{Client, Server, raw_http};

/// Keys whose values differ from run to run (or from box to box: `shard`
/// follows the core count). Their numbers may differ: a number for a
/// number, and a string whose digits may differ but nothing else
/// (`"srv-1.0.1-2"` for `"srv-3.1.7-9"`, never for `"m2"`). Everything else
/// must be equal. Keep this list short: each entry is a value the README
/// may show wrongly without the test noticing.
const VARYING: &[&str] = &["conn", "shard", "epoch", "id", "ts", "expires_at"];
/// Random strings (a signed token, a random hex id): only the type is compared.
const OPAQUE: &[&str] = &["token", "jti"];

/// Where the README's commands send their requests.
const README_ADDR: &str = "127.0.0.1:8080";

/// Compares a frame the README shows with a real one: the same keys at every
/// level, arrays of the same length, equal values except under `VARYING`
/// keys, where only the JSON type must match. The error names the path.
fn compare_shape(expected: &Value, actual: &Value) -> Result<(), String> {
    compare_at("$", expected, actual)
}

fn compare_at(path: &str, expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            let missing: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
            let stale: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
            if !missing.is_empty() || !stale.is_empty() {
                return Err(format!(
                    "{path}: the README lacks keys {missing:?} and shows keys the server no longer sends {stale:?}"
                ));
            }
            for (key, want_value) in want {
                let inner = format!("{path}.{key}");
                if OPAQUE.contains(&key.as_str()) || VARYING.contains(&key.as_str()) {
                    let same = match (want_value, &got[key]) {
                        (Value::String(want), Value::String(got)) if VARYING.contains(&key.as_str()) => {
                            without_digits(want) == without_digits(got)
                        }
                        (want, got) => json_type(want) == json_type(got),
                    };
                    if !same {
                        return Err(format!("{inner}: README shows {want_value}, the server sends {}", got[key]));
                    }
                } else {
                    compare_at(&inner, want_value, &got[key])?;
                }
            }
            Ok(())
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                return Err(format!("{path}: README shows {} items, the server sends {}", want.len(), got.len()));
            }
            want.iter().zip(got).enumerate().try_for_each(|(i, (w, g))| compare_at(&format!("{path}[{i}]"), w, g))
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: README shows {expected}, the server sends {actual}")),
    }
}

/// `"srv-1.0.12-2"` → `"srv-#.#.#-#"`: the form of a varying string.
fn without_digits(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One marked block of the README.
#[derive(Debug)]
struct Step {
    /// What the marker says: `serve`, `shell`, `connect alice`, `bob sends`, ….
    marker: String,
    /// The fence's language (`sh`, `json`).
    lang: String,
    body: Vec<String>,
    /// Line number of the marker, for failure messages.
    line: usize,
}

/// The marked blocks in order. Panics on an unmarked `json` block or a
/// marker not followed by a block.
fn tour_steps(readme: &str) -> Vec<Step> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut steps = Vec::new();
    let mut marker: Option<(String, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if let Some(rest) = line.strip_prefix("<!-- tour:") {
            let name = rest.strip_suffix("-->").unwrap_or_else(|| panic!("README:{}: unclosed marker", i + 1));
            assert!(marker.is_none(), "README:{}: two markers in a row", i + 1);
            marker = Some((name.trim().to_string(), i + 1));
        } else if let Some(lang) = line.strip_prefix("```") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "```" {
                end += 1;
            }
            let body: Vec<String> = lines[start..end].iter().map(|l| l.to_string()).collect();
            match marker.take() {
                Some((marker, line)) => steps.push(Step { marker, lang: lang.to_string(), body, line }),
                None => {
                    assert!(lang != "json", "README:{}: a json block without a tour marker is never checked", i + 1)
                }
            }
            i = end;
        } else if !line.is_empty() {
            assert!(marker.is_none(), "README:{}: a tour marker must be followed by its block", i + 1);
        }
        i += 1;
    }
    steps
}

/// The state of the walk: the temp dir standing for where the reader
/// starts, shell variables, the server and the open clients.
struct Tour {
    root: PathBuf,
    keep: Option<tempfile::TempDir>,
    vars: HashMap<String, String>,
    server: Option<Server>,
    clients: HashMap<String, Client>,
}

impl Tour {
    fn addr(&self, at: usize) -> SocketAddr {
        self.server.as_ref().unwrap_or_else(|| panic!("README:{at}: no server started before this step")).addr
    }

    fn run(&mut self, step: &Step) {
        let marker: Vec<&str> = step.marker.split_whitespace().collect();
        match marker.as_slice() {
            ["serve"] | ["shell"] => self.shell(step, None),
            ["connect", name] => self.shell(step, Some(name)),
            [name, "sends"] => {
                assert_eq!(step.lang, "json", "README:{}", step.line);
                let client = self.client(name, step.line);
                for frame in &step.body {
                    let parsed: Result<Value, _> = serde_json::from_str(frame);
                    assert!(parsed.is_ok(), "README:{}: not JSON: {frame}", step.line);
                    client.send_text(frame);
                }
            }
            [name, "receives"] => {
                assert_eq!(step.lang, "json", "README:{}", step.line);
                let expected: Vec<Value> = step
                    .body
                    .iter()
                    .map(|frame| {
                        serde_json::from_str(frame).unwrap_or_else(|e| panic!("README:{}: {e}: {frame}", step.line))
                    })
                    .collect();
                let client = self.client(name, step.line);
                let actual: Vec<Value> = expected.iter().map(|_| client.next_json()).collect();
                match_frames(&expected, &actual)
                    .unwrap_or_else(|e| panic!("README:{}: {name} receives: {e}", step.line));
            }
            _ => panic!("README:{}: unknown tour marker {:?}", step.line, step.marker),
        }
    }

    fn client(&mut self, name: &str, at: usize) -> &mut Client {
        self.clients.get_mut(name).unwrap_or_else(|| panic!("README:{at}: {name} never connected"))
    }

    /// Runs a shell block: each block starts where the reader started (a
    /// new terminal), as the README's `cd` lines assume.
    fn shell(&mut self, step: &Step, connect_as: Option<&str>) {
        assert_eq!(step.lang, "sh", "README:{}", step.line);
        let mut cwd = self.root.clone();
        let mut pending_answer: Option<(u16, String)> = None;
        for line in logical_lines(&step.body) {
            if let Some(comment) = line.strip_prefix('#') {
                // `# {…}`: the JSON answer of the command above it.
                let (status, body) = pending_answer.take().unwrap_or_else(|| {
                    panic!("README:{}: a comment that is not the answer of a curl: {line}", step.line)
                });
                assert_eq!(status, 200, "README:{}: {body}", step.line);
                let expected: Value = serde_json::from_str(comment.trim())
                    .unwrap_or_else(|e| panic!("README:{}: {e}: {comment}", step.line));
                let actual: Value =
                    serde_json::from_str(&body).unwrap_or_else(|e| panic!("README:{}: {e}: {body}", step.line));
                compare_shape(&expected, &actual).unwrap_or_else(|e| panic!("README:{}: answer: {e}", step.line));
                continue;
            }
            assert!(pending_answer.is_none(), "README:{}: a curl without its answer as `# {{…}}`", step.line);
            let words = split_words(&line, &self.vars);
            for command in words.split(|w| w == "&&") {
                pending_answer = self.command(step, &mut cwd, command, connect_as);
            }
        }
        assert!(pending_answer.is_none(), "README:{}: a curl without its answer as `# {{…}}`", step.line);
    }

    /// Runs one command; a curl gives back its answer.
    fn command(
        &mut self,
        step: &Step,
        cwd: &mut PathBuf,
        words: &[String],
        connect_as: Option<&str>,
    ) -> Option<(u16, String)> {
        let at = step.line;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        // Leading NAME=value words: variables, for the command or the shell.
        let assignments = words.iter().take_while(|w| is_assignment(w)).count();
        let (envs, words) = words.split_at(assignments);
        let envs: Vec<(String, String)> = envs
            .iter()
            .filter_map(|w| w.split_once('='))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        match words {
            [] => {
                // `NAME=$(roomcast token …)`: split_words marked the command substitution.
                for (name, value) in envs {
                    let value = match value.strip_prefix("\0$(") {
                        Some(inner) => self.capture(at, cwd, inner),
                        None => value,
                    };
                    self.vars.insert(name, value);
                }
                None
            }
            ["mkdir", dir] => {
                std::fs::create_dir_all(cwd.join(dir)).expect("mkdir");
                None
            }
            ["cd", dir] => {
                *cwd = cwd.join(dir);
                assert!(cwd.is_dir(), "README:{at}: cd {dir}: no such directory here");
                None
            }
            ["roomcast", "serve", args @ ..] => {
                assert!(self.server.is_none(), "README:{at}: a second server");
                let mut args: Vec<String> =
                    std::iter::once("serve").chain(args.iter().copied()).map(String::from).collect();
                // Port 0 instead of 8080, and no pinning on a shared box.
                args.extend(["--listen", "127.0.0.1:0", "--no-pin"].map(String::from));
                let keep = self.keep.take().expect("one server per tour");
                self.server = Some(Server::start_at(cwd, &envs, &args, keep));
                None
            }
            ["python3", "-m", "websockets", url] => {
                let name =
                    connect_as.unwrap_or_else(|| panic!("README:{at}: a connect outside a `connect NAME` block"));
                let url = url.replace(README_ADDR, &self.addr(at).to_string());
                let client = Client::connect(&url).unwrap_or_else(|e| panic!("README:{at}: {name} refused: {e:?}"));
                self.clients.insert(name.to_string(), client);
                None
            }
            ["curl", args @ ..] => Some(self.curl(at, args)),
            _ => panic!("README:{at}: the tour test does not know the command {words:?}"),
        }
    }

    /// `$(roomcast token …)`: runs it in `cwd` and gives back its output's
    /// last line, as the shell would (bar the trailing newline).
    fn capture(&self, at: usize, cwd: &Path, command: &str) -> String {
        let words = split_words(command, &self.vars);
        let args = match words.split_first() {
            Some((program, args)) if program == "roomcast" => args,
            _ => panic!("README:{at}: the tour test only runs roomcast in $(…): {command}"),
        };
        let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .output()
            .expect("run roomcast");
        assert!(out.status.success(), "README:{at}: {command}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().lines().last().unwrap_or_default().to_string()
    }

    /// `curl -s -X METHOD URL -H HEADER… -d BODY`, sent as curl sends it.
    fn curl(&self, at: usize, args: &[&str]) -> (u16, String) {
        let (mut method, mut url, mut headers, mut body) = ("GET", None, Vec::new(), None);
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match *arg {
                "-s" => {}
                "-X" => method = args.next().unwrap_or_else(|| panic!("README:{at}: -X without a method")),
                "-H" => headers.push(*args.next().unwrap_or_else(|| panic!("README:{at}: -H without a header"))),
                "-d" => body = Some(*args.next().unwrap_or_else(|| panic!("README:{at}: -d without a body"))),
                other if other.starts_with("http://") => url = Some(other),
                other => panic!("README:{at}: the tour test does not know curl's {other}"),
            }
        }
        let url = url.unwrap_or_else(|| panic!("README:{at}: curl without a URL"));
        let path = url
            .strip_prefix(&format!("http://{README_ADDR}"))
            .unwrap_or_else(|| panic!("README:{at}: curl to another server than the tour's: {url}"));
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {README_ADDR}\r\nConnection: close\r\n");
        for header in headers {
            request.push_str(&format!("{header}\r\n"));
        }
        if let Some(body) = body {
            // What `curl -d` adds.
            request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        } else {
            request.push_str("\r\n");
        }
        raw_http(self.addr(at), request.as_bytes())
    }
}

/// A shell block's lines with `\` continuations joined, blank lines dropped.
fn logical_lines(body: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in body {
        match line.trim_end().strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    lines.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    lines
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Splits a command line into words as sh does for what the README uses:
/// single quotes (literal), double quotes and bare words (with `$NAME` and
/// `${NAME}` expanded from `vars`), and `NAME=$(…)`, whose value comes back
/// as `\0$(` + the inner command, for the caller to run.
fn split_words(line: &str, vars: &HashMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                let mut quoted = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    quoted.push(c);
                }
                word.push_str(&expand(&quoted, vars));
            }
            '$' if chars.peek() == Some(&'(') => {
                chars.next();
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                    inner.push(c);
                }
                in_word = true;
                word.push_str("\0$(");
                word.push_str(&inner);
            }
            _ => {
                in_word = true;
                let mut bare = String::from(c);
                while let Some(&next) = chars.peek() {
                    if matches!(next, ' ' | '\t' | '\'' | '"') || (next == '$' && bare.ends_with('=')) {
                        break;
                    }
                    bare.push(next);
                    chars.next();
                }
                word.push_str(&expand(&bare, vars));
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `$NAME` and `${NAME}` replaced by their values; an unset one panics (a
/// README step that uses a variable no earlier step set).
fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or(braced.len());
                (&braced[..end], braced.get(end + 1..).unwrap_or(""))
            }
            None => {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                after.split_at(end)
            }
        };
        assert!(!name.is_empty(), "a lone $ in {text:?}");
        out.push_str(vars.get(name).unwrap_or_else(|| panic!("${name} is used before a step sets it")));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Each expected frame must match one received frame of the block. Order
/// within a block is not compared: the README lists what one connection
/// gets for one step, and some steps have parts from two shards (a join's
/// welcome comes from the room's owner, its ack from the joiner's shard).
fn match_frames(expected: &[Value], actual: &[Value]) -> Result<(), String> {
    let mut unused: Vec<&Value> = actual.iter().collect();
    for (i, want) in expected.iter().enumerate() {
        match unused.iter().position(|got| compare_shape(want, got).is_ok()) {
            Some(found) => {
                unused.remove(found);
            }
            None => {
                // The closest candidate: the received frame of the same type, else the one at this place.
                let same_type = actual.iter().find(|got| got["type"] == want["type"]).or(actual.get(i));
                let why = same_type.map_or_else(
                    || "nothing".to_string(),
                    |got| compare_shape(want, got).err().unwrap_or_default() + &format!("\n  received: {got}"),
                );
                return Err(format!("no received frame matches\n  README:   {want}\n  {why}"));
            }
        }
    }
    Ok(())
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md")
}

#[test]
fn the_readme_tour_works_as_written() {
    let readme = readme();
    let steps = tour_steps(&readme);
    assert!(steps.len() > 20, "the tour lost its markers: {steps:?}");
    let keep = tempfile::tempdir().expect("temp dir");
    let mut tour = Tour {
        root: keep.path().to_path_buf(),
        keep: Some(keep),
        vars: HashMap::new(),
        server: None,
        clients: HashMap::new(),
    };
    for step in &steps {
        tour.run(step);
    }
    // "Stop the server with Ctrl-C: every connection is closed with 1001".
    // Before its Close a connection may get the room's answer to others
    // closing first (the README says so); no other frame is unread here,
    // since every step above read all it showed.
    assert!(readme.contains("Ctrl-C (or SIGTERM): every connection is closed with\n1001"), "the README's stop step");
    let server = tour.server.take().expect("the tour starts a server");
    server.sigint();
    let mut names: Vec<String> = tour.clients.keys().cloned().collect();
    names.sort();
    for name in names {
        let client = tour.client(&name, 0);
        loop {
            match client.ws.read() {
                Ok(Message::Close(Some(CloseFrame { code, .. }))) => {
                    assert_eq!(u16::from(code), 1001, "{name}'s close code");
                    break;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Text(text)) if closing_event(&text) => {}
                Ok(other) => panic!("{name} got a frame the README does not show: {other:?}"),
                Err(e) => panic!("{name}'s connection ended without a Close: {e}"),
            }
        }
    }
    let status = server.wait();
    assert!(status.success(), "exit after Ctrl-C: {status:?}");
}

/// What a member still connected during the drain may get as the others
/// close: they leave, a new host is named, a sharer stops sharing.
fn closing_event(frame: &str) -> bool {
    let kind = serde_json::from_str::<Value>(frame).ok().and_then(|v| v["type"].as_str().map(str::to_string));
    matches!(kind.as_deref(), Some("member_left" | "role" | "screenshare" | "hands"))
}

#[test]
fn compare_shape_fails_on_a_stale_frame() {
    let now: Value = serde_json::from_str(
        r#"{"type":"welcome","conn":"0.0.1","room":"demo","shard":0,"user":"alice","role":"host","seq":0,"epoch":"1.0.1","member_count":1,"members":[{"conn":"0.1.2","user":"bob","role":"host"}],"history":[],"history_loading":true}"#,
    )
    .expect("json");
    // Values that vary from run to run may differ, at any depth.
    let other_run: Value = serde_json::from_str(
        r#"{"type":"welcome","conn":"1.0.7","room":"demo","shard":1,"user":"alice","role":"host","seq":0,"epoch":"3.1.9","member_count":1,"members":[{"conn":"1.1.8","user":"bob","role":"host"}],"history":[],"history_loading":true}"#,
    )
    .expect("json");
    assert_eq!(compare_shape(&now, &other_run), Ok(()));

    // The README's old welcome: no `epoch`, no `history_loading`.
    let stale: Value = serde_json::from_str(
        r#"{"type":"welcome","conn":"1.0.1","room":"demo","shard":1,"user":"alice","role":"host","seq":0,"member_count":1,"members":[{"conn":"0.1.2","user":"bob","role":"host"}],"history":[]}"#,
    )
    .expect("json");
    let error = compare_shape(&stale, &now).expect_err("a stale frame must fail");
    assert!(error.contains("epoch") && error.contains("history_loading"), "{error}");

    // A key the server no longer sends fails too, nested or not.
    let mut extra = now.clone();
    extra["members"][0]["name"] = Value::from("Bob");
    assert!(compare_shape(&extra, &now).is_err());
    // A stable value that differs fails, however deep.
    let mut wrong = now.clone();
    wrong["members"][0]["role"] = Value::from("participant");
    assert!(compare_shape(&wrong, &now).expect_err("role").contains("$.members[0].role"));
    // A varying key keeps its type.
    let mut retyped = now.clone();
    retyped["epoch"] = Value::from(101);
    assert!(compare_shape(&retyped, &now).is_err());
    // Arrays keep their length.
    let mut shorter = now.clone();
    shorter["members"] = Value::Array(vec![]);
    assert!(compare_shape(&shorter, &now).is_err());
    // Ids vary in their numbers, not in their form: the README's old chat id fails.
    let chat_now: Value = serde_json::from_str(r#"{"type":"chat","id":"srv-1.1.7-1","ts":1,"seq":2}"#).expect("json");
    let chat_other_run: Value =
        serde_json::from_str(r#"{"type":"chat","id":"srv-2.0.13-5","ts":17,"seq":2}"#).expect("json");
    assert_eq!(compare_shape(&chat_other_run, &chat_now), Ok(()));
    let chat_old: Value = serde_json::from_str(r#"{"type":"chat","id":"m2","ts":5,"seq":2}"#).expect("json");
    assert!(compare_shape(&chat_old, &chat_now).expect_err("old id").contains("$.id"));
    // Tokens and jtis are random: any string.
    let minted: Value = serde_json::from_str(r#"{"token":"eyJ.a.b","jti":"ab12"}"#).expect("json");
    let other: Value = serde_json::from_str(r#"{"token":"eyJ.c2.d","jti":"9f"}"#).expect("json");
    assert_eq!(compare_shape(&minted, &other), Ok(()));
}

#[test]
fn the_tour_reader_finds_commands_and_frames() {
    let vars: HashMap<String, String> = [("ALICE".to_string(), "t0k".to_string())].into();
    assert_eq!(
        split_words(r#"python3 -m websockets "ws://h/ws/demo?token=$ALICE""#, &vars),
        ["python3", "-m", "websockets", "ws://h/ws/demo?token=t0k"]
    );
    assert_eq!(split_words("B=$(roomcast token --sub bob)", &vars), ["B=\0$(roomcast token --sub bob"]);
    assert_eq!(
        split_words(r#"curl -d '{"a":"$X"}' -H "K: ${ALICE}""#, &vars),
        ["curl", "-d", r#"{"a":"$X"}"#, "-H", "K: t0k"]
    );
    assert_eq!(logical_lines(&["a \\".to_string(), "  b".to_string(), String::new()]), ["a   b"]);

    let steps = tour_steps("x\n<!-- tour: bob sends -->\n```json\n{}\n```\n```sh\nls\n```\n");
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0].marker.as_str(), steps[0].body.as_slice()), ("bob sends", ["{}".to_string()].as_slice()));
    let unmarked = std::panic::catch_unwind(|| tour_steps("```json\n{}\n```\n"));
    assert!(unmarked.is_err(), "an unmarked json block must fail the tour");
    assert!(
        match_frames(
            &[serde_json::json!({"type":"ack"}), serde_json::json!({"type":"welcome"})],
            &[serde_json::json!({"type":"welcome"}), serde_json::json!({"type":"ack"})],
        )
        .is_ok()
    );
}
