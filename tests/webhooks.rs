//! Webhooks over real sockets: a local HTTP receiver started by each test
//! (a std `TcpListener` thread) gets the signed batches the `webhooks`
//! thread posts; the tests check the signature, batching, retries with
//! backoff, counted drops when the receiver is silent, and the close code
//! and reason of a disconnect event. The last test starts a whole server
//! with `[[webhooks]]` in its config file and reads the families on `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use roomcast::__private::webhooks::{WebhookDetail, WebhookEvent, Webhooks, sign};
use roomcast::config::{Config, Sources, WebhookConfig, WebhookEventKind, WebhookLimits, WebhookTarget};

const SECRET: &str = "a-webhook-secret-of-32-bytes-xyz";

/// One POST as the receiver saw it.
#[derive(Debug)]
struct Request {
    path: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.json()["events"].as_array().cloned().expect("events is a list")
    }
}

/// A receiver answering its n-th request with `statuses[n]` (200 after the list).
fn receiver(statuses: Vec<u16>) -> (SocketAddr, Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else { continue };
            let status = statuses.get(n).copied().unwrap_or(200);
            let mut stream = stream;
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send(request).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split(' ').nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers.iter().find(|(n, _)| n == "content-length")?.1.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { path, headers, body })
}

fn limits() -> WebhookLimits {
    WebhookLimits {
        queue_max: 64,
        batch_max: 10,
        linger_ms: 50,
        retries_max: 5,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        timeout_ms: 2000,
        body_bytes_max: 65536,
    }
}

fn webhook(addr: SocketAddr, events: &[WebhookEventKind]) -> WebhookConfig {
    let url = format!("http://{addr}/hooks?from=roomcast");
    WebhookConfig {
        target: WebhookTarget::parse(&url).expect("url"),
        url,
        events: events.to_vec(),
        secret: SECRET.into(),
        timeout_ms: 2000,
    }
}

fn event(user: &str, detail: WebhookDetail) -> WebhookEvent {
    WebhookEvent {
        ts_ms: 1_700_000_000_000,
        conn: "0:7".into(),
        user: user.into(),
        tenant: Some("acme".into()),
        room: Some("lobby".into()),
        detail,
    }
}

fn recv(rx: &Receiver<Request>) -> Request {
    rx.recv_timeout(Duration::from_secs(10)).expect("the receiver got a POST")
}

/// Waits until `check` holds (the thread counts after the receiver answers).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_batch_arrives_signed_in_order_and_a_disconnect_carries_its_close_code_and_reason() {
    let (addr, rx) = receiver(vec![]);
    let all = WebhookEventKind::ALL;
    let webhooks = Webhooks::start(&[webhook(addr, &all)], &limits()).expect("start").expect("running");
    let handle = webhooks.handle();
    let peer: SocketAddr = "203.0.113.9:5555".parse().expect("addr");
    handle.notify(event("ann", WebhookDetail::Connect { peer: Some(peer) }));
    handle.notify(event("ann", WebhookDetail::Join));
    handle.notify(event("ann", WebhookDetail::Chat { chat_id: "c1".into(), text: "hello \"all\"".into() }));
    handle.notify(event("ann", WebhookDetail::Leave));
    handle.notify(event("ann", WebhookDetail::Disconnect { close_code: 4001, close_reason: "kicked".into() }));

    let mut events = Vec::new();
    while events.len() < 5 {
        let request = recv(&rx);
        assert_eq!(request.path, "/hooks?from=roomcast");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let signature = request.header("x-roomcast-signature").expect("signed");
        assert!(sign::verify(SECRET.as_bytes(), &request.body, signature), "the signature verifies");
        assert!(!sign::verify(b"another-secret-of-16+", &request.body, signature));
        let json = request.json();
        assert_eq!(request.header("x-roomcast-timestamp"), Some(json["sent_at_ms"].to_string().as_str()));
        events.extend(request.events());
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(types, ["connect", "join", "chat", "leave", "disconnect"]);
    assert_eq!(events[0]["peer"], "203.0.113.9:5555");
    assert_eq!(events[2]["text"], "hello \"all\"");
    assert_eq!(events[2]["chat_id"], "c1");
    assert_eq!(events[4]["close_code"], 4001);
    assert_eq!(events[4]["close_reason"], "kicked");
    for e in &events {
        assert_eq!(
            (&e["user"], &e["tenant"], &e["room"], &e["conn"]),
            (&"ann".into(), &"acme".into(), &"lobby".into(), &"0:7".into())
        );
    }
    let ids: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 5, "every event has its own id");

    let monitor = webhooks.monitor();
    eventually("the sent counters", || monitor.snapshot().events_sent == 5);
    drop(handle);
    webhooks.stop();
}

