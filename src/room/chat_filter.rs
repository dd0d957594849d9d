//! Which rooms may have chat in the store: a fixed-size bit set per shard
//! (one hash, no removal), so that a room that never had any stored chat is
//! created without asking the store for its history, and its first
//! `welcome` is complete (no `history_loading`, no `chat_history` after it).
//!
//! A room's chat is persisted by the shard that owns it, so this shard sees
//! every chat of its rooms: at start it is given the rooms the store holds
//! chat of, and it adds each room whose chat it persists from then on. A
//! room whose bit is set (its own, or another room's with the same hash)
//! reads its history as before: a false positive costs one read, never a
//! lost message. Chat that is pruned or deleted leaves its bit set.

use std::hash::{Hash, Hasher};

use crate::config::HISTORY_FILTER_KIB_MAX;
use crate::ids::RoomKey;

#[derive(Debug)]
pub struct ChatFilter {
    words: Box<[u64]>,
}

impl ChatFilter {
    /// A filter of `kib` KiB (rounded down to a power of two bits, at least 64).
    pub fn with_kib(kib: u32) -> ChatFilter {
        let bits = (u64::from(kib.min(HISTORY_FILTER_KIB_MAX)) * 8192).max(64);
        let words = 1usize << (bits / 64).ilog2();
        ChatFilter { words: vec![0; words].into_boxed_slice() }
    }

    /// Room `key` has (or had) stored chat.
    pub fn insert(&mut self, key: &RoomKey) {
        let (word, bit) = self.place(key);
        self.words[word] |= bit;
    }

    /// Whether room `key` may have stored chat (`false`: it has none).
    pub fn may_contain(&self, key: &RoomKey) -> bool {
        let (word, bit) = self.place(key);
        self.words[word] & bit != 0
    }

    /// The word and bit of `key`. Not the shard hash (FNV-1a of the same
    /// key): within one shard that one's low bits are all alike.
    fn place(&self, key: &RoomKey) -> (usize, u64) {
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        let hash = hasher.finish();
        let words = self.words.len() as u64;
        ((hash % words) as usize, 1 << ((hash / words) % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_inserted_is_contained_and_others_mostly_are_not() {
        let mut filter = ChatFilter::with_kib(1);
        assert_eq!(filter.words.len(), 128, "1 KiB = 8,192 bits");
        let chatty: Vec<RoomKey> = (0..100).map(|i| RoomKey::new("t", &format!("chat-{i}"))).collect();
        for key in &chatty {
            filter.insert(key);
        }
        assert!(chatty.iter().all(|key| filter.may_contain(key)), "no false negative");
        let quiet = (0..1000).filter(|i| filter.may_contain(&RoomKey::new("t", &format!("quiet-{i}")))).count();
        // 100 of 8,192 bits set: about 12 of 1,000 other rooms collide.
        assert!(quiet < 50, "{quiet} false positives of 1,000");
    }

    #[test]
    fn sizes_are_powers_of_two_and_bounded() {
        assert_eq!(ChatFilter::with_kib(0).words.len(), 1);
        assert_eq!(ChatFilter::with_kib(3).words.len(), 256, "3 KiB rounds down to 2 KiB");
        assert_eq!(ChatFilter::with_kib(u32::MAX).words.len(), 65_536 * 8192 / 64);
    }
}
