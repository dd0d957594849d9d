//! The acceptor thread: accepts TCP connections, reads each request head
//! under a byte cap and a deadline, authenticates, completes the WebSocket
//! handshake and hands the connection to the shard owning its room. It also
//! serves the HTTP API (`http_api.rs`): requests that need shard data are
//! scattered to the shards and their replies gathered on this loop, so a
//! slow shard delays an admin request, never the acceptor.
//!
//! It never blocks: reads and writes are non-blocking, a full shard inbox is
//! answered 503, and every pending connection has a deadline. All pending
//! connections share one timeout, so deadlines are in insertion order and a
//! FIFO queue replaces a timer structure.
//!
//! On shutdown it first drains (`AcceptorMsg::Drain`): it keeps answering
//! HTTP (`/healthz` 200, `/readyz` 503, `/ws/…` 503 `draining`) while the
//! shards close their connections, and stops only when told to
//! (`AcceptorMsg::Stop`), once the shards are done.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::auth::{self, Identity, Verifier};
use crate::config::Config;
use crate::http::{self, HeadError, RequestHead};
use crate::http_api::{self, Access, ApiError, Endpoint, Gather, Outcome, Targets};
use crate::ids::{self, RoomKey, ShardId};
use crate::metrics::{AcceptorMetrics, EpisodeLog, Gauges, LimitKind, ShardMetrics};
use crate::protocol::Since;
use crate::registry::{self, Admission, Registry, RoomPolicy};
use crate::revocation::{Reason, RevokedTokens};
use crate::shard::{AdminAnswer, AdminQuery, AdminReply, AdminRequest, Handoff, HandoffKind, ShardHandle, ShardMsg};
use crate::store::{QueryRequest, StoreEvent, StoreGauges, StoreMonitor, StoreQuery};

const MAIN_LISTENER: Token = Token(usize::MAX - 1);
const ECHO_LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
const ADMIN_LISTENER: Token = Token(usize::MAX - 4);
/// HTTP API requests waiting for shard replies at once; more get 503 `busy`.
const API_AWAITING_MAX: usize = 64;
/// Longest the acceptor sleeps; it takes metrics snapshots at least this often.
const METRICS_TICK: Duration = Duration::from_secs(1);
/// Committed registry changes waiting for a shard whose admin inbox was full;
/// while this many wait, registry writes get 503 `busy` before the store.
const REGISTRY_BACKLOG_MAX: usize = 256;
/// Ticket of a registry change sent from the backlog: nobody waits for it.
const NO_TICKET: u64 = u64::MAX;
/// How soon a registry backlog is retried.
const REGISTRY_RETRY: Duration = Duration::from_millis(1);

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Main,
    Echo,
    /// `admin_listen`: the HTTP API only, no WebSocket.
    Admin,
}

/// Which metrics family a connection's response is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Not known until the head is read: a head that cannot be read (too
    /// big, malformed, too slow) counts as a failed handshake.
    Unknown,
    /// `/ws/…` on the main listener, or the echo listener.
    WebSocket,
    /// Any other request: `roomcast_http_responses_total`.
    Api,
}

/// A connection before its handoff.
#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    listener: Listener,
    family: Family,
    /// Its deadline passed once already (it is writing the 408 or 503 `timeout`).
    timed_out: bool,
    /// The address `accept` gave (handed to the shard for the session audit).
    peer: Option<SocketAddr>,
    /// Request head bytes so far; never more than `handshake_head_bytes_max`.
    head: Vec<u8>,
    state: PendingState,
    /// Tells this connection's deadline entry from a later one in the same slot.
    generation: u64,
}

#[derive(Debug)]
enum PendingState {
    ReadingHead,
    /// An API request whose body (`len` bytes, gathered in `head`) is still arriving.
    ReadingBody {
        request: Box<RequestHead>,
        endpoint: Endpoint,
        tenant: Option<String>,
        len: usize,
    },
    /// Waiting for `remaining` shards to answer an API request.
    Awaiting {
        ticket: u64,
        gather: Gather,
        remaining: usize,
        answers: Vec<AdminAnswer>,
        /// A shard's admin inbox was full: the answer would be partial.
        incomplete: bool,
    },
    /// Writing an HTTP response; the connection closes after it.
    Responding {
        response: Vec<u8>,
        written: usize,
    },
}

/// Messages the acceptor receives from the main thread.
#[derive(Debug)]
pub enum AcceptorMsg {
    /// Shutdown has begun: refuse new WebSocket connections and answer
    /// `/readyz` 503, but keep serving HTTP. The acceptor answers on the
    /// channel once it has switched, so no connection hears its 1001 while
    /// `/readyz` still says ready.
    Drain(Sender<()>),
    /// The shards have stopped: stop accepting and return.
    Stop,
}

