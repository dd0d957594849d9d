//! A shard: one thread, one `mio::Poll` loop, owning a hash-partitioned set
//! of rooms and every connection whose home room it owns. Nothing here takes
//! a lock; the outside world reaches a shard through its bounded inbox and
//! its one `Waker`.
//!
//! Ordering within an iteration (see `run`): take in handoffs, read and
//! decide, fire timers, then write once per connection, then free what
//! closed. Frames are queued as shared references while deciding and written
//! in the flush phase with one vectored write per connection, so a socket
//! that receives 30 broadcasts in one iteration costs one syscall.
//!
//! Rooms owned by other shards are reached by message (`remote.rs`): the
//! owner keeps one count per shard with members and sends each broadcast once
//! per such shard, batched once per iteration. Client requests are turned
//! into room calls or remote messages in `requests.rs`.
//!
//! Here: the types, the loop (`Shard::run`) and its inbox and event
//! phases, and the limit and log helpers. The phases' work lives in one
//! file per role: `admit.rs` (taking in handoffs), `read.rs` (reading and
//! frame handling), `write.rs` (queuing, room outputs, fanout, flushing),
//! `timers.rs` (heartbeats and close deadlines), `closing.rs` (closes,
//! freeing connections, draining). Beside them: `conn.rs` (a connection
//! and its queues), `conn_log.rs` (the rate-limited connection log),
//! `admin.rs` (admin API requests), `extension.rs` (custom handlers and
//! hooks), `refresh.rs` (token refresh through the acceptor) and
//! `store_link.rs` (events to the store thread and its answers).

mod admin;
mod admit;
mod closing;
mod cluster_link;
pub mod conn;
mod conn_log;
pub mod extension;
mod read;
mod refresh;
mod remote;
mod requests;
mod store_link;
mod timers;
mod write;

pub use admin::{AdminQuery, AdminRequest, SendTarget};
pub use extension::Extensions;
// Answer types live in `msg` (the store answers with them too); named here as well for the API side.
pub use crate::msg::RemoteMsg;
pub use crate::msg::{AdminAnswer, AdminReply, ConnInfo};
pub use refresh::{RefreshAnswer, RefreshLink, RefreshRequest};

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use crate::auth::Identity;
use crate::config::Limits;
use crate::config::WebhookEventKind;
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::metrics::{EpisodeLog, LimitKind, ShardMetrics};
use crate::msg::{Reply, StoreEvent, StoreReply};
use crate::protocol::{RequestDecoder, Since};
use crate::refusal::Refusal;
use crate::registry::RoomPolicy;
use crate::room::{RoomLimits, Rooms};
use crate::timer::{TimerKind, TimerWheel};
use crate::webhooks::WebhookDetail;
use crate::ws::frame::{self, Frame, FrameBuilder, Opcode};
use conn::Connection;

/// The waker's token; connection tokens are slab slots, far below it.
const WAKER: Token = Token(usize::MAX);
/// How often a shard sends its counters out.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// Admin requests queued to one shard; the acceptor answers 503 past it.
pub const ADMIN_INBOX_MAX: usize = 64;

/// Messages a shard receives.
#[derive(Debug)]
pub enum ShardMsg {
    /// An upgraded connection; the shard writes `response` (the 101) first.
    Handoff(Box<Handoff>),
    /// A batch from another shard, in the order it was sent.
    Remote(ShardId, Vec<RemoteMsg>),
    /// The acceptor's verdict on a connection's `refresh` (`refresh.rs`).
    Refreshed(Box<RefreshAnswer>),
    /// From the cluster bridge (`cluster_link.rs`).
    Cluster(crate::msg::ClusterIn),
}

#[derive(Debug)]
pub struct Handoff {
    pub stream: TcpStream,
    pub response: Vec<u8>,
    /// Bytes the client sent after its request head.
    pub leftover: Vec<u8>,
    pub kind: HandoffKind,
    /// The peer's address as accepted (for the session audit row).
    pub peer: Option<std::net::SocketAddr>,
}

#[derive(Debug)]
pub enum HandoffKind {
    /// `since`: the client asked to recover the URL room's messages (`?since=&epoch=`).
    Room {
        identity: Box<Identity>,
        key: RoomKey,
        since: Option<Box<Since>>,
    },
    Echo,
}

