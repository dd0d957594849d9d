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

mod admin;
pub mod conn;
mod conn_log;
pub mod extension;
mod refresh;
mod remote;
mod requests;
mod store_link;

pub use admin::{AdminQuery, AdminRequest, SendTarget};
pub use extension::Extensions;
// Answer types live in `msg` (the store answers with them too); named here as well for the API side.
pub use crate::msg::{AdminAnswer, AdminReply, ConnInfo};
pub use refresh::{RefreshAnswer, RefreshLink, RefreshRequest};
pub use remote::RemoteMsg;

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::auth::Identity;
use crate::config::Limits;
use crate::config::WebhookEventKind;
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::metrics::{EpisodeLog, LimitKind, ShardMetrics};
use crate::msg::{Reply, StoreEvent, StoreReply};
use crate::protocol::{self, RequestDecoder, Since};
use crate::refusal::Refusal;
use crate::registry::RoomPolicy;
use crate::room::{Output, Peer, RoomLimits, Rooms};
use crate::timer::{TimerKind, TimerWheel};
use crate::webhooks::WebhookDetail;
use crate::ws::CloseCode;
use crate::ws::frame::{self, Event, Flow, Frame, FrameBuilder, Opcode};
use conn::{
    ConnState, Connection, FlushOutcome, Grants, Member, OutboundQueue, Place, QueueBounds, RateBucket, Role,
    SlowConsumer,
};

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
        .reporting_chats(settings.webhooks.as_ref().is_some_and(|w| w.wants(WebhookEventKind::Chat)));
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
    }

    /// The registry settings of the rooms this shard owns, before `run`.
    pub fn load_registry(&mut self, policies: Vec<(RoomKey, RoomPolicy)>) {
        self.core.rooms.load_policies(policies);
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
        if !self.core.read_again.is_empty() {
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

    /// Takes a connection in from the acceptor: registers it, queues the 101
    /// response, joins its room and processes bytes that came with the request.
    fn admit(&mut self, handoff: Handoff) {
        let Handoff { mut stream, response, leftover, kind, peer: peer_addr } = handoff;
        let core = &mut self.core;
        if core.draining.is_some() {
            core.note_shard_limit(LimitKind::Draining);
            refuse_handoff(&mut stream, Refusal::Draining);
            return;
        }
        if core.conns.len() >= core.settings.limits.connections_per_shard_max as usize {
            core.note_shard_limit(LimitKind::ShardFull);
            refuse_handoff(&mut stream, Refusal::ServerFull);
            return;
        }
        let slot = core.conns.vacant_key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot register handed-off connection");
            return;
        }
        core.generation = core.generation.wrapping_add(1);
        let id = ConnId { shard: self.id, slot: slot as u32, generation: core.generation };
        if let HandoffKind::Room { identity, key, .. } = &kind
            && let Err(refused) = core.hook_connect(id, identity, key)
        {
            // The 101 is not written yet: the client gets the hook's HTTP status.
            let _ = self.poll.registry().deregister(&mut stream);
            let response = crate::http::error_response(refused.status, &refused.code, &refused.message, "");
            use std::io::Write;
            let _ = stream.write_all(&response);
            return;
        }
        let Arrival { mut role, home, expires_at_s } = arrival(id, kind, core.now_ms());
        let home = home.map(|(key, since)| (core.rooms.shared_key(key), since));
        if let (Role::Member(member), Some((key, _))) = (&mut role, &home) {
            member.home = Some(key.clone());
        }
        let mut outbound = OutboundQueue::default();
        outbound.push_unbounded(Arc::from(response));
        let rate = RateBucket::full(core.settings.limits.rate_burst, core.now_ms());
        let control_rate = RateBucket::full(core.settings.limits.control_frames_per_s, core.now_ms());
        core.conns.insert(Connection {
            stream,
            id,
            state: ConnState::Open,
            role,
            expires_at_s,
            last_rx_ms: core.now_ms(),
            inbound: None,
            outbound,
            rate,
            control_rate,
            rate_strikes: 0,
            limits_logged: 0,
            dirty: false,
            doomed: false,
            close_code: None,
            over_soft_since_ms: 0,
        });
        core.metrics.connections_opened += 1;
        let home_key = home.as_ref().map(|(key, _)| key);
        core.audit_open(slot, home_key, peer_addr);
        core.log_connection(slot, home_key, peer_addr, None);
        core.mark_dirty(slot);
        let first_check = core.next_heartbeat(core.now, expires_at_s);
        core.schedule(id, first_check, TimerKind::Heartbeat);
        if let Some((key, since)) = home {
            core.join_initial_rooms(slot, key, since.as_deref());
        }
        if !leftover.is_empty() {
            let mut bytes = leftover;
            core.consume_bytes(slot, &mut bytes);
        }
    }

    /// Reads what the socket has, up to the per-event budget, decoding as it
    /// goes. `to_eof`: keep reading after a short read (the peer has closed).
    fn read_from(&mut self, slot: usize, to_eof: bool) {
        let budget = self.core.settings.limits.read_bytes_per_event_max;
        let mut taken = 0;
        let now_ms = self.core.now_ms();
        loop {
            let Some(conn) = self.core.conns.get_mut(slot) else { return };
            if conn.doomed {
                return;
            }
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    self.core.drop_conn(slot);
                    return;
                }
                Ok(n) => {
                    conn.last_rx_ms = now_ms;
                    self.core.metrics.bytes_in += n as u64;
                    taken += n;
                    self.core.consume_bytes(slot, &mut self.read_buf[..n]);
                    if taken >= budget {
                        self.core.metrics.hit(LimitKind::ReadBudget);
                        self.core.read_again.push(slot);
                        return;
                    }
                    // A short read means the socket was drained; new bytes
                    // raise a new edge, so skip the read that would only
                    // say WouldBlock (one syscall per readable event).
                    if n < self.read_buf.len() && !to_eof {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.core.drop_conn(slot);
                    return;
                }
            }
        }
    }
}

