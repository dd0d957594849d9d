//! Unit tests of the room state machine: plain values in, outputs out.

use super::*;
use crate::protocol::MeetingRequest;

pub(super) fn conn(slot: u32) -> ConnId {
    ConnId { shard: 0, slot, generation: 1 }
}

/// Limits for tests: `members_max`, `welcome_members_max`, `presence_members_max` vary.
pub(super) fn limits(members_max: u32, welcome_members_max: u32, presence_members_max: u32) -> RoomLimits {
    RoomLimits {
        members_max,
        rooms_max: 100,
        welcome_members_max,
        presence_members_max,
        history_max: 3,
        welcome_history_max: 2,
        chat_text_chars_max: 10,
        screenshare_max: 1,
        lobby_default: false,
        recovery_messages_max: 3,
        recovery_age_ms: 1_000,
        require_registration: false,
    }
}

fn rooms() -> Rooms {
    Rooms::new(0, 2, limits(3, 10, 100))
}

/// Drains outputs as (recipients, JSON value) pairs, expanding broadcasts;
/// closes come out as `{"close": code}`.
pub(super) fn drain(rooms: &mut Rooms) -> Vec<(Vec<ConnId>, serde_json::Value)> {
    let mut seen = Vec::new();
    while let Some(output) = rooms.poll_output() {
        let (to, frame) = match output {
            Output::Deliver { to, frame } => (vec![to], frame),
            Output::Close { conn, code } => {
                seen.push((vec![conn], serde_json::json!({ "close": code.code })));
                continue;
            }
            Output::RoleChanged { conn, role, .. } => {
                seen.push((vec![conn], serde_json::json!({ "role_changed": role.as_str() })));
                continue;
            }
            Output::Persist(event) => {
                seen.push((Vec::new(), serde_json::json!({ "persist": format!("{event:?}") })));
                continue;
            }
            Output::Chatted { id, .. } => {
                seen.push((Vec::new(), serde_json::json!({ "chatted": &*id })));
                continue;
            }
            Output::Closed { key } => {
                seen.push((Vec::new(), serde_json::json!({ "closed": key.room() })));
                continue;
            }
            Output::Broadcast { room, audience, skip, frame } => {
                let mut to: Vec<ConnId> = rooms.audience(room, audience).filter(|c| Some(*c) != skip).collect();
                to.sort();
                (to, frame)
            }
        };
        let header = if frame[1] < 126 { 2 } else { 4 };
        seen.push((to, serde_json::from_slice(&frame[header..]).expect("server frames are JSON")));
    }
    seen
}

#[test]
fn joiner_gets_welcome_and_others_get_member_joined() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "demo");
    let alice = Peer::new(conn(1), "alice", Some("Alice"));
    let bob = Peer::new(conn(2), "bob", None);
    rooms.join(&alice, &key, false, None).expect("room has space");
    let first = drain(&mut rooms);
    assert_eq!(first.len(), 1, "no presence to an empty room");
    assert_eq!(first[0].0, [conn(1)]);
    assert_eq!(first[0].1["type"], "welcome");
    assert_eq!(first[0].1["member_count"], 1);
    assert_eq!(first[0].1["conn"], "0.1.1");

    rooms.join(&bob, &key, false, None).expect("room has space");
    let second = drain(&mut rooms);
    assert_eq!(second[0].0, [conn(2)]);
    assert_eq!(
        second[0].1["members"],
        serde_json::json!([{"conn": "0.1.1", "user": "alice", "name": "Alice", "role": "host"}])
    );
    assert_eq!(second[0].1["role"], "participant");
    assert_eq!(second[1].0, [conn(1)]);
    assert_eq!(second[1].1["type"], "member_joined");
    assert_eq!(second[1].1["member"]["user"], "bob");
    assert_eq!(second[1].1["member_count"], 2);
}

