//! Typed ids shared by the shard, the room logic and the acceptor.

use std::fmt;
use std::sync::Arc;

/// Room ids that are personal rooms (`user:{sub}`) and group rooms (`group:{g}`).
pub const PERSONAL_PREFIX: &str = "user:";
pub const GROUP_PREFIX: &str = "group:";

/// Index of a shard thread, `0..shards`.
pub type ShardId = u16;

/// A connection: its shard, its slot in that shard's slab, and the slot's
/// generation, so a late timer or message aimed at a reused slot is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub shard: ShardId,
    pub slot: u32,
    pub generation: u32,
}

/// On the wire a connection id is the string `"{shard}.{slot}.{generation}"`
/// (a string, because JavaScript numbers cannot hold 64 bits).
impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.shard, self.slot, self.generation)
    }
}

/// A room within a tenant. Room ids never hold a NUL byte, so
/// `room '\0' tenant` names every (tenant, room) pair without ambiguity.
/// Shared (`Arc`), because one travels with every cross-shard broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey(Arc<str>);

impl RoomKey {
    pub fn new(tenant: &str, room: &str) -> RoomKey {
        let mut key = String::with_capacity(room.len() + 1 + tenant.len());
        key.push_str(room);
        key.push('\0');
        key.push_str(tenant);
        RoomKey(key.into())
    }

    /// The personal room of `user`: every connection of the user is in it.
    pub fn personal(tenant: &str, user: &str) -> RoomKey {
        RoomKey::new(tenant, &format!("{PERSONAL_PREFIX}{user}"))
    }

    /// The room of group `group`: every connection whose token lists it is in it.
    pub fn group(tenant: &str, group: &str) -> RoomKey {
        RoomKey::new(tenant, &format!("{GROUP_PREFIX}{group}"))
    }

    pub fn room(&self) -> &str {
        self.0.split('\0').next().unwrap_or_default()
    }

    pub fn tenant(&self) -> &str {
        self.0.split_once('\0').map_or("", |(_, tenant)| tenant)
    }

    /// The shard that owns this room: FNV-1a of the key, fixed across runs and
    /// processes so that tools can predict it.
    pub fn shard(&self, shards: usize) -> ShardId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in self.0.as_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % shards.max(1) as u64) as ShardId
    }
}

/// Whether `room` is a valid room id (DESIGN §2).
pub fn is_valid_room_id(room: &str) -> bool {
    (1..=128).contains(&room.len())
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_separate_tenants_and_round_trip() {
        let a = RoomKey::new("acme", "demo");
        let b = RoomKey::new("", "demo");
        assert_ne!(a, b);
        assert_eq!((a.room(), a.tenant()), ("demo", "acme"));
        assert_eq!((b.room(), b.tenant()), ("demo", ""));
        assert!(a.shard(4) < 4);
        assert_eq!(a.shard(4), RoomKey::new("acme", "demo").shard(4));
    }

    #[test]
    fn room_ids_follow_the_contract() {
        assert!(is_valid_room_id("a"));
        assert!(is_valid_room_id("team-1.x_y:z"));
        assert!(is_valid_room_id(&"a".repeat(128)));
        assert!(!is_valid_room_id(""));
        assert!(!is_valid_room_id(&"a".repeat(129)));
        assert!(!is_valid_room_id("a/b"));
        assert!(!is_valid_room_id("a b"));
        assert!(!is_valid_room_id("é"));
    }
}
