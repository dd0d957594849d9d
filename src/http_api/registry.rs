//! The room registry endpoints' rooms: a room record from a request body,
//! the JSON of a stored room, and the change a store answer commits.

use serde_json::{Value, json};

use crate::ids::{self, RoomKey};
use crate::registry::RoomPolicy;
use crate::shard::AdminAnswer;
use crate::store::{RoomRecord, StoreAnswer};

use super::ApiError;
use super::request::optional_str;

/// Which room registry answer to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryOp {
    Create,
    Get,
    /// `PUT` of one room.
    Replace,
    Delete {
        key: RoomKey,
    },
    List {
        limit: usize,
    },
}

/// The change a registry answer of the store commits, which the live server
/// must apply: `(room, Some(policy))` for a create or replace, `(room, None)`
/// for a delete; `None` when the store changed nothing.
pub fn registry_change(op: &RegistryOp, answers: &[AdminAnswer]) -> Option<(RoomKey, Option<RoomPolicy>)> {
    let answer = answers.iter().find_map(|a| if let AdminAnswer::Store(answer) = a { Some(answer) } else { None });
    match (op, answer?) {
        (RegistryOp::Create | RegistryOp::Replace, StoreAnswer::Room(Some(room))) => {
            Some((RoomKey::new(&room.tenant, &room.id), Some(RoomPolicy::of(room))))
        }
        (RegistryOp::Delete { key }, StoreAnswer::Deleted(true)) => Some((key.clone(), None)),
        _ => None,
    }
}

pub(super) fn registry_id(id: &str) -> Result<String, ApiError> {
    if !ids::is_valid_room_id(id) {
        return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
    }
    Ok(id.to_string())
}

/// Longest registry `name` and `description`, in characters.
const ROOM_NAME_CHARS_MAX: usize = 256;
const ROOM_DESCRIPTION_CHARS_MAX: usize = 4096;
/// Largest registry `history_max`.
const ROOM_HISTORY_MAX: u64 = 100_000;

/// A registry room from a request body (fields absent or null: server defaults).
pub(super) fn room_record(
    doc: &serde_json::Map<String, Value>,
    tenant: String,
    id: String,
) -> Result<RoomRecord, ApiError> {
    let text = |field: &str, max: usize| -> Result<Option<String>, ApiError> {
        match optional_str(doc, field)? {
            Some(text) if text.chars().count() > max => {
                Err(ApiError::bad_field(field, &format!("at most {max} characters")))
            }
            text => Ok(text),
        }
    };
    let number = |field: &str, min: u64, max: u64| -> Result<Option<u32>, ApiError> {
        match doc.get(field) {
            None | Some(Value::Null) => Ok(None),
            // JSON Schema's "integer" includes 12.0.
            Some(value) => match value.as_u64().or_else(|| {
                value.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64).map(|f| f as u64)
            }) {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n as u32)),
                _ => Err(ApiError::bad_field(field, &format!("an integer from {min} to {max}, or null"))),
            },
        }
    };
    let flag = |field: &str| -> Result<Option<bool>, ApiError> {
        match doc.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::bad_field(field, "true, false or null")),
        }
    };
    let metadata = match doc.get("metadata") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => Some(value.to_string()),
        Some(_) => return Err(ApiError::bad_field("metadata", "a JSON object, or null")),
    };
    Ok(RoomRecord {
        tenant,
        id,
        name: text("name", ROOM_NAME_CHARS_MAX)?,
        description: text("description", ROOM_DESCRIPTION_CHARS_MAX)?,
        capacity: number("capacity", 1, u64::from(u32::MAX))?,
        lobby: flag("lobby")?,
        private: flag("private")?.unwrap_or(false),
        history_max: number("history_max", 0, ROOM_HISTORY_MAX)?,
        metadata,
        created_ms: 0,
        updated_ms: 0,
    })
}

pub(super) fn room_json(room: &RoomRecord) -> Value {
    let metadata = room.metadata.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok());
    json!({
        "id": room.id,
        "tenant": room.tenant,
        "name": room.name,
        "description": room.description,
        "capacity": room.capacity,
        "lobby": room.lobby,
        "private": room.private,
        "history_max": room.history_max,
        "metadata": metadata,
        "created_at_ms": room.created_ms,
        "updated_at_ms": room.updated_ms,
    })
}
