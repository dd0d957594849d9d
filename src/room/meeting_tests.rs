//! Unit tests of the meeting state machine: the whole permission matrix
//! (every request kind × every role, allowed and refused) and every
//! audience rule, with plain values and no I/O.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::tests::{conn, drain, limits};
use super::*;

const NOW_MS: u64 = 1_700_000_000_000;

/// A meeting with a lobby: host `h`, participant `p`, sharers `s` and `x`,
/// participant `t` (hand raised, asked to share, wrote chat `t1`), and `w`
/// waiting in the lobby. `h`, `p` and `s` each wrote chat `own-{user}`.
struct Meeting {
    rooms: Rooms,
    members: HashMap<&'static str, (ConnId, Membership)>,
}

impl Meeting {
    fn new() -> Meeting {
        let lim = RoomLimits {
            screenshare_max: 3,
            history_max: 10,
            chat_text_chars_max: 100,
            lobby_default: true,
            ..limits(10, 10, 10)
        };
        let mut meeting = Meeting { rooms: Rooms::new(0, 2, lim), members: HashMap::new() };
        for (slot, user) in [(1, "h"), (2, "p"), (3, "s"), (6, "x"), (4, "t"), (5, "w")] {
            let peer = Peer::new(conn(slot), user, None);
            let membership = meeting.rooms.join(&peer, &RoomKey::new("", "m"), false, None).expect("space");
            meeting.members.insert(user, (conn(slot), membership));
        }
        for user in ["p", "s", "x", "t"] {
            meeting.ok("h", MeetingRequest::LobbyAdmit { user: user.into() });
        }
        meeting.ok("h", MeetingRequest::ScreenshareGrant { user: "s".into() });
        meeting.ok("h", MeetingRequest::ScreenshareGrant { user: "x".into() });
        meeting.ok("t", MeetingRequest::HandRaise);
        meeting.ok("t", MeetingRequest::ChatSend { text: "from t".into(), id: Some("t1".into()) });
        meeting.ok("t", MeetingRequest::ScreenshareRequest);
        for user in ["h", "p", "s"] {
            let id = format!("own-{user}");
            meeting.ok(user, MeetingRequest::ChatSend { text: "mine".into(), id: Some(id.into()) });
        }
        drain(&mut meeting.rooms);
        meeting
    }

    fn request(&mut self, user: &str, request: MeetingRequest) -> Result<(), Refusal> {
        let (conn, membership) = self.members[user];
        self.rooms.request(membership, conn, &request, Some(b"1"), NOW_MS)
    }

    fn ok(&mut self, user: &str, request: MeetingRequest) {
        let shown = format!("{request:?}");
        if let Err(refusal) = self.request(user, request) {
            panic!("{user}: {shown} refused: {refusal:?}");
        }
    }

    fn conn(&self, user: &str) -> ConnId {
        self.members[user].0
    }

    /// Outputs since the last call: (recipients, event).
    fn events(&mut self) -> Vec<(Vec<ConnId>, Value)> {
        drain(&mut self.rooms)
    }

    /// Who received events of `kind`.
    fn receivers(&mut self, kind: &str) -> Vec<ConnId> {
        let mut to: Vec<ConnId> =
            self.events().into_iter().filter(|(_, v)| v["type"] == kind).flat_map(|(to, _)| to).collect();
        to.sort();
        to.dedup();
        to
    }
}

