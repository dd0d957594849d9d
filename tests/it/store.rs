//! Issue 7: the embedded store. Chat acks come after the commit, so an
//! acknowledged message survives SIGKILL; history survives a clean restart;
//! `--no-store` runs without a database.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use super::harness::{Client, PATIENCE, Server};

/// Big enough history and no rate limit, so the stream is not throttled and
/// every message stays in the history.
const ARGS: &[&str] = &[
    "--set",
    "rooms.history_max=5000",
    "--set",
    "rooms.welcome_history_max=5000",
    "--set",
    "limits.rate_messages_per_s=1000000",
    "--set",
    "limits.rate_burst=1000000",
];

/// The chat history the first joiner of a room sees after a restart: the
/// welcome's, or, when the welcome says the stored history is still loading,
/// the `chat_history` that follows it.
fn history_after_join(client: &mut Client, welcome: &Value) -> Vec<String> {
    let messages = if welcome["history_loading"] == true {
        client.next_of_type("chat_history")["messages"].clone()
    } else {
        welcome["history"].clone()
    };
    ids(&messages)
}

fn ids(messages: &Value) -> Vec<String> {
    messages.as_array().expect("a list of messages").iter().map(|m| m["id"].as_str().expect("id").to_string()).collect()
}

/// Every acked id is in `history`, in the order sent, and no id twice.
fn assert_holds_in_order(history: &[String], acked: &[String]) {
    let mut unique = history.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), history.len(), "duplicates in {history:?}");
    let positions: Vec<usize> = acked
        .iter()
        .map(|id| {
            history.iter().position(|h| h == id).unwrap_or_else(|| panic!("acked {id} lost; history {history:?}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "acked messages out of order in {history:?}");
    // Ids are c0, c1, …: the history itself is in sending order too.
    let numbers: Vec<u64> = history.iter().map(|id| id[1..].parse().expect("cN")).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "history out of order: {history:?}");
}

/// Reads what has arrived, without waiting; `false` once the connection is gone.
fn read_available(client: &mut Client, acked: &mut Vec<String>) -> bool {
    loop {
        match client.ws.read() {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                match frame["type"].as_str() {
                    Some("ack") => acked.push(frame["ref"].as_str().expect("string ref").to_string()),
                    Some("error") => panic!("chat refused: {frame}"),
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return true;
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn issue_7_sigkill_mid_chat_stream_loses_no_acknowledged_message() {
    const TOTAL: usize = 5000;
    const KILL_AFTER_ACKS: usize = 300;
    let server = Server::start(ARGS);
    let (mut writer, welcome) = server.join("durable", "alice");
    let epoch_before = welcome["epoch"].as_str().expect("epoch").to_string();
    // Non-blocking: the stream runs ahead of the acks, as a real client's would.
    writer.ws.get_ref().set_nonblocking(true).expect("non-blocking");
    let mut acked = Vec::new();
    let (mut sent, mut killed_at_sent) = (0, None);
    let started = Instant::now();
    loop {
        if sent < TOTAL {
            let id = format!("c{sent}");
            let frame = json!({"type": "chat.send", "text": format!("message {sent}"), "id": id, "ref": id});
            match writer.ws.send(Message::text(frame.to_string())) {
                Ok(()) => {}
                // Queued in the client; written by a later send or flush.
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !read_available(&mut writer, &mut acked) {
            break;
        }
        if killed_at_sent.is_none() && acked.len() >= KILL_AFTER_ACKS {
            // Messages are in flight: sent, broadcast, maybe written, not acked.
            server.sigkill();
            killed_at_sent = Some(sent);
        }
        assert!(started.elapsed() < PATIENCE, "stream too slow: {} acks", acked.len());
    }
    let killed_at_sent = killed_at_sent.expect("the server was killed mid-stream");
    let dir = server.kill();
    assert!(acked.len() >= KILL_AFTER_ACKS);

    let server = Server::start_in(dir, ARGS);
    let (mut reader, welcome) = server.join("durable", "bob");
    assert_ne!(welcome["epoch"].as_str(), Some(epoch_before.as_str()), "a restart starts a new epoch");
    let history = history_after_join(&mut reader, &welcome);
    assert_holds_in_order(&history, &acked);
    println!(
        "sent {killed_at_sent} before SIGKILL, acked {}; {} in the history after restart",
        acked.len(),
        history.len()
    );

    reader.send(json!({"type": "chat.history", "ref": "h"}));
    let asked = reader.next_of_type("chat_history");
    assert_eq!(ids(&asked["messages"]), history, "chat.history agrees with the loaded history");
    // A later joiner's welcome holds it too, and new messages follow it.
    let (mut late, welcome) = server.join("durable", "carol");
    assert_eq!(welcome.get("history_loading"), None);
    assert_eq!(ids(&welcome["history"]), history);
    late.send(json!({"type": "chat.send", "text": "after", "id": "c999999", "ref": "after"}));
    assert_eq!(late.next_of_type("ack")["ref"], "after");
    reader.send(json!({"type": "chat.history", "ref": "h2"}));
    let after = ids(&reader.next_of_type("chat_history")["messages"]);
    assert_eq!(after.last().map(String::as_str), Some("c999999"));
    assert_holds_in_order(&after, &acked);
}

#[test]
fn issue_7_history_survives_a_clean_restart() {
    let server = Server::start(ARGS);
    let (mut alice, _) = server.join("kept", "alice");
    for i in 0..3 {
        alice.send(json!({"type": "chat.send", "text": format!("hello {i}"), "id": format!("c{i}"), "ref": i}));
        assert_eq!(alice.next_of_type("ack")["ref"], i);
    }
    alice.send(json!({"type": "chat.delete", "id": "c1", "ref": "d"}));
    assert_eq!(alice.next_of_type("ack")["ref"], "d");
    drop(alice);
    let dir = server.stop();
    assert!(dir.path().join("roomcast.db").exists());

    let server = Server::start_in(dir, ARGS);
    let (mut bob, welcome) = server.join("kept", "bob");
    assert_eq!(history_after_join(&mut bob, &welcome), ["c0", "c2"], "the deletion was stored too");
    // Another room's history stays its own.
    let (mut other, welcome) = server.join("other", "bob");
    assert!(history_after_join(&mut other, &welcome).is_empty());
}

#[test]
fn issue_7_no_store_runs_without_a_database() {
    let mut args = ARGS.to_vec();
    args.push("--no-store");
    let server = Server::start(&args);
    let (mut alice, welcome) = server.join("memory", "alice");
    assert_eq!(welcome.get("history_loading"), None);
    alice.send(json!({"type": "chat.send", "text": "hi", "id": "c0", "ref": 1}));
    assert_eq!(alice.next_of_type("ack")["seq"], 1);
    assert!(!server.data_dir().join("roomcast.db").exists());
    let dir = server.stop();
    let server = Server::start_in(dir, &args);
    let (_, welcome) = server.join("memory", "bob");
    assert_eq!(welcome["history"], json!([]), "nothing survives without the store");
}