#[test]
fn only_the_subscribed_kinds_are_posted_and_each_endpoint_gets_its_own_signature() {
    let (chat_addr, chat_rx) = receiver(vec![]);
    let (presence_addr, presence_rx) = receiver(vec![]);
    let mut presence = webhook(presence_addr, &[WebhookEventKind::Connect, WebhookEventKind::Disconnect]);
    presence.secret = "presence-secret-0123456789".into();
    let configs = [webhook(chat_addr, &[WebhookEventKind::Chat]), presence];
    let webhooks = Webhooks::start(&configs, &limits()).expect("start").expect("running");
    let handle = webhooks.handle();
    assert!(!handle.wants(WebhookEventKind::Join));
    handle.notify(event("bob", WebhookDetail::Join));
    handle.notify(event("bob", WebhookDetail::Connect { peer: None }));
    handle.notify(event("bob", WebhookDetail::Chat { chat_id: "c9".into(), text: "hi".into() }));

    let chat = recv(&chat_rx);
    assert!(sign::verify(SECRET.as_bytes(), &chat.body, chat.header("x-roomcast-signature").unwrap_or("")));
    let types: Vec<String> = chat.events().iter().map(|e| e["type"].to_string()).collect();
    assert_eq!(types, ["\"chat\""]);
    let connect = recv(&presence_rx);
    let signature = connect.header("x-roomcast-signature").unwrap_or("");
    assert!(sign::verify(b"presence-secret-0123456789", &connect.body, signature));
    assert_eq!(connect.events().len(), 1);
    assert_eq!(connect.events()[0]["type"], "connect");
    assert!(connect.events()[0].get("peer").is_none(), "no peer, no field");
    drop(handle);
    webhooks.stop();
}

#[test]
fn a_batch_answered_500_twice_is_retried_with_backoff_and_arrives_once() {
    let (addr, rx) = receiver(vec![500, 500, 200]);
    let webhooks = Webhooks::start(&[webhook(addr, &WebhookEventKind::ALL)], &limits()).expect("start").expect("on");
    let handle = webhooks.handle();
    let started = Instant::now();
    handle.notify(event("cy", WebhookDetail::Join));
    handle.notify(event("cy", WebhookDetail::Leave));

    let attempts: Vec<Request> = (0..3).map(|_| recv(&rx)).collect();
    // Two backoffs of at least half of 20 and 40 ms, after the linger.
    assert!(started.elapsed() >= Duration::from_millis(30), "{:?}", started.elapsed());
    let numbers: Vec<&str> = attempts.iter().filter_map(|r| r.header("x-roomcast-attempt")).collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    let ids: Vec<Vec<serde_json::Value>> =
        attempts.iter().map(|r| r.events().iter().map(|e| e["id"].clone()).collect()).collect();
    assert_eq!(ids[0].len(), 2);
    assert!(ids.iter().all(|batch| batch == &ids[0]), "every attempt carries the same events: {ids:?}");

    let monitor = webhooks.monitor();
    eventually("the success to be counted", || monitor.snapshot().batches_sent == 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "a delivered batch is not sent again");
    let stats = monitor.snapshot();
    assert_eq!((stats.attempts_failed, stats.events_sent, stats.batches_dropped), (2, 2, 0));
    drop(handle);
    webhooks.stop();
}