/// A request of `kind` made by `actor`, otherwise valid in the fixture.
fn request_of(kind: RequestKind, actor: &str) -> Option<MeetingRequest> {
    use RequestKind as K;
    Some(match kind {
        K::Publish => return None,
        K::ChatSend => MeetingRequest::ChatSend { text: "hello".into(), id: None },
        K::ChatDeleteOwn => MeetingRequest::ChatDelete { id: format!("own-{actor}").into() },
        K::ChatDeleteOther => MeetingRequest::ChatDelete { id: "t1".into() },
        K::ChatHistory => MeetingRequest::ChatHistory { limit: None },
        K::HandRaise => MeetingRequest::HandRaise,
        K::HandLowerOwn => MeetingRequest::HandLower { user: None },
        K::HandLowerOther => MeetingRequest::HandLower { user: Some("t".into()) },
        K::ScreenshareRequest => MeetingRequest::ScreenshareRequest,
        K::ScreenshareGrant => MeetingRequest::ScreenshareGrant { user: "t".into() },
        K::ScreenshareDeny => MeetingRequest::ScreenshareDeny { user: "t".into() },
        K::ScreenshareStopOwn => MeetingRequest::ScreenshareStop { user: None },
        K::ScreenshareStopOther => MeetingRequest::ScreenshareStop { user: Some("x".into()) },
        K::LobbyAdmit => MeetingRequest::LobbyAdmit { user: "w".into() },
        K::LobbyDeny => MeetingRequest::LobbyDeny { user: "w".into() },
        K::LobbySet => MeetingRequest::LobbySet { enabled: false },
        K::Kick => MeetingRequest::Kick { user: "t".into() },
        K::Signal => MeetingRequest::Signal { to: "t".into(), data: b"{\"sdp\":1}".as_slice().into() },
    })
}

#[test]
fn every_request_from_every_role_follows_the_matrix() {
    let actors = [(Role::Waiting, "w"), (Role::Participant, "p"), (Role::Screenshare, "s"), (Role::Host, "h")];
    let mut allowed_count = 0;
    for (role, actor) in actors {
        for kind in RequestKind::ALL {
            let mut meeting = Meeting::new();
            let (conn, membership) = meeting.members[actor];
            let before = format!("{:?}", meeting.rooms);
            let result = match request_of(kind, actor) {
                Some(request) => meeting.rooms.request(membership, conn, &request, Some(b"1"), NOW_MS),
                None => match meeting.rooms.publish(membership, conn, Some(b"1"), b"1", 0) {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(refusal)) => Err(refusal),
                    None => panic!("publish by a member"),
                },
            };
            if allowed(role, kind) {
                allowed_count += 1;
                assert_ne!(result, Err(FORBIDDEN), "{role:?} may {kind:?}");
            } else {
                assert_eq!(result, Err(FORBIDDEN), "{role:?} may not {kind:?}");
                assert_eq!(format!("{:?}", meeting.rooms), before, "a refused {kind:?} by {role:?} changed something");
            }
        }
    }
    // Spot-check the matrix itself against the rules.
    assert!(RequestKind::ALL.iter().all(|k| !allowed(Role::Waiting, *k)), "the lobby may do nothing");
    assert!(allowed(Role::Participant, RequestKind::ScreenshareRequest));
    assert!(!allowed(Role::Participant, RequestKind::LobbyAdmit));
    assert!(!allowed(Role::Participant, RequestKind::ChatDeleteOther));
    assert!(allowed(Role::Screenshare, RequestKind::ScreenshareStopOwn));
    assert!(!allowed(Role::Screenshare, RequestKind::ScreenshareStopOther));
    assert!(allowed(Role::Host, RequestKind::Kick));
    assert_eq!(allowed_count, 8 + 8 + 17);
}

