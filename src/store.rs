//! The store thread: one thread owns the SQLite connection (`<data_dir>/roomcast.db`,
//! WAL mode) and writes what the shards send it in batched transactions.
//! Shards never block on it: they `try_send` [`StoreEvent`]s over one bounded
//! channel (`store.queue_max`) and get [`StoreReply`]s back over each shard's
//! bounded store-reply channel plus its waker.
//!
//! A batch is everything queued when the thread wakes, up to `store.batch_max`
//! events, in one transaction; so under a chat stream one commit (one fsync)
//! covers many messages. Only after the commit are the senders' acks sent
//! (`StoreReply::Committed`), so an acknowledged chat message is on disk.
//! History queries (`LoadHistory`) are answered in the order they were queued
//! relative to the writes of the same shard, so an answer holds every message
//! the owner sent before asking and none after.
//!
//! Failures (disk full, read-only file system, I/O errors) do not stop the
//! server: the batch is rolled back, every chat message in it is answered
//! `StoreReply::Failed` (the shard sends `error` `store_failed` and counts it),
//! and each distinct cause is logged once at `error` (then at `debug`).
//!
//! Schema migrations are versioned (`schema_version`) and run once, in order,
//! when the store opens; a database written by a newer roomcast is refused.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::ids::{ConnId, RoomKey, ShardId};
use crate::metrics::LatencyHistogram;
use crate::shard::{AdminAnswer, AdminReply, ShardHandle};

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "roomcast.db";
/// Reply batches that may wait for one shard's store-reply channel.
pub const REPLY_CHANNEL_MAX: usize = 1024;
/// First and longest wait before replies held back by a full shard channel
/// are offered again: the wait doubles while the shard stays full, so a
/// stalled shard costs the store a few wake-ups a second, not a busy loop.
const REPLY_RETRY_FIRST: Duration = Duration::from_millis(1);
const REPLY_RETRY_MAX: Duration = Duration::from_millis(100);
/// How long SQLite waits on a lock held by another process while the
/// database is opened and migrated; the store thread then uses
/// `store.busy_timeout_ms`.
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the store's housekeeping runs (also once at start): old
/// session audit rows and expired revoked tokens are deleted.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
/// Close code of an audit row whose connection dropped without a Close
/// frame, or was still open when its process stopped.
pub const CLOSE_ABNORMAL: u16 = 1006;
const DAY_MS: i64 = 86_400_000;

/// The schema, one migration per version: `MIGRATIONS[i]` takes the
/// database from version `i` to `i + 1`. Append only; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: chat history and the boot counter (epochs).
    "CREATE TABLE chat (
        tenant TEXT NOT NULL,
        room TEXT NOT NULL,
        epoch TEXT NOT NULL,
        seq INTEGER NOT NULL,
        msg_id TEXT NOT NULL,
        author TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        json BLOB NOT NULL
    );
    CREATE INDEX chat_by_room ON chat (tenant, room);
    CREATE INDEX chat_by_id ON chat (tenant, room, msg_id);
    CREATE TABLE boots (id INTEGER PRIMARY KEY AUTOINCREMENT, started_ms INTEGER NOT NULL);",
    // 2: session audit (one row per connection) and the room registry.
    "CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        boot INTEGER NOT NULL,
        conn TEXT NOT NULL,
        tenant TEXT NOT NULL,
        room TEXT NOT NULL,
        user TEXT NOT NULL,
        peer TEXT NOT NULL,
        connected_ms INTEGER NOT NULL,
        disconnected_ms INTEGER,
        close_code INTEGER
    );
    CREATE INDEX sessions_by_room ON sessions (tenant, room, connected_ms);
    CREATE INDEX sessions_by_time ON sessions (connected_ms);
    CREATE UNIQUE INDEX sessions_by_conn ON sessions (boot, conn);
    CREATE TABLE rooms (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT,
        description TEXT,
        capacity INTEGER,
        lobby INTEGER,
        private INTEGER NOT NULL DEFAULT 0,
        history_max INTEGER,
        metadata TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, id)
    );",
    // 3: revoked and used single-use tokens, by jti, kept until they expire.
    "CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_s INTEGER NOT NULL,
        revoked_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );",
    // 4: earlier versions stored an `exp` past i64::MAX as a negative number,
    // which read as long expired: such a row meant "never expires".
    "UPDATE revoked_tokens SET expires_s = 9223372036854775807 WHERE expires_s < 0;",
];

/// What shards send the store.
#[derive(Debug)]
pub enum StoreEvent {
    /// A chat message to append; its sender is answered after the commit.
    Chat(Box<ChatRecord>),
    /// `chat.delete`: the newest stored message of the room with this id goes.
    ChatDelete { key: RoomKey, id: Box<str> },
    /// The last `limit` stored messages of `key`, for room incarnation `load`
    /// on `shard` (answered with `StoreReply::History`).
    LoadHistory { key: RoomKey, load: u64, shard: ShardId, limit: u32 },
    /// A room connection was admitted: its audit row starts.
    SessionOpen(Box<SessionOpen>),
    /// A room connection was freed: its audit row ends.
    SessionClose { conn: ConnId, disconnected_ms: u64, close_code: u16 },
    /// A read for the HTTP API, answered to the acceptor after the batch.
    Query(Box<StoreQuery>),
    /// A revoked or spent single-use token (from the acceptor), kept in
    /// `revoked_tokens` until `expires_s` (`src/revocation.rs`).
    Revoke { jti: Box<str>, expires_s: u64, revoked_ms: u64, reason: &'static str },
}

impl StoreEvent {
    /// A session audit event: written in batches nobody waits for.
    fn is_audit(&self) -> bool {
        matches!(self, StoreEvent::SessionOpen(_) | StoreEvent::SessionClose { .. })
    }
}

/// The start of one session audit row (one per room connection).
#[derive(Debug)]
pub struct SessionOpen {
    pub conn: ConnId,
    /// The home room (the URL's `/ws/{room}`) in its tenant; shared, not copied.
    pub key: RoomKey,
    pub user: Box<str>,
    /// The peer's address as the acceptor saw it; written as `ip:port`
    /// ("" when unknown) by the store thread, not the shard.
    pub peer: Option<std::net::SocketAddr>,
    pub connected_ms: u64,
}

/// An HTTP API request the store answers: the reply goes to the acceptor's
/// API reply channel with `ticket`, then its waker is woken.
#[derive(Debug)]
pub struct StoreQuery {
    pub ticket: u64,
    pub request: QueryRequest,
    pub reply: Sender<AdminReply>,
    pub waker: Arc<Waker>,
}

/// What the HTTP API asks the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRequest {
    /// Sessions per UTC day, `from_day..=to_day` (days since 1970-01-01),
    /// of `room` (all rooms when `None`) in `tenant`.
    Usage {
        tenant: String,
        room: Option<String>,
        from_day: i64,
        to_day: i64,
    },
    /// Room registry: add `room` unless its id exists in its tenant.
    RoomCreate(Box<RoomRecord>),
    /// Room registry: replace an existing room (its `created_ms` is kept).
    RoomReplace(Box<RoomRecord>),
    RoomGet {
        tenant: String,
        id: String,
    },
    RoomDelete {
        tenant: String,
        id: String,
    },
    /// Registered rooms of `tenant` by id, after `after`, at most `limit`.
    RoomList {
        tenant: String,
        after: Option<String>,
        limit: usize,
    },
}

