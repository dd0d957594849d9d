//! The shard's side of the store thread. Room outputs `Persist(work)` go,
//! as `StoreEvent`s, to the store's bounded queue with `try_send`: a shard
//! never waits for the disk. When the queue is full the event is refused here, counted
//! (`store_overloaded`) and answered: a chat message has already been
//! broadcast, so it is live but not durable, and its sender gets `error`
//! `store_overloaded` instead of an ack. A history request that cannot be
//! queued is answered as an empty history, so the room stops waiting.
//!
//! The store answers over the shard's store-reply channel: acks after the
//! commit (to the sender's home shard, which may not own the room), failed
//! writes (`store_failed`), and loaded histories (to the owner).

use crossbeam_channel::TrySendError;

use super::ShardCore;
use super::conn::{Connection, Role};
use crate::ids::RoomKey;
use crate::metrics::LimitKind;
use crate::msg::{CLOSE_ABNORMAL, SessionOpen, StoreEvent, StoreReply};
use crate::protocol;
use crate::refusal::Refusal;
use crate::room::Persist;
use crate::ws::frame::Opcode;

impl ShardCore {
    /// Hands a room's durable work to the store thread as its event, or
    /// refuses it when its queue is full.
    pub(super) fn persist(&mut self, persist: Persist) {
        let Some(store) = &self.settings.store else { return };
        match store.try_send(StoreEvent::from(persist)) {
            Ok(()) => self.store_refusing = false,
            Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) => self.store_refused(event),
        }
    }

    fn store_refused(&mut self, event: StoreEvent) {
        self.metrics.hit(LimitKind::StoreOverloaded);
        if !self.store_refusing {
            // Once per episode: the next accepted event ends it.
            self.store_refusing = true;
            tracing::warn!(shard = self.id, "store queue full (store.queue_max): chat is not durable meanwhile");
        }
        match event {
            StoreEvent::Chat(record) => {
                self.deliver_error(record.sender, record.reference.as_deref(), Refusal::StoreOverloaded)
            }
            StoreEvent::ChatDelete { .. } => {}
            // Called while room outputs are applied: the caller's loop takes
            // the outputs this makes.
            StoreEvent::LoadHistory { key, load, .. } => self.rooms.history_loaded(&key, load, Vec::new()),
            // Shards send neither through `persist`; dropping is all there is to do.
            StoreEvent::SessionOpen(_)
            | StoreEvent::SessionClose { .. }
            | StoreEvent::Query(_)
            | StoreEvent::Revoke { .. } => {}
        }
    }

    /// Hands a session audit event to the store. Audit never holds anything
    /// up: when the queue is full the event is dropped and counted
    /// (`audit_dropped`), without the `store_overloaded` warning of chat. A
    /// dropped open leaves no row (its close then matches none); a dropped
    /// close leaves the row open, and the next start marks it 1006.
    pub(super) fn audit(&mut self, event: StoreEvent) {
        let Some(store) = &self.settings.store else { return };
        if store.try_send(event).is_err() {
            self.metrics.hit(LimitKind::AuditDropped);
        }
    }

    /// Starts the audit row of a room connection just admitted in `slot`.
    pub(super) fn audit_open(&mut self, slot: usize, home: Option<&RoomKey>, peer: Option<std::net::SocketAddr>) {
        if self.settings.store.is_none() {
            return;
        }
        let (Some(key), Some(conn)) = (home, self.conns.get(slot)) else { return };
        let Role::Member(member) = &conn.role else { return };
        let open = SessionOpen {
            conn: conn.id,
            key: key.clone(),
            member: std::sync::Arc::clone(&member.peer),
            peer,
            connected_ms: self.now_unix_ms(),
        };
        self.audit(StoreEvent::SessionOpen(Box::new(open)));
    }

    /// Ends the audit row of a room connection being freed: the Close code
    /// sent (the server's, or the peer's echoed), else 1006 (dropped without one).
    pub(super) fn audit_close(&mut self, conn: &Connection) {
        if let Role::Member(_) = conn.role {
            let close_code = conn.close_code.unwrap_or(CLOSE_ABNORMAL);
            self.audit(StoreEvent::SessionClose { conn: conn.id, disconnected_ms: self.now_unix_ms(), close_code });
        }
    }

    /// Carries out a batch of the store's answers.
    pub(super) fn on_store_replies(&mut self, batch: Vec<StoreReply>) {
        for reply in batch {
            match reply {
                StoreReply::Committed { to, reference, seq } => {
                    if self.is_live(to) {
                        protocol::encode_ack(self.frames.begin(), Some(&reference), Some(seq));
                        let ack = self.frames.finish(Opcode::Text);
                        self.queue(to.slot as usize, ack);
                    }
                }
                StoreReply::Failed { to, reference } => {
                    self.metrics.hit(LimitKind::StoreFailed);
                    if self.is_live(to) {
                        self.send_error(to.slot as usize, reference.as_deref(), Refusal::StoreFailed);
                    }
                }
                StoreReply::History { key, load, entries } => self.rooms.history_loaded(&key, load, entries),
            }
        }
        self.apply_room_outputs();
    }
}
