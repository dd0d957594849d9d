//! Revoked and used single-use tokens, by `jti`: the acceptor's own set,
//! checked on every handshake without a lock or a disk read.
//!
//! The acceptor is the only writer: it handles `DELETE /api/v1/tokens/{jti}`
//! and spends single-use tokens itself, so it updates the set directly and
//! hands each entry to the store thread (`StoreEvent::Revoke`), which keeps
//! it in `revoked_tokens` until it expires. At start the set is loaded from
//! there. Without the store, revocations live in memory only and are lost at
//! a restart. An entry is dropped once its `expires_s` has passed: the token
//! it names has expired by then and is refused anyway.

use std::collections::HashMap;

use crossbeam_channel::Sender;

use crate::auth::Identity;
use crate::store::StoreEvent;

/// How often expired entries are dropped from memory, in seconds.
const PURGE_EVERY_S: u64 = 60;

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

/// The set, and where to persist what is added to it.
#[derive(Debug, Default)]
pub struct RevokedTokens {
    /// `jti` → Unix second from which the entry may be dropped.
    entries: HashMap<Box<str>, u64>,
    store: Option<Sender<StoreEvent>>,
    next_purge_s: u64,
}

impl RevokedTokens {
    /// `loaded`: the store's unexpired entries; `store`: where new ones go
    /// (`None` without the store: memory only).
    pub fn new(loaded: Vec<(String, u64)>, store: Option<Sender<StoreEvent>>) -> RevokedTokens {
        let entries = loaded.into_iter().map(|(jti, expires_s)| (jti.into_boxed_str(), expires_s)).collect();
        RevokedTokens { entries, store, next_purge_s: 0 }
    }

    /// Whether a handshake with `identity` may go on at `now_s`. A revoked
    /// or already used token is refused (`token_revoked`); a single-use
    /// token is spent by this call.
    pub fn admit(&mut self, identity: &Identity, now_s: u64, now_ms: u64) -> Result<(), (&'static str, &'static str)> {
        let Some(jti) = identity.jti.as_deref() else { return Ok(()) };
        if self.entries.get(jti).is_some_and(|&expires_s| expires_s > now_s) {
            return Err(("token_revoked", "the token was revoked or was single-use and has been used"));
        }
        if identity.once {
            self.add(jti, identity.expires_at_s, Reason::Used, now_ms);
        }
        Ok(())
    }

    /// Adds `jti` until `expires_s` and persists it.
    pub fn add(&mut self, jti: &str, expires_s: u64, reason: Reason, now_ms: u64) {
        self.entries.insert(jti.into(), expires_s);
        let Some(store) = &self.store else { return };
        let event = StoreEvent::Revoke { jti: jti.into(), expires_s, revoked_ms: now_ms, reason: reason.as_str() };
        if store.try_send(event).is_err() {
            tracing::warn!(jti, "store queue full: a token revocation is kept in memory only");
        }
    }

    /// Drops expired entries, at most once a minute.
    pub fn purge(&mut self, now_s: u64) {
        if now_s < self.next_purge_s {
            return;
        }
        self.next_purge_s = now_s + PURGE_EVERY_S;
        self.entries.retain(|_, expires_s| *expires_s > now_s);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(jti: Option<&str>, once: bool) -> Identity {
        Identity { jti: jti.map(str::to_owned), once, expires_at_s: 1_000, ..Identity::dev("u") }
    }

    #[test]
    fn revoked_is_refused_until_it_expires_and_is_then_purged() {
        let mut set = RevokedTokens::new(vec![("old".into(), 10)], None);
        set.add("j", 1_000, Reason::Revoked, 0);
        assert!(set.admit(&identity(Some("j"), false), 999, 0).is_err());
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
        let mut set = RevokedTokens::new(Vec::new(), Some(tx));
        assert!(set.admit(&identity(Some("s"), true), 5, 5_000).is_ok());
        assert_eq!(set.admit(&identity(Some("s"), true), 6, 6_000).map_err(|e| e.0), Err("token_revoked"));
        match rx.try_recv() {
            Ok(StoreEvent::Revoke { jti, expires_s: 1_000, revoked_ms: 5_000, reason: "used" }) => {
                assert_eq!(&*jti, "s")
            }
            other => panic!("{other:?}"),
        }
    }
}