/// A room of the registry (`rooms` table). `None` fields take the server
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomRecord {
    pub tenant: String,
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub capacity: Option<u32>,
    pub lobby: Option<bool>,
    pub private: bool,
    pub history_max: Option<u32>,
    /// A JSON object, as text.
    pub metadata: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The store's answer to a [`StoreQuery`].
#[derive(Debug, Clone, PartialEq)]
pub enum StoreAnswer {
    /// One entry per day of the range with sessions, oldest first.
    Usage(Vec<DayUsage>),
    /// A registry room: created, replaced or read; `None`: it exists
    /// already (create) or does not exist (replace, get).
    Room(Option<RoomRecord>),
    /// Registry rooms, by id.
    Rooms(Vec<RoomRecord>),
    /// Whether a registry room was deleted.
    Deleted(bool),
    /// The read failed (the cause is logged).
    Failed,
}

/// Usage of one UTC day: sessions that connected that day (days without
/// any are not reported).
#[derive(Debug, Clone, PartialEq)]
pub struct DayUsage {
    /// Days since 1970-01-01.
    pub day: i64,
    pub unique_users: u64,
    pub sessions: u64,
    /// Over the sessions of the day that have ended (`None` when none has).
    pub avg_duration_s: Option<f64>,
    /// Nearest-rank 95th percentile, over the same sessions.
    pub p95_duration_s: Option<f64>,
}

/// One chat message as stored, and who waits for its ack.
#[derive(Debug)]
pub struct ChatRecord {
    pub key: RoomKey,
    /// The room incarnation (`welcome.epoch`) the `seq` belongs to.
    pub epoch: Box<str>,
    pub seq: u64,
    pub id: Box<str>,
    pub author: Box<str>,
    pub ts_ms: u64,
    /// The `chat` event as broadcast, reused verbatim in histories.
    pub json: Box<[u8]>,
    /// The sending connection (its home shard gets the answer).
    pub sender: ConnId,
    /// The request's `ref`: acked after the commit when present.
    pub reference: Option<Box<[u8]>>,
}

/// A stored chat message, oldest first in a history answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChat {
    pub id: Box<str>,
    pub author: Box<str>,
    pub json: Box<[u8]>,
}

/// What the store sends back to a shard.
#[derive(Debug)]
pub enum StoreReply {
    /// The message is committed: ack `reference` with `seq` to `to`.
    Committed { to: ConnId, reference: Box<[u8]>, seq: u64 },
    /// The batch holding the message failed: the message is live but not durable.
    Failed { to: ConnId, reference: Option<Box<[u8]>> },
    /// The stored history of a room, oldest first (empty when the query failed).
    History { key: RoomKey, load: u64, entries: Vec<StoredChat> },
}

/// `store.synchronous`: `full` syncs the WAL at every commit (an ack survives
/// power loss); `normal` only survives a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: schema version {found} is newer than this roomcast knows ({known})", path.display())]
    TooNew { path: PathBuf, found: usize, known: usize },
}

/// An open database: the connection, migrated, and this process's boot number.
pub struct Database {
    conn: Connection,
    /// Increases by one each time the database is opened; part of every room epoch.
    pub boot: u64,
}

impl Database {
    /// Opens (creating if needed) `<dir>/roomcast.db` in WAL mode, runs the
    /// missing migrations and records a new boot.
    pub fn open(dir: &Path, synchronous: Synchronous) -> Result<Database, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { dir: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(sqlite)?;
        migrate(&mut conn, &path)?;
        conn.execute("INSERT INTO boots (started_ms) VALUES (?1)", params![unix_now_ms() as i64]).map_err(sqlite)?;
        let boot = conn.last_insert_rowid() as u64;
        Ok(Database { conn, boot })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> rusqlite::Result<usize> {
        current_version(&self.conn)
    }

    /// Revoked and spent single-use tokens still to refuse at `now_s`
    /// (`jti`, `expires_s`); expired rows are deleted first. The acceptor
    /// owns the in-memory set these feed (`src/revocation.rs`).
    pub fn revoked_tokens(&self, now_s: u64) -> rusqlite::Result<Vec<(String, u64)>> {
        delete_expired_revocations(&self.conn, now_s)?;
        let mut select = self.conn.prepare("SELECT jti, expires_s FROM revoked_tokens")?;
        let rows = select.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?.max(0) as u64)))?;
        rows.collect()
    }

    /// Every registered room (all tenants), as the live server applies it.
    pub fn registry(&self) -> rusqlite::Result<Vec<RoomRecord>> {
        let mut select = self.conn.prepare(&format!("SELECT {ROOM_COLUMNS} FROM rooms"))?;
        let rows = select.query_map([], room_row)?;
        rows.collect()
    }
    /// How long the store thread waits for a lock another process holds
    /// (`store.busy_timeout_ms`; 0 fails at once) before its transaction fails.
    pub fn set_busy_timeout(&self, timeout: Duration) -> rusqlite::Result<()> {
        self.conn.busy_timeout(timeout)
    }

    /// SQLite's page cache for this connection (`store.cache_kib`).
    pub fn set_cache_kib(&self, kib: u32) -> rusqlite::Result<()> {
        // A negative cache_size is a size in KiB, not a page count.
        self.conn.pragma_update(None, "cache_size", -i64::from(kib))
    }
}

/// Deletes the `revoked_tokens` rows whose token has expired by `now_s`.
fn delete_expired_revocations(conn: &Connection, now_s: u64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM revoked_tokens WHERE expires_s <= ?1", params![sql_int(now_s)])
}

/// A `u64` as SQLite's signed 64-bit integer: values past `i64::MAX` (an
/// `exp` far in the future) are stored as `i64::MAX`, never as a negative
/// number that would read as long past.
fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Brings the schema to `MIGRATIONS.len()`, one transaction per version.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", []).map_err(sqlite)?;
    let found = current_version(conn).map_err(sqlite)?;
    if found > MIGRATIONS.len() {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found, known: MIGRATIONS.len() });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.execute("DELETE FROM schema_version", []).map_err(sqlite)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", params![(version + 1) as i64])
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        tracing::info!(version = version + 1, "store schema migrated");
    }
    Ok(())
}

fn current_version(conn: &Connection) -> rusqlite::Result<usize> {
    let version: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |row| row.get(0)).optional()?.flatten();
    Ok(version.unwrap_or(0) as usize)
}

/// What a row the store writes is, for `roomcast_store_rows_*_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Chat,
    /// A `chat.delete` (a DELETE statement, counted like a row).
    ChatDelete,
    SessionOpen,
    SessionClose,
    RevokedToken,
}

impl RowKind {
    pub const ALL: [RowKind; 5] =
        [RowKind::Chat, RowKind::ChatDelete, RowKind::SessionOpen, RowKind::SessionClose, RowKind::RevokedToken];

    pub fn name(self) -> &'static str {
        match self {
            RowKind::Chat => "chat",
            RowKind::ChatDelete => "chat_delete",
            RowKind::SessionOpen => "session_open",
            RowKind::SessionClose => "session_close",
            RowKind::RevokedToken => "revoked_token",
        }
    }

    /// The row `event` writes; `None` for reads.
    fn of(event: &StoreEvent) -> Option<RowKind> {
        match event {
            StoreEvent::Chat(_) => Some(RowKind::Chat),
            StoreEvent::ChatDelete { .. } => Some(RowKind::ChatDelete),
            StoreEvent::SessionOpen(_) => Some(RowKind::SessionOpen),
            StoreEvent::SessionClose { .. } => Some(RowKind::SessionClose),
            StoreEvent::Revoke { .. } => Some(RowKind::RevokedToken),
            StoreEvent::LoadHistory { .. } | StoreEvent::Query(_) => None,
        }
    }
}

/// Rows the store deletes to keep its tables bounded, for
/// `roomcast_store_rows_pruned_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneKind {
    /// Chat rows past their room's history limit.
    Chat,
    /// Session audit rows past `store.audit_retention_days`.
    Session,
    /// Revoked tokens whose token has expired.
    RevokedToken,
}

impl PruneKind {
    pub const ALL: [PruneKind; 3] = [PruneKind::Chat, PruneKind::Session, PruneKind::RevokedToken];

    pub fn name(self) -> &'static str {
        match self {
            PruneKind::Chat => "chat",
            PruneKind::Session => "session",
            PruneKind::RevokedToken => "revoked_token",
        }
    }
}