pub struct Acceptor {
    poll: Poll,
    main: TcpListener,
    echo: Option<TcpListener>,
    admin: Option<TcpListener>,
    config: Arc<Config>,
    verifier: Option<Arc<Verifier>>,
    mint_secret: Option<Vec<u8>>,
    shards: Vec<ShardHandle>,
    /// Shards sent a handoff this iteration, woken once at its end.
    shards_to_wake: Vec<bool>,
    pending: Slab<Pending>,
    deadlines: VecDeque<(Instant, usize, u64)>,
    next_generation: u64,
    accept_paused: bool,
    control: Receiver<AcceptorMsg>,
    metrics_in: Receiver<(ShardId, ShardMetrics)>,
    shard_metrics: Vec<ShardMetrics>,
    metrics: AcceptorMetrics,
    /// Replies of the shards to API requests, and the sender they get a clone of.
    api_replies: Receiver<AdminReply>,
    api_reply_tx: Sender<AdminReply>,
    /// Ticket of each API request waiting for shards → its pending slot.
    awaiting: HashMap<u64, usize>,
    waker: Arc<Waker>,
    started: Instant,
    /// Set by `POST /api/v1/drain` and by shutdown: /readyz says 503, upgrades are refused.
    draining: bool,
    /// Limits hit by no one connection (a full shard inbox), logged once per episode.
    episodes: EpisodeLog,
    episodes_ended_at: Instant,
    /// The store thread's queue, for HTTP API reads; `None` with `--no-store`.
    store: Option<Sender<StoreEvent>>,
    /// Revoked and spent single-use tokens, checked at every handshake.
    revoked: RevokedTokens,
    /// Registered rooms (private, registration), checked at every handshake.
    registry: Registry,
    /// Per shard, committed registry changes its full admin inbox refused,
    /// oldest first; sent before any newer change to that shard.
    registry_backlog: Vec<VecDeque<AdminRequest>>,
    /// The store thread's figures, for /metrics; `None` with `--no-store`.
    store_monitor: Option<StoreMonitor>,
}

