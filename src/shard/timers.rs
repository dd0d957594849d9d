//! A connection's timers on the shard's wheel: the heartbeat (ping, dead
//! peer, token expiry, a stalled reader) and the close deadline; a timer
//! that cannot be scheduled closes or frees its connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ShardCore;
use super::conn::{ConnState, Role};
use crate::ids::ConnId;
use crate::metrics::LimitKind;
use crate::timer::TimerKind;
use crate::ws::CloseCode;

impl ShardCore {
    fn ping_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.settings.limits.ping_interval_ms))
    }

    /// The `Instant` at which the wall clock reads `unix_s`.
    fn instant_of_unix(&self, unix_s: u64) -> Instant {
        // Capped at a year ahead: `u64::MAX` (no expiry) must not overflow an Instant.
        const YEAR_S: u64 = 365 * 24 * 3600;
        self.now + Duration::from_secs(unix_s.saturating_sub(self.now_unix_s).min(YEAR_S))
    }

    pub(super) fn schedule(&mut self, conn: ConnId, at: Instant, kind: TimerKind) {
        if self.timers.schedule(at, conn, kind).is_ok() {
            return;
        }
        // Only when stale entries crowd the wheel; the connection must not
        // live on without its deadline. Counted once per connection.
        let slot = conn.slot as usize;
        match kind {
            // begin_close counts it, and then asks for a close deadline.
            TimerKind::Heartbeat => self.begin_close(slot, CloseCode::INTERNAL, Some(LimitKind::TimerFull)),
            TimerKind::CloseDeadline => {
                let counted = self.conns.get(slot).is_some_and(|c| c.limits_logged & LimitKind::TimerFull.bit() != 0);
                if !counted {
                    self.note_limit(slot, LimitKind::TimerFull);
                }
                // Without a deadline the peer could hold the socket forever: free it now.
                self.drop_conn(slot);
            }
        }
    }

    pub(super) fn fire_due_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        for (id, kind) in fired.drain(..) {
            if self.is_live(id) {
                self.on_timer(id, kind);
            }
        }
        self.fired = fired;
    }

    fn on_timer(&mut self, id: ConnId, kind: TimerKind) {
        let slot = id.slot as usize;
        let Some(conn) = self.conns.get(slot) else { return };
        match kind {
            TimerKind::Heartbeat => {
                if conn.state != ConnState::Open {
                    return;
                }
                let limits = &self.settings.limits;
                let expires_at_s = conn.expires_at_s();
                let silent_ms = (self.now_ms() as u32).wrapping_sub(conn.last_rx_ms);
                let silent = Duration::from_millis(u64::from(silent_ms));
                let last_rx = self.now.checked_sub(silent).unwrap_or(self.origin);
                if expires_at_s.saturating_add(self.settings.token_leeway_s) <= self.now_unix_s {
                    self.begin_close(slot, CloseCode::TOKEN_EXPIRED, Some(LimitKind::TokenExpired));
                    return;
                }
                if silent >= Duration::from_millis(u64::from(limits.dead_after_ms)) {
                    self.begin_close(slot, CloseCode::DEAD_PEER, Some(LimitKind::DeadPeer));
                    return;
                }
                // A reader that stopped while nothing more is sent to it.
                let bounds = self.member_queue_bounds();
                if matches!(conn.role, Role::Member(_))
                    && let Some(conn) = self.conns.get_mut(slot)
                    && conn.check_backlog(bounds).is_err()
                {
                    self.close_slow_consumer(slot);
                    return;
                }
                if silent + crate::timer::TICK >= self.ping_interval() {
                    let ping = Arc::clone(&self.ping_frame);
                    self.queue(slot, ping);
                }
                let next = self.next_heartbeat(last_rx, expires_at_s);
                self.schedule(id, next, TimerKind::Heartbeat);
            }
            TimerKind::CloseDeadline => {
                self.note_limit(slot, LimitKind::CloseTimeout);
                self.drop_conn(slot);
            }
        }
    }

    /// When a connection's one heartbeat timer fires next: a ping interval
    /// from now, or sooner when it would be dead (silent since `last_rx`) or
    /// its token would run out.
    pub(super) fn next_heartbeat(&self, last_rx: Instant, expires_at_s: u64) -> Instant {
        let dead_at = last_rx + Duration::from_millis(u64::from(self.settings.limits.dead_after_ms));
        let expires_at = self.instant_of_unix(expires_at_s.saturating_add(self.settings.token_leeway_s));
        (self.now + self.ping_interval()).min(dead_at).min(expires_at)
    }
}
