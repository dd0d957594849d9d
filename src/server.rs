//! Starting and stopping the threads of one roomcast process: N shards, the
//! acceptor, the store thread, and the channels and wakers between them.
//!
//! The store opens (and migrates) before any shard starts, so a database
//! that cannot be opened stops startup; later write failures only make chat
//! non-durable. The listeners are bound last, once the store is open and the
//! shards are built, right before the threads start: there is no window in
//! which the port takes connections that nothing will serve, so `/readyz`
//! never has to say "starting" (before the bind, connections are refused).
//!
//! On shutdown the acceptor drains first (`/readyz` 503, `/ws/…` refused,
//! HTTP still served), then the shards close their connections (bounded by
//! the drain timeout), then the acceptor stops. The store thread outlives
//! them all: it exits once every sender is gone (its queue then disconnects)
//! and it has written everything queued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::acceptor::{self, Acceptor, AcceptorMsg, AcceptorParts, AcceptorPoll};
use crate::auth::{self, AuthSettings, Verifier};
use crate::cluster::{Bridge, BridgeThreads};
use crate::config::{AuthMode, Config};
use crate::ids::{RoomKey, ShardId};
use crate::registry::{Registry, RoomPolicy};
use crate::revocation::RevokedTokens;
use crate::shard::extension::{ClientInfo, Context, HandlerError, HookRefusal};
use crate::shard::{Extensions, RefreshLink, Shard, ShardHandle, ShardSettings};
use crate::store::{Database, Store, StoreEvent, StoreMonitor, StoreSettings, StoreStats};
use crate::webhooks::Webhooks;

/// The entry point of roomcast as a library: [`Server::builder`].
///
/// ```no_run
/// use roomcast::{Config, Context, HandlerError, Server};
///
/// /// Counts the votes of each room: `{"type":"poll.vote","data":{"option":"a"}}`.
/// #[derive(Default)]
/// struct Votes(std::collections::BTreeMap<String, u64>);
///
/// fn vote(ctx: &mut Context<'_>) -> Result<(), HandlerError> {
///     #[derive(serde::Deserialize)]
///     struct Vote { option: String }
///     let data = ctx.data().ok_or_else(|| HandlerError::new("bad_request", "a vote needs data"))?;
///     let vote: Vote = serde_json::from_slice(data).map_err(|_| HandlerError::new("bad_request", "no option"))?;
///     let votes = ctx.room_state::<Votes>()?;
///     *votes.0.entry(vote.option).or_default() += 1;
///     let tally = serde_json::to_vec(&votes.0).map_err(|_| HandlerError::new("internal_error", "tally"))?;
///     ctx.publish(&tally)?;
///     ctx.reply("poll.tally", &tally)
/// }
///
/// fn main() -> anyhow::Result<()> {
///     let config = Config::load(roomcast::config::Sources::default())?;
///     Server::builder().config(config).handler("poll.vote", vote).run()
/// }
/// ```
#[derive(Debug)]
pub struct Server {
    _private: (),
}

impl Server {
    /// A builder with the built-in configuration (`Config::load` of no sources).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Configures a server before it starts: its [`Config`], listener, store,
/// custom message handlers and connection hooks. Nothing runs until
/// [`start`](ServerBuilder::start) or [`run`](ServerBuilder::run).
///
/// Handlers and hooks run on the shard threads, synchronously, inside the
/// shard's event loop: they must not block (no I/O, no locks held long, no
/// sleeping). Their run time counts in the shard's loop time
/// (`roomcast_loop_iteration_seconds`), and every connection of the shard
/// waits while one runs. Hand slow work to a thread of your own.
#[derive(Default)]
pub struct ServerBuilder {
    config: Option<Config>,
    listen: Option<SocketAddr>,
    store: Option<bool>,
    extensions: Extensions,
    /// The first registration mistake, reported by `start`.
    invalid: Option<String>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("listen", &self.listen)
            .field("store", &self.store)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The configuration (else the built-in defaults).
    pub fn config(mut self, config: Config) -> ServerBuilder {
        self.config = Some(config);
        self
    }

