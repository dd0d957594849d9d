//! Limits: each is hit on purpose and answered as documented, nobody else
//! suffers, and each hit is counted once in `roomcast_limit_hits_total`.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};
use tungstenite::Message;

use super::harness::{Claims, Client, PATIENCE, Refused, Server, token, upgrade_request};
use super::http_api::{limit_hits, series, wait_for_count};

#[test]
fn an_oversize_message_is_closed_with_1009() {
    let server = Server::start(&["--set", "limits.message_inbound_bytes_max=1024"]);
    let (mut big, _) = server.join("size", "big");
    let (mut other, _) = server.join("size", "other");
    big.send_text(&format!(r#"{{"type":"publish","data":"{}"}}"#, "x".repeat(2000)));
    assert_eq!(big.expect_close().0, 1009);
    assert_eq!(other.next_of_type("member_left")["member"]["user"], "big");
    other.send(json!({"type": "ping", "ref": 1}));
    assert_eq!(other.next_of_type("pong")["ref"], 1, "the other member is unaffected");
    wait_for_count(server.addr, &limit_hits("message_too_big"), 1.0);
}

#[test]
fn a_flood_gets_rate_limited_errors_then_close_1008() {
    let server = Server::start(&[
        "--set",
        "limits.rate_messages_per_s=1",
        "--set",
        "limits.rate_burst=5",
        "--set",
        "limits.rate_strikes_max=10",
    ]);
    let (mut flooder, _) = server.join("flood", "f");
    for i in 0..30 {
        // The server may close the socket while we still write; that is the point.
        if flooder.ws.send(Message::text(json!({"type": "ping", "ref": i}).to_string())).is_err() {
            break;
        }
    }
    let mut pongs = 0;
    let mut rate_errors = 0;
    loop {
        match flooder.ws.read() {
            Ok(Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_str(&text).expect("json");
                match value["type"].as_str() {
                    Some("pong") => pongs += 1,
                    Some("error") if value["code"] == "rate_limited" => rate_errors += 1,
                    _ => {}
                }
            }
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    assert_eq!(pongs, 5, "the burst passes");
    assert_eq!(rate_errors, 10, "each refused message is answered until the strikes run out");
    wait_for_count(server.addr, &limit_hits("rate_abuse"), 1.0);
    wait_for_count(server.addr, &limit_hits("rate_limited"), 10.0);
}

/// A room with a publisher, a reader that keeps up and a raw client that
/// completes its handshake and never reads, on a server started with
/// `limits`: 2,000 messages of 16 KiB (32 MiB, far past the slow socket's
/// kernel buffers) reach the fast reader in order, and the slow socket's
/// data ends with a Close 1013. Returns the server, for its metrics.
fn slow_reader_is_closed_with_1013(limits: &[&str]) -> Server {
    let mut args = vec![
        // The Close frame waits behind the unread bytes; give the test time to read them.
        "--set",
        "limits.close_timeout_ms=60000",
        "--set",
        "limits.rate_messages_per_s=100000",
        "--set",
        "limits.rate_burst=100000",
    ];
    args.extend_from_slice(limits);
    let server = Server::start(&args);
    let (mut publisher, _) = server.join("slow", "pub");
    let (mut fast, _) = server.join("slow", "fast");
    let slow_token = super::harness::token(&super::harness::Claims { sub: "slow", ..Default::default() });
    let mut slow = TcpStream::connect(server.addr).expect("connect");
    slow.write_all(&upgrade_request(&format!("/ws/slow?token={slow_token}"), "")).expect("handshake");
    publisher.next_of_type("member_joined");
    publisher.next_of_type("member_joined");

    const COUNT: u64 = 2000;
    let payload = "x".repeat(16 * 1024);
    // The fast reader reports each message it got; the publisher keeps at most
    // WINDOW messages ahead of it, so the fast reader never falls behind.
    const WINDOW: u64 = 2;
    let (progress_tx, progress) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        let mut saw_slow_leave = false;
        while got < COUNT {
            let value = fast.next_json();
            match value["type"].as_str() {
                Some("message") => {
                    got += 1;
                    assert_eq!(value["seq"], got, "the fast reader misses nothing");
                    let _ = progress_tx.send(got);
                }
                Some("member_left") => saw_slow_leave |= value["member"]["user"] == "slow",
                _ => {}
            }
        }
        while !saw_slow_leave {
            let value = fast.next_of_type("member_left");
            saw_slow_leave = value["member"]["user"] == "slow";
        }
        got
    });
    let mut delivered = 0;
    for i in 0..COUNT {
        while i >= delivered + WINDOW {
            delivered = progress.recv_timeout(PATIENCE).expect("the fast reader keeps up");
        }
        publisher.send(json!({"type": "publish", "data": {"i": i, "pad": payload}}));
    }
    assert_eq!(reader.join().expect("fast reader"), COUNT);

    // Now read the slow socket: its data ends with a Close frame 1013.
    slow.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let close: Vec<u8> = [&[0x88, 2 + 34, 0x03, 0xF5][..], b"slow consumer: outbound queue full"].concat();
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !tail.ends_with(&close) {
        match slow.read(&mut buf) {
            Ok(0) => panic!("the slow stream ended without a Close 1013 frame"),
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(close.len());
                tail.drain(..keep);
            }
            Err(e) => panic!("slow socket: {e}"),
        }
    }
    wait_for_count(server.addr, &limit_hits("slow_consumer"), 1.0);
    assert_eq!(
        series(server.addr, "roomcast_slow_consumers_closed_total{shard=\"0\"}")
            + series(server.addr, "roomcast_slow_consumers_closed_total{shard=\"1\"}"),
        1.0
    );
    server
}

#[test]
fn a_slow_reader_is_closed_with_1013_while_others_get_everything() {
    let server = slow_reader_is_closed_with_1013(&["--set", "limits.outbound_queue_bytes_max=65536"]);
    assert_eq!(series(server.addr, &limit_hits("shard_queue_full")), 0.0, "its own queue's bound closed it");
}

/// The per-connection bounds are out of reach here (1 GiB); the shard's
/// bound on queued frames (64) closes the reader whose socket is full, and
/// only it.
#[test]
fn a_shard_at_its_queued_frames_bound_closes_the_reader_whose_socket_is_full() {
    let server = slow_reader_is_closed_with_1013(&[
        "--set",
        "limits.outbound_queue_bytes_max=1073741824",
        "--set",
        "limits.outbound_queue_hard_bytes_max=2147483648",
        "--set",
        "limits.shard_queued_frames_max=64",
    ]);
    wait_for_count(server.addr, &limit_hits("shard_queue_full"), 1.0);
}

#[test]
fn protocol_errors_close_with_1002_and_bad_utf8_with_1007() {
    let server = Server::start(&[]);
    let (mut unmasked, _) = server.join("proto", "u");
    // tungstenite masks every client frame, so write the bad frame under it.
    unmasked.ws.get_mut().write_all(&[0x81, 0x02, b'h', b'i']).expect("raw write");
    assert_eq!(unmasked.expect_close().0, 1002);

    let (mut bad_utf8, _) = server.join("proto", "b");
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = [0xFFu8, 0xFE].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    bad_utf8.ws.get_mut().write_all(&frame).expect("raw write");
    assert_eq!(bad_utf8.expect_close().0, 1007);
    wait_for_count(server.addr, &limit_hits("protocol_error"), 2.0);
}

#[test]
fn the_server_pings_and_closes_a_silent_peer_with_1001() {
    let server = Server::start(&[
        "--set",
        "limits.ping_interval_ms=300",
        "--set",
        "limits.dead_after_ms=900",
        "--set",
        "limits.close_timeout_ms=500",
    ]);
    let token = super::harness::token(&super::harness::Claims { sub: "quiet", ..Default::default() });
    let mut quiet = TcpStream::connect(server.addr).expect("connect");
    quiet.set_read_timeout(Some(PATIENCE)).expect("timeout");
    quiet.write_all(&upgrade_request(&format!("/ws/hb?token={token}"), "")).expect("handshake");
    // Read frames without ever answering: pings arrive, then a Close 1001.
    let mut stream = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match quiet.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => stream.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
    let ping = [0x89u8, 0x00];
    assert!(stream.windows(2).any(|w| w == ping), "the server sent a ping");
    assert!(stream.windows(4).any(|w| w == [0x88, 2 + 31, 0x03, 0xE9]), "close 1001 'no traffic within dead_after_ms'");
    wait_for_count(server.addr, &limit_hits("dead_peer"), 1.0);
    // It never answered the Close either: the socket went at close_timeout_ms (the EOF above).
    wait_for_count(server.addr, &limit_hits("close_timeout"), 1.0);
}

#[test]
fn a_full_room_refuses_with_an_error_and_1013() {
    let server = Server::start(&["--set", "limits.room_members_max=2"]);
    let (_a, _) = server.join("tiny", "a");
    let (_b, _) = server.join("tiny", "b");
    let token = super::harness::token(&super::harness::Claims { sub: "c", ..Default::default() });
    let mut c = Client::connect(&server.url("tiny", &format!("token={token}"))).expect("handshake");
    assert_eq!(c.next_of_type("error")["code"], "room_full");
    assert_eq!(c.expect_close(), (1013, "room full".into()));
    wait_for_count(server.addr, &limit_hits("room_full"), 1.0);
}

#[test]
fn a_full_spread_room_refuses_a_member_placed_on_another_shard_as_a_local_one() {
    // From 1 member on, the room's shard hands every other new connection
    // to the second shard: b and d are placed there, and the owner refuses
    // d's join.
    let args = ["--shards", "2", "--set", "limits.room_members_max=3", "--set", "rooms.spread_from_members=1"];
    let server = Server::start(&args);
    let (room, _) = rooms_on_both_shards();
    let shard =
        |welcome: &serde_json::Value| welcome["conn"].as_str().and_then(|c| c.split('.').next()).map(str::to_owned);
    let members: Vec<_> = ["a", "b", "c"].iter().map(|user| server.join(&room, user)).collect();
    let placed: Vec<Option<String>> = members.iter().map(|(_, welcome)| shard(welcome)).collect();
    assert_eq!(placed, [Some("0".into()), Some("1".into()), Some("0".into())], "a, b, c: owner, spread, owner");
    let token = super::harness::token(&super::harness::Claims { sub: "d", ..Default::default() });
    let mut d = Client::connect(&server.url(&room, &format!("token={token}"))).expect("handshake");
    assert_eq!(d.next_of_type("error")["code"], "room_full");
    assert_eq!(d.expect_close(), (1013, "room full".into()));
}

#[test]
fn the_echo_listener_echoes_text_and_binary() {
    let server = Server::start(&["--echo-listen", "127.0.0.1:0"]);
    let addr = server.echo_addr.expect("echo listener");
    let mut client = Client::connect(&format!("ws://{addr}/")).expect("echo handshake");
    client.ws.send(Message::text("hello")).expect("send");
    assert_eq!(client.next_message(), Message::text("hello"));
    client.ws.send(Message::binary(vec![1u8, 2, 3])).expect("send");
    assert_eq!(client.next_message(), Message::binary(vec![1u8, 2, 3]));
}

/// Two room ids owned by different shards (of 2).
fn rooms_on_both_shards() -> (String, String) {
    let on = |shard: u16| {
        (0..)
            .map(|i| format!("l{i}"))
            .find(|room| roomcast::__private::RoomKey::new("", room).shard(2) == shard)
            .expect("a room")
    };
    (on(0), on(1))
}

#[test]
fn a_join_of_a_full_room_is_counted_on_either_shard() {
    let server = Server::start(&["--set", "limits.room_members_max=2"]);
    let (full, elsewhere) = rooms_on_both_shards();
    let (_a, _) = server.join(&full, "a");
    let (_b, _) = server.join(&full, "b");
    // The room's owner is this client's home shard, then another shard.
    let (mut local, _) = server.join(&format!("{full}-home"), "c");
    let (mut remote, _) = server.join(&elsewhere, "d");
    for (client, who) in [(&mut local, "local"), (&mut remote, "remote")] {
        client.send(json!({"type": "join", "room": full, "ref": who}));
        let error = client.next_of_type("error");
        assert_eq!((error["code"].clone(), error["ref"].clone()), (json!("room_full"), json!(who)));
    }
    // Whatever the home shard of `{full}-home`, two refusals, each counted once.
    wait_for_count(server.addr, &limit_hits("room_full"), 2.0);
}

#[test]
fn rooms_per_connection_and_per_shard_are_counted() {
    let server = Server::start(&["--shards", "1", "--set", "limits.rooms_per_connection_max=3"]);
    // Home room and personal room: 2 of 3.
    let (mut a, _) = server.join("r0", "a");
    a.send(json!({"type": "join", "room": "r1", "ref": 1}));
    a.next_of_type("ack");
    a.send(json!({"type": "join", "room": "r2", "ref": 2}));
    assert_eq!(a.next_of_type("error")["code"], "too_many_rooms");
    wait_for_count(server.addr, &limit_hits("too_many_rooms"), 1.0);
    // Group rooms past the bound are skipped at connect, and counted.
    let groups = ["g1".to_string(), "g2".to_string(), "g3".to_string()];
    let grouped = token(&Claims { sub: "grouped", groups: &groups, ..Claims::default() });
    let mut g = Client::connect(&server.url("r0", &format!("token={grouped}"))).expect("connect");
    g.next_of_type("welcome");
    wait_for_count(server.addr, &limit_hits("too_many_rooms"), 2.0);

    // rooms_per_shard_max: r0, user:a, r1 and user:grouped, g1 exist; one more room is refused.
    let server = Server::start(&["--shards", "1", "--set", "limits.rooms_per_shard_max=3"]);
    let (mut a, _) = server.join("s0", "a");
    a.send(json!({"type": "join", "room": "s1", "ref": 1}));
    a.next_of_type("ack");
    a.send(json!({"type": "join", "room": "s2", "ref": 2}));
    assert_eq!(a.next_of_type("error")["code"], "too_many_rooms");
    wait_for_count(server.addr, &limit_hits("shard_rooms_full"), 1.0);
    assert_eq!(series(server.addr, &limit_hits("too_many_rooms")), 0.0);
}

#[test]
fn chat_length_and_screen_share_limits_are_counted() {
    let server = Server::start(&["--set", "rooms.chat_text_chars_max=10"]);
    let (mut host, _) = server.join("meet", "host");
    let (_bob, _) = server.join("meet", "bob");
    let (_carol, _) = server.join("meet", "carol");
    host.send(json!({"type": "chat.send", "text": "x".repeat(11), "ref": 1}));
    assert_eq!(host.next_of_type("error")["code"], "too_long");
    host.send(json!({"type": "screenshare.grant", "user": "bob", "ref": 2}));
    assert_eq!(host.next_of_type("ack")["ref"], 2);
    host.send(json!({"type": "screenshare.grant", "user": "carol", "ref": 3}));
    assert_eq!(host.next_of_type("error")["code"], "screenshare_busy");
    wait_for_count(server.addr, &limit_hits("chat_too_long"), 1.0);
    wait_for_count(server.addr, &limit_hits("screenshare_busy"), 1.0);
}

/// A masked client text frame (payload under 126 bytes).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn a_full_outbox_to_another_shard_refuses_with_overloaded_and_is_counted() {
    // One message per destination shard per iteration.
    let server = Server::start(&["--set", "limits.shard_outbox_max=1"]);
    let (on_0, on_1) = rooms_on_both_shards();
    // A user whose personal room, like its connection, is on shard 0: a
    // `direct` to it is one message to shard 0 and an ack back, nothing more.
    let target = (0..)
        .map(|i| format!("t{i}"))
        .find(|user| roomcast::__private::RoomKey::personal("", user).shard(2) == 0)
        .expect("a user");
    let (mut receiver, _) = server.join(&on_0, &target);
    let (mut sender, _) = server.join(&on_1, "sender");
    // Two directs for shard 0 in one write: read, and decided, in one iteration.
    let direct = |r: u32| format!(r#"{{"type":"direct","to":"{target}","ref":{r},"data":{r}}}"#);
    let bytes = [masked_text_frame(direct(1).as_bytes()), masked_text_frame(direct(2).as_bytes())].concat();
    sender.ws.get_mut().write_all(&bytes).expect("raw write");
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let frame = sender.next_json();
        if frame["type"] == "ack" || frame["type"] == "error" {
            answers.push((frame["type"].clone(), frame["ref"].clone(), frame["code"].clone()));
        }
    }
    answers.sort_by_key(|(_, r, _)| r.as_u64());
    assert_eq!(answers, vec![(json!("ack"), json!(1), Value::Null), (json!("error"), json!(2), json!("overloaded"))]);
    assert_eq!(receiver.next_of_type("direct")["data"], 1);
    wait_for_count(server.addr, &limit_hits("outbox_full"), 1.0);
}

