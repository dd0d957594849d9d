//! Messages between threads: what the shards, the acceptor and the store
//! thread send each other, and [`Reply`], the handle an answer goes back
//! through. A leaf below `store` and `shard`: both speak these types, so
//! neither has to import the other. Nothing here does work; every type is
//! plain data, and every channel behind a [`Reply`] is bounded.
//!
//! - [`store`]: events for the store thread and its answers to shards.
//! - [`admin`]: answers to admin HTTP API requests (from shards and the store).

pub mod admin;
pub mod cluster;
pub mod remote;
pub mod store;

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use mio::Waker;

pub use admin::{AdminAnswer, AdminReply, ConnInfo};
pub use cluster::{ClusterIn, ClusterOut};
pub use remote::RemoteMsg;
pub use store::{
    CLOSE_ABNORMAL, DayUsage, QueryRequest, REPLY_CHANNEL_MAX, SessionOpen, StoreAnswer, StoreEvent, StoreQuery,
    StoreReply,
};

/// Where an answer goes: a bounded channel into another thread's loop, plus
/// that loop's waker. Whoever holds one answers without knowing who is on
/// the other side (a shard, the acceptor).
#[derive(Debug)]
pub struct Reply<T> {
    sender: Sender<T>,
    waker: Arc<Waker>,
}

// Derived `Clone` would ask for `T: Clone`; the handle clones without it.
impl<T> Clone for Reply<T> {
    fn clone(&self) -> Self {
        Reply { sender: self.sender.clone(), waker: Arc::clone(&self.waker) }
    }
}

impl<T> Reply<T> {
    pub fn new(sender: Sender<T>, waker: Arc<Waker>) -> Reply<T> {
        Reply { sender, waker }
    }

    /// Queues `value` without blocking, then wakes the receiver. A full
    /// channel gives `value` back (`TrySendError::Full`) for a later try; a
    /// gone receiver gives `TrySendError::Disconnected`. Neither wakes anyone.
    pub fn send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.sender.try_send(value)?;
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the thread a reply went to");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_wakes_after_queueing_and_gives_back_what_does_not_fit() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(7)).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply = Reply::new(tx, waker);
        assert!(reply.send(1).is_ok());
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5))).unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(7)), "woken");
        assert!(matches!(reply.clone().send(2), Err(TrySendError::Full(2))), "full: given back");
        assert_eq!(rx.recv().unwrap(), 1);
        drop(rx);
        assert!(matches!(reply.send(3), Err(TrySendError::Disconnected(3))));
    }
}
