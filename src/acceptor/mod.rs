//! The acceptor thread: accepts TCP connections, reads each request head
//! under a byte cap and a deadline, authenticates, completes the WebSocket
//! handshake and hands the connection to the shard owning its room. It also
//! serves the HTTP API (`http_api.rs`): requests that need shard data are
//! scattered to the shards and their replies gathered on this loop, so a
//! slow shard delays an admin request, never the acceptor. And it verifies
//! the shards' `refresh` tokens, so no shard loop runs a signature check.
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
//!
//! One role per file: `accept.rs` (listeners, the accept loop, socket
//! options), `guard.rs` (the handshake guards: per-address cap, eviction,
//! head deadline and rate, HTTP/1.1 only), `pending.rs` (the
//! pending-connection table, head reading, responses, deadlines), `upgrade.rs` (the WebSocket checks, the 101 and
//! the handoff), `api.rs` (HTTP API requests, scattered to the shards or the
//! store and gathered), `registry_backlog.rs` (registry changes waiting for a
//! full shard), `refresh.rs` (the shards' `refresh` tokens). This file holds
//! the thread's state and its loop.

mod accept;
mod announce;
mod api;
mod guard;
mod pending;
mod refresh;
mod registry_backlog;
mod upgrade;

pub use accept::bind;
pub use announce::ANNOUNCEMENTS_MAX;
pub use refresh::REFRESH_QUEUE_MAX;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token, Waker};

use crate::auth::Verifier;
use crate::config::Config;
use crate::ids::ShardId;
use crate::metrics::{AcceptorMetrics, EpisodeLog, LimitKind, ShardMetrics};
use crate::registry::Registry;
use crate::revocation::RevokedTokens;
use crate::shard::{AdminRequest, RefreshRequest, ShardHandle, ShardMsg};
use crate::store::{StoreEvent, StoreMonitor};

use accept::{ADMIN_LISTENER, ECHO_LISTENER, Listener, Listeners, MAIN_LISTENER};
use api::ApiState;
use guard::ShedLog;
use pending::PendingTable;
use refresh::RefreshQueue;
use registry_backlog::RegistryState;

const WAKER: Token = Token(usize::MAX - 3);
/// Longest the acceptor sleeps; it takes metrics snapshots at least this often.
const METRICS_TICK: Duration = Duration::from_secs(1);
/// How soon work a full shard inbox refused (registry changes, refresh
/// answers) is offered again.
const RETRY_SOON: Duration = Duration::from_millis(1);

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

/// The acceptor's poll and the waker other threads reach it with. Made
/// before the shards, which need the waker to send it `refresh` tokens.
pub struct AcceptorPoll {
    poll: Poll,
    waker: Arc<Waker>,
}

impl AcceptorPoll {
    pub fn new() -> io::Result<AcceptorPoll> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(AcceptorPoll { poll, waker })
    }

    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }
}

pub struct Acceptor {
    poll: Poll,
    config: Arc<Config>,
    control: Receiver<AcceptorMsg>,
    /// Set by `POST /api/v1/drain` and by shutdown: /readyz says 503, upgrades are refused.
    draining: bool,
    listeners: Listeners,
    /// Connections accepted and not yet handed off or answered.
    pending: PendingTable,
    shards: Shards,
    /// HTTP API requests waiting for the shards or the store.
    api: ApiState,
    registry: RegistryState,
    tokens: Tokens,
    counters: Counters,
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
    /// The shards' `refresh` tokens to verify (the other end is in `ShardSettings::refresh`).
    pub refresh_requests: Receiver<RefreshRequest>,
    /// The store thread's queue (usage reads); `None` runs without a store.
    pub store: Option<Sender<StoreEvent>>,
    /// Revoked tokens loaded from the store, persisting new ones when it is on.
    pub revoked: RevokedTokens,
    /// The room registry loaded from the store (empty without one).
    pub registry: Registry,
    /// The store thread's figures, for /metrics.
    pub store_monitor: Option<StoreMonitor>,
    /// The webhook thread's figures, for /metrics; `None` with no `[[webhooks]]`.
    pub webhook_monitor: Option<crate::webhooks::WebhookMonitor>,
    /// The cluster bridge's figures and link state, for /metrics, /api/v1/stats
    /// and /readyz; `None` without `cluster.redis`.
    pub cluster_monitor: Option<crate::cluster::ClusterMonitor>,
    /// The bridge's queue, for admin requests the other nodes run too, and
    /// the other nodes' such requests (`ANNOUNCEMENTS_MAX`); `None` without
    /// `cluster.redis`.
    pub cluster: Option<Sender<crate::msg::ClusterOut>>,
    pub announcements: Option<Receiver<Vec<u8>>>,
}

/// The shards' handles, and which of them to wake at the end of the iteration.
struct Shards {
    handles: Vec<ShardHandle>,
    /// Shards sent something this iteration, woken once at its end.
    to_wake: Vec<bool>,
}

impl Shards {
    fn len(&self) -> usize {
        self.handles.len()
    }

    /// Queues `msg` in `shard`'s inbox; the shard is woken at the end of the iteration.
    fn try_send(&mut self, shard: usize, msg: ShardMsg) -> Result<(), ShardMsg> {
        let Some(handle) = self.handles.get(shard) else { return Err(msg) };
        handle.try_send(msg)?;
        self.to_wake[shard] = true;
        Ok(())
    }

    /// Queues `request` in `shard`'s admin inbox; woken at the end of the iteration.
    fn try_admin(&mut self, shard: usize, request: AdminRequest) -> Result<(), AdminRequest> {
        let Some(handle) = self.handles.get(shard) else { return Err(request) };
        handle.try_admin(request)?;
        self.to_wake[shard] = true;
        Ok(())
    }

