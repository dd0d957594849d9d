//! Revoked and used single-use tokens, by `jti`: the acceptor's own set,
//! checked on every handshake without a lock or a disk read.
//!
//! The acceptor owns the set and is its only writer: it handles
//! `DELETE /api/v1/tokens/{jti}` and spends single-use tokens itself, so it
//! updates the set directly and hands each entry to the store thread
//! (`StoreEvent::Revoke`). The store only persists: it keeps the entry in
//! `revoked_tokens` until it expires and, at start, feeds the set from there
//! (`Database::revoked_tokens`); it never changes the set of a running
//! process. Without the store, revocations live in memory only and are lost
//! at a restart. An entry is dropped once its `expires_s` has passed: the
//! token it names has expired by then and is refused anyway.
//!
//! Bounds: at most `limits.revoked_tokens_max` entries (expired ones are
//! dropped first when it is reached); past it a revocation is refused (507)
//! and so is a single-use token's handshake (503: it could not be spent).
//! When the store's queue is full an entry waits in `unpersisted` (at most
//! one per entry of the set) and is offered again on every [`RevokedTokens::tick`]
//! of the acceptor's loop (at least once a second) and, at shutdown, for a
//! bounded time, so a revocation answered 200 is not forgotten at a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::auth::Identity;
use crate::metrics::RevocationMetrics;
use crate::msg::StoreEvent;

/// How often expired entries are dropped from memory, in seconds.
const PURGE_EVERY_S: u64 = 60;
/// Longest the acceptor waits at shutdown for the store queue to take the
/// revocations it could not queue before.
const FINAL_PERSIST_WAIT: Duration = Duration::from_secs(2);

/// Why a token is in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `DELETE /api/v1/tokens/{jti}`.
    Revoked,
    /// A single-use token that was accepted once.
    Used,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Revoked => "revoked",
            Reason::Used => "used",
        }
    }
}

/// Why a handshake may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token is revoked, or is single-use and was used (401).
    Revoked,
    /// A single-use token cannot be spent: the set is full (503).
    Full,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Revoked => 401,
            Refusal::Full => 503,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Revoked => "token_revoked",
            Refusal::Full => FULL_CODE,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Revoked => "the token was revoked or was single-use and has been used",
            Refusal::Full => {
                "the server holds limits.revoked_tokens_max revoked tokens; single-use tokens cannot be spent now"
            }
        }
    }
}

/// The error code of a full set, for handshakes (503) and revocations (507).
pub const FULL_CODE: &str = "revocations_full";

/// The set is at `limits.revoked_tokens_max`: nothing was added. The HTTP
/// API answers it with 507 (`http_api`, beside `DELETE /api/v1/tokens/{jti}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetFull;

/// An entry the store queue had no room for: `(expires_s, revoked_ms, reason)`.
type Unpersisted = (u64, u64, Reason);

/// The set, and where to persist what is added to it.
#[derive(Debug)]
pub struct RevokedTokens {
    /// `jti` → Unix second from which the entry may be dropped.
    entries: HashMap<Box<str>, u64>,
    /// `limits.revoked_tokens_max`.
    max: usize,
    store: Option<Sender<StoreEvent>>,
    /// Entries to hand to the store when its queue has room; keys are in `entries`.
    unpersisted: HashMap<Box<str>, Unpersisted>,
    next_purge_s: u64,
    metrics: RevocationMetrics,
}

impl RevokedTokens {
    /// `loaded`: the store's unexpired entries (all kept, even past `max`:
    /// dropping one would forget a revocation); `store`: where new ones go
    /// (`None` without the store: memory only); `max`: `limits.revoked_tokens_max`.
    pub fn new(loaded: Vec<(String, u64)>, store: Option<Sender<StoreEvent>>, max: usize) -> RevokedTokens {
        let entries: HashMap<Box<str>, u64> =
            loaded.into_iter().map(|(jti, expires_s)| (jti.into_boxed_str(), expires_s)).collect();
        if entries.len() >= max {
            tracing::warn!(
                loaded = entries.len(),
                max,
                "the stored revoked tokens fill limits.revoked_tokens_max: new revocations are refused until some expire"
            );
        }
        RevokedTokens {
            entries,
            max,
            store,
            unpersisted: HashMap::new(),
            next_purge_s: 0,
            metrics: RevocationMetrics::default(),
        }
    }