    /// The main listener's address, over the config's `listen` (port 0: any free port).
    pub fn listen(mut self, addr: SocketAddr) -> ServerBuilder {
        self.listen = Some(addr);
        self
    }

    /// Whether chat history and the registry are kept in SQLite (`store.enabled`).
    pub fn store(mut self, enabled: bool) -> ServerBuilder {
        self.store = Some(enabled);
        self
    }

    /// Runs `handler` for every client frame of type `kind` (`{"type":KIND,…}`)
    /// in a room the connection is in. It runs on the shard that owns the
    /// room, synchronously, and must not block (see the type's doc). A frame
    /// with a `ref` that the handler does not `reply` to gets an `ack`; an
    /// `Err` becomes an `error` frame with its code. The built-in types
    /// (`publish`, `join`, `echo`, `status`, `chat.*`, …) cannot be taken:
    /// [`start`](ServerBuilder::start) fails.
    pub fn handler<H>(mut self, kind: &str, handler: H) -> ServerBuilder
    where
        H: Fn(&mut Context<'_>) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        if let Err(e) = self.extensions.add_handler(kind, Arc::new(handler)) {
            self.invalid.get_or_insert(e);
        }
        self
    }

    /// Called before a room connection is admitted, with its identity and
    /// URL room. `Err` refuses it: the client gets the refusal's HTTP status
    /// (403 unless set) and `{"error":CODE,"message":M}` instead of the upgrade.
    pub fn on_connect<F>(mut self, hook: F) -> ServerBuilder
    where
        F: Fn(&ClientInfo<'_>, &str) -> Result<(), HookRefusal> + Send + Sync + 'static,
    {
        self.extensions.on_connect = Some(Arc::new(hook));
        self
    }

    /// Called for each `join` request that passed roomcast's own checks.
    /// `Err` refuses it with an `error` frame of the refusal's code.
    pub fn on_join<F>(mut self, hook: F) -> ServerBuilder
    where
        F: Fn(&ClientInfo<'_>, &str) -> Result<(), HookRefusal> + Send + Sync + 'static,
    {
        self.extensions.on_join = Some(Arc::new(hook));
        self
    }

    /// Called after a `leave` request left a room (rooms left by closing
    /// are the disconnect's).
    pub fn on_leave<F>(mut self, hook: F) -> ServerBuilder
    where
        F: Fn(&ClientInfo<'_>, &str) + Send + Sync + 'static,
    {
        self.extensions.on_leave = Some(Arc::new(hook));
        self
    }

    /// Called once a room connection is gone, with its close code (1006
    /// when no Close frame was exchanged).
    pub fn on_disconnect<F>(mut self, hook: F) -> ServerBuilder
    where
        F: Fn(&ClientInfo<'_>, u16) + Send + Sync + 'static,
    {
        self.extensions.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Starts the threads and returns once the listeners are bound.
    pub fn start(self) -> anyhow::Result<ServerHandle> {
        if let Some(invalid) = self.invalid {
            anyhow::bail!("{invalid}");
        }
        let mut config = match self.config {
            Some(config) => config,
            None => Config::load(crate::config::Sources::default())?,
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(store) = self.store {
            config.store.enabled = store;
        }
        let (shards, auth_mode) = (config.shards, config.auth.mode);
        let handle = ServerHandle::start(config, self.extensions)?;
        tracing::info!(addr = %handle.local_addr(), shards, auth = auth_mode.as_str(), "roomcast listening");
        if let Some(echo) = handle.echo_addr() {
            tracing::info!(addr = %echo, "echo listener (no auth) open");
        }
        Ok(handle)
    }

    /// Starts, blocks until SIGTERM or SIGINT, then drains (within
    /// `shutdown.drain_timeout_ms`) and returns.
    pub fn run(self) -> anyhow::Result<()> {
        // Installed before "listening" is logged, so a SIGTERM right after it
        // (tests, supervisors) drains instead of killing the process.
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
                .context("install signal handlers")?;
        let handle = self.start()?;
        let _ = signals.forever().next();
        tracing::info!(drain_ms = handle.drain.as_millis() as u64, "stop signal: draining");
        handle.shutdown();
        tracing::info!("stopped");
        Ok(())
    }
}

/// A running server: its addresses, and [`shutdown`](ServerHandle::shutdown).
pub struct ServerHandle {
    local_addr: SocketAddr,
    echo_addr: Option<SocketAddr>,
    drain: Duration,
    shards: Vec<ShardHandle>,
    shard_threads: Vec<JoinHandle<()>>,
    acceptor_thread: JoinHandle<()>,
    acceptor_control: Sender<AcceptorMsg>,
    acceptor_waker: Arc<Waker>,
    store_thread: Option<JoinHandle<StoreStats>>,
    /// The webhook thread; `None` with no `[[webhooks]]`.
    webhooks: Option<Webhooks>,
    /// The cluster bridge; `None` without `cluster.redis`.
    bridge: Option<BridgeThreads>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// Builds the token verifier from `[auth]` and the HS secret (`jwt_secret`);
/// `None` in dev mode.
pub(crate) fn build_verifier(config: &Config, hs_secret: Option<Vec<u8>>) -> anyhow::Result<Option<Arc<Verifier>>> {
    let Some(hs_secret) = hs_secret.filter(|_| config.auth.mode != AuthMode::None) else {
        return Ok(None);
    };
    let public_key_pem = match (&config.auth.public_key_file, &config.auth.public_key_alg) {
        (Some(file), Some(alg)) => {
            let pem = std::fs::read(file).with_context(|| format!("auth.public_key_file {}", file.display()))?;
            Some((pem, alg.clone()))
        }
        _ => None,
    };
    let jwks_json = match &config.auth.jwks_file {
        Some(file) => Some(std::fs::read(file).with_context(|| format!("auth.jwks_file {}", file.display()))?),
        None => None,
    };
    let settings = AuthSettings {
        hs_secret: Some(hs_secret),
        public_key_pem,
        jwks_json,
        audience: config.auth.audience.clone(),
        issuer: config.auth.issuer.clone(),
        leeway_s: config.auth.leeway_s,
        token_bytes_max: config.auth.token_bytes_max,
    };
    Ok(Some(Arc::new(Verifier::new(&settings).context("auth")?)))
}

/// The server's HS secret: `auth.jwt_secret` when set, else the one in the
/// data directory, created there if there is none. Where it lives, and
/// whether it was just created, is logged: a token minted with another secret
/// is refused `401 token_bad_signature`, and this line says which one to use.
pub(crate) fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.jwt_secret {
        tracing::info!(source = "auth.jwt_secret", "jwt secret");
        return Ok(secret.as_bytes().to_vec());
    }
    let path = auth::secret_path(&config.data_dir);
    let loaded =
        auth::load_or_create_secret(&config.data_dir).with_context(|| format!("JWT secret in {}", path.display()))?;
    let origin = if loaded.created { "created" } else { "read" };
    tracing::info!(path = %path.display(), origin, "jwt secret");
    Ok(loaded.secret)
}

impl ServerHandle {
    /// Opens the store, builds the shards, binds the listeners, then starts
    /// the store, shard and acceptor threads, in that order (see the module doc).
    fn start(config: Config, extensions: Extensions) -> anyhow::Result<ServerHandle> {
        // A bad `cluster.redis` (or rediss://) stops startup first, before
        // anything is created, not after `Bridge::connect`'s retries.
        if let Some(url) = &config.cluster.redis {
            crate::cluster::check_url(url)?;
        }
        let config = Arc::new(config);
        let mint_secret = match config.auth.mode {
            AuthMode::Jwt => Some(jwt_secret(&config)?),
            AuthMode::None => None,
        };
        let verifier = build_verifier(&config, mint_secret.clone())?;
        let database = open_database(&config)?;
        let boot = database.as_ref().map_or_else(unix_now_ms, |db| db.boot);
        let (store_tx, store_rx) = crossbeam_channel::bounded(config.store.queue_max);
        // The acceptor's clone (HTTP API reads) is dropped when its thread
        // ends, after the shards have stopped; then the store sees its queue close.
        let acceptor_store = database.is_some().then(|| store_tx.clone());
        let revoked = load_revoked_tokens(&config, database.as_ref(), acceptor_store.clone())?;
        let (registered, registry) = load_registry(&config, database.as_ref())?;
        let stored_chat = match &database {
            Some(db) => db.chat_rooms().context("rooms with stored chat")?,
            None => Vec::new(),
        };
        // Before the shards, which will hold its handles (events leave the
        // process from this thread only, never from a shard's loop).
        let webhooks = start_webhooks(&config)?;

        // The acceptor's poll comes first: the shards need its waker to send it refreshes.
        let acceptor_poll = AcceptorPoll::new().context("acceptor poll")?;
        let (refresh_tx, refresh_rx) = crossbeam_channel::bounded(acceptor::REFRESH_QUEUE_MAX);
        let (metrics_tx, metrics_rx) = crossbeam_channel::bounded(config.shards * 4);
        // Before the shards: the node's number in the cluster is part of every connection id.
        let bridge = match config.cluster.enabled() {
            true => Some(Bridge::connect(&config.cluster, config.shards)?),
            false => None,
        };
        let settings = Arc::new(ShardSettings {
            limits: config.limits.clone(),
            rooms: config.rooms.clone(),
            shards: config.shards,
            token_leeway_s: config.auth.leeway_s,
            refresh: verifier.is_some().then(|| RefreshLink { requests: refresh_tx, waker: acceptor_poll.waker() }),
            metrics_out: metrics_tx,
            store: database.is_some().then_some(store_tx),
            boot,
            connection_log_lines_per_s: config.log.connection_lines_per_s,
            extensions,
            webhooks: webhooks.as_ref().map(Webhooks::handle),
            cluster: bridge.as_ref().map(Bridge::queue),
        });
        let (built, shards) = build_shards(&config, &settings, &registered, &stored_chat)?;

        // Everything that can take time or fail slowly is done: bind now, so
        // a connection the kernel accepts is served at once.
        let listeners = bind_listeners(&config)?;
        let (store_thread, store_monitor) = spawn_store(&config, database, store_rx, &shards)?;
        let shard_threads = spawn_shards(&config, built, &shards)?;
        let cluster_monitor = bridge.as_ref().map(Bridge::monitor);
        // Other nodes' admin requests reach the acceptor (`acceptor::announce`).
        let (announce_tx, announce_rx) = crossbeam_channel::bounded(acceptor::ANNOUNCEMENTS_MAX);
        let cluster_queue = bridge.as_ref().map(Bridge::queue);
        let announcements = crate::msg::Reply::new(announce_tx, acceptor_poll.waker());
        let bridge = bridge.map(|bridge| bridge.start(shards.clone(), Some(announcements))).transpose()?;

        let (control_tx, control_rx) = crossbeam_channel::bounded(4);
        let acceptor_waker = acceptor_poll.waker();
        let parts = AcceptorParts {
            main: listeners.main,
            echo: listeners.echo,
            admin: listeners.admin,
            config: Arc::clone(&config),
            verifier,
            mint_secret,
            shards: shards.clone(),
            control: control_rx,
            metrics_in: metrics_rx,
            refresh_requests: refresh_rx,
            store: acceptor_store,
            store_monitor,
            webhook_monitor: webhooks.as_ref().map(Webhooks::monitor),
            cluster_monitor,
            announcements: cluster_queue.is_some().then_some(announce_rx),
            cluster: cluster_queue,
            revoked,
            registry,
        };
        let acceptor_thread = spawn_acceptor(acceptor_poll, parts)?;
        Ok(ServerHandle {
            drain: Duration::from_millis(config.shutdown.drain_timeout_ms),
            local_addr: listeners.local_addr,
            echo_addr: listeners.echo_addr,
            shards,
            shard_threads,
            acceptor_thread,
            acceptor_control: control_tx,
            acceptor_waker,
            store_thread,
            webhooks,
            bridge,
        })
    }

    /// The main listener's address (with its real port when `listen` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The echo listener's address, when `echo_listen` is set.
    pub fn echo_addr(&self) -> Option<SocketAddr> {
        self.echo_addr
    }

    /// Which shard owns `room` of `tenant` (`""` without tenants), out of
    /// `shards`: the shard that runs the room's handlers and holds its state.
    pub fn shard_of(tenant: &str, room: &str, shards: usize) -> usize {
        usize::from(RoomKey::new(tenant, room).shard(shards))
    }

    /// [`shutdown_within`](ServerHandle::shutdown_within) the configured
    /// `shutdown.drain_timeout_ms`.
    pub fn shutdown(self) {
        let drain = self.drain;
        self.shutdown_within(drain);
    }

    /// Drains and stops, at most `drain` long (plus the store's last
    /// writes): the acceptor turns not-ready but keeps answering HTTP, every
    /// connection gets 1001, and once the shards are done (or the time is
    /// up) the acceptor stops.
    pub fn shutdown_within(self, drain: Duration) {
        let deadline = Instant::now() + drain;
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self.acceptor_control.try_send(AcceptorMsg::Drain(ack_tx)).is_ok() {
            let _ = self.acceptor_waker.wake();
            // `/readyz` says 503 before any client hears its 1001. An
            // acceptor that has died does not hold the drain up: its end of
            // the channel is gone, and the wait returns.
            let _ = ack_rx.recv_deadline(deadline);
        }
        for shard in &self.shards {
            shard.drain(deadline);
        }
        // Each shard returns once its connections are gone or at the deadline.
        for thread in self.shard_threads {
            let _ = thread.join();
        }
        let _ = self.acceptor_control.try_send(AcceptorMsg::Stop);
        let _ = self.acceptor_waker.wake();
        let _ = self.acceptor_thread.join();
        // The shards and the acceptor held the store's only senders: it now
        // writes what is left in its queue and returns.
        if let Some(store) = self.store_thread {
            let _ = store.join();
        }
        // The shards and the acceptor held the bridge's queue: it now leaves
        // the cluster and stops.
        if let Some(bridge) = self.bridge {
            bridge.join();
        }
        // Likewise for the webhooks: with every source gone, it gives what it
        // holds one last attempt (bounded by the endpoints' timeouts).
        if let Some(webhooks) = self.webhooks {
            webhooks.stop();
        }
    }
}

/// Starts the webhook thread when `[[webhooks]]` lists any endpoint.
fn start_webhooks(config: &Config) -> anyhow::Result<Option<Webhooks>> {
    let webhooks = Webhooks::start(&config.webhooks, &config.webhook_limits).context("webhook thread")?;
    if webhooks.is_some() {
        let urls: Vec<&str> = config.webhooks.iter().map(|webhook| webhook.url.as_str()).collect();
        tracing::info!(?urls, "webhooks on");
    }
    Ok(webhooks)
}

/// Opens (and migrates) the database; `None` with `--no-store`.
fn open_database(config: &Config) -> anyhow::Result<Option<Database>> {
    if !config.store.enabled {
        tracing::info!("store off (--no-store): chat history is kept in memory only");
        return Ok(None);
    }
    let db = Database::open(&config.data_dir, config.store.synchronous)
        .with_context(|| format!("store in {}", config.data_dir.display()))?;
    db.set_busy_timeout(Duration::from_millis(config.store.busy_timeout_ms)).context("store.busy_timeout_ms")?;
    db.set_cache_kib(config.store.cache_kib).context("store.cache_kib")?;
    let path = config.data_dir.join(crate::store::DB_FILE);
    tracing::info!(path = %path.display(), boot = db.boot, "store open");
    Ok(Some(db))
}

/// Revoked and spent single-use tokens: loaded once here, then kept by the acceptor.
fn load_revoked_tokens(
    config: &Config,
    database: Option<&Database>,
    store: Option<Sender<StoreEvent>>,
) -> anyhow::Result<RevokedTokens> {
    let loaded = match database {
        Some(db) => db.revoked_tokens(unix_now_ms() / 1000).context("load revoked tokens")?,
        None => Vec::new(),
    };
    Ok(RevokedTokens::new(loaded, store, config.limits.revoked_tokens_max))
}

/// The room registry: loaded once here; the acceptor keeps its copy
/// current, and each shard gets the rooms it owns. Returns both.
fn load_registry(
    config: &Config,
    database: Option<&Database>,
) -> anyhow::Result<(Vec<(RoomKey, RoomPolicy)>, Registry)> {
    let registered: Vec<(RoomKey, RoomPolicy)> = match database {
        Some(db) => db.registry().context("load the room registry")?,
        None => Vec::new(),
    }
    .iter()
    .map(|room| (RoomKey::new(&room.tenant, &room.id), RoomPolicy::of(room)))
    .collect();
    let registry = Registry::new(registered.clone(), config.rooms.registry_max).map_err(|_| {
        anyhow::anyhow!(
            "the registry holds {} rooms, more than rooms.registry_max ({})",
            registered.len(),
            config.rooms.registry_max
        )
    })?;
    Ok((registered, registry))
}

/// Builds every shard (not yet running) with the registry rooms it owns, and their handles.
fn build_shards(
    config: &Config,
    settings: &Arc<ShardSettings>,
    registered: &[(RoomKey, RoomPolicy)],
    stored_chat: &[(String, String)],
) -> anyhow::Result<(Vec<Shard>, Vec<ShardHandle>)> {
    let mut built = Vec::with_capacity(config.shards);
    let mut shards = Vec::with_capacity(config.shards);
    let chat_keys: Vec<RoomKey> = stored_chat.iter().map(|(tenant, room)| RoomKey::new(tenant, room)).collect();
    for id in 0..config.shards {
        let (mut shard, handle) = Shard::new(id as ShardId, Arc::clone(settings)).context("create shard")?;
        let owned = registered.iter().filter(|(key, _)| key.shard(config.shards) as usize == id);
        shard.load_registry(owned.cloned().collect());
        shard.load_stored_chat(chat_keys.iter().filter(|key| key.shard(config.shards) as usize == id));
        built.push(shard);
        shards.push(handle);
    }
    Ok((built, shards))
}

/// The bound listeners and their addresses.
struct BoundListeners {
    main: std::net::TcpListener,
    echo: Option<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    local_addr: SocketAddr,
    echo_addr: Option<SocketAddr>,
}

/// Binds `listen`, and `echo_listen` and `admin_listen` when configured.
fn bind_listeners(config: &Config) -> anyhow::Result<BoundListeners> {
    let main = acceptor::bind(config.listen, config.net.backlog, config.net.reuseport)
        .with_context(|| format!("listen on {}", config.listen))?;
    let local_addr = main.local_addr()?;
    let echo = match config.echo_listen {
        Some(addr) => {
            Some(acceptor::bind(addr, config.net.backlog, false).with_context(|| format!("echo_listen on {addr}"))?)
        }
        None => None,
    };
    let echo_addr = echo.as_ref().map(|l| l.local_addr()).transpose()?;
    let admin = match config.admin_listen {
        Some(addr) => {
            Some(acceptor::bind(addr, config.net.backlog, false).with_context(|| format!("admin_listen on {addr}"))?)
        }
        None => None,
    };
    if let Some(admin) = &admin {
        tracing::info!(addr = %admin.local_addr()?, "admin listener (HTTP API, /metrics) open");
    }
    Ok(BoundListeners { main, echo, admin, local_addr, echo_addr })
}

/// Starts the store thread; returns it and its figures' monitor (neither
/// with `--no-store`).
fn spawn_store(
    config: &Config,
    database: Option<Database>,
    queue: Receiver<StoreEvent>,
    shards: &[ShardHandle],
) -> anyhow::Result<(Option<JoinHandle<StoreStats>>, Option<StoreMonitor>)> {
    let Some(db) = database else { return Ok((None, None)) };
    let settings = StoreSettings {
        batch_max: config.store.batch_max,
        outbox_max: config.store.outbox_max,
        audit_retention_days: config.store.audit_retention_days,
        chat_history_max: config.rooms.history_max,
        audit_linger: Duration::from_millis(config.store.audit_linger_ms),
    };
    let store = Store::new(db, queue, shards.iter().map(ShardHandle::store_reply).collect(), &settings);
    let monitor = store.monitor();
    let nice = config.store.thread_nice;
    let thread = std::thread::Builder::new().name("store".into()).spawn(move || {
        lower_current_thread_priority("store", nice);
        store.run()
    })?;
    Ok((Some(thread), Some(monitor)))
}

/// Starts one thread per shard, each pinned to its core with `pin = true`.
fn spawn_shards(config: &Config, built: Vec<Shard>, shards: &[ShardHandle]) -> anyhow::Result<Vec<JoinHandle<()>>> {
    // Read on this thread before any shard pins itself (a thread inherits the mask).
    let cores = allowed_cores();
    let mut shard_threads = Vec::with_capacity(config.shards);
    for (id, mut shard) in built.into_iter().enumerate() {
        shard.connect_peers(shards.to_vec());
        let id = id as ShardId;
        let pin = config.pin.then(|| cores[id as usize % cores.len()]);
        let thread = std::thread::Builder::new().name(format!("shard-{id}")).spawn(move || {
            if let Some(core) = pin {
                pin_current_thread(id, core);
            }
            if let Err(e) = shard.run() {
                tracing::error!(shard = id, error = %e, "shard stopped");
            }
        })?;
        shard_threads.push(thread);
    }
    Ok(shard_threads)
}

/// Builds the acceptor on its poll and starts its thread.
fn spawn_acceptor(poll: AcceptorPoll, parts: AcceptorParts) -> anyhow::Result<JoinHandle<()>> {
    let mut acceptor = Acceptor::new(poll, parts)?;
    let thread = std::thread::Builder::new().name("acceptor".into()).spawn(move || {
        if let Err(e) = acceptor.run() {
            tracing::error!(error = %e, "acceptor stopped");
        }
    })?;
    Ok(thread)
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The cores this process may run on (its affinity mask, so `taskset -c 2,3
/// roomcast serve --pin` pins shards to 2 and 3), in order; core 0 alone
/// when the mask cannot be read.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity(0, …) writes only
    // inside it, and CPU_ISSET reads inside it for indexes below CPU_SETSIZE.
    let cores: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            Vec::new()
        } else {
            (0..libc::CPU_SETSIZE as usize).filter(|&core| libc::CPU_ISSET(core, &set)).collect()
        }
    };
    if cores.is_empty() { vec![0] } else { cores }
}

/// Lowers the calling thread's priority by `steps` nice steps (the thread's
/// own niceness: Linux keeps one per thread), logging the outcome either way.
fn lower_current_thread_priority(thread: &str, steps: i32) {
    if steps == 0 {
        return;
    }
    // SAFETY: `__errno_location` points at this thread's errno; `nice`
    // changes only the calling thread's niceness on Linux. errno is cleared
    // first because -1 is also a valid niceness.
    let (niceness, errno) = unsafe {
        *libc::__errno_location() = 0;
        let niceness = libc::nice(steps);
        (niceness, *libc::__errno_location())
    };
    if niceness == -1 && errno != 0 {
        tracing::warn!(thread, steps, error = %std::io::Error::from_raw_os_error(errno), "thread priority not lowered");
    } else {
        tracing::info!(thread, niceness, "thread priority lowered");
    }
}

/// Pins the calling thread to `core`, logging the outcome either way.
fn pin_current_thread(shard: ShardId, core: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it,
    // and sched_setaffinity(0, …) affects only the calling thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        tracing::info!(shard, core, "shard pinned to core");
    } else {
        tracing::warn!(shard, core, error = %std::io::Error::last_os_error(), "shard not pinned");
    }
}
