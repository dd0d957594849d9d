//! Rooms across shards (`--shards 4`): rooms are chosen so that their owner
//! differs from the members' home shards, and `welcome.shard` proves it.

use std::collections::{BTreeMap, BTreeSet};

use roomcast::ids::RoomKey;
use serde_json::{Value, json};

use super::harness::{Claims, Client, Server, token};

const SHARDS: usize = 4;

/// The owner of `room` (no tenant) with `SHARDS` shards.
fn owner(room: &str) -> u16 {
    RoomKey::new("", room).shard(SHARDS)
}

/// A room name with `prefix` owned by shard `shard`.
fn room_on(prefix: &str, shard: u16) -> String {
    (0..).map(|i| format!("{prefix}-{i}")).find(|room| owner(room) == shard).expect("some name hashes there")
}

fn start() -> Server {
    Server::start(&["--shards", "4"])
}

/// Connects `user` with home room `home` and optional token groups.
fn connect(server: &Server, home: &str, user: &str, groups: &[String]) -> Client {
    connect_at(server.addr, home, user, groups)
}

fn connect_at(addr: std::net::SocketAddr, home: &str, user: &str, groups: &[String]) -> Client {
    let token = token(&Claims { sub: user, groups, ..Claims::default() });
    let mut client = Client::connect(&format!("ws://{addr}/ws/{home}?token={token}")).expect("connect");
    let welcome = client.next_of_type("welcome");
    assert_eq!(welcome["shard"].as_u64(), Some(u64::from(owner(home))), "home room lives on its owner");
    client
}

/// Sends `request` with `ref` and reads until its ack or error; returns it
/// and every other frame seen on the way.
fn call(client: &mut Client, mut request: Value, reference: u64) -> (Value, Vec<Value>) {
    request["ref"] = json!(reference);
    client.send(request);
    let mut others = Vec::new();
    loop {
        let frame = client.next_json();
        if frame["ref"] == json!(reference) && (frame["type"] == "ack" || frame["type"] == "error") {
            return (frame, others);
        }
        others.push(frame);
    }
}

#[test]
fn a_remote_join_gets_the_owner_s_welcome_and_the_same_messages_in_the_same_order() {
    let server = start();
    let room = room_on("meet", 0);
    let mut local = connect(&server, &room, "local", &[]);
    let mut remote_a = connect(&server, &room_on("home-a", 1), "ra", &[]);
    let mut remote_b = connect(&server, &room_on("home-b", 2), "rb", &[]);
    for (i, client) in [&mut remote_a, &mut remote_b].into_iter().enumerate() {
        let (ack, frames) = call(client, json!({"type": "join", "room": room}), 1);
        assert_eq!(ack["type"], "ack", "{ack}");
        let welcome = frames.iter().find(|f| f["type"] == "welcome").expect("welcome before the ack");
        assert_eq!(welcome["shard"], 0, "the welcome comes from the owner");
        assert_eq!(welcome["room"], room.as_str());
        assert_eq!(welcome["member_count"], 2 + i);
    }
    // Publishers on three different shards interleave.
    for i in 0..30 {
        local.send(json!({"type": "publish", "data": {"by": "local", "i": i}}));
        remote_a.send(json!({"type": "publish", "room": room, "data": {"by": "ra", "i": i}}));
        remote_b.send(json!({"type": "publish", "room": room, "data": {"by": "rb", "i": i}}));
    }
    let mut seen: Vec<BTreeMap<u64, Value>> = Vec::new();
    for (me, client) in [("local", &mut local), ("ra", &mut remote_a), ("rb", &mut remote_b)] {
        let mut got = BTreeMap::new();
        let mut last = 0;
        while got.len() < 60 {
            let message = client.next_of_type("message");
            let seq = message["seq"].as_u64().expect("seq");
            assert!(seq > last, "{me}: seq {seq} after {last}");
            last = seq;
            assert_ne!(message["data"]["by"], me, "{me} got its own message");
            got.insert(seq, message["data"].clone());
        }
        seen.push(got);
    }
    // Every pair of members agrees on what each seq they both received carried.
    let all: BTreeMap<u64, Value> = seen.iter().flatten().map(|(s, d)| (*s, d.clone())).collect();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), (1..=90).collect::<Vec<_>>());
    for got in &seen {
        for (seq, data) in got {
            assert_eq!(&all[seq], data, "seq {seq} differs between members");
        }
    }
}