/// How other threads reach a shard: a bounded inbox plus its waker.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    inbox: Sender<ShardMsg>,
    /// Drain orders travel apart from the inbox, so a full inbox cannot lose one.
    drain: Sender<Instant>,
    /// Admin API requests travel apart from the inbox too, so handoffs and
    /// admin traffic cannot crowd each other out.
    admin: Sender<AdminRequest>,
    /// Answers of the store thread (acks after commit, loaded histories).
    store_replies: Sender<Vec<StoreReply>>,
    waker: Arc<Waker>,
}

impl ShardHandle {
    /// Queues `msg`, waiting up to `patience` for room in the inbox, and
    /// wakes the shard; for the cluster bridge, which must not drop what
    /// Redis gave it while a shard is only briefly busy.
    pub fn send_within(&self, msg: ShardMsg, patience: Duration) -> Result<(), ShardMsg> {
        let sent = self.inbox.send_timeout(msg, patience).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(msg)
            | crossbeam_channel::SendTimeoutError::Disconnected(msg) => msg,
        });
        if sent.is_ok() {
            self.wake();
        }
        sent
    }

    /// Queues `msg` without blocking; the caller wakes the shard once per batch.
    pub fn try_send(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        self.inbox.try_send(msg).map_err(|e| match e {
            TrySendError::Full(msg) | TrySendError::Disconnected(msg) => msg,
        })
    }

    /// Tells the shard to close every connection with 1001 and stop by `deadline`.
    pub fn drain(&self, deadline: Instant) {
        // Capacity 1: a second order while one is pending changes nothing.
        let _ = self.drain.try_send(deadline);
        self.wake();
    }

    /// Queues an admin request without blocking; the caller wakes the shard.
    pub fn try_admin(&self, req: AdminRequest) -> Result<(), AdminRequest> {
        self.admin.try_send(req).map_err(|e| match e {
            TrySendError::Full(req) | TrySendError::Disconnected(req) => req,
        })
    }

    /// The handle the store thread answers this shard through (batches of
    /// acks and histories, one wake per batch).
    pub fn store_reply(&self) -> Reply<Vec<StoreReply>> {
        Reply::new(self.store_replies.clone(), Arc::clone(&self.waker))
    }

    /// Messages waiting in the shard's inbox (handoffs and cross-shard batches).
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake shard");
        }
    }
}

/// Read-only settings every shard shares.
#[derive(Debug)]
pub struct ShardSettings {
    pub limits: Limits,
    pub rooms: crate::config::RoomsConfig,
    /// How many shards there are (room ownership is `hash(room) % shards`).
    pub shards: usize,
    /// Seconds past a token's `exp` it is still honoured (`auth.leeway_s`).
    pub token_leeway_s: u64,
    /// Where `refresh` tokens go to be verified (the acceptor); `None` in
    /// dev mode (`auth.mode = none`): `refresh` is then refused.
    pub refresh: Option<RefreshLink>,
    pub metrics_out: Sender<(ShardId, ShardMetrics)>,
    /// The store thread's queue; `None` runs without persistence.
    pub store: Option<Sender<StoreEvent>>,
    /// This process's boot number (the store's, else the start time in ms),
    /// the first part of every room epoch.
    pub boot: u64,
    /// `log.connection_lines_per_s`.
    pub connection_log_lines_per_s: u32,
    /// Custom message handlers and connection hooks (`extension.rs`).
    pub extensions: Extensions,
    /// Where webhook events go (`[[webhooks]]`); `None`: nowhere.
    pub webhooks: Option<crate::webhooks::WebhookHandle>,
    /// The cluster bridge's queue; `None` outside a cluster.
    pub cluster: Option<Sender<crate::msg::ClusterOut>>,
}

pub struct Shard {
    id: ShardId,
    poll: Poll,
    inbox: Receiver<ShardMsg>,
    drain: Receiver<Instant>,
    admin: Receiver<AdminRequest>,
    store_replies: Receiver<Vec<StoreReply>>,
    /// The one read buffer of the shard, lent to each connection as it reads.
    read_buf: Vec<u8>,
    core: ShardCore,
}

