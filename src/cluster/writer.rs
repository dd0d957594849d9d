//! The bridge's writer thread: takes the shards' queue, writes commands,
//! keeps the node alive in Redis, and reconnects when the link breaks.
//!
//! It owns the room subscriptions (`watches`): a room is subscribed on
//! this node from the first join a local connection sends towards it, and
//! the `SUBSCRIBE` is written before that join, on the same connection, so
//! Redis has it in place before the owner can broadcast to the new member.
//! It is dropped when the last such membership is answered `Left` or
//! `JoinRefused` (the reader tells), or when the owner node dies.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use super::link::Link;
use super::reader::{Expect, Note, Reader, RouteUpdate};
use super::scripts::{Scripts, evalsha};
use super::wire::{self, Envelope};
use super::{BridgeSettings, Counters, unix_now_us};
use crate::ids::{RoomKey, ShardId, remote_node};
use crate::msg::cluster::GATEWAY;
use crate::msg::{ClusterIn, ClusterOut, RemoteMsg};
use crate::shard::{ShardHandle, ShardMsg};

/// Items written in one batch (one `write` to Redis) at most.
const BATCH_MAX: usize = 1024;
/// Commands whose replies the reader has not seen yet, at most; past it
/// the writer waits (and the shards' queue fills, which they count).
const IN_FLIGHT_MAX: usize = 1 << 16;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a shard's full inbox may hold a bridge answer back.
const SHARD_PATIENCE: Duration = Duration::from_secs(1);

/// Connects, loads the scripts, registers the node (number `want`, or any
/// free one with 0) and subscribes to its own channel and `P:all`.
/// Returns the link, the number and what the registration found.
pub(super) fn connect_and_register(
    settings: &BridgeSettings,
    want: u8,
    known_epoch: &str,
) -> anyhow::Result<(Link, u8, Registered)> {
    let mut link = Link::connect(&settings.url, &format!("roomcast-{}", settings.node_id))?;
    for cmd in Scripts::load_commands() {
        link.call(&cmd).context("SCRIPT LOAD")?;
    }
    let scripts = Scripts::new();
    let ttl = settings.node_ttl_ms.to_string();
    let want_text = want.to_string();
    let prefix = settings.names.prefix.as_bytes();
    let fresh_epoch = format!("{}-{}", super::unix_now_us(), std::process::id());
    let register = evalsha(
        &scripts.register,
        &[],
        &[
            prefix,
            settings.node_id.as_bytes(),
            ttl.as_bytes(),
            want_text.as_bytes(),
            known_epoch.as_bytes(),
            fresh_epoch.as_bytes(),
        ],
    );
    let (node, cleaned, epoch) = match link.call(&register)? {
        Value::Array(parts) => match parts.as_slice() {
            [Value::Int(node), Value::Int(cleaned), Value::BulkString(epoch)] => {
                (*node, *cleaned == 1, String::from_utf8_lossy(epoch).into_owned())
            }
            _ => bail!("unexpected REGISTER reply {parts:?}"),
        },
        other => bail!("unexpected REGISTER reply {other:?}"),
    };
    let node = match u8::try_from(node) {
        Ok(0) | Err(_) => bail!("all 255 node numbers are in use in this Redis (prefix {:?})", settings.names.prefix),
        Ok(node) => node,
    };
    if want != 0 && node != want {
        bail!("node number {want} was taken by another node while this one was cut off");
    }
    let mut subscribe = redis::cmd("SUBSCRIBE");
    subscribe.arg(settings.names.node_channel(node)).arg(settings.names.all_channel());
    link.writer.write_all(&subscribe.get_packed_command())?;
    link.ready()?;
    let data_lost = !known_epoch.is_empty() && epoch != known_epoch;
    Ok((link, node, Registered { cleaned, data_lost, epoch }))
}

/// What a registration found besides the number.
#[derive(Debug)]
pub(super) struct Registered {
    /// The others had taken this node for dead and cleaned it up.
    pub cleaned: bool,
    /// Redis is not the one (or no longer holds the data) it was: the
    /// rooms this node holds are claimed again.
    pub data_lost: bool,
    /// `P:epoch`, to compare at the next registration.
    pub epoch: String,
}

/// A room this node is subscribed to, with its local memberships per shard.
#[derive(Debug)]
struct Watch {
    per_shard: Vec<u32>,
    /// The node that owns it, once known (0: not yet).
    owner: u8,
}