/// Binds a listener with socket2 so that backlog and SO_REUSEPORT are ours to set.
pub fn bind(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// What the acceptor needs from the rest of the server.
pub struct AcceptorParts {
    pub main: std::net::TcpListener,
    pub echo: Option<std::net::TcpListener>,
    pub admin: Option<std::net::TcpListener>,
    pub config: Arc<Config>,
    pub verifier: Option<Arc<Verifier>>,
    /// The HS secret `POST /api/v1/tokens` signs with; `None` in dev mode.
    pub mint_secret: Option<Vec<u8>>,
    pub shards: Vec<ShardHandle>,
    pub control: Receiver<AcceptorMsg>,
    pub metrics_in: Receiver<(ShardId, ShardMetrics)>,
    /// The store thread's queue (usage reads); `None` runs without a store.
    pub store: Option<Sender<StoreEvent>>,
    /// Revoked tokens loaded from the store, persisting new ones when it is on.
    pub revoked: RevokedTokens,
    /// The room registry loaded from the store (empty without one).
    pub registry: Registry,
    /// The store thread's figures, for /metrics.
    pub store_monitor: Option<StoreMonitor>,
}

impl Acceptor {
    pub fn new(parts: AcceptorParts) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut main = TcpListener::from_std(parts.main);
        poll.registry().register(&mut main, MAIN_LISTENER, Interest::READABLE)?;
        let echo = match parts.echo {
            Some(listener) => {
                let mut echo = TcpListener::from_std(listener);
                poll.registry().register(&mut echo, ECHO_LISTENER, Interest::READABLE)?;
                Some(echo)
            }
            None => None,
        };
        let admin = match parts.admin {
            Some(listener) => {
                let mut admin = TcpListener::from_std(listener);
                poll.registry().register(&mut admin, ADMIN_LISTENER, Interest::READABLE)?;
                Some(admin)
            }
            None => None,
        };
        let shard_count = parts.shards.len();
        // Every awaiting request expects at most one reply per shard; twice
        // that leaves room for late replies to requests that timed out.
        let (api_reply_tx, api_replies) = crossbeam_channel::bounded(2 * API_AWAITING_MAX * shard_count.max(1));
        let pending_max = parts.config.limits.handshakes_pending_max as usize;
        let acceptor = Acceptor {
            poll,
            main,
            echo,
            admin,
            verifier: parts.verifier,
            mint_secret: parts.mint_secret,
            shards: parts.shards,
            shards_to_wake: vec![false; shard_count],
            pending: Slab::with_capacity(pending_max),
            deadlines: VecDeque::with_capacity(pending_max),
            next_generation: 0,
            accept_paused: false,
            control: parts.control,
            metrics_in: parts.metrics_in,
            shard_metrics: vec![ShardMetrics::default(); shard_count],
            metrics: AcceptorMetrics::default(),
            config: parts.config,
            api_replies,
            api_reply_tx,
            awaiting: HashMap::new(),
            waker: Arc::clone(&waker),
            started: Instant::now(),
            draining: false,
            episodes: EpisodeLog::default(),
            episodes_ended_at: Instant::now(),
            store: parts.store,
            revoked: parts.revoked,
            registry: parts.registry,
            registry_backlog: (0..shard_count).map(|_| VecDeque::new()).collect(),
            store_monitor: parts.store_monitor,
        };
        Ok((acceptor, waker))
    }

    /// Runs until told to stop.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.config.limits.poll_events_max);
        loop {
            // Wake at least once a second to take the shards' metrics snapshots,
            // so /metrics is never older than that.
            let timeout = self
                .deadlines
                .front()
                .map_or(METRICS_TICK, |(at, _, _)| at.saturating_duration_since(Instant::now()).min(METRICS_TICK));
            let timeout = if self.registry_behind() { timeout.min(REGISTRY_RETRY) } else { timeout };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            while let Ok(msg) = self.control.try_recv() {
                match msg {
                    AcceptorMsg::Drain(ack) => {
                        tracing::info!("acceptor draining: /readyz 503, new WebSocket connections refused");
                        self.draining = true;
                        let _ = ack.try_send(());
                    }
                    AcceptorMsg::Stop => {
                        tracing::info!("acceptor stops accepting");
                        return Ok(());
                    }
                }
            }
            let mut event_count = 0;
            for event in events.iter() {
                event_count += 1;
                match event.token() {
                    MAIN_LISTENER => self.accept_all(Listener::Main),
                    ECHO_LISTENER => self.accept_all(Listener::Echo),
                    ADMIN_LISTENER => self.accept_all(Listener::Admin),
                    WAKER => {}
                    Token(slot) => self.on_pending(slot),
                }
            }
            if event_count >= self.config.limits.poll_events_max {
                self.metrics.hit(LimitKind::PollEventsFull);
            }
            self.take_api_replies();
            self.retry_registry_backlog();
            self.expire_deadlines(Instant::now());
            self.wake_shards();
            if self.accept_paused && self.pending.len() < self.config.limits.handshakes_pending_max as usize {
                self.accept_paused = false;
                self.accept_all(Listener::Main);
                self.accept_all(Listener::Echo);
                self.accept_all(Listener::Admin);
            }
            self.take_metrics();
            if self.episodes_ended_at.elapsed() >= METRICS_TICK {
                self.episodes_ended_at = Instant::now();
                self.episodes.end_interval();
            }
            // Drops expired revocations and retries those the store queue refused.
            self.revoked.tick(unix_now_s());
        }
    }

    /// Keeps the newest snapshot of each shard's counters.
    fn take_metrics(&mut self) {
        while let Ok((shard, snapshot)) = self.metrics_in.try_recv() {
            if let Some(slot) = self.shard_metrics.get_mut(shard as usize) {
                *slot = snapshot;
            }
        }
    }

    fn accept_all(&mut self, listener: Listener) {
        loop {
            if self.pending.len() >= self.config.limits.handshakes_pending_max as usize {
                // Leave the rest in the kernel's backlog until a slot frees.
                if !self.accept_paused {
                    self.accept_paused = true;
                    self.metrics.accept_paused += 1;
                    self.metrics.hit(LimitKind::HandshakesPending);
                    if self.episodes.starts_episode(LimitKind::HandshakesPending) {
                        tracing::warn!(
                            pending = self.pending.len(),
                            "limits.handshakes_pending_max reached: accepting paused"
                        );
                    }
                }
                return;
            }
            let accepted = match (listener, &self.echo, &self.admin) {
                (Listener::Main, _, _) => self.main.accept(),
                (Listener::Echo, Some(echo), _) => echo.accept(),
                (Listener::Admin, _, Some(admin)) => admin.accept(),
                (Listener::Echo | Listener::Admin, _, _) => return,
            };
            match accepted {
                Ok((stream, peer)) => self.start_pending(stream, listener, Some(peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and come back on the next event.
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn start_pending(&mut self, mut stream: TcpStream, listener: Listener, peer: Option<SocketAddr>) {
        if self.config.net.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let slot = self.pending.vacant_key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot register accepted connection");
            return;
        }
        let family = match listener {
            Listener::Main => Family::Unknown,
            Listener::Echo => Family::WebSocket,
            Listener::Admin => Family::Api,
        };
        self.insert_pending(stream, listener, family, peer, PendingState::ReadingHead);
        // The request may already be here; edge-triggered readiness would not tell us again.
        self.on_pending(slot);
    }

    /// Adds a registered connection to the pending table with a fresh deadline.
    fn insert_pending(
        &mut self,
        stream: TcpStream,
        listener: Listener,
        family: Family,
        peer: Option<SocketAddr>,
        state: PendingState,
    ) -> usize {
        self.next_generation += 1;
        let generation = self.next_generation;
        let slot = self.pending.insert(Pending {
            stream,
            listener,
            family,
            timed_out: false,
            peer,
            head: Vec::new(),
            state,
            generation,
        });
        let timeout = Duration::from_millis(u64::from(self.config.limits.handshake_timeout_ms));
        self.deadlines.push_back((Instant::now() + timeout, slot, generation));
        slot
    }

    fn on_pending(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        match pending.state {
            PendingState::ReadingHead | PendingState::ReadingBody { .. } => self.read_head(slot),
            PendingState::Responding { .. } => self.write_response(slot),
            // Nothing more is read until the answer is out.
            PendingState::Awaiting { .. } => {}
        }
    }

    /// Reads the request head, or (`ReadingBody`) an API request's body.
    fn read_head(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let (head_max, body) = match pending.state {
            PendingState::ReadingBody { len, .. } => (len, true),
            _ => (self.config.limits.handshake_head_bytes_max, false),
        };
        let mut chunk = [0u8; 4096];
        loop {
            let room = head_max.saturating_sub(pending.head.len());
            if room == 0 && body {
                break;
            }
            if room == 0 {
                // A complete head followed by body bytes filled the buffer:
                // the rest of the body is read in `ReadingBody`.
                if matches!(http::parse_head(&pending.head), Ok(Some(_))) {
                    break;
                }
                self.metrics.hit(LimitKind::HeadTooBig);
                self.respond_error(slot, 431, "headers_too_large", "request head over handshake_head_bytes_max", "");
                return;
            }
            let limit = room.min(chunk.len());
            match pending.stream.read(&mut chunk[..limit]) {
                Ok(0) => {
                    self.close_pending(slot);
                    return;
                }
                Ok(n) => pending.head.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_pending(slot);
                    return;
                }
            }
        }
        if body {
            if pending.head.len() >= head_max {
                let state = std::mem::replace(&mut pending.state, PendingState::ReadingHead);
                let body = std::mem::take(&mut pending.head);
                if let PendingState::ReadingBody { request, endpoint, tenant, .. } = state {
                    self.api_dispatch(slot, &endpoint, tenant, &request, &body);
                }
            }
            return;
        }
        match http::parse_head(&pending.head) {
            Ok(None) => {}
            Ok(Some((head, len))) => {
                let leftover = pending.head[len..].to_vec();
                self.route(slot, head, leftover);
            }
            Err(HeadError::TooLarge) => {
                self.metrics.hit(LimitKind::HeadTooBig);
                self.respond_error(slot, 431, "headers_too_large", "too many request headers", "")
            }
            Err(HeadError::Malformed) => self.respond_error(slot, 400, "bad_request", "malformed HTTP request", ""),
        }
    }

    fn route(&mut self, slot: usize, head: RequestHead, leftover: Vec<u8>) {
        let draining = self.draining;
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let listener = pending.listener;
        let websocket = listener == Listener::Echo || (head.path.starts_with("/ws/") && listener == Listener::Main);
        pending.family = if websocket { Family::WebSocket } else { Family::Api };
        if websocket && draining {
            return self.respond_error(slot, 503, "draining", "the server is draining", "Retry-After: 5\r\n");
        }
        if listener == Listener::Echo {
            return self.upgrade(slot, &head, leftover, HandoffKind::Echo, 0);
        }
        if websocket {
            return self.upgrade_room(slot, &head, leftover);
        }
        self.api_request(slot, head, leftover);
    }

    /// Routes an HTTP API request, checks its key, and reads its body.
    fn api_request(&mut self, slot: usize, head: RequestHead, mut leftover: Vec<u8>) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let listener = pending.listener;
        let endpoint = match http_api::route(&head.method, &head.path) {
            Ok(endpoint) => endpoint,
            Err(e) => return self.respond_api_error(slot, &e),
        };
        // With a separate admin listener the main listener is public: admin
        // paths do not exist there, and the admin key opens nothing.
        let public = listener == Listener::Main && self.admin.is_some();
        if public && endpoint.admin_surface() {
            return self.respond_api_error(slot, &ApiError::new(404, "not_found", "unknown path"));
        }
        let access = match endpoint.access() {
            Access::AdminOrTenant if public => Access::Tenant,
            access => access,
        };
        let tenant = match http_api::authorize(&self.config, access, &head) {
            Ok(tenant) => tenant,
            Err(e) => return self.respond_api_error(slot, &e),
        };
        if !endpoint.takes_body() {
            return self.api_dispatch(slot, &endpoint, tenant, &head, &[]);
        }
        let len = match http_api::body_length(&head, self.config.api.body_bytes_max) {
            Ok(len) => len,
            Err(e) => {
                if e.status == 413 {
                    self.metrics.hit(LimitKind::BodyTooBig);
                }
                return self.respond_api_error(slot, &e);
            }
        };
        if leftover.len() >= len {
            return self.api_dispatch(slot, &endpoint, tenant, &head, &leftover[..len]);
        }
        leftover.reserve_exact(len - leftover.len());
        pending.head = leftover;
        pending.state = PendingState::ReadingBody { request: Box::new(head), endpoint, tenant, len };
        // The head read may have stopped at its cap rather than at WouldBlock:
        // read on now, as no new readiness edge may come for bytes already here.
        self.read_head(slot);
    }

    /// Answers an API request, or scatters it to the shards.
    fn api_dispatch(
        &mut self,
        slot: usize,
        endpoint: &Endpoint,
        tenant: Option<String>,
        head: &RequestHead,
        body: &[u8],
    ) {
        if matches!(endpoint, Endpoint::Metrics | Endpoint::Stats) {
            self.take_metrics();
            self.metrics.registry_rooms = self.registry.len() as u64;
        }
        let ctx = http_api::Context {
            config: &self.config,
            mint_secret: self.mint_secret.as_deref(),
            shards: &self.shard_metrics,
            acceptor: &self.metrics,
            gauges: Gauges {
                inbox_depths: self.shards.iter().map(ShardHandle::inbox_len).collect(),
                uptime_s: self.started.elapsed().as_secs(),
                draining: self.draining,
                store: self.store_monitor.as_ref().map(|monitor| StoreGauges {
                    queue_depth: self.store.as_ref().map_or(0, Sender::len),
                    queue_max: self.config.store.queue_max,
                    stats: monitor.snapshot(),
                }),
                revocations: self.revoked.metrics(),
            },
            tenant,
            now_unix_s: unix_now_s(),
            registry_full: !self.registry.has_room_for_one_more(),
            registry_behind: self.registry_backlog.iter().map(VecDeque::len).sum::<usize>() >= REGISTRY_BACKLOG_MAX,
            limit_hit: std::cell::Cell::new(None),
        };
        let outcome = http_api::handle(&ctx, endpoint, head, body);
        if let Some(kind) = ctx.limit_hit.get() {
            self.metrics.hit(kind);
        }
        match outcome {
            Err(e) if e.code == "busy" => self.respond_busy(slot, &e),
            Err(e) => {
                if e.code == "registry_full" {
                    self.metrics.hit(LimitKind::RegistryFull);
                }
                self.respond_api_error(slot, &e)
            }
            Ok(Outcome::Respond(status, response)) => self.respond(slot, status, "ok", response),
            Ok(Outcome::Scatter { query, targets, gather }) => self.scatter(slot, query, targets, gather),
            Ok(Outcome::Store { request, gather }) => self.store_query(slot, request, gather),
            Ok(Outcome::Revoke { jti, expires_s, response }) => {
                match self.revoked.add(&jti, expires_s, Reason::Revoked, unix_now_s().saturating_mul(1000)) {
                    Ok(()) => {
                        tracing::info!(jti, expires_s, "token revoked through the HTTP API");
                        self.respond(slot, 200, "ok", response);
                    }
                    Err(full) => self.respond_api_error(slot, &full.api_error()),
                }
            }
            Ok(Outcome::StartDrain) => {
                if !self.draining {
                    tracing::info!("drain requested through the HTTP API");
                }
                self.draining = true;
                self.scatter(slot, AdminQuery::Drain, Targets::All, Gather::Drained);
            }
        }
    }

    /// Sends `query` to the target shards; the replies are gathered in `take_api_replies`.
    fn scatter(&mut self, slot: usize, query: AdminQuery, targets: Targets, gather: Gather) {
        if self.awaiting.len() >= API_AWAITING_MAX {
            let busy = ApiError::new(503, "busy", "too many API requests in flight; try again");
            return self.respond_busy(slot, &busy);
        }
        let Some(pending) = self.pending.get(slot) else { return };
        let ticket = pending.generation;
        let query = Arc::new(query);
        let shards: Vec<usize> = match targets {
            Targets::All => (0..self.shards.len()).collect(),
            Targets::One(shard) => vec![shard as usize],
        };
        let mut sent = 0;
        let mut incomplete = false;
        for shard in shards {
            let request = self.admin_request(ticket, &query);
            match self.shards.get(shard).map(|handle| handle.try_admin(request)) {
                Some(Ok(())) => {
                    sent += 1;
                    self.shards_to_wake[shard] = true;
                }
                _ => incomplete = true,
            }
        }
        if sent == 0 {
            let busy = ApiError::new(503, "busy", "the shards' admin inboxes are full; try again");
            return self.respond_busy(slot, &busy);
        }
        self.awaiting.insert(ticket, slot);
        if let Some(pending) = self.pending.get_mut(slot) {
            pending.head = Vec::new();
            let answers = Vec::with_capacity(sent);
            pending.state = PendingState::Awaiting { ticket, gather, remaining: sent, answers, incomplete };
        }
    }

    /// Sends an HTTP API read to the store thread and waits for its one reply
    /// in `Awaiting`, like a scatter to one shard (same cap, same deadline):
    /// the store answers on the API reply channel and wakes this loop.
    fn store_query(&mut self, slot: usize, request: QueryRequest, gather: Gather) {
        let Some(store) = &self.store else {
            let off = ApiError::new(501, "not_implemented", "this needs the store; the server runs with --no-store");
            return self.respond_api_error(slot, &off);
        };
        if self.awaiting.len() >= API_AWAITING_MAX {
            let busy = ApiError::new(503, "busy", "too many API requests in flight; try again");
            return self.respond_busy(slot, &busy);
        }
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let ticket = pending.generation;
        let query = StoreQuery { ticket, request, reply: self.api_reply_tx.clone(), waker: Arc::clone(&self.waker) };
        if store.try_send(StoreEvent::Query(Box::new(query))).is_err() {
            let busy = ApiError::new(503, "busy", "the store's queue is full; try again");
            return self.respond_busy(slot, &busy);
        }
        pending.head = Vec::new();
        pending.state =
            PendingState::Awaiting { ticket, gather, remaining: 1, answers: Vec::with_capacity(1), incomplete: false };
        self.awaiting.insert(ticket, slot);
    }

    /// Collects the shards' replies; a request answered by every shard it
    /// asked gets its response.
    fn take_api_replies(&mut self) {
        while let Ok(reply) = self.api_replies.try_recv() {
            let Some(&slot) = self.awaiting.get(&reply.ticket) else { continue }; // timed out
            let Some(pending) = self.pending.get_mut(slot) else { continue };
            let PendingState::Awaiting { remaining, answers, .. } = &mut pending.state else { continue };
            answers.push(reply.answer);
            *remaining -= 1;
            if *remaining > 0 {
                continue;
            }
            self.awaiting.remove(&reply.ticket);
            let state = std::mem::replace(&mut pending.state, PendingState::ReadingHead);
            let PendingState::Awaiting { gather, answers, incomplete, .. } = state else { continue };
            if incomplete {
                let busy = ApiError::new(503, "busy", "a shard's admin inbox was full; the answer would be partial");
                self.respond_busy(slot, &busy);
                continue;
            }
            let change = match &gather {
                Gather::Registry(op) => http_api::registry_change(op, &answers),
                _ => None,
            };
            let (status, response) = http_api::finish(&gather, answers);
            match change {
                Some((key, policy)) => self.apply_registry_change(slot, key, policy, status, response),
                None => self.respond(slot, status, "ok", response),
            }
        }
    }

    /// A registry change the store committed: the acceptor's copy takes it,
    /// then the owning shard (every shard, for a delete: they close the
    /// room's members), and the response waits for them, so that when it
    /// arrives the live room has the change. A shard whose admin inbox is
    /// full gets it from the backlog as soon as there is room, in order.
    fn apply_registry_change(
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
        self.registry.apply(key.clone(), policy);
        let Some(ticket) = self.pending.get(slot).map(|p| p.generation) else { return };
        let query = Arc::new(AdminQuery::Registry { key, policy });
        let mut sent = 0;
        for shard in shards {
            let request = self.admin_request(ticket, &query);
            if !self.registry_backlog[shard].is_empty() {
                self.registry_backlog[shard].push_back(AdminRequest { ticket: NO_TICKET, ..request });
                continue;
            }
            match self.shards[shard].try_admin(request) {
                Ok(()) => {
                    sent += 1;
                    self.shards_to_wake[shard] = true;
                }
                Err(request) => {
                    tracing::warn!(shard, "admin inbox full; registry change queued for the shard");
                    self.metrics.hit(LimitKind::RegistryDeferred);
                    self.registry_backlog[shard].push_back(AdminRequest { ticket: NO_TICKET, ..request });
                }
            }
        }
        if sent == 0 {
            return self.respond(slot, status, "ok", response);
        }
        self.awaiting.insert(ticket, slot);
        if let Some(pending) = self.pending.get_mut(slot) {
            let gather = Gather::RegistryApplied { status, response };
            let answers = Vec::with_capacity(sent);
            pending.state = PendingState::Awaiting { ticket, gather, remaining: sent, answers, incomplete: false };
        }
    }

    /// One shard's copy of an admin query, answered to this loop.
    fn admin_request(&self, ticket: u64, query: &Arc<AdminQuery>) -> AdminRequest {
        AdminRequest {
            ticket,
            query: Arc::clone(query),
            reply: self.api_reply_tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    fn registry_behind(&self) -> bool {
        self.registry_backlog.iter().any(|backlog| !backlog.is_empty())
    }

    /// Sends what the registry backlog holds, oldest first, while the shards take it.
    fn retry_registry_backlog(&mut self) {
        for (shard, backlog) in self.registry_backlog.iter_mut().enumerate() {
            while let Some(request) = backlog.pop_front() {
                match self.shards[shard].try_admin(request) {
                    Ok(()) => self.shards_to_wake[shard] = true,
                    Err(request) => {
                        backlog.push_front(request);
                        break;
                    }
                }
            }
        }
    }

    fn respond_api_error(&mut self, slot: usize, error: &ApiError) {
        self.respond(slot, error.status, error.code, error.response());
    }

    /// A `503 busy`: one of the HTTP API's constant bounds (64 waiting
    /// requests, a shard's admin inbox, the store's queue) is full.
    fn respond_busy(&mut self, slot: usize, error: &ApiError) {
        self.metrics.hit(LimitKind::ApiBusy);
        self.respond_api_error(slot, error);
    }

    /// `/ws/{room}`: checks the request, the Origin and the token, then upgrades.
    fn upgrade_room(&mut self, slot: usize, head: &RequestHead, leftover: Vec<u8>) {
        let room = &head.path["/ws/".len()..];
        if !ids::is_valid_room_id(room) {
            return self.respond_error(slot, 400, "bad_room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]", "");
        }
        if let Some((status, code, message, extra)) = check_websocket_request(head) {
            return self.respond_error(slot, status, code, message, extra);
        }
        let allowed = &self.config.auth.allow_origins;
        if let Some(origin) = &head.origin
            && !allowed.is_empty()
            && !allowed.iter().any(|a| a == origin)
        {
            return self.respond_error(slot, 403, "origin_not_allowed", "the Origin is not in auth.allow_origins", "");
        }
        let identity = match self.authenticate(head) {
            Ok(identity) => identity,
            Err((code, message)) => {
                if code == auth::AuthError::TooLarge.code() {
                    self.metrics.hit(LimitKind::TokenTooBig);
                }
                return self.respond_error(slot, 401, code, message, "");
            }
        };
        if !identity.may_join(room) {
            return self.respond_error(
                slot,
                403,
                "room_not_allowed",
                "the token's room claim does not allow this room",
                "",
            );
        }
        let key = RoomKey::new(&identity.tenant, room);
        // may_join held, so an exact claim is this room's.
        let names_room = identity.has_exact_room_claim();
        match registry::admission(self.registry.get(&key), self.config.rooms.require_registration, room, names_room) {
            Some(Admission::NotRegistered) => {
                return self.respond_error(slot, 404, "room_not_registered", "the room is not in the registry", "");
            }
            Some(Admission::Private) => {
                let message = "the room is private: only a token whose room claim names it may enter";
                return self.respond_error(slot, 403, "room_private", message, "");
            }
            None => {}
        }
        let since = match head.query_param("since").map(|seq| seq.parse::<u64>()) {
            None => None,
            Some(Ok(seq)) => Some(Box::new(Since { seq, epoch: head.query_param("epoch").map(Into::into) })),
            Some(Err(_)) => return self.respond_error(slot, 400, "bad_since", "since must be a message seq (u64)", ""),
        };
        // Expired entries go in `revoked.tick`, once per loop.
        let now_s = unix_now_s();
        if let Err(refusal) = self.revoked.admit(&identity, now_s, now_s.saturating_mul(1000)) {
            return self.respond_error(slot, refusal.status(), refusal.code(), refusal.message(), "");
        }
        let shard = key.shard(self.shards.len());
        self.upgrade(slot, head, leftover, HandoffKind::Room { identity: Box::new(identity), key, since }, shard);
    }

    fn authenticate(&self, head: &RequestHead) -> Result<Identity, (&'static str, &'static str)> {
        let Some(verifier) = &self.verifier else {
            return match head.query_param("user") {
                // The name becomes a room key (`user:{name}`), where control characters are ambiguous.
                Some(user) if !user.is_empty() && !user.chars().any(char::is_control) => Ok(Identity::dev(&user)),
                _ => Err(("missing_user", "dev mode (auth.mode = none) needs ?user=NAME without control characters")),
            };
        };
        let token = auth::extract_token(head.query.as_deref(), head.authorization.as_deref(), head.cookie.as_deref())
            .ok_or(("token_missing", "no token in ?token=, Authorization: Bearer or cookie roomcast_token"))?;
        verifier.verify(&token).map_err(|e| (e.code(), e.message()))
    }

    /// Hands the connection to `shard` with the 101 response for it to write first.
    fn upgrade(&mut self, slot: usize, head: &RequestHead, leftover: Vec<u8>, kind: HandoffKind, shard: ShardId) {
        if let Some((status, code, message, extra)) = check_websocket_request(head) {
            return self.respond_error(slot, status, code, message, extra);
        }
        let Some(ws_key) = head.ws_key.as_deref() else { return };
        let response = http::switching_protocols(ws_key);
        let Some(mut pending) = self.pending.try_remove(slot) else { return };
        let _ = self.poll.registry().deregister(&mut pending.stream);
        let (listener, peer) = (pending.listener, pending.peer);
        let handoff = Box::new(Handoff { stream: pending.stream, response, leftover, kind, peer });
        let target = shard as usize;
        match self.shards[target].try_send(ShardMsg::Handoff(handoff)) {
            Ok(()) => {
                // The shard writes the 101 and counts it (`roomcast_handshakes_total{cause="ok"}`).
                self.metrics.last_upgrade_unix_s = unix_now_s();
                self.shards_to_wake[target] = true;
            }
            Err(ShardMsg::Handoff(handoff)) => {
                self.metrics.hit(LimitKind::InboxFull);
                if self.episodes.starts_episode(LimitKind::InboxFull) {
                    tracing::warn!(shard, "shard inbox full (limits.shard_inbox_max): handshakes refused with 503");
                }
                // Answered like any other refusal: from a fresh pending slot,
                // written as the socket allows, under a deadline.
                let mut stream = handoff.stream;
                let slot = self.pending.vacant_key();
                if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::WRITABLE) {
                    tracing::warn!(error = %e, "cannot register a refused connection");
                    return;
                }
                let slot = self.insert_pending(stream, listener, Family::WebSocket, peer, PendingState::ReadingHead);
                let retry = "Retry-After: 1\r\n";
                self.respond_error(slot, 503, "overloaded", "the shard's inbox is full; try again", retry);
            }
            Err(ShardMsg::Remote(..)) => {}
        }
    }

    fn respond_error(&mut self, slot: usize, status: u16, code: &'static str, message: &str, extra_headers: &str) {
        self.respond(slot, status, code, http::error_response(status, code, message, extra_headers));
    }

    /// Writes `response` and closes. It is counted once, here, in the
    /// connection's family: a handshake by `status` and `cause` (the body's
    /// error code), an HTTP API response by `status`.
    fn respond(&mut self, slot: usize, status: u16, cause: &'static str, response: Vec<u8>) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        match pending.family {
            Family::Unknown | Family::WebSocket => {
                self.metrics.count_handshake(status, cause);
                tracing::debug!(status, cause, peer = ?pending.peer, "handshake refused");
            }
            Family::Api => self.metrics.count_http(status),
        }
        pending.head = Vec::new();
        pending.state = PendingState::Responding { response, written: 0 };
        self.write_response(slot);
    }

    fn write_response(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let PendingState::Responding { response, written } = &mut pending.state else { return };
        while *written < response.len() {
            match pending.stream.write(&response[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = pending.stream.shutdown(Shutdown::Write);
        self.close_pending(slot);
    }

    fn close_pending(&mut self, slot: usize) {
        if let Some(mut pending) = self.pending.try_remove(slot) {
            if let PendingState::Awaiting { ticket, .. } = pending.state {
                self.awaiting.remove(&ticket);
            }
            let _ = self.poll.registry().deregister(&mut pending.stream);
        }
    }

    fn expire_deadlines(&mut self, now: Instant) {
        while let Some(&(at, slot, generation)) = self.deadlines.front() {
            if at > now {
                return;
            }
            self.deadlines.pop_front();
            let Some(pending) = self.pending.get_mut(slot).filter(|p| p.generation == generation) else { continue };
            let timeout = Duration::from_millis(u64::from(self.config.limits.handshake_timeout_ms));
            let first = !std::mem::replace(&mut pending.timed_out, true);
            if first {
                self.metrics.hit(LimitKind::HandshakeTimeout);
            }
            match pending.state {
                PendingState::Awaiting { ticket, .. } => {
                    // A shard did not answer in time: say so, with a fresh deadline for the write.
                    self.awaiting.remove(&ticket);
                    self.deadlines.push_back((now + timeout, slot, generation));
                    let late = ApiError::new(503, "timeout", "a shard did not answer in time");
                    self.respond_api_error(slot, &late);
                }
                PendingState::ReadingHead | PendingState::ReadingBody { .. } => {
                    // The request did not arrive in time: answer 408 (as the
                    // socket allows, under a fresh deadline), so what is
                    // counted is what the client gets.
                    self.metrics.handshake_timeouts += 1;
                    self.deadlines.push_back((now + timeout, slot, generation));
                    let message = "the request did not arrive within limits.handshake_timeout_ms";
                    self.respond_error(slot, 408, "timeout", message, "");
                }
                PendingState::Responding { .. } => {
                    // The client does not read its response: drop it. Its
                    // status was counted when the response was decided.
                    if first {
                        self.metrics.handshake_timeouts += 1;
                    }
                    self.close_pending(slot);
                }
            }
        }
    }

    fn wake_shards(&mut self) {
        for (shard, wake) in self.shards_to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.shards[shard].wake();
            }
        }
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 6455 §4.2.1 checks; `Some` is the refusal to send.
fn check_websocket_request(head: &RequestHead) -> Option<(u16, &'static str, &'static str, &'static str)> {
    if head.method != "GET" {
        return Some((405, "method_not_allowed", "WebSocket upgrades use GET", "Allow: GET\r\n"));
    }
    if !head.wants_websocket() {
        return Some((400, "not_websocket", "expected Upgrade: websocket and Connection: Upgrade", ""));
    }
    if head.ws_version.as_deref() != Some("13") {
        return Some((426, "bad_version", "only WebSocket version 13 is supported", "Sec-WebSocket-Version: 13\r\n"));
    }
    let key_ok = head.ws_key.as_deref().is_some_and(|key| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|raw| raw.len() == 16)
    });
    if !key_ok {
        return Some((400, "bad_key", "Sec-WebSocket-Key must be 16 bytes in base64", ""));
    }
    None
}
