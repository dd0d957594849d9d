//! Unit tests of the room state machine: plain values in, outputs out.

use super::*;

fn conn(slot: u32) -> ConnId {
    ConnId { shard: 0, slot, generation: 1 }
}

fn rooms() -> Rooms {
    Rooms::new(0, RoomLimits { members_max: 3, welcome_members_max: 10, presence_members_max: 100 })
}

/// Drains outputs as (recipients, JSON value) pairs, expanding broadcasts.
fn drain(rooms: &mut Rooms) -> Vec<(Vec<ConnId>, serde_json::Value)> {
    let mut seen = Vec::new();
    while let Some(output) = rooms.poll_output() {
        let (to, frame) = match output {
            Output::Deliver { to, frame } => (vec![to], frame),
            Output::Broadcast { room, skip, frame } => {
                let mut to: Vec<ConnId> = rooms.members(room).filter(|c| Some(*c) != skip).collect();
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
    rooms.join(&alice, &key).expect("room has space");
    let first = drain(&mut rooms);
    assert_eq!(first.len(), 1, "no presence to an empty room");
    assert_eq!(first[0].0, [conn(1)]);
    assert_eq!(first[0].1["type"], "welcome");
    assert_eq!(first[0].1["member_count"], 1);
    assert_eq!(first[0].1["conn"], "0.1.1");

    rooms.join(&bob, &key).expect("room has space");
    let second = drain(&mut rooms);
    assert_eq!(second[0].0, [conn(2)]);
    assert_eq!(second[0].1["members"], serde_json::json!([{"conn": "0.1.1", "user": "alice", "name": "Alice"}]));
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
    let memberships: Vec<_> = members.iter().map(|p| rooms.join(p, &key).expect("space")).collect();
    drain(&mut rooms);

    assert_eq!(rooms.publish(memberships[0], None, br#"{"n":1}"#), 1);
    assert_eq!(rooms.publish(memberships[1], Some(b"\"r\""), br#"[1, 2]"#), 2);
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
    let alone = rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("", "solo")).expect("space");
    drain(&mut rooms);
    rooms.publish(alone, Some(b"1"), b"0");
    let seen = drain(&mut rooms);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1["type"], "ack");
}

#[test]
fn capacity_is_enforced_and_freed_by_leave() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "small");
    let joined: Vec<_> = (1..=3).map(|i| rooms.join(&Peer::new(conn(i), "u", None), &key).expect("space")).collect();
    assert_eq!(rooms.join(&Peer::new(conn(4), "u", None), &key), Err(JoinRefused::RoomFull));
    rooms.leave(joined[0]);
    assert!(rooms.join(&Peer::new(conn(4), "u", None), &key).is_ok());
}

#[test]
fn leave_tells_the_rest_and_the_last_leave_frees_the_room() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "demo");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key).expect("space");
    let b = rooms.join(&Peer::new(conn(2), "b", None), &key).expect("space");
    drain(&mut rooms);
    rooms.leave(a);
    let seen = drain(&mut rooms);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, [conn(2)]);
    assert_eq!(seen[0].1["type"], "member_left");
    assert_eq!(seen[0].1["member"]["user"], "a");
    rooms.leave(b);
    assert!(drain(&mut rooms).is_empty());
    assert!(rooms.is_empty());
}

#[test]
fn a_new_room_after_a_freed_one_starts_at_seq_zero() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "demo");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key).expect("space");
    rooms.publish(a, None, b"1");
    rooms.leave(a);
    rooms.join(&Peer::new(conn(2), "b", None), &key).expect("space");
    assert_eq!(drain(&mut rooms).last().map(|(_, v)| v["seq"].clone()), Some(serde_json::json!(0)));
}

#[test]
fn tenants_never_share_a_room() {
    let mut rooms = rooms();
    let a = rooms.join(&Peer::new(conn(1), "a", None), &RoomKey::new("acme", "demo")).expect("space");
    rooms.join(&Peer::new(conn(2), "b", None), &RoomKey::new("globex", "demo")).expect("space");
    drain(&mut rooms);
    rooms.publish(a, None, b"1");
    assert!(drain(&mut rooms).is_empty(), "the other tenant's demo room got a message");
    assert_eq!(rooms.len(), 2);
}

#[test]
fn large_rooms_skip_presence_and_cap_the_welcome_list() {
    let mut rooms = Rooms::new(0, RoomLimits { members_max: 100, welcome_members_max: 2, presence_members_max: 3 });
    let key = RoomKey::new("", "big");
    let memberships: Vec<_> =
        (1..=5).map(|i| rooms.join(&Peer::new(conn(i), "u", None), &key).expect("space")).collect();
    let seen = drain(&mut rooms);
    let joined = seen.iter().filter(|(_, v)| v["type"] == "member_joined").count();
    assert_eq!(joined, 2, "presence only while the room has at most 3 members");
    let last_welcome = &seen.last().expect("welcome").1;
    assert_eq!(last_welcome["member_count"], 5);
    assert_eq!(last_welcome["members"].as_array().map(Vec::len), Some(2));
    rooms.leave(memberships[0]);
    assert!(drain(&mut rooms).is_empty(), "no member_left in a room past the presence limit");
}

#[test]
fn binary_is_relayed_verbatim_to_the_others() {
    let mut rooms = rooms();
    let key = RoomKey::new("", "bin");
    let a = rooms.join(&Peer::new(conn(1), "a", None), &key).expect("space");
    rooms.join(&Peer::new(conn(2), "b", None), &key).expect("space");
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