/// Everything frame handling touches; separate from `read_buf` so a buffer
/// being decoded and the state it changes can be borrowed at once.
struct ShardCore {
    id: ShardId,
    settings: Arc<ShardSettings>,
    conns: Slab<Connection>,
    /// Generation given to the next connection.
    generation: u32,
    rooms: Rooms,
    timers: TimerWheel,
    /// Taken out while a request is handled (it borrows the frame's strings).
    decoder: Option<Box<RequestDecoder>>,
    /// Cross-shard state: the other shards, messages for them, and this
    /// shard's members of rooms owned elsewhere.
    remote: remote::RemoteState,
    frames: FrameBuilder,
    /// Slots with bytes to write this iteration.
    dirty: Vec<usize>,
    /// Slots whose read budget ran out while bytes remained.
    read_again: Vec<usize>,
    /// Slots to free at the end of the iteration.
    doomed: Vec<usize>,
    fired: Vec<(ConnId, TimerKind)>,
    ping_frame: Frame,
    origin: Instant,
    now: Instant,
    now_unix_s: u64,
    now_unix_ms: u64,
    draining: Option<Instant>,
    /// The store queue refused an event and no event was taken since
    /// (logged once per such episode).
    store_refusing: bool,
    /// Limits hit by no one local connection, logged once per episode.
    episodes: EpisodeLog,
    metrics: ShardMetrics,
    metrics_sent_at: Instant,
    conn_log: conn_log::ConnLog,
    /// Which shard the next connection to a big room of this shard's goes
    /// to (`admit.rs`, `rooms.spread_from_members`), round robin.
    spread_turn: usize,
}

impl Shard {
    /// Builds shard `id` and the handle others use to reach it.
    pub fn new(id: ShardId, settings: Arc<ShardSettings>) -> io::Result<(Shard, ShardHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded(settings.limits.shard_inbox_max);
        let (drain_tx, drain_rx) = crossbeam_channel::bounded(1);
        let (admin_tx, admin_rx) = crossbeam_channel::bounded(ADMIN_INBOX_MAX);
        let (store_tx, store_rx) = crossbeam_channel::bounded(crate::msg::REPLY_CHANNEL_MAX);
        let limits = &settings.limits;
        let now = Instant::now();
        let connections_max = limits.connections_per_shard_max as usize;
        let rooms = Rooms::new(
            id,
            settings.shards,
            RoomLimits {
                members_max: limits.room_members_max,
                rooms_max: limits.rooms_per_shard_max,
                history_max: settings.rooms.history_max,
                welcome_history_max: settings.rooms.welcome_history_max,
                chat_text_chars_max: settings.rooms.chat_text_chars_max,
                screenshare_max: settings.rooms.screenshare_max,
                lobby_default: settings.rooms.lobby,
                recovery_messages_max: settings.rooms.recovery_messages_max,
                recovery_age_ms: settings.rooms.recovery_age_ms,
                require_registration: settings.rooms.require_registration,
                welcome_members_max: limits.welcome_members_max,
                presence_members_max: limits.presence_members_max,
            },
        )
        .with_store(settings.boot, settings.store.is_some())
        .with_chat_filter(settings.rooms.history_filter_kib)
        .reporting_chats(settings.webhooks.as_ref().is_some_and(|w| w.wants(WebhookEventKind::Chat)))
        .reporting_closed(settings.cluster.is_some());
        let core = ShardCore {
            id,
            conns: Slab::with_capacity(connections_max.min(1 << 16)),
            generation: 0,
            rooms,
            // A live connection has at most a heartbeat and a close deadline
            // queued; a closed one leaves at most those behind, for at most a
            // ping interval. Three per connection leaves room for churn.
            timers: TimerWheel::new(now, connections_max.saturating_mul(3)),
            decoder: Some(Box::default()),
            remote: remote::RemoteState::new(settings.shards),
            frames: FrameBuilder::default(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            doomed: Vec::new(),
            fired: Vec::new(),
            ping_frame: frame::encode_frame(Opcode::Ping, b""),
            origin: now,
            now,
            now_unix_s: unix_now_ms() / 1000,
            now_unix_ms: unix_now_ms(),
            draining: None,
            store_refusing: false,
            episodes: EpisodeLog::default(),
            metrics: ShardMetrics::default(),
            metrics_sent_at: now,
            conn_log: conn_log::ConnLog::new(settings.connection_log_lines_per_s),
            spread_turn: 0,
            settings,
        };
        let read_buf = vec![0; core.settings.limits.read_bytes_per_event_max.clamp(4096, 1 << 20)];
        let shard =
            Shard { id, poll, inbox: rx, drain: drain_rx, admin: admin_rx, store_replies: store_rx, read_buf, core };
        let handle = ShardHandle { inbox: tx, drain: drain_tx, admin: admin_tx, store_replies: store_tx, waker };
        Ok((shard, handle))
    }

    /// Gives the shard the handles of every shard (itself included), so it can
    /// reach the owners of rooms its connections join. Call before `run`.
    pub fn connect_peers(&mut self, peers: Vec<ShardHandle>) {
        self.core.remote.peers = peers;
        self.core.remote.own = self.id;
    }

    /// The registry settings of the rooms this shard owns, before `run`.
    pub fn load_registry(&mut self, policies: Vec<(RoomKey, RoomPolicy)>) {
        self.core.rooms.load_policies(policies);
    }

    /// The rooms of this shard the store holds chat of, before `run`.
    pub fn load_stored_chat<'a>(&mut self, keys: impl IntoIterator<Item = &'a RoomKey>) {
        self.core.rooms.remember_stored_chat(keys);
    }

