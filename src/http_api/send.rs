//! `POST /api/v1/send`: the admin's send to a room, a user, a connection or
//! everyone, encoded once as a `broadcast` frame for the shards to deliver.

use serde_json::Value;

use crate::http::RequestHead;
use crate::ids::RoomKey;
use crate::shard::{AdminQuery, SendTarget};
use crate::ws::frame::{self, Opcode};

use super::request::{optional_room, parse_conn_id, parse_object, required_str, tenant_of};
use super::{ApiError, Gather, Outcome, Targets};

pub(super) fn send(head: &RequestHead, body: &[u8], shards: usize) -> Result<Outcome, ApiError> {
    let doc = parse_object(body)?;
    let named: Vec<&str> = ["room", "user", "connection", "all"]
        .into_iter()
        .filter(|k| doc.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if named.len() != 1 {
        return Err(ApiError::bad_field("room|user|connection|all", "give exactly one target"));
    }
    let data = crate::protocol::top_level_span(body, b"data").ok_or_else(|| ApiError::bad_field("data", "required"))?;
    let data = &body[data];
    let tenant = tenant_of(&doc, head)?;
    let (target, targets, scope, room) = match named[0] {
        "room" => {
            let room = optional_room(&doc, "room")?.unwrap_or_default();
            let key = RoomKey::new(&tenant, &room);
            (SendTarget::Room(key), Targets::All, "room", Some(room))
        }
        "user" => {
            let user = required_str(&doc, "user")?;
            (SendTarget::User { tenant, user }, Targets::All, "user", None)
        }
        "connection" => {
            let text = required_str(&doc, "connection")?;
            let id = parse_conn_id(&text)
                .ok_or_else(|| ApiError::bad_field("connection", "a connection id \"shard.slot.generation\""))?;
            // Another node's connection: that node delivers it (in a cluster).
            let targets = match crate::ids::remote_node(id.shard) {
                Some(node) => Targets::Node(node),
                None if id.shard as usize >= shards => {
                    return Err(ApiError::new(404, "not_found", "no open connection with that id"));
                }
                None => Targets::One(id.shard),
            };
            (SendTarget::Connection(id), targets, "connection", None)
        }
        _ => {
            if doc.get("all") != Some(&Value::Bool(true)) {
                return Err(ApiError::bad_field("all", "must be true"));
            }
            (SendTarget::All, Targets::All, "all", None)
        }
    };
    let frame = frame::encode_frame(Opcode::Text, &broadcast_json(scope, room.as_deref(), data));
    let gather = Gather::Sent { connection: scope == "connection" };
    Ok(Outcome::Scatter { query: AdminQuery::Send { target, frame }, targets, gather })
}

/// The frame an admin send delivers:
/// `{"type":"broadcast","to":SCOPE,"room":R,"data":D}`, `room` only for a
/// room send, `data` byte for byte as the caller sent it.
pub fn broadcast_json(scope: &str, room: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + data.len());
    out.extend_from_slice(b"{\"type\":\"broadcast\",\"to\":\"");
    out.extend_from_slice(scope.as_bytes());
    out.push(b'"');
    if let Some(room) = room {
        out.extend_from_slice(b",\"room\":");
        crate::protocol::push_json_str(&mut out, room);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_span_is_byte_for_byte() {
        let body = br#"{ "room":"r", "data" : {"a": [1, "x}"] , "b":null} ,"x":1}"#;
        let span = crate::protocol::top_level_span(body, b"data").unwrap();
        assert_eq!(&body[span], br#"{"a": [1, "x}"] , "b":null}"#);
        let number = br#"{"data":12.5e3}"#;
        assert_eq!(&number[crate::protocol::top_level_span(number, b"data").unwrap()], b"12.5e3");
        assert_eq!(crate::protocol::top_level_span(br#"{"nested":{"data":1}}"#, b"data"), None);
    }

    #[test]
    fn broadcast_frame_shape() {
        let json = broadcast_json("room", Some("demo"), br#"{"k": 1}"#);
        assert_eq!(json, br#"{"type":"broadcast","to":"room","room":"demo","data":{"k": 1}}"#);
        assert_eq!(broadcast_json("all", None, b"1"), br#"{"type":"broadcast","to":"all","data":1}"#);
    }
}
