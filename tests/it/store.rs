//! Issue 7: the embedded store. Chat acks come after the commit, so an
//! acknowledged message survives SIGKILL; history survives a clean restart;
//! `--no-store` runs without a database.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use super::harness::{Client, PATIENCE, Server, raw_http};

/// Big enough history and no rate limit, so the stream is not throttled and
/// every message stays in the history: the whole stream (5,000 when the
/// server got through all of it before the kill) plus the one sent after
/// the restart, which at a limit of exactly 5,000 pushed out `c0`.
const ARGS: &[&str] = &[
    "--set",
    "rooms.history_max=6000",
    "--set",
    "rooms.welcome_history_max=6000",
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

/// `GET /metrics` as text.
pub fn metrics(server: &Server) -> String {
    let (status, body) = raw_http(server.addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the series `series` (name and labels, as rendered).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a number")
}

/// Polls `/metrics` until `series` reaches `at_least`: for the shards'
/// counters, which reach `/metrics` in snapshots sent once a second (no
/// event tells when one has arrived).
pub fn await_metric(server: &Server, series: &str, at_least: f64) -> String {
    let started = Instant::now();
    loop {
        let text = metrics(server);
        if metric(&text, series) >= at_least {
            return text;
        }
        assert!(started.elapsed() < PATIENCE, "{series} stayed below {at_least}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Another process's exclusive lock on the server's database, as a backup
/// tool or an `sqlite3` shell would take it: the store thread's next write
/// transaction waits for it (up to `store.busy_timeout_ms`, then fails).
/// Released by `COMMIT` (or by dropping the connection).
pub fn lock_database(server: &Server) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(server.data_dir().join("roomcast.db")).expect("open the server's database");
    // The store may be mid-commit: wait for it rather than fail.
    db.busy_timeout(PATIENCE).expect("busy timeout");
    db.execute_batch("BEGIN EXCLUSIVE").expect("exclusive lock");
    db
}

/// Sends chat messages from `client` until one is acked, and returns its
/// id: its ack comes after the commit of everything queued before it, so
/// the store's queue is empty then. With a small `store.queue_max` a
/// message may be refused (`store_overloaded`) while the store catches up
/// with the connections' audit rows; the next one is tried then.
pub fn settle_store(client: &mut Client) -> String {
    for n in 0..100 {
        let id = format!("settle-{n}");
        client.send(json!({"type": "chat.send", "text": "settling", "id": id, "ref": id}));
        loop {
            let frame = client.next_json();
            match (frame["type"].as_str(), frame["ref"].as_str()) {
                (Some("ack"), Some(r)) if r == id => return id,
                (Some("error"), Some(r)) if r == id => {
                    assert_eq!(frame["code"], "store_overloaded", "{frame}");
                    break;
                }
                _ => {}
            }
        }
    }
    panic!("the store never caught up");
}

/// Waits until the store thread has taken a batch and is writing it: with
/// the database locked it then takes nothing more from its queue, so the
/// queue only grows. Polls `/metrics` (no event says when the store thread
/// started waiting for the lock).
pub fn await_store_stuck(server: &Server) {
    await_metric(server, "roomcast_store_batch_running_events", 1.0);
}

/// Sends `chat.send` with id and ref `id`, then a `ping`, and reads the
/// sender's frames up to the `pong`: the shard handles a connection's
/// requests in order, so an immediate answer to the chat (an `error`)
/// comes before it. Returns that error, if any.
fn chat_then_ping(client: &mut Client, id: &str) -> Option<Value> {
    client.send(json!({"type": "chat.send", "text": format!("text of {id}"), "id": id, "ref": id}));
    let ping = format!("ping-{id}");
    client.send(json!({"type": "ping", "ref": ping}));
    let mut error = None;
    loop {
        let frame = client.next_json();
        match frame["type"].as_str() {
            Some("pong") if frame["ref"] == ping.as_str() => return error,
            Some("error") => {
                assert_eq!(frame["ref"], id, "{frame}");
                error = Some(frame);
            }
            Some("ack") => panic!("acked while the database is locked: {frame}"),
            _ => {}
        }
    }
}

/// A `publish` from `from` is acked and reaches `to`: live traffic flows.
fn assert_publish_flows(from: &mut Client, to: &mut Client, n: u64) {
    from.send(json!({"type": "publish", "ref": format!("pub-{n}"), "data": {"n": n}}));
    let ack = from.next_of_type("ack");
    assert_eq!(ack["ref"], format!("pub-{n}"), "{ack}");
    assert_eq!(to.next_of_type("message")["data"]["n"], n);
}

/// Ids of the chat rows the server stored for `room`, oldest first.
fn stored_ids(db: &rusqlite::Connection, room: &str) -> Vec<String> {
    let mut select = db.prepare("SELECT msg_id FROM chat WHERE room = ?1 ORDER BY rowid").expect("prepare");
    select.query_map([room], |row| row.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
}

#[test]
fn issue_7_a_full_store_queue_refuses_chat_acks_and_loses_nothing_acknowledged() {
    const QUEUE_MAX: usize = 4;
    let mut args = ARGS.to_vec();
    // The store waits for the lock as long as the test holds it, so the
    // queue fills instead of the batch failing.
    args.extend(["--set", "store.queue_max=4", "--set", "store.busy_timeout_ms=600000"]);
    let server = Server::start(&args);
    let (mut alice, _) = server.join("jam", "alice");
    let (mut bob, _) = server.join("jam", "bob");
    // Both audit rows and the history load are written: the queue is empty now.
    let warm = settle_store(&mut alice);
    while bob.next_of_type("chat")["id"] != warm.as_str() {}

    let lock = lock_database(&server);
    // The first message after the lock is the store's batch, stuck on the lock.
    assert_eq!(chat_then_ping(&mut alice, "c0"), None);
    let live = bob.next_of_type("chat");
    let mut pending = vec![("c0".to_string(), live["seq"].as_u64().expect("seq"))];
    await_store_stuck(&server);
    let text = metrics(&server);
    assert!(metric(&text, "roomcast_store_batch_running_seconds") > 0.0, "{text}");
    let refused = loop {
        let id = format!("c{}", pending.len());
        let error = chat_then_ping(&mut alice, &id);
        let live = bob.next_of_type("chat");
        assert_eq!(live["id"], id.as_str(), "every chat goes out live, stored or not: {live}");
        if let Some(error) = error {
            assert_eq!(error["code"], "store_overloaded", "{error}");
            break id;
        }
        pending.push((id, live["seq"].as_u64().expect("seq")));
        assert!(pending.len() <= 2 * QUEUE_MAX, "never refused with store.queue_max = {QUEUE_MAX}");
    };
    assert_eq!(pending.len(), 1 + QUEUE_MAX, "the stuck batch, then a full queue: {pending:?}");

    // The lag shows: the queue is full and nothing is dequeued meanwhile.
    let text = metrics(&server);
    assert_eq!(metric(&text, "roomcast_store_queue_depth"), QUEUE_MAX as f64);
    assert_eq!(metric(&text, "roomcast_store_queue_max"), QUEUE_MAX as f64);
    assert_eq!(metric(&text, "roomcast_store_healthy"), 1.0, "waiting for a lock is not a failure");
    await_metric(&server, "roomcast_limit_hits_total{kind=\"store_overloaded\"}", 1.0);
    // Live traffic does not wait for the store.
    assert_publish_flows(&mut alice, &mut bob, 1);
    assert_publish_flows(&mut bob, &mut alice, 2);

    lock.execute_batch("COMMIT").expect("release the lock");
    // Every chat that was queued is acked now, with the seq it went out with.
    let mut acked = Vec::new();
    while acked.len() < pending.len() {
        let frame = alice.next_json();
        match frame["type"].as_str() {
            Some("ack") => {
                acked.push((frame["ref"].as_str().expect("ref").to_string(), frame["seq"].as_u64().expect("seq")))
            }
            Some("error") => panic!("{frame}"),
            _ => {}
        }
    }
    assert_eq!(acked, pending, "acks in order, one per queued message");
    let stored = stored_ids(&lock, "jam");
    let mut expected: Vec<String> = std::iter::once(warm).chain(acked.iter().map(|(id, _)| id.clone())).collect();
    assert_eq!(stored, expected, "every acknowledged message is stored, the refused {refused} is not");
    // The store is caught up: the next message is acked again, and it all survives a restart.
    alice.send(json!({"type": "chat.send", "text": "after", "id": "after", "ref": "after"}));
    assert_eq!(alice.next_of_type("ack")["ref"], "after");
    expected.push("after".into());
    drop((alice, bob, lock));
    let server = Server::start_in(server.stop(), ARGS);
    let (mut carol, welcome) = server.join("jam", "carol");
    assert_eq!(history_after_join(&mut carol, &welcome), expected);
}

#[test]
fn issue_7_a_failing_store_is_reported_live_traffic_goes_on_and_it_recovers() {
    let mut args = ARGS.to_vec();
    // A lock held by another process makes every write transaction fail at once.
    args.extend(["--set", "store.busy_timeout_ms=0"]);
    let mut server = Server::start(&args);
    let (mut alice, _) = server.join("disk", "alice");
    let (mut bob, _) = server.join("disk", "bob");
    alice.send(json!({"type": "chat.send", "text": "warm-up", "id": "warm", "ref": "warm"}));
    assert_eq!(alice.next_of_type("ack")["ref"], "warm");
    assert_eq!(bob.next_of_type("chat")["id"], "warm");
    let before = metrics(&server);

    let lock = lock_database(&server);
    for n in 0..3 {
        let id = format!("f{n}");
        alice.send(json!({"type": "chat.send", "text": "lost", "id": id, "ref": id}));
        let error = alice.next_of_type("error");
        assert_eq!(
            (error["code"].as_str(), error["ref"].as_str()),
            (Some("store_failed"), Some(id.as_str())),
            "{error}"
        );
        assert_eq!(bob.next_of_type("chat")["id"], id.as_str(), "delivered live all the same");
    }
    // A connection admitted meanwhile: its audit row is lost too. Its chat
    // comes after the audit event in the queue, so its failure means the
    // audit row's batch has been tried.
    let (mut carol, _) = server.join("disk", "carol");
    carol.send(json!({"type": "chat.send", "text": "lost", "id": "carol", "ref": "carol"}));
    assert_eq!(carol.next_of_type("error")["code"], "store_failed");
    assert_publish_flows(&mut alice, &mut bob, 1);
    assert_publish_flows(&mut carol, &mut alice, 2);

    let text = metrics(&server);
    assert_eq!(metric(&text, "roomcast_store_healthy"), 0.0, "{text}");
    let failed = |text: &str, kind: &str| metric(text, &format!("roomcast_store_rows_failed_total{{kind=\"{kind}\"}}"));
    assert_eq!(failed(&text, "chat") - failed(&before, "chat"), 4.0);
    assert!(failed(&text, "session_open") > failed(&before, "session_open"), "{text}");
    assert!(
        metric(&text, "roomcast_store_failed_batches_total")
            >= 4.0 + metric(&before, "roomcast_store_failed_batches_total")
    );
    await_metric(&server, "roomcast_limit_hits_total{kind=\"store_failed\"}", 4.0);

    lock.execute_batch("COMMIT").expect("release the lock");
    alice.send(json!({"type": "chat.send", "text": "back", "id": "back", "ref": "back"}));
    assert_eq!(alice.next_of_type("ack")["ref"], "back", "the store recovered by itself");
    assert_eq!(metric(&metrics(&server), "roomcast_store_healthy"), 1.0);
    assert_eq!(stored_ids(&lock, "disk"), ["warm", "back"]);
    // One error line for the one cause, however many batches failed; then the recovery.
    let mut lines = Vec::new();
    loop {
        let line = server.wait_for_log("store ");
        if line.contains("store recovered") {
            break;
        }
        lines.push(line);
    }
    let failures: Vec<&String> = lines.iter().filter(|line| line.contains("store write failed")).collect();
    assert_eq!(failures.len(), 1, "{lines:#?}");
    assert!(failures[0].contains("ERROR") && failures[0].contains("DatabaseBusy"), "{}", failures[0]);
}

/// The niceness of the server's thread named `name` (`/proc/PID/task/*/stat`,
/// field 19); `None` until the thread exists.
fn thread_niceness(pid: u32, name: &str) -> Option<i64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's tasks") {
        let Ok(task) = task else { continue };
        let dir = task.path();
        if std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim() != name {
            continue;
        }
        // A thread that ended between the listing and this read is no answer.
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // After the `(comm)` field: state is field 3, so niceness (19) is the 17th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        return fields.get(16)?.parse().ok();
    }
    None
}

#[test]
fn the_store_thread_runs_store_thread_nice_steps_below_the_shards() {
    for (args, steps) in
        [(&[][..], 10), (&["--set", "store.thread_nice=3"][..], 3), (&["--set", "store.thread_nice=0"][..], 0)]
    {
        let server = Server::start(args);
        // The threads start, and the store thread lowers itself, around the
        // time the server says it listens: read until both are there and
        // the store's niceness is set.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (store, shard) = (thread_niceness(server.pid(), "store"), thread_niceness(server.pid(), "shard-0"));
            if let (Some(store), Some(shard)) = (store, shard)
                && store == (shard + steps).min(19)
            {
                break;
            }
            assert!(Instant::now() < deadline, "store.thread_nice={steps}: store {store:?}, shard-0 {shard:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn only_rooms_with_stored_chat_read_their_history_when_created() {
    let server = Server::start(&[]);
    let (_quiet, welcome) = server.join("quiet", "q");
    assert_eq!(welcome.get("history_loading"), None, "a new room has no stored chat: {welcome}");
    let (mut chatty, welcome) = server.join("chatty", "c");
    assert_eq!(welcome.get("history_loading"), None, "{welcome}");
    let id = settle_store(&mut chatty);
    let data_dir = server.kill();

    // After the restart the filter comes from the store: the room with chat
    // reads it, the other is created complete.
    let server = Server::start_in(data_dir, &[]);
    let (mut back, welcome) = server.join("chatty", "c2");
    assert_eq!(welcome["history_loading"], true, "{welcome}");
    assert_eq!(history_after_join(&mut back, &welcome), [id]);
    let (_again, welcome) = server.join("quiet", "q2");
    assert_eq!(welcome.get("history_loading"), None, "{welcome}");
    assert_eq!(welcome["history"], json!([]));
    let shard = roomcast::__private::RoomKey::new("", "quiet").shard(2);
    await_metric(&server, &format!("roomcast_history_loads_skipped_total{{shard=\"{shard}\"}}"), 1.0);

    // With the filter off every room reads its history, as before it existed.
    let data_dir = server.kill();
    let server = Server::start_in(data_dir, &["--set", "rooms.history_filter_kib=0"]);
    let (_, welcome) = server.join("quiet", "q3");
    assert_eq!(welcome["history_loading"], true, "{welcome}");
}
