//! A meeting over real sockets with `--shards 4 --lobby`: a host, two
//! participants (one present through `join` from a home room on another
//! shard) and a lobby guest.

use roomcast::ids::RoomKey;
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