#[test]
fn duplicate_join_and_leave_of_a_room_not_joined_change_nothing() {
    let server = start();
    let room = room_on("dup", 3);
    let mut client = connect(&server, &room_on("home", 1), "u", &[]);
    assert_eq!(call(&mut client, json!({"type": "join", "room": room}), 1).0["type"], "ack");
    let (second, _) = call(&mut client, json!({"type": "join", "room": room}), 2);
    assert_eq!(second["code"], "already_joined");
    let (leave, _) = call(&mut client, json!({"type": "leave", "room": "never-joined"}), 3);
    assert_eq!(leave["code"], "not_joined");
    let home = room_on("home", 1);
    assert_eq!(call(&mut client, json!({"type": "leave", "room": home}), 4).0["code"], "cannot_leave");
    let (bad, _) = call(&mut client, json!({"type": "join", "room": "bad room"}), 5);
    assert_eq!(bad["code"], "bad_room");
    // Still exactly one membership: a member count seen by a newcomer.
    let mut newcomer = connect(&server, &room, "n", &[]);
    let _ = &mut newcomer;
    let welcome_count = {
        let mut probe = connect(&server, &room_on("home", 2), "p", &[]);
        let (_, frames) = call(&mut probe, json!({"type": "join", "room": room}), 1);
        frames.iter().find(|f| f["type"] == "welcome").expect("welcome")["member_count"].clone()
    };
    assert_eq!(welcome_count, 3, "u once, n, and the probe");
}

#[test]
fn after_a_leave_ack_no_more_messages_arrive_and_a_rejoin_resumes() {
    let server = start();
    let room = room_on("leave", 0);
    let mut publisher = connect(&server, &room, "pub", &[]);
    let mut leaver = connect(&server, &room_on("home", 3), "leaver", &[]);
    assert_eq!(call(&mut leaver, json!({"type": "join", "room": room}), 1).0["type"], "ack");
    let (ack, _) = call(&mut publisher, json!({"type": "publish", "data": "before"}), 1);
    assert_eq!(ack["seq"], 1);
    let (left, before_ack) = call(&mut leaver, json!({"type": "leave", "room": room}), 2);
    assert_eq!(left["seq"], 1, "the leave ack names the last seq the member was sent");
    assert!(before_ack.iter().any(|f| f["type"] == "message" && f["seq"] == 1));
    assert_eq!(call(&mut publisher, json!({"type": "publish", "data": "after"}), 2).0["seq"], 2);
    // Rejoin: everything that reaches the leaver before the new welcome was
    // sent while it was out, so seq 2 must not be among it.
    let (rejoin, frames) = call(&mut leaver, json!({"type": "join", "room": room}), 3);
    assert_eq!(rejoin["seq"], 2);
    assert!(frames.iter().all(|f| f["type"] != "message"), "no message while out of the room: {frames:?}");
    publisher.send(json!({"type": "publish", "data": "again"}));
    assert_eq!(leaver.next_of_type("message")["seq"], 3);
}

