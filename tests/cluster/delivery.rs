//! Cross-node delivery under load: one room with members on three nodes,
//! publishers on each node; every member gets every message exactly once,
//! each publisher's messages in order, and the same `seq` everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::thread::JoinHandle;

use serde_json::{Value, json};

use crate::frames::{Event, next_event};
use crate::harness::Client;
use crate::nodes::{Cluster, Settings};

const ROOM: &str = "load";
/// Messages each publisher sends.
const PER_PUBLISHER: u64 = 3000;
/// Publishes a publisher sends before it waits for the ack of the last one.
const WINDOW: u64 = 100;
const PUBLISHERS: [&str; 3] = ["p1", "p2", "p3"];

/// One received `message`: its publisher, its number, its `seq`.
type Received = (String, u64, u64);

#[test]
fn a_room_across_three_nodes_delivers_every_message_exactly_once_in_one_order() {
    let cluster = Cluster::start(3, Settings::default());
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];

    // A listener and a publisher on each node, all joined before anyone
    // publishes (a welcome comes from the room's owner, so the membership
    // is established when it arrives).
    let mut listeners = Vec::new();
    let mut publishers = Vec::new();
    let mut start_seq = None;
    for (node, listener, publisher) in [(n1, "l1", "p1"), (n2, "l2", "p2"), (n3, "l3", "p3")] {
        for (user, list) in [(listener, &mut listeners), (publisher, &mut publishers)] {
            let (client, welcome) = node.join(ROOM, user);
            assert_eq!(welcome["room"], ROOM, "{welcome}");
            start_seq.get_or_insert(welcome["seq"].as_u64().expect("welcome.seq"));
            list.push((user, client));
        }
    }
    let start_seq = start_seq.expect("a welcome");
    let total = PER_PUBLISHER * PUBLISHERS.len() as u64;

    let listener_threads: Vec<(&str, JoinHandle<Vec<Received>>)> = listeners
        .into_iter()
        .map(|(user, mut client)| (user, std::thread::spawn(move || receive(user, &mut client, total as usize))))
        .collect();
    let publisher_threads: Vec<(&str, JoinHandle<Published>)> = publishers
        .into_iter()
        .map(|(user, client)| (user, std::thread::spawn(move || publish(user, client))))
        .collect();

    let mut acks: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut everyone: Vec<(&str, Vec<Received>)> = Vec::new();
    for (user, thread) in publisher_threads {
        let published = thread.join().unwrap_or_else(|_| panic!("publisher {user} failed"));
        for (n, seq) in published.acks {
            acks.insert((user.to_string(), n), seq);
        }
        everyone.push((user, published.received));
    }
    for (user, thread) in listener_threads {
        everyone.push((user, thread.join().unwrap_or_else(|_| panic!("listener {user} failed"))));
    }

    // The acks number the messages 1 after the welcome's seq, without gaps
    // or repeats: one total order.
    let acked: BTreeSet<u64> = acks.values().copied().collect();
    assert_eq!(acked.len() as u64, total, "every publish got its own seq");
    assert_eq!(acked, (start_seq + 1..=start_seq + total).collect(), "seqs are consecutive");

    for (user, received) in &everyone {
        check_member(user, received, &acks);
    }
}

/// Exactly once, in `seq` order, each publisher's messages in order, and
/// the `seq` its publisher's ack gave.
fn check_member(user: &str, received: &[Received], acks: &BTreeMap<(String, u64), u64>) {
    for pair in received.windows(2) {
        assert!(pair[0].2 < pair[1].2, "{user}: seq {} came after seq {}", pair[1].2, pair[0].2);
    }
    for publisher in PUBLISHERS {
        let numbers: Vec<u64> = received.iter().filter(|(p, _, _)| p == publisher).map(|(_, n, _)| *n).collect();
        if publisher == user {
            assert!(numbers.is_empty(), "{user} received {} of its own messages", numbers.len());
            continue;
        }
        let expected: Vec<u64> = (1..=PER_PUBLISHER).collect();
        if numbers != expected {
            let got: BTreeSet<u64> = numbers.iter().copied().collect();
            let missing: Vec<u64> = expected.iter().copied().filter(|n| !got.contains(n)).take(10).collect();
            let out_of_order = numbers.windows(2).find(|w| w[0] >= w[1]);
            panic!(
                "{user}: {} messages of {publisher} (expected {PER_PUBLISHER}); first missing: {missing:?}; \
                 first out of order or repeated: {out_of_order:?}",
                numbers.len()
            );
        }
    }
    for (publisher, n, seq) in received {
        let acked = acks.get(&(publisher.clone(), *n)).copied();
        assert_eq!(acked, Some(*seq), "{user}: {publisher}'s message {n} came with seq {seq}, its ack said {acked:?}");
    }
}

/// A message frame of this test: (publisher, number, seq). Any error or
/// cluster event fails the test: nothing of the kind should happen here.
fn as_message(user: &str, frame: &Value) -> Option<Received> {
    match frame["type"].as_str() {
        Some("message") => {
            let publisher = frame["data"]["p"].as_str().expect("data.p").to_string();
            let n = frame["data"]["n"].as_u64().expect("data.n");
            assert_eq!(frame["from"], publisher.as_str(), "{user}: {frame}");
            Some((publisher, n, frame["seq"].as_u64().expect("seq")))
        }
        Some("error" | "cluster") => panic!("{user} got {frame}"),
        _ => None,
    }
}

/// Reads until `count` messages have arrived.
fn receive(user: &str, client: &mut Client, count: usize) -> Vec<Received> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        match next_event(client) {
            Event::Frame(frame) => received.extend(as_message(user, &frame)),
            other => panic!("{user}: {other:?} after {} of {count} messages", received.len()),
        }
    }
    received
}

struct Published {
    /// (number, seq) of each of its own messages, from the acks.
    acks: Vec<(u64, u64)>,
    /// The others' messages it received.
    received: Vec<Received>,
}

/// Publishes `PER_PUBLISHER` numbered messages, `WINDOW` at a time (then
/// reading up to the ack of the window's last one, so neither side's
/// queues grow without bound), and then reads the others' messages until
/// it has them all.
fn publish(user: &str, mut client: Client) -> Published {
    let mut acks = Vec::with_capacity(PER_PUBLISHER as usize);
    let mut received = Vec::new();
    let mut n = 0;
    while n < PER_PUBLISHER {
        let last = (n + WINDOW).min(PER_PUBLISHER);
        for m in n + 1..=last {
            client.send(json!({"type": "publish", "ref": m, "data": {"p": user, "n": m}}));
        }
        n = last;
        loop {
            let frame = match next_event(&mut client) {
                Event::Frame(frame) => frame,
                other => panic!("{user}: {other:?} waiting for the ack of {last} ({} acks so far)", acks.len()),
            };
            if frame["type"] == "ack" {
                let reference = frame["ref"].as_u64().expect("ref");
                acks.push((reference, frame["seq"].as_u64().unwrap_or_else(|| panic!("{user}: {frame}"))));
                if reference == last {
                    break;
                }
            } else {
                received.extend(as_message(user, &frame));
            }
        }
    }
    assert_eq!(acks.len() as u64, PER_PUBLISHER, "{user}: one ack per publish");
    let others = (PER_PUBLISHER * (PUBLISHERS.len() as u64 - 1)) as usize;
    received.extend(receive(user, &mut client, others.saturating_sub(received.len())));
    Published { acks, received }
}
