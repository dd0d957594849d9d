//! Moderation has one authority per room: a host on one node admits a
//! guest waiting in the lobby on another node.

use serde_json::{Value, json};

use crate::frames::{acked, call, next_of};
use crate::harness::Claims;
use crate::nodes::{Cluster, Settings};

#[test]
fn a_host_on_one_node_admits_a_guest_waiting_on_another_who_then_gets_the_chat() {
    let cluster = Cluster::start(2, Settings { lobby: true, ..Settings::default() });
    let [n1, n2] = [&cluster.nodes[0], &cluster.nodes[1]];
    let room = "meet";

    let (mut host, welcome) = n1.connect(room, &Claims { sub: "hana", host: true, ..Claims::default() }, "");
    assert_eq!((welcome["role"].as_str(), welcome["lobby"].as_bool()), (Some("host"), Some(true)), "{welcome}");

    let (mut guest, waiting) = n2.join(room, "gus");
    assert_eq!((waiting["role"].as_str(), waiting["lobby"].as_bool()), (Some("waiting"), Some(true)), "{waiting}");
    assert!(waiting.get("members").is_none(), "a waiting welcome carries nothing of the room: {waiting}");
    let lobby = next_of(&mut host, "hana", "lobby");
    assert_eq!((lobby["event"].as_str(), lobby["member"]["user"].as_str()), (Some("waiting"), Some("gus")), "{lobby}");
    assert_eq!(lobby["member"]["conn"], waiting["conn"], "the host sees the guest's connection id: {lobby}");

    // The ack comes after the events the admission caused (protocol §14.3).
    let (ack, events) = call(&mut host, json!({"type": "lobby.admit", "user": "gus"}), 1);
    assert_eq!(ack["type"], "ack", "{ack}");
    // (A stored chat history may arrive at any time, and is not part of it.)
    let kinds: Vec<(&Value, &Value)> =
        events.iter().filter(|e| e["type"] != "chat_history").map(|e| (&e["type"], &e["member"]["user"])).collect();
    assert_eq!(
        kinds,
        [(&json!("lobby"), &json!("gus")), (&json!("member_joined"), &json!("gus"))],
        "the host hears of the admission: {events:?}"
    );
    let admitted = next_of(&mut guest, "gus", "welcome");
    assert_eq!(admitted["role"], "participant", "{admitted}");
    let members = admitted["members"].as_array().expect("members");
    assert!(members.iter().any(|m| m["user"] == "hana" && m["role"] == "host"), "the host is listed: {admitted}");

    acked(&mut host, json!({"type": "chat.send", "text": "welcome, gus"}), 2);
    let chat = next_of(&mut guest, "gus", "chat");
    assert_eq!((chat["from"].as_str(), chat["text"].as_str()), (Some("hana"), Some("welcome, gus")), "{chat}");
    assert!(chat["seq"].as_u64() > admitted["seq"].as_u64(), "numbered after the admission: {chat} {admitted}");

    // And the other way: the admitted guest's publish reaches the host.
    acked(&mut guest, json!({"type": "publish", "data": "thanks"}), 3);
    let message = next_of(&mut host, "hana", "message");
    assert_eq!((message["from"].as_str(), message["data"].as_str()), (Some("gus"), Some("thanks")), "{message}");
}
