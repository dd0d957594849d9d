//! Per-room state for custom message handlers: one slot per (handler, type)
//! in the room's entry on the shard that owns it, made on first use and
//! dropped with the room. Only the owning shard's thread ever touches it,
//! so it needs no lock; the room logic stores the values and never reads them.

use std::any::{Any, TypeId};

/// The slots of one room; `None` in the room until a handler asks.
#[derive(Default)]
pub(super) struct Extensions {
    /// A handful of handlers at most: a linear search beats a map.
    slots: Vec<((u32, TypeId), Box<dyn Any + Send>)>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions").field("slots", &self.slots.len()).finish()
    }
}

impl Extensions {
    /// The slot of handler `owner` holding a `T`, made with `T::default()` on first use.
    pub(super) fn slot<T: Default + Send + 'static>(&mut self, owner: u32) -> &mut T {
        let key = (owner, TypeId::of::<T>());
        let index = match self.slots.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                self.slots.push((key, Box::new(T::default())));
                self.slots.len() - 1
            }
        };
        // The key holds `TypeId::of::<T>()`, so the value is a `T`; a
        // fresh default stands in should that ever not hold.
        let value = &mut self.slots[index].1;
        if !value.is::<T>() {
            *value = Box::new(T::default());
        }
        match value.downcast_mut::<T>() {
            Some(value) => value,
            None => unreachable!("the slot was just made a T"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_and_type_has_its_own_slot() {
        let mut ext = Extensions::default();
        *ext.slot::<u32>(0) += 2;
        *ext.slot::<u32>(0) += 3;
        *ext.slot::<u32>(1) += 7;
        ext.slot::<String>(0).push('x');
        assert_eq!(*ext.slot::<u32>(0), 5);
        assert_eq!(*ext.slot::<u32>(1), 7);
        assert_eq!(ext.slot::<String>(0), "x");
    }
}
