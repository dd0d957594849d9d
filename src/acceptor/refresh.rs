//! The shards' `refresh` tokens, verified here rather than in a shard loop:
//! a signature check (RSA, EdDSA) costs far more than a shard iteration
//! should, and the revoked-token set lives on this thread, so a refresh is
//! checked against it like a handshake is.
//!
//! A shard sends a `RefreshRequest` through one bounded channel shared by
//! every shard and wakes this loop; the verdict goes back to the shard's
//! inbox as `ShardMsg::Refreshed` with one wake per shard per iteration. A
//! verdict that meets a full inbox waits here, per shard and in order, and is
//! offered again on the next iterations (1 ms apart); while
//! `REFRESH_QUEUE_MAX` verdicts wait, no more requests are taken, so the
//! channel fills and the shards answer `overloaded` themselves.

use std::collections::VecDeque;

use crossbeam_channel::Receiver;

use super::{Acceptor, Tokens, unix_now_s};
use crate::refusal::Refusal;
use crate::shard::{RefreshAnswer, RefreshRequest, ShardMsg};

/// Refresh requests queued for the acceptor, from all shards together; a
/// shard whose request does not fit answers `overloaded`. Also the most
/// verdicts held for shards with a full inbox.
pub const REFRESH_QUEUE_MAX: usize = 256;

/// Refresh requests from the shards, and verdicts waiting for a full inbox.
pub(super) struct RefreshQueue {
    requests: Receiver<RefreshRequest>,
    /// Per shard, verdicts its full inbox refused, oldest first.
    unsent: Vec<VecDeque<Box<RefreshAnswer>>>,
    /// Verdicts in `unsent`, all shards together.
    unsent_len: usize,
}

impl RefreshQueue {
    pub(super) fn new(requests: Receiver<RefreshRequest>, shard_count: usize) -> RefreshQueue {
        RefreshQueue { requests, unsent: (0..shard_count).map(|_| VecDeque::new()).collect(), unsent_len: 0 }
    }

    /// Some verdict waits for a shard: the loop retries soon.
    pub(super) fn behind(&self) -> bool {
        self.unsent_len > 0
    }
}

impl Tokens {
    /// The checks of a refresh, in order: the token verifies, is not
    /// single-use and not revoked, names the connection's user and tenant,
    /// and its room claim allows the connection's URL room. `Ok`: its `exp`.
    fn check_refresh(&mut self, request: &RefreshRequest) -> Result<u64, Refusal> {
        let Some(verifier) = &self.verifier else { return Err(Refusal::RefreshUnsupported) };
        let fresh = verifier
            .verify(&request.token)
            .map_err(|e| Refusal::TokenRefused { code: e.code(), message: e.message() })?;
        if fresh.once {
            return Err(Refusal::RefreshSingleUse);
        }
        // Not single-use, so this only reads the set. Expired entries go in `revoked.tick`.
        let now_s = unix_now_s();
        if let Err(refusal) = self.revoked.admit(&fresh, now_s, now_s.saturating_mul(1000)) {
            return Err(Refusal::TokenRefused { code: refusal.code(), message: refusal.message() });
        }
        if *fresh.user != *request.user || *fresh.tenant != *request.tenant {
            return Err(Refusal::RefreshOtherIdentity);
        }
        if request.home.as_deref().is_some_and(|room| !fresh.may_enter(room)) {
            return Err(Refusal::RefreshRoomClaim);
        }
        Ok(fresh.expires_at_s)
    }
}

impl Acceptor {
    /// Offers the waiting verdicts again, then verifies the refreshes
    /// queued now (no more: a steady stream cannot hold the loop) and sends
    /// each verdict to the connection's shard.
    pub(super) fn answer_refreshes(&mut self) {
        self.retry_refresh_answers();
        for _ in 0..self.tokens.refresh.requests.len() {
            if self.tokens.refresh.unsent_len >= REFRESH_QUEUE_MAX {
                break;
            }
            let Ok(request) = self.tokens.refresh.requests.try_recv() else { break };
            let outcome = self.tokens.check_refresh(&request);
            let answer = RefreshAnswer { conn: request.conn, reference: request.reference, outcome };
            self.send_refresh_answer(Box::new(answer));
        }
    }

    /// Sends a verdict to its shard's inbox, after any that wait for it.
    fn send_refresh_answer(&mut self, answer: Box<RefreshAnswer>) {
        let shard = usize::from(answer.conn.shard);
        let Some(unsent) = self.tokens.refresh.unsent.get_mut(shard) else { return };
        let answer = if unsent.is_empty() {
            match self.shards.try_send(shard, ShardMsg::Refreshed(answer)) {
                Ok(()) | Err(ShardMsg::Handoff(_) | ShardMsg::Remote(..) | ShardMsg::Cluster(_)) => return,
                Err(ShardMsg::Refreshed(answer)) => {
                    tracing::warn!(shard, "shard inbox full: refresh answers wait on the acceptor");
                    answer
                }
            }
        } else {
            answer
        };
        unsent.push_back(answer);
        self.tokens.refresh.unsent_len += 1;
    }

    /// Sends waiting verdicts, oldest first, while the shards take them.
    fn retry_refresh_answers(&mut self) {
        let queue = &mut self.tokens.refresh;
        if queue.unsent_len == 0 {
            return;
        }
        for (shard, unsent) in queue.unsent.iter_mut().enumerate() {
            while let Some(answer) = unsent.pop_front() {
                match self.shards.try_send(shard, ShardMsg::Refreshed(answer)) {
                    Ok(()) => queue.unsent_len -= 1,
                    Err(ShardMsg::Refreshed(answer)) => {
                        unsent.push_front(answer);
                        break;
                    }
                    Err(ShardMsg::Handoff(_) | ShardMsg::Remote(..) | ShardMsg::Cluster(_)) => queue.unsent_len -= 1,
                }
            }
        }
    }
}
