//! Issue 7, recovery after reconnect: `?since=SEQ&epoch=E` (and `join` with
//! `since`/`epoch`) replays the held `publish` messages after SEQ right
//! after the welcome, then live traffic; `recovered: false` when they are
//! not all held (too old, another epoch, a restart).

use roomcast::ids::RoomKey;
use serde_json::{Value, json};

use super::harness::{Claims, Client, Server, token};

fn connect(server: &Server, room: &str, user: &str, query: &str) -> (Client, Value) {
    let token = token(&Claims { sub: user, ..Claims::default() });
    let mut client = Client::connect(&server.url(room, &format!("token={token}{query}"))).expect("handshake");
    let welcome = client.next_json();
    assert_eq!(welcome["type"], "welcome", "the welcome comes first: {welcome}");
    (client, welcome)
}

/// The next frame, skipping `chat_history`: a room's stored chat history
/// may arrive at any time after its creation (`docs/protocol.md` §14.6).
fn next_frame(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json();
        if frame["type"] != "chat_history" {
            return frame;
        }
    }
}

/// Publishes `data` from `client` and waits for its ack; returns the seq.
fn publish(client: &mut Client, room: &str, n: u64) -> u64 {
    client.send(json!({"type": "publish", "room": room, "ref": n, "data": {"n": n}}));
    loop {
        let frame = client.next_json();
        if frame["type"] == "ack" && frame["ref"] == json!(n) {
            return frame["seq"].as_u64().expect("seq");
        }
        assert_ne!(frame["type"], "error", "{frame}");
    }
}

/// The next `count` frames, which must be `message`s; returns their seqs.
fn messages(client: &mut Client, count: usize) -> Vec<u64> {
    (0..count)
        .map(|_| {
            let frame = next_frame(client);
            assert_eq!(frame["type"], "message", "{frame}");
            frame["seq"].as_u64().expect("seq")
        })
        .collect()
}

#[test]
fn held_messages_are_replayed_after_the_welcome_then_live_traffic_follows() {
    let server = Server::start(&[]);
    let (mut alice, _) = connect(&server, "rec", "alice", "");
    let (bob, welcome) = connect(&server, "rec", "bob", "");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    let seqs: Vec<u64> = (1..=5).map(|n| publish(&mut alice, "rec", n)).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    drop(bob);

    let (mut bob, welcome) = connect(&server, "rec", "bob", &format!("&since=2&epoch={epoch}"));
    assert_eq!((welcome["recovered"].as_bool(), welcome["seq"].as_u64()), (Some(true), Some(5)), "{welcome}");
    assert_eq!(messages(&mut bob, 3), [3, 4, 5], "held messages, in order, right after the welcome");
    publish(&mut alice, "rec", 6);
    assert_eq!(bob.next_of_type("message")["seq"], 6, "then live traffic, no gap, no duplicate");

    // Without since: no recovered field.
    let (_carol, welcome) = connect(&server, "rec", "carol", "");
    assert!(welcome.get("recovered").is_none(), "{welcome}");
}

#[test]
fn a_since_older_than_the_ring_or_of_another_epoch_is_not_recovered() {
    let server = Server::start(&["--set", "rooms.recovery_messages_max=2"]);
    let (mut alice, welcome) = connect(&server, "old", "alice", "");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    for n in 1..=5 {
        publish(&mut alice, "old", n);
    }
    let (_, welcome) = connect(&server, "old", "bob", &format!("&since=3&epoch={epoch}"));
    assert_eq!(welcome["recovered"], true, "3 and later: 4 and 5 are held");
    for query in [format!("&since=1&epoch={epoch}"), "&since=4&epoch=1.0.999".to_string(), "&since=4".to_string()] {
        let (mut bob, welcome) = connect(&server, "old", "bob", &query);
        assert_eq!(welcome["recovered"], false, "{query}: {welcome}");
        publish(&mut alice, "old", 100);
        assert_eq!(bob.next_of_type("message")["data"]["n"], 100, "nothing replayed");
    }
    let token = token(&Claims { sub: "x", ..Claims::default() });
    let status = Client::connect(&server.url("old", &format!("token={token}&since=x")));
    assert!(matches!(status, Err(super::harness::Refused::Status(400, ref body)) if body.contains("bad_since")));
}

#[test]
fn after_a_restart_the_epoch_differs_and_nothing_is_recovered() {
    let server = Server::start(&[]);
    let (mut alice, welcome) = connect(&server, "boot", "alice", "");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    publish(&mut alice, "boot", 1);
    publish(&mut alice, "boot", 2);
    drop(alice);
    let dir = server.stop();
    let server = Server::start_in(dir, &[]);
    let (_, welcome) = connect(&server, "boot", "alice", &format!("&since=1&epoch={epoch}"));
    assert_ne!(welcome["epoch"], epoch.as_str());
    assert_eq!(welcome["recovered"], false, "history lost with the restart: {welcome}");
}

#[test]
fn recovery_works_for_rooms_owned_by_another_shard_by_url_and_by_join() {
    const SHARDS: usize = 4;
    let owner = |room: &str| RoomKey::new("", room).shard(SHARDS);
    let room_on = |prefix: &str, shard: u16| {
        (0..).map(|i| format!("{prefix}-{i}")).find(|room| owner(room) == shard).expect("some name hashes there")
    };
    let server = Server::start(&["--shards", "4"]);
    let room = room_on("shared", 0);
    let (mut alice, welcome) = connect(&server, &room, "alice", "");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    for n in 1..=4 {
        publish(&mut alice, &room, n);
    }

    // By join, from a connection whose home is on shard 1.
    let (mut bob, _) = connect(&server, &room_on("home", 1), "bob", "");
    bob.send(json!({"type": "join", "room": room, "ref": "j", "since": 1, "epoch": epoch}));
    let welcome = next_frame(&mut bob);
    assert_eq!((welcome["type"].as_str(), welcome["shard"].as_u64()), (Some("welcome"), Some(0)), "{welcome}");
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(messages(&mut bob, 3), [2, 3, 4]);
    assert_eq!(next_frame(&mut bob), json!({"type": "ack", "ref": "j", "seq": 4}));
    publish(&mut alice, &room, 5);
    assert_eq!(bob.next_of_type("message")["seq"], 5);

    // A join of another epoch is told so.
    let (mut carol, _) = connect(&server, &room_on("home", 2), "carol", "");
    carol.send(json!({"type": "join", "room": room, "since": 1, "epoch": "0.0.1"}));
    assert_eq!(carol.next_of_type("welcome")["recovered"], false);

    // By URL (the URL room is always on the connection's own shard).
    let (mut dave, welcome) = connect(&server, &room, "dave", &format!("&since=3&epoch={epoch}"));
    assert_eq!(welcome["recovered"], true);
    assert_eq!(messages(&mut dave, 2), [4, 5]);
}