/// What a handoff makes of a new connection.
struct Arrival {
    role: Role,
    /// The URL room of a room connection, with the point to recover from (`?since=`).
    home: Option<(RoomKey, Option<Box<Since>>)>,
    /// Unix seconds at which the token runs out (`u64::MAX` without a token).
    expires_at_s: u64,
}

/// The role, home room and expiry of connection `id`, handed off as `kind`
/// at `now_ms` (ms since the shard started).
fn arrival(id: ConnId, kind: HandoffKind, now_ms: u64) -> Arrival {
    match kind {
        HandoffKind::Room { identity, key, since } => {
            let exact = identity.has_exact_room_claim();
            let peer = Peer::with_claims(id, &identity.user, identity.name.as_deref(), identity.host, exact);
            let expires_at_s = identity.expires_at_s;
            let member = Member {
                rooms: Vec::with_capacity(2 + identity.groups.len()),
                grants: Grants::from_identity(*identity),
                peer,
                joins: 0,
                // Wrapping, as `over_soft_since_ms`: 4 bytes, not 8.
                opened_ms: now_ms as u32,
                // Set once the room table has shared the key.
                home: None,
            };
            Arrival { role: Role::Member(Box::new(member)), home: Some((key, since)), expires_at_s }
        }
        HandoffKind::Echo => Arrival { role: Role::Echo, home: None, expires_at_s: u64::MAX },
    }
}

/// Answers a handoff the shard cannot take: the 101 has not been written yet,
/// so the client still gets a plain HTTP 503. The socket is fresh, so this
/// one small write fits in its buffer; if not, the client sees a reset.
fn refuse_handoff(stream: &mut TcpStream, refusal: Refusal) {
    use std::io::Write;
    let response = crate::http::error_response(refusal.http_status(), refusal.code(), refusal.message(), "");
    // One write: a client may read the head and stop before a second one.
    let _ = stream.write_all(&response);
}

