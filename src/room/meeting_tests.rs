//! Unit tests of the meeting state machine: the whole permission matrix
//! (every request kind × every role, allowed and refused) and every
//! audience rule, with plain values and no I/O.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::tests::{conn, drain, limits};
use super::*;
use crate::protocol::MeetingRequest;

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

    fn user_of(&self, conn: ConnId) -> &'static str {
        self.members.iter().find(|(_, (c, _))| *c == conn).map_or("?", |(user, _)| *user)
    }

    /// Outputs since the last call, each as (recipients by user, sorted;
    /// a label naming the event and what in it matters), in order.
    fn summary(&mut self) -> Vec<(Vec<&'static str>, String)> {
        self.events()
            .into_iter()
            .map(|(to, v)| {
                let mut users: Vec<&'static str> = to.iter().map(|c| self.user_of(*c)).collect();
                users.sort_unstable();
                (users, label(&v))
            })
            .collect()
    }

    fn role(&self, user: &str) -> Option<Role> {
        let (conn, membership) = self.members[user];
        self.rooms.role_of(membership, conn)
    }

    fn state(&self) -> &Room {
        let (_, membership) = self.members["h"];
        &self.rooms.rooms[membership.room_slot()]
    }

    fn history_ids(&self) -> Vec<String> {
        self.state().meeting().history.iter().map(|e| e.id.to_string()).collect()
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

/// An event as a short label: its type and the parts the tests look at.
fn label(v: &Value) -> String {
    let text = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    match v["type"].as_str() {
        Some("screenshare") => format!("screenshare {} {}", text("user"), text("state")),
        Some("lobby") => format!("lobby {} {}", text("event"), v["member"]["user"].as_str().unwrap_or_default()),
        Some("role") => format!("role {} {}", text("user"), text("role")),
        Some("hands") => {
            let queue: Vec<&str> = v["queue"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!("hands [{}]", queue.join(","))
        }
        Some("welcome") => format!("welcome {}", text("role")),
        Some("ack") => format!("ack {}", v["ref"]),
        Some(kind) => kind.to_string(),
        None if v.get("close").is_some() => format!("close {}", v["close"]),
        None => v.to_string(),
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

/// Admitted members of the fixture, as `summary` lists them.
const ADMITTED: [&str; 5] = ["h", "p", "s", "t", "x"];

fn admitted_but(user: &str) -> Vec<&'static str> {
    ADMITTED.iter().copied().filter(|u| *u != user).collect()
}

fn event(to: &[&'static str], label: &str) -> (Vec<&'static str>, String) {
    (to.to_vec(), label.to_string())
}

/// An allowed request, in a state where it does something: what must be
/// done first (drained before the request), and the exact outputs it
/// gives, in order, ending with the ack to `actor`.
fn allowed_case(kind: RequestKind, actor: &'static str) -> (Vec<MeetingRequest>, Vec<(Vec<&'static str>, String)>) {
    use RequestKind as K;
    let all = ADMITTED.to_vec();
    let ack = event(&[actor], "ack 1");
    let (prepare, mut events) = match kind {
        K::Publish => (vec![], vec![event(&admitted_but(actor), "message")]),
        K::ChatSend => (vec![], vec![event(&all, "chat")]),
        K::ChatDeleteOwn | K::ChatDeleteOther => (vec![], vec![event(&all, "chat_deleted")]),
        K::ChatHistory => (vec![], vec![event(&[actor], "chat_history")]),
        K::HandRaise => (vec![], vec![event(&all, &format!("hands [t,{actor}]"))]),
        K::HandLowerOwn => (vec![MeetingRequest::HandRaise], vec![event(&all, "hands [t]")]),
        K::HandLowerOther => (vec![], vec![event(&all, "hands []")]),
        K::ScreenshareRequest => (vec![], vec![event(&["h"], &format!("screenshare {actor} requested"))]),
        K::ScreenshareGrant => (vec![], vec![event(&all, "screenshare t started"), event(&all, "role t screenshare")]),
        K::ScreenshareDeny => (vec![], vec![event(&["t"], "screenshare t denied")]),
        // A host shares as host: no role change.
        K::ScreenshareStopOwn if actor == "h" => {
            (vec![MeetingRequest::ScreenshareGrant { user: "h".into() }], vec![event(&all, "screenshare h stopped")])
        }
        K::ScreenshareStopOwn => (
            vec![],
            vec![
                event(&all, &format!("screenshare {actor} stopped")),
                event(&all, &format!("role {actor} participant")),
            ],
        ),
        K::ScreenshareStopOther => {
            (vec![], vec![event(&all, "screenshare x stopped"), event(&all, "role x participant")])
        }
        K::LobbyAdmit => (
            vec![],
            vec![event(&["h"], "lobby admitted w"), event(&["w"], "welcome participant"), event(&all, "member_joined")],
        ),
        K::LobbyDeny => (vec![], vec![event(&["w"], "close 4004"), event(&["h"], "lobby left w")]),
        // The lobby is admitted first; `lobby_state` then reaches w too, after its welcome.
        K::LobbySet => (
            vec![],
            vec![
                event(&["h"], "lobby admitted w"),
                event(&["w"], "welcome participant"),
                event(&all, "member_joined"),
                event(&["h", "p", "s", "t", "w", "x"], "lobby_state"),
            ],
        ),
        K::Kick => (
            vec![],
            vec![
                event(&["t"], "close 4003"),
                event(&admitted_but("t"), "member_left"),
                event(&admitted_but("t"), "hands []"),
            ],
        ),
        K::Signal => (vec![], vec![event(&["t"], "signal")]),
    };
    events.push(ack);
    (prepare, events)
}

/// What an allowed request must have changed, beyond its events.
fn assert_effect(meeting: &Meeting, kind: RequestKind, actor: &str, seq_before: u64) {
    use RequestKind as K;
    let room = meeting.state();
    let hands: Vec<&str> = room.meeting().hands.iter().map(|h| &**h).collect();
    let sharers: Vec<&str> = room.meeting().sharers.iter().map(|h| &**h).collect();
    let requests: Vec<&str> = room.meeting().share_requests.iter().map(|h| &**h).collect();
    let history = meeting.history_ids();
    match kind {
        K::Publish => assert_eq!(room.seq, seq_before + 1),
        K::ChatSend => {
            assert_eq!(room.seq, seq_before + 1);
            let last = room.meeting().history.back().expect("kept");
            assert_eq!(&*last.author, actor);
        }
        K::ChatDeleteOwn => assert!(!history.contains(&format!("own-{actor}")), "{history:?}"),
        K::ChatDeleteOther => assert!(!history.contains(&"t1".to_string()), "{history:?}"),
        K::ChatHistory => assert_eq!(history, ["t1", "own-h", "own-p", "own-s"]),
        K::HandRaise => assert_eq!(hands, ["t", actor]),
        K::HandLowerOwn => assert_eq!(hands, ["t"]),
        K::HandLowerOther => assert!(hands.is_empty()),
        K::ScreenshareRequest => assert_eq!(requests, ["t", actor]),
        K::ScreenshareGrant => {
            assert_eq!((sharers.as_slice(), requests.is_empty()), (["s", "x", "t"].as_slice(), true));
            assert_eq!(meeting.role("t"), Some(Role::Screenshare));
        }
        K::ScreenshareDeny => assert!(requests.is_empty()),
        K::ScreenshareStopOwn => {
            assert_eq!(sharers, if actor == "h" { vec!["s", "x"] } else { vec!["x"] });
            let back = if actor == "h" { Role::Host } else { Role::Participant };
            assert_eq!(meeting.role(actor), Some(back));
        }
        K::ScreenshareStopOther => {
            assert_eq!(sharers, ["s"]);
            assert_eq!(meeting.role("x"), Some(Role::Participant));
        }
        K::LobbyAdmit => assert_eq!((meeting.role("w"), room.waiting), (Some(Role::Participant), 0)),
        K::LobbyDeny => assert_eq!((meeting.role("w"), room.waiting, room.members.len()), (None, 0, 5)),
        K::LobbySet => assert_eq!((room.lobby, meeting.role("w")), (false, Some(Role::Participant))),
        K::Kick => {
            assert_eq!((meeting.role("t"), room.members.len()), (None, 5));
            assert!(hands.is_empty() && requests.is_empty(), "t's hand and request go with t");
        }
        K::Signal => assert_eq!(room.seq, seq_before, "signals take no seq"),
    }
}

#[test]
fn every_request_from_every_role_follows_the_matrix() {
    let actors = [(Role::Waiting, "w"), (Role::Participant, "p"), (Role::Screenshare, "s"), (Role::Host, "h")];
    let mut allowed_count = 0;
    for (role, actor) in actors {
        for kind in RequestKind::ALL {
            let mut meeting = Meeting::new();
            let (conn, membership) = meeting.members[actor];
            let (prepare, expected) = if allowed(role, kind) { allowed_case(kind, actor) } else { (vec![], vec![]) };
            for request in prepare {
                meeting.ok(actor, request);
            }
            meeting.events();
            let before = format!("{:?}", meeting.rooms);
            let seq_before = meeting.state().seq;
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
                assert_eq!(result, Ok(()), "{role:?} may {kind:?}");
                assert_eq!(meeting.summary(), expected, "{role:?} {kind:?}: the events and their audiences");
                assert_effect(&meeting, kind, actor, seq_before);
            } else {
                assert_eq!(result, Err(Refusal::RoleForbids), "{role:?} may not {kind:?}");
                assert_eq!(format!("{:?}", meeting.rooms), before, "a refused {kind:?} by {role:?} changed something");
                assert!(meeting.events().is_empty(), "a refused {kind:?} by {role:?} sent something");
            }
        }
    }
    // Spot-check the matrix itself against the issue's rules.
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
fn acks_of_chat_and_publish_carry_the_seq_of_their_event() {
    let mut meeting = Meeting::new();
    meeting.ok("p", MeetingRequest::ChatSend { text: "hello".into(), id: None });
    let events = meeting.events();
    assert_eq!(events[1].1, json!({"type": "ack", "ref": 1, "seq": events[0].1["seq"]}));
    let (conn, membership) = meeting.members["s"];
    meeting.rooms.publish(membership, conn, Some(b"1"), b"{}", 0);
    let events = meeting.events();
    assert_eq!(events[1].1, json!({"type": "ack", "ref": 1, "seq": events[0].1["seq"]}));
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
        meeting
            .request("p", MeetingRequest::Signal { to: "w".into(), data: b"1".as_slice().into() })
            .map_err(|r| (r.code(), r.message())),
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
    let told: Vec<ConnId> = ["h", "p", "s", "t", "x"].iter().map(|u| meeting.conn(u)).collect();
    assert_eq!(joined.0, told, "h, p, s, t and x are told, not w itself");
    assert_eq!(
        meeting.request("h", MeetingRequest::LobbyAdmit { user: "w".into() }).map_err(Refusal::code),
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
    assert_eq!(
        meeting.request("h", MeetingRequest::Kick { user: "h".into() }).map_err(Refusal::code),
        Err("bad_request")
    );
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
        meeting.request("p", MeetingRequest::ChatSend { text: long.into(), id: None }).map_err(Refusal::code),
        Err("too_long")
    );
    assert_eq!(
        meeting.request("p", MeetingRequest::ChatSend { text: "  ".into(), id: None }).map_err(Refusal::code),
        Err("bad_request")
    );
    assert_eq!(
        meeting
            .request("p", MeetingRequest::ChatSend { text: "x".into(), id: Some("t1".into()) })
            .map_err(Refusal::code),
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
    assert_eq!(meeting.request("p", MeetingRequest::ChatDelete { id: "t1".into() }), Err(Refusal::RoleForbids));
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
        meeting.request("h", MeetingRequest::ScreenshareGrant { user: "t".into() }).map_err(Refusal::code),
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
    // The host's raised hand goes with it: to nobody, since nobody is admitted.
    rooms.request(host, conn(1), &MeetingRequest::HandRaise, None, NOW_MS).expect("a host may");
    drain(&mut rooms);
    assert!(rooms.leave(host, conn(1), None));
    let events = drain(&mut rooms);
    // w1, the longest waiting, is let in as host: its full welcome lists the
    // rest of the lobby, and nothing reaches it before that welcome.
    assert_eq!(events.len(), 1, "{events:?}");
    let (to, welcome) = &events[0];
    assert_eq!(
        (to.as_slice(), welcome["type"].as_str(), welcome["role"].as_str()),
        (&[conn(2)][..], Some("welcome"), Some("host"))
    );
    assert_eq!(welcome["hands"], json!([]));
    assert_eq!(welcome["waiting"], json!([{"conn": "0.3.1", "user": "w2"}]));
}

#[test]
fn an_admitted_heir_hears_the_lobby_bounded_by_welcome_members_max() {
    let lim = RoomLimits { lobby_default: true, ..limits(10, 2, 10) };
    let mut rooms = Rooms::new(0, 1, lim);
    let key = RoomKey::new("", "heir");
    let host = rooms.join(&Peer::new(conn(1), "h", None), &key, false, None).expect("space");
    rooms.join(&Peer::new(conn(2), "p", None), &key, false, None).expect("space");
    rooms.request(host, conn(1), &MeetingRequest::LobbyAdmit { user: "p".into() }, None, NOW_MS).expect("admit");
    for slot in 3..6 {
        rooms.join(&Peer::new(conn(slot), &format!("w{slot}"), None), &key, false, None).expect("space");
    }
    drain(&mut rooms);
    assert!(rooms.leave(host, conn(1), None));
    let events = drain(&mut rooms);
    let labels: Vec<(Vec<ConnId>, String)> = events.iter().map(|(to, v)| (to.clone(), label(v))).collect();
    assert_eq!(
        labels,
        [
            (vec![conn(2)], "member_left".to_string()),
            (vec![conn(2)], "role p host".to_string()),
            (vec![conn(2)], "lobby waiting w3".to_string()),
            (vec![conn(2)], "lobby waiting w4".to_string()),
        ],
        "two of the three waiting: welcome_members_max"
    );
}

#[test]
fn a_token_host_arrives_as_host_past_the_lobby() {
    let mut meeting = Meeting::new();
    let ana = Peer::with_host(conn(9), "ana", None, true);
    let membership = meeting.rooms.join(&ana, &RoomKey::new("", "m"), false, Some(b"1")).expect("space");
    meeting.members.insert("ana", (conn(9), membership));
    let events = meeting.events();
    let welcome = &events[0].1;
    assert_eq!((events[0].0.as_slice(), welcome["role"].as_str()), (&[conn(9)][..], Some("host")));
    assert_eq!(welcome["member_count"], 6, "admitted at once: five before it and itself");
    assert_eq!(welcome["waiting"], json!([{"conn": "0.5.1", "user": "w"}]), "hosts see the lobby");
    let labels: Vec<(Vec<&str>, String)> = events[1..]
        .iter()
        .map(|(to, v)| {
            let mut users: Vec<&str> = to.iter().map(|c| meeting.user_of(*c)).collect();
            users.sort_unstable();
            (users, label(v))
        })
        .collect();
    assert_eq!(labels, [(ADMITTED.to_vec(), "member_joined".into()), (vec!["ana"], "ack 1".into())], "no lobby event");
    assert_eq!(meeting.role("ana"), Some(Role::Host));
    meeting.ok("ana", MeetingRequest::LobbyAdmit { user: "w".into() });
}

#[test]
fn only_hosts_get_the_waiting_list_in_their_welcome() {
    let mut meeting = Meeting::new();
    meeting.ok("h", MeetingRequest::LobbyAdmit { user: "w".into() });
    let late = Peer::new(conn(9), "late", None);
    meeting.rooms.join(&late, &RoomKey::new("", "m"), false, None).expect("space");
    let second_host = Peer::with_host(conn(10), "h2", None, true);
    meeting.rooms.join(&second_host, &RoomKey::new("", "m"), false, None).expect("space");
    let welcomes: Vec<(Vec<ConnId>, Value)> =
        meeting.events().into_iter().filter(|(_, v)| v["type"] == "welcome").collect();
    assert_eq!(welcomes.len(), 3, "w's full welcome, late's waiting one, h2's");
    assert_eq!(welcomes[0].0, [conn(5)]);
    assert_eq!(welcomes[0].1.get("waiting"), None, "a participant does not see the lobby");
    assert_eq!(welcomes[1].0, [conn(9)]);
    assert_eq!(welcomes[1].1.get("waiting"), None, "nor does a waiting connection");
    assert_eq!(welcomes[2].0, [conn(10)]);
    assert_eq!(welcomes[2].1["waiting"], json!([{"conn": "0.9.1", "user": "late"}]));
}

#[test]
fn binary_frames_skip_the_sender_and_the_lobby() {
    let mut meeting = Meeting::new();
    let (conn, membership) = meeting.members["p"];
    meeting.rooms.relay_binary(membership, conn, &[1, 2, 3]);
    match meeting.rooms.poll_output() {
        Some(Output::Broadcast { room, audience, skip, frame }) => {
            let mut to: Vec<ConnId> = meeting.rooms.audience(room, audience).filter(|c| Some(*c) != skip).collect();
            to.sort();
            let expected: Vec<ConnId> = ["h", "s", "t", "x"].iter().map(|u| meeting.conn(u)).collect();
            assert_eq!(to, expected, "every admitted member but the sender; not w");
            assert_eq!(&frame[..], &[0x82, 3, 1, 2, 3]);
        }
        other => panic!("expected a broadcast, got {other:?}"),
    }
    assert!(meeting.rooms.poll_output().is_none());
    let (conn, membership) = meeting.members["w"];
    meeting.rooms.relay_binary(membership, conn, &[4]);
    assert!(meeting.rooms.poll_output().is_none(), "a waiting sender's binary goes nowhere");
}

#[test]
fn members_on_other_shards_have_their_role_changes_sent_before_the_broadcasts_that_see_them() {
    let lim = RoomLimits { lobby_default: true, ..limits(10, 10, 10) };
    let mut rooms = Rooms::new(0, 2, lim);
    let key = RoomKey::new("", "wide");
    let remote = ConnId { shard: 1, slot: 7, generation: 3 };
    let host = rooms.join(&Peer::new(conn(1), "h", None), &key, false, None).expect("space");
    let guest = rooms.join(&Peer::new(remote, "r", None), &key, false, None).expect("space");
    assert_eq!(rooms.role_of(guest, remote), Some(Role::Waiting), "what the owner tells the home in `Joined`");
    drain(&mut rooms);
    rooms.request(host, conn(1), &MeetingRequest::LobbySet { enabled: false }, None, NOW_MS).expect("a host may");
    let labels: Vec<(Vec<ConnId>, String)> = drain(&mut rooms)
        .into_iter()
        .map(|(to, v)| (to, v.get("role_changed").map_or_else(|| label(&v), |role| format!("role_changed {role}"))))
        .collect();
    assert_eq!(
        labels,
        [
            (vec![remote], "role_changed \"participant\"".to_string()),
            (vec![conn(1)], "lobby admitted r".to_string()),
            (vec![remote], "welcome participant".to_string()),
            (vec![conn(1)], "member_joined".to_string()),
            (vec![conn(1), remote], "lobby_state".to_string()),
        ]
    );
    // Host by hand-over: the home is told before the `role` event.
    assert!(rooms.leave(host, conn(1), None));
    let roles: Vec<String> = drain(&mut rooms)
        .into_iter()
        .filter_map(|(_, v)| {
            v.get("role_changed").map(|r| format!("changed {r}")).or(v["role"].as_str().map(|r| format!("event {r}")))
        })
        .collect();
    assert_eq!(roles, ["changed \"host\"", "event host"]);
}

#[test]
fn a_membership_of_a_freed_room_is_refused_after_its_slot_is_reused() {
    let mut rooms = Rooms::new(0, 1, limits(10, 10, 10));
    let a = conn(1);
    let stale = rooms.join(&Peer::new(a, "a", None), &RoomKey::new("", "old"), false, None).expect("space");
    // a is kicked (or leaves); the room is freed with its last member.
    assert!(rooms.leave(stale, a, None));
    assert!(rooms.is_empty());
    // The same connection is now in a new room that took the same slots.
    let fresh = rooms.join(&Peer::new(a, "a", None), &RoomKey::new("", "new"), false, None).expect("space");
    assert_eq!(fresh.room_slot(), stale.room_slot());
    assert_ne!(fresh, stale, "the incarnation tells them apart");
    rooms.join(&Peer::new(conn(2), "b", None), &RoomKey::new("", "new"), false, None).expect("space");
    drain(&mut rooms);
    // A request that was in flight under the old membership acts on nothing.
    assert_eq!(rooms.publish(stale, a, Some(b"1"), b"1", 0), None);
    let chat = MeetingRequest::ChatSend { text: "hi".into(), id: None };
    assert_eq!(rooms.request(stale, a, &chat, Some(b"1"), NOW_MS).map_err(Refusal::code), Err("not_joined"));
    let kick = MeetingRequest::Kick { user: "b".into() };
    assert_eq!(rooms.request(stale, a, &kick, Some(b"1"), NOW_MS).map_err(Refusal::code), Err("not_joined"));
    rooms.relay_binary(stale, a, &[1]);
    assert_eq!(rooms.role_of(stale, a), None);
    assert!(!rooms.leave(stale, a, Some(b"1")));
    assert!(drain(&mut rooms).is_empty(), "nothing reached the new room");
    assert_eq!(rooms.roles(&RoomKey::new("", "new")).len(), 2, "both members still in");
    assert_eq!(rooms.publish(fresh, a, None, b"1", 0), Some(Ok(1)), "the current membership works");
}

#[test]
fn generated_chat_ids_never_collide_with_client_ids() {
    let mut meeting = Meeting::new();
    assert_eq!(
        meeting
            .request("p", MeetingRequest::ChatSend { text: "x".into(), id: Some("srv-99".into()) })
            .map_err(Refusal::code),
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
