//! Issue 7: the room registry acts on rooms, live ones included: capacity,
//! privacy, lobby, deletion (Close 4005) and `rooms.require_registration`,
//! with `--shards 4` and members present through `join` from other shards.
//! A registry change's HTTP answer comes after the shards applied it, so
//! each step below waits on that answer, never on time.

use std::net::SocketAddr;

use roomcast::__private::RoomKey;
use serde_json::{Value, json};

use super::harness::{Claims, Client, Refused, Server, raw_http, token};

const ADMIN_KEY: &str = "admin-key-0123456789";
const SHARDS: usize = 4;

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--shards", "4", "--admin-key", ADMIN_KEY];
    args.extend(extra);
    Server::start(&args)
}

/// A room id with `prefix` owned by shard `shard` (tenant "").
fn room_on(prefix: &str, shard: u16) -> String {
    (0..).map(|i| format!("{prefix}-{i}")).find(|room| RoomKey::new("", room).shard(SHARDS) == shard).expect("exists")
}

fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn register(addr: SocketAddr, room: Value) {
    let (status, answer) = api(addr, "POST", "/api/v1/rooms", Some(&room));
    assert_eq!(status, 201, "{answer}");
}

fn put(addr: SocketAddr, room: &str, body: Value) {
    let (status, answer) = api(addr, "PUT", &format!("/api/v1/rooms/{room}"), Some(&body));
    assert_eq!(status, 200, "{answer}");
}

fn connect(server: &Server, room: &str, claims: Claims<'_>) -> Result<Client, Refused> {
    Client::connect(&server.url(room, &format!("token={}", token(&claims))))
}

/// Connects `user` (no room claim) to `room` and takes its welcome.
fn enter(server: &Server, room: &str, user: &str) -> (Client, Value) {
    let mut client = connect(server, room, Claims { sub: user, ..Claims::default() }).expect("handshake");
    let welcome = client.next_of_type("welcome");
    (client, welcome)
}

/// Sends `request` with `ref` 1 and returns the reply to it.
fn call(client: &mut Client, mut request: Value) -> Value {
    request["ref"] = json!(1);
    client.send(request);
    loop {
        let frame = client.next_json();
        if frame["ref"] == json!(1) && (frame["type"] == "ack" || frame["type"] == "error") {
            return frame;
        }
    }
}

