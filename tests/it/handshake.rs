//! Handshake failures get the statuses of DESIGN §2 with a JSON body, a slow
//! client cannot hold the acceptor, and bytes that come with the handshake
//! are not lost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tungstenite::Message;

use super::harness::{Claims, Client, PATIENCE, Server, token, upgrade_request};
use super::http_api::series;

/// Sends `request` and returns the whole response as text.
fn raw_response(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("write request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn bad_requests_get_their_documented_statuses() {
    let server = Server::start(&["--auth-mode", "none"]);
    let addr = server.addr;
    // (request, status, error code, a response header it must carry)
    let cases: Vec<(Vec<u8>, u16, &str, Option<&str>)> = vec![
        (upgrade_request("/ws/bad%20room?user=a", ""), 400, "bad_room", None),
        (upgrade_request(&format!("/ws/{}?user=a", "r".repeat(129)), ""), 400, "bad_room", None),
        (upgrade_request("/nowhere", ""), 404, "not_found", None),
        (
            b"POST /ws/demo?user=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
            405,
            "method_not_allowed",
            Some("Allow: GET"),
        ),
        (b"GET /ws/demo?user=a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "not_websocket", None),
        (
            b"GET /ws/demo?user=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n".to_vec(),
            426,
            "bad_version",
            Some("Sec-WebSocket-Version: 13"),
        ),
        (
            b"GET /ws/demo?user=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
            "bad_key",
            None,
        ),
        (b"\x16\x03\x01garbage\r\n\r\n".to_vec(), 400, "bad_request", None),
        (
            upgrade_request("/ws/demo?user=a", &format!("X-Big: {}\r\n", "a".repeat(9000))),
            431,
            "headers_too_large",
            None,
        ),
    ];
    for (request, status, code, header) in cases {
        let what = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        let response = raw_response(addr, &request);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no head: {response:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "request {what:?}: {head}");
        if let Some(header) = header {
            assert!(head.lines().any(|line| line == header), "request {what:?}: no {header:?} in\n{head}");
        }
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body, got {body:?}"));
        assert_eq!(json["error"], code);
    }
    // Each refusal is counted under its cause; the 404 is an HTTP API answer.
    for (status, cause, n) in [
        (400, "bad_room", 2.0),
        (405, "method_not_allowed", 1.0),
        (400, "not_websocket", 1.0),
        (426, "bad_version", 1.0),
        (400, "bad_key", 1.0),
        (400, "bad_request", 1.0),
        (431, "headers_too_large", 1.0),
    ] {
        let name = format!("roomcast_handshakes_total{{status=\"{status}\",cause=\"{cause}\"}}");
        assert_eq!(series(addr, &name), n, "{name}");
    }
    assert_eq!(series(addr, r#"roomcast_limit_hits_total{kind="head_too_big"}"#), 1.0);
    assert_eq!(series(addr, r#"roomcast_http_responses_total{status="404"}"#), 1.0);
}

#[test]
fn health_endpoint_answers() {
    let server = Server::start(&[]);
    let (status, body) = super::harness::raw_http(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

#[test]
fn a_slowloris_client_is_dropped_at_the_timeout_without_holding_others() {
    let server = Server::start(&["--auth-mode", "none", "--set", "limits.handshake_timeout_ms=1500"]);
    let slow = TcpStream::connect(server.addr).expect("connect");
    let mut slow_reader = slow.try_clone().expect("clone");
    slow_reader.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // About 160 bytes at one byte per 100 ms: the whole head would take 16 s.
    let head = upgrade_request("/ws/demo?user=slow", "X-Slow: one byte at a time\r\n");
    let head_len = head.len();
    let (sent_tx, sent) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut slow = slow;
        for (i, byte) in head.iter().enumerate() {
            if slow.write_all(&[*byte]).is_err() {
                return i;
            }
            let _ = sent_tx.send(i + 1);
            // The attack's pace, not a synchronisation.
            std::thread::sleep(Duration::from_millis(100));
        }
        head_len
    });
    // Once the slow head has begun, a WebSocket client completes its handshake.
    while sent.recv_timeout(PATIENCE).expect("the slow writer runs") < 3 {}
    let mut fast = Client::connect(&server.url("demo", "user=fast")).expect("the fast client is served");
    assert_eq!(fast.next_of_type("welcome")["user"], "fast");
    let sent_before_fast = sent.try_iter().last().unwrap_or(3);
    assert!(sent_before_fast < head_len, "the fast handshake finished while the slow head was still coming");

    // The slow one gets a 408 (or, if its next byte raced the close, a reset) and EOF.
    let mut response = Vec::new();
    match slow_reader.read_to_end(&mut response) {
        Ok(_) => {
            let text = String::from_utf8_lossy(&response);
            assert!(text.is_empty() || text.starts_with("HTTP/1.1 408 "), "{text}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let written = writer.join().expect("writer");
    assert!(written < head_len, "dropped before the head was complete ({written} of {head_len} bytes)");
    let timeouts = r#"roomcast_handshakes_total{status="408",cause="timeout"}"#;
    assert_eq!(series(server.addr, timeouts), 1.0);
    assert_eq!(series(server.addr, r#"roomcast_limit_hits_total{kind="handshake_timeout"}"#), 1.0);
    assert_eq!(series(server.addr, "roomcast_handshake_timeouts_total"), 1.0);
}

/// A masked client text frame (payload under 126 bytes).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn a_frame_sent_with_the_handshake_head_is_processed() {
    let server = Server::start(&[]);
    let (mut other, _) = server.join("eager-room", "other");
    let token = token(&Claims { sub: "eager", ..Claims::default() });
    // The head and a publish frame in one write: the frame arrives in the
    // acceptor's read and must be handed to the shard with the connection.
    let mut bytes = upgrade_request(&format!("/ws/eager-room?token={token}"), "");
    bytes.extend(masked_text_frame(br#"{"type":"publish","ref":7,"data":"early"}"#));
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(&bytes).expect("one write");

    let message = other.next_of_type("message");
    assert_eq!((message["from"].clone(), message["data"].clone()), (json!("eager"), json!("early")));

    // The sender got its 101, then its welcome and the publish's ack.
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).expect("read the 101");
        assert!(n > 0, "closed before the 101: {:?}", String::from_utf8_lossy(&read));
        read.extend_from_slice(&buf[..n]);
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    assert!(read.starts_with(b"HTTP/1.1 101 "), "{:?}", String::from_utf8_lossy(&read));
    let rest = read.split_off(head_end);
    let mut ws = tungstenite::WebSocket::from_partially_read(stream, rest, tungstenite::protocol::Role::Client, None);
    let mut types = Vec::new();
    while !types.contains(&"ack".to_string()) {
        if let Message::Text(text) = ws.read().expect("frame") {
            let value: serde_json::Value = serde_json::from_str(&text).expect("json");
            if value["type"] == "ack" {
                assert_eq!(value["ref"], 7);
            }
            types.push(value["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(types.first().map(String::as_str), Some("welcome"), "{types:?}");
}

#[test]
fn only_http_1_1_is_served_on_every_listener() {
    // RFC 6455 §4.1: the opening handshake is HTTP/1.1 (or higher); httparse
    // reads only 1.x, so anything but HTTP/1.1 gets 505 on every listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let admin: SocketAddr = format!("127.0.0.1:{port}").parse().expect("admin addr");
    let server = Server::start(&[
        "--auth-mode",
        "none",
        "--echo-listen",
        "127.0.0.1:0",
        "--admin-key",
        "admin-key-0123456789",
        "--admin-listen",
        &admin.to_string(),
    ]);
    let echo = server.echo_addr.expect("echo listener");
    let upgrade_1_0 =
        String::from_utf8(upgrade_request("/ws/demo?user=a", "")).expect("ascii").replace("HTTP/1.1", "HTTP/1.0");
    let cases: Vec<(SocketAddr, Vec<u8>)> = vec![
        (server.addr, upgrade_1_0.clone().into_bytes()),
        (echo, upgrade_1_0.replace("/ws/demo?user=a", "/").into_bytes()),
        (server.addr, b"GET /healthz HTTP/1.0\r\n\r\n".to_vec()),
        (admin, b"GET /healthz HTTP/1.0\r\n\r\n".to_vec()),
        (server.addr, b"GET /ws/demo?user=a HTTP/2.0\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (addr, request) in cases {
        let what = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        let response = raw_response(addr, &request);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no head: {response:?}"));
        assert!(head.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"), "{what}: {head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body, got {body:?}"));
        assert_eq!(json["error"], "http_version_not_supported", "{what}");
    }
    // The WebSocket ones (and the unreadable HTTP/2.0 line) count as
    // handshakes, the /healthz ones as HTTP API responses.
    let handshakes = r#"roomcast_handshakes_total{status="505",cause="http_version_not_supported"}"#;
    assert_eq!(series(admin, handshakes), 3.0);
    assert_eq!(series(admin, r#"roomcast_http_responses_total{status="505"}"#), 2.0);
    // HTTP/1.1 is served as before.
    let mut client = Client::connect(&server.url("demo", "user=b")).expect("HTTP/1.1 upgrades");
    assert_eq!(client.next_of_type("welcome")["user"], "b");
}
