//! A room's members: a slab whose first member lives inline.
//!
//! Every connection has a personal room, and almost every personal room
//! has one member. A `Slab` of one member is a heap allocation of its own
//! (a 64-byte glibc chunk), per connection; kept inline it costs nothing
//! beyond the room. A second arrival moves the first member into a `Slab`
//! at the same index (0), so every `Membership` handed out stays valid,
//! and the room stays spilled until it is freed.

use std::ops::{Index, IndexMut};

use slab::Slab;

use super::Member;

#[derive(Debug)]
pub(super) enum Members {
    /// At most one member, at index 0.
    Inline(Option<Member>),
    /// More than one member has been here. Boxed, so that `Members` is no
    /// bigger than the inline member (32 bytes, not the slab's 40), in
    /// every room; a walk over a spilled room follows one more pointer.
    Spilled(Box<Slab<Member>>),
}

impl Default for Members {
    fn default() -> Members {
        Members::Inline(None)
    }
}

impl Members {
    /// Adds `member`; returns its index (stable until it is removed).
    pub fn insert(&mut self, member: Member) -> usize {
        match self {
            Members::Inline(slot @ None) => {
                *slot = Some(member);
                0
            }
            Members::Inline(Some(_)) => {
                let mut slab = Slab::with_capacity(4);
                if let Members::Inline(Some(first)) = std::mem::take(self) {
                    // An empty slab hands out 0 first: the first member keeps its index.
                    slab.insert(first);
                }
                let index = slab.insert(member);
                *self = Members::Spilled(Box::new(slab));
                index
            }
            Members::Spilled(slab) => {
                if slab.len() == slab.capacity() {
                    // Grow by half, not double: rooms are mostly small and
                    // stay at the size they reached, so the slack a
                    // doubling leaves (a quarter on average) is kept for
                    // the room's life. 4 → 6 → 9 → 13: a room of 10 holds 13.
                    slab.reserve_exact((slab.capacity() / 2).max(1));
                }
                slab.insert(member)
            }
        }
    }

    /// Removes the member at `index`, if there is one.
    pub fn try_remove(&mut self, index: usize) -> Option<Member> {
        match self {
            Members::Inline(slot) if index == 0 => slot.take(),
            Members::Inline(_) => None,
            Members::Spilled(slab) => slab.try_remove(index),
        }
    }

    pub fn get(&self, index: usize) -> Option<&Member> {
        match self {
            Members::Inline(slot) if index == 0 => slot.as_ref(),
            Members::Inline(_) => None,
            Members::Spilled(slab) => slab.get(index),
        }
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut Member> {
        match self {
            Members::Inline(slot) if index == 0 => slot.as_mut(),
            Members::Inline(_) => None,
            Members::Spilled(slab) => slab.get_mut(index),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Members::Inline(slot) => usize::from(slot.is_some()),
            Members::Spilled(slab) => slab.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(index, member)` pairs, in index order.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            Members::Inline(slot) => Iter::Inline(slot.as_ref()),
            Members::Spilled(slab) => Iter::Spilled(slab.iter()),
        }
    }
}

impl<'a> IntoIterator for &'a Members {
    type Item = (usize, &'a Member);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Indexing a member that is not there is a bug in `Rooms` (every index it
/// uses came from `insert` and was checked by `member_of`), as with `Slab`.
impl Index<usize> for Members {
    type Output = Member;

    fn index(&self, index: usize) -> &Member {
        self.get(index).expect("a member index from Rooms names a member")
    }
}

impl IndexMut<usize> for Members {
    fn index_mut(&mut self, index: usize) -> &mut Member {
        self.get_mut(index).expect("a member index from Rooms names a member")
    }
}

pub(super) enum Iter<'a> {
    Inline(Option<&'a Member>),
    Spilled(slab::Iter<'a, Member>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (usize, &'a Member);

    fn next(&mut self) -> Option<(usize, &'a Member)> {
        match self {
            Iter::Inline(slot) => slot.take().map(|member| (0, member)),
            Iter::Spilled(iter) => iter.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnId;
    use crate::room::{Peer, Role};

    fn member(slot: u32) -> Member {
        let conn = ConnId { shard: 0, slot, generation: 1 };
        Member { conn, peer: Peer::new(conn, "u", None), quiet: true, role: Role::Participant, arrival: slot.into() }
    }

    fn slots(members: &Members) -> Vec<(usize, u32)> {
        members.iter().map(|(index, member)| (index, member.conn.slot)).collect()
    }

    #[test]
    fn one_member_stays_inline_and_a_second_spills_without_moving_the_first() {
        let mut members = Members::default();
        assert!(members.is_empty());
        assert_eq!(members.insert(member(1)), 0);
        assert!(matches!(members, Members::Inline(Some(_))));
        assert_eq!(members.insert(member(2)), 1);
        assert!(matches!(members, Members::Spilled(_)));
        assert_eq!(slots(&members), [(0, 1), (1, 2)]);
        assert_eq!(members[0].conn.slot, 1);
        assert_eq!(members.try_remove(0).map(|m| m.conn.slot), Some(1));
        assert_eq!(members.try_remove(0).map(|m| m.conn.slot), None);
        assert_eq!((members.len(), slots(&members)), (1, vec![(1, 2)]));
        // A freed index is handed out again, as a slab does.
        assert_eq!(members.insert(member(3)), 0);
        assert_eq!(slots(&members), [(0, 3), (1, 2)]);
    }

    #[test]
    fn an_inline_room_has_no_member_past_index_zero() {
        let mut members = Members::default();
        members.insert(member(1));
        assert!(members.get(1).is_none() && members.try_remove(1).is_none());
        members.get_mut(0).expect("member 0").role = Role::Host;
        assert_eq!(members[0].role, Role::Host);
        assert_eq!(members.try_remove(0).map(|m| m.conn.slot), Some(1));
        assert!(members.is_empty() && members.iter().next().is_none());
        assert_eq!(members.insert(member(4)), 0);
    }

    #[test]
    fn a_spilled_room_grows_by_half_its_capacity() {
        let mut members = Members::default();
        let mut capacities = Vec::new();
        for slot in 0..14 {
            members.insert(member(slot));
            if let Members::Spilled(slab) = &members
                && capacities.last() != Some(&slab.capacity())
            {
                capacities.push(slab.capacity());
            }
        }
        assert_eq!(capacities, [4, 6, 9, 13, 19]);
        assert_eq!(slots(&members).len(), 14);
    }

    #[test]
    fn members_are_no_bigger_than_one_inline_member() {
        assert!(std::mem::size_of::<Members>() <= std::mem::size_of::<Member>());
    }
}