#[test]
fn a_silent_receiver_fills_the_queue_and_the_drops_are_counted() {
    // Bound but never accepting: connects succeed (the backlog), answers never come.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut config = webhook(addr, &WebhookEventKind::ALL);
    config.timeout_ms = 100;
    let limits = WebhookLimits { queue_max: 4, batch_max: 2, retries_max: 1, ..limits() };
    let webhooks = Webhooks::start(&[config], &limits).expect("start").expect("running");
    let handle = webhooks.handle();
    let monitor = webhooks.monitor();
    let started = Instant::now();
    for i in 0..200 {
        handle.notify(event(&format!("u{i}"), WebhookDetail::Join));
    }
    assert!(started.elapsed() < Duration::from_millis(100), "notify never blocks: {:?}", started.elapsed());
    let stats = monitor.snapshot();
    assert!(stats.events_dropped_queue_full > 0, "{stats:?}");
    assert!(stats.queue_depth <= 4 + 4 + 2, "bounded: {stats:?}");

    eventually("a batch dropped after its retries", || monitor.snapshot().batches_dropped >= 1);
    let stats = monitor.snapshot();
    assert!(stats.attempts_failed >= 2, "{stats:?}");
    assert_eq!(stats.events_sent, 0);
    assert!(stats.events_dropped_retries >= 1);
    let accounted = stats.events_dropped_queue_full + stats.events_dropped_retries + stats.queue_depth;
    assert!(accounted <= 200, "{stats:?}");

    // Stopping gives what is held one attempt (it fails fast) and counts the rest.
    drop(handle);
    let stopping = Instant::now();
    webhooks.stop();
    assert!(stopping.elapsed() < Duration::from_secs(3), "{:?}", stopping.elapsed());
    let stats = monitor.snapshot();
    assert_eq!(stats.queue_depth, 0, "{stats:?}");
    assert_eq!(
        stats.events_dropped_queue_full
            + stats.events_dropped_retries
            + stats.events_dropped_shutdown
            + stats.events_sent,
        200,
        "every event is sent or counted as dropped: {stats:?}"
    );
    drop(silent);
}

#[test]
fn the_server_starts_with_webhooks_in_its_config_file_and_shows_their_metrics() {
    let (addr, _rx) = receiver(vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("roomcast.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nshards = 1\npin = false\ndata_dir = {dir:?}\n\n\
         [[webhooks]]\nurl = \"http://{addr}/hooks\"\nevents = [\"connect\", \"disconnect\"]\nsecret = \"{SECRET}\"\n\n\
         [webhook_limits]\nqueue_max = 128\n\n[store]\nenabled = false\n\n[auth]\nmode = \"none\"\n",
        dir = dir.path().display().to_string(),
    );
    std::fs::write(&file, text).expect("write config");
    let config = Config::load(Sources { file: Some(file), ..Sources::default() }).expect("config loads");
    assert_eq!(config.webhooks.len(), 1);
    let server = roomcast::Server::builder().config(config).start().expect("server starts");
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("\n# TYPE roomcast_webhook_events_dropped_total counter\n"), "{page}");
    assert!(page.contains("\nroomcast_webhook_queue_max 128\n"), "{page}");
    assert!(page.contains("\nroomcast_webhook_events_dropped_total{reason=\"queue_full\"} 0\n"), "{page}");
    server.shutdown_within(Duration::from_millis(500));
}

