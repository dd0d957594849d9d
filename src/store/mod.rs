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
//!
//! Files: this one (the thread: batching, answers, housekeeping), `schema.rs`
//! (the file, migrations), `write.rs` (SQL of the event batch), `query.rs`
//! (SQL of reads and HTTP API requests), `monitor.rs` (the statistics the
//! acceptor reads; `metrics` renders them).

mod monitor;
mod query;
mod schema;
mod write;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, TrySendError};
use rusqlite::params;

use self::query::run_query;
use self::write::{delete_expired_revocations, write_batch};
use crate::ids::ShardId;
use crate::metrics::PruneKind;
use crate::msg::{AdminAnswer, AdminReply, CLOSE_ABNORMAL, Reply, StoreReply};
use crate::room::ChatRecord;

pub use self::monitor::StoreMonitor;
pub use self::schema::{DB_FILE, Database};
// The message types live in `msg` and the figures in `metrics`; named here
// too for the store's callers (acceptor, HTTP API, server).
pub use crate::metrics::{StoreGauges, StoreStats};
pub use crate::msg::{QueryRequest, StoreAnswer, StoreEvent, StoreQuery};
pub use crate::registry::RoomRecord;

/// First and longest wait before replies held back by a full shard channel
/// are offered again: the wait doubles while the shard stays full, so a
/// stalled shard costs the store a few wake-ups a second, not a busy loop.
const REPLY_RETRY_FIRST: Duration = Duration::from_millis(1);
const REPLY_RETRY_MAX: Duration = Duration::from_millis(100);
/// How often the store's housekeeping runs (also once at start): old
/// session audit rows and expired revoked tokens are deleted.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;
/// The step of an audit batch's linger (see `Store::fill`).
const LINGER_STEP: Duration = Duration::from_millis(1);

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
    /// Where each shard's answers go, by shard id.
    shards: Vec<Reply<Vec<StoreReply>>>,
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
        shards: Vec<Reply<Vec<StoreReply>>>,
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
    ///
    /// The linger sleeps in steps of `LINGER_STEP` and drains what came
    /// meanwhile, rather than blocking on the channel: a receiver blocked
    /// on it makes every `try_send` of a shard a futex wake and, on a busy
    /// core, a context switch per connection; this costs the shards nothing
    /// but an atomic per event. A chat event that comes during a linger
    /// waits at most one step longer for its commit (its broadcast is not
    /// held up: the shard delivers before it persists).
    fn fill(&self, batch: &mut Vec<StoreEvent>) {
        let linger_until = Instant::now() + self.audit_linger;
        while batch.len() < self.batch_max {
            match self.events.try_recv() {
                Ok(event) => batch.push(event),
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) if self.audit_linger.is_zero() || !batch.iter().all(StoreEvent::is_audit) => {
                    return;
                }
                Err(TryRecvError::Empty) => {
                    let left = linger_until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    std::thread::sleep(left.min(LINGER_STEP));
                }
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
        let recovered = self.stats.record_batch(batch, elapsed_us, &result);
        let committed = result.is_ok();
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
                    let StoreQuery { ticket, reply, .. } = *query;
                    // A full reply channel or a gone acceptor: the request times out there.
                    let _ = reply.send(AdminReply { ticket, answer: AdminAnswer::Store(answer) });
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
            let Some(reply_to) = self.shards.get(shard) else {
                replies.clear();
                continue;
            };
            match reply_to.send(std::mem::take(replies)) {
                Ok(()) => self.outbox_full[shard] = false,
                Err(TrySendError::Full(kept)) => {
                    *replies = kept;
                    held += replies.len();
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        self.retry_delay = if held == 0 { REPLY_RETRY_FIRST } else { (self.retry_delay * 2).min(REPLY_RETRY_MAX) };
        self.stats.lock().outbox_replies = held as u64;
    }

    /// The stored history of `key` (for tests and tools).
    #[cfg(test)]
    pub fn history(&self, key: &crate::ids::RoomKey, limit: u32) -> rusqlite::Result<Vec<crate::room::StoredChat>> {
        query::query_history(&self.db.conn, key, limit)
    }
}

/// A `u64` as SQLite's signed 64-bit integer: values past `i64::MAX` (an
/// `exp` far in the future) are stored as `i64::MAX`, never as a negative
/// number that would read as long past.
fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::query::usage;
    use super::*;
    use crate::config::Synchronous;
    use crate::ids::{ConnId, RoomKey};
    use crate::metrics::RowKind;
    use crate::msg::SessionOpen;
    use crate::room::Peer;
    use std::path::Path;

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
            member: Peer::new(conn(slot), user, None),
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
        assert_eq!(ids(&plain), ["m3", "m4", "m5"].map(Box::<str>::from), "rooms.history_max");
        assert_eq!(ids(&registered), [Box::<str>::from("m5")], "the registry's history_max");
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
