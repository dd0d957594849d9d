//! A meeting over real sockets with `--shards 4 --lobby`: a host, two
//! participants (one present through `join` from a home room on another
//! shard) and a lobby guest.

use roomcast::__private::RoomKey;
use serde_json::{Value, json};

use super::harness::{Claims, Client, Server, token};

fn owner(room: &str) -> u16 {
    RoomKey::new("", room).shard(4)
}

fn room_on(prefix: &str, shard: u16) -> String {
    (0..).map(|i| format!("{prefix}-{i}")).find(|room| owner(room) == shard).expect("a name hashes there")
}

fn connect(server: &Server, room: &str, user: &str) -> (Client, Value) {
    let token = token(&Claims { sub: user, ..Claims::default() });
    let mut client = Client::connect(&server.url(room, &format!("token={token}"))).expect("connect");
    let welcome = client.next_of_type("welcome");
    (client, welcome)
}

#[test]
fn a_meeting_with_lobby_chat_hands_screen_share_signaling_kick_and_host_handover() {
    let server = Server::start(&["--shards", "4", "--lobby"]);
    let room = room_on("meeting", 0);

    let (mut host, welcome) = connect(&server, &room, "h");
    assert_eq!((welcome["role"].as_str(), welcome["lobby"].as_bool()), (Some("host"), Some(true)));

    // p1 lives on shard 1 and joins the meeting owned by shard 0.
    let (mut p1, _) = connect(&server, &room_on("home", 1), "p1");
    p1.send(json!({"type": "join", "room": room, "ref": 1}));
    let waiting = p1.next_of_type("welcome");
    assert_eq!(
        waiting,
        json!({"type":"welcome","conn":waiting["conn"],"room":room,"shard":0,"user":"p1","role":"waiting","lobby":true})
    );
    assert_eq!(host.next_of_type("lobby")["member"]["user"], "p1");

    let (mut p2, welcome) = connect(&server, &room, "p2");
    assert_eq!(welcome["role"], "waiting");
    assert_eq!(host.next_of_type("lobby")["member"]["user"], "p2");
    let (mut guest, _) = connect(&server, &room, "g");
    assert_eq!(host.next_of_type("lobby")["member"]["user"], "g");

    // Chat before anyone is admitted: history for later.
    host.send(json!({"type": "chat.send", "text": "welcome all", "id": "c0"}));
    assert_eq!(host.next_of_type("chat")["text"], "welcome all");

    // Admit both participants; each gets the full welcome with the history.
    host.send(json!({"type": "lobby.admit", "user": "p1", "ref": 2}));
    let welcome = p1.next_of_type("welcome");
    assert_eq!(welcome["role"], "participant");
    assert_eq!(welcome["history"][0]["text"], "welcome all");
    host.send(json!({"type": "lobby.admit", "user": "p2"}));
    let welcome = p2.next_of_type("welcome");
    assert_eq!((welcome["role"].as_str(), welcome["member_count"].as_u64()), (Some("participant"), Some(3)));
    assert_eq!(p1.next_of_type("member_joined")["member"]["user"], "p2");

    // Deny the guest: it is closed with 4004.
    host.send(json!({"type": "lobby.deny", "user": "g"}));
    assert_eq!(guest.expect_close(), (4004, "denied entry by a host".into()));

    // Chat: everyone admitted gets it; only the author or a host deletes.
    p1.send(json!({"type": "chat.send", "room": room, "text": "hi from p1", "id": "c1", "ref": 3}));
    for client in [&mut host, &mut p1, &mut p2] {
        let chat = client.next_of_type("chat");
        assert_eq!((chat["id"].as_str(), chat["from"].as_str()), (Some("c1"), Some("p1")));
    }
    p2.send(json!({"type": "chat.delete", "id": "c1", "ref": 4}));
    let refused = p2.next_of_type("error");
    assert_eq!((refused["code"].as_str(), refused["ref"].as_u64()), (Some("forbidden"), Some(4)));
    p1.send(json!({"type": "chat.delete", "room": room, "id": "c1"}));
    for client in [&mut host, &mut p1, &mut p2] {
        assert_eq!(client.next_of_type("chat_deleted")["id"], "c1");
    }

    // Hands queue in raise order; the host lowers one.
    p2.send(json!({"type": "hand.raise"}));
    assert_eq!(host.next_of_type("hands")["queue"], json!(["p2"]));
    p1.send(json!({"type": "hand.raise", "room": room}));
    assert_eq!(host.next_of_type("hands")["queue"], json!(["p2", "p1"]));
    host.send(json!({"type": "hand.lower", "user": "p2"}));
    // p1 saw every change of the queue, in order.
    let queues: Vec<Value> = (0..3).map(|_| p1.next_of_type("hands")["queue"].clone()).collect();
    assert_eq!(queues, [json!(["p2"]), json!(["p2", "p1"]), json!(["p1"])]);

    // Screen share: request, grant, stop, with the role following.
    p1.send(json!({"type": "screenshare.request", "room": room}));
    assert_eq!(host.next_of_type("screenshare")["state"], "requested");
    host.send(json!({"type": "screenshare.grant", "user": "p1"}));
    assert_eq!(p2.next_of_type("screenshare")["state"], "started");
    assert_eq!(p2.next_of_type("role"), json!({"type":"role","room":room,"user":"p1","role":"screenshare"}));
    p1.send(json!({"type": "screenshare.stop", "room": room}));
    assert_eq!(p2.next_of_type("screenshare")["state"], "stopped");
    assert_eq!(p2.next_of_type("role")["role"], "participant");

    // Signaling between two members, across shards.
    p1.send(json!({"type": "signal", "room": room, "to": "p2", "data": {"sdp": "offer"}}));
    assert_eq!(p2.next_of_type("signal"), json!({"type":"signal","room":room,"from":"p1","data":{"sdp":"offer"}}));
    p2.send(json!({"type": "signal", "to": "p1", "data": {"sdp": "answer"}}));
    assert_eq!(p1.next_of_type("signal")["data"], json!({"sdp": "answer"}));

    // Kick: p2 is closed with 4003 and the others see it leave.
    host.send(json!({"type": "kick", "user": "p2"}));
    assert_eq!(p2.expect_close(), (4003, "kicked by a host".into()));
    assert_eq!(p1.next_of_type("member_left")["member"]["user"], "p2");

    // The host leaves: p1, the longest present, becomes host and is told.
    drop(host);
    assert_eq!(p1.next_of_type("member_left")["member"]["user"], "h");
    assert_eq!(p1.next_of_type("role"), json!({"type":"role","room":room,"user":"p1","role":"host"}));
    let (_late, welcome) = connect(&server, &room, "late");
    assert_eq!(welcome["role"], "waiting", "the lobby is still on");
    assert_eq!(p1.next_of_type("lobby")["member"]["user"], "late", "the new host hears the lobby");
}

