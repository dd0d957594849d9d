//! The room registry as the live server applies it.
//!
//! The registry's rows live in the store (`rooms` table, `/api/v1/rooms`);
//! what the running server needs of them is a [`RoomPolicy`] per registered
//! room. Two copies exist, both kept current by the acceptor after the
//! store committed a change: the acceptor's [`Registry`] (for the checks it
//! makes before an upgrade: registered, private) and, per shard, the
//! policies of the rooms that shard owns (inside `room::Rooms`, which also
//! applies capacity, lobby and history limit, and makes the same admission
//! check for `join`). Neither copy reads the disk after startup.

use std::collections::HashMap;

use crate::ids::{self, RoomKey};

/// A room of the registry (`rooms` table; written and read by the store).
/// `None` fields take the server defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomRecord {
    pub tenant: String,
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub capacity: Option<u32>,
    pub lobby: Option<bool>,
    pub private: bool,
    pub history_max: Option<u32>,
    /// A JSON object, as text.
    pub metadata: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// What a registry room changes about the room while it is live. `None`
/// fields take the server defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomPolicy {
    /// Members at most (overrides `limits.room_members_max`, up or down).
    pub capacity: Option<u32>,
    /// The lobby a new live room starts with (`rooms.lobby` otherwise).
    pub lobby: Option<bool>,
    /// Only tokens whose `room` claim names this room exactly may be in it.
    pub private: bool,
    /// Chat messages kept (`rooms.history_max` otherwise).
    pub history_max: Option<u32>,
}

impl RoomPolicy {
    pub fn of(record: &RoomRecord) -> RoomPolicy {
        RoomPolicy {
            capacity: record.capacity,
            lobby: record.lobby,
            private: record.private,
            history_max: record.history_max,
        }
    }
}

/// Why the registry keeps someone out of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// `rooms.require_registration` is on and the room is not registered.
    NotRegistered,
    /// The room is private and the token's `room` claim does not name it.
    Private,
}

/// The registry's admission rule, the same at the handshake and at `join`.
/// Personal and group rooms follow their own rules (`auth::may_join`) and
/// are never registered.
pub fn admission(
    policy: Option<&RoomPolicy>,
    require_registration: bool,
    room: &str,
    names_room: bool,
) -> Option<Admission> {
    if room.starts_with(ids::PERSONAL_PREFIX) || room.starts_with(ids::GROUP_PREFIX) {
        return None;
    }
    match policy {
        None if require_registration => Some(Admission::NotRegistered),
        Some(policy) if policy.private && !names_room => Some(Admission::Private),
        _ => None,
    }
}

/// The acceptor's copy: every registered room of every tenant, at most
/// `rooms.registry_max` of them (the store refuses no insert; the acceptor
/// checks the bound before it asks the store to create a room).
#[derive(Debug)]
pub struct Registry {
    rooms: HashMap<RoomKey, RoomPolicy>,
    max: usize,
}

/// The registry holds `rooms.registry_max` rooms already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryFull;

impl Registry {
    /// Builds the copy from the store's rows; more rows than `max` is a
    /// startup error, because rooms past the bound would go unenforced.
    pub fn new(rows: Vec<(RoomKey, RoomPolicy)>, max: usize) -> Result<Registry, RegistryFull> {
        if rows.len() > max {
            return Err(RegistryFull);
        }
        Ok(Registry { rooms: rows.into_iter().collect(), max })
    }

    pub fn get(&self, key: &RoomKey) -> Option<&RoomPolicy> {
        self.rooms.get(key)
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether one more room may be registered.
    pub fn has_room_for_one_more(&self) -> bool {
        self.rooms.len() < self.max
    }

    /// Records a committed create or replace (`Some`) or delete (`None`).
    pub fn apply(&mut self, key: RoomKey, policy: Option<RoomPolicy>) {
        match policy {
            Some(policy) => {
                self.rooms.insert(key, policy);
            }
            None => {
                self.rooms.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: RoomPolicy = RoomPolicy { capacity: None, lobby: None, private: true, history_max: None };

    #[test]
    fn admission_follows_registration_and_privacy() {
        let open = RoomPolicy::default();
        assert_eq!(admission(None, false, "demo", false), None, "ad-hoc rooms work by default");
        assert_eq!(admission(None, true, "demo", true), Some(Admission::NotRegistered));
        assert_eq!(admission(Some(&open), true, "demo", false), None);
        assert_eq!(admission(Some(&PRIVATE), false, "demo", false), Some(Admission::Private));
        assert_eq!(admission(Some(&PRIVATE), true, "demo", true), None, "a claim naming the room enters");
    }

    #[test]
    fn personal_and_group_rooms_are_outside_the_registry() {
        for room in ["user:alice", "group:ops"] {
            assert_eq!(admission(None, true, room, false), None);
            assert_eq!(admission(Some(&PRIVATE), true, room, false), None);
        }
    }

    #[test]
    fn the_copy_is_bounded_and_follows_commits() {
        let key = |id: &str| RoomKey::new("t", id);
        assert_eq!(Registry::new(vec![(key("a"), PRIVATE), (key("b"), PRIVATE)], 1).err(), Some(RegistryFull));
        let mut registry = Registry::new(vec![(key("a"), PRIVATE)], 2).expect("within the bound");
        assert!(registry.has_room_for_one_more());
        registry.apply(key("b"), Some(RoomPolicy::default()));
        assert!(!registry.has_room_for_one_more());
        assert_eq!(registry.get(&key("b")), Some(&RoomPolicy::default()));
        assert_eq!(registry.get(&RoomKey::new("other", "b")), None, "tenants are apart");
        registry.apply(key("a"), None);
        assert_eq!((registry.get(&key("a")), registry.len()), (None, 1));
    }
}
