//! The bridge's reader thread: parses everything Redis sends on the link
//! and routes it. Pub/sub messages (RESP3 pushes) go to the shards: a
//! node-channel envelope to its shard, a room-channel broadcast to each
//! local shard with members there, `dead {n}` to every shard. Replies go,
//! in order, to what the writer expected of them (`Expect`).

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{PushKind, Value};

use super::link::Stream;
use super::wire;
use super::{BridgeSettings, Counters, unix_now_us};
use crate::ids::{RoomKey, ShardId, remote_node};
use crate::msg::cluster::GATEWAY;
use crate::msg::{ClusterIn, RemoteMsg};
use crate::shard::{ShardHandle, ShardMsg};

/// How long a full shard inbox may hold the reader (and so Redis) back
/// before the message is dropped and counted.
const SHARD_PATIENCE: Duration = Duration::from_secs(1);

/// What the writer expects the next reply to be for.
#[derive(Debug)]
pub(super) enum Expect {
    Ignore,
    /// A claim for `key` sent for shard `from`: this node's own number back
    /// means the join is to be taken in here; `watched`: the local shard
    /// whose membership subscribed the room.
    Claim {
        from: ShardId,
        key: RoomKey,
        msg: RemoteMsg,
        watched: Option<ShardId>,
    },
    /// A routed message: 0 back means nobody owns its room.
    Route {
        from: ShardId,
        msg: RemoteMsg,
    },
    Heartbeat,
    Janitor,
    /// A room claimed again after Redis lost its data.
    Reclaim(RoomKey),
}

/// What the reader tells the writer.
#[derive(Debug)]
pub(super) enum Note {
    /// A local membership of the room ended (`Left`, `JoinRefused`, or a claim that made the room ours).
    Unwatch(RoomKey, ShardId),
    /// The room is owned by that node (seen in its `Joined`).
    Owner(RoomKey, u8),
    NodeDown(u8),
    /// The heartbeat was refused: the others took this node for dead.
    Fenced,
    /// The link broke.
    Died,
}

/// A change of which local shards have members of a room owned elsewhere.
#[derive(Debug)]
pub(super) enum RouteUpdate {
    Add(RoomKey, ShardId),
    Remove(RoomKey, ShardId),
    Drop(RoomKey),
}