#[test]
fn publish_goes_to_everyone_else_with_increasing_seq_and_acks_the_publisher() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "demo");
    let members: Vec<_> = (1..=3).map(|i| Peer::new(conn(i), &format!("u{i}"), None)).collect();
    let memberships: Vec<_> = members.iter().map(|p| rooms.join(p, &key, false, None).expect("space")).collect();
    drain(&mut rooms);

    assert_eq!(rooms.publish(memberships[0], conn(1), None, br#"{"n":1}"#, 0), Some(Ok(1)));
    assert_eq!(rooms.publish(memberships[1], conn(2), Some(b"\"r\""), br#"[1, 2]"#, 0), Some(Ok(2)));
    let seen = drain(&mut rooms);
    assert_eq!(seen[0].0, [conn(2), conn(3)]);
    assert_eq!(seen[0].1, serde_json::json!({"type":"message","room":"demo","from":"u1","seq":1,"data":{"n":1}}));
    assert_eq!(seen[1].0, [conn(1), conn(3)]);
    assert_eq!(seen[1].1["seq"], 2);
    assert_eq!(seen[2].0, [conn(2)]);
    assert_eq!(seen[2].1, serde_json::json!({"type":"ack","ref":"r","seq":2}));
}

#[test]
fn a_lone_publisher_is_acked_and_nobody_else_is_sent_anything() {
    let mut rooms = rooms();
    let alone = rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("", "solo"), false, None).expect("space");
    drain(&mut rooms);
    rooms.publish(alone, conn(1), Some(b"1"), b"0", 0);
    let seen = drain(&mut rooms);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1["type"], "ack");
}

#[test]
fn capacity_is_enforced_and_freed_by_leave() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "small");
    let joined: Vec<_> =
        (1..=3).map(|i| rooms.join(&Peer::new(conn(i), "u", None), &key, false, None).expect("space")).collect();
    assert_eq!(rooms.join(&Peer::new(conn(4), "u", None), &key, false, None), Err(Refusal::RoomFull));
    assert!(rooms.leave(joined[0], conn(1), None));
    assert!(rooms.join(&Peer::new(conn(4), "u", None), &key, false, None).is_ok());
}

#[test]
fn leave_tells_the_rest_and_the_last_leave_frees_the_room() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "demo");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    let b = rooms.join(&Peer::new(conn(2), "b", None), &key, false, None).expect("space");
    drain(&mut rooms);
    assert!(rooms.leave(a, conn(1), None));
    let seen = drain(&mut rooms);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, [conn(2)]);
    assert_eq!(seen[0].1["type"], "member_left");
    assert_eq!(seen[0].1["member"]["user"], "a");
    // a was the host (first member): b, the longest present, takes over.
    assert_eq!(seen[1], (vec![conn(2)], serde_json::json!({"type":"role","room":"demo","user":"b","role":"host"})));
    assert!(rooms.leave(b, conn(2), None));
    assert!(drain(&mut rooms).is_empty());
    assert!(rooms.is_empty());
}

#[test]
fn in_a_room_past_the_presence_bound_only_the_new_host_hears_of_its_hand_over() {
    // A fleet leaving in arrival order makes a new host at each departure:
    // telling every member each time would be n²/2 frames.
    let mut rooms = Rooms::new(0, 2, limits(10, 10, 2));
    let key = RoomKey::new("", "big");
    let members: Vec<Membership> = (1..=4)
        .map(|slot| rooms.join(&Peer::new(conn(slot), &format!("u{slot}"), None), &key, false, None).expect("space"))
        .collect();
    drain(&mut rooms);
    assert!(rooms.leave(members[0], conn(1), None));
    // Three admitted members are left, past the bound of 2: u2 alone is told.
    assert_eq!(
        drain(&mut rooms),
        [(vec![conn(2)], serde_json::json!({"type":"role","room":"big","user":"u2","role":"host"}))]
    );
    assert!(rooms.leave(members[1], conn(2), None));
    // Two are left, within the bound: both hear of the new host (no
    // `member_left`: the room was past the bound before u2 left).
    let role = serde_json::json!({"type":"role","room":"big","user":"u3","role":"host"});
    assert_eq!(drain(&mut rooms), [(vec![conn(3), conn(4)], role)]);
}

