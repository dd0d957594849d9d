//! Admin requests that act on every node of a cluster: sends (to a room, a
//! user, a connection, everyone), kicks, live-room closes and token
//! revocations. The node that takes the HTTP request runs it on its own
//! shards as on one node, and announces it on the cluster's channel
//! (`ClusterOut::Announce`); every other node's acceptor runs it on its
//! shards without answering anyone. Each node reaches only its own
//! connections, so every connection is reached once, whichever node holds
//! it; the HTTP answer counts the answering node's connections.
//!
//! An announcement is one line of JSON naming the request, followed, for a
//! send, by the frame to deliver exactly as the first node encoded it.

use serde_json::{Value, json};

use crate::ids::{ConnId, RoomKey, remote_node};
use crate::shard::{AdminQuery, SendTarget};

/// Other nodes' announcements waiting for this acceptor; more are dropped
/// by the bridge's reader and counted (`roomcast_cluster_dropped_total`).
pub const ANNOUNCEMENTS_MAX: usize = 1024;

/// Announcements run per acceptor iteration, so that a burst of them
/// leaves room for the HTTP API's own requests and their replies.
pub(super) const ANNOUNCEMENTS_PER_TURN: usize = 64;

/// What another node asked this node to do.
#[derive(Debug)]
pub(super) enum Announcement {
    /// Run on every shard of this node; nobody waits for the answers.
    Query(AdminQuery),
    /// The connection's node is this one: run on its shard.
    QueryOne(AdminQuery, u16),
    Revoke {
        jti: String,
        expires_s: u64,
    },
}

/// The announcement of an admin query other nodes must run too; `None` for
/// queries about this node alone (listings, drain, registry changes).
pub(super) fn encode_query(query: &AdminQuery) -> Option<Vec<u8>> {
    let (head, frame) = match query {
        AdminQuery::Send { target, frame } => {
            let head = match target {
                SendTarget::Room(key) => json!({"op": "send", "room": key.room(), "tenant": key.tenant()}),
                SendTarget::User { tenant, user } => json!({"op": "send", "user": user, "tenant": tenant}),
                SendTarget::Connection(id) => json!({"op": "send", "connection": id.to_string()}),
                SendTarget::All => json!({"op": "send", "all": true}),
            };
            (head, Some(frame))
        }
        AdminQuery::Kick { tenant, user, room } => {
            (json!({"op": "kick", "tenant": tenant, "user": user, "room": room}), None)
        }
        AdminQuery::CloseRoom { key } => (json!({"op": "close", "room": key.room(), "tenant": key.tenant()}), None),
        _ => return None,
    };
    let mut out = head.to_string().into_bytes();
    if let Some(frame) = frame {
        out.push(b'\n');
        out.extend_from_slice(frame);
    }
    Some(out)
}

pub(super) fn encode_revoke(jti: &str, expires_s: u64) -> Vec<u8> {
    json!({"op": "revoke", "jti": jti, "expires_s": expires_s}).to_string().into_bytes()
}