/// Queues a broadcast frame for one member: the hot loop of every fanout.
/// `Err(slot)` names a slow consumer for the caller to close once its walk
/// is over. Connections that are gone or closing are skipped.
fn enqueue(
    conns: &mut Slab<Connection>,
    dirty: &mut Vec<usize>,
    metrics: &mut ShardMetrics,
    member: ConnId,
    frame: &Frame,
    bounds: QueueBounds,
) -> Result<(), usize> {
    let slot = member.slot as usize;
    let Some(conn) = conns.get_mut(slot) else { return Ok(()) };
    if conn.id != member || conn.doomed || conn.state != ConnState::Open {
        return Ok(());
    }
    conn.push_bounded(Arc::clone(frame), bounds).map_err(|SlowConsumer| slot)?;
    metrics.deliveries += 1;
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(slot);
    }
    Ok(())
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

    fn ping_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.settings.limits.ping_interval_ms))
    }

    /// The `Instant` at which the wall clock reads `unix_s`.
    fn instant_of_unix(&self, unix_s: u64) -> Instant {
        // Capped at a year ahead: `u64::MAX` (no expiry) must not overflow an Instant.
        const YEAR_S: u64 = 365 * 24 * 3600;
        self.now + Duration::from_secs(unix_s.saturating_sub(self.now_unix_s).min(YEAR_S))
    }

    fn schedule(&mut self, conn: ConnId, at: Instant, kind: TimerKind) {
        if self.timers.schedule(at, conn, kind).is_ok() {
            return;
        }
        // Only when stale entries crowd the wheel; the connection must not
        // live on without its deadline. Counted once per connection.
        let slot = conn.slot as usize;
        match kind {
            // begin_close counts it, and then asks for a close deadline.
            TimerKind::Heartbeat => self.begin_close(slot, CloseCode::INTERNAL, Some(LimitKind::TimerFull)),
            TimerKind::CloseDeadline => {
                let counted = self.conns.get(slot).is_some_and(|c| c.limits_logged & LimitKind::TimerFull.bit() != 0);
                if !counted {
                    self.note_limit(slot, LimitKind::TimerFull);
                }
                // Without a deadline the peer could hold the socket forever: free it now.
                self.drop_conn(slot);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Decodes frames from `bytes` (newly read) after any remainder of the
    /// previous read, and keeps what is left of an incomplete frame.
    fn consume_bytes(&mut self, slot: usize, bytes: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.state.shuts_when_written() {
            // Nothing the peer sends matters any more (after a protocol
            // error the bytes may not even be frames): read and dropped, so
            // the socket closes without unread input.
            return;
        }
        let message_max = match conn.role {
            Role::Echo => self.settings.limits.echo_message_bytes_max,
            Role::Member(_) => self.settings.limits.message_inbound_bytes_max as usize,
        };
        let mut parked = conn.inbound.take();
        let mut fragments = parked.as_mut().and_then(|inbound| inbound.fragments.take());
        let pending = parked.as_mut().map(|inbound| std::mem::take(&mut inbound.pending)).unwrap_or_default();
        let (result, rest) = if pending.is_empty() {
            let result =
                frame::decode(bytes, &mut fragments, message_max, &mut |event| self.on_frame_event(slot, event));
            let rest = result.map(|consumed| bytes[consumed..].to_vec()).unwrap_or_default();
            (result, rest)
        } else {
            let mut joined = pending;
            joined.extend_from_slice(bytes);
            let result =
                frame::decode(&mut joined, &mut fragments, message_max, &mut |event| self.on_frame_event(slot, event));
            joined.drain(..*result.as_ref().unwrap_or(&joined.len()));
            (result, joined)
        };
        let Some(conn) = self.conns.get_mut(slot) else { return };
        // Idle connections hold no buffers: the box goes when nothing is left,
        // and when nothing more will be decoded.
        if (!rest.is_empty() || fragments.is_some()) && !conn.state.shuts_when_written() {
            let mut inbound = parked.unwrap_or_default();
            inbound.pending = rest;
            inbound.fragments = fragments;
            conn.inbound = Some(inbound);
        }
        if let Err(error) = result {
            let limit =
                if error == frame::FrameError::TooBig { LimitKind::MessageTooBig } else { LimitKind::ProtocolError };
            self.fail(slot, error.close_code(), Some(limit));
        }
    }

    fn on_frame_event(&mut self, slot: usize, event: Event<'_>) -> Flow {
        let Some(conn) = self.conns.get_mut(slot) else { return Flow::Stop };
        if conn.doomed {
            return Flow::Stop;
        }
        self.metrics.frames_in += 1;
        if conn.state.shuts_when_written() {
            return Flow::Stop;
        }
        if let ConnState::Closing { .. } = conn.state {
            // Only the peer's Close matters now; it completes the closing handshake.
            if let Event::Close { .. } = event {
                self.drop_conn(slot);
                return Flow::Stop;
            }
            return Flow::Continue;
        }
        if matches!(event, Event::Ping(_) | Event::Pong) {
            let per_s = self.settings.limits.control_frames_per_s;
            let now_ms = self.now_ms();
            let Some(conn) = self.conns.get_mut(slot) else { return Flow::Stop };
            if !conn.control_rate.try_take(now_ms, per_s, per_s) {
                // Each Ping costs a Pong and a write: a flood would hold up
                // every connection of the shard. No strikes, as for messages.
                self.fail(slot, CloseCode::CONTROL_FLOOD, Some(LimitKind::ControlFlood));
                return Flow::Stop;
            }
        }
        match event {
            Event::Ping(payload) => {
                let pong = frame::encode_frame(Opcode::Pong, payload);
                self.queue(slot, pong);
            }
            Event::Pong => {}
            Event::Close { code, .. } => {
                let reply = code.map_or(CloseCode::NORMAL, |code| CloseCode { code, reason: "" });
                self.answer_close(slot, reply);
                return Flow::Stop;
            }
            Event::Message { opcode, payload } => self.on_message(slot, opcode, payload),
        }
        Flow::Continue
    }

    fn on_message(&mut self, slot: usize, opcode: Opcode, payload: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        let Role::Member(member) = &conn.role else {
            let echo = frame::encode_frame(opcode, payload);
            self.queue(slot, echo);
            return;
        };
        let limits = &self.settings.limits;
        let now_ms = self.now.saturating_duration_since(self.origin).as_millis() as u64;
        if !conn.rate.try_take(now_ms, limits.rate_messages_per_s, limits.rate_burst) {
            conn.rate_strikes += 1;
            if conn.rate_strikes > limits.rate_strikes_max {
                self.begin_close(slot, CloseCode::RATE_ABUSE, Some(LimitKind::RateAbuse));
            } else {
                self.note_limit(slot, LimitKind::RateLimited);
                self.send_error(slot, None, Refusal::RateLimited);
            }
            return;
        }
        self.metrics.client_messages += 1;
        let home = member.rooms.first().map(|home| home.place);
        if opcode == Opcode::Binary {
            if let Some(Place::Local(membership)) = home {
                let from = conn.id;
                self.rooms.relay_binary(membership, from, payload);
                self.apply_room_outputs();
            }
            return;
        }
        self.on_request(slot, payload);
    }

    fn send_error(&mut self, slot: usize, reference: Option<&[u8]>, refusal: Refusal) {
        protocol::encode_error(self.frames.begin(), reference, refusal.code(), refusal.message());
        let frame = self.frames.finish(Opcode::Text);
        self.queue(slot, frame);
    }

    /// Carries out what the rooms decided: local deliveries are queued,
    /// others go to their shard, and a broadcast goes once to each other
    /// shard with members.
    fn apply_room_outputs(&mut self) {
        while let Some(output) = self.rooms.poll_output() {
            match output {
                Output::Deliver { to, frame } if to.shard == self.id => {
                    if self.is_live(to) {
                        self.queue(to.slot as usize, frame);
                    }
                }
                // Replies to requests (welcomes, acks, errors, signals) are never
                // dropped: each answers a request that passed the outbox bound.
                Output::Deliver { to, frame } => self.remote.send_control(to.shard, RemoteMsg::Deliver { to, frame }),
                Output::Broadcast { room, audience, skip, frame } => {
                    self.metrics.broadcasts += 1;
                    let bounds = self.member_queue_bounds();
                    let mut slow = Vec::new();
                    for member in self.rooms.local_audience(room, audience) {
                        if Some(member) != skip
                            && let Err(slot) =
                                enqueue(&mut self.conns, &mut self.dirty, &mut self.metrics, member, &frame, bounds)
                        {
                            slow.push(slot);
                        }
                    }
                    // Closing changes room membership, so it waits until the walk is over.
                    for slot in slow {
                        self.close_slow_consumer(slot);
                    }
                    self.fan_out_remote(room, audience, skip, &frame);
                }
                Output::Close { conn, code } if conn.shard == self.id => {
                    if self.is_live(conn) {
                        self.begin_close(conn.slot as usize, code, None);
                    }
                }
                Output::Close { conn, code } => self.remote.send_control(conn.shard, RemoteMsg::Close { conn, code }),
                Output::RoleChanged { conn, membership, role } => self.send_role(conn, membership, role),
                Output::Persist(event) => self.persist(event),
                Output::Chatted { key, sender, id, author, text } => self.webhook_chat(&key, sender, id, author, text),
            }
        }
    }

    fn is_live(&self, id: ConnId) -> bool {
        self.conns.get(id.slot as usize).is_some_and(|c| c.id == id && !c.doomed)
    }

    /// Queues one frame for one connection, closing it if it cannot keep up.
    fn queue(&mut self, slot: usize, frame: Frame) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.doomed || conn.state != ConnState::Open {
            return;
        }
        let bounds = match conn.role {
            Role::Echo => {
                // Echo (conformance runs) queues whole large messages: one fixed bound.
                let cap = (self.settings.limits.echo_message_bytes_max * 2)
                    .max(self.settings.limits.outbound_queue_hard_bytes_max as usize);
                QueueBounds { soft: cap, hard: cap, grace_ms: 0, now_ms: 0 }
            }
            Role::Member(_) => self.member_queue_bounds(),
        };
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.push_bounded(frame, bounds).is_err() {
            self.close_slow_consumer(slot);
            return;
        }
        self.metrics.deliveries += 1;
        self.mark_dirty(slot);
    }

    /// A room member's outbound bounds, now.
    fn member_queue_bounds(&self) -> QueueBounds {
        let limits = &self.settings.limits;
        QueueBounds {
            soft: limits.outbound_queue_bytes_max as usize,
            hard: limits.outbound_queue_hard_bytes_max as usize,
            grace_ms: limits.outbound_queue_grace_ms,
            now_ms: self.now_ms() as u32,
        }
    }

    fn close_slow_consumer(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.outbound.discard_unstarted();
        }
        self.begin_close(slot, CloseCode::SLOW_CONSUMER, Some(LimitKind::SlowConsumer));
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

    /// Leaves every room (so the others hear at once) and stops routing to
    /// the connection. Remote rooms are told by message; a join still in
    /// flight is undone when its reply comes back (see `on_remote`).
    fn leave_all_rooms(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        let id = conn.id;
        let Role::Member(member) = &mut conn.role else { return };
        let rooms = std::mem::take(&mut member.rooms);
        for joined in rooms {
            match joined.place {
                Place::Local(membership) => {
                    self.rooms.leave(membership, id, None);
                }
                Place::Remote { owner, membership: Some(membership) } => {
                    self.remote.forget_member(&joined.key, id);
                    let leave =
                        RemoteMsg::Leave { key: joined.key, membership, conn: id, reference: None, requested: false };
                    self.remote.send_control(owner, leave);
                }
                Place::Remote { membership: None, .. } => {}
            }
        }
        self.apply_room_outputs();
    }

    /// Starts a server-initiated close: Close frame queued, room left, and a
    /// deadline for the peer's answer.
    fn begin_close(&mut self, slot: usize, code: CloseCode, limit: Option<LimitKind>) {
        self.close_as(slot, code, limit, ConnState::Closing { peer_closed: false });
    }

    /// Fails the connection (RFC 6455 §7.1.7): as `begin_close`, but what is
    /// buffered from the peer is dropped and the socket is shut once the
    /// Close is written, without waiting for the peer's Close (the deadline
    /// then only bounds a peer that does not read). A connection that is
    /// closing already stops waiting for the peer too.
    fn fail(&mut self, slot: usize, code: CloseCode, limit: Option<LimitKind>) {
        if let Some(conn) = self.conns.get_mut(slot)
            && !conn.doomed
            && conn.state == (ConnState::Closing { peer_closed: false })
        {
            conn.state = ConnState::Failed;
            conn.inbound = None;
            // Our Close is queued or written already: the flush shuts the socket.
            self.mark_dirty(slot);
            return;
        }
        self.close_as(slot, code, limit, ConnState::Failed);
    }

    /// Queues the Close of an open connection and moves it to `state`.
    fn close_as(&mut self, slot: usize, code: CloseCode, limit: Option<LimitKind>, state: ConnState) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.doomed || conn.state != ConnState::Open {
            return;
        }
        conn.state = state;
        if state == ConnState::Failed {
            conn.inbound = None;
        }
        conn.close_code.get_or_insert(code.code);
        conn.outbound.push_unbounded(frame::close_frame(code));
        let id = conn.id;
        if let Some(limit) = limit {
            self.note_limit(slot, limit);
        }
        self.mark_dirty(slot);
        self.leave_all_rooms(slot);
        let deadline = self.now + Duration::from_millis(u64::from(self.settings.limits.close_timeout_ms));
        self.schedule(id, deadline, TimerKind::CloseDeadline);
    }

    /// Answers the peer's Close; the socket goes once the answer is written.
    fn answer_close(&mut self, slot: usize, code: CloseCode) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        conn.state = ConnState::Closing { peer_closed: true };
        conn.close_code.get_or_insert(code.code);
        conn.outbound.discard_unstarted();
        conn.outbound.push_unbounded(frame::close_frame(code));
        let id = conn.id;
        self.mark_dirty(slot);
        self.leave_all_rooms(slot);
        // A peer that closes and then stops reading must not hold the socket.
        let deadline = self.now + Duration::from_millis(u64::from(self.settings.limits.close_timeout_ms));
        self.schedule(id, deadline, TimerKind::CloseDeadline);
    }

    /// Frees the connection at the end of the iteration.
    fn drop_conn(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.doomed {
            return;
        }
        conn.doomed = true;
        self.doomed.push(slot);
        self.leave_all_rooms(slot);
    }

    fn fire_due_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        for (id, kind) in fired.drain(..) {
            if self.is_live(id) {
                self.on_timer(id, kind);
            }
        }
        self.fired = fired;
    }

    fn on_timer(&mut self, id: ConnId, kind: TimerKind) {
        let slot = id.slot as usize;
        let Some(conn) = self.conns.get(slot) else { return };
        match kind {
            TimerKind::Heartbeat => {
                if conn.state != ConnState::Open {
                    return;
                }
                let limits = &self.settings.limits;
                let expires_at_s = conn.expires_at_s;
                let last_rx = self.origin + Duration::from_millis(conn.last_rx_ms);
                let silent = self.now.saturating_duration_since(last_rx);
                if expires_at_s.saturating_add(self.settings.token_leeway_s) <= self.now_unix_s {
                    self.begin_close(slot, CloseCode::TOKEN_EXPIRED, Some(LimitKind::TokenExpired));
                    return;
                }
                if silent >= Duration::from_millis(u64::from(limits.dead_after_ms)) {
                    self.begin_close(slot, CloseCode::DEAD_PEER, Some(LimitKind::DeadPeer));
                    return;
                }
                // A reader that stopped while nothing more is sent to it.
                let bounds = self.member_queue_bounds();
                if matches!(conn.role, Role::Member(_))
                    && let Some(conn) = self.conns.get_mut(slot)
                    && conn.check_backlog(bounds).is_err()
                {
                    self.close_slow_consumer(slot);
                    return;
                }
                if silent + crate::timer::TICK >= self.ping_interval() {
                    let ping = Arc::clone(&self.ping_frame);
                    self.queue(slot, ping);
                }
                let next = self.next_heartbeat(last_rx, expires_at_s);
                self.schedule(id, next, TimerKind::Heartbeat);
            }
            TimerKind::CloseDeadline => {
                self.note_limit(slot, LimitKind::CloseTimeout);
                self.drop_conn(slot);
            }
        }
    }

    /// When a connection's one heartbeat timer fires next: a ping interval
    /// from now, or sooner when it would be dead (silent since `last_rx`) or
    /// its token would run out.
    fn next_heartbeat(&self, last_rx: Instant, expires_at_s: u64) -> Instant {
        let dead_at = last_rx + Duration::from_millis(u64::from(self.settings.limits.dead_after_ms));
        let expires_at = self.instant_of_unix(expires_at_s.saturating_add(self.settings.token_leeway_s));
        (self.now + self.ping_interval()).min(dead_at).min(expires_at)
    }

    /// One vectored write per connection with something queued.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let bounds = self.member_queue_bounds();
        let mut slow = Vec::new();
        for &slot in &dirty {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            conn.dirty = false;
            if conn.doomed {
                continue;
            }
            let (outcome, written) = conn.outbound.flush(&mut conn.stream);
            self.metrics.frames_out += written.frames as u64;
            self.metrics.bytes_out += written.bytes as u64;
            self.metrics.writes += 1;
            match outcome {
                FlushOutcome::Drained => {
                    conn.over_soft_since_ms = 0;
                    if conn.state.shuts_when_written() {
                        // The server closes TCP first (RFC 6455 §7.1.1): the
                        // FIN goes right behind the Close frame.
                        let _ = conn.stream.shutdown(Shutdown::Write);
                        self.drop_conn(slot);
                    }
                }
                // The WRITABLE event marks it dirty again when the socket drains.
                FlushOutcome::WouldBlock => {
                    if conn.state == ConnState::Open
                        && matches!(conn.role, Role::Member(_))
                        && conn.check_backlog(bounds).is_err()
                    {
                        slow.push(slot);
                    }
                }
                FlushOutcome::Failed(_) => self.drop_conn(slot),
            }
        }
        for slot in slow {
            self.close_slow_consumer(slot);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
        }
    }

    fn reap_doomed(&mut self, registry: &mio::Registry) {
        let mut doomed = std::mem::take(&mut self.doomed);
        for slot in doomed.drain(..) {
            if let Some(mut conn) = self.conns.try_remove(slot) {
                let _ = registry.deregister(&mut conn.stream);
                self.metrics.connections_closed += 1;
                // No Close frame was exchanged: 1006, as in the session audit.
                self.log_connection(slot, None, None, Some(&conn));
                self.audit_close(&conn);
            }
        }
        self.doomed = doomed; // keep the allocation
    }

    /// The info line of a room connection opening (`closed` = `None`: the
    /// connection is in `slot`) or being freed (`closed`: the connection,
    /// already out of the slab); rate-limited per shard (`conn_log.rs`).
    fn log_connection(
        &mut self,
        slot: usize,
        home: Option<&RoomKey>,
        peer: Option<std::net::SocketAddr>,
        closed: Option<&Connection>,
    ) {
        match closed {
            None => {
                let Some(conn) = self.conns.get(slot) else { return };
                self.webhook_connection(conn, home, WebhookDetail::Connect { peer });
                self.conn_log.opened(conn, home, peer);
            }
            Some(conn) => {
                // No Close frame was exchanged: 1006, as in the session audit.
                let close_code = conn.close_code.unwrap_or(crate::msg::CLOSE_ABNORMAL);
                let close_reason = conn_log::close_reason(close_code).into();
                let home = match &conn.role {
                    Role::Member(member) => member.home.as_ref(),
                    Role::Echo => None,
                };
                self.webhook_connection(conn, home, WebhookDetail::Disconnect { close_code, close_reason });
                self.conn_log.closed(conn, close_code, self.now_ms());
                self.hook_disconnect(conn, close_code);
            }
        }
        self.metrics.log_lines_suppressed = self.conn_log.suppressed_total;
    }

    fn start_drain(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        let open: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.state == ConnState::Open).map(|(slot, _)| slot).collect();
        for slot in open {
            self.begin_close(slot, CloseCode::GOING_AWAY, None);
        }
    }

    fn drain_finished(&self) -> bool {
        self.draining.is_some_and(|deadline| self.conns.is_empty() || self.now >= deadline)
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
        if self.now.saturating_duration_since(self.metrics_sent_at) >= METRICS_INTERVAL {
            self.metrics_sent_at = self.now;
            self.metrics.connections = self.conns.len() as u64;
            self.metrics.rooms = self.rooms.len() as u64;
            let recovery = self.rooms.recovery_counts();
            (self.metrics.recovery_dropped, self.metrics.recovery_refused) = (recovery.dropped, recovery.refused);
            // A full channel only means the reader is behind; the next snapshot replaces this one.
            let _ = self.settings.metrics_out.try_send((self.id, self.metrics.clone()));
            self.episodes.end_interval();
            self.conn_log.end_second(self.id);
        }
    }
}