#[test]
fn a_new_room_after_a_freed_one_starts_at_seq_zero() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "demo");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    rooms.publish(a, conn(1), None, b"1", 0);
    rooms.leave(a, conn(1), None);
    rooms.join(&Peer::new(conn(2), "b", None), &key, false, None).expect("space");
    assert_eq!(drain(&mut rooms).last().map(|(_, v)| v["seq"].clone()), Some(serde_json::json!(0)));
}

#[test]
fn tenants_never_share_a_room() {
    let mut rooms = rooms();
    let a = rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("acme", "demo"), false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "b", None), &RoomKey::new("globex", "demo"), false, None).expect("space");
    drain(&mut rooms);
    rooms.publish(a, conn(1), None, b"1", 0);
    assert!(drain(&mut rooms).is_empty(), "the other tenant's demo room got a message");
    assert_eq!(rooms.len(), 2);
}

#[test]
fn large_rooms_skip_presence_and_cap_the_welcome_list() {
    let mut rooms = Rooms::new(0, 2, limits(100, 2, 3));
    let key = RoomKey::new("", "big");
    let memberships: Vec<_> =
        (1..=5).map(|i| rooms.join(&Peer::new(conn(i), "u", None), &key, false, None).expect("space")).collect();
    let seen = drain(&mut rooms);
    let joined = seen.iter().filter(|(_, v)| v["type"] == "member_joined").count();
    assert_eq!(joined, 2, "presence only while the room has at most 3 members");
    let last_welcome = &seen.last().expect("welcome").1;
    assert_eq!(last_welcome["member_count"], 5);
    assert_eq!(last_welcome["members"].as_array().map(Vec::len), Some(2));
    rooms.leave(memberships[0], conn(1), None);
    let seen = drain(&mut rooms);
    assert!(seen.iter().all(|(_, v)| v["type"] != "member_left"), "no member_left in a room past the presence limit");
}

#[test]
fn binary_is_relayed_verbatim_to_the_others() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "bin");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "b", None), &key, false, None).expect("space");
    while rooms.poll_output().is_some() {}
    rooms.relay_binary(a, conn(1), &[0, 159, 146, 150]);
    match rooms.poll_output() {
        Some(Output::Broadcast { skip, frame, .. }) => {
            assert_eq!(skip, Some(conn(1)));
            assert_eq!(&frame[..], &[0x82, 4, 0, 159, 146, 150]);
        }
        other => panic!("expected a broadcast, got {other:?}"),
    }
}

#[test]
fn remote_members_are_counted_per_shard_and_listed_apart() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "wide");
    let local = Peer::new(conn(1), "l", None);
    let remote = Peer::new(ConnId { shard: 1, slot: 7, generation: 3 }, "r", None);
    let l = rooms.join(&local, &key, false, None).expect("space");
    let r = rooms.join(&remote, &key, false, None).expect("space");
    assert_eq!(rooms.local_audience(l.room_slot(), Audience::All).collect::<Vec<_>>(), [conn(1)]);
    assert_eq!(rooms.remote_shards(l.room_slot()).collect::<Vec<_>>(), [1]);
    // The remote joiner's welcome is addressed to its own ConnId; the shard routes it.
    let seen = drain(&mut rooms);
    assert_eq!(seen[1].0, [remote.conn]);
    assert_eq!(seen[1].1["type"], "welcome");
    assert!(rooms.leave(r, remote.conn, None));
    assert_eq!(rooms.remote_shards(l.room_slot()).count(), 0);
}

#[test]
fn stale_memberships_change_nothing() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "stale");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "b", None), &key, false, None).expect("space");
    drain(&mut rooms);
    let impostor = ConnId { shard: 0, slot: 1, generation: 99 };
    assert!(!rooms.leave(a, impostor, None), "a reused slot's old membership is refused");
    assert_eq!(rooms.publish(a, impostor, None, b"1", 0), None);
    assert!(drain(&mut rooms).is_empty());
    assert!(rooms.leave(a, conn(1), None));
    assert!(!rooms.leave(a, conn(1), None), "a second leave is refused");
}