pub(super) struct Reader {
    stream: BufReader<Stream>,
    parser: redis::Parser,
    node: u8,
    settings: BridgeSettings,
    shards: Vec<ShardHandle>,
    announcements: Option<crate::msg::Reply<Vec<u8>>>,
    expects: Receiver<Expect>,
    route_updates: Receiver<RouteUpdate>,
    notes: Sender<Note>,
    /// Rooms owned elsewhere → members per local shard.
    routes: HashMap<RoomKey, Vec<u32>>,
    counters: Arc<Counters>,
    node_channel: Vec<u8>,
    all_channel: Vec<u8>,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        stream: BufReader<Stream>,
        parser: redis::Parser,
        node: u8,
        settings: BridgeSettings,
        shards: Vec<ShardHandle>,
        announcements: Option<crate::msg::Reply<Vec<u8>>>,
        expects: Receiver<Expect>,
        route_updates: Receiver<RouteUpdate>,
        notes: Sender<Note>,
        routes: HashMap<RoomKey, Vec<u32>>,
        counters: Arc<Counters>,
    ) -> Reader {
        let node_channel = settings.names.node_channel(node);
        let all_channel = settings.names.all_channel();
        Reader {
            stream,
            parser,
            node,
            settings,
            shards,
            announcements,
            expects,
            route_updates,
            notes,
            routes,
            counters,
            node_channel,
            all_channel,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let value = match self.parser.parse_value(&mut self.stream) {
                Ok(value) => value,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: link read ended");
                    let _ = self.notes.send(Note::Died);
                    return;
                }
            };
            match value {
                Value::Push { kind: PushKind::Message, data } => self.on_message(data),
                Value::Push { .. } => {}
                reply => {
                    let Ok(expect) = self.expects.try_recv() else {
                        tracing::error!(?reply, "cluster: a reply nobody waited for; reconnecting");
                        let _ = self.notes.send(Note::Died);
                        return;
                    };
                    self.on_reply(expect, reply);
                }
            }
        }
    }

    fn on_message(&mut self, data: Vec<Value>) {
        let mut parts = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) = (parts.next(), parts.next()) else {
            return;
        };
        if channel == self.all_channel {
            self.on_announcement(&payload);
            return;
        }
        let envelope = match wire::decode(&payload, self.node) {
            Ok(envelope) => envelope,
            Err(e) => {
                Counters::add(&self.counters.dropped_undecodable, 1);
                tracing::warn!(error = %e, "cluster: undecodable message dropped");
                return;
            }
        };
        self.counters.record_lag(unix_now_us().saturating_sub(envelope.sent_at_us));
        if channel == self.node_channel {
            self.on_node_message(envelope);
        } else {
            self.on_room_message(envelope);
        }
    }

    /// `dead {n}`: every shard forgets node `n`'s members and rooms.
    /// `admin {n} {text}`: node `n`'s admin request, for the acceptor here.
    fn on_announcement(&mut self, payload: &[u8]) {
        if let Some(rest) = payload.strip_prefix(b"admin ") {
            let Some(space) = rest.iter().position(|&b| b == b' ') else { return };
            let from: Option<u8> = std::str::from_utf8(&rest[..space]).ok().and_then(|n| n.parse().ok());
            if from.is_some_and(|n| n != self.node)
                && let Some(announcements) = &self.announcements
                && announcements.send(rest[space + 1..].to_vec()).is_err()
            {
                Counters::add(&self.counters.dropped_inbox_full, 1);
            }
            return;
        }
        let text = String::from_utf8_lossy(payload);
        let Some(node) = text.strip_prefix("dead ").and_then(|n| n.trim().parse::<u8>().ok()) else { return };
        if node == self.node {
            let _ = self.notes.send(Note::Fenced);
            return;
        }
        tracing::warn!(node, "cluster: node declared dead");
        for shard in &self.shards {
            let _ = shard.send_within(ShardMsg::Cluster(ClusterIn::NodeDown(node)), SHARD_PATIENCE);
        }
        let _ = self.notes.send(Note::NodeDown(node));
    }

    fn on_node_message(&mut self, envelope: wire::Envelope) {
        let wire::Envelope { from, to_shard, msgs, .. } = envelope;
        for msg in &msgs {
            match msg {
                RemoteMsg::Joined { key, .. } => {
                    if let Some(node) = remote_node(from) {
                        let _ = self.notes.send(Note::Owner(key.clone(), node));
                    }
                }
                RemoteMsg::Left { key, conn, .. } | RemoteMsg::JoinRefused { key, conn, .. }
                    if remote_node(conn.shard).is_none() =>
                {
                    let _ = self.notes.send(Note::Unwatch(key.clone(), conn.shard));
                }
                _ => {}
            }
        }
        let shard = if to_shard == GATEWAY {
            match msgs.first() {
                Some(RemoteMsg::Join { key, .. } | RemoteMsg::Direct { key, .. }) => key.shard(self.settings.shards),
                _ => return,
            }
        } else {
            ShardId::from(to_shard)
        };
        self.deliver(shard, ShardMsg::Remote(from, msgs));
    }

    /// A room's broadcast, for each local shard with members there. Ours
    /// come back too (Redis sends to every subscriber): they are dropped,
    /// this node's members had them from the owner directly.
    fn on_room_message(&mut self, envelope: wire::Envelope) {
        if remote_node(envelope.from).is_none() {
            return;
        }
        for update in self.route_updates.try_iter() {
            match update {
                RouteUpdate::Add(key, shard) => {
                    let counts = self.routes.entry(key).or_insert_with(|| vec![0; self.settings.shards]);
                    if let Some(count) = counts.get_mut(usize::from(shard)) {
                        *count = 1;
                    }
                }
                RouteUpdate::Remove(key, shard) => {
                    if let Some(count) = self.routes.get_mut(&key).and_then(|c| c.get_mut(usize::from(shard))) {
                        *count = 0;
                    }
                }
                RouteUpdate::Drop(key) => {
                    self.routes.remove(&key);
                }
            }
        }
        let from = envelope.from;
        for msg in envelope.msgs {
            let RemoteMsg::Fanout { key, audience, skip, frame } = msg else { continue };
            let Some(counts) = self.routes.get(&key) else { continue };
            let targets: Vec<ShardId> =
                counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(shard, _)| shard as ShardId).collect();
            for shard in targets {
                let fanout = RemoteMsg::Fanout { key: key.clone(), audience, skip, frame: Arc::clone(&frame) };
                self.deliver(shard, ShardMsg::Remote(from, vec![fanout]));
            }
        }
    }

    fn deliver(&self, shard: ShardId, msg: ShardMsg) {
        let Some(handle) = self.shards.get(usize::from(shard)) else {
            Counters::add(&self.counters.dropped_undecodable, 1);
            return;
        };
        match handle.send_within(msg, SHARD_PATIENCE) {
            Ok(()) => Counters::add(&self.counters.received, 1),
            Err(_) => Counters::add(&self.counters.dropped_inbox_full, 1),
        }
    }

    fn on_reply(&mut self, expect: Expect, reply: Value) {
        if let Value::ServerError(e) = &reply {
            tracing::warn!(error = ?e, "cluster: Redis refused a command");
        }
        match expect {
            Expect::Ignore => {}
            Expect::Claim { from, key, msg, watched } => match reply {
                Value::Int(owner) if owner != i64::from(self.node) => {
                    if let Ok(owner) = u8::try_from(owner) {
                        let _ = self.notes.send(Note::Owner(key, owner));
                    }
                }
                // Ours (or Redis failed: then the room lives here, as with the link down).
                _ => {
                    if let Some(shard) = watched {
                        let _ = self.notes.send(Note::Unwatch(key, shard));
                    }
                    self.deliver(from, ShardMsg::Cluster(ClusterIn::Claimed(vec![msg])));
                }
            },
            Expect::Route { from, msg } => {
                if matches!(reply, Value::Int(owner) if owner > 0) {
                    return;
                }
                self.deliver(from, ShardMsg::Cluster(ClusterIn::Unrouted(msg)));
            }
            Expect::Heartbeat => {
                if matches!(reply, Value::Int(0)) {
                    let _ = self.notes.send(Note::Fenced);
                }
            }
            Expect::Reclaim(key) => {
                if let Value::Int(owner) = reply
                    && owner != i64::from(self.node)
                {
                    tracing::warn!(
                        room = key.room(),
                        tenant = key.tenant(),
                        owner,
                        "cluster: a room held here was claimed by another node while Redis was empty; both serve it until one empties"
                    );
                }
            }
            Expect::Janitor => {
                if let Value::Int(live) = reply {
                    self.counters.nodes.store(live.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}
