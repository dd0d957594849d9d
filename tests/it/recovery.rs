//! Issue 7, recovery after reconnect: `?since=SEQ&epoch=E` (and `join` with
//! `since`/`epoch`) replays the held `publish` messages after SEQ right
//! after the welcome, then live traffic; `recovered: false` when they are
//! not all held (too old, another epoch, a restart).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use roomcast::__private::RoomKey;
use serde_json::{Value, json};

use super::harness::{Claims, Client, PATIENCE, Server, token};

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
fn after_a_restart_only_the_new_epoch_is_recovered() {
    let server = Server::start(&[]);
    let (mut alice, welcome) = connect(&server, "boot", "alice", "");
    let old_epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    for n in 1..=3 {
        publish(&mut alice, "boot", n);
    }
    drop(alice);
    let server = Server::start_in(server.stop(), &[]);
    // Alice stays in the room, so it and its ring live on, and its seq
    // passes the `since` below: in range, nothing dropped. Only the epoch
    // tells the two histories apart.
    let (mut alice, welcome) = connect(&server, "boot", "alice", "");
    let new_epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    assert_ne!(new_epoch, old_epoch, "a restart starts a new epoch");
    let seqs: Vec<u64> = (1..=3).map(|n| publish(&mut alice, "boot", n)).collect();
    assert_eq!(seqs, [1, 2, 3], "seq starts again in the new epoch");

    let (mut bob, welcome) = connect(&server, "boot", "bob", &format!("&since=1&epoch={old_epoch}"));
    assert_eq!((welcome["recovered"].as_bool(), welcome["seq"].as_u64()), (Some(false), Some(3)), "{welcome}");
    publish(&mut alice, "boot", 4);
    assert_eq!(messages(&mut bob, 1), [4], "nothing replayed: the old epoch's 2 and 3 are other messages");

    let (mut carol, welcome) = connect(&server, "boot", "carol", &format!("&since=1&epoch={new_epoch}"));
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(messages(&mut carol, 3), [2, 3, 4]);
}

/// The sum over shards of a per-shard counter, once it reaches `at_least`
/// (shards send their counters once a second: polled, no event tells).
fn await_shard_sum(server: &Server, name: &str, at_least: f64) -> f64 {
    let started = Instant::now();
    loop {
        let text = super::store::metrics(server);
        let prefix = format!("{name}{{shard=");
        let sum: f64 = text
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if sum >= at_least {
            return sum;
        }
        assert!(started.elapsed() < PATIENCE, "{name} stayed below {at_least}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis()
}

#[test]
fn messages_older_than_the_age_bound_are_not_recovered_and_both_are_counted() {
    // Kept only within the millisecond they were published in.
    let server = Server::start(&["--set", "rooms.recovery_age_ms=0"]);
    let (mut alice, welcome) = connect(&server, "aged", "alice", "");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    for n in 1..=3 {
        publish(&mut alice, "aged", n);
    }
    // The last ack left the server after it read its clock for the publish:
    // once this clock has moved past the reading at the ack, the server's
    // next reading (at the reconnect below) is past the publish too.
    let acked_at = unix_now_ms();
    while unix_now_ms() <= acked_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut bob, welcome) = connect(&server, "aged", "bob", &format!("&since=1&epoch={epoch}"));
    assert_eq!((welcome["recovered"].as_bool(), welcome["seq"].as_u64()), (Some(false), Some(3)), "{welcome}");
    publish(&mut alice, "aged", 4);
    assert_eq!(messages(&mut bob, 1), [4], "2 and 3 aged out: nothing replayed");
    // A client that missed nothing has nothing to recover, however old the ring.
    let (mut carol, welcome) = connect(&server, "aged", "carol", &format!("&since=4&epoch={epoch}"));
    assert_eq!(welcome["recovered"], true, "{welcome}");
    publish(&mut alice, "aged", 5);
    assert_eq!(messages(&mut carol, 1), [5]);

    // 1 to 3 aged out before bob's welcome (4 may have by now too).
    assert!(await_shard_sum(&server, "roomcast_recovery_dropped_total", 3.0) >= 3.0);
    assert_eq!(await_shard_sum(&server, "roomcast_recovery_refused_total", 1.0), 1.0, "only bob's was refused");
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
