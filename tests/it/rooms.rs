//! Presence, publish order, exactly-once delivery with `seq`, binary relay
//! and isolation between rooms.

use std::collections::BTreeMap;

use serde_json::json;
use tungstenite::Message;

use super::harness::{Client, Server};

/// The next frame other than a `chat_history`: the room's stored chat
/// history reaches its members whenever the store answers, possibly after
/// their welcomes (`docs/protocol.md` §14.6).
fn next_skipping_history(client: &mut Client) -> Message {
    loop {
        match client.next_message() {
            Message::Text(text) if text.starts_with(r#"{"type":"chat_history""#) => {}
            message => return message,
        }
    }
}

#[test]
fn presence_tells_members_who_comes_and_goes() {
    let server = Server::start(&[]);
    let (mut alice, welcome) = server.join("demo", "alice");
    assert_eq!(welcome["member_count"], 1);
    assert_eq!(welcome["seq"], 0);
    assert!(welcome["conn"].is_string());
    assert!(welcome["shard"].as_u64().is_some_and(|s| s < 2));

    let (bob, welcome) = server.join("demo", "bob");
    assert_eq!(welcome["member_count"], 2);
    assert_eq!(welcome["members"][0]["user"], "alice");
    let joined = alice.next_of_type("member_joined");
    assert_eq!(joined["member"]["user"], "bob");
    assert_eq!(joined["member"]["conn"], welcome["conn"]);

    drop(bob); // the socket closes without a Close frame
    let left = alice.next_of_type("member_left");
    assert_eq!(left["member"]["user"], "bob");
    assert_eq!(left["member_count"], 1);
}

#[test]
fn publish_reaches_every_other_member_once_in_order_with_seq() {
    let server = Server::start(&[]);
    let users = ["a", "b", "c"];
    let mut clients: Vec<_> = users.iter().map(|u| server.join("order", u).0).collect();
    const PER_PUBLISHER: u64 = 40;
    // Interleave publishers; each message carries its publisher and index.
    for i in 0..PER_PUBLISHER {
        for (p, client) in clients.iter_mut().enumerate() {
            client.send(json!({"type": "publish", "data": {"p": p, "i": i}}));
        }
    }
    let total = PER_PUBLISHER * users.len() as u64;
    let mut by_seq_everywhere: Vec<BTreeMap<u64, serde_json::Value>> = Vec::new();
    for (me, client) in clients.iter_mut().enumerate() {
        let mut seen = BTreeMap::new();
        let mut last_seq = 0;
        let mut next_index = [0u64; 3];
        let expected = total - PER_PUBLISHER; // everything but its own
        while (seen.len() as u64) < expected {
            let message = client.next_of_type("message");
            let seq = message["seq"].as_u64().expect("seq");
            assert!(seq > last_seq, "seq goes up: {seq} after {last_seq}");
            last_seq = seq;
            let p = message["data"]["p"].as_u64().expect("p") as usize;
            assert_ne!(p, me, "a publisher got its own message");
            assert_eq!(message["from"], users[p]);
            assert_eq!(message["data"]["i"], next_index[p], "per-publisher order");
            next_index[p] += 1;
            assert!(seen.insert(seq, message["data"].clone()).is_none(), "duplicate seq {seq}");
        }
        by_seq_everywhere.push(seen);
    }
    // Every seq from 1 to total was handed out once, and members agree on what each seq carried.
    let mut all: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    for seen in &by_seq_everywhere {
        for (seq, data) in seen {
            if let Some(previous) = all.insert(*seq, data.clone()) {
                assert_eq!(&previous, data, "seq {seq} carried different data for different members");
            }
        }
    }
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
}

#[test]
fn data_arrives_byte_for_byte_and_ref_is_acked() {
    let server = Server::start(&[]);
    let (mut sender, _) = server.join("bytes", "s");
    let (mut receiver, _) = server.join("bytes", "r");
    sender.next_of_type("member_joined");
    let raw = r#"{"type":"publish","ref":"r-1","data":{ "b" : [1.50, "\u00e9", null],"a":1e3 }}"#;
    sender.send_text(raw);
    let ack = sender.next_of_type("ack");
    assert_eq!((ack["ref"].as_str(), ack["seq"].as_u64()), (Some("r-1"), Some(1)));
    match next_skipping_history(&mut receiver) {
        Message::Text(text) => {
            assert_eq!(
                text.as_str(),
                r#"{"type":"message","room":"bytes","from":"s","seq":1,"data":{ "b" : [1.50, "\u00e9", null],"a":1e3 }}"#
            )
        }
        other => panic!("expected the message, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_error_frames_and_the_connection_stays() {
    let server = Server::start(&[]);
    let (mut client, _) = server.join("errors", "e");
    client.send_text("not json");
    assert_eq!(client.next_of_type("error")["code"], "bad_json");
    client.send(json!({"type": "dance", "ref": 7}));
    let error = client.next_of_type("error");
    assert_eq!((error["code"].as_str(), error["ref"].as_u64()), (Some("unknown_type"), Some(7)));
    client.send(json!({"type": "publish", "ref": 8}));
    assert_eq!(client.next_of_type("error")["code"], "bad_request");
    client.send(json!({"type": "publish", "room": "elsewhere", "data": 1, "ref": 9}));
    assert_eq!(client.next_of_type("error")["code"], "not_joined");
    client.send(json!({"type": "ping", "ref": 10}));
    assert_eq!(client.next_of_type("pong")["ref"], 10);
}

#[test]
fn binary_frames_are_relayed_verbatim() {
    let server = Server::start(&[]);
    let (mut a, _) = server.join("bin", "a");
    let (mut b, _) = server.join("bin", "b");
    a.next_of_type("member_joined");
    a.ws.send(Message::binary(vec![0u8, 255, 1, 2])).expect("send");
    assert_eq!(next_skipping_history(&mut b), Message::binary(vec![0u8, 255, 1, 2]));
}

#[test]
fn rooms_are_isolated_across_four_shards() {
    let server = Server::start(&["--shards", "4"]);
    let rooms: Vec<String> = (0..8).map(|i| format!("iso-{i}")).collect();
    let mut pairs: Vec<_> = rooms.iter().map(|room| (server.join(room, "x").0, server.join(room, "y").0)).collect();
    let shards: std::collections::BTreeSet<u64> =
        rooms.iter().map(|room| server.join(room, "probe").1["shard"].as_u64().expect("shard")).collect();
    assert!(shards.len() > 1, "8 rooms should spread over more than one of 4 shards: {shards:?}");
    for (i, (x, _)) in pairs.iter_mut().enumerate() {
        x.send(json!({"type": "publish", "data": i}));
    }
    for (i, (_, y)) in pairs.iter_mut().enumerate() {
        let message = y.next_of_type("message");
        assert_eq!((message["data"].as_u64(), message["room"].as_str()), (Some(i as u64), Some(rooms[i].as_str())));
        assert_eq!(message["seq"], 1, "each room counts its own messages");
    }
}

#[test]
fn a_leave_without_ref_is_answered_with_left_naming_the_room() {
    let server = Server::start(&[]);
    let (mut leaver, home) = server.join("home", "leaver");
    let (mut bob, _) = server.join("home", "bob");
    // Rooms on both shards: the owner of a room answers its leave.
    let mut shards_seen = std::collections::BTreeSet::new();
    let mut rooms = Vec::new();
    for i in 0.. {
        let room = format!("extra-{i}");
        leaver.send(json!({"type": "join", "room": room}));
        let welcome = leaver.next_of_type("welcome");
        assert_eq!(welcome["room"], room.as_str());
        bob.send(json!({"type": "join", "room": room}));
        bob.next_of_type("welcome");
        if shards_seen.insert(welcome["shard"].as_u64().expect("shard")) {
            rooms.push(room);
        }
        if shards_seen.len() == 2 {
            break;
        }
        assert!(i < 64, "no room hashed to the other shard");
    }
    assert!(shards_seen.contains(&home["shard"].as_u64().expect("shard")));

    for room in rooms {
        bob.send(json!({"type": "publish", "room": room, "data": 1, "ref": "p"}));
        let seq = bob.next_of_type("ack")["seq"].clone();
        leaver.send(json!({"type": "leave", "room": room}));
        let left = leaver.next_of_type("left");
        assert_eq!(left, json!({"type": "left", "room": room, "seq": seq}), "{room}");
        // Nothing of the room arrives after `left`.
        bob.send(json!({"type": "publish", "room": room, "data": 2, "ref": "q"}));
        bob.next_of_type("ack");
        leaver.send(json!({"type": "ping", "ref": "after"}));
        let next = next_skipping_history(&mut leaver);
        assert!(matches!(&next, Message::Text(t) if t.starts_with(r#"{"type":"pong""#)), "{room}: {next:?}");
        // With a ref the answer is the ack, as before, and no `left`.
        leaver.send(json!({"type": "join", "room": room}));
        leaver.next_of_type("welcome");
        leaver.send(json!({"type": "leave", "room": room, "ref": 9}));
        let ack = next_skipping_history(&mut leaver);
        assert!(matches!(&ack, Message::Text(t) if t.starts_with(r#"{"type":"ack","ref":9,"seq":"#)), "{ack:?}");
    }
}

/// Seed 004: `echo` answers its `data` byte for byte, `status` tells the
/// connection what the server knows of it (docs/protocol.md §3.8, §3.9).
#[test]
fn echo_and_status_answer_the_sender() {
    let server = Server::start(&[]);
    let (mut alice, welcome) = server.join("demo", "alice");
    let data = r#"{ "x" : [1, 2.50, "é"], "y":null }"#;
    alice.send_text(&format!(r#"{{"type":"echo","ref":"e1","data":{data}}}"#));
    match next_skipping_history(&mut alice) {
        Message::Text(text) => assert_eq!(text.as_str(), format!(r#"{{"type":"echo","ref":"e1","data":{data}}}"#)),
        other => panic!("expected the echo, got {other:?}"),
    }
    alice.send(json!({"type": "echo"}));
    assert_eq!(alice.next_of_type("error")["code"], "bad_request");

    alice.send(json!({"type": "status", "ref": 7}));
    let status = alice.next_of_type("status");
    assert_eq!(status["ref"], 7);
    assert_eq!(status["conn"], welcome["conn"]);
    assert_eq!(status["user"], "alice");
    assert_eq!(status["shard"], welcome["shard"]);
    assert_eq!(status["rooms"][0], "demo");
    assert_eq!(status["rooms"][1], "user:alice");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_s"].is_u64());
}

/// `rooms.personal_rooms = false`: no personal room at connect, so a
/// `direct` finds nobody until the user joins its own personal room
/// (docs/protocol.md §13).
#[test]
fn without_personal_rooms_a_direct_reaches_only_a_user_who_joined_its_own() {
    let server = Server::start(&["--set", "rooms.personal_rooms=false"]);
    let (mut alice, _) = server.join("demo", "alice");
    let (mut bob, _) = server.join("other", "bob");
    bob.send(json!({"type": "status", "ref": 1}));
    assert_eq!(bob.next_of_type("status")["rooms"], json!(["other"]));

    alice.send(json!({"type": "direct", "to": "bob", "data": 1, "ref": 2}));
    let refused = alice.next_of_type("error");
    assert_eq!((refused["code"].as_str(), refused["ref"].as_i64()), (Some("not_found"), Some(2)));

    bob.send(json!({"type": "join", "room": "user:bob", "ref": 3}));
    assert_eq!(bob.next_of_type("welcome")["room"], "user:bob");
    alice.send(json!({"type": "direct", "to": "bob", "data": {"x": 1}, "ref": 4}));
    assert_eq!(alice.next_of_type("ack")["ref"], 4);
    assert_eq!(bob.next_of_type("direct"), json!({"type": "direct", "from": "alice", "data": {"x": 1}}));

    // Joined, not entered at connect: it can be left like any joined room.
    bob.send(json!({"type": "leave", "room": "user:bob", "ref": 5}));
    assert_eq!(bob.next_of_type("ack")["ref"], 5);
    alice.send(json!({"type": "direct", "to": "bob", "data": 2, "ref": 6}));
    assert_eq!(alice.next_of_type("error")["code"], "not_found");
}
