//! A shard's side of the cluster (only with `cluster.redis` set).
//!
//! A shard treats another node's shards like its own neighbours: a
//! `ShardId` of `NODE_SHARD_BASE` or more names one, and messages for it go
//! to the bridge instead of a local inbox (`send_to_node`), one
//! `ClusterOut::ToShard` per destination run. Two things differ:
//!
//! - **Which node owns a room** is decided in Redis. A join for a room no
//!   shard here holds goes to the bridge (`ClusterOut::Join`): it claims
//!   the room for this node, and the join comes back (`ClusterIn::Claimed`)
//!   to be taken in here, or it passes the join to the owner, whose
//!   `Joined` then comes from there. This shard is the node's gateway for
//!   the rooms it owns by hash, as it is for their joins between shards.
//! - **A broadcast goes once to the other nodes**: the owner sends it on
//!   the room's channel (`ClusterOut::ToRoom`), whatever the number of
//!   nodes; each node's bridge hands it to its shards with members.

use std::sync::Arc;

use crossbeam_channel::TrySendError;

use super::ShardCore;
use super::conn::Place;
use super::remote::Overloaded;
use crate::ids::{RoomKey, ShardId, remote_node};
use crate::metrics::LimitKind;
use crate::msg::{ClusterIn, ClusterOut, RemoteMsg};
use crate::protocol::{self, Since};
use crate::refusal::Refusal;
use crate::room::Peer;
use crate::ws::CloseCode;
use crate::ws::frame::Opcode;

impl ShardCore {
    pub(super) fn in_cluster(&self) -> bool {
        self.settings.cluster.is_some()
    }

    /// Queues `msg` for shard `to` of another node; with `bounded`, refused
    /// (and counted) past `shard_outbox_max` messages waiting.
    pub(super) fn send_to_node(&mut self, to: ShardId, msg: RemoteMsg, bounded: bool) -> Result<(), Overloaded> {
        if bounded && self.remote.cluster_out.len() >= self.settings.limits.shard_outbox_max {
            self.note_shard_limit(LimitKind::OutboxFull);
            return Err(Overloaded);
        }
        self.remote.push_to_node(self.id, to, msg);
        Ok(())
    }

    /// Queues a request for the bridge.
    pub(super) fn send_cluster(&mut self, item: ClusterOut) {
        self.remote.cluster_out.push(item);
    }

    /// Hands what waits to the bridge; what its full queue does not take
    /// waits for the next iteration (counted, and dropped past `shard_outbox_max`).
    pub(super) fn flush_cluster(&mut self) {
        let Some(bridge) = self.settings.cluster.clone() else { return };
        if self.remote.cluster_out.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.remote.cluster_out);
        let mut kept = Vec::new();
        for item in waiting {
            if !kept.is_empty() {
                kept.push(item);
                continue;
            }
            match bridge.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    self.note_shard_limit(LimitKind::ClusterQueueFull);
                    kept.push(item);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        let max = self.settings.limits.shard_outbox_max;
        if kept.len() > max {
            kept.truncate(max);
            self.note_shard_limit(LimitKind::ClusterQueueFull);
        }
        self.remote.cluster_out = kept;
    }

    /// A join for room `key` that this shard owns by hash but does not hold:
    /// the bridge claims the room or passes the join on.
    pub(super) fn join_through_cluster(
        &mut self,
        peer: Arc<Peer>,
        key: RoomKey,
        tag: u32,
        quiet: bool,
        reference: Option<Box<[u8]>>,
        since: Option<Box<Since>>,
    ) {
        let msg = RemoteMsg::Join { peer, key: key.clone(), tag, quiet, reference, since };
        self.send_cluster(ClusterOut::Join { from: self.id, key, msg });
    }

    pub(super) fn on_cluster(&mut self, msg: ClusterIn) {
        match msg {
            ClusterIn::Claimed(joins) => {
                for join in joins {
                    if let RemoteMsg::Join { peer, key, tag, quiet, reference, since } = join {
                        self.join_claimed(peer, key, tag, quiet, reference, since);
                    }
                }
            }
            ClusterIn::Unrouted(msg) => {
                if let RemoteMsg::Direct { from, reference, .. } = msg {
                    self.deliver_error(from.conn, reference.as_deref(), Refusal::UserOffline);
                }
            }
            ClusterIn::NodeDown(node) => self.on_node_down(node),
            ClusterIn::Link(up) => self.on_link(up),
            ClusterIn::Reclaim => {
                let keys = self.rooms.keys();
                if !keys.is_empty() {
                    self.send_cluster(ClusterOut::Reclaim(keys));
                }
            }
        }
    }

