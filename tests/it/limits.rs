//! Limits: each is hit on purpose and answered as documented, and nobody
//! else suffers.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;
use tungstenite::Message;

use super::harness::{Client, PATIENCE, Server, upgrade_request};

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
}

#[test]
fn a_slow_reader_is_closed_with_1013_while_others_get_everything() {
    let server = Server::start(&[
        "--set",
        "limits.outbound_queue_bytes_max=65536",
        // The Close frame waits behind the unread bytes; give the test time to read them.
        "--set",
        "limits.close_timeout_ms=60000",
        "--set",
        "limits.rate_messages_per_s=100000",
        "--set",
        "limits.rate_burst=100000",
    ]);
    let (mut publisher, _) = server.join("slow", "pub");
    let (mut fast, _) = server.join("slow", "fast");
    let slow_token = super::harness::token(&super::harness::Claims { sub: "slow", ..Default::default() });
    // A raw client that completes the handshake and then never reads.
    let mut slow = TcpStream::connect(server.addr).expect("connect");
    slow.write_all(&upgrade_request(&format!("/ws/slow?token={slow_token}"), "")).expect("handshake");
    publisher.next_of_type("member_joined");
    publisher.next_of_type("member_joined");

    // 2,000 messages of 16 KiB: 32 MiB, far past the slow socket's kernel
    // buffers plus its 64 KiB queue.
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
}

#[test]
fn the_server_pings_and_closes_a_silent_peer_with_1001() {
    let server = Server::start(&["--set", "limits.ping_interval_ms=300", "--set", "limits.dead_after_ms=900"]);
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
