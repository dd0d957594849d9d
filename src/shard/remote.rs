//! Rooms that span shards. A room lives on the shard that owns its key; a
//! connection on another shard is a member there through messages:
//!
//! - home → owner: `Join`, `Leave`, `Publish`, `Direct`, `Meeting`;
//! - owner → home: `Joined` / `JoinRefused` / `Left` (membership bookkeeping),
//!   `Role` (a member's new role), `Deliver` (one frame for one connection),
//!   `Fanout` (one broadcast for that shard's members of a room in its
//!   audience, sent once, not once per member) and `Close`.
//!
//! Messages to a shard are batched: one channel send and one wake per
//! destination per loop iteration. Each channel is FIFO, so a member sees a
//! room's messages in `seq` order, and a `Joined` always arrives before the
//! first `Fanout` that should reach the new member.
//!
//! The home shard keeps `mirrors`: for each remote room, its own connections
//! in it with their memberships and roles there. A connection is added on
//! `Joined` (with its role at the join), its role follows `Role` messages,
//! and it is removed on `Left` (or when it closes), so it gets exactly the
//! messages published while the owner counts it as a member. The owner
//! answers every `Leave` with a `Left`, also when the connection was no
//! longer a member (a kick or deny crossed the leave), and `Left` and
//! `Role` name the membership: a connection may be in a room twice for a
//! moment (a join left while in flight, then joined again; the first is
//! being undone), and a message about the first must not touch the entry
//! of the second. A `Fanout` names its audience
//! (everyone, admitted members, hosts) and the home filters its members by
//! role, so a lobby in a big room costs no per-member list on the owner:
//! the owner sends each `Role` before any broadcast that should see it.
//! A join whose connection closed or left while the join was in flight is
//! undone when its `Joined` comes back, so no ghost membership stays behind;
//! memberships name the room's incarnation, so a request that crossed a
//! leave acts on nothing, even if the room's slot was reused.

use std::collections::HashMap;
use std::sync::Arc;

use super::conn::Place;
use super::{ShardCore, ShardHandle, ShardMsg};
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::metrics::LimitKind;
use crate::msg::RemoteMsg;
use crate::protocol::{self, Since};
use crate::refusal::Refusal;
use crate::room::{Audience, Membership, Peer, Role};
use crate::ws::frame::{Frame, Opcode};

/// The outbox to one shard was over `shard_outbox_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// One of this shard's connections in a room owned elsewhere.
#[derive(Debug, Clone, Copy)]
struct Mirrored {
    conn: ConnId,
    /// Which join of `conn` this is: `Left` and `Role` name it.
    membership: Membership,
    /// Its role there, by the owner's `Joined` and `Role` messages.
    role: Role,
}

/// A shard's cross-shard state.
#[derive(Debug, Default)]
pub struct RemoteState {
    /// Every shard's handle, indexed by `ShardId` (this shard's own included, unused).
    pub peers: Vec<ShardHandle>,
    /// Messages waiting for the end of the iteration, per destination shard.
    outbox: Vec<Vec<RemoteMsg>>,
    /// This shard's connections in rooms owned elsewhere, with their roles there.
    mirrors: HashMap<RoomKey, Vec<Mirrored>>,
    /// The shards one broadcast goes to, reused so a fan-out allocates nothing.
    shards_scratch: Vec<ShardId>,
    /// For the cluster bridge, in order, until the end of the iteration
    /// (`cluster_link.rs`); always empty outside a cluster.
    pub cluster_out: Vec<crate::msg::ClusterOut>,
    /// This shard's own id (the sender of what goes to other nodes).
    pub own: ShardId,
}

