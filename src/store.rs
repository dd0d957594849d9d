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

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;
use rusqlite::{Connection, OptionalExtension, params};

use crate::ids::{ConnId, RoomKey, ShardId};
use crate::shard::{AdminAnswer, AdminReply, ShardHandle};

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "roomcast.db";
/// Reply batches that may wait for one shard's store-reply channel.
pub const REPLY_CHANNEL_MAX: usize = 1024;
/// How often replies held back by a full shard channel are retried.
const REPLY_RETRY: Duration = Duration::from_millis(1);
/// How long SQLite waits on a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often old session audit rows are deleted (also once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
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

/// The start of one session audit row (one per room connection).
#[derive(Debug)]
pub struct SessionOpen {
    pub conn: ConnId,
    pub tenant: Box<str>,
    /// The home room (the URL's `/ws/{room}`).
    pub room: Box<str>,
    pub user: Box<str>,
    /// The peer's `ip:port` as the acceptor saw it ("" when unknown).
    pub peer: Box<str>,
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
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
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
    /// (`jti`, `expires_s`); expired rows are deleted first.
    pub fn revoked_tokens(&self, now_s: u64) -> rusqlite::Result<Vec<(String, u64)>> {
        self.conn.execute("DELETE FROM revoked_tokens WHERE expires_s <= ?1", params![now_s as i64])?;
        let mut select = self.conn.prepare("SELECT jti, expires_s FROM revoked_tokens")?;
        let rows = select.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)))?;
        rows.collect()
    }

    /// Every registered room (all tenants), as the live server applies it.
    pub fn registry(&self) -> rusqlite::Result<Vec<RoomRecord>> {
        let mut select = self.conn.prepare(&format!("SELECT {ROOM_COLUMNS} FROM rooms"))?;
        let rows = select.query_map([], room_row)?;
        rows.collect()
    }
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

/// Counters of the store thread (logged at exit; batch sizes feed tuning).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub batches: u64,
    pub events: u64,
    pub chats: u64,
    pub largest_batch: u64,
    pub failed_batches: u64,
    /// Session audit rows deleted by retention.
    pub sessions_pruned: u64,
}

/// The store thread's state.
pub struct Store {
    db: Database,
    events: Receiver<StoreEvent>,
    shards: Vec<ShardHandle>,
    batch_max: usize,
    /// Replies per shard not yet handed over (that shard's channel was full).
    outbox: Vec<Vec<StoreReply>>,
    /// Failure causes already logged at `error`.
    logged_causes: HashSet<String>,
    /// `store.audit_retention_days` as a duration; `None` keeps audit rows forever.
    audit_retention: Option<Duration>,
    pub stats: StoreStats,
}

impl Store {
    pub fn new(db: Database, events: Receiver<StoreEvent>, shards: Vec<ShardHandle>, batch_max: usize) -> Store {
        let outbox = (0..shards.len()).map(|_| Vec::new()).collect();
        Store {
            db,
            events,
            shards,
            batch_max: batch_max.max(1),
            outbox,
            logged_causes: HashSet::new(),
            audit_retention: None,
            stats: StoreStats::default(),
        }
    }

    /// Deletes session audit rows older than `days` (0: never).
    pub fn with_audit_retention(mut self, days: u32) -> Store {
        self.audit_retention = (days > 0).then(|| Duration::from_secs(u64::from(days) * 86_400));
        self
    }