fn refused_status(result: Result<Client, Refused>) -> (u16, Value) {
    match result {
        Err(Refused::Status(status, body)) => (status, serde_json::from_str(&body).unwrap_or(Value::String(body))),
        Err(other) => panic!("refused without a status: {other:?}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

#[test]
fn capacity_is_enforced_and_a_lowered_one_admits_nobody_new() {
    let server = start(&[]);
    let room = room_on("cap", 1);
    register(server.addr, json!({"id": room, "capacity": 2}));
    let (mut first, _) = enter(&server, &room, "a");
    // The second member arrives from another shard, by `join`.
    let (mut second, _) = enter(&server, &room_on("home", 2), "b");
    assert_eq!(call(&mut second, json!({"type": "join", "room": room}))["type"], "ack");
    let (mut third, _) = enter(&server, &room_on("home", 3), "c");
    let full = call(&mut third, json!({"type": "join", "room": room}));
    assert_eq!((full["type"].as_str(), full["code"].as_str()), (Some("error"), Some("room_full")), "{full}");
    let mut late = connect(&server, &room, Claims { sub: "d", ..Claims::default() }).expect("upgraded first");
    assert_eq!(late.next_of_type("error")["code"], "room_full");
    assert_eq!(late.expect_close().0, 1013);

    // Raised, then lowered below the two present: they stay, nobody new enters.
    put(server.addr, &room, json!({"capacity": 3}));
    assert_eq!(call(&mut third, json!({"type": "join", "room": room}))["type"], "ack");
    assert_eq!(call(&mut third, json!({"type": "leave", "room": room}))["type"], "ack");
    put(server.addr, &room, json!({"capacity": 1}));
    let refused = call(&mut third, json!({"type": "join", "room": room}));
    assert_eq!(refused["code"], "room_full", "{refused}");
    assert_eq!(call(&mut first, json!({"type": "publish", "data": "still here"}))["type"], "ack");
    let message = second.next_of_type("message");
    assert_eq!((message["room"].as_str(), message["data"].as_str()), (Some(room.as_str()), Some("still here")));
}

#[test]
fn a_private_room_takes_only_tokens_whose_room_claim_names_it() {
    let server = start(&[]);
    let room = room_on("board", 0);
    register(server.addr, json!({"id": room, "private": true}));
    let (status, body) = refused_status(connect(&server, &room, Claims { sub: "any", ..Claims::default() }));
    assert_eq!((status, body["error"].as_str()), (403, Some("room_private")), "{body}");
    let prefix = format!("{}*", &room[..3]);
    let claims = Claims { sub: "prefixed", room: Some(&prefix), ..Claims::default() };
    assert_eq!(refused_status(connect(&server, &room, claims)).0, 403, "a prefix claim does not name the room");

    let named = Claims { sub: "named", room: Some(&room), ..Claims::default() };
    let mut member = connect(&server, &room, named).expect("the claim names the room");
    assert_eq!(member.next_of_type("welcome")["room"], room.as_str());
    // `join` from another shard's room follows the same rule.
    let (mut outsider, _) = enter(&server, &room_on("home", 3), "outsider");
    let refused = call(&mut outsider, json!({"type": "join", "room": room}));
    assert_eq!(refused["code"], "room_private", "{refused}");

    // Made public again, the outsider may join.
    put(server.addr, &room, json!({"private": false}));
    assert_eq!(call(&mut outsider, json!({"type": "join", "room": room}))["type"], "ack");
}

#[test]
fn the_registry_lobby_starts_rooms_and_switching_it_off_admits_the_waiting() {
    let server = start(&[]);
    let room = room_on("meet", 2);
    register(server.addr, json!({"id": room, "lobby": true}));
    let (mut host, welcome) = enter(&server, &room, "host");
    assert_eq!(welcome["role"], "host");
    let (mut guest, waiting) = enter(&server, &room, "guest");
    assert_eq!((waiting["role"].as_str(), waiting["lobby"].as_bool()), (Some("waiting"), Some(true)), "{waiting}");
    assert_eq!(host.next_of_type("lobby")["event"], "waiting");

    put(server.addr, &room, json!({"lobby": false}));
    assert_eq!(host.next_of_type("lobby_state")["enabled"], false);
    let admitted = guest.next_of_type("welcome");
    assert_eq!(admitted["role"], "participant", "{admitted}");
}

#[test]
fn deleting_a_registered_room_closes_its_members_with_4005_on_every_shard() {
    let server = start(&[]);
    let room = room_on("gone", 1);
    register(server.addr, json!({"id": room, "capacity": 1}));
    let (mut owner_member, _) = enter(&server, &room, "a");
    put(server.addr, &room, json!({"capacity": 2}));
    let (mut remote_member, _) = enter(&server, &room_on("home", 3), "b");
    assert_eq!(call(&mut remote_member, json!({"type": "join", "room": room}))["type"], "ack");
    let (mut bystander, _) = enter(&server, &room_on("other", 1), "c");

    let (status, answer) = api(server.addr, "DELETE", &format!("/api/v1/rooms/{room}"), None);
    assert_eq!((status, answer), (200, json!({"deleted": true})));
    assert_eq!(owner_member.expect_close(), (4005, "room deleted from the registry".to_owned()));
    assert_eq!(remote_member.expect_close().0, 4005, "a member present by join is closed too");
    let untouched = call(&mut bystander, json!({"type": "publish", "data": 1}));
    assert_eq!(untouched["type"], "ack", "other rooms are untouched");

    // Ad-hoc again, with the server's limits: no capacity of 2 any more.
    let members: Vec<Client> = ["d", "e", "f"].iter().map(|user| enter(&server, &room, user).0).collect();
    assert_eq!(members.len(), 3);
}

#[test]
fn with_registration_required_only_registered_rooms_open_and_the_registry_survives_a_restart() {
    let args = ["--set", "rooms.require_registration=true"];
    let server = start(&args);
    let room = room_on("known", 0);
    let (status, body) = refused_status(connect(&server, &room, Claims { sub: "a", ..Claims::default() }));
    assert_eq!((status, body["error"].as_str()), (404, Some("room_not_registered")), "{body}");
    register(server.addr, json!({"id": room}));
    register(server.addr, json!({"id": "secret", "private": true}));
    let (mut member, _) = enter(&server, &room, "a");
    let refused = call(&mut member, json!({"type": "join", "room": room_on("unknown", 2)}));
    assert_eq!(refused["code"], "room_not_registered", "{refused}");
    // Personal rooms need no registration: a direct still reaches `a`.
    let (mut other, _) = enter(&server, &room, "b");
    assert_eq!(call(&mut other, json!({"type": "direct", "to": "a", "data": 1}))["type"], "ack");
    assert_eq!(member.next_of_type("direct")["from"], "b");
    drop((member, other));

    let server = Server::start_in(server.stop(), &["--shards", "4", "--admin-key", ADMIN_KEY, args[0], args[1]]);
    enter(&server, &room, "a");
    let (status, _) = refused_status(connect(&server, "secret", Claims { sub: "a", ..Claims::default() }));
    assert_eq!(status, 403, "privacy is loaded from the store at start");
    let unknown = room_on("unknown", 2);
    assert_eq!(refused_status(connect(&server, &unknown, Claims { sub: "a", ..Claims::default() })).0, 404);
}

#[test]
fn the_registry_is_bounded_by_rooms_registry_max() {
    let server = start(&["--set", "rooms.registry_max=1"]);
    register(server.addr, json!({"id": "one"}));
    let (status, body) = api(server.addr, "POST", "/api/v1/rooms", Some(&json!({"id": "two"})));
    assert_eq!((status, body["error"].as_str()), (507, Some("registry_full")), "{body}");
    let (_, metrics) = {
        let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n");
        raw_http(server.addr, request.as_bytes())
    };
    assert!(metrics.lines().any(|l| l == r#"roomcast_limit_hits_total{kind="registry_full"} 1"#), "{metrics}");
    assert!(metrics.lines().any(|l| l == "roomcast_registry_rooms 1"), "{metrics}");
    // Deleting makes room again.
    assert_eq!(api(server.addr, "DELETE", "/api/v1/rooms/one", None).0, 200);
    register(server.addr, json!({"id": "two"}));
}
