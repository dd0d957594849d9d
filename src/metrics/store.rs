//! The store thread's figures and their `roomcast_store_*` families. The
//! store fills [`StoreStats`] once per batch (it owns the counting; this
//! module only says what the numbers are and how `/metrics` prints them),
//! and the acceptor wraps a copy in [`StoreGauges`] when it renders.

use std::time::Instant;

use super::{Kind, LatencyHistogram, family};

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
    pub fn record(&mut self, events: u64) {
        let bucket = BATCH_BUCKETS.iter().position(|&le| events <= le).unwrap_or(BATCH_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += events;
    }
}

/// The store thread's counters and gauges. The thread updates them under a
/// mutex once per batch; the acceptor copies them when it renders
/// `/metrics` (through a `store::StoreMonitor`), so they are as fresh as the
/// last batch. Logged at exit.
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
        let scalars: [(&str, Kind, &str, u64); 8] = [
            (
                "roomcast_store_queue_depth",
                Kind::Gauge,
                "Events waiting in the store queue now.",
                self.queue_depth as u64,
            ),
            (
                "roomcast_store_queue_max",
                Kind::Gauge,
                "Capacity of the store queue (store.queue_max).",
                self.queue_max as u64,
            ),
            (
                "roomcast_store_healthy",
                Kind::Gauge,
                "0 from a batch with writes whose transaction failed until the next such batch commits, else 1.",
                u64::from(!s.failing),
            ),
            ("roomcast_store_batches_total", Kind::Counter, "Store batches, one transaction each.", s.batches),
            (
                "roomcast_store_failed_batches_total",
                Kind::Counter,
                "Store batches whose transaction failed and was rolled back.",
                s.failed_batches,
            ),
            (
                "roomcast_store_outbox_replies",
                Kind::Gauge,
                "Store answers held for shards whose store-reply channel is full.",
                s.outbox_replies,
            ),
            (
                "roomcast_store_queries_failed_total",
                Kind::Counter,
                "HTTP API reads of the store that failed (500 store_failed).",
                s.queries_failed,
            ),
            (
                "roomcast_store_largest_batch_events",
                Kind::Gauge,
                "Events in the largest store batch so far.",
                s.largest_batch,
            ),
        ];
        for (name, kind, help, value) in scalars {
            family(out, name, kind, help).value(value);
        }
        let (running_s, running_events) =
            s.running.map_or((0.0, 0), |(since, events)| (since.elapsed().as_secs_f64(), events));
        family(
            out,
            "roomcast_store_batch_running_seconds",
            Kind::Gauge,
            "How long the store batch being written now has been running (0 when idle).",
        )
        .value(running_s);
        family(
            out,
            "roomcast_store_batch_running_events",
            Kind::Gauge,
            "Events in the store batch being written now (0 when idle).",
        )
        .value(running_events);
        for (name, help, rows) in [
            ("roomcast_store_rows_written_total", "Rows the store committed, by kind.", &s.rows_written),
            ("roomcast_store_rows_failed_total", "Rows lost in failed store batches, by kind.", &s.rows_failed),
        ] {
            let mut f = family(out, name, Kind::Counter, help);
            for kind in RowKind::ALL {
                f.labelled(format_args!("kind=\"{}\"", kind.name()), rows[kind as usize]);
            }
        }
        let mut f = family(
            out,
            "roomcast_store_rows_pruned_total",
            Kind::Counter,
            "Rows the store deleted to keep its tables bounded, by kind.",
        );
        for kind in PruneKind::ALL {
            f.labelled(format_args!("kind=\"{}\"", kind.name()), s.rows_pruned[kind as usize]);
        }
        let mut f = family(
            out,
            "roomcast_store_replies_dropped_total",
            Kind::Counter,
            "At store.outbox_max: chat acks and store_failed answers dropped (chat), history answers sent empty (history).",
        );
        f.labelled("kind=\"chat\"", s.replies_dropped);
        f.labelled("kind=\"history\"", s.histories_emptied);

        let histogram = &s.commit_us.0;
        let buckets = COMMIT_BUCKETS_US.iter().map(|&le| (le as f64 / 1e6, histogram.count_between(0, le)));
        family(
            out,
            "roomcast_store_commit_seconds",
            Kind::Histogram,
            "Time from a store batch's BEGIN (lock waits included) to its commit or failure.",
        )
        .histogram("", buckets, histogram.mean() * histogram.len() as f64 / 1e6, histogram.len());

        let sizes = &self.stats.batch_sizes;
        let mut cumulative = 0;
        let buckets = BATCH_BUCKETS.iter().enumerate().map(|(i, &le)| {
            cumulative += sizes.counts[i];
            (le, cumulative)
        });
        let total: u64 = sizes.counts.iter().sum();
        family(out, "roomcast_store_batch_events", Kind::Histogram, "Events per store batch.")
            .histogram("", buckets, sizes.sum, total);
    }
}