/// The live connection: its write half and the channels to its reader.
struct Session {
    writer: super::link::Stream,
    expects: Sender<Expect>,
    routes: Sender<RouteUpdate>,
    notes: Receiver<Note>,
    reader: std::thread::JoinHandle<()>,
}

pub(super) struct Writer {
    settings: BridgeSettings,
    node: u8,
    /// `P:epoch` as of the last registration.
    epoch: String,
    queue: Receiver<ClusterOut>,
    shards: Vec<ShardHandle>,
    /// Where other nodes' announcements go (the acceptor).
    announcements: Option<crate::msg::Reply<Vec<u8>>>,
    counters: Arc<Counters>,
    scripts: Scripts,
    watches: HashMap<RoomKey, Watch>,
    /// Commands of the batch being built.
    out: Vec<u8>,
    /// Replies the batch expects, handed to the reader before the write.
    pending: Vec<Expect>,
    /// Route changes of the batch, handed to the reader before the write.
    route_changes: Vec<RouteUpdate>,
    /// What the shards sent while the link was down (`wait_offline`).
    held: Vec<ClusterOut>,
}

impl Writer {
    pub(super) fn new(
        settings: BridgeSettings,
        node: u8,
        epoch: String,
        queue: Receiver<ClusterOut>,
        shards: Vec<ShardHandle>,
        announcements: Option<crate::msg::Reply<Vec<u8>>>,
        counters: Arc<Counters>,
    ) -> Writer {
        Writer {
            settings,
            node,
            epoch,
            queue,
            shards,
            announcements,
            counters,
            scripts: Scripts::new(),
            watches: HashMap::new(),
            out: Vec::with_capacity(1 << 16),
            pending: Vec::new(),
            route_changes: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Runs until every shard has let go of the queue (shutdown); then
    /// leaves the cluster at once rather than by expiry.
    pub(super) fn run(mut self, link: Link) {
        let mut session = Some(self.begin(link));
        let mut next_beat = Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            let Some(live) = session.as_mut() else {
                match self.reconnect() {
                    Ok(link) => {
                        backoff = BACKOFF_MIN;
                        session = Some(self.begin(link));
                        for item in std::mem::take(&mut self.held) {
                            self.encode(item);
                        }
                        self.set_link(true);
                        next_beat = Instant::now();
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster: reconnect failed");
                        if !self.wait_offline(backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                continue;
            };
            let wait = next_beat.saturating_duration_since(Instant::now());
            let mut alive = true;
            crossbeam_channel::select! {
                recv(self.queue) -> item => match item {
                    Ok(item) => {
                        self.encode(item);
                        let more: Vec<ClusterOut> = self.queue.try_iter().take(BATCH_MAX).collect();
                        for item in more {
                            self.encode(item);
                        }
                    }
                    Err(_) => {
                        self.leave(live);
                        return;
                    }
                },
                recv(live.notes) -> note => match note {
                    Ok(note) => alive = self.on_note(note),
                    Err(_) => alive = false,
                },
                default(wait) => {}
            }
            for note in live.notes.try_iter().collect::<Vec<_>>() {
                alive &= self.on_note(note);
            }
            if Instant::now() >= next_beat {
                self.beat();
                next_beat = Instant::now() + self.settings.heartbeat;
            }
            if alive && let Some(live) = session.as_mut() {
                alive = self.send(live);
            }
            if !alive && let Some(dead) = session.take() {
                dead.writer.shutdown();
                let _ = dead.reader.join();
                self.set_link(false);
            }
        }
    }

    /// Starts a reader on `link` and subscribes again to every watched room.
    fn begin(&mut self, link: Link) -> Session {
        let Link { reader, parser, writer } = link;
        let (expects_tx, expects_rx) = crossbeam_channel::bounded(IN_FLIGHT_MAX);
        let (routes_tx, routes_rx) = crossbeam_channel::unbounded();
        let (notes_tx, notes_rx) = crossbeam_channel::bounded(IN_FLIGHT_MAX);
        let mut routes = HashMap::new();
        for (key, watch) in &self.watches {
            routes.insert(key.clone(), watch.per_shard.clone());
        }
        let reader = Reader::new(
            reader,
            parser,
            self.node,
            self.settings.clone(),
            self.shards.clone(),
            self.announcements.clone(),
            expects_rx,
            routes_rx,
            notes_tx,
            routes,
            Arc::clone(&self.counters),
        );
        let thread = std::thread::Builder::new().name("cluster-reader".into()).spawn(move || reader.run());
        let reader = match thread {
            Ok(thread) => thread,
            // Without a reader the link is useless: retried as a broken link.
            Err(e) => {
                tracing::error!(error = %e, "cluster: cannot start the reader thread");
                std::thread::spawn(|| {})
            }
        };
        let keys: Vec<RoomKey> = self.watches.keys().cloned().collect();
        if !keys.is_empty() {
            let mut subscribe = redis::cmd("SUBSCRIBE");
            for key in &keys {
                subscribe.arg(self.settings.names.room_channel(key));
            }
            subscribe.write_packed_command(&mut self.out);
        }
        Session { writer, expects: expects_tx, routes: routes_tx, notes: notes_rx, reader }
    }

    fn reconnect(&mut self) -> anyhow::Result<Link> {
        let (link, _, registered) = connect_and_register(&self.settings, self.node, &self.epoch)?;
        Counters::add(&self.counters.reconnects, 1);
        self.epoch = registered.epoch;
        if registered.data_lost {
            // Every claim is gone with the data: the shards claim their rooms again.
            tracing::warn!(
                node = self.node,
                "cluster: Redis lost its data (restarted empty); claiming this node's rooms again"
            );
            self.tell_shards(|| ClusterIn::Reclaim);
        }
        if registered.cleaned {
            // The others took this node for dead and dropped its members
            // from their rooms; ours in their rooms are closed here.
            Counters::add(&self.counters.fenced, 1);
            tracing::error!(
                node = self.node,
                "cluster: this node had been declared dead; closing its connections in rooms other nodes own"
            );
            self.tell_shards(|| ClusterIn::NodeDown(0));
        }
        Ok(link)
    }

    /// While the link is down: waits up to `backoff`, answering what can be
    /// answered here. Joins claim their room locally (local delivery goes
    /// on), routed messages find nobody; the rest is held, in order, and
    /// written first when the link is back (every node holds its own while
    /// Redis is down, so leaves, publishes and broadcasts of the outage
    /// still arrive, late). Past `cluster.bridge_queue_max` held items the
    /// newest are dropped and counted. Returns false when the shards are gone.
    fn wait_offline(&mut self, backoff: Duration) -> bool {
        let deadline = Instant::now() + backoff;
        loop {
            let item = match self.queue.recv_deadline(deadline) {
                Ok(item) => item,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return true,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return false,
            };
            match item {
                ClusterOut::Join { from, msg, .. } => self.answer(from, ClusterIn::Claimed(vec![msg])),
                ClusterOut::Route { from, msg, .. } => self.answer(from, ClusterIn::Unrouted(msg)),
                item if self.held.len() < self.settings.held_max => self.held.push(item),
                _ => Counters::add(&self.counters.dropped_link_down, 1),
            }
        }
    }

    fn set_link(&mut self, up: bool) {
        let was = self.counters.link_up.swap(up, Ordering::Relaxed);
        if was == up {
            return;
        }
        if up {
            tracing::info!(node_id = %self.settings.node_id, node = self.node, "cluster link up");
        } else {
            tracing::warn!(node_id = %self.settings.node_id, node = self.node, "cluster link down");
        }
        self.tell_shards(|| ClusterIn::Link(up));
    }

    fn tell_shards(&self, msg: impl Fn() -> ClusterIn) {
        for shard in &self.shards {
            let _ = shard.send_within(ShardMsg::Cluster(msg()), SHARD_PATIENCE);
        }
    }

    fn answer(&self, shard: ShardId, msg: ClusterIn) {
        if let Some(handle) = self.shards.get(usize::from(shard))
            && handle.send_within(ShardMsg::Cluster(msg), SHARD_PATIENCE).is_err()
        {
            Counters::add(&self.counters.dropped_inbox_full, 1);
        }
    }

    /// Adds one item's commands to the batch.
    fn encode(&mut self, item: ClusterOut) {
        match item {
            ClusterOut::ToShard { from, to, msgs } => {
                let Some(node) = remote_node(to) else { return };
                for msg in &msgs {
                    if let RemoteMsg::Join { peer, key, .. } = msg
                        && remote_node(peer.conn.shard).is_none()
                    {
                        self.watch(key, peer.conn.shard, node);
                    }
                }
                let to_shard = (to & 0xff) as u8;
                for chunk in chunks(msgs) {
                    let payload = self.envelope(from, to_shard, chunk);
                    self.publish(&self.settings.names.node_channel(node), &payload);
                }
            }
            ClusterOut::ToRoom { from, msg } => {
                let RemoteMsg::Fanout { key, .. } = &msg else { return };
                let channel = self.settings.names.room_channel(key);
                let payload = self.envelope(from, GATEWAY, vec![msg]);
                self.publish(&channel, &payload);
            }
            ClusterOut::Join { from, key, msg } => {
                let watched = match &msg {
                    RemoteMsg::Join { peer, .. } if remote_node(peer.conn.shard).is_none() => {
                        self.watch(&key, peer.conn.shard, 0);
                        Some(peer.conn.shard)
                    }
                    _ => None,
                };
                let mut payload = Vec::new();
                let envelope = Envelope { sent_at_us: unix_now_us(), from, to_shard: GATEWAY, msgs: vec![msg] };
                wire::encode(&envelope, self.node, &mut payload);
                let Envelope { msgs, .. } = envelope;
                let Some(msg) = msgs.into_iter().next() else { return };
                self.script_claim(&key, &payload);
                self.pending.push(Expect::Claim { from, key, msg, watched });
            }
            ClusterOut::Route { from, key, msg } => {
                let mut payload = Vec::new();
                let envelope = Envelope { sent_at_us: unix_now_us(), from, to_shard: GATEWAY, msgs: vec![msg] };
                wire::encode(&envelope, self.node, &mut payload);
                let Envelope { msgs, .. } = envelope;
                let Some(msg) = msgs.into_iter().next() else { return };
                let owner = self.settings.names.owner(&key);
                let node = self.node.to_string();
                let prefix = self.settings.names.prefix.clone();
                evalsha(&self.scripts.route, &[&owner], &[prefix.as_bytes(), node.as_bytes(), &payload])
                    .write_packed_command(&mut self.out);
                Counters::add(&self.counters.published, 1);
                self.pending.push(Expect::Route { from, msg });
            }
            ClusterOut::Reclaim(keys) => {
                let node = self.node.to_string();
                let prefix = self.settings.names.prefix.clone();
                for key in keys {
                    let owner = self.settings.names.owner(&key);
                    evalsha(&self.scripts.reclaim, &[&owner], &[prefix.as_bytes(), node.as_bytes()])
                        .write_packed_command(&mut self.out);
                    self.pending.push(Expect::Reclaim(key));
                }
            }
            ClusterOut::Announce(text) => {
                let mut payload = format!("admin {} ", self.node).into_bytes();
                payload.extend_from_slice(&text);
                let channel = self.settings.names.all_channel();
                self.publish(&channel, &payload);
            }
            ClusterOut::Release { key } => {
                let owner = self.settings.names.owner(&key);
                let node = self.node.to_string();
                let prefix = self.settings.names.prefix.clone();
                evalsha(&self.scripts.release, &[&owner], &[prefix.as_bytes(), node.as_bytes()])
                    .write_packed_command(&mut self.out);
                self.pending.push(Expect::Ignore);
            }
        }
    }

    fn script_claim(&mut self, key: &RoomKey, payload: &[u8]) {
        let owner = self.settings.names.owner(key);
        let node = self.node.to_string();
        let prefix = self.settings.names.prefix.clone();
        evalsha(&self.scripts.claim, &[&owner], &[prefix.as_bytes(), node.as_bytes(), payload])
            .write_packed_command(&mut self.out);
        Counters::add(&self.counters.published, 1);
    }

    fn envelope(&self, from: ShardId, to_shard: u8, msgs: Vec<RemoteMsg>) -> Vec<u8> {
        let mut payload = Vec::new();
        let envelope = Envelope { sent_at_us: unix_now_us(), from, to_shard, msgs };
        wire::encode(&envelope, self.node, &mut payload);
        payload
    }

    fn publish(&mut self, channel: &[u8], payload: &[u8]) {
        redis::cmd("PUBLISH").arg(channel).arg(payload).write_packed_command(&mut self.out);
        self.pending.push(Expect::Ignore);
        Counters::add(&self.counters.published, 1);
    }

    /// The liveness refresh and the dead-node scan.
    fn beat(&mut self) {
        let prefix = self.settings.names.prefix.clone();
        let node = self.node.to_string();
        let ttl = self.settings.node_ttl_ms.to_string();
        let id = self.settings.node_id.clone();
        evalsha(&self.scripts.heartbeat, &[], &[prefix.as_bytes(), node.as_bytes(), id.as_bytes(), ttl.as_bytes()])
            .write_packed_command(&mut self.out);
        self.pending.push(Expect::Heartbeat);
        evalsha(&self.scripts.janitor, &[], &[prefix.as_bytes()]).write_packed_command(&mut self.out);
        self.pending.push(Expect::Janitor);
    }

    /// One more local membership of `key` on `shard` (subscribing first).
    fn watch(&mut self, key: &RoomKey, shard: ShardId, owner: u8) {
        let shards = self.settings.shards;
        let (entry, new) = match self.watches.get_mut(key) {
            Some(entry) => (entry, false),
            None => {
                let entry = Watch { per_shard: vec![0; shards], owner: 0 };
                (self.watches.entry(key.clone()).or_insert(entry), true)
            }
        };
        if owner != 0 {
            entry.owner = owner;
        }
        let Some(count) = entry.per_shard.get_mut(usize::from(shard)) else { return };
        *count += 1;
        if *count == 1 {
            self.route_changes.push(RouteUpdate::Add(key.clone(), shard));
        }
        if new {
            redis::cmd("SUBSCRIBE").arg(self.settings.names.room_channel(key)).write_packed_command(&mut self.out);
            self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One local membership of `key` on `shard` fewer (unsubscribing after the last).
    fn unwatch(&mut self, key: &RoomKey, shard: ShardId) {
        let Some(entry) = self.watches.get_mut(key) else { return };
        let Some(count) = entry.per_shard.get_mut(usize::from(shard)) else { return };
        if *count == 0 {
            return;
        }
        *count -= 1;
        if *count == 0 {
            self.route_changes.push(RouteUpdate::Remove(key.clone(), shard));
        }
        if entry.per_shard.iter().all(|&n| n == 0) {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: &RoomKey) {
        if self.watches.remove(key).is_some() {
            redis::cmd("UNSUBSCRIBE").arg(self.settings.names.room_channel(key)).write_packed_command(&mut self.out);
            self.route_changes.push(RouteUpdate::Drop(key.clone()));
            self.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// What the reader learnt; false when the link is gone.
    fn on_note(&mut self, note: Note) -> bool {
        match note {
            Note::Unwatch(key, shard) => self.unwatch(&key, shard),
            Note::Owner(key, node) => {
                if let Some(watch) = self.watches.get_mut(&key) {
                    watch.owner = node;
                }
            }
            Note::NodeDown(node) => {
                let orphaned: Vec<RoomKey> =
                    self.watches.iter().filter(|(_, w)| w.owner == node).map(|(key, _)| key.clone()).collect();
                for key in orphaned {
                    self.forget(&key);
                }
            }
            Note::Fenced => {
                // Registered again by the reconnect, which closes what must be closed.
                tracing::warn!(node = self.node, "cluster: heartbeat refused (declared dead); reconnecting");
                return false;
            }
            Note::Died => return false,
        }
        true
    }

    /// Writes the batch: route changes and expectations reach the reader
    /// first, so it can place every reply and every broadcast.
    fn send(&mut self, live: &mut Session) -> bool {
        if self.out.is_empty() {
            return true;
        }
        for change in self.route_changes.drain(..) {
            if live.routes.send(change).is_err() {
                return false;
            }
        }
        for expect in self.pending.drain(..) {
            if live.expects.send(expect).is_err() {
                return false;
            }
        }
        let written = live.writer.write_all(&self.out);
        self.out.clear();
        written.is_ok()
    }

    /// Shutdown: the liveness key goes now, and the janitor runs, so the
    /// other nodes drop this node's members at once instead of after the TTL.
    fn leave(&mut self, live: &mut Session) {
        let alive = format!("{}:node:{}", self.settings.names.prefix, self.node);
        redis::cmd("DEL").arg(alive).write_packed_command(&mut self.out);
        self.pending.push(Expect::Ignore);
        let prefix = self.settings.names.prefix.clone();
        evalsha(&self.scripts.janitor, &[], &[prefix.as_bytes()]).write_packed_command(&mut self.out);
        self.pending.push(Expect::Ignore);
        self.send(live);
        tracing::info!(node = self.node, "cluster: left");
    }
}

/// Splits a batch so each envelope stays within what `wire::decode` takes.
fn chunks(msgs: Vec<RemoteMsg>) -> Vec<Vec<RemoteMsg>> {
    if msgs.len() <= wire::MSGS_MAX {
        return vec![msgs];
    }
    let mut out = Vec::new();
    let mut rest = msgs.into_iter().peekable();
    while rest.peek().is_some() {
        out.push(rest.by_ref().take(wire::MSGS_MAX).collect());
    }
    out
}