    fn wake_marked(&mut self) {
        for (shard, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.handles[shard].wake();
            }
        }
    }
}

/// What tokens are checked against: the keys and the revoked set, for
/// handshakes and for the shards' refreshes.
struct Tokens {
    /// `None` in dev mode (`auth.mode = none`).
    verifier: Option<Arc<Verifier>>,
    /// Revoked and spent single-use tokens, checked at every handshake and refresh.
    revoked: RevokedTokens,
    refresh: RefreshQueue,
}

/// The acceptor's counters and the shards' latest snapshots.
struct Counters {
    acceptor: AcceptorMetrics,
    /// The newest snapshot of each shard's counters, and where they arrive.
    shards: Vec<ShardMetrics>,
    shards_in: Receiver<(ShardId, ShardMetrics)>,
    /// Limits hit by no one connection (a full shard inbox), logged once per episode.
    episodes: EpisodeLog,
    /// The handshake guards' episodes, ended with the others.
    shed_episodes: ShedLog,
    episodes_ended_at: Instant,
    started: Instant,
}

impl Counters {
    fn hit(&mut self, kind: LimitKind) {
        self.acceptor.hit(kind);
    }

    /// Keeps the newest snapshot of each shard's counters.
    fn take_snapshots(&mut self) {
        while let Ok((shard, snapshot)) = self.shards_in.try_recv() {
            if let Some(slot) = self.shards.get_mut(shard as usize) {
                *slot = snapshot;
            }
        }
    }

    /// Ends an episode interval once a `METRICS_TICK` has passed.
    fn tick(&mut self) {
        if self.episodes_ended_at.elapsed() >= METRICS_TICK {
            self.episodes_ended_at = Instant::now();
            self.episodes.end_interval();
            self.shed_episodes.end_interval();
        }
    }
}

impl Acceptor {
    pub fn new(poll: AcceptorPoll, parts: AcceptorParts) -> io::Result<Acceptor> {
        let AcceptorPoll { poll, waker } = poll;
        let listeners = Listeners::register(poll.registry(), parts.main, parts.echo, parts.admin)?;
        let shard_count = parts.shards.len();
        let limits = &parts.config.limits;
        let pending = PendingTable::new(limits);
        let mut api = ApiState::new(parts.mint_secret, waker, parts.store, parts.store_monitor, shard_count);
        api.webhook_monitor = parts.webhook_monitor;
        api.cluster_monitor = parts.cluster_monitor;
        api.cluster = parts.cluster;
        api.announcements = parts.announcements;
        let now = Instant::now();
        Ok(Acceptor {
            poll,
            control: parts.control,
            draining: false,
            listeners,
            pending,
            shards: Shards { handles: parts.shards, to_wake: vec![false; shard_count] },
            api,
            registry: RegistryState::new(parts.registry, shard_count),
            tokens: Tokens {
                verifier: parts.verifier,
                revoked: parts.revoked,
                refresh: RefreshQueue::new(parts.refresh_requests, shard_count),
            },
            counters: Counters {
                acceptor: AcceptorMetrics::default(),
                shards: vec![ShardMetrics::default(); shard_count],
                shards_in: parts.metrics_in,
                episodes: EpisodeLog::default(),
                shed_episodes: ShedLog::default(),
                episodes_ended_at: now,
                started: now,
            },
            config: parts.config,
        })
    }

    /// Runs until told to stop. One iteration: wait, obey the main thread,
    /// serve the ready sockets, then the follow-up phases, each over what
    /// arrived meanwhile, and one wake per shard that was sent anything.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.config.limits.poll_events_max);
        loop {
            self.wait(&mut events)?;
            if self.obey_control() == Control::Stop {
                return Ok(());
            }
            self.on_events(&events);
            self.run_announcements();
            self.take_api_replies();
            self.retry_registry_backlog();
            self.answer_refreshes();
            self.expire_deadlines(Instant::now());
            self.shards.wake_marked();
            self.end_iteration();
        }
    }

    /// Sleeps until an event, the next deadline, or a `METRICS_TICK`.
    fn wait(&mut self, events: &mut Events) -> io::Result<()> {
        // Wake at least once a second to take the shards' metrics snapshots,
        // so /metrics is never older than that.
        let timeout = self
            .pending
            .next_deadline()
            .map_or(METRICS_TICK, |at| at.saturating_duration_since(Instant::now()).min(METRICS_TICK));
        let behind = self.registry.behind() || self.tokens.refresh.behind();
        let timeout = if behind { timeout.min(RETRY_SOON) } else { timeout };
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes the main thread's orders: drain, or stop.
    fn obey_control(&mut self) -> Control {
        while let Ok(msg) = self.control.try_recv() {
            match msg {
                AcceptorMsg::Drain(ack) => {
                    tracing::info!("acceptor draining: /readyz 503, new WebSocket connections refused");
                    self.draining = true;
                    let _ = ack.try_send(());
                }
                AcceptorMsg::Stop => {
                    tracing::info!("acceptor stops accepting");
                    return Control::Stop;
                }
            }
        }
        Control::Run
    }

    fn on_events(&mut self, events: &Events) {
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
            self.counters.hit(LimitKind::PollEventsFull);
        }
    }

    /// Metrics snapshots, episode intervals and the revoked set's upkeep.
    fn end_iteration(&mut self) {
        self.counters.take_snapshots();
        self.counters.tick();
        // Drops expired revocations and retries those the store queue refused.
        self.tokens.revoked.tick(unix_now_s());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Stop,
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