#[test]
fn quiet_joins_send_no_welcome_and_no_presence() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "user:alice");
    let a = rooms.join(&Peer::new(conn(1), "alice", None), &key, true, None).expect("space");
    rooms.join(&Peer::new(conn(2), "alice", None), &key, true, None).expect("space");
    assert!(drain(&mut rooms).is_empty());
    rooms.leave(a, conn(1), None);
    assert!(drain(&mut rooms).is_empty());
}

#[test]
fn direct_reaches_every_connection_of_the_user_and_acks() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "user:bob");
    rooms.join(&Peer::new(conn(1), "bob", None), &key, true, None).expect("space");
    rooms.join(&Peer::new(ConnId { shard: 1, slot: 4, generation: 1 }, "bob", None), &key, true, None).expect("space");
    let sender = Peer::new(conn(9), "alice", None);
    assert!(rooms.direct(&key, &sender, Some(b"5"), br#"{"hi":1}"#));
    let seen = drain(&mut rooms);
    assert_eq!(seen[0].0.len(), 2, "both of bob's connections");
    assert_eq!(seen[0].1, serde_json::json!({"type":"direct","from":"alice","data":{"hi":1}}));
    assert_eq!(seen[1], (vec![conn(9)], serde_json::json!({"type":"ack","ref":5})));
    assert!(!rooms.direct(&RoomKey::new("", "user:nobody"), &sender, None, b"1"));
}

#[test]
fn join_and_leave_acks_carry_the_room_seq() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "acks");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    rooms.publish(a, conn(1), None, b"1", 0);
    let b = rooms.join(&Peer::new(conn(2), "b", None), &key, false, Some(b"\"j\"")).expect("space");
    rooms.publish(a, conn(1), None, b"2", 0);
    rooms.leave(b, conn(2), Some(b"\"l\""));
    let acks: Vec<_> = drain(&mut rooms).into_iter().filter(|(_, v)| v["type"] == "ack").map(|(_, v)| v).collect();
    assert_eq!(
        acks,
        [serde_json::json!({"type":"ack","ref":"j","seq":1}), serde_json::json!({"type":"ack","ref":"l","seq":2})]
    );
}

#[test]
fn the_room_table_is_bounded() {
    let mut rooms = Rooms::new(0, 1, RoomLimits { rooms_max: 2, ..limits(10, 10, 10) });
    rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("", "r1"), false, None).expect("space");
    rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("", "r2"), false, None).expect("space");
    assert_eq!(
        rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("", "r3"), false, None),
        Err(Refusal::ShardRoomsFull)
    );
}

#[test]
fn per_room_structs_stay_small() {
    use std::mem::size_of;
    println!(
        "Room {} Member {} MeetingState {}",
        size_of::<Room>(),
        size_of::<Member>(),
        size_of::<meeting::MeetingState>()
    );
    // Every connection has a personal room: rooms must be cheap (what few
    // rooms need, meeting state included, is in `RoomExtra`, and a lone
    // member is inline).
    assert!(size_of::<Room>() <= 88);
    assert!(size_of::<Member>() <= 48);
}

#[test]
fn a_local_member_leaving_a_room_with_remote_members_keeps_the_counts() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "mixed");
    let local = rooms.join(&Peer::new(conn(1), "l", None), &key, false, None).expect("space");
    let remote_conn = ConnId { shard: 1, slot: 3, generation: 1 };
    rooms.join(&Peer::new(remote_conn, "r", None), &key, false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "l2", None), &key, false, None).expect("space");
    assert!(rooms.leave(local, conn(1), None));
    rooms.check_invariants();
    assert_eq!(rooms.remote_shards(local.room_slot()).collect::<Vec<_>>(), [1]);
}

