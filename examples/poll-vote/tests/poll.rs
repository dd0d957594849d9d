//! The outside crate's own test: a server from the library with `poll.vote`,
//! two real WebSocket clients in one room.

use std::net::TcpStream;

use roomcast::config::Sources;
use roomcast::token::{MintRequest, mint_hs256};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const SECRET: &str = "poll-vote-example-secret-0123456789abcdef";

fn client(addr: std::net::SocketAddr, user: &str) -> WebSocket<TcpStream> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let request = MintRequest { sub: user, ttl_s: 600, ..Default::default() };
    let token = mint_hs256(SECRET.as_bytes(), &request, now).expect("mint");
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    let url = format!("ws://{addr}/ws/town-hall?token={token}");
    tungstenite::client::client(url, stream).expect("handshake").0
}

fn next_of_type(ws: &mut WebSocket<TcpStream>, kind: &str) -> Value {
    loop {
        if let Message::Text(text) = ws.read().expect("a frame") {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] == kind {
                return value;
            }
        }
    }
}

#[test]
fn votes_are_tallied_per_room_and_published() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("ROOMCAST_JWT_SECRET", SECRET),
        ("ROOMCAST_LISTEN", "127.0.0.1:0"),
        ("ROOMCAST_PIN", "false"),
        ("ROOMCAST_SHARDS", "2"),
        ("ROOMCAST_DATA_DIR", dir.path().to_str().expect("utf-8 path")),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = roomcast::Config::load(Sources { env, ..Sources::default() }).expect("config");
    let server = poll_vote::with_polls(roomcast::Server::builder().config(config).store(false)).start().expect("start");

    let mut alice = client(server.local_addr(), "alice");
    next_of_type(&mut alice, "welcome");
    let mut bob = client(server.local_addr(), "bob");
    next_of_type(&mut bob, "welcome");

    alice
        .send(Message::text(json!({"type": "poll.vote", "ref": 1, "data": {"option": "yes"}}).to_string()))
        .expect("send");
    assert_eq!(next_of_type(&mut alice, "poll.tally"), json!({"type": "poll.tally", "ref": 1, "data": {"yes": 1}}));
    let message = next_of_type(&mut bob, "message");
    assert_eq!((message["seq"].clone(), message["data"].clone()), (json!(1), json!({"yes": 1})));

    bob.send(Message::text(json!({"type": "poll.vote", "data": {"option": "no"}}).to_string())).expect("send");
    assert_eq!(next_of_type(&mut bob, "poll.tally")["data"], json!({"yes": 1, "no": 1}));
    server.shutdown();
}
