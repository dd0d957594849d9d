//! The admin HTTP API of one node acts on the whole cluster; stats and
//! metrics show the cluster link.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::frames::{next_of, wait_for, wait_for_close};
use crate::harness::{Client, Refused, SECRET, unix_now};
use crate::nodes::{Cluster, Settings, poll_until};
use roomcast::token::{MintRequest, mint_hs256};

#[test]
fn admin_sends_and_kicks_on_one_node_reach_members_on_the_others() {
    let cluster = Cluster::start(3, Settings::default());
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    // Nobody is on n1, where the admin requests are made.
    let (mut b, welcome_b) = n2.join("adm", "b");
    let (mut c, _) = n3.join("adm", "c");
    let (mut d, _) = n3.join("other", "d");
    wait_for(&mut b, "b", "member_joined c", |f| f["type"] == "member_joined" && f["member"]["user"] == "c");

    let send = |body: Value| {
        let (status, answer) = n1.post("/api/v1/send", &body);
        assert_eq!(status, 200, "send {body}: {answer}");
    };

    send(json!({"room": "adm", "data": {"k": "room"}}));
    let expected = json!({"type": "broadcast", "to": "room", "room": "adm", "data": {"k": "room"}});
    assert_eq!(next_of(&mut b, "b", "broadcast"), expected, "b on n2");
    assert_eq!(next_of(&mut c, "c", "broadcast"), expected, "c on n3");

    send(json!({"user": "d", "data": "u"}));
    // d's first broadcast: it was not in the room of the first send.
    assert_eq!(next_of(&mut d, "d", "broadcast"), json!({"type": "broadcast", "to": "user", "data": "u"}));

    // b's connection is n2's: n1 hands the send on and says so.
    let (status, answer) = n1.post("/api/v1/send", &json!({"connection": welcome_b["conn"], "data": 3}));
    let conn = welcome_b["conn"].as_str().unwrap_or_default();
    let node_of_b = conn.split('.').next().and_then(|shard| shard.parse::<u64>().ok()).map(|shard| shard >> 8);
    assert_eq!((status, &answer["forwarded"], answer["node"].as_u64()), (202, &json!(true), node_of_b), "{answer}");
    assert_eq!(next_of(&mut b, "b", "broadcast"), json!({"type": "broadcast", "to": "connection", "data": 3}));

    send(json!({"all": true, "data": "4"}));
    for (who, client) in [("b", &mut b), ("c", &mut c), ("d", &mut d)] {
        assert_eq!(next_of(client, who, "broadcast"), json!({"type": "broadcast", "to": "all", "data": "4"}), "{who}");
    }

    let (status, answer) = n1.post("/api/v1/kick", &json!({"user": "c"}));
    assert_eq!(status, 200, "kick: {answer}");
    assert_eq!(wait_for_close(&mut c, "c"), (4003, "kicked by an administrator".to_string()));
    wait_for(&mut b, "b", "member_left c", |f| f["type"] == "member_left" && f["member"]["user"] == "c");

    // Closing the live room on n1, where none of its members is.
    let (status, answer) = n1.delete("/api/v1/live/rooms/adm");
    assert_eq!((status, &answer["closed"]), (200, &json!(0)), "close: {answer}");
    assert_eq!(wait_for_close(&mut b, "b"), (4004, "room closed by an administrator".to_string()));
}

#[test]
fn a_token_revoked_on_one_node_is_refused_on_the_others() {
    let cluster = Cluster::start(2, Settings::default());
    let [n1, n2] = [&cluster.nodes[0], &cluster.nodes[1]];
    let jti = "jti-across";
    let request = MintRequest { sub: "r", ttl_s: 600, jti: Some(jti), ..MintRequest::default() };
    let token = mint_hs256(SECRET.as_bytes(), &request, unix_now()).expect("mint");
    let url = n2.url("rev", &format!("token={token}"));
    let mut before = Client::connect(&url).unwrap_or_else(|e| panic!("n2 refused the fresh token: {e:?}"));
    assert_eq!(before.next_of_type("welcome")["type"], "welcome");

    let (status, answer) = n1.delete(&format!("/api/v1/tokens/{jti}"));
    assert_eq!((status, &answer["revoked"]), (200, &json!(true)), "{answer}");
    // The revocation reaches n2 through Redis, with no event a client sees:
    // try the handshake until n2 refuses it.
    let body = poll_until("n2 refuses the revoked token", || match Client::connect(&url) {
        Err(Refused::Status(401, body)) => Ok(body),
        Ok(_) => Err("accepted".into()),
        Err(other) => Err(format!("{other:?}")),
    });
    assert!(body.contains("token_revoked"), "{body}");
}

#[test]
fn stats_and_metrics_show_the_cluster_link_and_its_three_nodes() {
    let cluster = Cluster::start(3, Settings::default());
    let mut numbers = BTreeSet::new();
    for node in &cluster.nodes {
        let stats = poll_until(&format!("{}: stats with 3 nodes, link up", node.id), || {
            let (status, stats) = node.get("/api/v1/stats");
            let cluster = &stats["cluster"];
            if status == 200 && cluster["link"] == "up" && cluster["nodes"] == 3 {
                Ok(stats)
            } else {
                Err(stats.to_string())
            }
        });
        let cluster = &stats["cluster"];
        assert_eq!(cluster["node_id"], node.id.as_str(), "{stats}");
        let number = cluster["node"].as_u64().unwrap_or_else(|| panic!("no node number: {stats}"));
        assert!((1..=255).contains(&number), "{stats}");
        assert!(numbers.insert(number), "node numbers are distinct: {number} twice");

        let metrics = poll_until(&format!("{}: metrics with 3 nodes, link up", node.id), || {
            let page = node.metrics();
            let lines: BTreeSet<&str> = page.lines().collect();
            if lines.contains("roomcast_cluster_link_up 1") && lines.contains("roomcast_cluster_nodes 3") {
                Ok(page.clone())
            } else {
                Err(page.lines().filter(|l| l.starts_with("roomcast_cluster")).collect::<Vec<_>>().join("; "))
            }
        });
        for (family, kind) in [
            ("roomcast_cluster_link_up", "gauge"),
            ("roomcast_cluster_nodes", "gauge"),
            ("roomcast_cluster_published_total", "counter"),
            ("roomcast_cluster_received_total", "counter"),
            ("roomcast_cluster_reconnects_total", "counter"),
            ("roomcast_cluster_dropped_total", "counter"),
            ("roomcast_cluster_subscriptions", "gauge"),
            ("roomcast_cluster_remote_members", "gauge"),
            ("roomcast_cluster_lag_seconds", "histogram"),
        ] {
            assert!(metrics.contains(&format!("# TYPE {family} {kind}\n")), "{}: no {kind} {family}", node.id);
        }
    }
}
