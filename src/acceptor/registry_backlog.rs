//! The acceptor's copy of the room registry and the changes waiting for
//! shards. A change the store committed goes to the acceptor's copy at once,
//! then to the owning shard (every shard, for a delete); a shard whose admin
//! inbox is full gets it later from a bounded per-shard FIFO, in order,
//! before any newer change. While `REGISTRY_BACKLOG_MAX` changes wait,
//! registry writes get 503 `busy` before they reach the store.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Acceptor;
use super::pending::PendingState;
use crate::http_api::Gather;
use crate::ids::RoomKey;
use crate::metrics::LimitKind;
use crate::registry::{Registry, RoomPolicy};
use crate::shard::{AdminQuery, AdminRequest};

/// Committed registry changes waiting for a shard whose admin inbox was full;
/// while this many wait, registry writes get 503 `busy` before the store.
const REGISTRY_BACKLOG_MAX: usize = 256;
/// Ticket of a registry change sent from the backlog: nobody waits for it.
const NO_TICKET: u64 = u64::MAX;

pub(super) struct RegistryState {
    /// Registered rooms (private, registration), checked at every handshake.
    pub(super) rooms: Registry,
    /// Per shard, committed registry changes its full admin inbox refused,
    /// oldest first; sent before any newer change to that shard.
    backlog: Vec<VecDeque<AdminRequest>>,
}

impl RegistryState {
    pub(super) fn new(rooms: Registry, shard_count: usize) -> RegistryState {
        RegistryState { rooms, backlog: (0..shard_count).map(|_| VecDeque::new()).collect() }
    }

    /// Some change waits for a shard: the loop retries soon.
    pub(super) fn behind(&self) -> bool {
        self.backlog.iter().any(|backlog| !backlog.is_empty())
    }

    /// The backlog is at its bound: registry writes are refused.
    pub(super) fn full(&self) -> bool {
        self.backlog.iter().map(VecDeque::len).sum::<usize>() >= REGISTRY_BACKLOG_MAX
    }
}

impl Acceptor {
    /// A registry change the store committed: the acceptor's copy takes it,
    /// then the owning shard (every shard, for a delete: they close the
    /// room's members), and the response waits for them, so that when it
    /// arrives the live room has the change. A shard whose admin inbox is
    /// full gets it from the backlog as soon as there is room, in order.
    pub(super) fn apply_registry_change(
        &mut self,
        slot: usize,
        key: RoomKey,
        policy: Option<RoomPolicy>,
        status: u16,
        response: Vec<u8>,
    ) {
        let shards: Vec<usize> = match policy {
            Some(_) => vec![key.shard(self.shards.len()) as usize],
            None => (0..self.shards.len()).collect(),
        };
        tracing::info!(tenant = key.tenant(), room = key.room(), deleted = policy.is_none(), "registry changed");
        self.registry.rooms.apply(key.clone(), policy);
        let Some(ticket) = self.pending.get(slot).map(|p| p.generation) else { return };
        let query = Arc::new(AdminQuery::Registry { key, policy });
        let mut sent = 0;
        for shard in shards {
            let request = self.api.admin_request(ticket, &query);
            if !self.registry.backlog[shard].is_empty() {
                self.registry.backlog[shard].push_back(AdminRequest { ticket: NO_TICKET, ..request });
                continue;
            }
            match self.shards.try_admin(shard, request) {
                Ok(()) => sent += 1,
                Err(request) => {
                    tracing::warn!(shard, "admin inbox full; registry change queued for the shard");
                    self.counters.hit(LimitKind::RegistryDeferred);
                    self.registry.backlog[shard].push_back(AdminRequest { ticket: NO_TICKET, ..request });
                }
            }
        }
        if sent == 0 {
            return self.respond(slot, status, "ok", response);
        }
        self.api.wait_for(ticket, slot);
        if let Some(pending) = self.pending.get_mut(slot) {
            let gather = Gather::RegistryApplied { status, response };
            let answers = Vec::with_capacity(sent);
            pending.state = PendingState::Awaiting { ticket, gather, remaining: sent, answers, incomplete: false };
        }
    }

    /// Sends what the registry backlog holds, oldest first, while the shards take it.
    pub(super) fn retry_registry_backlog(&mut self) {
        for (shard, backlog) in self.registry.backlog.iter_mut().enumerate() {
            while let Some(request) = backlog.pop_front() {
                match self.shards.try_admin(shard, request) {
                    Ok(()) => {}
                    Err(request) => {
                        backlog.push_front(request);
                        break;
                    }
                }
            }
        }
    }
}