#[test]
fn personal_and_group_rooms_come_from_claims_and_others_are_refused() {
    let server = start();
    let blue = vec!["blue".to_string()];
    let mut alice = connect(&server, &room_on("home", 0), "alice", &blue);
    let mut bob = connect(&server, &room_on("home", 1), "bob", &blue);
    let (denied, _) = call(&mut alice, json!({"type": "join", "room": "group:red"}), 1);
    assert_eq!(denied["code"], "forbidden");
    let (denied, _) = call(&mut alice, json!({"type": "join", "room": "user:bob"}), 2);
    assert_eq!(denied["code"], "forbidden");
    let (already, _) = call(&mut alice, json!({"type": "join", "room": "group:blue"}), 3);
    assert_eq!(already["code"], "already_joined", "group rooms are joined at connect");
    assert_eq!(call(&mut alice, json!({"type": "leave", "room": "group:blue"}), 4).0["code"], "cannot_leave");
    let (ack, _) = call(&mut alice, json!({"type": "publish", "room": "group:blue", "data": "hi blue"}), 5);
    assert_eq!(ack["type"], "ack");
    let message = bob.next_of_type("message");
    assert_eq!((message["room"].as_str(), message["data"].as_str()), (Some("group:blue"), Some("hi blue")));
}

#[test]
fn direct_reaches_every_connection_of_a_user_on_any_shard() {
    let server = start();
    let mut bob_1 = connect(&server, &room_on("home", 0), "bob", &[]);
    let mut bob_2 = connect(&server, &room_on("home", 2), "bob", &[]);
    let mut alice = connect(&server, &room_on("home", 3), "alice", &[]);
    let (ack, _) = call(&mut alice, json!({"type": "direct", "to": "bob", "data": {"x": 1}}), 1);
    assert_eq!(ack["type"], "ack");
    for bob in [&mut bob_1, &mut bob_2] {
        assert_eq!(bob.next_of_type("direct"), json!({"type": "direct", "from": "alice", "data": {"x": 1}}));
    }
    let (missing, _) = call(&mut alice, json!({"type": "direct", "to": "nobody", "data": 1}), 2);
    assert_eq!(missing["code"], "not_found");
}

#[test]
fn a_connection_dropped_mid_join_leaves_no_ghost_member() {
    let server = start();
    let room = room_on("ghost", 2);
    let mut watcher = connect(&server, &room, "watcher", &[]);
    for attempt in 0..5 {
        let user = format!("ghost{attempt}");
        let mut ghost = connect(&server, &room_on("home", 1), &user, &[]);
        // The join and the close leave in one burst, so the join is in flight
        // at the owner while the home shard closes the connection.
        ghost.send(json!({"type": "join", "room": room}));
        drop(ghost);
        // The owner saw the join (member_joined) and then its undo (member_left).
        let joined = watcher.next_of_type("member_joined");
        assert_eq!(joined["member"]["user"], user.as_str());
        let left = watcher.next_of_type("member_left");
        assert_eq!(left["member"]["user"], user.as_str());
        assert_eq!(left["member_count"], 1);
    }
}

/// A small deterministic generator (no dependency): xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What one client did and saw in the randomized test.
#[derive(Default)]
struct Log {
    /// Per room: (seq at join, seq at leave or None while still in).
    intervals: BTreeMap<String, Vec<(u64, Option<u64>)>>,
    /// Per room: seqs it published.
    published: BTreeMap<String, BTreeSet<u64>>,
    /// Per room: seqs it received, with duplicates kept.
    received: BTreeMap<String, Vec<u64>>,
}

fn record(log: &mut Log, frames: &[Value]) {
    for frame in frames.iter().filter(|f| f["type"] == "message") {
        let room = frame["room"].as_str().expect("room").to_string();
        log.received.entry(room).or_default().push(frame["seq"].as_u64().expect("seq"));
    }
}

