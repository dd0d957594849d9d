//! Gathering: how the replies of the shards (or the store) to a scattered
//! request become one response.

use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::http;
use crate::shard::{AdminAnswer, ConnInfo};
use crate::store::{RoomRecord, StoreAnswer};

use super::registry::{RegistryOp, room_json};
use super::time::format_day;

/// How the replies of a scatter become a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gather {
    Rooms {
        limit: usize,
    },
    Room {
        room: String,
    },
    Connections,
    Sent {
        connection: bool,
    },
    Kicked,
    /// `announced`: other nodes of the cluster close their members too, so
    /// none here is no 404.
    Closed {
        announced: bool,
    },
    Drained,
    Usage {
        tenant: String,
        room: Option<String>,
        from_day: i64,
        to_day: i64,
    },
    Registry(RegistryOp),
    /// A committed registry change went to the shards (`AdminQuery::Registry`):
    /// once they applied it, `response` (made from the store's answer) goes out.
    RegistryApplied {
        status: u16,
        response: Vec<u8>,
    },
}

/// Turns the shards' replies into the response.
pub fn finish(gather: &Gather, answers: Vec<AdminAnswer>) -> (u16, Vec<u8>) {
    let count = || answers.iter().map(|a| if let AdminAnswer::Count(n) = a { *n } else { 0 }).sum::<u64>();
    let connections = || {
        let mut all: Vec<&ConnInfo> = answers
            .iter()
            .flat_map(|a| if let AdminAnswer::Connections(c, _) = a { c.as_slice() } else { &[] })
            .collect();
        all.sort_by(|a, b| a.conn.cmp(&b.conn));
        // In a room listing, the owner's live roles replace the tokens' roles.
        let roles: BTreeMap<&str, &str> = answers
            .iter()
            .flat_map(|a| if let AdminAnswer::Connections(_, r) = a { r.as_slice() } else { &[] })
            .map(|(conn, role)| (conn.as_str(), *role))
            .collect();
        all.into_iter()
            .map(|info| {
                let mut value = conn_json(info);
                if let Some(role) = roles.get(info.conn.as_str()) {
                    value["role"] = json!(role);
                }
                value
            })
            .collect::<Vec<_>>()
    };
    let (status, value) = match gather {
        Gather::Rooms { limit } => {
            let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
            for answer in &answers {
                if let AdminAnswer::Rooms(rooms) = answer {
                    for (room, n) in rooms {
                        *merged.entry(room).or_default() += n;
                    }
                }
            }
            let more = merged.len() > *limit;
            let page: Vec<(&str, u64)> = merged.into_iter().take(*limit).collect();
            let next = if more { page.last().map(|(room, _)| room.to_string()) } else { None };
            let rooms: Vec<Value> = page.iter().map(|(room, n)| json!({ "room": room, "members": n })).collect();
            (200, json!({ "rooms": rooms, "next_cursor": next }))
        }
        Gather::Room { room } => {
            let members = connections();
            if members.is_empty() {
                return (404, http::error_response(404, "not_found", "no connection is in that room", ""));
            }
            (200, json!({ "room": room, "member_count": members.len(), "members": members }))
        }
        Gather::Connections => (200, json!({ "connections": connections() })),
        Gather::Sent { connection: true } if count() == 0 => {
            return (404, http::error_response(404, "not_found", "no open connection with that id", ""));
        }
        Gather::Sent { .. } => (200, json!({ "delivered": count() })),
        Gather::Kicked => (200, json!({ "kicked": count() })),
        Gather::Closed { announced: false } if count() == 0 => {
            return (404, http::error_response(404, "not_found", "no connection is in that room", ""));
        }
        Gather::Closed { .. } => (200, json!({ "closed": count() })),
        Gather::Drained => (202, json!({ "draining": true, "closing": count() })),
        Gather::RegistryApplied { status, response } => return (*status, response.clone()),
        Gather::Registry(op) => {
            let answer =
                answers.iter().find_map(|a| if let AdminAnswer::Store(answer) = a { Some(answer) } else { None });
            let not_found = || (404, http::error_response(404, "not_found", "no such room in the registry", ""));
            match (op, answer) {
                (RegistryOp::Create, Some(StoreAnswer::Room(Some(room)))) => (201, room_json(room)),
                (RegistryOp::Create, Some(StoreAnswer::Room(None))) => {
                    let body = http::error_response(409, "exists", "a room with that id is registered already", "");
                    return (409, body);
                }
                (RegistryOp::Get | RegistryOp::Replace, Some(StoreAnswer::Room(Some(room)))) => (200, room_json(room)),
                (RegistryOp::Get | RegistryOp::Replace, Some(StoreAnswer::Room(None))) => return not_found(),
                (RegistryOp::Delete { .. }, Some(StoreAnswer::Deleted(true))) => (200, json!({ "deleted": true })),
                (RegistryOp::Delete { .. }, Some(StoreAnswer::Deleted(false))) => return not_found(),
                (RegistryOp::List { limit }, Some(StoreAnswer::Rooms(rooms))) => {
                    let page: Vec<&RoomRecord> = rooms.iter().take(*limit).collect();
                    let next = if rooms.len() > *limit { page.last().map(|room| room.id.clone()) } else { None };
                    let rooms: Vec<Value> = page.into_iter().map(room_json).collect();
                    (200, json!({ "rooms": rooms, "next_cursor": next }))
                }
                _ => return (500, http::error_response(500, "store_failed", "the store could not do that", "")),
            }
        }
        Gather::Usage { tenant, room, from_day, to_day } => {
            let days = answers.iter().find_map(|a| match a {
                AdminAnswer::Store(StoreAnswer::Usage(days)) => Some(days),
                _ => None,
            });
            let Some(days) = days else {
                return (500, http::error_response(500, "store_failed", "the store could not read the sessions", ""));
            };
            let days: Vec<Value> = days
                .iter()
                .map(|d| {
                    json!({
                        "date": format_day(d.day),
                        "unique_users": d.unique_users,
                        "sessions": d.sessions,
                        "avg_duration_s": d.avg_duration_s,
                        "p95_duration_s": d.p95_duration_s,
                    })
                })
                .collect();
            let (from, to) = (format_day(*from_day), format_day(*to_day));
            (200, json!({ "tenant": tenant, "room": room, "from": from, "to": to, "days": days }))
        }
    };
    (status, http::response(status, "application/json", "", value.to_string().as_bytes()))
}

fn conn_json(info: &ConnInfo) -> Value {
    json!({
        "conn": info.conn,
        "user": info.user,
        "name": info.name,
        "tenant": info.tenant,
        "role": info.role,
        "room": info.home,
        "rooms": info.rooms,
    })
}
