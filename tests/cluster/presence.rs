//! Presence across nodes, and what happens to it when a node dies: its
//! members leave presence everywhere; members of a room it owned are closed
//! with 1012 and come back on another node.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::frames::{acked, next_of, wait_for, wait_for_close};
use crate::harness::{Claims, Client};
use crate::nodes::{Cluster, Settings, encode};

/// Short cluster timings, so a dead node is noticed within a few seconds.
const FAST: Settings = Settings { heartbeat_ms: Some(500), node_ttl_ms: Some(2000), lobby: false };

/// `welcome.members` as (conn, user) pairs.
fn members(welcome: &Value) -> BTreeSet<(String, String)> {
    welcome["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {welcome}"))
        .iter()
        .map(|m| (m["conn"].as_str().expect("conn").to_string(), m["user"].as_str().expect("user").to_string()))
        .collect()
}

fn conn(welcome: &Value) -> String {
    welcome["conn"].as_str().unwrap_or_else(|| panic!("no conn in {welcome}")).to_string()
}

/// Waits for the presence event `kind` about `user` and checks its
/// connection id and member count.
fn expect_presence(client: &mut Client, who: &str, kind: &str, user: &str, user_conn: &str, count: u64) {
    let frame = wait_for(client, who, &format!("{kind} {user}"), |f| f["type"] == kind && f["member"]["user"] == user);
    assert_eq!(frame["member"]["conn"], user_conn, "{who}: {frame}");
    assert_eq!(frame["member_count"], count, "{who}: {frame}");
}

#[test]
fn welcome_members_and_presence_events_span_the_nodes() {
    let cluster = Cluster::start(3, Settings::default());
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let room = "presence";

    let (mut alice, wa) = n1.join(room, "alice");
    assert_eq!((wa["member_count"].as_u64(), members(&wa).len()), (Some(1), 0), "{wa}");

    let (mut bob, wb) = n2.join(room, "bob");
    assert_eq!(members(&wb), BTreeSet::from([(conn(&wa), "alice".into())]), "bob sees alice on n1: {wb}");
    assert_eq!(wb["member_count"], 2, "{wb}");
    expect_presence(&mut alice, "alice", "member_joined", "bob", &conn(&wb), 2);

    let (mut carol, wc) = n3.join(room, "carol");
    assert_eq!(
        members(&wc),
        BTreeSet::from([(conn(&wa), "alice".into()), (conn(&wb), "bob".into())]),
        "carol sees alice on n1 and bob on n2: {wc}"
    );
    assert_eq!(wc["member_count"], 3, "{wc}");
    expect_presence(&mut alice, "alice", "member_joined", "carol", &conn(&wc), 3);
    expect_presence(&mut bob, "bob", "member_joined", "carol", &conn(&wc), 3);
    let ids = BTreeSet::from([conn(&wa), conn(&wb), conn(&wc)]);
    assert_eq!(ids.len(), 3, "connection ids are unique in the cluster: {ids:?}");

    carol.ws.close(None).expect("close");
    let _ = wait_for_close(&mut carol, "carol");
    expect_presence(&mut alice, "alice", "member_left", "carol", &conn(&wc), 2);
    expect_presence(&mut bob, "bob", "member_left", "carol", &conn(&wc), 2);

    drop(bob);
    expect_presence(&mut alice, "alice", "member_left", "bob", &conn(&wb), 1);
}

#[test]
fn a_killed_node_s_members_leave_presence_and_the_others_keep_delivering() {
    let mut cluster = Cluster::start(3, FAST);
    let room = "survive";
    // The room is created on n1 (its owner); n3, to be killed, only has members.
    let (mut a, _) = cluster.nodes[0].join(room, "a");
    let (mut b, _) = cluster.nodes[1].join(room, "b");
    let (_c, _) = cluster.nodes[2].join(room, "c");
    let (_c2, _) = cluster.nodes[2].join(room, "c2");
    for user in ["b", "c", "c2"] {
        wait_for(&mut a, "a", &format!("member_joined {user}"), |f| {
            f["type"] == "member_joined" && f["member"]["user"] == user
        });
    }
    for user in ["c", "c2"] {
        wait_for(&mut b, "b", &format!("member_joined {user}"), |f| {
            f["type"] == "member_joined" && f["member"]["user"] == user
        });
    }

    cluster.nodes[2].sigkill();

    // Within node_ttl_ms + heartbeat_ms (not timed here: the wait's
    // deadline is generous), both of n3's members leave, for a and for b.
    for (who, client) in [("a", &mut a), ("b", &mut b)] {
        let mut gone = BTreeSet::new();
        while gone.len() < 2 {
            let left = next_of(client, who, "member_left");
            let user = left["member"]["user"].as_str().expect("user").to_string();
            assert!(user == "c" || user == "c2", "{who}: only n3's members leave: {left}");
            assert!(gone.insert(user), "{who}: a member left twice: {left}");
        }
    }

    // n1 and n2 still deliver between themselves, both ways.
    acked(&mut a, json!({"type": "publish", "data": {"after": "a"}}), 1);
    wait_for(&mut b, "b", "a's message", |f| f["type"] == "message" && f["data"]["after"] == "a");
    acked(&mut b, json!({"type": "publish", "data": {"after": "b"}}), 2);
    wait_for(&mut a, "a", "b's message", |f| f["type"] == "message" && f["data"]["after"] == "b");
    cluster.nodes[0].assert_running();
    cluster.nodes[1].assert_running();
}

#[test]
fn members_of_a_room_owned_by_a_killed_node_are_closed_with_1012_and_come_back_elsewhere() {
    let mut cluster = Cluster::start(3, FAST);
    let room = "orphan";
    // The room is created on n3, which will die; a and b are remote members.
    let (mut c, _) = cluster.nodes[2].join(room, "c");
    let (mut a, welcome) = cluster.nodes[0].join(room, "a");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_string();
    let (mut b, _) = cluster.nodes[1].join(room, "b");
    wait_for(&mut c, "c", "member_joined b", |f| f["type"] == "member_joined" && f["member"]["user"] == "b");
    let seq = acked(&mut c, json!({"type": "publish", "data": "before"}), 1)["seq"].as_u64().expect("seq");
    let message = next_of(&mut a, "a", "message");
    assert_eq!(message["seq"], seq, "{message}");
    wait_for(&mut b, "b", "c's message", |f| f["type"] == "message");

    cluster.nodes[2].sigkill();

    for (who, client) in [("a", &mut a), ("b", &mut b)] {
        let (code, reason) = wait_for_close(client, who);
        assert_eq!((code, reason.as_str()), (1012, "room owner node lost"), "{who}");
    }

    // They reconnect to their own nodes; the room lives again, owned by a
    // live node. What the dead owner held is gone: recovered false.
    let (mut a, welcome) = cluster.nodes[0].connect(
        room,
        &Claims { sub: "a", ..Claims::default() },
        &format!("&since={seq}&epoch={}", encode(&epoch)),
    );
    assert_eq!(welcome["recovered"], false, "{welcome}");
    let (mut b, welcome) = cluster.nodes[1].join(room, "b");
    assert!(welcome.get("role").is_some(), "a full welcome: {welcome}");
    wait_for(&mut a, "a", "member_joined b", |f| f["type"] == "member_joined" && f["member"]["user"] == "b");
    acked(&mut b, json!({"type": "publish", "data": "after"}), 1);
    wait_for(&mut a, "a", "b's message", |f| f["type"] == "message" && f["data"] == "after");
}
