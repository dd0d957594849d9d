//! Unit tests of registry policies in the room state machine: admission,
//! capacity, lobby and history limit, and changes to live rooms.

use super::tests::{conn, drain, limits};
use super::*;
use crate::protocol::MeetingRequest;

fn key(room: &str) -> RoomKey {
    RoomKey::new("t", room)
}

fn policy() -> RoomPolicy {
    RoomPolicy::default()
}

fn rooms_with(policies: Vec<(RoomKey, RoomPolicy)>, require_registration: bool) -> Rooms {
    let mut rooms = Rooms::new(0, 2, RoomLimits { require_registration, ..limits(10, 10, 100) });
    rooms.load_policies(policies);
    rooms
}

fn types(seen: &[(Vec<ConnId>, serde_json::Value)]) -> Vec<(Vec<ConnId>, String)> {
    seen.iter().map(|(to, v)| (to.clone(), v["type"].as_str().unwrap_or_default().to_owned())).collect()
}

#[test]
fn a_private_room_admits_only_tokens_that_name_it() {
    let private = RoomPolicy { private: true, ..policy() };
    let mut rooms = rooms_with(vec![(key("board"), private)], false);
    let prefix_or_no_claim = Peer::with_claims(conn(1), "a", None, false, false);
    assert_eq!(rooms.join(&prefix_or_no_claim, &key("board"), false, None), Err(Refusal::RoomPrivate));
    assert!(drain(&mut rooms).is_empty(), "a refused join creates no room and sends nothing");
    // The shard checked that the claim allows the room before the join, so an exact claim names it.
    let named = Peer::with_claims(conn(3), "c", None, false, true);
    rooms.join(&named, &key("board"), false, None).expect("the claim names the room");
    assert_eq!(rooms.join(&named, &RoomKey::new("other", "board"), false, None).map(|_| ()), Ok(()), "tenants apart");
}

#[test]
fn with_registration_required_only_registered_rooms_and_personal_ones_admit() {
    let mut rooms = rooms_with(vec![(key("known"), policy())], true);
    let peer = Peer::new(conn(1), "a", None);
    assert_eq!(rooms.join(&peer, &key("adhoc"), false, None), Err(Refusal::RoomNotRegistered));
    rooms.join(&peer, &key("known"), false, None).expect("registered");
    rooms.join(&peer, &key("user:a"), true, None).expect("personal rooms need no registration");
    rooms.join(&peer, &key("group:g"), true, None).expect("group rooms need no registration");
    assert_eq!(Refusal::RoomNotRegistered.code(), "room_not_registered");
    assert_eq!(Refusal::RoomPrivate.code(), "room_private");
}

#[test]
fn registry_capacity_overrides_the_server_limit_both_ways() {
    let mut rooms = rooms_with(vec![(key("small"), RoomPolicy { capacity: Some(2), ..policy() })], false);
    rooms.join(&Peer::new(conn(1), "a", None), &key("small"), false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "b", None), &key("small"), false, None).expect("space");
    assert_eq!(rooms.join(&Peer::new(conn(3), "c", None), &key("small"), false, None), Err(Refusal::RoomFull));

    // Above `limits.members_max` (10 here).
    let mut rooms = rooms_with(vec![(key("big"), RoomPolicy { capacity: Some(12), ..policy() })], false);
    for slot in 1..=12 {
        rooms
            .join(&Peer::new(conn(slot), "u", None), &key("big"), false, None)
            .expect("within the registry's capacity");
    }
    assert_eq!(rooms.join(&Peer::new(conn(13), "u", None), &key("big"), false, None), Err(Refusal::RoomFull));
}

#[test]
fn a_lowered_capacity_keeps_the_members_present_and_admits_nobody_new() {
    let mut rooms = rooms_with(Vec::new(), false);
    for slot in 1..=3 {
        rooms.join(&Peer::new(conn(slot), "u", None), &key("r"), false, None).expect("space");
    }
    rooms.set_policy(&key("r"), Some(RoomPolicy { capacity: Some(2), ..policy() }));
    rooms.check_invariants();
    assert_eq!(rooms.members(0).count(), 3, "nobody is removed");
    assert_eq!(rooms.join(&Peer::new(conn(4), "u", None), &key("r"), false, None), Err(Refusal::RoomFull));
    rooms.set_policy(&key("r"), None);
    rooms.join(&Peer::new(conn(4), "u", None), &key("r"), false, None).expect("deleted: the server limit again");
}

#[test]
fn the_registry_lobby_is_where_a_room_starts_and_a_change_acts_like_lobby_set() {
    let mut rooms = rooms_with(vec![(key("m"), RoomPolicy { lobby: Some(true), ..policy() })], false);
    rooms.join(&Peer::new(conn(1), "host", None), &key("m"), false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "guest", None), &key("m"), false, None).expect("space");
    let seen = drain(&mut rooms);
    assert_eq!(seen[1].1["role"], "waiting", "the registry's lobby is on for a new live room");

    // A PUT that leaves `lobby` as it was does not undo a host's choice.
    rooms.set_policy(&key("m"), Some(RoomPolicy { lobby: Some(true), capacity: Some(5), ..policy() }));
    assert!(drain(&mut rooms).is_empty());

    rooms.set_policy(&key("m"), Some(RoomPolicy { lobby: Some(false), ..policy() }));
    let seen = types(&drain(&mut rooms));
    let kinds: Vec<&str> = seen.iter().map(|(_, kind)| kind.as_str()).collect();
    // As a host's `lobby.set` off: the waiting are admitted, then everyone admitted is told.
    assert_eq!(kinds, ["lobby", "welcome", "member_joined", "lobby_state"]);
    assert_eq!(seen[1].0, [conn(2)], "the waiting guest is admitted");
    assert_eq!(seen[3].0, [conn(1), conn(2)], "the lobby change reaches the admitted guest too");
}

#[test]
fn a_lower_history_limit_drops_the_oldest_chat_of_a_live_room() {
    let mut rooms = rooms_with(Vec::new(), false);
    let host = rooms.join(&Peer::new(conn(1), "h", None), &key("c"), false, None).expect("space");
    for text in ["one", "two", "three"] {
        let request = MeetingRequest::ChatSend { text: text.into(), id: None };
        rooms.request(host, conn(1), &request, None, 1_000).expect("host may chat");
    }
    rooms.set_policy(&key("c"), Some(RoomPolicy { history_max: Some(1), ..policy() }));
    drain(&mut rooms);
    rooms.request(host, conn(1), &MeetingRequest::ChatHistory { limit: None }, None, 1_000).expect("allowed");
    let history = drain(&mut rooms);
    let texts: Vec<&str> =
        history[0].1["messages"].as_array().expect("messages").iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["three"]);
    rooms.check_invariants();
}