    /// Whether a handshake with `identity` may go on at `now_s`. A revoked
    /// or already used token is refused; a single-use token is spent by this
    /// call, or refused when the set has no room to remember it.
    pub fn admit(&mut self, identity: &Identity, now_s: u64, now_ms: u64) -> Result<(), Refusal> {
        let Some(jti) = identity.jti.as_deref() else { return Ok(()) };
        if self.entries.get(jti).is_some_and(|&expires_s| expires_s > now_s) {
            return Err(Refusal::Revoked);
        }
        if identity.once {
            self.add(jti, identity.expires_at_s, Reason::Used, now_ms).map_err(|SetFull| Refusal::Full)?;
        }
        Ok(())
    }

    /// Adds `jti` until `expires_s` (replacing an earlier entry) and
    /// persists it; refused when the set is full of unexpired entries.
    pub fn add(&mut self, jti: &str, expires_s: u64, reason: Reason, now_ms: u64) -> Result<(), SetFull> {
        if !self.entries.contains_key(jti) && self.entries.len() >= self.max {
            self.drop_expired(now_ms / 1000);
            if self.entries.len() >= self.max {
                match reason {
                    Reason::Revoked => self.metrics.refused_revoked += 1,
                    Reason::Used => self.metrics.refused_used += 1,
                }
                tracing::warn!(jti, reason = reason.as_str(), "limits.revoked_tokens_max reached: not added");
                return Err(SetFull);
            }
        }
        self.entries.insert(jti.into(), expires_s);
        self.persist(jti, (expires_s, now_ms, reason));
        Ok(())
    }

    /// Hands an entry to the store, or keeps it for a later try.
    fn persist(&mut self, jti: &str, (expires_s, revoked_ms, reason): Unpersisted) {
        let Some(store) = &self.store else { return };
        let event = StoreEvent::Revoke { jti: jti.into(), expires_s, revoked_ms, reason: reason.as_str() };
        if store.try_send(event).is_ok() {
            // A newer entry for the jti replaces one still waiting.
            self.unpersisted.remove(jti);
            return;
        }
        self.metrics.deferred += 1;
        if self.unpersisted.is_empty() {
            tracing::warn!(jti, "store queue full: revocations are held in memory and written when it has room");
        }
        self.unpersisted.insert(jti.into(), (expires_s, revoked_ms, reason));
    }

    /// Called from the acceptor's loop: drops expired entries (at most once
    /// a minute) and offers the store what it could not take before.
    pub fn tick(&mut self, now_s: u64) {
        self.purge(now_s);
        let Some(store) = &self.store else { return };
        if self.unpersisted.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for (jti, &(expires_s, revoked_ms, reason)) in &self.unpersisted {
            // An expired entry needs no row: its token is refused anyway.
            if expires_s > now_s {
                let event = StoreEvent::Revoke { jti: jti.clone(), expires_s, revoked_ms, reason: reason.as_str() };
                if store.try_send(event).is_err() {
                    break;
                }
            }
            done.push(jti.clone());
        }
        for jti in done {
            self.unpersisted.remove(&jti);
        }
        if self.unpersisted.is_empty() {
            tracing::info!("revocations held while the store queue was full are now queued to the store");
        }
    }

    /// Drops expired entries, at most once a minute.
    fn purge(&mut self, now_s: u64) {
        if now_s < self.next_purge_s {
            return;
        }
        self.next_purge_s = now_s + PURGE_EVERY_S;
        self.drop_expired(now_s);
    }

