//! roomcast as a library: a server built in this process with
//! `Server::builder`, a custom `poll.vote` handler with per-room state, and
//! connect, join and disconnect hooks, driven over real sockets.

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use roomcast::config::Sources;
use roomcast::{Config, Context, HandlerError, HookRefusal, Server, ServerBuilder, ServerHandle};
use serde_json::{Value, json};

use super::harness::{Claims, Client, PATIENCE, Refused, SECRET, token};
use super::http_api::metrics_text;

/// Two shards, no store, no pinning, the test secret, data in `dir`.
fn config(dir: &tempfile::TempDir) -> Config {
    let env = [
        ("ROOMCAST_JWT_SECRET", SECRET),
        ("ROOMCAST_SHARDS", "2"),
        ("ROOMCAST_PIN", "false"),
        ("ROOMCAST_DATA_DIR", dir.path().to_str().expect("utf-8 path")),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::load(Sources { env, ..Sources::default() }).expect("config")
}

fn builder(dir: &tempfile::TempDir) -> ServerBuilder {
    let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    Server::builder().config(config(dir)).listen(local).store(false)
}

fn connect(addr: SocketAddr, room: &str, user: &str) -> Result<Client, Refused> {
    let token = token(&Claims { sub: user, ..Claims::default() });
    Client::connect(&format!("ws://{addr}/ws/{room}?token={token}"))
}

fn join(addr: SocketAddr, room: &str, user: &str) -> Client {
    let mut client = connect(addr, room, user).expect("handshake");
    client.next_of_type("welcome");
    client
}

/// The tally of the votes in the room: `{"option": count}`.
#[derive(Default)]
struct Votes(std::collections::BTreeMap<String, u64>);

/// `{"type":"poll.vote","data":{"option":O}}`: counts the vote in the room,
/// publishes the tally to the others and replies it to the voter.
fn vote(ctx: &mut Context<'_>) -> Result<(), HandlerError> {
    let option = ctx
        .data()
        .and_then(|data| serde_json::from_slice::<Value>(data).ok())
        .and_then(|data| data["option"].as_str().map(str::to_owned))
        .ok_or_else(|| HandlerError::new("bad_vote", "data.option must be a string"))?;
    let votes = ctx.room_state::<Votes>()?;
    *votes.0.entry(option).or_default() += 1;
    let tally = serde_json::to_vec(&votes.0).map_err(|_| HandlerError::new("internal_error", "tally"))?;
    ctx.publish(&tally)?;
    ctx.reply("poll.tally", &tally)
}

fn poll_server(dir: &tempfile::TempDir) -> (ServerHandle, Receiver<(String, u16)>) {
    let (gone_tx, gone) = channel();
    let server = builder(dir)
        .handler("poll.vote", vote)
        .handler("whoami", |ctx| {
            let sender = ctx.sender();
            let data =
                json!({"user": sender.user, "room": ctx.room(), "shard": ctx.shard(), "conn": ctx.conn().to_string()});
            ctx.reply("whoami", data.to_string().as_bytes())
        })
        .on_connect(
            |who, _room| {
                if who.user == "mallory" { Err(HookRefusal::new("banned", "mallory is banned")) } else { Ok(()) }
            },
        )
        .on_join(
            |_who, room| {
                if room.starts_with("secret") { Err(HookRefusal::new("no_secrets", "not for you")) } else { Ok(()) }
            },
        )
        .on_disconnect(move |who, code| {
            let _ = gone_tx.send((who.user.to_string(), code));
        })
        .start()
        .expect("server starts");
    (server, gone)
}

#[test]
fn a_custom_handler_keeps_per_room_state_and_publishes_with_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _gone) = poll_server(&dir);
    let addr = server.local_addr();
    let mut alice = join(addr, "poll", "alice");
    let mut bob = join(addr, "poll", "bob");
    alice.next_of_type("member_joined");

    alice.send(json!({"type": "poll.vote", "ref": "v1", "data": {"option": "a"}}));
    let tally = alice.next_of_type("poll.tally");
    assert_eq!(tally, json!({"type": "poll.tally", "ref": "v1", "data": {"a": 1}}));
    let message = bob.next_of_type("message");
    assert_eq!(message["data"], json!({"a": 1}));
    assert_eq!(message["from"], "alice");
    assert_eq!(message["seq"], 1);

    bob.send(json!({"type": "poll.vote", "data": {"option": "b"}}));
    assert_eq!(bob.next_of_type("poll.tally")["data"], json!({"a": 1, "b": 1}));
    let message = alice.next_of_type("message");
    assert_eq!((message["seq"].clone(), message["data"].clone()), (json!(2), json!({"a": 1, "b": 1})));
    // A publish after the handler's takes the next seq: one sequence per room.
    alice.send(json!({"type": "publish", "data": "hi", "ref": 3}));
    assert_eq!(alice.next_of_type("ack")["seq"], 3);

    // Another room has its own state.
    let mut carol = join(addr, "poll-2", "carol");
    carol.send(json!({"type": "poll.vote", "data": {"option": "b"}}));
    assert_eq!(carol.next_of_type("poll.tally")["data"], json!({"b": 1}));

    // A refusal is an error with the handler's code and the ref.
    carol.send(json!({"type": "poll.vote", "ref": 9, "data": 5}));
    let error = carol.next_of_type("error");
    assert_eq!((error["code"].clone(), error["ref"].clone()), (json!("bad_vote"), json!(9)));
    // Types without a handler are still unknown.
    carol.send(json!({"type": "poll.close", "ref": 10}));
    assert_eq!(carol.next_of_type("error")["code"], "unknown_type");

    carol.send(json!({"type": "whoami", "ref": 1}));
    let whoami = carol.next_of_type("whoami")["data"].clone();
    assert_eq!((whoami["user"].clone(), whoami["room"].clone()), (json!("carol"), json!("poll-2")));
    assert_eq!(whoami["shard"], ServerHandle::shard_of("", "poll-2", 2));
    server.shutdown_within(Duration::from_secs(5));
}

