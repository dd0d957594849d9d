//! The store thread's statistics: what it counts per batch, and the
//! [`StoreMonitor`] through which the acceptor reads them. The figures
//! themselves ([`StoreStats`]) and their Prometheus text belong to
//! `metrics`; this file only decides what each event and batch adds.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::metrics::{PruneKind, RowKind, StoreStats};
use crate::msg::StoreEvent;

/// The acceptor's handle on the store thread's [`StoreStats`].
#[derive(Debug, Clone, Default)]
pub struct StoreMonitor(Arc<Mutex<StoreStats>>);

impl StoreMonitor {
    /// A copy of the stats as of the last batch.
    pub fn snapshot(&self) -> StoreStats {
        self.lock().clone()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, StoreStats> {
        // Counters stay meaningful even if a holder panicked mid-update.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a batch that just ended: its events and rows, its commit time
    /// (`elapsed_us`), and `result` (chat rows pruned, or the failure).
    /// Returns whether it ended a failure episode (writes commit again).
    pub(super) fn record_batch(&self, batch: &[StoreEvent], elapsed_us: u64, result: &rusqlite::Result<u64>) -> bool {
        let committed = result.is_ok();
        let writes = batch.iter().any(|event| row_kind(event).is_some());
        let mut stats = self.lock();
        stats.running = None;
        let size = batch.len() as u64;
        stats.batches += 1;
        stats.events += size;
        stats.largest_batch = stats.largest_batch.max(size);
        stats.batch_sizes.record(size);
        stats.chats += batch.iter().filter(|event| matches!(event, StoreEvent::Chat(_))).count() as u64;
        stats.commit_us.record(elapsed_us);
        let rows = if committed { &mut stats.rows_written } else { &mut stats.rows_failed };
        for kind in batch.iter().filter_map(row_kind) {
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
    }
}

/// The row `event` writes; `None` for reads.
pub(super) fn row_kind(event: &StoreEvent) -> Option<RowKind> {
    match event {
        StoreEvent::Chat(_) => Some(RowKind::Chat),
        StoreEvent::ChatDelete { .. } => Some(RowKind::ChatDelete),
        StoreEvent::SessionOpen(_) => Some(RowKind::SessionOpen),
        StoreEvent::SessionClose { .. } => Some(RowKind::SessionClose),
        StoreEvent::Revoke { .. } => Some(RowKind::RevokedToken),
        StoreEvent::LoadHistory { .. } | StoreEvent::Query(_) => None,
    }
}
