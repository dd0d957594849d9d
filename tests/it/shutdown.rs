//! SIGTERM: every connection gets Close 1001 and the process exits cleanly,
//! within the drain bound, answering HTTP (not ready) while it drains.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::harness::{Claims, Client, PATIENCE, Refused, Server, raw_http, token, upgrade_request};

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits() {
    let server = Server::start(&["--shards", "4"]);
    let mut clients: Vec<_> = (0..6).map(|i| server.join(&format!("bye-{i}"), "u").0).collect();
    let status = server.terminate();
    for client in &mut clients {
        assert_eq!(client.expect_close(), (1001, "server shutting down".into()));
    }
    assert!(status.success(), "exit status {status:?}");
}

/// Reads `stream` until `needle` has been seen; returns everything read.
fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut buf) {
            Ok(0) => panic!("EOF before {needle:?}: {:?}", String::from_utf8_lossy(&seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
    seen
}

#[test]
fn readyz_is_503_during_a_sigterm_drain_that_a_silent_client_cannot_stretch() {
    // The drain lasts until every connection is gone or 6 s have passed; a
    // peer that never answers the Close would hold it for close_timeout_ms.
    let server = Server::start(&["--set", "shutdown.drain_timeout_ms=6000", "--set", "limits.close_timeout_ms=600000"]);
    let (mut polite, _) = server.join("hold", "polite");
    // A raw client: it reads, but never answers the server's Close.
    let mut silent = TcpStream::connect(server.addr).expect("connect");
    silent.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let silent_token = token(&Claims { sub: "silent", ..Claims::default() });
    silent.write_all(&upgrade_request(&format!("/ws/hold?token={silent_token}"), "")).expect("handshake");
    read_until(&mut silent, br#""type":"welcome""#);
    assert_eq!(raw_http(server.addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").0, 200);

    server.sigterm();
    // Close 1001 "server shutting down": the drain has begun, and the
    // acceptor turned not-ready before any connection was told.
    read_until(&mut silent, &[0x88, 2 + 20, 0x03, 0xE9]);
    let (status, body) = raw_http(server.addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert_eq!(raw_http(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").0, 200);
    let late = token(&Claims { sub: "late", ..Claims::default() });
    match Client::connect(&server.url("hold", &format!("token={late}"))) {
        Err(Refused::Status(503, body)) => assert!(body.contains("draining"), "{body}"),
        other => panic!("expected 503 draining, got {:?}", other.map(|_| "a connection")),
    }
    assert_eq!(polite.expect_close(), (1001, "server shutting down".into()));

    // The silent client is not waited for past the drain bound: the process
    // exits on its own, cleanly, and the socket is closed.
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    let mut rest = Vec::new();
    assert!(silent.read_to_end(&mut rest).is_ok(), "the silent client's socket was closed");
}