#[test]
fn members_on_other_nodes_are_counted_for_metrics() {
    let mut rooms = rooms();
    let (a, b) = (RoomKey::new("", "a"), RoomKey::new("", "b"));
    let node2 = |slot| ConnId { shard: crate::ids::NODE_SHARD_BASE * 2, slot, generation: 1 };
    rooms.join(&Peer::new(conn(1), "l", None), &a, false, None).expect("space");
    let other_shard = rooms.join(&Peer::new(ConnId { shard: 1, slot: 3, generation: 1 }, "s", None), &a, false, None);
    let far = rooms.join(&Peer::new(node2(1), "r1", None), &a, false, None).expect("space");
    rooms.join(&Peer::new(node2(2), "r2", None), &b, false, None).expect("space");
    assert_eq!(rooms.remote_members(), 2, "members on another node only, not on another local shard");
    rooms.check_invariants();
    assert!(rooms.leave(far, node2(1), None));
    assert!(rooms.leave(other_shard.expect("space"), ConnId { shard: 1, slot: 3, generation: 1 }, None));
    assert_eq!(rooms.remote_members(), 1);
    let gone: Vec<_> = rooms.members_of_node(2);
    for (membership, conn) in gone {
        assert!(rooms.leave(membership, conn, None));
    }
    assert_eq!(rooms.remote_members(), 0, "room b went with its last member");
    rooms.check_invariants();
}

/// Every output, in order, without expanding broadcasts.
fn outputs(rooms: &mut Rooms) -> Vec<Output> {
    std::iter::from_fn(|| rooms.poll_output()).collect()
}

fn frame_json(frame: &Frame) -> serde_json::Value {
    let header = if frame[1] < 126 { 2 } else { 4 };
    serde_json::from_slice(&frame[header..]).expect("server frames are JSON")
}

fn stored(id: &str) -> StoredChat {
    StoredChat { id: id.into(), author: "old".into(), json: format!("{{\"id\":\"{id}\"}}").into_bytes().into() }
}

fn send_chat(rooms: &mut Rooms, membership: Membership, from: ConnId, text: &str, reference: &[u8]) {
    let request = MeetingRequest::ChatSend { text: text.into(), id: None };
    rooms.request(membership, from, &request, Some(reference), 1_700_000_000_000).expect("allowed");
}

#[test]
fn a_room_reads_its_history_only_when_the_store_may_hold_chat_of_it() {
    let mut rooms = Rooms::new(0, 2, limits(3, 10, 100)).with_store(7, true).with_chat_filter(1);
    let loads =
        |out: &[Output]| out.iter().filter(|o| matches!(o, Output::Persist(Persist::LoadHistory { .. }))).count();
    let stored = RoomKey::new("", "had-chat");
    rooms.remember_stored_chat([&stored]);

    // Never had chat: no read, a complete welcome.
    let fresh = RoomKey::new("", "fresh");
    let alice = rooms.join(&Peer::new(conn(1), "alice", None), &fresh, false, None).expect("space");
    let out = outputs(&mut rooms);
    assert_eq!(loads(&out), 0, "{out:?}");
    let welcome =
        out.iter().find_map(|o| if let Output::Deliver { frame, .. } = o { Some(frame_json(frame)) } else { None });
    assert_eq!(welcome.expect("a welcome").get("history_loading"), None);
    assert_eq!(rooms.history_loads_skipped(), 1);

    // Known to the store at start: read.
    rooms.join(&Peer::new(conn(2), "bob", None), &stored, false, None).expect("space");
    assert_eq!(loads(&outputs(&mut rooms)), 1);

    // Chat persisted in `fresh` makes the room read it when it is made again.
    send_chat(&mut rooms, alice, conn(1), "hi", b"1");
    outputs(&mut rooms);
    rooms.leave(alice, conn(1), None);
    outputs(&mut rooms);
    rooms.join(&Peer::new(conn(3), "carol", None), &fresh, false, None).expect("space");
    assert_eq!(loads(&outputs(&mut rooms)), 1, "its chat is in the store now");
    assert_eq!(rooms.history_loads_skipped(), 1);

    // Without a store nothing is read, and nothing counts as skipped.
    let mut memory = Rooms::new(0, 2, limits(3, 10, 100)).with_store(7, false).with_chat_filter(1);
    memory.join(&Peer::new(conn(1), "alice", None), &fresh, false, None).expect("space");
    assert_eq!((loads(&outputs(&mut memory)), memory.history_loads_skipped()), (0, 0));
}