/// Upper bounds (events) of the buckets of `roomcast_store_batch_events`.
const BATCH_BUCKETS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];
/// Upper bounds (µs) of the buckets of `roomcast_store_commit_seconds`.
const COMMIT_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Batches counted by their number of events, exactly (fixed buckets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSizes {
    /// `counts[i]`: batches of at most `BATCH_BUCKETS[i]` events (and more
    /// than the bucket before); the last entry counts the larger ones.
    pub counts: [u64; BATCH_BUCKETS.len() + 1],
    pub sum: u64,
}

impl BatchSizes {
    fn record(&mut self, events: u64) {
        let bucket = BATCH_BUCKETS.iter().position(|&le| events <= le).unwrap_or(BATCH_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += events;
    }
}

/// The store thread's counters and gauges. The thread updates them under a
/// mutex once per batch; the acceptor copies them when it renders
/// `/metrics` (through a [`StoreMonitor`]), so they are as fresh as the last
/// batch. Logged at exit.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Batches taken from the queue (each one transaction).
    pub batches: u64,
    pub events: u64,
    pub chats: u64,
    pub largest_batch: u64,
    /// Batches whose transaction failed (rolled back).
    pub failed_batches: u64,
    /// Rows committed, by [`RowKind`].
    pub rows_written: [u64; RowKind::ALL.len()],
    /// Rows lost in failed batches, by [`RowKind`]: chat was answered
    /// `store_failed`; audit rows and revocations have no one to tell.
    pub rows_failed: [u64; RowKind::ALL.len()],
    /// Rows deleted by the store's bounds, by [`PruneKind`].
    pub rows_pruned: [u64; PruneKind::ALL.len()],
    pub batch_sizes: BatchSizes,
    /// From the start of a batch's transaction (waits for a lock included)
    /// to its commit or failure, µs.
    pub commit_us: LatencyHistogram,
    /// The last batch that writes failed; cleared by the next that commits.
    pub failing: bool,
    /// The batch being written now: when it started and its events. A
    /// transaction stuck on a lock or a slow disk shows here while it lasts.
    pub running: Option<(Instant, u64)>,
    /// Gauge: replies held for shards whose store-reply channel is full.
    pub outbox_replies: u64,
    /// Acks and `store_failed` answers dropped at `store.outbox_max`.
    pub replies_dropped: u64,
    /// History answers sent without their entries at `store.outbox_max`.
    pub histories_emptied: u64,
    /// HTTP API reads that failed (answered 500 `store_failed`).
    pub queries_failed: u64,
}

/// The acceptor's handle on the store thread's [`StoreStats`].
#[derive(Debug, Clone, Default)]
pub struct StoreMonitor(Arc<Mutex<StoreStats>>);

impl StoreMonitor {
    /// A copy of the stats as of the last batch.
    pub fn snapshot(&self) -> StoreStats {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, StoreStats> {
        // Counters stay meaningful even if a holder panicked mid-update.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `/metrics` shows of the store, gathered when the page is rendered.
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    /// Events waiting in the store queue now.
    pub queue_depth: usize,
    /// `store.queue_max`.
    pub queue_max: usize,
    pub stats: StoreStats,
}

impl StoreGauges {
    /// Appends the `roomcast_store_*` families in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        let scalars: [(&str, &str, u64); 8] = [
            ("roomcast_store_queue_depth", "gauge", self.queue_depth as u64),
            ("roomcast_store_queue_max", "gauge", self.queue_max as u64),
            ("roomcast_store_healthy", "gauge", u64::from(!s.failing)),
            ("roomcast_store_batches_total", "counter", s.batches),
            ("roomcast_store_failed_batches_total", "counter", s.failed_batches),
            ("roomcast_store_outbox_replies", "gauge", s.outbox_replies),
            ("roomcast_store_queries_failed_total", "counter", s.queries_failed),
            ("roomcast_store_largest_batch_events", "gauge", s.largest_batch),
        ];
        for (name, kind, value) in scalars {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
        }
        let (running_s, running_events) =
            s.running.map_or((0.0, 0), |(since, events)| (since.elapsed().as_secs_f64(), events));
        let _ = writeln!(
            out,
            "# TYPE roomcast_store_batch_running_seconds gauge\nroomcast_store_batch_running_seconds {running_s}"
        );
        let _ = writeln!(
            out,
            "# TYPE roomcast_store_batch_running_events gauge\nroomcast_store_batch_running_events {running_events}"
        );
        for (name, rows) in [
            ("roomcast_store_rows_written_total", &s.rows_written),
            ("roomcast_store_rows_failed_total", &s.rows_failed),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            for kind in RowKind::ALL {
                let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", kind.name(), rows[kind as usize]);
            }
        }
        let _ = writeln!(out, "# TYPE roomcast_store_rows_pruned_total counter");
        for kind in PruneKind::ALL {
            let _ = writeln!(
                out,
                "roomcast_store_rows_pruned_total{{kind=\"{}\"}} {}",
                kind.name(),
                s.rows_pruned[kind as usize]
            );
        }
        let _ = writeln!(out, "# TYPE roomcast_store_replies_dropped_total counter");
        let _ = writeln!(out, "roomcast_store_replies_dropped_total{{kind=\"chat\"}} {}", s.replies_dropped);
        let _ = writeln!(out, "roomcast_store_replies_dropped_total{{kind=\"history\"}} {}", s.histories_emptied);

        let name = "roomcast_store_commit_seconds";
        let histogram = &s.commit_us.0;
        let _ = writeln!(out, "# TYPE {name} histogram");
        for le in COMMIT_BUCKETS_US {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {}", le as f64 / 1e6, histogram.count_between(0, le));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.len());
        let _ = writeln!(out, "{name}_sum {}", histogram.mean() * histogram.len() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", histogram.len());

        let name = "roomcast_store_batch_events";
        let sizes = &s.batch_sizes;
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, le) in BATCH_BUCKETS.iter().enumerate() {
            cumulative += sizes.counts[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let total: u64 = sizes.counts.iter().sum();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", sizes.sum);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// How the store thread is set up, from `[store]` and `[rooms]`.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Events written in one transaction at most (`store.batch_max`).
    pub batch_max: usize,
    /// Replies held per shard while its channel is full (`store.outbox_max`).
    pub outbox_max: usize,
    /// `store.audit_retention_days`; 0 keeps audit rows forever.
    pub audit_retention_days: u32,
    /// Chat rows kept per room unless its registry entry sets
    /// `history_max` (`rooms.history_max`).
    pub chat_history_max: u32,
    /// How long a batch of session audit events alone waits for more
    /// (`store.audit_linger_ms`); 0 commits at once.
    pub audit_linger: Duration,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            batch_max: 1024,
            outbox_max: 65_536,
            audit_retention_days: 0,
            chat_history_max: 100,
            audit_linger: Duration::ZERO,
        }
    }
}

/// The store thread's state.
pub struct Store {
    db: Database,
    events: Receiver<StoreEvent>,
    shards: Vec<ShardHandle>,
    batch_max: usize,
    /// Replies per shard not yet handed over (that shard's channel was full).
    outbox: Vec<Vec<StoreReply>>,
    outbox_max: usize,
    /// Shards whose outbox reached `outbox_max` (warned once per episode).
    outbox_full: Vec<bool>,
    /// Wait before held replies are offered again; doubles while they stay held.
    retry_delay: Duration,
    /// Failure causes already logged at `error` in this failure episode.
    logged_causes: HashSet<String>,
    /// `store.audit_retention_days` as a duration; `None` keeps audit rows forever.
    audit_retention: Option<Duration>,
    chat_history_max: u32,
    audit_linger: Duration,
    stats: StoreMonitor,
}

impl Store {
    pub fn new(
        db: Database,
        events: Receiver<StoreEvent>,
        shards: Vec<ShardHandle>,
        settings: &StoreSettings,
    ) -> Store {
        let outbox = (0..shards.len()).map(|_| Vec::new()).collect();
        let days = settings.audit_retention_days;
        Store {
            db,
            events,
            outbox_full: vec![false; shards.len()],
            shards,
            batch_max: settings.batch_max.max(1),
            outbox,
            // A batch's own replies must fit, or a healthy store would drop acks.
            outbox_max: settings.outbox_max.max(settings.batch_max).max(1),
            retry_delay: REPLY_RETRY_FIRST,
            logged_causes: HashSet::new(),
            audit_retention: (days > 0).then(|| Duration::from_secs(u64::from(days) * 86_400)),
            chat_history_max: settings.chat_history_max,
            audit_linger: settings.audit_linger,
            stats: StoreMonitor::default(),
        }
    }

    /// The handle the acceptor reads the stats through.
    pub fn monitor(&self) -> StoreMonitor {
        self.stats.clone()
    }

    /// A copy of the stats so far.
    pub fn stats(&self) -> StoreStats {
        self.stats.snapshot()
    }

    /// Runs until every sender (the shards) is gone and the queue is empty.
    pub fn run(mut self) -> StoreStats {
        let mut batch = Vec::with_capacity(self.batch_max);
        self.end_sessions_of_earlier_boots();
        // Housekeeping is time-driven inside this loop: the wait for events
        // is cut short when a pass is due.
        let mut next_housekeeping = Instant::now();
        loop {
            if next_housekeeping <= Instant::now() {
                self.housekeeping(unix_now_ms() / 1000);
                next_housekeeping = Instant::now() + HOUSEKEEPING_EVERY;
            }
            let mut wait = next_housekeeping.saturating_duration_since(Instant::now());
            if self.outbox.iter().any(|replies| !replies.is_empty()) {
                wait = wait.min(self.retry_delay);
            }
            match self.events.recv_timeout(wait) {
                Ok(event) => {
                    batch.push(event);
                    self.fill(&mut batch);
                    self.apply(&mut batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.send_replies();
        }
        let stats = self.stats();
        tracing::info!(
            batches = stats.batches,
            chats = stats.chats,
            largest_batch = stats.largest_batch,
            failed_batches = stats.failed_batches,
            rows_failed = stats.rows_failed.iter().sum::<u64>(),
            replies_dropped = stats.replies_dropped,
            "store stopped"
        );
        stats
    }

    /// Adds what is queued to `batch`, up to `batch_max`. A batch of session
    /// audit events alone waits up to `audit_linger` for more: nobody waits
    /// for those rows, and one commit (one fsync) for many connects is what
    /// keeps a connect storm from costing a commit per handful of rows. Any
    /// other event (a chat awaiting its ack, a history load, an HTTP read, a
    /// revocation) ends the wait.
    fn fill(&self, batch: &mut Vec<StoreEvent>) {
        let linger_until = Instant::now() + self.audit_linger;
        while batch.len() < self.batch_max {
            match self.events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) if self.audit_linger.is_zero() || !batch.iter().all(StoreEvent::is_audit) => return,
                Err(_) => match self.events.recv_deadline(linger_until) {
                    Ok(event) => batch.push(event),
                    // Past the linger, or every sender gone: commit what there is.
                    Err(_) => return,
                },
            }
        }
    }

    /// Writes `batch` in one transaction and queues the answers.
    pub fn apply(&mut self, batch: &mut Vec<StoreEvent>) {
        let mut histories = Vec::new();
        let started = Instant::now();
        self.stats.lock().running = Some((started, batch.len() as u64));
        let result = write_batch(&mut self.db.conn, self.db.boot, self.chat_history_max, batch, &mut histories);
        let elapsed_us = started.elapsed().as_micros() as u64;
        let mut histories = histories.into_iter();
        if let Err(e) = &result {
            self.report(e);
        }
        let committed = result.is_ok();
        let writes = batch.iter().any(|event| RowKind::of(event).is_some());
        let recovered = {
            let mut stats = self.stats.lock();
            stats.running = None;
            let size = batch.len() as u64;
            stats.batches += 1;
            stats.events += size;
            stats.largest_batch = stats.largest_batch.max(size);
            stats.batch_sizes.record(size);
            stats.chats += batch.iter().filter(|event| matches!(event, StoreEvent::Chat(_))).count() as u64;
            stats.commit_us.record(elapsed_us);
            let rows = if committed { &mut stats.rows_written } else { &mut stats.rows_failed };
            for kind in batch.iter().filter_map(RowKind::of) {
                rows[kind as usize] += 1;
            }
            if let Ok(pruned) = result {
                stats.rows_pruned[PruneKind::Chat as usize] += pruned;
            }
            if !committed {
                stats.failed_batches += 1;
            }
            // Health is about writes: a batch of reads says nothing about the disk.
            let recovered = writes && committed && stats.failing;
            if writes {
                stats.failing = !committed;
            }
            recovered
        };
        if recovered {
            // A new failure episode logs its causes again.
            self.logged_causes.clear();
            tracing::info!("store recovered: writes commit again; new chat messages are durable");
        }
        for event in batch.drain(..) {
            match event {
                StoreEvent::Chat(record) => {
                    let ChatRecord { sender, reference, seq, .. } = *record;
                    let reply = match (committed, reference) {
                        (true, Some(reference)) => StoreReply::Committed { to: sender, reference, seq },
                        (true, None) => continue,
                        (false, reference) => StoreReply::Failed { to: sender, reference },
                    };
                    self.push_reply(sender.shard, reply);
                }
                StoreEvent::ChatDelete { .. } => {}
                StoreEvent::LoadHistory { key, load, shard, .. } => {
                    let entries = if committed { histories.next().unwrap_or_default() } else { Vec::new() };
                    self.push_reply(shard, StoreReply::History { key, load, entries });
                }
                StoreEvent::SessionOpen(_) | StoreEvent::SessionClose { .. } | StoreEvent::Revoke { .. } => {}
                // Read after the commit, so it sees every write queued before it.
                StoreEvent::Query(query) => {
                    let answer = match run_query(&self.db.conn, &query.request) {
                        Ok(answer) => answer,
                        Err(e) => {
                            self.report(&e);
                            self.stats.lock().queries_failed += 1;
                            StoreAnswer::Failed
                        }
                    };
                    let reply =
                        AdminReply { ticket: query.ticket, shard: ShardId::MAX, answer: AdminAnswer::Store(answer) };
                    // A full reply channel or a gone acceptor: the request times out there.
                    if query.reply.try_send(reply).is_ok() {
                        let _ = query.waker.wake();
                    }
                }
            }
        }
    }

    /// Sessions left open by an earlier process (killed, or its drain ran
    /// out) can no longer end: they get close code 1006 and no disconnect time.
    fn end_sessions_of_earlier_boots(&mut self) {
        let result = self.db.conn.execute(
            "UPDATE sessions SET close_code = ?1 WHERE disconnected_ms IS NULL AND close_code IS NULL AND boot < ?2",
            params![CLOSE_ABNORMAL, self.db.boot as i64],
        );
        if let Err(e) = result {
            self.report(&e);
        }
    }

    /// The hourly pass (and the one at start): old audit rows and expired
    /// revoked tokens go.
    pub fn housekeeping(&mut self, now_s: u64) {
        self.prune_sessions();
        match delete_expired_revocations(&self.db.conn, now_s) {
            Ok(n) => {
                self.stats.lock().rows_pruned[PruneKind::RevokedToken as usize] += n as u64;
                if n > 0 {
                    tracing::debug!(rows = n, "expired revoked tokens deleted");
                }
            }
            Err(e) => self.report(&e),
        }
    }

    /// Deletes audit rows that connected before the retention window.
    pub fn prune_sessions(&mut self) {
        let Some(keep) = self.audit_retention else { return };
        let cutoff = unix_now_ms().saturating_sub(keep.as_millis() as u64);
        match self.db.conn.execute("DELETE FROM sessions WHERE connected_ms < ?1", params![sql_int(cutoff)]) {
            Ok(n) => {
                self.stats.lock().rows_pruned[PruneKind::Session as usize] += n as u64;
                if n > 0 {
                    tracing::info!(rows = n, "session audit rows past store.audit_retention_days deleted");
                }
            }
            Err(e) => self.report(&e),
        }
    }

    /// Logs a failure once per cause and failure episode; later ones of
    /// the same cause at debug.
    fn report(&mut self, error: &rusqlite::Error) {
        let cause = match error.sqlite_error_code() {
            Some(code) => format!("{code:?}"),
            None => error.to_string(),
        };
        if self.logged_causes.insert(cause.clone()) {
            tracing::error!(
                cause,
                error = %error,
                "store write failed; chat stays live but is not durable until the store recovers"
            );
        } else {
            tracing::debug!(cause, error = %error, "store write failed");
        }
    }

    /// Queues `reply` for `shard`. Past `outbox_max` held replies (the shard
    /// has not taken its answers for a long while) an ack or `store_failed`
    /// answer is dropped, and a history answer loses its entries, so that
    /// the room still stops waiting for it. Both are counted.
    fn push_reply(&mut self, shard: ShardId, reply: StoreReply) {
        let Some(replies) = self.outbox.get_mut(shard as usize) else { return };
        if replies.len() < self.outbox_max {
            replies.push(reply);
            return;
        }
        if let Some(warned) = self.outbox_full.get_mut(shard as usize)
            && !*warned
        {
            *warned = true;
            tracing::warn!(shard, "store outbox full (store.outbox_max): acks to this shard are dropped");
        }
        match reply {
            StoreReply::History { key, load, .. } => {
                replies.push(StoreReply::History { key, load, entries: Vec::new() });
                self.stats.lock().histories_emptied += 1;
            }
            StoreReply::Committed { .. } | StoreReply::Failed { .. } => self.stats.lock().replies_dropped += 1,
        }
    }

    /// Hands each shard its replies in one batch and one wake; a full
    /// channel keeps them for a later try (sooner after a success, later
    /// while it stays full), a stopped shard drops them.
    fn send_replies(&mut self) {
        let mut held = 0;
        for (shard, replies) in self.outbox.iter_mut().enumerate() {
            if replies.is_empty() {
                continue;
            }
            let Some(handle) = self.shards.get(shard) else {
                replies.clear();
                continue;
            };
            match handle.try_store_replies(std::mem::take(replies)) {
                Ok(()) => {
                    handle.wake();
                    self.outbox_full[shard] = false;
                }
                Err(Some(kept)) => {
                    *replies = kept;
                    held += replies.len();
                }
                Err(None) => {}
            }
        }
        self.retry_delay = if held == 0 { REPLY_RETRY_FIRST } else { (self.retry_delay * 2).min(REPLY_RETRY_MAX) };
        self.stats.lock().outbox_replies = held as u64;
    }

    /// The stored history of `key` (for tests and tools).
    pub fn history(&self, key: &RoomKey, limit: u32) -> rusqlite::Result<Vec<StoredChat>> {
        query_history(&self.db.conn, key, limit)
    }
}

/// One transaction for the whole batch; history answers in queue order.
/// A batch that writes takes the write lock at its start (`BEGIN
/// IMMEDIATE`), waiting up to the busy timeout for another process that
/// holds it, so it never fails halfway on a lock. Chat rooms written to
/// are pruned to their history limit in the same transaction; returns how
/// many chat rows that deleted.
fn write_batch(
    conn: &mut Connection,
    boot: u64,
    chat_history_max: u32,
    batch: &[StoreEvent],
    histories: &mut Vec<Vec<StoredChat>>,
) -> rusqlite::Result<u64> {
    let writes = batch.iter().any(|event| RowKind::of(event).is_some());
    let behavior = if writes { TransactionBehavior::Immediate } else { TransactionBehavior::Deferred };
    let tx = conn.transaction_with_behavior(behavior)?;
    let mut chat_rooms: HashSet<&RoomKey> = HashSet::new();
    for event in batch {
        match event {
            StoreEvent::Chat(record) => {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO chat (tenant, room, epoch, seq, msg_id, author, ts_ms, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                insert.execute(params![
                    record.key.tenant(),
                    record.key.room(),
                    &*record.epoch,
                    sql_int(record.seq),
                    &*record.id,
                    &*record.author,
                    sql_int(record.ts_ms),
                    &*record.json,
                ])?;
                chat_rooms.insert(&record.key);
            }
            StoreEvent::ChatDelete { key, id } => {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM chat WHERE rowid = (SELECT max(rowid) FROM chat
                     WHERE tenant = ?1 AND room = ?2 AND msg_id = ?3)",
                )?;
                delete.execute(params![key.tenant(), key.room(), &**id])?;
            }
            StoreEvent::LoadHistory { key, limit, .. } => histories.push(query_history(&tx, key, *limit)?),
            StoreEvent::SessionOpen(open) => {
                // OR IGNORE: a duplicate (boot, conn) must not fail the chat in the batch.
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO sessions (boot, conn, tenant, room, user, peer, connected_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let peer = open.peer.map(|addr| addr.to_string()).unwrap_or_default();
                insert.execute(params![
                    boot as i64,
                    open.conn.to_string(),
                    open.key.tenant(),
                    open.key.room(),
                    &*open.user,
                    peer,
                    sql_int(open.connected_ms),
                ])?;
            }
            StoreEvent::SessionClose { conn, disconnected_ms, close_code } => {
                let mut update = tx.prepare_cached(
                    "UPDATE sessions SET disconnected_ms = ?1, close_code = ?2
                     WHERE boot = ?3 AND conn = ?4 AND disconnected_ms IS NULL",
                )?;
                update.execute(params![sql_int(*disconnected_ms), close_code, boot as i64, conn.to_string()])?;
            }
            StoreEvent::Query(_) => {}
            StoreEvent::Revoke { jti, expires_s, revoked_ms, reason } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO revoked_tokens (jti, expires_s, revoked_ms, reason) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&**jti, sql_int(*expires_s), sql_int(*revoked_ms), *reason])?;
            }
        }
    }
    let mut pruned = 0;
    for key in chat_rooms {
        pruned += prune_chat(&tx, key, chat_history_max)?;
    }
    tx.commit()?;
    Ok(pruned)
}

/// Deletes the oldest chat rows of `key` beyond what the room keeps: its
/// registry entry's `history_max` when set, else `default_max`
/// (`rooms.history_max`). Costs a walk over the kept rows of the room's index.
fn prune_chat(tx: &Connection, key: &RoomKey, default_max: u32) -> rusqlite::Result<u64> {
    let registered: Option<i64> = tx
        .prepare_cached("SELECT history_max FROM rooms WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![key.tenant(), key.room()], |row| row.get(0))
        .optional()?
        .flatten();
    let keep = registered.unwrap_or(i64::from(default_max)).max(0);
    let deleted = tx
        .prepare_cached(
            "DELETE FROM chat WHERE tenant = ?1 AND room = ?2 AND rowid <= (SELECT rowid FROM chat
             WHERE tenant = ?1 AND room = ?2 ORDER BY rowid DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![key.tenant(), key.room(), keep])?;
    Ok(deleted as u64)
}

/// Answers an HTTP API read.
fn run_query(conn: &Connection, request: &QueryRequest) -> rusqlite::Result<StoreAnswer> {
    match request {
        QueryRequest::Usage { tenant, room, from_day, to_day } => {
            usage(conn, tenant, room.as_deref(), *from_day, *to_day).map(StoreAnswer::Usage)
        }
        QueryRequest::RoomCreate(room) => {
            let now = unix_now_ms() as i64;
            let added = conn.execute(
                "INSERT OR IGNORE INTO rooms (tenant, id, name, description, capacity, lobby, private,
                 history_max, metadata, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                &room_params(room, &now)[..],
            )?;
            if added == 0 {
                return Ok(StoreAnswer::Room(None));
            }
            get_room(conn, &room.tenant, &room.id).map(StoreAnswer::Room)
        }
        QueryRequest::RoomReplace(room) => {
            let now = unix_now_ms() as i64;
            let changed = conn.execute(
                "UPDATE rooms SET name = ?3, description = ?4, capacity = ?5, lobby = ?6, private = ?7,
                 history_max = ?8, metadata = ?9, updated_ms = ?10 WHERE tenant = ?1 AND id = ?2",
                &room_params(room, &now)[..],
            )?;
            if changed == 0 {
                return Ok(StoreAnswer::Room(None));
            }
            get_room(conn, &room.tenant, &room.id).map(StoreAnswer::Room)
        }
        QueryRequest::RoomGet { tenant, id } => get_room(conn, tenant, id).map(StoreAnswer::Room),
        QueryRequest::RoomDelete { tenant, id } => {
            let deleted = conn.execute("DELETE FROM rooms WHERE tenant = ?1 AND id = ?2", params![tenant, id])?;
            Ok(StoreAnswer::Deleted(deleted > 0))
        }
        QueryRequest::RoomList { tenant, after, limit } => {
            let mut select = conn.prepare_cached(&format!(
                "SELECT {ROOM_COLUMNS} FROM rooms WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let after = after.as_deref().unwrap_or("");
            let rows = select.query_map(params![tenant, after, *limit as i64], room_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(StoreAnswer::Rooms)
        }
    }
}

/// The parameters `?1`…`?10` of both registry writes (create and replace):
/// the room's fields in `ROOM_COLUMNS` order, then the time of the write.
fn room_params<'a>(room: &'a RoomRecord, now_ms: &'a i64) -> [&'a dyn rusqlite::ToSql; 10] {
    [
        &room.tenant,
        &room.id,
        &room.name,
        &room.description,
        &room.capacity,
        &room.lobby,
        &room.private,
        &room.history_max,
        &room.metadata,
        now_ms,
    ]
}

const ROOM_COLUMNS: &str =
    "tenant, id, name, description, capacity, lobby, private, history_max, metadata, created_ms, updated_ms";

fn room_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        tenant: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        capacity: row.get(4)?,
        lobby: row.get(5)?,
        private: row.get(6)?,
        history_max: row.get(7)?,
        metadata: row.get(8)?,
        created_ms: row.get::<_, i64>(9)? as u64,
        updated_ms: row.get::<_, i64>(10)? as u64,
    })
}

fn get_room(conn: &Connection, tenant: &str, id: &str) -> rusqlite::Result<Option<RoomRecord>> {
    let mut select = conn.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE tenant = ?1 AND id = ?2"))?;
    select.query_row(params![tenant, id], room_row).optional()
}

/// Per UTC day of connection that has sessions: unique users, sessions, and
/// the average and nearest-rank p95 duration of the sessions that have ended.
/// A range with `from_day > to_day` is empty. Computed by SQLite (its sorts
/// spill to temporary storage), so the store thread holds one row per day,
/// not one per session; the HTTP API bounds the range (366 days).
fn usage(
    conn: &Connection,
    tenant: &str,
    room: Option<&str>,
    from_day: i64,
    to_day: i64,
) -> rusqlite::Result<Vec<DayUsage>> {
    if from_day > to_day {
        return Ok(Vec::new());
    }
    let start = from_day.saturating_mul(DAY_MS);
    let end = to_day.saturating_add(1).saturating_mul(DAY_MS);
    // `?2` is the room, or NULL for the whole tenant; the two statements
    // differ so that each can use its index.
    let room_filter = if room.is_some() { "room = ?2" } else { "?2 IS NULL" };
    let sql = format!(
        "WITH s AS (
            SELECT connected_ms / {DAY_MS} AS day, user,
                   CASE WHEN disconnected_ms IS NULL THEN NULL
                        ELSE max(disconnected_ms - connected_ms, 0) END AS duration
            FROM sessions
            WHERE tenant = ?1 AND {room_filter} AND connected_ms >= ?3 AND connected_ms < ?4
        ),
        ended AS (
            SELECT day, duration,
                   row_number() OVER (PARTITION BY day ORDER BY duration) AS rank,
                   count(*) OVER (PARTITION BY day) AS n
            FROM s WHERE duration IS NOT NULL
        )
        SELECT d.day, d.users, d.sessions, e.total, e.n, p.duration
        FROM (SELECT day, count(DISTINCT user) AS users, count(*) AS sessions FROM s GROUP BY day) AS d
        LEFT JOIN (SELECT day, sum(duration) AS total, count(*) AS n FROM ended GROUP BY day) AS e ON e.day = d.day
        LEFT JOIN (SELECT day, duration FROM ended WHERE rank = (n * 95 + 99) / 100) AS p ON p.day = d.day
        ORDER BY d.day"
    );
    let mut select = conn.prepare_cached(&sql)?;
    let rows = select.query_map(params![tenant, room, start, end], |row| {
        let total: Option<i64> = row.get(3)?;
        let ended: Option<i64> = row.get(4)?;
        let p95: Option<i64> = row.get(5)?;
        let avg = match (total, ended) {
            (Some(total), Some(ended)) if ended > 0 => Some(total as f64 / ended as f64 / 1000.0),
            _ => None,
        };
        Ok(DayUsage {
            day: row.get(0)?,
            unique_users: row.get::<_, i64>(1)? as u64,
            sessions: row.get::<_, i64>(2)? as u64,
            avg_duration_s: avg,
            p95_duration_s: p95.map(|ms| ms as f64 / 1000.0),
        })
    })?;
    rows.collect()
}

/// The last `limit` messages of `key`, oldest first.
fn query_history(conn: &Connection, key: &RoomKey, limit: u32) -> rusqlite::Result<Vec<StoredChat>> {
    let mut select = conn.prepare_cached(
        "SELECT msg_id, author, json FROM chat WHERE tenant = ?1 AND room = ?2 ORDER BY rowid DESC LIMIT ?3",
    )?;
    let rows = select.query_map(params![key.tenant(), key.room(), i64::from(limit)], |row| {
        Ok(StoredChat {
            id: row.get::<_, String>(0)?.into(),
            author: row.get::<_, String>(1)?.into(),
            json: row.get::<_, Vec<u8>>(2)?.into(),
        })
    })?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    entries.reverse();
    Ok(entries)
}

fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnId {
        ConnId { shard: 0, slot, generation: 1 }
    }

    fn chat(key: &RoomKey, seq: u64, reference: Option<&str>) -> StoreEvent {
        StoreEvent::Chat(Box::new(ChatRecord {
            key: key.clone(),
            epoch: "1.0.1".into(),
            seq,
            id: format!("m{seq}").into(),
            author: "alice".into(),
            ts_ms: 1_700_000_000_000 + seq,
            json: format!("{{\"type\":\"chat\",\"seq\":{seq}}}").into_bytes().into(),
            sender: conn(1),
            reference: reference.map(|r| r.as_bytes().into()),
        }))
    }

    fn store(dir: &Path) -> Store {
        let db = Database::open(dir, Synchronous::Full).unwrap();
        let (_tx, rx) = crossbeam_channel::bounded(16);
        let settings = StoreSettings { batch_max: 8, ..StoreSettings::default() };
        let mut store = Store::new(db, rx, Vec::new(), &settings);
        // One shard's replies, kept for the test to read (there is no shard to send them to).
        store.outbox = vec![Vec::new()];
        store.outbox_full = vec![false];
        store
    }

    fn session_close(slot: u32) -> StoreEvent {
        StoreEvent::SessionClose { conn: conn(slot), disconnected_ms: 1, close_code: 1000 }
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_batch_max_and_an_ended_queue_ends_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Normal).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(16);
        let settings = StoreSettings { batch_max: 3, audit_linger: Duration::from_secs(3600), ..Default::default() };
        let store = Store::new(db, rx, Vec::new(), &settings);
        for slot in 0..4 {
            tx.send(session_close(slot)).unwrap();
        }
        let mut batch = vec![session_close(9)];
        store.fill(&mut batch);
        assert_eq!(batch.len(), 3, "batch_max ends the batch, linger or not");
        // Two audit events are left; with every sender gone, the linger ends at once.
        drop(tx);
        let mut batch = Vec::new();
        store.fill(&mut batch);
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn without_a_linger_an_audit_batch_commits_with_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Normal).unwrap();
        // The sender stays alive: a lingering fill would wait here.
        let (tx, rx) = crossbeam_channel::bounded(16);
        let store = Store::new(db, rx, Vec::new(), &StoreSettings::default());
        tx.send(session_close(1)).unwrap();
        let mut batch = vec![session_close(0)];
        store.fill(&mut batch);
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(StoreEvent::is_audit) && !chat(&RoomKey::new("", "r"), 1, None).is_audit());
    }

    #[test]
    fn the_page_cache_takes_store_cache_kib() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Normal).unwrap();
        db.set_cache_kib(256).unwrap();
        let size: i64 = db.conn.query_row("PRAGMA cache_size", [], |row| row.get(0)).unwrap();
        assert_eq!(size, -256, "negative: KiB, not pages");
    }

    #[test]
    fn migrations_run_once_and_boots_count() {
        let dir = tempfile::tempdir().unwrap();
        let first = Database::open(dir.path(), Synchronous::Full).unwrap();
        assert_eq!(first.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(first.boot, 1);
        let mode: String = first.conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
        drop(first);
        let second = Database::open(dir.path(), Synchronous::Normal).unwrap();
        assert_eq!(second.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(second.boot, 2, "a new boot per open");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        db.conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(db);
        let err = Database::open(dir.path(), Synchronous::Full).err().expect("refused");
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn a_batch_commits_once_and_acks_only_refs() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let key = RoomKey::new("t", "r");
        let mut batch = vec![chat(&key, 1, Some("a")), chat(&key, 2, None), chat(&key, 3, Some("c"))];
        store.apply(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(store.stats().batches, 1);
        assert_eq!(store.stats().largest_batch, 3);
        assert_eq!(store.stats().rows_written[RowKind::Chat as usize], 3);
        let acks: Vec<(u64, Box<[u8]>)> = store.outbox[0]
            .iter()
            .map(|reply| match reply {
                StoreReply::Committed { seq, reference, .. } => (*seq, reference.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(acks, vec![(1, b"a".to_vec().into()), (3, b"c".to_vec().into())]);
        let history = store.history(&key, 10).unwrap();
        assert_eq!(history.iter().map(|e| &*e.id).collect::<Vec<_>>(), ["m1", "m2", "m3"]);
    }

    #[test]
    fn history_is_the_newest_oldest_first_per_room_and_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let key = RoomKey::new("t", "r");
        let other_tenant = RoomKey::new("u", "r");
        let mut batch: Vec<StoreEvent> = (1..=5).map(|seq| chat(&key, seq, None)).collect();
        batch.push(chat(&other_tenant, 9, None));
        batch.push(StoreEvent::ChatDelete { key: key.clone(), id: "m4".into() });
        batch.push(StoreEvent::LoadHistory { key: key.clone(), load: 7, shard: 0, limit: 3 });
        store.apply(&mut batch);
        match store.outbox[0].pop() {
            Some(StoreReply::History { load: 7, entries, .. }) => {
                assert_eq!(entries.iter().map(|e| &*e.id).collect::<Vec<_>>(), ["m2", "m3", "m5"]);
                assert_eq!(&*entries[0].json, br#"{"type":"chat","seq":2}"#);
            }
            other => panic!("expected a history, got {other:?}"),
        }
        assert_eq!(store.history(&other_tenant, 10).unwrap().len(), 1);
    }

    fn open(slot: u32, user: &str, room: &str, connected_ms: u64) -> StoreEvent {
        StoreEvent::SessionOpen(Box::new(SessionOpen {
            conn: conn(slot),
            key: RoomKey::new("t", room),
            user: user.into(),
            peer: Some("127.0.0.1:1".parse().unwrap()),
            connected_ms,
        }))
    }

    fn close(slot: u32, disconnected_ms: u64) -> StoreEvent {
        StoreEvent::SessionClose { conn: conn(slot), disconnected_ms, close_code: 1000 }
    }

    #[test]
    fn sessions_give_usage_per_day_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let day = 20_000;
        let at = |d: i64, s: u64| (d * DAY_MS) as u64 + s * 1000;
        let mut batch = vec![
            open(1, "alice", "r", at(day, 0)),
            close(1, at(day, 10)),
            open(2, "alice", "r", at(day, 100)),
            close(2, at(day, 130)),
            open(3, "bob", "r", at(day, 200)),
            close(3, at(day, 220)),
            open(4, "carol", "other", at(day, 300)),
            open(5, "dave", "r", at(day + 1, 5)),
        ];
        store.apply(&mut batch);
        let room = usage(&store.db.conn, "t", Some("r"), day - 1, day + 1).unwrap();
        assert_eq!(room.iter().map(|d| d.day).collect::<Vec<_>>(), [day, day + 1], "days without sessions left out");
        assert_eq!((room[0].sessions, room[0].unique_users), (3, 2));
        assert_eq!(room[0].avg_duration_s, Some(20.0));
        assert_eq!(room[0].p95_duration_s, Some(30.0));
        assert_eq!((room[1].sessions, room[1].unique_users, room[1].p95_duration_s), (1, 1, None));
        let tenant = usage(&store.db.conn, "t", None, day, day).unwrap();
        assert_eq!((tenant[0].sessions, tenant[0].unique_users), (4, 3));
        assert!(usage(&store.db.conn, "u", None, day, day).unwrap().is_empty());
        assert!(usage(&store.db.conn, "t", None, day + 1, day).unwrap().is_empty(), "from after to");
        // A second close of the same connection changes nothing.
        store.apply(&mut vec![close(1, at(day, 50))]);
        let again = usage(&store.db.conn, "t", Some("r"), day, day).unwrap();
        assert_eq!(again[0].avg_duration_s, Some(20.0));
        // Everything here is decades old by the wall clock.
        store.audit_retention = Some(Duration::from_secs(86_400));
        store.prune_sessions();
        assert_eq!(store.stats().rows_pruned[PruneKind::Session as usize], 5);
    }

    #[test]
    fn registry_rooms_are_created_once_replaced_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let conn = &store.db.conn;
        let room = |id: &str| RoomRecord {
            tenant: "t".into(),
            id: id.into(),
            name: Some("Stand-up".into()),
            capacity: Some(5),
            metadata: Some(r#"{"k":1}"#.into()),
            ..RoomRecord::default()
        };
        let created = match run_query(conn, &QueryRequest::RoomCreate(Box::new(room("a")))).unwrap() {
            StoreAnswer::Room(Some(created)) => created,
            other => panic!("{other:?}"),
        };
        assert_eq!((created.capacity, created.lobby, created.private), (Some(5), None, false));
        assert!(created.created_ms > 0 && created.created_ms == created.updated_ms);
        assert_eq!(run_query(conn, &QueryRequest::RoomCreate(Box::new(room("a")))).unwrap(), StoreAnswer::Room(None));
        run_query(conn, &QueryRequest::RoomCreate(Box::new(room("b")))).unwrap();
        let replaced = RoomRecord { private: true, lobby: Some(true), name: None, ..room("a") };
        match run_query(conn, &QueryRequest::RoomReplace(Box::new(replaced))).unwrap() {
            StoreAnswer::Room(Some(r)) => {
                assert_eq!((r.private, r.lobby, r.name, r.created_ms), (true, Some(true), None, created.created_ms))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(run_query(conn, &QueryRequest::RoomReplace(Box::new(room("zz")))).unwrap(), StoreAnswer::Room(None));
        let list = |after: Option<&str>, tenant: &str| match run_query(
            conn,
            &QueryRequest::RoomList { tenant: tenant.into(), after: after.map(Into::into), limit: 10 },
        )
        .unwrap()
        {
            StoreAnswer::Rooms(rooms) => rooms.into_iter().map(|r| r.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(list(None, "t"), ["a", "b"]);
        assert_eq!(list(Some("a"), "t"), ["b"]);
        assert!(list(None, "u").is_empty(), "tenant-scoped");
        let delete = QueryRequest::RoomDelete { tenant: "t".into(), id: "a".into() };
        assert_eq!(run_query(conn, &delete).unwrap(), StoreAnswer::Deleted(true));
        assert_eq!(run_query(conn, &delete).unwrap(), StoreAnswer::Deleted(false));
        let get = QueryRequest::RoomGet { tenant: "t".into(), id: "a".into() };
        assert_eq!(run_query(conn, &get).unwrap(), StoreAnswer::Room(None));
    }

    #[test]
    fn a_failed_batch_answers_failed_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let key = RoomKey::new("", "r");
        // Simulates a read-only database: every write fails.
        store.db.conn.pragma_update(None, "query_only", true).unwrap();
        let mut batch =
            vec![chat(&key, 1, Some("a")), StoreEvent::LoadHistory { key: key.clone(), load: 1, shard: 0, limit: 5 }];
        store.apply(&mut batch);
        assert_eq!(store.stats().failed_batches, 1);
        assert!(store.stats().failing);
        assert!(matches!(store.outbox[0][0], StoreReply::Failed { .. }));
        assert!(matches!(&store.outbox[0][1], StoreReply::History { entries, .. } if entries.is_empty()));
        assert_eq!(store.logged_causes.len(), 1);
        store.apply(&mut vec![chat(&key, 2, None)]);
        assert_eq!(store.logged_causes.len(), 1, "one log line per cause");
        store.db.conn.pragma_update(None, "query_only", false).unwrap();
        store.apply(&mut vec![chat(&key, 3, None)]);
        assert_eq!(store.stats().failed_batches, 2);
        assert!(!store.stats().failing, "a commit clears the failure");
        assert!(store.logged_causes.is_empty(), "the next episode logs again");
        assert_eq!(store.history(&key, 5).unwrap().len(), 1);
    }

    #[test]
    fn an_exp_past_i64_max_is_kept_as_never_expiring_and_expired_rows_go_hourly() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let revoke = |jti: &str, expires_s: u64| StoreEvent::Revoke {
            jti: jti.into(),
            expires_s,
            revoked_ms: 1,
            reason: "revoked",
        };
        store.apply(&mut vec![revoke("forever", u64::MAX), revoke("soon", 100), revoke("later", 10_000)]);
        let mut loaded = store.db.revoked_tokens(50).unwrap();
        loaded.sort();
        assert_eq!(
            loaded,
            [("forever".into(), i64::MAX as u64), ("later".into(), 10_000), ("soon".into(), 100)],
            "nothing negative, nothing deleted early"
        );
        store.housekeeping(5_000);
        assert_eq!(store.stats().rows_pruned[PruneKind::RevokedToken as usize], 1);
        let mut left: Vec<String> = store.db.revoked_tokens(5_000).unwrap().into_iter().map(|(j, _)| j).collect();
        left.sort();
        assert_eq!(left, ["forever", "later"]);
    }

    #[test]
    fn negative_expiries_of_older_versions_are_repaired_by_migration_4() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        db.conn.execute("INSERT INTO revoked_tokens VALUES ('old-bug', -1, 0, 'revoked')", []).unwrap();
        db.conn.execute("UPDATE schema_version SET version = 3", []).unwrap();
        drop(db);
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        assert_eq!(db.revoked_tokens(unix_now_ms() / 1000).unwrap(), [("old-bug".into(), i64::MAX as u64)]);
    }

    #[test]
    fn chat_rows_are_pruned_per_room_to_the_history_limit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let settings = StoreSettings { chat_history_max: 3, ..StoreSettings::default() };
        let mut store = Store::new(db, rx, Vec::new(), &settings);
        let (plain, registered, other) =
            (RoomKey::new("t", "plain"), RoomKey::new("t", "reg"), RoomKey::new("u", "plain"));
        let registry = QueryRequest::RoomCreate(Box::new(RoomRecord {
            tenant: "t".into(),
            id: "reg".into(),
            history_max: Some(1),
            ..RoomRecord::default()
        }));
        run_query(&store.db.conn, &registry).unwrap();
        let mut batch: Vec<StoreEvent> = (1..=5).map(|seq| chat(&plain, seq, None)).collect();
        batch.extend((1..=5).map(|seq| chat(&registered, seq, None)));
        batch.extend((1..=2).map(|seq| chat(&other, seq, None)));
        store.apply(&mut batch);
        let ids = |key: &RoomKey| store.history(key, 100).unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&plain), ["m3".into(), "m4".into(), "m5".into()], "rooms.history_max");
        assert_eq!(ids(&registered), ["m5".into()], "the registry's history_max");
        assert_eq!(ids(&other).len(), 2, "other tenants' rooms are their own");
        assert_eq!(store.stats().rows_pruned[PruneKind::Chat as usize], 6);
    }

    #[test]
    fn a_full_outbox_drops_acks_and_empties_histories_but_keeps_answering() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store.outbox_max = 2;
        let key = RoomKey::new("t", "r");
        store.apply(&mut vec![chat(&key, 1, Some("a")), chat(&key, 2, Some("b"))]);
        store.apply(&mut vec![chat(&key, 3, Some("c"))]);
        store.apply(&mut vec![StoreEvent::LoadHistory { key: key.clone(), load: 9, shard: 0, limit: 10 }]);
        let stats = store.stats();
        assert_eq!((stats.replies_dropped, stats.histories_emptied), (1, 1));
        assert_eq!(store.outbox[0].len(), 3, "two acks and the emptied history");
        assert!(matches!(&store.outbox[0][2], StoreReply::History { load: 9, entries, .. } if entries.is_empty()));
        assert_eq!(store.history(&key, 10).unwrap().len(), 3, "all three are stored all the same");
    }

    #[test]
    fn rows_of_a_failed_batch_are_counted_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store.db.conn.pragma_update(None, "query_only", true).unwrap();
        store.apply(&mut vec![open(1, "alice", "r", 1), close(1, 2), chat(&RoomKey::new("t", "r"), 1, None)]);
        let stats = store.stats();
        let failed = |kind: RowKind| stats.rows_failed[kind as usize];
        assert_eq!((failed(RowKind::SessionOpen), failed(RowKind::SessionClose), failed(RowKind::Chat)), (1, 1, 1));
        assert_eq!(stats.rows_written, [0; RowKind::ALL.len()]);
        // A batch that only reads says nothing about the disk's health.
        store.apply(&mut vec![StoreEvent::LoadHistory { key: RoomKey::new("t", "r"), load: 1, shard: 0, limit: 1 }]);
        assert!(store.stats().failing);
        let mut text = String::new();
        StoreGauges { queue_depth: 0, queue_max: 1, stats: store.stats() }.render(&mut text);
        for line in [
            "roomcast_store_healthy 0",
            "roomcast_store_failed_batches_total 1",
            "roomcast_store_rows_failed_total{kind=\"session_open\"} 1",
            "roomcast_store_batch_events_bucket{le=\"2\"} 1",
            "roomcast_store_batch_events_bucket{le=\"4\"} 2",
            "roomcast_store_batch_events_sum 4",
            "roomcast_store_commit_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn usage_p95_is_the_nearest_rank_and_open_sessions_count_without_a_duration() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let day = 20_100;
        let at = |ms: i64| (day * DAY_MS + ms) as u64;
        // 21 ended sessions of 1..=21 s, given in shuffled order, and one still open.
        let mut batch = Vec::new();
        for (slot, seconds) in (1..=21u32).map(|s| (s, (s * 7) % 22)).map(|(slot, s)| (slot, i64::from(s))) {
            batch.push(open(slot, &format!("u{}", slot % 3), "r", at(0)));
            batch.push(close(slot, at(seconds * 1000)));
        }
        batch.push(open(99, "late", "r", at(5)));
        store.apply(&mut batch);
        let report = usage(&store.db.conn, "t", Some("r"), day, day).unwrap();
        assert_eq!(report.len(), 1);
        let d = &report[0];
        assert_eq!((d.sessions, d.unique_users), (22, 4));
        assert_eq!(d.avg_duration_s, Some(11.0));
        assert_eq!(d.p95_duration_s, Some(20.0), "rank ceil(0.95 * 21) = 20");
    }
}
