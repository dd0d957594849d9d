//! Handshake failures get the statuses of DESIGN §2 with a JSON body, and a
//! slow client cannot hold the acceptor.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::harness::{PATIENCE, Server, raw_http, upgrade_request};

#[test]
fn bad_requests_get_their_documented_statuses() {
    let server = Server::start(&["--auth-mode", "none"]);
    let addr = server.addr;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (upgrade_request("/ws/bad%20room?user=a", ""), 400, "bad_room"),
        (upgrade_request(&format!("/ws/{}?user=a", "r".repeat(129)), ""), 400, "bad_room"),
        (upgrade_request("/nowhere", ""), 404, "not_found"),
        (b"POST /ws/demo?user=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 405, "method_not_allowed"),
        (b"GET /ws/demo?user=a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "not_websocket"),
        (
            b"GET /ws/demo?user=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n".to_vec(),
            426,
            "bad_version",
        ),
        (
            b"GET /ws/demo?user=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
            "bad_key",
        ),
        (b"\x16\x03\x01garbage\r\n\r\n".to_vec(), 400, "bad_request"),
        (upgrade_request("/ws/demo?user=a", &format!("X-Big: {}\r\n", "a".repeat(9000))), 431, "headers_too_large"),
    ];
    for (request, status, code) in cases {
        let (got, body) = raw_http(addr, &request);
        assert_eq!(got, status, "request {:?}", String::from_utf8_lossy(&request[..request.len().min(60)]));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body, got {body:?}"));
        assert_eq!(json["error"], code);
    }
}

#[test]
fn health_endpoint_answers() {
    let server = Server::start(&[]);
    let (status, body) = raw_http(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

#[test]
fn a_slowloris_client_is_dropped_at_the_timeout_without_holding_others() {
    let server = Server::start(&["--auth-mode", "none", "--set", "limits.handshake_timeout_ms=1000"]);
    let mut slow = TcpStream::connect(server.addr).expect("connect");
    slow.set_read_timeout(Some(PATIENCE)).expect("timeout");
    slow.write_all(b"GET /ws/demo?user=slow HTTP/1.1\r\nHo").expect("first bytes");

    // Meanwhile a normal client is served at once.
    let (status, _) = super::harness::raw_http(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);

    // The slow one is closed by the server (EOF), not answered.
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(read.is_ok(), "the server closed the slow connection: {read:?}");
    assert!(rest.is_empty(), "no response to an incomplete head: {:?}", String::from_utf8_lossy(&rest));
}