/// Reads an announcement back; `None` for one this node has no part in (a
/// send to another node's connection) or cannot read (a newer node's).
pub(super) fn decode(bytes: &[u8]) -> Option<Announcement> {
    let (head, frame) = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => (&bytes[..end], Some(&bytes[end + 1..])),
        None => (bytes, None),
    };
    let head: Value = serde_json::from_slice(head).ok()?;
    let text = |field: &str| head.get(field).and_then(Value::as_str).map(str::to_owned);
    let key = || Some(RoomKey::new(&text("tenant")?, &text("room")?));
    match head.get("op")?.as_str()? {
        "send" => {
            let frame = frame?.into();
            if let Some(connection) = text("connection") {
                let id = ConnId::parse(&connection)?;
                if remote_node(id.shard).is_some() {
                    return None;
                }
                let query = AdminQuery::Send { target: SendTarget::Connection(id), frame };
                return Some(Announcement::QueryOne(query, id.shard));
            }
            let target = if head.get("all") == Some(&Value::Bool(true)) {
                SendTarget::All
            } else if let Some(user) = text("user") {
                SendTarget::User { tenant: text("tenant")?, user }
            } else {
                SendTarget::Room(key()?)
            };
            Some(Announcement::Query(AdminQuery::Send { target, frame }))
        }
        "kick" => Some(Announcement::Query(AdminQuery::Kick {
            tenant: text("tenant")?,
            user: text("user")?,
            room: text("room"),
        })),
        "close" => Some(Announcement::Query(AdminQuery::CloseRoom { key: key()? })),
        "revoke" => Some(Announcement::Revoke { jti: text("jti")?, expires_s: head.get("expires_s")?.as_u64()? }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{Opcode, encode_frame};

    fn round_trip(query: AdminQuery) -> AdminQuery {
        let bytes = encode_query(&query).expect("announced");
        match decode(&bytes) {
            Some(Announcement::Query(query) | Announcement::QueryOne(query, _)) => query,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sends_keep_their_target_and_frame_byte_for_byte() {
        // A payload with a newline inside: only the first one ends the head.
        let frame = encode_frame(Opcode::Text, b"{\"type\":\"broadcast\",\"data\":\"a\nb\"}");
        let targets = [
            SendTarget::Room(RoomKey::new("t", "r")),
            SendTarget::User { tenant: String::new(), user: "u".into() },
            SendTarget::All,
        ];
        for target in targets {
            let expected = format!("{target:?}");
            match round_trip(AdminQuery::Send { target, frame: frame.clone() }) {
                AdminQuery::Send { target, frame: back } => {
                    assert_eq!(format!("{target:?}"), expected);
                    assert_eq!(back, frame);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn kicks_and_closes_keep_their_fields() {
        let kick = AdminQuery::Kick { tenant: "t".into(), user: "u".into(), room: Some("r".into()) };
        assert_eq!(format!("{:?}", round_trip(kick)), r#"Kick { tenant: "t", user: "u", room: Some("r") }"#);
        let kick = AdminQuery::Kick { tenant: String::new(), user: "u".into(), room: None };
        assert_eq!(format!("{:?}", round_trip(kick)), r#"Kick { tenant: "", user: "u", room: None }"#);
        let close = AdminQuery::CloseRoom { key: RoomKey::new("t", "r") };
        let AdminQuery::CloseRoom { key } = round_trip(close) else { panic!("not a close") };
        assert_eq!((key.tenant(), key.room()), ("t", "r"));
    }

    #[test]
    fn revocations_and_local_queries() {
        let Some(Announcement::Revoke { jti, expires_s }) = decode(&encode_revoke("j-1", 99)) else { panic!() };
        assert_eq!((jti.as_str(), expires_s), ("j-1", 99));
        assert!(encode_query(&AdminQuery::Drain).is_none());
        assert!(decode(b"{\"op\":\"unknown\"}").is_none());
        assert!(decode(b"not json").is_none());
        assert!(decode(b"{\"op\":\"send\",\"all\":true}").is_none(), "a send without its frame");
    }

    #[test]
    fn a_send_to_a_connection_is_run_by_the_connection_s_node_only() {
        // Outside a cluster (node number 0), "1.2.3" is this node's shard 1.
        let frame = encode_frame(Opcode::Text, b"1");
        let id = ConnId { shard: 1, slot: 2, generation: 3 };
        let query = AdminQuery::Send { target: SendTarget::Connection(id), frame: frame.clone() };
        let bytes = encode_query(&query).expect("announced");
        assert!(matches!(decode(&bytes), Some(Announcement::QueryOne(_, 1))));
        // Shard 2 of node 5: another node's.
        let other = ConnId { shard: 5 << 8 | 2, slot: 2, generation: 3 };
        let query = AdminQuery::Send { target: SendTarget::Connection(other), frame };
        assert!(decode(&encode_query(&query).expect("announced")).is_none());
    }
}