#[test]
fn randomized_joins_publishes_and_leaves_deliver_exactly_once_to_exactly_the_members_present() {
    let seed: u64 = std::env::var("ROOMCAST_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234);
    let server = start();
    let rooms: Vec<String> = (0..4).map(|i| room_on(&format!("mix{i}"), i as u16)).collect();
    // One member per room stays throughout, so no room empties (a room that
    // empties is freed and its seq starts again) and each has a full record.
    let mut anchors: Vec<Client> = rooms.iter().map(|room| connect(&server, room, "anchor", &[])).collect();
    const CLIENTS: usize = 10;
    const STEPS: usize = 60;
    let logs: Vec<Log> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let addr = server.addr;
                let rooms = &rooms;
                scope.spawn(move || {
                    let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let home = room_on(&format!("solo{c}"), (c % SHARDS) as u16);
                    let mut client = connect_at(addr, &home, &format!("c{c}"), &[]);
                    let mut log = Log::default();
                    let mut inside: BTreeSet<String> = BTreeSet::new();
                    let mut reference = 0;
                    for _ in 0..STEPS {
                        reference += 1;
                        let room = &rooms[rng.below(rooms.len() as u64) as usize];
                        let action = rng.below(10);
                        if !inside.contains(room) && action < 4 {
                            let (ack, frames) = call(&mut client, json!({"type": "join", "room": room}), reference);
                            record(&mut log, &frames);
                            let seq = ack["seq"].as_u64().unwrap_or_else(|| panic!("join ack: {ack}"));
                            log.intervals.entry(room.clone()).or_default().push((seq, None));
                            inside.insert(room.clone());
                        } else if inside.contains(room) && action < 2 {
                            let (ack, frames) = call(&mut client, json!({"type": "leave", "room": room}), reference);
                            record(&mut log, &frames);
                            let seq = ack["seq"].as_u64().unwrap_or_else(|| panic!("leave ack: {ack}"));
                            if let Some(open) = log.intervals.get_mut(room).and_then(|v| v.last_mut()) {
                                open.1 = Some(seq);
                            }
                            inside.remove(room);
                        } else if inside.contains(room) {
                            let (ack, frames) =
                                call(&mut client, json!({"type": "publish", "room": room, "data": c}), reference);
                            record(&mut log, &frames);
                            let seq = ack["seq"].as_u64().unwrap_or_else(|| panic!("publish ack: {ack}"));
                            log.published.entry(room.clone()).or_default().insert(seq);
                        }
                    }
                    (client, log, inside, reference)
                })
            })
            .collect();
        let finished: Vec<_> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
        // Every publish is acked by now. Leaving each room last: its ack
        // comes after every message the owner sent this member.
        finished
            .into_iter()
            .map(|(mut client, mut log, inside, mut reference)| {
                for room in inside {
                    reference += 1;
                    let (ack, frames) = call(&mut client, json!({"type": "leave", "room": room}), reference);
                    record(&mut log, &frames);
                    if let Some(open) = log.intervals.get_mut(&room).and_then(|v| v.last_mut()) {
                        open.1 = Some(ack["seq"].as_u64().expect("leave seq"));
                    }
                }
                log
            })
            .collect()
    });
    let mut publishers: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for (c, log) in logs.iter().enumerate() {
        for (room, seqs) in &log.published {
            for seq in seqs {
                assert!(publishers.insert((room.clone(), *seq), c).is_none(), "seq {seq} of {room} acked twice");
            }
        }
    }
    let mut deliveries = 0;
    for (c, log) in logs.iter().enumerate() {
        for room in &rooms {
            let expected: Vec<u64> = publishers
                .iter()
                .filter(|((r, seq), by)| {
                    r == room
                        && **by != c
                        && log.intervals.get(room).is_some_and(|v| {
                            v.iter().any(|(from, to)| *seq > *from && *seq <= to.expect("closed interval"))
                        })
                })
                .map(|((_, seq), _)| *seq)
                .collect();
            let got = log.received.get(room).cloned().unwrap_or_default();
            assert_eq!(got, expected, "client c{c} in {room} (seed {seed})");
            deliveries += got.len();
        }
    }
    assert!(deliveries > 100, "the run exercised delivery ({deliveries} deliveries)");
    for (room, anchor) in rooms.iter().zip(&mut anchors) {
        let last = publishers.keys().filter(|(r, _)| r == room).map(|(_, seq)| *seq).max().unwrap_or(0);
        let mut got = Vec::new();
        while got.last().copied().unwrap_or(0) < last {
            got.push(anchor.next_of_type("message")["seq"].as_u64().expect("seq"));
        }
        assert_eq!(got, (1..=last).collect::<Vec<_>>(), "the anchor of {room} got every message once, in order");
    }
}