    /// Runs until a drain completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.core.settings.limits.poll_events_max);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.core.now = Instant::now();
            let published_before = self.core.metrics.messages_published;
            self.core.now_unix_ms = unix_now_ms();
            self.core.now_unix_s = self.core.now_unix_ms / 1000;

            self.drain_inbox();
            let mut event_count = 0;
            for event in events.iter() {
                event_count += 1;
                self.on_event(event);
            }
            if event_count >= self.core.settings.limits.poll_events_max {
                self.core.note_shard_limit(LimitKind::PollEventsFull);
            }
            self.retry_budgeted_reads();
            self.core.fire_due_timers();
            self.core.flush_dirty();
            self.core.flush_outbox();
            self.core.record_iteration_time(published_before);
            self.core.reap_doomed(self.poll.registry());
            self.core.end_iteration();
            if self.core.drain_finished() {
                tracing::info!(shard = self.id, left = self.core.conns.len(), "shard drained");
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.core.read_again.is_empty() || !self.core.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        if self.core.remote.has_backlog() {
            // Another shard's inbox was full: retry soon rather than sleep.
            return Some(Duration::from_millis(1));
        }
        let metrics_due = self.core.metrics_sent_at + METRICS_INTERVAL;
        let next = self.core.timers.next_deadline().map_or(metrics_due, |t| t.min(metrics_due));
        let next = self.core.draining.map_or(next, |d| d.min(next));
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn drain_inbox(&mut self) {
        if let Ok(deadline) = self.drain.try_recv() {
            self.core.start_drain(deadline);
        }
        // Bounded by the channel's capacity: everything queued before this
        // point, and no more than that, is taken this iteration.
        let waiting = self.inbox.len();
        self.core.metrics.inbox_depth.record(waiting as u64);
        for _ in 0..waiting {
            match self.inbox.try_recv() {
                Ok(ShardMsg::Handoff(handoff)) => self.admit(*handoff),
                Ok(ShardMsg::Remote(from, batch)) => {
                    self.core.metrics.remote_received += batch.len() as u64;
                    for msg in batch {
                        self.core.on_remote(from, msg);
                    }
                }
                Ok(ShardMsg::Refreshed(answer)) => self.core.on_refreshed(*answer),
                Ok(ShardMsg::Cluster(msg)) => self.core.on_cluster(msg),
                Err(_) => break,
            }
        }
        for _ in 0..self.admin.len() {
            match self.admin.try_recv() {
                Ok(req) => self.core.on_admin(req),
                Err(_) => break,
            }
        }
        for _ in 0..self.store_replies.len() {
            match self.store_replies.try_recv() {
                Ok(batch) => self.core.on_store_replies(batch),
                Err(_) => break,
            }
        }
    }

    fn on_event(&mut self, event: &mio::event::Event) {
        let slot = event.token().0;
        if event.token() == WAKER || !self.core.conns.contains(slot) {
            return;
        }
        if event.is_writable() {
            self.core.mark_dirty(slot);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // After the peer's FIN no new edge will come: read on to the EOF.
            self.read_from(slot, event.is_read_closed() || event.is_error());
        }
    }

    fn retry_budgeted_reads(&mut self) {
        let again = std::mem::take(&mut self.core.read_again);
        for slot in again {
            self.read_from(slot, false);
        }
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl ShardCore {
    fn now_ms(&self) -> u64 {
        self.now.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Wall-clock milliseconds, as read at the top of this iteration.
    fn now_unix_ms(&self) -> u64 {
        self.now_unix_ms
    }

    fn is_live(&self, id: ConnId) -> bool {
        self.conns.get(id.slot as usize).is_some_and(|c| c.id == id && !c.doomed)
    }

    /// Counts a limit hit that belongs to no local connection, logged once per episode.
    fn note_shard_limit(&mut self, limit: LimitKind) {
        self.metrics.hit(limit);
        if self.episodes.starts_episode(limit) {
            let total = self.metrics.limit_hits[limit as usize];
            tracing::warn!(shard = self.id, limit = limit.name(), total, "limit hit");
        }
    }

    /// Counts a limit hit of connection `id`, on this shard or another:
    /// logged once per connection when it is here, else once per episode.
    fn note_limit_of(&mut self, id: ConnId, limit: LimitKind) {
        if self.is_live(id) {
            self.note_limit(id.slot as usize, limit);
        } else {
            self.note_shard_limit(limit);
        }
    }

    /// Counts the limit behind a refused request or join (`Refusal::limit`),
    /// for connection `id`. Registry access decisions are not limits.
    fn note_refusal(&mut self, id: ConnId, refusal: Refusal) {
        if let Some(limit) = refusal.limit() {
            self.note_limit_of(id, LimitKind::from(limit));
        }
    }

    /// Counts a limit hit and logs it once per connection.
    fn note_limit(&mut self, slot: usize, limit: LimitKind) {
        self.metrics.hit(limit);
        if let Some(conn) = self.conns.get_mut(slot)
            && conn.limits_logged & limit.bit() == 0
        {
            conn.limits_logged |= limit.bit();
            tracing::info!(conn = %conn.id, limit = limit.name(), "limit hit");
        }
    }

    /// The info line of a room connection opening (`closed` = `None`: the
    /// connection is in `slot`) or being freed (`closed`: the connection,
    /// already out of the slab); rate-limited per shard (`conn_log.rs`).
    fn log_connection(&mut self, slot: usize, peer: Option<std::net::SocketAddr>, closed: Option<&Connection>) {
        match closed {
            None => {
                let Some(conn) = self.conns.get(slot) else { return };
                self.webhook_connection(conn, WebhookDetail::Connect { peer });
                self.conn_log.opened(conn, peer);
            }
            Some(conn) => {
                // No Close frame was exchanged: 1006, as in the session audit.
                let close_code = conn.close_code.unwrap_or(crate::msg::CLOSE_ABNORMAL);
                let close_reason = conn_log::close_reason(close_code).into();
                self.webhook_connection(conn, WebhookDetail::Disconnect { close_code, close_reason });
                self.conn_log.closed(conn, close_code, self.now_ms());
                self.hook_disconnect(conn, close_code);
            }
        }
        self.metrics.log_lines_suppressed = self.conn_log.suppressed_total;
    }

    /// Records the iteration's busy time, and for an iteration that
    /// published, how long until all it queued was written. This is the
    /// iteration's second clock read; it only feeds metrics.
    fn record_iteration_time(&mut self, published_before: u64) {
        let busy_us = Instant::now().saturating_duration_since(self.now).as_micros() as u64;
        self.metrics.loop_us.record(busy_us);
        if self.metrics.messages_published != published_before {
            self.metrics.publish_flush_us.record(busy_us);
        }
    }

    fn end_iteration(&mut self) {
        self.metrics.loop_iterations += 1;
        self.check_queued_frames();
        if self.now.saturating_duration_since(self.metrics_sent_at) >= METRICS_INTERVAL {
            self.metrics_sent_at = self.now;
            self.metrics.connections = self.conns.len() as u64;
            self.metrics.rooms = self.rooms.len() as u64;
            self.metrics.remote_members = self.rooms.remote_members();
            let recovery = self.rooms.recovery_counts();
            (self.metrics.recovery_dropped, self.metrics.recovery_refused) = (recovery.dropped, recovery.refused);
            self.metrics.history_loads_skipped = self.rooms.history_loads_skipped();
            // A full channel only means the reader is behind; the next snapshot replaces this one.
            let _ = self.settings.metrics_out.try_send((self.id, self.metrics.clone()));
            self.episodes.end_interval();
            self.conn_log.end_second(self.id);
        }
    }
}
