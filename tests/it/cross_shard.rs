//! Rooms across shards (`--shards 4`): rooms are chosen so that their owner
//! differs from the members' home shards, and `welcome.shard` proves it.

use std::collections::{BTreeMap, BTreeSet};

use roomcast::__private::RoomKey;
use serde_json::{Value, json};

use super::harness::{Claims, Client, PATIENCE, Server, http_get_json, token};

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

/// Waits until `client`'s quiet join of `room` (its personal or a group
/// room, entered at connect) is confirmed by the room's owner. No event
/// says so, so this publishes `null` into the room until the answer is an
/// ack instead of `join_pending` (bounded, with a deadline).
fn until_joined(client: &mut Client, room: &str) {
    let start = std::time::Instant::now();
    for reference in 1000.. {
        let (reply, _) = call(client, json!({"type": "publish", "room": room, "data": null}), reference);
        if reply["type"] == "ack" {
            return;
        }
        assert_eq!(reply["code"], "join_pending", "{reply}");
        assert!(start.elapsed() < PATIENCE, "{room} never joined");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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
    until_joined(&mut bob, "group:blue");
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
    until_joined(&mut bob_1, "user:bob");
    until_joined(&mut bob_2, "user:bob");
    let mut alice = connect(&server, &room_on("home", 3), "alice", &[]);
    let (ack, _) = call(&mut alice, json!({"type": "direct", "to": "bob", "data": {"x": 1}}), 1);
    assert_eq!(ack["type"], "ack");
    for bob in [&mut bob_1, &mut bob_2] {
        assert_eq!(bob.next_of_type("direct"), json!({"type": "direct", "from": "alice", "data": {"x": 1}}));
    }
    let (missing, _) = call(&mut alice, json!({"type": "direct", "to": "nobody", "data": 1}), 2);
    assert_eq!(missing["code"], "not_found");
}

const ADMIN_KEY: &str = "admin-key-0123456789";

/// The users the homes list in room `room` (`/api/v1/live/rooms/{room}`),
/// sorted; empty when no connection is in it.
fn live_users(server: &Server, room: &str) -> Vec<String> {
    let (status, listing) = http_get_json(server.addr, &format!("/api/v1/live/rooms/{room}"), ADMIN_KEY);
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{listing}");
    let mut users: Vec<String> = listing["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user"].as_str().expect("user").to_string())
        .collect();
    users.sort();
    users
}