impl RemoteState {
    pub fn new(shards: usize) -> RemoteState {
        RemoteState {
            peers: Vec::new(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            mirrors: HashMap::new(),
            shards_scratch: Vec::with_capacity(shards),
            cluster_out: Vec::new(),
            own: 0,
        }
    }

    /// Whether messages wait for a shard whose inbox was full.
    pub fn has_backlog(&self) -> bool {
        self.outbox.iter().any(|batch| !batch.is_empty()) || !self.cluster_out.is_empty()
    }

    /// Queues a message that must not be dropped: replies that keep
    /// membership consistent on both sides. Bounded by the requests that
    /// caused them, each of which passed `send_bounded`'s check. A shard
    /// of another node is reached through the cluster bridge.
    pub fn send_control(&mut self, shard: ShardId, msg: RemoteMsg) {
        if crate::ids::remote_node(shard).is_some() {
            let from = self.own_id();
            self.push_to_node(from, shard, msg);
        } else if let Some(batch) = self.outbox.get_mut(shard as usize) {
            batch.push(msg);
        }
    }

    /// Queues `msg` for shard `to` of another node, in the same
    /// `ToShard` as the message before it when that went there too.
    pub fn push_to_node(&mut self, from: ShardId, to: ShardId, msg: RemoteMsg) {
        use crate::msg::ClusterOut;
        match self.cluster_out.last_mut() {
            Some(ClusterOut::ToShard { to: last, msgs, .. }) if *last == to => msgs.push(msg),
            _ => self.cluster_out.push(ClusterOut::ToShard { from, to, msgs: vec![msg] }),
        }
    }

    /// This shard's id: the one entry of `outbox` that never fills. Set by
    /// `connect_peers` (the peers list is indexed by shard).
    fn own_id(&self) -> ShardId {
        self.own
    }

    /// Stops routing `key`'s broadcasts to `conn` (it closes).
    pub fn forget_member(&mut self, key: &RoomKey, conn: ConnId) {
        self.forget_where(key, |entry| entry.conn == conn);
    }

    /// Stops routing `key`'s broadcasts to `conn` at `membership` (the
    /// owner's `Left`); an entry of a later join of `conn` stays.
    fn forget_membership(&mut self, key: &RoomKey, conn: ConnId, membership: Membership) {
        self.forget_where(key, |entry| entry.conn == conn && entry.membership == membership);
    }

    fn forget_where(&mut self, key: &RoomKey, gone: impl Fn(&Mirrored) -> bool) {
        if let Some(members) = self.mirrors.get_mut(key) {
            members.retain(|entry| !gone(entry));
            if members.is_empty() {
                self.mirrors.remove(key);
            }
        }
    }
}

impl ShardCore {
    /// Queues `msg` for `shard` unless its outbox is over `shard_outbox_max`.
    pub(super) fn try_send_remote(&mut self, shard: ShardId, msg: RemoteMsg) -> Result<(), Overloaded> {
        if crate::ids::remote_node(shard).is_some() {
            return self.send_to_node(shard, msg, true);
        }
        let max = self.settings.limits.shard_outbox_max;
        match self.remote.outbox.get_mut(shard as usize) {
            Some(batch) if batch.len() < max => {
                batch.push(msg);
                Ok(())
            }
            _ => {
                self.note_shard_limit(LimitKind::OutboxFull);
                Err(Overloaded)
            }
        }
    }

    /// Queues a delivery for another shard; over the outbox bound it is
    /// dropped and counted (`outbox_full`, logged once per episode), because
    /// the shard that would receive it has stopped reading for longer than
    /// the bound allows.
    pub(super) fn send_bounded(&mut self, shard: ShardId, msg: RemoteMsg) {
        let _ = self.try_send_remote(shard, msg);
    }

    /// Sends a broadcast once to each other shard with members of the room
    /// in `room`, naming its audience: that shard picks its members by role,
    /// so the cost here is one message per shard whatever the audience.
    pub(super) fn fan_out_remote(&mut self, room: usize, audience: Audience, skip: Option<ConnId>, frame: &Frame) {
        let mut shards = std::mem::take(&mut self.remote.shards_scratch);
        shards.clear();
        shards.extend(self.rooms.remote_shards(room));
        if let Some(key) = self.rooms.key(room).filter(|_| !shards.is_empty()).cloned() {
            for &shard in &shards {
                let fanout = RemoteMsg::Fanout { key: key.clone(), audience, skip, frame: Arc::clone(frame) };
                self.send_bounded(shard, fanout);
            }
        }
        self.remote.shards_scratch = shards;
        // Once for every other node, on the room's channel.
        if self.rooms.cluster_members(room) > 0
            && let Some(key) = self.rooms.key(room).cloned()
        {
            let fanout = RemoteMsg::Fanout { key, audience, skip, frame: Arc::clone(frame) };
            self.send_cluster(crate::msg::ClusterOut::ToRoom { from: self.id, msg: fanout });
        }
    }

    /// Tells the home shard of `conn` its new role at `membership`. Never
    /// dropped: a lost role change would misroute every later broadcast.
    pub(super) fn send_role(&mut self, conn: ConnId, membership: Membership, role: Role) {
        if let Some(key) = self.rooms.key(membership.room_slot()).cloned() {
            self.remote.send_control(conn.shard, RemoteMsg::Role { conn, key, membership, role });
        }
    }