#[test]
fn the_lobby_sees_only_its_own_admission_state() {
    let mut meeting = Meeting::new();
    let w = meeting.conn("w");
    meeting.ok("p", MeetingRequest::ChatSend { text: "secret".into(), id: None });
    assert!(!meeting.receivers("chat").contains(&w), "waiting members never see chat");
    let (conn, membership) = meeting.members["p"];
    meeting.rooms.publish(membership, conn, None, b"1", 0);
    assert!(!meeting.receivers("message").contains(&w));
    meeting.ok("p", MeetingRequest::HandRaise);
    assert!(!meeting.receivers("hands").contains(&w));
    assert_eq!(
        meeting.request("p", MeetingRequest::Signal { to: "w".into(), data: b"1".as_slice().into() }),
        Err(("not_found", "no admitted member with that user id in this room"))
    );
    // A newcomer to the lobby gets a welcome with nothing in it; only hosts hear of it.
    let late = Peer::new(conn_of(9), "late", None);
    meeting.rooms.join(&late, &RoomKey::new("", "m"), false, None).expect("space");
    let events = meeting.events();
    assert_eq!(
        events[0],
        (
            vec![conn_of(9)],
            json!({"type":"welcome","conn":"0.9.1","room":"m","shard":0,"user":"late","role":"waiting","lobby":true})
        )
    );
    assert_eq!(events[1].0, [meeting.conn("h")]);
    assert_eq!(events[1].1["type"], "lobby");
    assert_eq!(events[1].1["event"], "waiting");
    assert_eq!(events.len(), 2);
}

fn conn_of(slot: u32) -> ConnId {
    conn(slot)
}

#[test]
fn admitting_sends_the_full_welcome_and_presence() {
    let mut meeting = Meeting::new();
    meeting.ok("h", MeetingRequest::LobbyAdmit { user: "w".into() });
    let events = meeting.events();
    let welcome = events.iter().find(|(to, v)| v["type"] == "welcome" && to == &[meeting.conn("w")]).expect("welcome");
    assert_eq!(welcome.1["role"], "participant");
    assert_eq!(welcome.1["hands"], json!(["t"]));
    assert_eq!(welcome.1["sharers"], json!(["s", "x"]));
    assert_eq!(welcome.1["history"].as_array().map(Vec::len), Some(2), "welcome_history_max of the history");
    assert!(welcome.1.get("waiting").is_none(), "only hosts see the lobby");
    let joined = events.iter().find(|(_, v)| v["type"] == "member_joined").expect("presence");
    assert_eq!(joined.0.len(), 5, "h, p, s, x and t are told");
    assert_eq!(
        meeting.request("h", MeetingRequest::LobbyAdmit { user: "w".into() }).map_err(|r| r.0),
        Err("not_found")
    );
}

#[test]
fn deny_and_kick_close_with_their_codes() {
    let mut meeting = Meeting::new();
    meeting.ok("h", MeetingRequest::LobbyDeny { user: "w".into() });
    let events = meeting.events();
    assert!(events.contains(&(vec![meeting.conn("w")], json!({"close": 4004}))));
    let lobby = events.iter().find(|(_, v)| v["type"] == "lobby").expect("hosts are told");
    assert_eq!((lobby.0.as_slice(), lobby.1["event"].as_str()), ([meeting.conn("h")].as_slice(), Some("left")));
    meeting.ok("h", MeetingRequest::Kick { user: "t".into() });
    let events = meeting.events();
    assert!(events.contains(&(vec![meeting.conn("t")], json!({"close": 4003}))));
    let hands = events.iter().find(|(_, v)| v["type"] == "hands").expect("t's hand goes with t");
    assert_eq!(hands.1["queue"], json!([]));
    assert_eq!(meeting.request("h", MeetingRequest::Kick { user: "h".into() }).map_err(|r| r.0), Err("bad_request"));
}

#[test]
fn the_longest_present_member_inherits_host_and_everyone_admitted_is_told() {
    let mut meeting = Meeting::new();
    let (conn, membership) = meeting.members["h"];
    assert!(meeting.rooms.leave(membership, conn, None));
    let events = meeting.events();
    let role = events.iter().find(|(_, v)| v["type"] == "role").expect("role event");
    assert_eq!(role.1, json!({"type":"role","room":"m","user":"p","role":"host"}));
    let mut told = role.0.clone();
    told.sort();
    let mut expected = [meeting.conn("p"), meeting.conn("s"), meeting.conn("t"), meeting.conn("x")];
    expected.sort();
    assert_eq!(told, expected);
    meeting.ok("p", MeetingRequest::LobbyAdmit { user: "w".into() });
}

