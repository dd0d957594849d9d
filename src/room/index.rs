//! The rooms index: room key → the room's slab slot.
//!
//! A `HashMap<RoomKey, usize>` keeps a second copy of every key (16 bytes)
//! and a `usize` per bucket: ~41 bytes per room once load factor and
//! doubling are counted, and every connection has a room (its personal
//! one). This table keeps only the slot (4 bytes a bucket, ~8 per room)
//! and compares keys in the slab, where each room keeps its own. Keys come
//! from clients, so they are hashed with the std's keyed SipHash.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use slab::Slab;

use super::Room;
use crate::ids::RoomKey;

pub(super) struct RoomIndex {
    slots: HashTable<u32>,
    hasher: RandomState,
}

impl std::fmt::Debug for RoomIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomIndex").field("len", &self.slots.len()).finish()
    }
}

impl RoomIndex {
    pub fn new() -> RoomIndex {
        RoomIndex { slots: HashTable::new(), hasher: RandomState::new() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the room with `key`, if `rooms` holds one.
    pub fn get(&self, key: &RoomKey, rooms: &Slab<Room>) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let found = self.slots.find(hash, |&slot| rooms.get(slot as usize).is_some_and(|room| room.key == *key));
        found.map(|&slot| slot as usize)
    }

    /// Indexes the room in `slot` of `rooms` (not indexed yet) under its key.
    pub fn insert(&mut self, slot: usize, rooms: &Slab<Room>) {
        let RoomIndex { slots, hasher } = self;
        let Some(room) = rooms.get(slot) else { return };
        // Growing rehashes every slot from its room's key.
        let rehash = |&other: &u32| rooms.get(other as usize).map_or(0, |room| hasher.hash_one(&room.key));
        slots.insert_unique(hasher.hash_one(&room.key), slot as u32, rehash);
    }

    /// Takes `slot`, indexed under `key`, out of the index.
    pub fn remove(&mut self, key: &RoomKey, slot: usize) {
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.slots.find_entry(hash, |&other| other as usize == slot) {
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::tests::limits;
    use crate::room::{Peer, Rooms};

    #[test]
    fn keys_find_their_rooms_through_growth_and_removal() {
        let mut rooms = Rooms::new(0, 1, limits(10, 10, 10));
        let keys: Vec<RoomKey> = (0..100).map(|i| RoomKey::new("t", &format!("r{i}"))).collect();
        let conn = |slot| crate::ids::ConnId { shard: 0, slot, generation: 1 };
        let memberships: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| rooms.join(&Peer::new(conn(i as u32), "u", None), key, true, None).expect("space"))
            .collect();
        for (key, membership) in keys.iter().zip(&memberships) {
            assert_eq!(rooms.index.get(key, &rooms.rooms), Some(membership.room_slot()));
        }
        assert_eq!(rooms.index.get(&RoomKey::new("", "r0"), &rooms.rooms), None, "another tenant's room");
        for (i, membership) in memberships.iter().enumerate().step_by(2) {
            assert!(rooms.leave(*membership, conn(i as u32), None));
        }
        assert_eq!(rooms.index.len(), 50);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(rooms.index.get(key, &rooms.rooms).is_some(), i % 2 == 1, "{key:?}");
        }
    }
}
