//! The info lines a shard writes when a room connection opens and closes
//! (conn, user, tenant, room, peer address; at close the close code, its
//! reason, who closed, and how long the connection lived), rate-limited per
//! shard by `log.connection_lines_per_s` so a connect flood cannot turn into
//! a log flood. Lines past the limit are only counted: a suppressed line
//! costs an increment, no formatting and no allocation; one summary line a
//! second says how many there were. What the close line repeats from the
//! open is on the connection's `Member`: when it opened (a `u32` in what was
//! padding) and its home room (the room table's shared key), not in a table
//! by slot. The peer address is on the open line only; `conn` ties the two.

use std::net::SocketAddr;

use super::conn::{ConnState, Connection, Role};
use crate::ids::ShardId;

pub(super) struct ConnLog {
    lines_per_s: u32,
    /// Lines written in the current second.
    lines: u32,
    /// Lines suppressed in the current second.
    suppressed: u64,
    /// Lines suppressed since the start (`roomcast_log_lines_suppressed_total`).
    pub suppressed_total: u64,
}

impl ConnLog {
    pub fn new(lines_per_s: u32) -> ConnLog {
        ConnLog { lines_per_s, lines: 0, suppressed: 0, suppressed_total: 0 }
    }

    /// A room connection was admitted (echo connections are not logged:
    /// they have no user or room).
    pub fn opened(&mut self, conn: &Connection, peer: Option<SocketAddr>) {
        let Role::Member(member) = &conn.role else { return };
        if self.take_line() {
            tracing::info!(
                conn = %conn.id,
                user = member.peer.user(),
                tenant = member.tenant(),
                room = Some(member.home.room()),
                peer = peer.map(tracing::field::display),
                "connection opened"
            );
        }
    }

    /// The connection is being freed at `now_ms` (ms since the shard
    /// started); `close_code` is the code of the Close sent or echoed, 1006
    /// when there was none.
    pub fn closed(&mut self, conn: &Connection, close_code: u16, now_ms: u64) {
        let Role::Member(member) = &conn.role else { return };
        if !self.take_line() {
            return;
        }
        let by = match conn.state {
            ConnState::Closing { peer_closed: true } => "peer",
            ConnState::Closing { peer_closed: false } => "server",
            _ => "none",
        };
        // Both ends wrap at 2^32 ms, so a life past 49.7 days reads modulo that.
        let duration_ms = u64::from((now_ms as u32).wrapping_sub(member.opened_ms));
        tracing::info!(
            conn = %conn.id,
            user = member.peer.user(),
            tenant = member.tenant(),
            room = Some(member.home.room()),
            close_code,
            reason = close_reason(close_code),
            by,
            duration_ms,
            "connection closed"
        );
    }

    /// Once a second: says how many lines the second suppressed, and opens
    /// the next second's allowance.
    pub fn end_second(&mut self, shard: ShardId) {
        if self.suppressed > 0 {
            let suppressed = self.suppressed;
            tracing::info!(
                shard,
                suppressed,
                limit = self.lines_per_s,
                "{suppressed} connection lines suppressed (log.connection_lines_per_s)"
            );
        }
        (self.lines, self.suppressed) = (0, 0);
    }

    /// Whether one more line fits in this second; counts it either way.
    fn take_line(&mut self) -> bool {
        if self.lines < self.lines_per_s {
            self.lines += 1;
            true
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
            false
        }
    }
}

/// What a close code means, for the log (the codes of `ws::CloseCode` and
/// RFC 6455 §7.4.1; some codes have several roomcast reasons).
pub(super) fn close_reason(code: u16) -> &'static str {
    match code {
        1000 => "normal",
        1001 => "going away (shutdown or no traffic within dead_after_ms)",
        1002 => "protocol error",
        1003 => "unsupported data",
        1006 => "dropped without a Close",
        1007 => "invalid utf-8",
        1008 => "policy (rate abuse, or the room became private or unregistered)",
        1009 => "message too big",
        1011 => "internal error",
        1013 => "try again later (server or room full, or slow consumer)",
        4001 => "token expired",
        4003 => "kicked by a host",
        4004 => "denied entry by a host",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_limit_are_counted_and_the_allowance_renews_each_second() {
        let mut log = ConnLog::new(2);
        assert!(log.take_line() && log.take_line());
        assert!(!log.take_line() && !log.take_line());
        assert_eq!((log.suppressed, log.suppressed_total), (2, 2));
        log.end_second(0);
        assert_eq!((log.lines, log.suppressed, log.suppressed_total), (0, 0, 2));
        assert!(log.take_line());
        let mut off = ConnLog::new(0);
        assert!(!off.take_line());
    }

    #[test]
    fn every_code_roomcast_sends_has_a_reason() {
        for code in [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4003, 4004] {
            assert_ne!(close_reason(code), "other", "{code}");
        }
    }
}
