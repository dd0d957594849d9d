//! Typed ids shared by the shard, the room logic and the acceptor.

use std::fmt;
use std::sync::Arc;

/// Room ids that are personal rooms (`user:{sub}`) and group rooms (`group:{g}`).
pub const PERSONAL_PREFIX: &str = "user:";
pub const GROUP_PREFIX: &str = "group:";

/// Index of a shard thread, `0..shards`. In a cluster a value of
/// `NODE_SHARD_BASE` or more names a shard of another node:
/// `node << 8 | shard` (`node` 1..=255), so a room's member list, its
/// fan-out and its replies can name members anywhere with one type.
pub type ShardId = u16;

/// The first `ShardId` that names a shard of another node. A node has at
/// most this many shards when it is in a cluster.
pub const NODE_SHARD_BASE: ShardId = 256;

/// This process's node number in its cluster (1..=255); 0 outside one.
/// Set once, before any shard starts (`set_node_number`); it only changes
/// how connection ids are written and read (cluster-wide unique).
static NODE_NUMBER: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// Records this process's node number (the cluster bridge does, once, at start).
pub fn set_node_number(node: u8) {
    NODE_NUMBER.store(u16::from(node), std::sync::atomic::Ordering::Relaxed);
}

/// This process's node number; 0 when it is not in a cluster.
pub fn node_number() -> u8 {
    NODE_NUMBER.load(std::sync::atomic::Ordering::Relaxed) as u8
}

/// The node a shard id belongs to: `None` for one of this node's shards.
pub fn remote_node(shard: ShardId) -> Option<u8> {
    (shard >= NODE_SHARD_BASE).then_some((shard >> 8) as u8)
}

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
/// In a cluster, a connection of this node is written with this node's
/// number in the shard part (`node << 8 | shard`), as other nodes name it,
/// so an id means the same connection everywhere.
impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = ShardId::from(node_number());
        let shard = if self.shard < NODE_SHARD_BASE && node != 0 { node << 8 | self.shard } else { self.shard };
        write!(f, "{}.{}.{}", shard, self.slot, self.generation)
    }
}

impl ConnId {
    /// Reads the `Display` form back, mapping this node's own ids to
    /// their local shard.
    pub fn parse(text: &str) -> Option<ConnId> {
        let mut parts = text.split('.');
        let shard: ShardId = parts.next()?.parse().ok()?;
        let slot = parts.next()?.parse().ok()?;
        let generation = parts.next()?.parse().ok()?;
        let shard = match remote_node(shard) {
            Some(node) if node == node_number() => shard & 0xff,
            _ => shard,
        };
        parts.next().is_none().then_some(ConnId { shard, slot, generation })
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