#[test]
fn a_full_shard_refuses_the_handshake_with_503_and_counts_it() {
    let server = Server::start(&["--shards", "1", "--set", "limits.connections_per_shard_max=1"]);
    let (_only, _) = server.join("one", "only");
    let late = token(&Claims { sub: "late", ..Claims::default() });
    match Client::connect(&server.url("one", &format!("token={late}"))) {
        Err(Refused::Status(503, body)) => assert!(body.contains("server_full"), "{body}"),
        other => panic!("expected 503 server_full, got {:?}", other.map(|_| "a connection")),
    }
    wait_for_count(server.addr, &limit_hits("shard_full"), 1.0);
    wait_for_count(server.addr, r#"roomcast_handshakes_total{status="503",cause="server_full"}"#, 1.0);
    assert_eq!(series(server.addr, r#"roomcast_handshakes_total{status="101",cause="ok"}"#), 1.0);
}

#[test]
fn a_full_timer_wheel_is_counted_once_and_the_connection_still_closes() {
    // One connection per shard: a wheel of 3 timers. Stale entries of closed
    // connections stay until they are due (a ping interval, a close timeout).
    let server = Server::start(&[
        "--shards",
        "1",
        "--set",
        "limits.connections_per_shard_max=1",
        "--set",
        "limits.close_timeout_ms=600000",
    ]);
    // A: its heartbeat, then its close deadline when it closes: 2 entries.
    let (mut a, _) = server.join("t", "a");
    a.ws.close(None).expect("close");
    loop {
        match a.ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("A's close was not answered: {e}"),
        }
    }
    // B: its heartbeat is the 3rd; its close deadline does not fit, so B is
    // dropped at once (no Close answer), counted once.
    let (mut b, _) = server.join("t", "b");
    b.ws.close(None).expect("close");
    let ended = loop {
        match b.ws.read() {
            Ok(Message::Close(_)) => break "a Close answer",
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break "a read timeout",
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => break "a read timeout",
            Err(_) => break "dropped",
        }
    };
    assert_eq!(ended, "dropped");
    wait_for_count(server.addr, &limit_hits("timer_full"), 1.0);
    // C: not even its heartbeat fits: closed before its 101 is out, counted once.
    let c = token(&Claims { sub: "c", ..Claims::default() });
    assert!(matches!(Client::connect(&server.url("t", &format!("token={c}"))), Err(Refused::Other(_))));
    wait_for_count(server.addr, &limit_hits("timer_full"), 2.0);
    assert_eq!(series(server.addr, "roomcast_connections{shard=\"0\"}"), 0.0);
}

#[test]
fn read_budget_and_poll_event_bounds_are_counted_and_nothing_is_lost() {
    let server = Server::start(&["--set", "limits.read_bytes_per_event_max=1", "--set", "limits.poll_events_max=1"]);
    let (mut a, _) = server.join("budget", "a");
    let (mut b, _) = server.join("budget", "b");
    for i in 0..5 {
        a.send(json!({"type": "publish", "data": i}));
    }
    for i in 0..5 {
        assert_eq!(b.next_of_type("message")["data"], i);
    }
    let read_budget = super::http_api::wait_for_series(server.addr, &limit_hits("read_budget"), |n| n >= 1.0);
    assert!(read_budget >= 1.0);
    let poll = super::http_api::wait_for_series(server.addr, &limit_hits("poll_events_full"), |n| n >= 1.0);
    assert!(poll >= 1.0);
}

#[test]
fn a_burst_past_the_queue_bound_reaches_a_healthy_reader_whole() {
    // Frames decided in one loop turn are queued before the turn's write: a
    // reader that keeps up may pass the soft bound for a moment, and only
    // staying over it (limits.outbound_queue_grace_ms) makes a slow consumer.
    let server = Server::start(&[
        "--set",
        "limits.outbound_queue_bytes_max=16384",
        "--set",
        "limits.message_inbound_bytes_max=16384",
        "--set",
        "limits.outbound_queue_grace_ms=30000",
    ]);
    let (mut publisher, _) = server.join("burst", "pub");
    let (mut reader, _) = server.join("burst", "reader");
    publisher.next_of_type("member_joined");
    // Four 8 KiB publishes in one write: 32 KiB, one loopback segment, read
    // in one turn, so 32 KiB are queued for the reader before anything is written.
    let payload = "y".repeat(8 * 1024);
    for n in 1..=4 {
        let text = json!({"type": "publish", "ref": n, "data": payload}).to_string();
        publisher.ws.write(Message::text(text)).expect("buffer the publish");
    }
    publisher.ws.flush().expect("one write");
    for seq in 1..=4 {
        let message = reader.next_of_type("message");
        assert_eq!((message["seq"].as_u64(), message["data"].as_str().map(str::len)), (Some(seq), Some(8192)));
    }
    // Still open and served afterwards.
    publisher.send(json!({"type": "publish", "data": "after"}));
    assert_eq!(reader.next_of_type("message")["data"], "after");
}

#[test]
fn a_ping_flood_is_closed_with_1008_and_its_neighbours_still_get_messages() {
    let server = Server::start(&[]);
    let (mut flooder, _) = server.join("pings", "flooder");
    let (mut neighbour, _) = server.join("pings", "neighbour");
    let (mut publisher, _) = server.join("pings", "publisher");
    // 5,000 masked empty Pings in one write: far past limits.control_frames_per_s [20].
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let ping = [0x89, 0x80, MASK[0], MASK[1], MASK[2], MASK[3]];
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 5000).collect();
    // The server may close the socket while the burst is still going in.
    let _ = flooder.ws.get_mut().write_all(&burst);
    let (code, reason) = flooder.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "control frame rate exceeded"));

    assert_eq!(neighbour.next_of_type("member_left")["member"]["user"], "flooder");
    publisher.send(json!({"type": "publish", "data": "after the flood"}));
    assert_eq!(neighbour.next_of_type("message")["data"], "after the flood", "the neighbour is served");
    wait_for_count(server.addr, &limit_hits("control_flood"), 1.0);
}