#[test]
fn issue_7_durable_chat_acks_through_the_store_and_history_loads_once() {
    let mut rooms = Rooms::new(0, 2, limits(3, 10, 100)).with_store(7, true);
    let key = RoomKey::new("", "durable");
    let alice = rooms.join(&Peer::new(conn(1), "alice", None), &key, false, None).expect("space");
    let out = outputs(&mut rooms);
    let load = match &out[0] {
        Output::Persist(Persist::LoadHistory { key: asked, load, shard: 0, limit: 3 }) if *asked == key => *load,
        other => panic!("expected a history load first, got {other:?}"),
    };
    let Output::Deliver { frame, .. } = &out[1] else { panic!("expected the welcome") };
    let welcome = frame_json(frame);
    assert_eq!(welcome["history_loading"], true);
    assert_eq!(welcome["epoch"], "7.0.1");

    send_chat(&mut rooms, alice, conn(1), "hi", b"\"r1\"");
    let out = outputs(&mut rooms);
    assert_eq!(out.len(), 2, "broadcast and persist, no ack: {out:?}");
    let Output::Broadcast { frame, .. } = &out[0] else { panic!("expected the chat broadcast") };
    let chat = frame_json(frame);
    assert_eq!((chat["seq"].as_u64(), chat["epoch"].as_str()), (Some(1), Some("7.0.1")));
    assert_eq!(chat["id"], "srv-7.0.1-1");
    match &out[1] {
        Output::Persist(Persist::Chat(record)) => {
            assert_eq!((record.seq, record.sender, record.reference.as_deref()), (1, conn(1), Some(&b"\"r1\""[..])));
            assert_eq!(serde_json::from_slice::<serde_json::Value>(&record.json).unwrap(), chat, "stored as sent");
        }
        other => panic!("expected the chat to persist, got {other:?}"),
    }

    // Stored a, b, c plus "hi" sent meanwhile: the newest history_max (3) stay.
    rooms.history_loaded(&key, load, vec![stored("a"), stored("b"), stored("c")]);
    let out = outputs(&mut rooms);
    let [Output::Broadcast { frame, audience: Audience::Admitted, .. }] = &out[..] else {
        panic!("expected one chat_history to the room, got {out:?}")
    };
    let history = frame_json(frame);
    assert_eq!(history["type"], "chat_history");
    assert_eq!(history.get("loading"), None);
    let ids: Vec<&str> = history["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["b", "c", "srv-7.0.1-1"]);
    rooms.history_loaded(&key, load, vec![stored("x")]);
    assert!(outputs(&mut rooms).is_empty(), "a second answer changes nothing");

    rooms.join(&Peer::new(conn(2), "bob", None), &key, false, None).expect("space");
    let welcome = drain(&mut rooms).into_iter().find(|(_, v)| v["type"] == "welcome").expect("welcome").1;
    assert_eq!(welcome.get("history_loading"), None);
    assert_eq!(welcome["history"].as_array().map(Vec::len), Some(2), "welcome_history_max");

    let delete = MeetingRequest::ChatDelete { id: "b".into() };
    rooms.request(alice, conn(1), &delete, None, 0).expect("a host may delete");
    let deleted = outputs(&mut rooms)
        .into_iter()
        .any(|o| matches!(o, Output::Persist(Persist::ChatDelete { ref id, .. }) if &**id == "b"));
    assert!(deleted, "the deletion is persisted");
}

#[test]
fn issue_7_an_answer_for_a_freed_room_is_ignored_and_quiet_rooms_do_not_load() {
    let mut rooms = Rooms::new(0, 2, limits(3, 10, 100)).with_store(7, true);
    let key = RoomKey::new("", "gone");
    let first = rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    assert!(rooms.leave(first, conn(1), None));
    rooms.join(&Peer::new(conn(2), "b", None), &key, false, None).expect("space");
    let welcome = drain(&mut rooms).into_iter().rfind(|(_, v)| v["type"] == "welcome").expect("welcome").1;
    assert_eq!(welcome["epoch"], "7.0.2", "a new incarnation, a new epoch");
    rooms.history_loaded(&key, 1, vec![stored("old")]);
    assert!(outputs(&mut rooms).is_empty());

    rooms.join(&Peer::new(conn(3), "c", None), &RoomKey::personal("", "c"), true, None).expect("space");
    assert!(outputs(&mut rooms).is_empty(), "a quiet room reads nothing");
}

#[test]
fn issue_7_without_the_store_chat_acks_at_once() {
    let mut rooms = Rooms::new(0, 2, limits(3, 10, 100)).with_store(7, false);
    let key = RoomKey::new("", "memory");
    let alice = rooms.join(&Peer::new(conn(1), "alice", None), &key, false, None).expect("space");
    let welcome = drain(&mut rooms).remove(0).1;
    assert_eq!(welcome.get("history_loading"), None);
    send_chat(&mut rooms, alice, conn(1), "hi", b"1");
    let seen = drain(&mut rooms);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].1, serde_json::json!({"type": "ack", "ref": 1, "seq": 1}));
}