#[test]
fn bad_webhook_config_stops_startup_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (entry, key, words) in [
        (
            "url = \"https://hooks.example/x\"\nevents = [\"chat\"]\nsecret = \"0123456789abcdef\"",
            "webhooks[0].url",
            "https",
        ),
        ("url = \"not a url\"\nevents = [\"chat\"]\nsecret = \"0123456789abcdef\"", "webhooks[0].url", "http://"),
        (
            "url = \"http://h/\"\nevents = [\"chat\", \"typing\"]\nsecret = \"0123456789abcdef\"",
            "webhooks[0].events",
            "typing",
        ),
        ("url = \"http://h/\"\nevents = [\"chat\"]\nsecret = \"short\"", "webhooks[0].secret", "16"),
        (
            "url = \"http://h/\"\nevents = [\"chat\"]\nsecret = \"0123456789abcdef\"\ntimeout_ms = 0",
            "webhooks[0].timeout_ms",
            "from 1",
        ),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, format!("[[webhooks]]\n{entry}\n")).expect("write");
        let err = Config::load(Sources { file: Some(file), ..Sources::default() }).expect_err(key);
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains(words), "`{err}` should mention {words}");
    }
    let env = vec![("ROOMCAST_WEBHOOK_LIMITS_BATCH_MAX".to_string(), "0".to_string())];
    let err = Config::load(Sources { env, ..Sources::default() }).expect_err("batch_max 0");
    assert_eq!(err.key(), Some("webhook_limits.batch_max"), "{err}");
    let env = vec![("ROOMCAST_WEBHOOKS".to_string(), "http://h/".to_string())];
    let err = Config::load(Sources { env, ..Sources::default() }).expect_err("a URL alone");
    assert!(err.to_string().contains("[[webhooks]]"), "{err}");
}

/// The whole path: a server built from a config file with `[[webhooks]]`, a
/// real WebSocket client that connects, joins a room, chats, leaves and
/// closes; the receiver gets each of those events, signed, with the close
/// code of the client's Close.
#[test]
fn a_real_client_session_reaches_the_receiver_as_signed_events() {
    let (addr, rx) = receiver(vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("roomcast.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nshards = 2\npin = false\ndata_dir = {dir:?}\n\n\
         [[webhooks]]\nurl = \"http://{addr}/hooks\"\n\
         events = [\"connect\", \"join\", \"chat\", \"leave\", \"disconnect\"]\nsecret = \"{SECRET}\"\n\n\
         [webhook_limits]\nlinger_ms = 5\n\n[auth]\nmode = \"none\"\n",
        dir = dir.path().display().to_string(),
    );
    std::fs::write(&file, text).expect("write config");
    let config = Config::load(Sources { file: Some(file), ..Sources::default() }).expect("config loads");
    let server = roomcast::Server::builder().config(config).start().expect("server starts");

    let stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let url = format!("ws://{}/ws/home?user=ann", server.local_addr());
    let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
    let mut send_and_await = |frame: &str, reply: &str| {
        ws.send(tungstenite::Message::text(frame)).expect("send");
        loop {
            let message = ws.read().expect("a frame");
            if message.to_text().is_ok_and(|t| t.contains(reply)) {
                return;
            }
        }
    };
    send_and_await(r#"{"type":"join","ref":1,"room":"ops"}"#, r#""ref":1"#);
    send_and_await(r#"{"type":"chat.send","ref":2,"room":"ops","id":"c1","text":"hi"}"#, r#""ref":2"#);
    send_and_await(r#"{"type":"leave","ref":3,"room":"ops"}"#, r#""ref":3"#);
    ws.close(Some(tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "bye".into() })).expect("close");
    while ws.read().is_ok() {}

    let mut events = Vec::new();
    while events.len() < 5 {
        let request = recv(&rx);
        let signature = request.header("x-roomcast-signature").expect("signed");
        assert!(sign::verify(SECRET.as_bytes(), &request.body, signature), "the signature verifies");
        events.extend(request.events());
    }
    let seen: Vec<(&str, &str)> =
        events.iter().map(|e| (e["type"].as_str().unwrap_or(""), e["room"].as_str().unwrap_or(""))).collect();
    assert_eq!(seen, [("connect", "home"), ("join", "ops"), ("chat", "ops"), ("leave", "ops"), ("disconnect", "home")]);
    assert!(events.iter().all(|e| e["user"] == "ann"), "{events:?}");
    assert!(events.iter().all(|e| e["conn"] == events[0]["conn"]), "one connection: {events:?}");
    assert!(events.iter().all(|e| e["conn"] == events[0]["conn"]), "one connection: {events:?}");
    assert_eq!(events[2]["chat_id"], "c1");
    assert_eq!(events[2]["text"], "hi");
    assert_eq!(events[4]["close_code"], 1000);
    assert_eq!(events[4]["close_reason"], "normal");
    server.shutdown_within(Duration::from_millis(500));
}