#[test]
fn chat_is_bounded_validated_and_deletable_by_author_or_host() {
    let mut meeting = Meeting::new();
    let long = "é".repeat(101);
    assert_eq!(
        meeting.request("p", MeetingRequest::ChatSend { text: long.into(), id: None }).map_err(|r| r.0),
        Err("too_long")
    );
    assert_eq!(
        meeting.request("p", MeetingRequest::ChatSend { text: "  ".into(), id: None }).map_err(|r| r.0),
        Err("bad_request")
    );
    assert_eq!(
        meeting.request("p", MeetingRequest::ChatSend { text: "x".into(), id: Some("t1".into()) }).map_err(|r| r.0),
        Err("duplicate_id")
    );
    meeting.events();
    meeting.ok("p", MeetingRequest::ChatSend { text: "hi".into(), id: None });
    let events = meeting.events();
    let chat = &events.iter().find(|(_, v)| v["type"] == "chat").expect("chat").1;
    assert_eq!(
        (chat["from"].as_str(), chat["text"].as_str(), chat["ts"].as_u64()),
        (Some("p"), Some("hi"), Some(NOW_MS))
    );
    let ack = &events.iter().find(|(_, v)| v["type"] == "ack").expect("ack").1;
    assert_eq!(ack["seq"], chat["seq"]);
    assert_eq!(meeting.request("p", MeetingRequest::ChatDelete { id: "t1".into() }), Err(FORBIDDEN));
    meeting.ok("h", MeetingRequest::ChatDelete { id: "t1".into() });
    let deleted = meeting.events().into_iter().find(|(_, v)| v["type"] == "chat_deleted").expect("deleted");
    assert_eq!(deleted.1["by"], "h");
    meeting.ok("p", MeetingRequest::ChatHistory { limit: Some(2) });
    let history = meeting.events().into_iter().find(|(_, v)| v["type"] == "chat_history").expect("history");
    let ids: Vec<&str> =
        history.1["messages"].as_array().expect("list").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], chat["id"].as_str().expect("id"));
    for i in 0..20 {
        meeting.ok("p", MeetingRequest::ChatSend { text: format!("n{i}").into(), id: None });
    }
    meeting.rooms.check_invariants(); // history stays within history_max
}

#[test]
fn hands_queue_in_raise_order_and_hosts_lower_others() {
    let mut meeting = Meeting::new();
    meeting.ok("p", MeetingRequest::HandRaise);
    meeting.ok("s", MeetingRequest::HandRaise);
    let last = meeting.events().into_iter().rfind(|(_, v)| v["type"] == "hands").expect("hands");
    assert_eq!(last.1["queue"], json!(["t", "p", "s"]));
    meeting.ok("h", MeetingRequest::HandLower { user: Some("p".into()) });
    let last = meeting.events().into_iter().rfind(|(_, v)| v["type"] == "hands").expect("hands");
    assert_eq!(last.1["queue"], json!(["t", "s"]));
}

#[test]
fn screen_share_goes_request_grant_stop_with_roles() {
    let mut meeting = Meeting::new();
    meeting.ok("p", MeetingRequest::ScreenshareRequest);
    assert_eq!(meeting.receivers("screenshare"), [meeting.conn("h")], "hosts are asked");
    meeting.ok("h", MeetingRequest::ScreenshareGrant { user: "p".into() });
    let events = meeting.events();
    assert!(events.iter().any(|(_, v)| *v == json!({"type":"screenshare","room":"m","user":"p","state":"started"})));
    assert!(events.iter().any(|(_, v)| *v == json!({"type":"role","room":"m","user":"p","role":"screenshare"})));
    assert_eq!(
        meeting.request("h", MeetingRequest::ScreenshareGrant { user: "t".into() }).map_err(|r| r.0),
        Err("screenshare_busy"),
        "screenshare_max is 3: s, x and p"
    );
    meeting.ok("h", MeetingRequest::ScreenshareDeny { user: "t".into() });
    assert_eq!(meeting.receivers("screenshare"), [meeting.conn("t")], "only the asker hears the denial");
    meeting.ok("p", MeetingRequest::ScreenshareStop { user: None });
    let events = meeting.events();
    assert!(events.iter().any(|(_, v)| *v == json!({"type":"role","room":"m","user":"p","role":"participant"})));
}