    /// Sends every batch that waits; a full inbox keeps its batch for the next iteration.
    pub(super) fn flush_outbox(&mut self) {
        for (shard, batch) in self.remote.outbox.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let Some(peer) = self.remote.peers.get(shard) else { continue };
            let sent = batch.len() as u64;
            match peer.try_send(ShardMsg::Remote(self.id, std::mem::take(batch))) {
                Ok(()) => {
                    self.metrics.remote_sent += sent;
                    peer.wake();
                }
                Err(ShardMsg::Remote(_, unsent)) => *batch = unsent,
                Err(ShardMsg::Handoff(_) | ShardMsg::Refreshed(_) | ShardMsg::Cluster(_)) => {}
            }
        }
        self.flush_cluster();
    }

    /// Handles one message from shard `from`.
    pub(super) fn on_remote(&mut self, from: ShardId, msg: RemoteMsg) {
        match msg {
            RemoteMsg::Join { peer, key, tag, quiet, reference, since } => {
                self.on_remote_join(peer, key, tag, quiet, reference, since)
            }
            RemoteMsg::Leave { key, membership, conn, reference, requested } => {
                if requested {
                    self.rooms.leave_requested(membership, conn, reference.as_deref());
                } else {
                    self.rooms.leave(membership, conn, reference.as_deref());
                }
                // Answered even when the connection was no longer a member (a
                // kick or deny crossed the leave): the home still mirrors it.
                self.remote.send_control(from, RemoteMsg::Left { conn, key, membership });
                self.apply_room_outputs();
            }
            RemoteMsg::Publish { membership, conn, reference, data, .. } => {
                let now_ms = self.now_unix_ms();
                match self.rooms.publish(membership, conn, reference.as_deref(), &data, now_ms) {
                    Some(Ok(_)) => self.metrics.messages_published += 1,
                    Some(Err(refusal)) => self.deliver_error(conn, reference.as_deref(), refusal),
                    None => self.deliver_error(conn, reference.as_deref(), Refusal::StaleMembership),
                }
                self.apply_room_outputs();
            }
            RemoteMsg::Meeting { membership, conn, reference, request, now_unix_ms } => {
                if let Err(refusal) = self.rooms.request(membership, conn, &request, reference.as_deref(), now_unix_ms)
                {
                    self.note_refusal(conn, refusal);
                    self.deliver_error(conn, reference.as_deref(), refusal);
                }
                self.apply_room_outputs();
            }
            RemoteMsg::Role { conn, key, membership, role } => {
                let entry = self.remote.mirrors.get_mut(&key).and_then(|mirrored| {
                    mirrored.iter_mut().find(|entry| entry.conn == conn && entry.membership == membership)
                });
                if let Some(entry) = entry {
                    entry.role = role;
                }
            }
            RemoteMsg::Close { conn, code } => {
                if self.is_live(conn) {
                    self.begin_close(conn.slot as usize, code, None);
                }
            }
            RemoteMsg::Direct { key, from: sender, reference, data }
                if self.in_cluster() && !self.rooms.contains(&key) =>
            {
                let msg = RemoteMsg::Direct { key: key.clone(), from: sender, reference, data };
                self.send_cluster(crate::msg::ClusterOut::Route { from: self.id, key, msg });
            }
            RemoteMsg::Direct { key, from: sender, reference, data } => {
                if !self.rooms.direct(&key, &sender, reference.as_deref(), &data) {
                    self.deliver_error(sender.conn, reference.as_deref(), Refusal::UserOffline);
                }
                self.apply_room_outputs();
            }
            RemoteMsg::Joined { conn, key, tag, membership, role } => {
                self.on_joined(from, conn, key, tag, membership, role)
            }
            RemoteMsg::JoinRefused { conn, key, tag, reason, reference } => {
                self.on_join_refused(conn, &key, tag, reason, reference.as_deref())
            }
            RemoteMsg::Left { conn, key, membership } => self.remote.forget_membership(&key, conn, membership),
            RemoteMsg::Deliver { to, frame } => {
                if self.is_live(to) {
                    self.queue(to.slot as usize, frame);
                }
            }
            RemoteMsg::Fanout { key, audience, skip, frame } => self.on_fanout(&key, audience, skip, frame),
        }
    }

    /// A join from a member on shard `peer.conn.shard`. In a cluster, a room
    /// not held here is claimed for this node or passed to its owner first.
    fn on_remote_join(
        &mut self,
        peer: Arc<Peer>,
        key: RoomKey,
        tag: u32,
        quiet: bool,
        reference: Option<Box<[u8]>>,
        since: Option<Box<Since>>,
    ) {
        if self.in_cluster() && !self.rooms.contains(&key) {
            self.join_through_cluster(peer, key, tag, quiet, reference, since);
        } else {
            self.join_here(peer, key, tag, quiet, reference, since);
        }
    }