/// Room "r" with a publisher `conn(1)` and `count` publishes at `at(i)` ms.
fn room_with_publishes(count: u64, at: impl Fn(u64) -> u64) -> (Rooms, RoomKey, String) {
    let mut rooms = rooms();
    let key = RoomKey::new("", "r");
    let publisher = rooms.join(&Peer::new(conn(1), "pub", None), &key, false, None).expect("space");
    let welcome = drain(&mut rooms).remove(0).1;
    for i in 1..=count {
        rooms.publish(publisher, conn(1), None, format!("{i}").as_bytes(), at(i));
    }
    drain(&mut rooms);
    (rooms, key, welcome["epoch"].as_str().expect("epoch").to_owned())
}

fn since(seq: u64, epoch: &str) -> Since {
    Since { seq, epoch: Some(epoch.into()) }
}

#[test]
fn since_replays_the_held_messages_right_after_the_welcome_then_the_ack() {
    let (mut rooms, key, epoch) = room_with_publishes(3, |i| i);
    let peer = Peer::new(conn(2), "late", None);
    rooms.join_since(&peer, &key, false, Some(b"9"), Some(&since(1, &epoch)), 10).expect("space");
    let seen = drain(&mut rooms);
    assert_eq!(seen[0].0, [conn(2)]);
    assert_eq!((seen[0].1["type"].as_str(), seen[0].1["recovered"].as_bool()), (Some("welcome"), Some(true)));
    assert_eq!(seen[0].1["seq"], 3);
    let replayed: Vec<_> = seen[1..3].iter().map(|(to, frame)| (to.clone(), frame["seq"].clone())).collect();
    assert_eq!(replayed, [(vec![conn(2)], 2.into()), (vec![conn(2)], 3.into())]);
    assert_eq!(seen[1].1, serde_json::json!({"type":"message","room":"r","from":"pub","seq":2,"data":2}));
    assert_eq!(seen[3].1["type"], "member_joined");
    assert_eq!(seen[4].1, serde_json::json!({"type":"ack","ref":9,"seq":3}), "the ack after the welcome");
}

#[test]
fn since_at_the_current_seq_recovers_nothing_to_send() {
    let (mut rooms, key, epoch) = room_with_publishes(2, |i| i);
    rooms.join_since(&Peer::new(conn(2), "b", None), &key, false, None, Some(&since(2, &epoch)), 5).expect("space");
    let seen = drain(&mut rooms);
    assert_eq!(seen[0].1["recovered"], true);
    assert_eq!(seen[1].1["type"], "member_joined");
}