    /// Runs until every sender (the shards) is gone and the queue is empty.
    pub fn run(mut self) -> StoreStats {
        let mut batch = Vec::with_capacity(self.batch_max);
        self.end_sessions_of_earlier_boots();
        // Retention is time-driven inside this loop: the wait for events is
        // cut short when a pass is due.
        let mut next_prune = self.audit_retention.map(|_| Instant::now());
        loop {
            if next_prune.is_some_and(|at| at <= Instant::now()) {
                self.prune_sessions();
                next_prune = Some(Instant::now() + RETENTION_EVERY);
            }
            let retry = self.outbox.iter().any(|replies| !replies.is_empty()).then_some(REPLY_RETRY);
            let until_prune = next_prune.map(|at| at.saturating_duration_since(Instant::now()));
            let wait = match (retry, until_prune) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = if let Some(wait) = wait {
                match self.events.recv_timeout(wait) {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.events.recv() {
                    Ok(event) => Some(event),
                    Err(_) => break,
                }
            };
            if let Some(event) = first {
                batch.push(event);
                while batch.len() < self.batch_max {
                    match self.events.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                self.apply(&mut batch);
            }
            self.send_replies();
        }
        tracing::info!(
            batches = self.stats.batches,
            chats = self.stats.chats,
            largest_batch = self.stats.largest_batch,
            failed_batches = self.stats.failed_batches,
            "store stopped"
        );
        self.stats
    }

    /// Writes `batch` in one transaction and queues the answers.
    pub fn apply(&mut self, batch: &mut Vec<StoreEvent>) {
        let mut answers = Vec::new();
        let result = write_batch(&mut self.db.conn, self.db.boot, batch, &mut answers);
        let mut answers = answers.into_iter();
        self.stats.batches += 1;
        self.stats.events += batch.len() as u64;
        self.stats.largest_batch = self.stats.largest_batch.max(batch.len() as u64);
        let committed = match result {
            Ok(()) => true,
            Err(e) => {
                self.report(&e);
                self.stats.failed_batches += 1;
                false
            }
        };
        for event in batch.drain(..) {
            match event {
                StoreEvent::Chat(record) => {
                    self.stats.chats += 1;
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
                    let entries = if committed { answers.next().unwrap_or_default() } else { Vec::new() };
                    self.push_reply(shard, StoreReply::History { key, load, entries });
                }
                StoreEvent::SessionOpen(_) | StoreEvent::SessionClose { .. } | StoreEvent::Revoke { .. } => {}
                // Read after the commit, so it sees every write queued before it.
                StoreEvent::Query(query) => {
                    let answer = match run_query(&self.db.conn, &query.request) {
                        Ok(answer) => answer,
                        Err(e) => {
                            self.report(&e);
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

    /// Deletes audit rows that connected before the retention window.
    pub fn prune_sessions(&mut self) {
        let Some(keep) = self.audit_retention else { return };
        let cutoff = unix_now_ms().saturating_sub(keep.as_millis() as u64);
        match self.db.conn.execute("DELETE FROM sessions WHERE connected_ms < ?1", params![cutoff as i64]) {
            Ok(n) => {
                self.stats.sessions_pruned += n as u64;
                if n > 0 {
                    tracing::info!(rows = n, "session audit rows past store.audit_retention_days deleted");
                }
            }
            Err(e) => self.report(&e),
        }
    }

    /// Logs a failure once per cause; later ones of the same cause at debug.
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

    fn push_reply(&mut self, shard: ShardId, reply: StoreReply) {
        if let Some(replies) = self.outbox.get_mut(shard as usize) {
            replies.push(reply);
        }
    }

    /// Hands each shard its replies in one batch and one wake; a full
    /// channel keeps them for the next try, a stopped shard drops them.
    fn send_replies(&mut self) {
        for (shard, replies) in self.outbox.iter_mut().enumerate() {
            if replies.is_empty() {
                continue;
            }
            let Some(handle) = self.shards.get(shard) else {
                replies.clear();
                continue;
            };
            match handle.try_store_replies(std::mem::take(replies)) {
                Ok(()) => handle.wake(),
                Err(Some(kept)) => *replies = kept,
                Err(None) => {}
            }
        }
    }

    /// The stored history of `key` (for tests and tools).
    pub fn history(&self, key: &RoomKey, limit: u32) -> rusqlite::Result<Vec<StoredChat>> {
        query_history(&self.db.conn, key, limit)
    }
}

/// One transaction for the whole batch; history answers in queue order.
fn write_batch(
    conn: &mut Connection,
    boot: u64,
    batch: &[StoreEvent],
    histories: &mut Vec<Vec<StoredChat>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
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
                    record.seq as i64,
                    &*record.id,
                    &*record.author,
                    record.ts_ms as i64,
                    &*record.json,
                ])?;
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
                insert.execute(params![
                    boot as i64,
                    open.conn.to_string(),
                    &*open.tenant,
                    &*open.room,
                    &*open.user,
                    &*open.peer,
                    open.connected_ms as i64,
                ])?;
            }
            StoreEvent::SessionClose { conn, disconnected_ms, close_code } => {
                let mut update = tx.prepare_cached(
                    "UPDATE sessions SET disconnected_ms = ?1, close_code = ?2
                     WHERE boot = ?3 AND conn = ?4 AND disconnected_ms IS NULL",
                )?;
                update.execute(params![*disconnected_ms as i64, close_code, boot as i64, conn.to_string()])?;
            }
            StoreEvent::Query(_) => {}
            StoreEvent::Revoke { jti, expires_s, revoked_ms, reason } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO revoked_tokens (jti, expires_s, revoked_ms, reason) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&**jti, *expires_s as i64, *revoked_ms as i64, *reason])?;
            }
        }
    }
    tx.commit()
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
                params![
                    room.tenant,
                    room.id,
                    room.name,
                    room.description,
                    room.capacity,
                    room.lobby,
                    room.private,
                    room.history_max,
                    room.metadata,
                    now
                ],
            )?;
            if added == 0 {
                return Ok(StoreAnswer::Room(None));
            }
            get_room(conn, &room.tenant, &room.id).map(StoreAnswer::Room)
        }
        QueryRequest::RoomReplace(room) => {
            let changed = conn.execute(
                "UPDATE rooms SET name = ?3, description = ?4, capacity = ?5, lobby = ?6, private = ?7,
                 history_max = ?8, metadata = ?9, updated_ms = ?10 WHERE tenant = ?1 AND id = ?2",
                params![
                    room.tenant,
                    room.id,
                    room.name,
                    room.description,
                    room.capacity,
                    room.lobby,
                    room.private,
                    room.history_max,
                    room.metadata,
                    unix_now_ms() as i64
                ],
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
/// A range with `from_day > to_day` is empty.
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
    let (start, end) = (from_day * DAY_MS, (to_day + 1) * DAY_MS);
    let mut rows: Vec<(String, i64, Option<i64>)> = Vec::new();
    let map = |row: &rusqlite::Row<'_>| Ok((row.get(0)?, row.get(1)?, row.get(2)?));
    match room {
        Some(room) => {
            let mut select = conn.prepare_cached(
                "SELECT user, connected_ms, disconnected_ms FROM sessions
                 WHERE tenant = ?1 AND room = ?2 AND connected_ms >= ?3 AND connected_ms < ?4",
            )?;
            for row in select.query_map(params![tenant, room, start, end], map)? {
                rows.push(row?);
            }
        }
        None => {
            let mut select = conn.prepare_cached(
                "SELECT user, connected_ms, disconnected_ms FROM sessions
                 WHERE connected_ms >= ?2 AND connected_ms < ?3 AND tenant = ?1",
            )?;
            for row in select.query_map(params![tenant, start, end], map)? {
                rows.push(row?);
            }
        }
    }
    // Per day: users, sessions, durations (ms) of the ended sessions.
    let mut days: BTreeMap<i64, (HashSet<String>, u64, Vec<i64>)> = BTreeMap::new();
    for (user, connected, disconnected) in rows {
        let (users, sessions, durations) = days.entry(connected.div_euclid(DAY_MS)).or_default();
        *sessions += 1;
        users.insert(user);
        if let Some(disconnected) = disconnected {
            durations.push((disconnected - connected).max(0));
        }
    }
    Ok(days
        .into_iter()
        .map(|(day, (users, sessions, mut ended))| {
            ended.sort_unstable();
            let (avg, p95) = if ended.is_empty() {
                (None, None)
            } else {
                let sum: i64 = ended.iter().sum();
                let rank = (ended.len() * 95).div_ceil(100).max(1) - 1;
                (Some(sum as f64 / ended.len() as f64 / 1000.0), Some(ended[rank] as f64 / 1000.0))
            };
            DayUsage { day, unique_users: users.len() as u64, sessions, avg_duration_s: avg, p95_duration_s: p95 }
        })
        .collect())
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
        let mut store = Store::new(db, rx, Vec::new(), 8);
        // One shard's replies, kept for the test to read (there is no shard to send them to).
        store.outbox = vec![Vec::new()];
        store
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
        assert_eq!(store.stats.batches, 1);
        assert_eq!(store.stats.largest_batch, 3);
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
            tenant: "t".into(),
            room: room.into(),
            user: user.into(),
            peer: "127.0.0.1:1".into(),
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
        assert_eq!(store.stats.sessions_pruned, 5);
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
        assert_eq!(store.stats.failed_batches, 1);
        assert!(matches!(store.outbox[0][0], StoreReply::Failed { .. }));
        assert!(matches!(&store.outbox[0][1], StoreReply::History { entries, .. } if entries.is_empty()));
        assert_eq!(store.logged_causes.len(), 1);
        store.apply(&mut vec![chat(&key, 2, None)]);
        assert_eq!(store.logged_causes.len(), 1, "one log line per cause");
        store.db.conn.pragma_update(None, "query_only", false).unwrap();
        store.apply(&mut vec![chat(&key, 3, None)]);
        assert_eq!(store.stats.failed_batches, 2);
        assert_eq!(store.history(&key, 5).unwrap().len(), 1);
    }
}