    /// A join whose room this node now owns.
    fn join_claimed(
        &mut self,
        peer: Arc<Peer>,
        key: RoomKey,
        tag: u32,
        quiet: bool,
        reference: Option<Box<[u8]>>,
        since: Option<Box<Since>>,
    ) {
        let conn = peer.conn;
        if conn.shard != self.id {
            self.join_here(peer, key, tag, quiet, reference, since);
            return;
        }
        // The connection is on this shard: it becomes a local member, if it
        // still waits for this join (it may have closed or left meanwhile).
        let waiting =
            self.live_member(conn).and_then(|member| member.room_mut(&key)).is_some_and(|joined| joined.awaits(tag));
        if !waiting {
            return;
        }
        let now_ms = self.now_unix_ms();
        match self.rooms.join_since(&peer, &key, quiet, reference.as_deref(), since.as_deref(), now_ms) {
            Ok(membership) => {
                let shared = self.rooms.key(membership.room_slot()).cloned();
                if let Some(joined) = self.live_member(conn).and_then(|member| member.room_mut(&key)) {
                    joined.set_place(Place::Local(membership));
                    if let Some(shared) = shared {
                        joined.key = shared;
                    }
                }
                self.apply_room_outputs();
            }
            Err(refusal) => self.on_join_refused(conn, &key, tag, refusal, reference.as_deref()),
        }
    }

    /// Node `node` died: its members leave the rooms here (everyone is told,
    /// as for any leave), and connections here in rooms it owned are
    /// closed (1012): those rooms live on wherever their members rejoin.
    /// Node 0 stands for every other node: this one was cut off and taken
    /// for dead, so the others have done the same on their side.
    fn on_node_down(&mut self, node: u8) {
        let lost = |owner: ShardId| remote_node(owner).is_some_and(|of| node == 0 || of == node);
        for (membership, conn) in self.rooms.members_of_node(node) {
            self.rooms.leave(membership, conn, None);
        }
        self.apply_room_outputs();
        let orphaned: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.doomed)
            .filter_map(|(slot, conn)| match &conn.role {
                super::conn::Role::Member(member) => {
                    member.rooms.iter().any(|joined| joined.place().owner().is_some_and(lost)).then_some(slot)
                }
                super::conn::Role::Echo => None,
            })
            .collect();
        if !orphaned.is_empty() {
            tracing::warn!(
                shard = self.id,
                node,
                closed = orphaned.len(),
                "cluster node lost: closing its rooms' members here"
            );
        }
        for slot in orphaned {
            self.begin_close(slot, CloseCode::OWNER_NODE_LOST, None);
        }
    }

    /// The Redis link changed: members of rooms that span nodes are told
    /// (`cluster` event), since what other nodes send them stops or may
    /// have gaps.
    fn on_link(&mut self, up: bool) {
        protocol::encode_cluster_state(self.frames.begin(), up);
        let frame = self.frames.finish(Opcode::Text);
        let told: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.doomed)
            .filter_map(|(slot, conn)| match &conn.role {
                super::conn::Role::Member(member) => {
                    member.rooms.iter().any(|joined| self.spans_nodes(joined.place())).then_some(slot)
                }
                super::conn::Role::Echo => None,
            })
            .collect();
        for slot in told {
            self.queue(slot, Arc::clone(&frame));
        }
    }

    /// Whether a joined room has members on other nodes, as far as this
    /// shard can tell: owned by another node, or owned here with members there.
    fn spans_nodes(&self, place: Place) -> bool {
        match place {
            Place::Pending { owner, .. } | Place::Remote { owner, .. } => remote_node(owner).is_some(),
            Place::Local(membership) => self.rooms.cluster_members(membership.room_slot()) > 0,
        }
    }

    /// A room of this node closed: its claim in Redis is given up.
    pub(super) fn release_room(&mut self, key: RoomKey) {
        self.send_cluster(ClusterOut::Release { key });
    }
}
