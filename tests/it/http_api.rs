//! The HTTP API against the real server: health, metrics, stats, the admin
//! endpoints (with what their sends and closes do to real connections),
//! token minting with tenant keys, the separate admin listener, and the
//! OpenAPI document.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{Value, json};
use tungstenite::Message;

use roomcast::__private::RoomKey;

use super::harness::{Claims, Client, PATIENCE, Refused, Server, raw_http, token};

const ADMIN_KEY: &str = "admin-key-0123456789";
const TENANT_KEY: &str = "tenant-key-acme-0123456789";

fn start() -> Server {
    Server::start(&["--admin-key", ADMIN_KEY])
}

/// One request; the body as JSON (or `Value::String` when it is not JSON).
fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    let length = if method == "GET" { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{length}\r\n{body}");
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(server.addr, method, path, Some(ADMIN_KEY), body.map(|b| b.to_string()).as_deref())
}

fn assert_error(response: (u16, Value), status: u16, code: &str) -> Value {
    assert_eq!(response.0, status, "{:?}", response.1);
    assert_eq!(response.1["error"], code, "{:?}", response.1);
    assert!(response.1["message"].is_string(), "{:?}", response.1);
    response.1
}

/// The `/metrics` page. Reading it is itself an HTTP API response, counted
/// in `roomcast_http_responses_total{status="200"}` of the next read.
pub(super) fn metrics_text(addr: SocketAddr) -> String {
    let (status, text) = call(addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    text.as_str().expect("metrics are text").to_string()
}

/// `name{labels} value` summed over every series of `name` in `/metrics`.
pub(super) fn metric(server: &Server, name: &str) -> f64 {
    metrics_text(server.addr)
        .lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one series, written as rendered (`name{label="v",…}`); 0 when absent.
pub(super) fn series(addr: SocketAddr, series: &str) -> f64 {
    series_in(&metrics_text(addr), series)
}

fn series_in(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Polls `/metrics` (shards send snapshots once a second) until `check` holds
/// for the sum of `name`'s series.
pub(super) fn wait_for_metric(server: &Server, name: &str, check: impl Fn(f64) -> bool) -> f64 {
    wait_for(|| metric(server, name), name, check)
}

/// As `wait_for_metric`, for one series (`name{labels}`).
pub(super) fn wait_for_series(addr: SocketAddr, name: &str, check: impl Fn(f64) -> bool) -> f64 {
    wait_for(|| series(addr, name), name, check)
}

/// Waits for a counter series to reach `expected` and asserts it went no further.
pub(super) fn wait_for_count(addr: SocketAddr, name: &str, expected: f64) {
    let value = wait_for_series(addr, name, |n| n >= expected);
    assert_eq!(value, expected, "{name}");
}

/// `roomcast_limit_hits_total{kind="KIND"}`.
pub(super) fn limit_hits(kind: &str) -> String {
    format!("roomcast_limit_hits_total{{kind=\"{kind}\"}}")
}

/// Bounded polling: the shards' snapshots are the only event there is.
fn wait_for(read: impl Fn() -> f64, name: &str, check: impl Fn(f64) -> bool) -> f64 {
    let start = Instant::now();
    loop {
        let value = read();
        if check(value) {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "{name} stayed at {value}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Two room ids owned by different shards (of 2).
fn rooms_on_both_shards() -> (String, String) {
    let on = |shard: u16| {
        (0..).map(|i| format!("m{i}")).find(|room| RoomKey::new("", room).shard(2) == shard).expect("a room")
    };
    (on(0), on(1))
}

/// The `data` of the next `broadcast` frame, as raw text of the whole frame.
fn next_broadcast(client: &mut Client) -> (Value, String) {
    loop {
        if let Message::Text(text) = client.next_message() {
            let value: Value = serde_json::from_str(&text).expect("JSON frame");
            if value["type"] == "broadcast" {
                return (value, text.to_string());
            }
        }
    }
}

#[test]
fn health_ready_and_routing_errors() {
    let server = start();
    assert_eq!(call(server.addr, "GET", "/healthz", None, None), (200, json!({"status": "ok"})));
    assert_eq!(call(server.addr, "GET", "/readyz", None, None), (200, json!({"status": "ready"})));
    assert_error(call(server.addr, "GET", "/nope", None, None), 404, "not_found");
    assert_error(call(server.addr, "GET", "/api/v1/nope", Some(ADMIN_KEY), None), 404, "not_found");
    assert_error(call(server.addr, "POST", "/healthz", None, Some("")), 405, "method_not_allowed");
    assert_error(call(server.addr, "GET", "/api/v1/send", Some(ADMIN_KEY), None), 405, "method_not_allowed");
    assert_error(
        call(server.addr, "PUT", "/api/v1/live/rooms/x", Some(ADMIN_KEY), Some("")),
        405,
        "method_not_allowed",
    );
}

#[test]
fn admin_keys_are_checked_with_one_answer_for_missing_and_wrong() {
    let server = start();
    let missing = assert_error(call(server.addr, "GET", "/api/v1/stats", None, None), 401, "unauthorized");
    let wrong = assert_error(
        call(server.addr, "GET", "/api/v1/stats", Some("admin-key-0123456788"), None),
        401,
        "unauthorized",
    );
    let short = assert_error(call(server.addr, "GET", "/api/v1/live/rooms", Some("a"), None), 401, "unauthorized");
    assert_eq!(missing, wrong);
    assert_eq!(missing, short);
    // A tenant key is not an admin key, and the admin key is not a tenant key.
    let body = Some(r#"{"user":"u"}"#);
    assert_error(call(server.addr, "POST", "/api/v1/tokens", Some(ADMIN_KEY), body), 401, "unauthorized");
    // Without an admin key configured, every admin request is refused.
    let keyless = Server::start(&[]);
    assert_error(call(keyless.addr, "POST", "/api/v1/drain", Some(""), Some("")), 401, "unauthorized");
}

#[test]
fn bad_bodies_are_400_naming_the_field_and_oversized_are_413() {
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", "api.body_bytes_max=1024"]);
    let send = |body: &str| call(server.addr, "POST", "/api/v1/send", Some(ADMIN_KEY), Some(body));
    let e = assert_error(send("{\"room\":"), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("body:"), "{e}");
    assert_error(send("[1]"), 400, "bad_request");
    let e = assert_error(send(r#"{"room":"r"}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("data:"), "{e}");
    let e = assert_error(send(r#"{"room":"r","user":"u","data":1}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().contains("exactly one"), "{e}");
    let e = assert_error(send(r#"{"room":"bad room","data":1}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("room:"), "{e}");
    let e = assert_error(send(r#"{"connection":"x","data":1}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("connection:"), "{e}");
    let e = assert_error(send(r#"{"all":false,"data":1}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("all:"), "{e}");
    let kick = call(server.addr, "POST", "/api/v1/kick", Some(ADMIN_KEY), Some(r#"{"user":5}"#));
    let e = assert_error(kick, 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("user:"), "{e}");
    let e = assert_error(admin(&server, "GET", "/api/v1/live/rooms?limit=0", None), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("limit:"), "{e}");

    // Over the cap: refused from Content-Length, before the body is read.
    let big = format!(r#"{{"all":true,"data":"{}"}}"#, "x".repeat(2000));
    assert_error(send(&big), 413, "body_too_large");
    assert_eq!(series(server.addr, &limit_hits("body_too_big")), 1.0);
    assert_eq!(series(server.addr, r#"roomcast_http_responses_total{status="413"}"#), 1.0);
    // A body that arrives in pieces is read to its Content-Length.
    let body = r#"{"all":true,"data":{"late":true}}"#;
    let head = format!(
        "POST /api/v1/send HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    use std::io::{Read, Write};
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..5]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    stream.write_all(&body.as_bytes()[5..]).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"delivered":0}"#), "{response}");
}

#[test]
fn stats_and_metrics_move_with_connections_and_messages() {
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", "limits.message_inbound_bytes_max=1024"]);
    let addr = server.addr;
    let (status, stats) = admin(&server, "GET", "/api/v1/stats", None);
    assert_eq!(status, 200);
    for field in [
        "total_connections",
        "active_connections",
        "total_rooms",
        "messages_processed",
        "messages_broadcast",
        "deliveries",
        "uptime_s",
    ] {
        assert!(stats[field].is_u64(), "{field} in {stats}");
    }
    assert!(metric(&server, "process_resident_memory_bytes") > 0.0);
    assert!(metric(&server, "process_open_fds") > 0.0);

    // The acceptor's counters move at once, each in its own family.
    let ok = r#"roomcast_handshakes_total{status="101",cause="ok"}"#;
    let missing = r#"roomcast_handshakes_total{status="401",cause="token_missing"}"#;
    let http_200 = r#"roomcast_http_responses_total{status="200"}"#;
    let http_401 = r#"roomcast_http_responses_total{status="401"}"#;
    let before = metrics_text(addr);
    assert_eq!(series_in(&before, ok), 0.0, "{before}");
    match Client::connect(&server.url("m", "")) {
        Err(Refused::Status(401, _)) => {}
        other => panic!("expected 401, got {:?}", other.map(|_| "a connection")),
    }
    assert_error(call(addr, "GET", "/api/v1/stats", None, None), 401, "unauthorized");
    let after = metrics_text(addr);
    assert_eq!(series_in(&after, missing), series_in(&before, missing) + 1.0, "{after}");
    // The read of `before` is the one 200 since; the handshake's 401 is not an HTTP API response.
    assert_eq!(series_in(&after, http_200), series_in(&before, http_200) + 1.0, "{after}");
    assert_eq!(series_in(&after, http_401), series_in(&before, http_401) + 1.0, "{after}");

    // alice's room and bob's are on different shards; bob joins alice's.
    let (room_a, room_b) = rooms_on_both_shards();
    let (mut a, _) = server.join(&room_a, "alice");
    let (mut b, _) = server.join(&room_b, "bob");
    b.send(json!({"type": "join", "room": room_a, "ref": 1}));
    b.next_of_type("ack");
    a.next_of_type("member_joined");
    a.send(json!({"type": "publish", "data": {"hi": 1}}));
    assert_eq!(b.next_of_type("message")["data"], json!({"hi": 1}));
    // Over limits.message_inbound_bytes_max: Close 1009 and one limit hit.
    let (mut big, _) = server.join(&room_b, "big");
    big.send_text(&format!(r#"{{"type":"publish","data":"{}"}}"#, "x".repeat(2000)));
    assert_eq!(big.expect_close().0, 1009);

    // The shards' counters arrive with their next snapshot.
    wait_for_series(addr, ok, |n| n == 3.0);
    wait_for_series(addr, r#"roomcast_limit_hits_total{kind="message_too_big"}"#, |n| n == 1.0);
    wait_for_metric(&server, "roomcast_messages_published_total", |n| n == 1.0);
    // bob's join and alice's publish: the client messages handled.
    wait_for_metric(&server, "roomcast_client_messages_total", |n| n == 2.0);
    let text = metrics_text(addr);
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|line| line.split(['{', ' ']).next() == Some(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for name in [
        "roomcast_broadcasts_total",
        "roomcast_deliveries_total",
        "roomcast_frames_in_total",
        "roomcast_frames_out_total",
        "roomcast_bytes_in_total",
        "roomcast_bytes_out_total",
        "roomcast_writes_total",
        "roomcast_loop_iterations_total",
        "roomcast_loop_iteration_seconds_count",
        "roomcast_publish_flush_seconds_count",
        "roomcast_cross_shard_sent_total",
        "roomcast_cross_shard_received_total",
    ] {
        assert!(sum(name) >= 1.0, "{name} did not move:\n{text}");
    }
    // bob's join went to the other shard, and alice's publish came back to his as one Fanout.
    assert!(sum("roomcast_cross_shard_sent_total") >= 2.0, "{text}");
    // The histograms' +Inf buckets hold every observation (one histogram per shard).
    let inf = |name: &str| -> f64 {
        (0..2).map(|shard| series_in(&text, &format!("{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}}"))).sum()
    };
    assert_eq!(inf("roomcast_publish_flush_seconds"), sum("roomcast_publish_flush_seconds_count"), "{text}");
    assert!(inf("roomcast_loop_iteration_seconds") >= 1.0, "{text}");

    let start = Instant::now();
    let stats = loop {
        let (_, stats) = admin(&server, "GET", "/api/v1/stats", None);
        if stats["active_connections"] == 2 || start.elapsed() > PATIENCE {
            break stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(stats["active_connections"], 2, "{stats}");
    assert_eq!(stats["total_connections"], 3, "{stats}");
    assert_eq!(stats["messages_processed"], 2, "{stats}");
    assert!(stats["messages_broadcast"].as_u64().unwrap() >= 2, "bob's member_joined and the message: {stats}");
    assert!(stats["deliveries"].as_u64().unwrap() > stats["messages_broadcast"].as_u64().unwrap(), "{stats}");
    assert!(stats["total_rooms"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["last_connection_time"].is_u64(), "{stats}");

    drop(a);
    b.ws.close(None).unwrap();
    let _ = b.ws.flush();
    wait_for_metric(&server, "roomcast_connections", |n| n == 0.0);
    assert_eq!(metric(&server, "roomcast_connections_closed_total"), 3.0);
}

#[test]
fn admin_send_reaches_exactly_the_named_connections() {
    let server = start();
    let (mut alice1, _) = server.join("r1", "alice");
    let (mut alice2, _) = server.join("r2", "alice");
    let (mut bob, _) = server.join("r1", "bob");
    let (mut carol, welcome) = server.join("r2", "carol");
    let carol_id = welcome["conn"].as_str().expect("conn id").to_string();

    let send = |body: &str| call(server.addr, "POST", "/api/v1/send", Some(ADMIN_KEY), Some(body));
    assert_eq!(send(r#"{"room":"r1","data":{"n": 1,  "s" : "x"}}"#), (200, json!({"delivered": 2})));
    assert_eq!(send(r#"{"user":"alice","data":[2]}"#), (200, json!({"delivered": 2})));
    let to_carol = format!(r#"{{"connection":"{carol_id}","data":3}}"#);
    assert_eq!(send(&to_carol), (200, json!({"delivered": 1})));
    assert_eq!(send(r#"{"all":true,"data":"4"}"#), (200, json!({"delivered": 4})));
    assert_error(send(r#"{"connection":"0.999999.1","data":3}"#), 404, "not_found");
    assert_eq!(send(r#"{"room":"empty","data":0}"#), (200, json!({"delivered": 0})));

    // Each connection's broadcasts up to the one to everyone ("4"), in order.
    let received = |client: &mut Client| {
        let mut seen = Vec::new();
        loop {
            let (frame, text) = next_broadcast(client);
            seen.push((frame["to"].as_str().unwrap().to_string(), frame["data"].clone(), text));
            if frame["data"] == "4" {
                return seen;
            }
        }
    };
    let a1 = received(&mut alice1);
    let a2 = received(&mut alice2);
    let b = received(&mut bob);
    let c = received(&mut carol);
    let data = |seen: &[(String, Value, String)]| seen.iter().map(|(_, d, _)| d.clone()).collect::<Vec<_>>();
    assert_eq!(data(&a1), vec![json!({"n": 1, "s": "x"}), json!([2]), json!("4")]);
    assert_eq!(data(&a2), vec![json!([2]), json!("4")]);
    assert_eq!(data(&b), vec![json!({"n": 1, "s": "x"}), json!("4")]);
    assert_eq!(data(&c), vec![json!(3), json!("4")]);
    // The frame carries `data` byte for byte.
    assert_eq!(b[0].2, r#"{"type":"broadcast","to":"room","room":"r1","data":{"n": 1,  "s" : "x"}}"#);
    assert_eq!(a2[0].2, r#"{"type":"broadcast","to":"user","data":[2]}"#);
    assert_eq!(c[0].2, r#"{"type":"broadcast","to":"connection","data":3}"#);
    assert_eq!(c[1].2, r#"{"type":"broadcast","to":"all","data":"4"}"#);
}

#[test]
fn live_listings_kick_close_room_and_drain() {
    let server = start();
    let (mut a, _) = server.join("lobby.1", "alice");
    let (_b, _) = server.join("lobby.1", "bob");
    let (mut c, _) = server.join("lobby.2", "carol");
    let (mut d, _) = server.join("other", "dave");

    let (status, page) = admin(&server, "GET", "/api/v1/live/rooms?prefix=lobby.&limit=1", None);
    assert_eq!(status, 200);
    assert_eq!(page, json!({"rooms": [{"room": "lobby.1", "members": 2}], "next_cursor": "lobby.1"}));
    let (_, page) = admin(&server, "GET", "/api/v1/live/rooms?prefix=lobby.&limit=1&cursor=lobby.1", None);
    assert_eq!(page, json!({"rooms": [{"room": "lobby.2", "members": 1}], "next_cursor": null}));
    let (_, all) = admin(&server, "GET", "/api/v1/live/rooms", None);
    let names: Vec<&str> = all["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
    // Personal rooms (user:{sub}) are rooms too.
    assert!(names.contains(&"other") && names.contains(&"user:alice"), "{all}");

    let (status, room) = admin(&server, "GET", "/api/v1/live/rooms/lobby.1", None);
    assert_eq!(status, 200);
    assert_eq!(room["member_count"], 2);
    let mut users: Vec<&str> =
        room["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    // Live meeting roles from the room's owner: alice arrived first, so she is host.
    let role_of =
        |user: &str| room["members"].as_array().unwrap().iter().find(|m| m["user"] == user).map(|m| m["role"].clone());
    assert_eq!((role_of("alice"), role_of("bob")), (Some(json!("host")), Some(json!("participant"))));
    assert_error(admin(&server, "GET", "/api/v1/live/rooms/nobody-here", None), 404, "not_found");
    assert_error(admin(&server, "GET", "/api/v1/live/rooms/bad%20room", None), 400, "bad_request");

    let (_, conns) = admin(&server, "GET", "/api/v1/live/connections?user=carol", None);
    let conns = conns["connections"].as_array().unwrap().clone();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["room"], "lobby.2");
    let (_, conns) = admin(&server, "GET", "/api/v1/live/connections?room=lobby.1", None);
    assert_eq!(conns["connections"].as_array().unwrap().len(), 2);
    let (_, conns) = admin(&server, "GET", "/api/v1/live/connections", None);
    assert_eq!(conns["connections"].as_array().unwrap().len(), 4);

    // Kick: only in the named room, then everywhere.
    assert_eq!(
        admin(&server, "POST", "/api/v1/kick", Some(json!({"user": "carol", "room": "lobby.1"}))).1["kicked"],
        0
    );
    assert_eq!(admin(&server, "POST", "/api/v1/kick", Some(json!({"user": "carol"}))), (200, json!({"kicked": 1})));
    assert_eq!(c.expect_close().0, 4003);

    // Closing a room closes its members.
    assert_eq!(admin(&server, "DELETE", "/api/v1/live/rooms/lobby.1", None), (200, json!({"closed": 2})));
    assert_eq!(a.expect_close().0, 4004);
    assert_error(admin(&server, "DELETE", "/api/v1/live/rooms/lobby.1", None), 404, "not_found");

    // Drain: not ready, connections told to go, no new ones.
    assert_eq!(admin(&server, "POST", "/api/v1/drain", None), (202, json!({"draining": true, "closing": 1})));
    assert_eq!(d.expect_close().0, 1001);
    assert_error(call(server.addr, "GET", "/readyz", None, None), 503, "draining");
    assert_eq!(call(server.addr, "GET", "/healthz", None, None).0, 200);
    let token = super::harness::token(&super::harness::Claims { sub: "late", ..Default::default() });
    match Client::connect(&server.url("other", &format!("token={token}"))) {
        Err(Refused::Status(503, body)) => assert!(body.contains("draining"), "{body}"),
        Err(other) => panic!("expected 503, got {other:?}"),
        Ok(_) => panic!("expected 503, got a connection"),
    }
}

#[test]
fn tenant_tokens_connect_and_are_limited_to_their_room() {
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let server = Server::start(&["--set", &tenants, "--set", "api.token_ttl_max_s=600"]);
    let mint = |key: &str, body: &str| call(server.addr, "POST", "/api/v1/tokens", Some(key), Some(body));
    assert_error(mint("tenant-key-acme-0123456780", r#"{"user":"u"}"#), 401, "unauthorized");
    let e = assert_error(mint(TENANT_KEY, r#"{"room":"demo"}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("user:"), "{e}");
    let e = assert_error(mint(TENANT_KEY, r#"{"user":"u","ttl":-1}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("ttl:"), "{e}");
    let e = assert_error(mint(TENANT_KEY, r#"{"user":"u","role":"king"}"#), 400, "bad_request");
    assert!(e["message"].as_str().unwrap().starts_with("role:"), "{e}");

    let now = super::harness::unix_now();
    let (status, minted) =
        mint(TENANT_KEY, r#"{"user":"ann","name":"Ann","room":"demo","ttl":999999,"role":"host","perms":["publish"]}"#);
    assert_eq!(status, 200, "{minted}");
    let expires_at = minted["expires_at"].as_u64().unwrap();
    assert!(expires_at >= now + 600 && expires_at <= now + 601, "ttl capped: {minted}");
    assert_eq!(series(server.addr, &limit_hits("token_ttl_capped")), 1.0);
    let token = minted["token"].as_str().unwrap();

    let mut client = Client::connect(&server.url("demo", &format!("token={token}"))).expect("token connects");
    let welcome = client.next_of_type("welcome");
    assert_eq!(welcome["user"], "ann");
    match Client::connect(&server.url("elsewhere", &format!("token={token}"))) {
        Err(Refused::Status(403, _)) => {}
        Err(other) => panic!("expected 403, got {other:?}"),
        Ok(_) => panic!("the token's room claim was not enforced"),
    }
    // The token's tenant is the key's: bob (no tenant) in "demo" is in another room.
    let (status, cat) = mint(TENANT_KEY, r#"{"user":"cat","room":"demo"}"#);
    assert_eq!(status, 200);
    let mut cat = Client::connect(&server.url("demo", &format!("token={}", cat["token"].as_str().unwrap()))).unwrap();
    cat.next_of_type("welcome");
    let (mut bob, _) = server.join("demo", "bob");
    bob.send(json!({"type": "publish", "ref": 1, "data": "from bob"}));
    bob.next_of_type("ack");
    cat.send(json!({"type": "publish", "data": "from cat"}));
    assert_eq!(client.next_of_type("message")["data"], "from cat");
}

#[test]
fn a_separate_admin_listener_takes_the_admin_api_and_metrics() {
    // A free port for the admin listener (the server logs only its main address).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tenants = format!("tenants=acme:{TENANT_KEY}");
    let server =
        Server::start(&["--admin-key", ADMIN_KEY, "--admin-listen", &admin_addr.to_string(), "--set", &tenants]);
    assert_error(call(server.addr, "GET", "/metrics", None, None), 404, "not_found");
    assert_error(call(server.addr, "GET", "/api/v1/stats", Some(ADMIN_KEY), None), 404, "not_found");
    assert_eq!(call(server.addr, "GET", "/healthz", None, None).0, 200);
    assert_eq!(call(admin_addr, "GET", "/metrics", None, None).0, 200);
    assert_eq!(call(admin_addr, "GET", "/api/v1/stats", Some(ADMIN_KEY), None).0, 200);
    assert_eq!(call(admin_addr, "GET", "/readyz", None, None).0, 200);
    assert_error(call(admin_addr, "GET", "/ws/room", None, None), 404, "not_found");

    // On the main listener the admin key opens nothing, whatever the endpoint:
    // admin endpoints are not there (404), and those a tenant key may also use
    // refuse it (401). Every operation of the OpenAPI document is tried.
    let (status, doc) = call(server.addr, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let concrete = path.replace("{room}", "r1").replace("{jti}", "j1");
            let body = (method != "get").then_some("{}");
            let (status, answer) = call(server.addr, &method.to_uppercase(), &concrete, Some(ADMIN_KEY), body);
            let schemes = operation["security"].to_string();
            let expected = match () {
                _ if path == "/metrics" || path == "/api/v1/stats" => 404,
                // The meeting page is off outside dev mode (`http.demo_page`).
                _ if path == "/" || path.starts_with("/demo/") => 404,
                _ if operation.get("security").is_none() => 200,
                _ if schemes.contains("tenantKey") => 401,
                _ => 404,
            };
            assert_eq!(status, expected, "{method} {path} with the admin key on the main listener: {answer}");
            tried += 1;
        }
    }
    assert!(tried >= 20, "{tried} operations");
    // A tenant's key still works there for its own endpoints; the admin key does on the admin listener.
    for (path, key, addr) in [
        ("/api/v1/rooms", TENANT_KEY, server.addr),
        ("/api/v1/usage", TENANT_KEY, server.addr),
        ("/api/v1/rooms/r1/usage", TENANT_KEY, server.addr),
        ("/api/v1/rooms", ADMIN_KEY, admin_addr),
        ("/api/v1/usage", ADMIN_KEY, admin_addr),
    ] {
        let (status, answer) = call(addr, "GET", path, Some(key), None);
        assert_eq!(status, 200, "GET {path} on {addr}: {answer}");
    }
    let (status, minted) = call(server.addr, "POST", "/api/v1/tokens", Some(TENANT_KEY), Some(r#"{"user":"t"}"#));
    assert_eq!(status, 200, "{minted}");
    let (_client, _) = server.join("x", "alice");
}

#[test]
fn the_openapi_document_lists_every_endpoint() {
    let server = start();
    let (status, doc) = call(server.addr, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/stats", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{jti}", "delete"),
        ("/api/v1/send", "post"),
        ("/api/v1/kick", "post"),
        ("/api/v1/drain", "post"),
        ("/api/v1/live/rooms", "get"),
        ("/api/v1/live/rooms/{room}", "get"),
        ("/api/v1/live/rooms/{room}", "delete"),
        ("/api/v1/live/connections", "get"),
        ("/api/v1/usage", "get"),
        ("/api/v1/rooms/{room}/usage", "get"),
        ("/api/v1/rooms", "get"),
        ("/api/v1/rooms", "post"),
        ("/api/v1/rooms/{room}", "get"),
        ("/api/v1/rooms/{room}", "put"),
        ("/api/v1/rooms/{room}", "delete"),
        ("/", "get"),
        ("/demo/app.js", "get"),
        ("/demo/style.css", "get"),
        ("/demo/roomcast.js", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    assert_eq!(paths.len(), 21, "documented paths: {:?}", paths.keys().collect::<Vec<_>>());
}

/// Pinned: a newer schemathesis may add checks.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// schemathesis (PyPI) generates requests from the served OpenAPI document
/// and checks every response against it (`--checks all`). Like the Autobahn
/// test it makes its own venv under `target/` on the first run, so it needs
/// `python3` with `venv` and PyPI access once. `/api/v1/drain` is left out:
/// it would stop the server taking connections for the rest of the run.
#[test]
fn schemathesis_finds_the_api_matches_its_openapi_document() {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").to_path_buf();
    let venv = target.join("schemathesis-venv");
    let lock = std::fs::File::create(target.join("schemathesis-venv.lock")).expect("lock file");
    lock.lock().expect("lock venv");
    let st = venv.join("bin").join("st");
    let pip_show = std::process::Command::new(venv.join("bin").join("python"))
        .args(["-m", "pip", "show", "schemathesis"])
        .output();
    let installed = pip_show
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(&format!("Version: {SCHEMATHESIS_VERSION}")));
    if !installed || !st.is_file() {
        let made = std::process::Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv).status();
        assert!(made.is_ok_and(|s| s.success()), "python3 -m venv failed (Debian: apt-get install python3-venv)");
        let pip = std::process::Command::new("timeout")
            .arg("300")
            .arg(venv.join("bin").join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}"))
            .status();
        assert!(pip.is_ok_and(|s| s.success()), "cannot install schemathesis from PyPI");
    }
    drop(lock);

    // A tenant, so that `POST /api/v1/tokens` can succeed, and a live room
    // (the `examples` of the `{room}` parameter name it), so that
    // `GET`/`DELETE /api/v1/live/rooms/{room}` can: a member that reconnects
    // each time a DELETE closes the room.
    let server = Server::start(&["--admin-key", ADMIN_KEY, "--set", &format!("tenants=acme:{TENANT_KEY}")]);
    let work = tempfile::tempdir().expect("temp dir");
    // The repository's schemathesis.toml (what a 400 may answer), plus the
    // keys: schemathesis sends each operation the key its `security` names.
    let config = work.path().join("schemathesis.toml");
    let shared = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis.toml"))
        .expect("schemathesis.toml at the repository root");
    let auth = format!(
        "[auth.openapi.adminKey]\nbearer = \"{ADMIN_KEY}\"\n[auth.openapi.tenantKey]\nbearer = \"{TENANT_KEY}\"\n"
    );
    std::fs::write(&config, format!("{auth}\n{shared}")).expect("write schemathesis.toml");
    let har = work.path().join("run.har");
    let url = format!("http://{}/api/v1/openapi.json", server.addr);
    let running = std::sync::atomic::AtomicBool::new(true);
    let member_url = server.url("st-room", &format!("token={}", token(&Claims { sub: "alice", ..Claims::default() })));
    let (output, rooms_closed) = std::thread::scope(|scope| {
        let member = scope.spawn(|| {
            let mut closed_by_delete = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let mut client = Client::connect(&member_url).expect("st-room member connects");
                client.next_of_type("welcome");
                // schemathesis may go a long while between DELETEs of the room
                // on a loaded box: wait for the close as long as it runs.
                match client.close_while(&running) {
                    Some((4004, _)) => closed_by_delete += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            closed_by_delete
        });
        let output = std::process::Command::new("timeout")
            .arg("300")
            .arg(&st)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &url, "--checks", "all"])
            // ST301 expects everything under a deleted resource's path to be gone,
            // but `GET /api/v1/rooms/{room}/usage` reports on a room id whether or
            // not it is registered (ad-hoc rooms have sessions too), so it still
            // answers after `DELETE /api/v1/rooms/{room}`. schemathesis 4.32.5 does
            // not honour a per-operation `use_after_free` setting in its stateful
            // phase against `--checks all`, so the check is off for the run.
            .args(["--exclude-checks", "use_after_free"])
            .args(["--exclude-path", "/api/v1/drain", "--max-examples", "30", "--seed", "1"])
            .args(["--report", "har", "--report-har-path"])
            .arg(&har)
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("run schemathesis");
        // Let the member go: it leaves at its next close or read timeout.
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        let start = Instant::now();
        while !member.is_finished() {
            admin(&server, "DELETE", "/api/v1/live/rooms/st-room", None);
            assert!(start.elapsed() < PATIENCE, "the st-room member did not stop");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (output, member.join().expect("member thread"))
    });
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "schemathesis ran no test:\n{text}");

    // The run reached the success paths, not only the refusals.
    let har: Value = serde_json::from_str(&std::fs::read_to_string(&har).expect("HAR report")).expect("HAR JSON");
    let entries = har["log"]["entries"].as_array().expect("HAR entries");
    let answered = |method: &str, path: &str, status: u64| {
        entries.iter().any(|entry| {
            let url = entry["request"]["url"].as_str().unwrap_or_default();
            let url_path = url.split_once("://").map_or(url, |(_, rest)| &rest[rest.find('/').unwrap_or(0)..]);
            entry["request"]["method"] == method
                && url_path.split('?').next() == Some(path)
                && entry["response"]["status"] == status
        })
    };
    assert!(answered("POST", "/api/v1/tokens", 200), "no POST /api/v1/tokens got a 200");
    assert!(answered("GET", "/api/v1/live/rooms/st-room", 200), "no GET of the live room got a 200");
    assert!(answered("DELETE", "/api/v1/live/rooms/st-room", 200), "no DELETE of the live room got a 200");
    assert!(rooms_closed >= 1, "schemathesis's DELETE closed the member (4004)");
}
