//! Recovery across nodes: `since` resume on another node, and a Redis
//! restart in the middle of a stream of messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use crate::frames::{Event, Pumped, acked, next_event, next_of};
use crate::harness::{Claims, Client};
use crate::nodes::{Cluster, Node, Settings, encode, poll_until};

#[test]
fn a_client_that_left_node_one_resumes_with_since_on_node_two() {
    let cluster = Cluster::start(2, Settings::default());
    let [n1, n2] = [&cluster.nodes[0], &cluster.nodes[1]];
    let room = "resume";
    let (mut publisher, _) = n1.join(room, "pub");
    let (mut client, welcome) = n1.join(room, "cli");
    let epoch = welcome["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {welcome}")).to_string();

    let mut seqs = Vec::new();
    for n in 1..=3 {
        seqs.push(acked(&mut publisher, json!({"type": "publish", "data": {"n": n}}), n)["seq"].clone());
    }
    for n in 1..=3 {
        let message = next_of(&mut client, "cli", "message");
        assert_eq!((&message["data"]["n"], &message["seq"]), (&json!(n), &seqs[n - 1]), "{message}");
    }
    let last_seen = seqs[2].as_u64().expect("seq");
    drop(client);

    // Published while it is away.
    for n in 4..=6 {
        seqs.push(acked(&mut publisher, json!({"type": "publish", "data": {"n": n}}), n)["seq"].clone());
    }

    let query = format!("&since={last_seen}&epoch={}", encode(&epoch));
    let (mut client, welcome) = n2.connect(room, &Claims { sub: "cli", ..Claims::default() }, &query);
    assert_eq!(welcome["recovered"], true, "node two recovers what node one's room holds: {welcome}");
    assert_eq!(welcome["seq"], seqs[5], "{welcome}");
    assert_eq!(welcome["epoch"], epoch.as_str(), "{welcome}");
    // The missed messages follow the welcome at once, in order (a stored
    // chat history may arrive at any time and is skipped).
    for n in 4..=6 {
        let frame = loop {
            match next_event(&mut client) {
                Event::Frame(frame) if frame["type"] == "chat_history" => {}
                Event::Frame(frame) => break frame,
                other => panic!("cli: {other:?} instead of recovered message {n}"),
            }
        };
        assert_eq!(frame["type"], "message", "recovered messages come first: {frame}");
        assert_eq!((&frame["data"]["n"], &frame["seq"]), (&json!(n), &seqs[n - 1]), "{frame}");
    }
    // Then live traffic, from node one to node two.
    let seq = acked(&mut publisher, json!({"type": "publish", "data": {"n": 7}}), 7)["seq"].clone();
    let message = next_of(&mut client, "cli", "message");
    assert_eq!((&message["data"]["n"], &message["seq"]), (&json!(7), &seq), "{message}");
}

/// A publisher on a thread: publishes `{"n": i}` for i = 1, 2, … one at a
/// time (each waits for its answer), about 500 per second at most, until
/// told to stop. Answers other than an ack are counted, not fatal: while
/// Redis is down a node may refuse what it cannot deliver.
struct Stream {
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(u64, Vec<Value>), String>>,
}

impl Stream {
    fn start(mut client: Client) -> Stream {
        let published = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (published.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut refused = Vec::new();
            let mut n = 0;
            while !halt.load(Ordering::SeqCst) {
                n += 1;
                client.send(json!({"type": "publish", "ref": n, "data": {"n": n}}));
                let answer = loop {
                    match next_event(&mut client) {
                        Event::Frame(frame) if frame["ref"] == json!(n) => break frame,
                        Event::Frame(_) => {}
                        // Reported by `stop` (a failing test drops the nodes
                        // under it, so this is not a failure by itself).
                        other => return Err(format!("its connection ended: {other:?} after {n} publishes")),
                    }
                };
                if answer["type"] == "ack" {
                    count.store(n, Ordering::SeqCst);
                } else if refused.len() < 20 {
                    refused.push(answer);
                }
                // Load pacing, not synchronisation: keeps the stream to a
                // rate the 2-core box carries beside the nodes and Redis.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok((n, refused))
        });
        Stream { published, stop, thread }
    }

    /// The number of the last acknowledged publish.
    fn last(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    fn stop(self) -> (u64, Vec<Value>) {
        self.stop.store(true, Ordering::SeqCst);
        let result = self.thread.join().expect("the publisher thread failed");
        result.unwrap_or_else(|why| panic!("the publisher: {why}"))
    }
}

/// Waits until `member` gets a message of the stream numbered above `after`.
fn stream_message_after(member: &Pumped, after: u64) -> Value {
    member.wait_for(&format!("a stream message after {after}"), |f| {
        f["type"] == "message" && f["data"]["n"].as_u64().is_some_and(|n| n > after)
    })
}

fn readyz(node: &Node) -> (u16, Value) {
    let (status, body) = crate::harness::raw_http(node.addr, b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

#[test]
fn a_redis_restart_mid_stream_degrades_then_restores_and_cross_node_delivery_resumes() {
    let mut cluster = Cluster::start(2, Settings::default());
    let room = "stream";
    // The room is created on n1; `local` is n1's other member, `remote` is on n2.
    let (writer, _) = cluster.nodes[0].join(room, "writer");
    let local = Pumped::new("local", cluster.nodes[0].join(room, "local").0);
    let remote = Pumped::new("remote", cluster.nodes[1].join(room, "remote").0);
    let stream = Stream::start(writer);
    stream_message_after(&remote, 0);

    let marks = [cluster.nodes[0].log_mark(), cluster.nodes[1].log_mark()];
    cluster.redis.kill();

    for member in [&local, &remote] {
        let event = member.wait_for("cluster degraded", |f| f["type"] == "cluster");
        assert_eq!(event["state"], "degraded", "{}: {event}", member.who);
    }
    let mut down = [0; 2];
    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        down[i] = node.wait_for_log(marks[i], "cluster link down");
        let (status, body) = poll_until(&format!("{} /readyz 503", node.id), || match readyz(node) {
            (503, body) => Ok((503, body)),
            other => Err(format!("{other:?}")),
        });
        assert_eq!((status, &body["error"]), (503, &json!("cluster_degraded")), "{}: {body}", node.id);
    }
    // Local delivery goes on during the outage: n1's own member still gets
    // what is published on n1.
    stream_message_after(&local, stream.last());

    cluster.redis.restart();

    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        node.wait_for_log(down[i], "cluster link up");
        poll_until(&format!("{} /readyz 200", node.id), || match readyz(node) {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }
    for member in [&local, &remote] {
        let event = member.wait_for("cluster restored", |f| f["type"] == "cluster");
        assert_eq!(event["state"], "restored", "{}: {event}", member.who);
        assert!(event["recovered"].is_boolean(), "{}: {event}", member.who);
    }

    // A message published on n1 after the restart reaches n2, and one
    // published on n2 reaches n1.
    stream_message_after(&remote, stream.last());
    remote.send(json!({"type": "publish", "data": "from n2"}));
    local.wait_for("n2's message", |f| f["type"] == "message" && f["data"] == "from n2");

    let (published, refused) = stream.stop();
    assert!(published > 0, "the stream ran");
    eprintln!("stream: {published} publishes, refused (first 20): {refused:?}");
    for node in &mut cluster.nodes {
        node.assert_running();
    }
}