/// Polls the admin listing (no event says when a closed connection is
/// reaped) until `room` holds exactly `users`.
fn wait_for_live_users(server: &Server, room: &str, users: &[&str]) {
    let start = std::time::Instant::now();
    loop {
        let live = live_users(server, room);
        if live == users {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{room} still lists {live:?}, not {users:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The members the owner lists in `room`, as seen in a newcomer's welcome.
fn owner_view(server: &Server, room: &str) -> (Value, Vec<String>) {
    let mut probe = connect(server, &room_on("probe-home", 3), "probe", &[]);
    let (ack, frames) = call(&mut probe, json!({"type": "join", "room": room}), 1);
    assert_eq!(ack["type"], "ack", "{ack}");
    let welcome = frames.into_iter().find(|f| f["type"] == "welcome").expect("welcome");
    let mut users: Vec<String> =
        welcome["members"].as_array().expect("members").iter().map(|m| m["user"].as_str().unwrap().into()).collect();
    users.sort();
    (welcome["member_count"].clone(), users)
}

#[test]
fn a_connection_closed_before_its_join_is_confirmed_leaves_no_ghost_member() {
    let mut server = Server::start_logging("debug", &["--shards", "4", "--admin-key", ADMIN_KEY]);
    let room = room_on("ghost", 2);
    let mut watcher = connect(&server, &room, "watcher", &[]);
    let mut ghost = connect(&server, &room_on("home", 1), "ghost", &[]);
    // The join and a Close in one write: the home shard reads both in one
    // read and handles them in one iteration, and the Join only leaves for
    // the owner at the end of it. So the connection is closing, its room
    // still pending, when the owner's `Joined` comes back: the undo path.
    let join = json!({"type": "join", "room": room}).to_string();
    ghost.send_frames_in_one_write(&[(0x1, join.as_bytes()), (0x8, &[0x03, 0xe8])]);
    assert_eq!(ghost.expect_close().0, 1000, "the server answers the Close");
    let undone = server.wait_for_log("join undone");
    assert!(undone.contains(&room), "{undone}");
    // The owner had taken the join (member_joined) and then the undo.
    assert_eq!(watcher.next_of_type("member_joined")["member"]["user"], "ghost");
    let left = watcher.next_of_type("member_left");
    assert_eq!((left["member"]["user"].as_str(), left["member_count"].as_u64()), (Some("ghost"), Some(1)));
    // No ghost: not at the owner (a newcomer's welcome), not at any home (the live listing).
    assert_eq!(owner_view(&server, &room), (json!(2), vec!["watcher".to_string()]));
    wait_for_live_users(&server, &room, &["watcher"]);
}

#[test]
fn a_connection_closed_after_its_join_is_confirmed_leaves_no_ghost_member() {
    let server = Server::start(&["--shards", "4", "--admin-key", ADMIN_KEY]);
    let room = room_on("ghost", 2);
    let mut watcher = connect(&server, &room, "watcher", &[]);
    let mut member = connect(&server, &room_on("home", 1), "member", &[]);
    // The welcome comes after `Joined` on the same channel: the home has
    // recorded the membership by the time the client reads the ack.
    let (ack, frames) = call(&mut member, json!({"type": "join", "room": room}), 1);
    assert_eq!(ack["type"], "ack");
    assert!(frames.iter().any(|f| f["type"] == "welcome" && f["shard"] == 2));
    assert_eq!(watcher.next_of_type("member_joined")["member"]["user"], "member");
    wait_for_live_users(&server, &room, &["member", "watcher"]);
    member.ws.close(None).expect("close");
    assert_eq!(member.expect_close().0, 1000);
    let left = watcher.next_of_type("member_left");
    assert_eq!((left["member"]["user"].as_str(), left["member_count"].as_u64()), (Some("member"), Some(1)));
    assert_eq!(owner_view(&server, &room), (json!(2), vec!["watcher".to_string()]));
    wait_for_live_users(&server, &room, &["watcher"]);
}

#[test]
fn join_follows_the_room_claim_and_stays_within_the_tenant() {
    let server = start();
    // A prefix claim: rooms under it, and nothing else (personal rooms aside).
    let scoped_token = token(&Claims { sub: "scoped", room: Some("team-*"), ..Claims::default() });
    let home = room_on("team-home", 1);
    let mut scoped = Client::connect(&server.url(&home, &format!("token={scoped_token}"))).expect("connect");
    scoped.next_of_type("welcome");
    let inside = room_on("team-x", 3);
    assert_eq!(call(&mut scoped, json!({"type": "join", "room": inside}), 1).0["type"], "ack");
    for (i, outside) in ["other", "team", "xteam-1", "Team-1"].into_iter().enumerate() {
        let (refused, _) = call(&mut scoped, json!({"type": "join", "room": outside}), 10 + i as u64);
        assert_eq!(refused["code"], "forbidden", "{outside}: {refused}");
    }
    // Tenants: the same room id is a different room in each tenant, owned
    // by the hash of room and tenant, and a join never crosses over.
    let in_tenant = |tenant: Option<&'static str>, user: &'static str| {
        let token = token(&Claims { sub: user, tenant, ..Claims::default() });
        let mut client = Client::connect(&server.url(&room_on("home", 0), &format!("token={token}"))).expect("c");
        client.next_of_type("welcome");
        let (ack, frames) = call(&mut client, json!({"type": "join", "room": "shared"}), 1);
        assert_eq!(ack["type"], "ack", "{ack}");
        let welcome = frames.into_iter().find(|f| f["type"] == "welcome").expect("welcome");
        let owner = RoomKey::new(tenant.unwrap_or(""), "shared").shard(SHARDS);
        assert_eq!(welcome["shard"].as_u64(), Some(u64::from(owner)), "{welcome}");
        (client, welcome)
    };
    let (mut acme_1, welcome) = in_tenant(Some("acme"), "a1");
    assert_eq!(welcome["member_count"], 1);
    let (_globex, welcome) = in_tenant(Some("globex"), "g1");
    assert_eq!(welcome["member_count"], 1, "acme's member is not in globex's room");
    let (_default, welcome) = in_tenant(None, "d1");
    assert_eq!(welcome["member_count"], 1);
    let (mut acme_2, welcome) = in_tenant(Some("acme"), "a2");
    assert_eq!((welcome["member_count"].as_u64(), welcome["members"][0]["user"].as_str()), (Some(2), Some("a1")));
    acme_2.send(json!({"type": "publish", "room": "shared", "data": "acme only"}));
    let message = acme_1.next_of_type("message");
    assert_eq!((message["data"].as_str(), message["from"].as_str()), (Some("acme only"), Some("a2")));
}

#[test]
fn the_joined_rooms_limit_refuses_with_too_many_rooms() {
    // The URL room and the personal room leave room for one join.
    let server = Server::start(&["--shards", "4", "--set", "limits.rooms_per_connection_max=3"]);
    let mut client = connect(&server, &room_on("home", 0), "u", &[]);
    let (first, second) = (room_on("one", 1), room_on("two", 2));
    // A pending join counts: the second is refused before the first is confirmed.
    client.send(json!({"type": "join", "room": first, "ref": 1}));
    client.send(json!({"type": "join", "room": second, "ref": 2}));
    let (mut acked, mut refused) = (None, None);
    while acked.is_none() || refused.is_none() {
        let frame = client.next_json();
        match (frame["type"].as_str(), frame["ref"].as_u64()) {
            (Some("ack"), Some(1)) => acked = Some(frame),
            (Some("error"), Some(2)) => refused = Some(frame),
            (Some("ack" | "error"), _) => panic!("unexpected reply {frame}"),
            _ => {}
        }
    }
    assert_eq!(refused.expect("refused")["code"], "too_many_rooms");
    assert_eq!(call(&mut client, json!({"type": "leave", "room": first}), 3).0["type"], "ack");
    assert_eq!(call(&mut client, json!({"type": "join", "room": second}), 4).0["type"], "ack", "a leave frees a place");
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
    // Room i and barrier i share their owner, shard i.
    let barriers: Vec<String> = (0..4).map(|i| room_on(&format!("barrier{i}"), i as u16)).collect();
    // One member per room stays throughout, so no room empties (a room that
    // empties is freed and its seq starts again) and each has a full record.
    let mut anchors: Vec<Client> = rooms.iter().map(|room| connect(&server, room, "anchor", &[])).collect();
    const CLIENTS: usize = 10;
    const STEPS: usize = 60;
    let logs: Vec<(Client, Log)> = std::thread::scope(|scope| {
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
                // Into one barrier room per shard, for the end of the test.
                for barrier in &barriers {
                    reference += 1;
                    let (ack, frames) = call(&mut client, json!({"type": "join", "room": barrier}), reference);
                    assert_eq!(ack["type"], "ack", "{ack}");
                    record(&mut log, &frames);
                }
                (client, log)
            })
            .collect::<Vec<_>>()
    });
    let mut publishers: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for (c, (_, log)) in logs.iter().enumerate() {
        for (room, seqs) in &log.published {
            for seq in seqs {
                assert!(publishers.insert((room.clone(), *seq), c).is_none(), "seq {seq} of {room} acked twice");
            }
        }
    }
    // Each anchor got every message of its room once, in order.
    for (room, anchor) in rooms.iter().zip(&mut anchors) {
        let last = publishers.keys().filter(|(r, _)| r == room).map(|(_, seq)| *seq).max().unwrap_or(0);
        let mut got = Vec::new();
        while got.last().copied().unwrap_or(0) < last {
            got.push(anchor.next_of_type("message")["seq"].as_u64().expect("seq"));
        }
        assert_eq!(got, (1..=last).collect::<Vec<_>>(), "the anchor of {room} got every message once, in order");
    }
    // Barrier: after every client's last leave, each anchor publishes once
    // more in its room (nobody but the anchor is in it now), then in the
    // barrier room of the same owner. Each client reads on until it has all
    // four barrier messages: a message of a room delivered after its leave
    // would arrive before the barrier on the same owner's channel, and be
    // caught below as a delivery outside the member's time in the room.
    for (i, anchor) in anchors.iter_mut().enumerate() {
        let (ack, _) = call(anchor, json!({"type": "join", "room": barriers[i]}), 1);
        assert_eq!(ack["type"], "ack", "{ack}");
        let (ack, _) = call(anchor, json!({"type": "publish", "data": "after everyone left"}), 2);
        assert_eq!(ack["type"], "ack", "{ack}");
        let (ack, _) = call(anchor, json!({"type": "publish", "room": barriers[i], "data": "barrier"}), 3);
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let logs: Vec<Log> = logs
        .into_iter()
        .map(|(mut client, mut log)| {
            let mut barriers_seen = BTreeSet::new();
            while barriers_seen.len() < barriers.len() {
                let frame = client.next_json();
                record(&mut log, std::slice::from_ref(&frame));
                if frame["type"] == "message" && frame["data"] == "barrier" {
                    barriers_seen.insert(frame["room"].as_str().expect("room").to_string());
                }
            }
            log
        })
        .collect();
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
}

#[test]
fn a_rejoin_sent_while_the_first_join_is_in_flight_still_receives_broadcasts() {
    let server = start();
    let room = room_on("rejoin", 2);
    let mut publisher = connect(&server, &room, "pub", &[]);
    let mut rejoiner = connect(&server, &room_on("home", 1), "rejoiner", &[]);
    // Join, leave and join again in one write: the home shard handles them
    // in one iteration, so both joins reach the owner and the first is
    // undone (left) only when its `Joined` comes back. The owner's `Left`
    // for that undo must not make the home forget the second membership.
    let join = json!({"type": "join", "room": room, "ref": 1}).to_string();
    let leave = json!({"type": "leave", "room": room, "ref": 2}).to_string();
    let rejoin = json!({"type": "join", "room": room, "ref": 3}).to_string();
    rejoiner.send_frames_in_one_write(&[(0x1, join.as_bytes()), (0x1, leave.as_bytes()), (0x1, rejoin.as_bytes())]);
    loop {
        let frame = rejoiner.next_json();
        if frame["ref"] == 3 {
            assert_eq!(frame["type"], "ack", "{frame}");
            break;
        }
    }
    // Both joins arrived, then the first one's undo: the owner carried the
    // undo out, and its `Left` is on the way to the home ahead of anything
    // published from now on.
    for _ in 0..2 {
        assert_eq!(publisher.next_of_type("member_joined")["member"]["user"], "rejoiner");
    }
    let left = publisher.next_of_type("member_left");
    assert_eq!((left["member"]["user"].as_str(), left["member_count"].as_u64()), (Some("rejoiner"), Some(2)));
    let (ack, _) = call(&mut publisher, json!({"type": "publish", "data": "after the undo"}), 1);
    assert_eq!(ack["type"], "ack", "{ack}");
    let message = rejoiner.next_of_type("message");
    assert_eq!((message["room"].as_str(), message["data"].as_str()), (Some(room.as_str()), Some("after the undo")));
}

/// Connects `user` to `room` and returns it with its `welcome`, wherever
/// the connection is placed.
fn connect_anywhere(server: &Server, room: &str, user: &str) -> (Client, Value) {
    let token = token(&Claims { sub: user, ..Claims::default() });
    let mut client = Client::connect(&server.url(room, &format!("token={token}"))).expect("connect");
    let welcome = client.next_of_type("welcome");
    (client, welcome)
}

/// The shard part of a connection id `"shard.slot.generation"`.
fn conn_shard(welcome: &Value) -> u64 {
    let conn = welcome["conn"].as_str().unwrap_or_default();
    conn.split('.').next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("conn id in {welcome}"))
}

#[test]
fn a_big_room_spreads_new_members_over_every_shard_and_keeps_one_order_and_presence() {
    let server = Server::start(&["--shards", "4", "--set", "rooms.spread_from_members=3"]);
    let room = room_on("big", 1);
    let mut members = Vec::new();
    for i in 0..11 {
        let user = format!("m{i}");
        let (client, welcome) = connect_anywhere(&server, &room, &user);
        assert_eq!(welcome["shard"], 1, "the room's owner welcomes {user}: {welcome}");
        assert_eq!(welcome["member_count"], i + 1, "{welcome}");
        members.push((user, client, conn_shard(&welcome)));
    }
    // The first three fill the room on its owner; from then on each new
    // member goes to the next shard in turn, the owner's own turn included.
    let placed: Vec<u64> = members.iter().map(|(_, _, shard)| *shard).collect();
    assert_eq!(placed, [1, 1, 1, 1, 2, 3, 0, 1, 2, 3, 0], "shards of m0..m10");
    // Metrics come from the shards' periodic snapshots: read until it shows.
    let deadline = std::time::Instant::now() + PATIENCE;
    while metric_sum(&server, "roomcast_connections_spread_total") != 6.0 {
        assert!(std::time::Instant::now() < deadline, "roomcast_connections_spread_total never reached 6");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Presence reaches members on every shard: each saw m10 arrive.
    for (user, client, _) in members.iter_mut().take(10) {
        let joined = client.next_of_type("member_joined");
        let mut last = joined;
        while last["member"]["user"] != "m10" {
            last = client.next_of_type("member_joined");
        }
        assert_eq!(last["member"]["user"], "m10", "{user}");
    }
    // Two publishers on different shards: every member gets every message
    // of the other once, in one `seq` order.
    for i in 0..20 {
        members[0].1.send(json!({"type": "publish", "data": {"by": "m0", "i": i}}));
        members[4].1.send(json!({"type": "publish", "data": {"by": "m4", "i": i}}));
    }
    let mut by_seq: BTreeMap<u64, Value> = BTreeMap::new();
    for (user, client, _) in &mut members {
        let expected = if user == "m0" || user == "m4" { 20 } else { 40 };
        let mut last = 0;
        for _ in 0..expected {
            let message = client.next_of_type("message");
            let seq = message["seq"].as_u64().expect("seq");
            assert!(seq > last, "{user}: seq {seq} after {last}");
            last = seq;
            assert_ne!(message["data"]["by"], user.as_str(), "{user} got its own message");
            let data = by_seq.entry(seq).or_insert_with(|| message["data"].clone());
            assert_eq!(*data, message["data"], "seq {seq} differs for {user}");
        }
    }
    assert_eq!(by_seq.len(), 40);

    // A spread member leaves: the owner's members and the others hear it.
    let (gone, client, shard) = members.remove(6);
    assert_eq!(shard, 0);
    drop(client);
    for (user, client, _) in &mut members {
        let left = client.next_of_type("member_left");
        assert_eq!(left["member"]["user"], gone.as_str(), "{user}");
    }
}

/// The sum of a counter's series on `/metrics`.
fn metric_sum(server: &Server, family: &str) -> f64 {
    let (status, page) = super::harness::raw_http(server.addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 200);
    page.lines()
        .filter(|line| line.starts_with(family) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