#[test]
fn since_older_than_the_ring_or_another_epoch_is_not_recovered() {
    // The ring holds 3 (test limits): messages 3..=5 of 5.
    let (mut rooms, key, epoch) = room_with_publishes(5, |i| i);
    let cases = [
        (since(1, &epoch), false),
        (since(2, &epoch), true),
        (since(3, "0.0.99"), false),
        (Since { seq: 3, epoch: None }, false),
        (since(6, &epoch), false),
    ];
    for (i, (point, recovered)) in cases.into_iter().enumerate() {
        let peer = Peer::new(conn(10 + i as u32), "b", None);
        let membership = rooms.join_since(&peer, &key, false, None, Some(&point), 5).expect("space");
        let seen = drain(&mut rooms);
        assert_eq!(seen[0].1["recovered"], recovered, "{point:?}");
        let messages = seen.iter().filter(|(to, f)| f["type"] == "message" && to == &[peer.conn]).count();
        assert_eq!(messages, if recovered { 3 } else { 0 }, "{point:?}");
        rooms.leave(membership, peer.conn, None);
        drain(&mut rooms);
    }
    let counts = rooms.recovery_counts();
    assert_eq!((counts.dropped, counts.refused), (2, 4), "1 and 2 pushed out by count; four refusals");
}

#[test]
fn messages_older_than_the_age_limit_are_dropped_at_the_join() {
    // Published at 100 and 2_000 ms; the age limit is 1_000 ms.
    let (mut rooms, key, epoch) = room_with_publishes(2, |i| if i == 1 { 100 } else { 2_000 });
    rooms.join_since(&Peer::new(conn(2), "b", None), &key, false, None, Some(&since(0, &epoch)), 2_500).expect("space");
    assert_eq!(drain(&mut rooms)[0].1["recovered"], false, "message 1 expired");
    rooms.join_since(&Peer::new(conn(3), "c", None), &key, false, None, Some(&since(1, &epoch)), 2_500).expect("space");
    let seen = drain(&mut rooms);
    assert_eq!(seen[0].1["recovered"], true);
    assert_eq!(seen[1].1["seq"], 2);
    assert_eq!(rooms.recovery_counts(), RecoveryCounts { dropped: 1, refused: 1 }, "message 1, aged out");
}

#[test]
fn a_room_without_publishes_holds_no_ring_and_a_plain_join_has_no_recovered_field() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "idle");
    rooms.join(&Peer::new(conn(1), "a", None), &key, false, None).expect("space");
    assert!(drain(&mut rooms)[0].1.get("recovered").is_none());
    let slot = rooms.index.get(&key, &rooms.rooms).expect("indexed");
    assert!(rooms.rooms[slot].extra.is_none(), "no allocation for an idle room");
    let epoch = rooms.epoch(slot);
    rooms.join_since(&Peer::new(conn(2), "b", None), &key, false, None, Some(&since(0, &epoch)), 0).expect("space");
    assert_eq!(drain(&mut rooms)[0].1["recovered"], true);
    assert!(rooms.rooms[slot].extra.is_none());
}

#[test]
fn a_peer_keeps_its_user_id_its_json_form_and_its_name_in_one_string() {
    let plain = Peer::new(conn(1), "alice", None);
    assert_eq!((plain.user(), plain.user_json(), plain.name()), ("alice", "\"alice\"", None));
    let quoted = Peer::new(conn(2), "a\"b\\c", None);
    assert_eq!((quoted.user(), quoted.user_json()), ("a\"b\\c", "\"a\\\"b\\\\c\""));
    let empty = Peer::new(conn(3), "", None);
    assert_eq!((empty.user(), empty.user_json()), ("", "\"\""));
    let named = Peer::new(conn(4), "bob", Some("Bob B."));
    assert_eq!((named.user(), named.user_json(), named.name()), ("bob", "\"bob\"", Some("Bob B.")));
    let quoted_named = Peer::new(conn(5), "a\"b", Some("Q"));
    assert_eq!((quoted_named.user(), quoted_named.user_json(), quoted_named.name()), ("a\"b", "\"a\\\"b\"", Some("Q")));
    let empty_name = Peer::new(conn(6), "e", Some(""));
    assert_eq!(empty_name.name(), Some(""), "an empty name is a name");
}
