//! The handshake guards (issue 12 §3): many half-open handshakes from a few
//! addresses take no one else's turn. One address holds at most its share of
//! pending connections (the next gets 429), a full pending table closes its
//! oldest connection instead of pausing `accept`, and the admin listener
//! has a budget of its own. Clients of other addresses bind to other
//! loopback addresses (all of 127/8 is loopback) to be told apart.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use super::harness::{Client, PATIENCE, Server};

/// A TCP connection to `addr` from `source` (any port).
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().expect("source address");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::new(source, 0).into()).expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// `request` sent from `source`; the whole response as text (empty if the
/// connection was closed or reset without one).
fn http_from(source: &str, addr: SocketAddr, request: &str) -> String {
    let mut stream = connect_from(source, addr);
    let _ = stream.write_all(request.as_bytes());
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn healthz_from(source: &str, addr: SocketAddr) -> String {
    http_from(source, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The value of one series in `/metrics` at `addr`, read from `source`.
fn series_from(source: &str, addr: SocketAddr, series: &str) -> f64 {
    let text = http_from(source, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

/// A WebSocket client from `source` that has its `welcome`.
fn join_from(source: &str, addr: SocketAddr, room: &str, user: &str) -> Client {
    let stream = connect_from(source, addr);
    let url = format!("ws://{addr}/ws/{room}?user={user}");
    let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("the WebSocket handshake succeeds");
    let mut client = Client { ws };
    assert_eq!(client.next_of_type("welcome")["user"], user);
    client
}

/// `n` connections from `source` that send the first byte of a request and
/// then nothing: each holds a pending slot until the server lets it go.
fn half_open(source: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut stream = connect_from(source, addr);
            let _ = stream.write_all(b"G");
            stream
        })
        .collect()
}

#[test]
fn one_address_past_its_pending_share_gets_429_and_others_are_served() {
    let server = Server::start(&[
        "--auth-mode",
        "none",
        "--set",
        "limits.handshakes_pending_per_ip_max=4",
        // Nothing the test waits for may free the slots by timing out.
        "--set",
        "limits.handshake_timeout_ms=60000",
        "--set",
        "limits.handshake_head_deadline_ms=60000",
    ]);
    let held = half_open("127.0.0.1", server.addr, 4);
    // The fifth from the same address is refused at once; a reset (which
    // can overtake the 429) is a refusal too.
    let refused = healthz_from("127.0.0.1", server.addr);
    assert!(refused.is_empty() || refused.starts_with("HTTP/1.1 429 "), "{refused}");
    if !refused.is_empty() {
        assert!(refused.contains(r#""error":"too_many_pending""#), "{refused}");
        assert!(refused.contains("Retry-After: 1\r\n"), "{refused}");
    }
    // Another address is not affected.
    assert!(healthz_from("127.0.0.2", server.addr).starts_with("HTTP/1.1 200 "));
    let _client = join_from("127.0.0.2", server.addr, "demo", "other");
    let shed = r#"roomcast_handshakes_shed_total{reason="per_ip"}"#;
    assert_eq!(series_from("127.0.0.2", server.addr, shed), 1.0);
    let refusals = r#"roomcast_handshakes_total{status="429",cause="too_many_pending"}"#;
    assert_eq!(series_from("127.0.0.2", server.addr, refusals), 1.0);
    let hits = r#"roomcast_limit_hits_total{kind="handshakes_pending"}"#;
    assert_eq!(series_from("127.0.0.2", server.addr, hits), 1.0);
    drop(held);
}

#[test]
fn a_flood_of_slow_handshakes_past_every_cap_locks_no_one_out() {
    // A free port for the admin listener (the server logs only its main address).
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let admin: SocketAddr = format!("127.0.0.1:{port}").parse().expect("admin addr");
    let server = Server::start(&[
        "--auth-mode",
        "none",
        "--admin-key",
        "admin-key-0123456789",
        "--admin-listen",
        &admin.to_string(),
        "--set",
        "limits.handshakes_pending_max=16",
        "--set",
        "limits.handshakes_pending_per_ip_max=12",
        "--set",
        "limits.handshake_timeout_ms=60000",
        "--set",
        "limits.handshake_head_deadline_ms=60000",
    ]);
    // 60 half-open handshakes from three addresses: each address passes its
    // cap of 12, and together they pass the table's 16. They stay open to
    // the end of the test.
    let mut flood = Vec::new();
    for source in ["127.0.0.1", "127.0.0.3", "127.0.0.4"] {
        flood.extend(half_open(source, server.addr, 20));
    }
    // Meanwhile a WebSocket client gets its welcome, and /healthz answers
    // on the public and the admin listener.
    let mut client = join_from("127.0.0.2", server.addr, "demo", "good");
    assert!(healthz_from("127.0.0.2", server.addr).starts_with("HTTP/1.1 200 "));
    assert!(healthz_from("127.0.0.1", admin).starts_with("HTTP/1.1 200 "));
    client.send(serde_json::json!({"type": "publish", "ref": 1, "data": "still served"}));
    assert_eq!(client.next_of_type("ack")["ref"], 1);
    let evicted = series_from("127.0.0.1", admin, r#"roomcast_handshakes_shed_total{reason="evicted"}"#);
    assert!(evicted >= 1.0, "the full table closed its oldest connections: {evicted}");
    let per_ip = series_from("127.0.0.1", admin, r#"roomcast_handshakes_shed_total{reason="per_ip"}"#);
    assert!(per_ip >= 1.0, "each address past 12 was refused: {per_ip}");
    assert_eq!(flood.len(), 60, "the flood's sockets are open until here");
    drop(flood);
}

#[test]
fn a_head_that_does_not_complete_in_time_from_its_first_byte_gets_408() {
    let server = Server::start(&["--auth-mode", "none", "--set", "limits.handshake_head_deadline_ms=300"]);
    let mut slow = connect_from("127.0.0.1", server.addr);
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").expect("the first bytes");
    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(response.contains("handshake_head_deadline_ms"), "{response}");
    let shed = r#"roomcast_handshakes_shed_total{reason="head_deadline"}"#;
    assert_eq!(series_from("127.0.0.1", server.addr, shed), 1.0);
}

#[test]
fn at_the_pending_cap_the_oldest_connection_makes_room() {
    let server =
        Server::start(&["--set", "limits.handshakes_pending_max=1", "--set", "limits.handshake_timeout_ms=60000"]);
    // An idle connection takes the one slot; the next request closes it.
    let mut idle = connect_from("127.0.0.1", server.addr);
    let (status, _) = super::harness::raw_http(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "served at once, accepting never paused");
    let mut answer = String::new();
    let _ = idle.read_to_string(&mut answer);
    assert_eq!(answer, "", "the evicted connection is closed without a response");
    let hits = r#"roomcast_limit_hits_total{kind="handshakes_pending"}"#;
    assert!(series_from("127.0.0.1", server.addr, hits) >= 1.0);
    let evicted = r#"roomcast_handshakes_shed_total{reason="evicted"}"#;
    assert!(series_from("127.0.0.1", server.addr, evicted) >= 1.0);
    assert_eq!(series_from("127.0.0.1", server.addr, "roomcast_accept_paused_total"), 0.0);
}