#[test]
fn requests_beyond_a_role_are_forbidden_over_the_wire() {
    let server = Server::start(&["--shards", "4"]);
    let room = room_on("roles", 2);
    let (_host, _) = connect(&server, &room, "h");
    let (mut participant, welcome) = connect(&server, &room, "p");
    assert_eq!(welcome["role"], "participant", "no lobby without --lobby");
    for (i, request) in [
        json!({"type": "lobby.admit", "user": "x"}),
        json!({"type": "kick", "user": "h"}),
        json!({"type": "screenshare.grant", "user": "p"}),
        json!({"type": "hand.lower", "user": "h"}),
        json!({"type": "lobby.set", "enabled": true}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = request;
        request["ref"] = json!(i);
        participant.send(request);
        let error = participant.next_of_type("error");
        assert_eq!((error["code"].as_str(), error["ref"].as_u64()), (Some("forbidden"), Some(i as u64)));
    }
    participant.send(json!({"type": "chat.send", "text": "", "ref": 9}));
    assert_eq!(participant.next_of_type("error")["code"], "bad_request");
}

/// Sends `request` with `ref` and reads until its ack or error, returning it
/// and the frames before it.
fn call(client: &mut Client, mut request: Value, reference: u64) -> (Value, Vec<Value>) {
    request["ref"] = json!(reference);
    client.send(request);
    let mut before = Vec::new();
    loop {
        let frame = client.next_json();
        if frame["ref"] == json!(reference) && (frame["type"] == "ack" || frame["type"] == "error") {
            return (frame, before);
        }
        before.push(frame);
    }
}

/// `user` with home room `home` joins `room`; returns the client and the
/// welcome of `room` (read strictly: the welcome, then the join's ack).
fn join_from(server: &Server, home: &str, user: &str, room: &str) -> (Client, Value) {
    let (mut client, _) = connect(server, home, user);
    client.send(json!({"type": "join", "room": room, "ref": "j"}));
    let welcome = client.next_json();
    assert_eq!((welcome["type"].as_str(), welcome["room"].as_str()), (Some("welcome"), Some(room)), "{welcome}");
    let ack = client.next_json();
    assert_eq!((ack["type"].as_str(), ack["ref"].as_str()), (Some("ack"), Some("j")), "{ack}");
    (client, welcome)
}

#[test]
fn deny_and_kick_close_the_whole_connection_of_a_member_present_through_a_join() {
    let server = Server::start(&["--shards", "4", "--lobby", "--no-store"]);
    let room = room_on("far", 0);
    let (mut host, _) = connect(&server, &room, "h");

    // g lives on shard 1 and waits in the lobby of the room on shard 0.
    let (mut guest, welcome) = join_from(&server, &room_on("home-g", 1), "g", &room);
    assert_eq!((welcome["role"].as_str(), welcome["shard"].as_u64()), (Some("waiting"), Some(0)));
    assert!(welcome["conn"].as_str().is_some_and(|c| c.starts_with("1.")), "g's home is shard 1");
    assert_eq!(host.next_of_type("lobby")["event"], "waiting");
    let (ack, before) = call(&mut host, json!({"type": "lobby.deny", "user": "g"}), 1);
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(
        before.iter().map(|f| (f["type"].clone(), f["event"].clone())).collect::<Vec<_>>(),
        [(json!("lobby"), json!("left"))]
    );
    assert_eq!(guest.expect_close(), (4004, "denied entry by a host".into()), "the owner's Close reaches shard 1");

    // p lives on shard 2, with a room-mate m in its home room there.
    let home_p = room_on("home-p", 2);
    let (mut mate, _) = connect(&server, &home_p, "m");
    let (mut participant, _) = join_from(&server, &home_p, "p", &room);
    // The lobby is on everywhere: p waits in its home room too, m hosts it.
    assert_eq!(mate.next_of_type("lobby")["member"]["user"], "p");
    assert_eq!(host.next_of_type("lobby")["member"]["user"], "p");
    assert_eq!(call(&mut host, json!({"type": "lobby.admit", "user": "p"}), 2).0["type"], "ack");
    assert_eq!(participant.next_of_type("welcome")["role"], "participant");
    let (ack, before) = call(&mut host, json!({"type": "kick", "user": "p"}), 3);
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(before.iter().any(|f| f["type"] == "member_left" && f["member"]["user"] == "p"), "{before:?}");
    assert_eq!(participant.expect_close(), (4003, "kicked by a host".into()));
    // The whole connection went, not only its membership of the meeting.
    let left = mate.next_of_type("lobby");
    assert_eq!((left["event"].as_str(), left["member"]["user"].as_str()), (Some("left"), Some("p")));
    assert_eq!(left["room"], home_p.as_str());
}

#[test]
fn waiting_members_on_any_shard_get_nothing_of_the_room_until_admitted() {
    // No store: no stored history arrives at an arbitrary moment, so every
    // frame a waiting member gets can be checked.
    let server = Server::start(&["--shards", "4", "--lobby", "--no-store"]);
    let room = room_on("strict", 0);
    let (mut host, _) = connect(&server, &room, "h");
    // a (admitted) and w (waiting) both live on shard 1, so one fan-out to
    // shard 1 must reach a and not w; w0 waits on the owner's shard.
    let (mut admitted, _) = join_from(&server, &room_on("home-a", 1), "a", &room);
    assert_eq!(host.next_of_type("lobby")["member"]["user"], "a");
    assert_eq!(call(&mut host, json!({"type": "lobby.admit", "user": "a"}), 1).0["type"], "ack");
    assert_eq!(admitted.next_json()["role"], "participant", "a's full welcome");
    let (mut remote_waiting, welcome) = join_from(&server, &room_on("home-w", 1), "w", &room);
    assert_eq!(welcome["role"], "waiting");
    assert!(welcome["conn"].as_str().is_some_and(|c| c.starts_with("1.")), "w's home is shard 1");
    let (mut local_waiting, welcome) = connect(&server, &room, "w0");
    assert_eq!(welcome["role"], "waiting");
    for _ in 0..2 {
        host.next_of_type("lobby");
    }

    // Everything admitted members see: chat, messages, hands, signals, presence.
    let acked = |client: &mut Client, request: Value, reference: u64| -> Vec<Value> {
        let (reply, before) = call(client, request, reference);
        assert_eq!(reply["type"], "ack", "{reply}");
        before
    };
    let mut seen_by_a = Vec::new();
    acked(&mut host, json!({"type": "chat.send", "text": "for the admitted", "id": "c1"}), 2);
    acked(&mut host, json!({"type": "publish", "data": "m1"}), 3);
    seen_by_a.extend(acked(&mut admitted, json!({"type": "chat.send", "room": room, "text": "from a", "id": "c2"}), 2));
    seen_by_a.extend(acked(&mut admitted, json!({"type": "publish", "room": room, "data": "m2"}), 3));
    seen_by_a.extend(acked(&mut admitted, json!({"type": "hand.raise", "room": room}), 4));
    seen_by_a.extend(acked(&mut admitted, json!({"type": "signal", "room": room, "to": "h", "data": {"sdp": 1}}), 5));
    for to in ["w", "w0"] {
        let (refused, _) = call(&mut host, json!({"type": "signal", "to": to, "data": 1}), 6);
        assert_eq!(refused["code"], "not_found", "no signal reaches a waiting member");
    }
    let (mut late, _) = connect(&server, &room_on("home-l", 1), "late");
    acked(&mut late, json!({"type": "join", "room": room}), 1);
    acked(&mut host, json!({"type": "lobby.admit", "user": "late"}), 7);
    // a, on the same shard as w, got them.
    while !seen_by_a.iter().any(|f| f["type"] == "member_joined") {
        seen_by_a.push(admitted.next_json());
    }
    let kinds: Vec<(String, String)> = seen_by_a
        .iter()
        .map(|f| {
            (f["type"].as_str().unwrap().to_string(), f["id"].as_str().or(f["data"].as_str()).unwrap_or("").to_string())
        })
        .collect();
    let expected: Vec<(String, String)> =
        [("chat", "c1"), ("message", "m1"), ("chat", "c2"), ("hands", ""), ("member_joined", "")]
            .iter()
            .map(|(t, v)| (t.to_string(), v.to_string()))
            .collect();
    assert_eq!(kinds, expected, "a's frames of the room, in order");

    // Admission: the very next frame each waiting member gets is its full
    // welcome, with the history it missed; nothing of the room came before.
    acked(&mut host, json!({"type": "lobby.admit", "user": "w"}), 8);
    acked(&mut host, json!({"type": "lobby.admit", "user": "w0"}), 9);
    for (user, client) in [("w", &mut remote_waiting), ("w0", &mut local_waiting)] {
        let welcome = client.next_json();
        assert_eq!(
            (welcome["type"].as_str(), welcome["role"].as_str()),
            (Some("welcome"), Some("participant")),
            "{user}: {welcome}"
        );
        let history: Vec<&str> =
            welcome["history"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!((history, welcome["hands"].clone()), (vec!["c1", "c2"], json!(["a"])), "{user}");
        assert_eq!(welcome["seq"], 4, "{user}: two chats and two messages before it");
    }
    // From now on they are admitted: the next broadcast reaches both.
    acked(&mut host, json!({"type": "publish", "data": "m3"}), 10);
    assert_eq!(remote_waiting.next_of_type("message")["data"], "m3");
    assert_eq!(local_waiting.next_of_type("message")["data"], "m3");
}

#[test]
fn a_host_token_enters_past_the_lobby_directly_and_through_a_join() {
    let server = Server::start(&["--shards", "4", "--lobby", "--no-store"]);
    let room = room_on("hosted", 0);
    let (mut first, _) = connect(&server, &room, "h");
    let (_guest, _) = connect(&server, &room, "g");
    assert_eq!(first.next_json()["event"], "waiting", "the first host hears of the guest");
    let host_token = |user: &str| token(&Claims { sub: user, host: true, ..Claims::default() });

    let mut ana = Client::connect(&server.url(&room, &format!("token={}", host_token("ana")))).expect("connect");
    let welcome = ana.next_json();
    assert_eq!((welcome["type"].as_str(), welcome["role"].as_str()), (Some("welcome"), Some("host")));
    assert_eq!(
        welcome["waiting"].as_array().map(|w| w.iter().map(|m| m["user"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("g")])
    );
    let joined = first.next_json();
    assert_eq!(
        (joined["type"].as_str(), joined["member"]["user"].as_str()),
        (Some("member_joined"), Some("ana")),
        "no lobby event"
    );

    // bob, a token host on shard 2, joins the room on shard 0: host there too.
    let home = room_on("home-b", 2);
    let mut bob = Client::connect(&server.url(&home, &format!("token={}", host_token("bob")))).expect("connect");
    assert_eq!(bob.next_json()["role"], "host", "the first member of its own home room");
    let (ack, frames) = call(&mut bob, json!({"type": "join", "room": room}), 1);
    assert_eq!(ack["type"], "ack");
    let welcome = frames.iter().find(|f| f["type"] == "welcome").expect("welcome");
    assert_eq!((welcome["role"].as_str(), welcome["shard"].as_u64()), (Some("host"), Some(0)));
    assert_eq!(first.next_json()["member"]["user"], "bob");
    // And it acts as one across shards.
    let (ack, _) = call(&mut bob, json!({"type": "lobby.admit", "room": room, "user": "g"}), 2);
    assert_eq!(ack["type"], "ack", "{ack}");
}