    fn drop_expired(&mut self, now_s: u64) {
        self.entries.retain(|_, expires_s| *expires_s > now_s);
        self.unpersisted.retain(|_, (expires_s, ..)| *expires_s > now_s);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn metrics(&self) -> RevocationMetrics {
        RevocationMetrics {
            held: self.entries.len() as u64,
            max: self.max as u64,
            unpersisted: self.unpersisted.len() as u64,
            ..self.metrics
        }
    }
}

impl Drop for RevokedTokens {
    /// The acceptor stops before the shards and the store: the store still
    /// takes events, so what waits for its queue is offered once more, with
    /// a bounded wait, rather than forgotten at the restart.
    fn drop(&mut self) {
        let Some(store) = self.store.take() else { return };
        if self.unpersisted.is_empty() {
            return;
        }
        let deadline = Instant::now() + FINAL_PERSIST_WAIT;
        let mut lost = 0;
        for (jti, (expires_s, revoked_ms, reason)) in self.unpersisted.drain() {
            let event = StoreEvent::Revoke { jti, expires_s, revoked_ms, reason: reason.as_str() };
            if store.send_timeout(event, deadline.saturating_duration_since(Instant::now())).is_err() {
                lost += 1;
            }
        }
        if lost > 0 {
            tracing::error!(lost, "revocations not persisted (the store queue stayed full): forgotten at restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(jti: Option<&str>, once: bool) -> Identity {
        Identity { jti: jti.map(str::to_owned), once, expires_at_s: 1_000, ..Identity::dev("u") }
    }

    fn revoke_event(event: StoreEvent) -> (String, u64) {
        match event {
            StoreEvent::Revoke { jti, expires_s, .. } => (jti.into(), expires_s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn revoked_is_refused_until_it_expires_and_is_then_purged() {
        let mut set = RevokedTokens::new(vec![("old".into(), 10)], None, 100);
        set.add("j", 1_000, Reason::Revoked, 0).unwrap();
        assert_eq!(set.admit(&identity(Some("j"), false), 999, 0), Err(Refusal::Revoked));
        assert!(set.admit(&identity(Some("other"), false), 999, 0).is_ok());
        assert!(set.admit(&identity(None, false), 999, 0).is_ok());
        assert!(set.admit(&identity(Some("old"), false), 999, 0).is_ok(), "expired entry");
        set.purge(999);
        assert_eq!(set.len(), 1);
        set.next_purge_s = 0;
        set.purge(1_000);
        assert!(set.is_empty());
    }

    #[test]
    fn single_use_is_accepted_once_and_persisted() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let mut set = RevokedTokens::new(Vec::new(), Some(tx), 100);
        assert!(set.admit(&identity(Some("s"), true), 5, 5_000).is_ok());
        assert_eq!(set.admit(&identity(Some("s"), true), 6, 6_000), Err(Refusal::Revoked));
        match rx.try_recv() {
            Ok(StoreEvent::Revoke { jti, expires_s: 1_000, revoked_ms: 5_000, reason: "used" }) => {
                assert_eq!(&*jti, "s")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_set_refuses_new_entries_after_dropping_expired_ones() {
        let mut set = RevokedTokens::new(vec![("a".into(), 100)], None, 2);
        set.add("b", 2_000, Reason::Revoked, 0).unwrap();
        assert_eq!(set.add("c", 2_000, Reason::Revoked, 50_000), Err(SetFull));
        assert_eq!(set.add("b", 3_000, Reason::Revoked, 50_000), Ok(()), "replacing needs no room");
        assert_eq!(set.admit(&identity(Some("once"), true), 50, 50_000), Err(Refusal::Full));
        assert_eq!(Refusal::Full.status(), 503);
        let metrics = set.metrics();
        assert_eq!((metrics.held, metrics.max, metrics.refused_revoked, metrics.refused_used), (2, 2, 1, 1));
        // At 100 s "a" has expired: its place is taken without waiting for the purge.
        assert_eq!(set.add("c", 2_000, Reason::Revoked, 100_000), Ok(()));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn entries_the_store_queue_had_no_room_for_are_retried_and_flushed_at_drop() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut set = RevokedTokens::new(Vec::new(), Some(tx), 100);
        set.add("first", 1_000, Reason::Revoked, 0).unwrap();
        set.add("second", 1_000, Reason::Revoked, 0).unwrap();
        set.add("third", 1_000, Reason::Used, 0).unwrap();
        let metrics = set.metrics();
        assert_eq!((metrics.deferred, metrics.unpersisted), (2, 2), "the queue holds one");
        assert_eq!(revoke_event(rx.try_recv().unwrap()).0, "first");
        set.tick(1);
        assert_eq!(set.metrics().unpersisted, 1, "one more fitted");
        let retried = revoke_event(rx.try_recv().unwrap()).0;
        assert!(["second", "third"].contains(&retried.as_str()));
        // The queue has room again when the acceptor stops: the last one goes then.
        drop(set);
        let flushed = revoke_event(rx.try_recv().expect("flushed at drop")).0;
        assert_ne!(flushed, retried);
        assert!(["second", "third"].contains(&flushed.as_str()));
    }
}