    /// The owner takes a join from a member on shard `peer.conn.shard`: it
    /// answers `Joined` (before the welcome and any broadcast) or `JoinRefused`.
    pub(super) fn join_here(
        &mut self,
        peer: Arc<Peer>,
        key: RoomKey,
        tag: u32,
        quiet: bool,
        reference: Option<Box<[u8]>>,
        since: Option<Box<Since>>,
    ) {
        let home = peer.conn.shard;
        let now_ms = self.now_unix_ms();
        match self.rooms.join_since(&peer, &key, quiet, reference.as_deref(), since.as_deref(), now_ms) {
            Ok(membership) => {
                // Before the welcome and any broadcast: the home adds its mirror entry first.
                let role = self.rooms.role_of(membership, peer.conn).unwrap_or(Role::Waiting);
                let joined = RemoteMsg::Joined { conn: peer.conn, key, tag, membership, role };
                self.remote.send_control(home, joined);
                self.apply_room_outputs();
            }
            Err(reason) => {
                let refused = RemoteMsg::JoinRefused { conn: peer.conn, key, tag, reason, reference };
                self.remote.send_control(home, refused);
            }
        }
    }

    /// The owner refused a join: counted, the pending room dropped, and
    /// the error sent (when the connection is still here).
    pub(super) fn on_join_refused(
        &mut self,
        conn: ConnId,
        key: &RoomKey,
        tag: u32,
        reason: Refusal,
        reference: Option<&[u8]>,
    ) {
        self.note_refusal(conn, reason);
        if let Some(member) = self.live_member(conn) {
            let pending = |j: &super::conn::JoinedRoom| j.key == *key && j.awaits(tag);
            // The URL room (a spread big room's, or another node's) closes
            // the connection as a local one would.
            let home = member.rooms.first().is_some_and(pending);
            member.rooms.retain(|joined| !pending(joined));
            self.send_error(conn.slot as usize, reference, reason);
            if home {
                self.begin_close(conn.slot as usize, super::requests::home_close(reason), None);
            }
        }
    }

    /// The owner accepted a join: record the membership, or undo the join if
    /// the connection closed or left while it was in flight.
    fn on_joined(&mut self, owner: ShardId, conn: ConnId, key: RoomKey, tag: u32, membership: Membership, role: Role) {
        let pending =
            self.live_member(conn).and_then(|member| member.room_mut(&key)).filter(|joined| joined.awaits(tag));
        match pending {
            Some(joined) => {
                joined.set_place(Place::Remote { owner, membership });
                self.remote.mirrors.entry(key).or_default().push(Mirrored { conn, membership, role });
            }
            None => {
                tracing::debug!(conn = %conn, room = key.room(), "join undone: the connection closed or left while it was in flight");
                let undo = RemoteMsg::Leave { key, membership, conn, reference: None, requested: false };
                self.remote.send_control(owner, undo);
            }
        }
    }

    fn on_fanout(&mut self, key: &RoomKey, audience: Audience, skip: Option<ConnId>, frame: Frame) {
        let Some(members) = self.remote.mirrors.get(key) else { return };
        let bounds = self.member_queue_bounds();
        let mut slow = Vec::new();
        for &Mirrored { conn, role, .. } in members {
            if Some(conn) != skip
                && audience.includes(role)
                && let Err(slot) =
                    super::write::enqueue(&mut self.conns, &mut self.dirty, &mut self.metrics, conn, &frame, bounds)
            {
                slow.push(slot);
            }
        }
        // Closing edits the mirror, so it waits until the walk is over.
        for slot in slow {
            self.close_slow_consumer(slot);
        }
    }

    /// The room side of a live, open connection.
    pub(super) fn live_member(&mut self, conn: ConnId) -> Option<&mut super::conn::Member> {
        let entry = self.conns.get_mut(conn.slot as usize).filter(|c| c.id == conn && !c.doomed)?;
        match &mut entry.role {
            super::conn::Role::Member(member) => Some(member),
            super::conn::Role::Echo => None,
        }
    }

    /// An `error` frame for a connection on any shard.
    pub(super) fn deliver_error(&mut self, to: ConnId, reference: Option<&[u8]>, refusal: Refusal) {
        protocol::encode_error(self.frames.begin(), reference, refusal.code(), refusal.message());
        let frame = self.frames.finish(Opcode::Text);
        if to.shard == self.id {
            if self.is_live(to) {
                self.queue(to.slot as usize, frame);
            }
        } else {
            self.remote.send_control(to.shard, RemoteMsg::Deliver { to, frame });
        }
    }
}