#[test]
fn hooks_refuse_connects_and_joins_and_hear_disconnects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, gone) = poll_server(&dir);
    let addr = server.local_addr();
    match connect(addr, "lobby", "mallory") {
        Err(Refused::Status(status, body)) => {
            assert_eq!(status, 403);
            let body: Value = serde_json::from_str(&body).expect("JSON body");
            assert_eq!(body["error"], "banned");
        }
        Err(other) => panic!("expected a 403, got {other:?}"),
        Ok(_) => panic!("mallory was let in"),
    }

    let mut alice = join(addr, "lobby", "alice");
    alice.send(json!({"type": "join", "room": "secret-1", "ref": "j"}));
    let error = alice.next_of_type("error");
    assert_eq!((error["code"].clone(), error["ref"].clone()), (json!("no_secrets"), json!("j")));
    alice.send(json!({"type": "join", "room": "open-1", "ref": "k"}));
    alice.next_of_type("welcome");

    alice.ws.close(None).expect("close");
    let deadline = Instant::now() + PATIENCE;
    let (user, code) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (user, code) = gone.recv_timeout(left).expect("the disconnect hook ran");
        if user == "alice" {
            break (user, code);
        }
    };
    assert_eq!((user.as_str(), code), ("alice", 1000));
    server.shutdown_within(Duration::from_secs(5));
}

#[test]
fn builtin_types_cannot_be_taken_by_a_handler() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = builder(&dir).handler("publish", |_ctx| Ok(())).start();
    assert!(refused.is_err_and(|e| e.to_string().contains("built in")));
    let refused = builder(&dir).handler("chat.poll", |_ctx| Ok(())).start();
    assert!(refused.is_err());
}

/// Iterations of `shard` that took more than 500 µs, from `/metrics`.
fn slow_iterations(addr: SocketAddr, shard: usize) -> f64 {
    let text = metrics_text(addr);
    let series = |le: &str| -> f64 {
        let prefix = format!("roomcast_loop_iteration_seconds_bucket{{shard=\"{shard}\",le=\"{le}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
    };
    series("+Inf") - series("0.0005")
}

/// A handler runs inside the shard's loop: one that takes 1 ms makes
/// iterations of at least 1 ms, which the loop-time histogram counts.
#[test]
fn a_handler_that_takes_1_ms_shows_in_the_loop_time_histogram() {
    const FRAMES: u32 = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = builder(&dir)
        .handler("slow", |ctx| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1) {
                std::hint::spin_loop();
            }
            ctx.reply("slow", b"true")
        })
        .start()
        .expect("server starts");
    let addr = server.local_addr();
    let shard = ServerHandle::shard_of("", "slow-room", 2);
    let before = slow_iterations(addr, shard);
    let mut client = join(addr, "slow-room", "alice");
    // One at a time, so each runs in an iteration of its own.
    for _ in 0..FRAMES {
        client.send(json!({"type": "slow"}));
        client.next_of_type("slow");
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let slow = slow_iterations(addr, shard) - before;
        if slow >= f64::from(FRAMES) {
            break;
        }
        assert!(Instant::now() < deadline, "only {slow} iterations over 500 µs on shard {shard}");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.shutdown_within(Duration::from_secs(5));
}

/// `Context::send_to_conn` reaches a connection whose home is another shard:
/// the connect hook notes each user's connection, and a `whisper` handler on
/// alice's shard sends to bob's connection on the other one.
#[test]
fn a_handler_sends_to_a_connection_on_another_shard() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().expect("temp dir");
    let conns: Arc<Mutex<HashMap<String, roomcast::ConnRef>>> = Arc::default();
    let noted = Arc::clone(&conns);
    let server = builder(&dir)
        .on_connect(move |who, _room| {
            noted.lock().expect("test map").insert(who.user.to_string(), who.conn);
            Ok(())
        })
        .handler("whisper", move |ctx| {
            let bob = conns.lock().expect("test map").get("bob").copied();
            let bob = bob.ok_or_else(|| HandlerError::new("no_bob", "bob has not connected"))?;
            let sent = ctx.send_to_conn(bob, "whisper", br#""psst""#)?;
            ctx.reply("whispered", if sent { b"true" } else { b"false" })
        })
        .start()
        .expect("server starts");
    let addr = server.local_addr();
    let on_shard = |shard: usize| {
        (0..).map(|n| format!("room-{n}")).find(|room| ServerHandle::shard_of("", room, 2) == shard).expect("a room")
    };
    let mut bob = join(addr, &on_shard(1), "bob");
    let mut alice = join(addr, &on_shard(0), "alice");
    alice.send(json!({"type": "whisper", "ref": 1}));
    assert_eq!(alice.next_of_type("whispered")["data"], true);
    let whisper = bob.next_of_type("whisper");
    assert_eq!(whisper["data"], "psst", "{whisper}");
    server.shutdown_within(Duration::from_millis(500));
}