#[test]
fn a_fanout_written_a_few_sockets_per_turn_reaches_every_member_once_in_order() {
    // Two writes per turn: the fan-out of each message to 12 members takes
    // six turns, and messages published meanwhile join writes still to come.
    let server = Server::start(&["--shards", "1", "--set", "limits.flush_writes_per_turn=2"]);
    let mut members: Vec<(String, Client)> = (0..12)
        .map(|i| {
            let user = format!("m{i}");
            let (client, _) = server.join("turns", &user);
            (user, client)
        })
        .collect();
    for (_, client) in members.iter_mut().take(11) {
        // Every member has seen the last one arrive: presence is written too.
        while client.next_of_type("member_joined")["member"]["user"] != "m11" {}
    }
    let (mut publisher, _) = server.join("turns", "publisher");
    for i in 0..30 {
        publisher.send(json!({"type": "publish", "data": i}));
    }
    for (user, client) in &mut members {
        let got: Vec<Value> = (0..30).map(|_| client.next_of_type("message")["data"].clone()).collect();
        assert_eq!(got, (0..30).map(|i| json!(i)).collect::<Vec<_>>(), "{user}");
    }
    // The shards' counters reach /metrics in snapshots: read until it shows.
    super::http_api::wait_for_series(server.addr, &limit_hits("flush_budget"), |hits| hits >= 1.0);
}