#[test]
fn signals_go_to_one_member_only() {
    let mut meeting = Meeting::new();
    meeting.ok("p", MeetingRequest::Signal { to: "t".into(), data: b"{\"ice\":1}".as_slice().into() });
    let events = meeting.events();
    let signal = events.iter().find(|(_, v)| v["type"] == "signal").expect("signal");
    assert_eq!(signal.0, [meeting.conn("t")]);
    assert_eq!(signal.1, json!({"type":"signal","room":"m","from":"p","data":{"ice":1}}));
}

#[test]
fn switching_the_lobby_off_admits_everyone_waiting() {
    let mut meeting = Meeting::new();
    meeting.ok("h", MeetingRequest::LobbySet { enabled: false });
    let events = meeting.events();
    assert!(
        events.iter().any(|(to, v)| v["type"] == "welcome" && v["role"] == "participant" && to == &[meeting.conn("w")])
    );
    let late = Peer::new(conn(9), "late", None);
    meeting.rooms.join(&late, &RoomKey::new("", "m"), false, None).expect("space");
    let events = meeting.events();
    assert_eq!(events[0].1["role"], "participant", "no lobby for newcomers either");
}

#[test]
fn a_lobby_left_without_admitted_members_gets_a_host_from_the_lobby() {
    let lim = RoomLimits { lobby_default: true, ..limits(10, 10, 10) };
    let mut rooms = Rooms::new(0, 1, lim);
    let key = RoomKey::new("", "lonely");
    let host = rooms.join(&Peer::new(conn(1), "h", None), &key, false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "w1", None), &key, false, None).expect("space");
    rooms.join(&Peer::new(conn(3), "w2", None), &key, false, None).expect("space");
    drain(&mut rooms);
    assert!(rooms.leave(host, conn(1), None));
    let events = drain(&mut rooms);
    let welcome = events.iter().find(|(to, v)| v["type"] == "welcome" && to == &[conn(2)]).expect("w1 is let in");
    assert_eq!(welcome.1["role"], "host");
    let lobby =
        events.iter().find(|(to, v)| v["type"] == "lobby" && to == &[conn(2)]).expect("the new host hears the lobby");
    assert_eq!(lobby.1["member"]["user"], "w2");
}

#[test]
fn generated_chat_ids_never_collide_with_client_ids() {
    let mut meeting = Meeting::new();
    assert_eq!(
        meeting.request("p", MeetingRequest::ChatSend { text: "x".into(), id: Some("srv-99".into()) }).map_err(|r| r.0),
        Err("bad_request")
    );
    meeting.ok("p", MeetingRequest::ChatSend { text: "generated".into(), id: None });
    let chat = meeting.events().into_iter().find(|(_, v)| v["type"] == "chat").expect("chat").1;
    assert!(chat["id"].as_str().is_some_and(|id| id.starts_with("srv-")));
}

#[test]
fn a_screen_share_denial_reaches_no_waiting_connection() {
    let mut meeting = Meeting::new();
    // A second connection of t waits in the lobby.
    let t2 = Peer::new(conn(9), "t", None);
    meeting.rooms.join(&t2, &RoomKey::new("", "m"), false, None).expect("space");
    meeting.events();
    meeting.ok("h", MeetingRequest::ScreenshareDeny { user: "t".into() });
    assert_eq!(meeting.receivers("screenshare"), [meeting.conn("t")]);
}
