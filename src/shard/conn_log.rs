//! The info lines a shard writes when a room connection opens and closes
//! (conn, user, tenant, room, peer address; at close the close code, its
//! reason, who closed, and how long the connection lived), rate-limited per
//! shard by `log.connection_lines_per_s` so a connect flood cannot turn into
//! a log flood. Lines past the limit are only counted: a suppressed line
//! costs an increment, no formatting and no allocation; one summary line a
//! second says how many there were. What the close line needs from the open
//! (when, from where, which room) is kept here by slot, apart from the
//! connection itself, so the close state machine does not carry it.

use std::net::SocketAddr;
use std::time::Instant;

use super::conn::{ConnState, Connection, Role};
use crate::ids::{RoomKey, ShardId};

/// What the close line repeats from the open.
struct Opened {
    at: Instant,
    room: Option<RoomKey>,
    peer: Option<SocketAddr>,
}

pub(super) struct ConnLog {
    lines_per_s: u32,
    /// Lines written in the current second.
    lines: u32,
    /// Lines suppressed in the current second.
    suppressed: u64,
    /// Lines suppressed since the start (`roomcast_log_lines_suppressed_total`).
    pub suppressed_total: u64,
    /// By connection slot; set at open, taken at close.
    opened: Vec<Option<Opened>>,
}

impl ConnLog {
    pub fn new(lines_per_s: u32) -> ConnLog {
        ConnLog { lines_per_s, lines: 0, suppressed: 0, suppressed_total: 0, opened: Vec::new() }
    }

    /// A room connection in `slot` was admitted at `now` (echo connections
    /// are not logged: they have no user or room).
    pub fn opened(
        &mut self,
        slot: usize,
        conn: &Connection,
        room: Option<&RoomKey>,
        peer: Option<SocketAddr>,
        now: Instant,
    ) {
        let Role::Member(member) = &conn.role else { return };
        if self.opened.len() <= slot {
            self.opened.resize_with(slot + 1, || None);
        }
        self.opened[slot] = Some(Opened { at: now, room: room.cloned(), peer });
        if self.take_line() {
            tracing::info!(
                conn = %conn.id,
                user = member.peer.user(),
                tenant = &*member.grants.tenant,
                room = room.map(RoomKey::room),
                peer = peer.map(tracing::field::display),
                "connection opened"
            );
        }
    }

    /// The home room connection `slot` opened with, until it is closed.
    pub fn home(&self, slot: usize) -> Option<&RoomKey> {
        self.opened.get(slot).and_then(Option::as_ref).and_then(|o| o.room.as_ref())
    }

    /// The connection that was in `slot` is being freed at `now`; `close_code`
    /// is the code of the Close sent or echoed, 1006 when there was none.
    pub fn closed(&mut self, slot: usize, conn: &Connection, close_code: u16, now: Instant) {
        let Role::Member(member) = &conn.role else { return };
        let opened = self.opened.get_mut(slot).and_then(Option::take);
        if !self.take_line() {
            return;
        }
        let by = match conn.state {
            ConnState::Closing { peer_closed: true } => "peer",
            ConnState::Closing { peer_closed: false } => "server",
            _ => "none",
        };
        let duration_ms = opened.as_ref().map_or(0, |o| now.saturating_duration_since(o.at).as_millis() as u64);
        tracing::info!(
            conn = %conn.id,
            user = member.peer.user(),
            tenant = &*member.grants.tenant,
            room = opened.as_ref().and_then(|o| o.room.as_ref()).map(RoomKey::room),
            peer = opened.as_ref().and_then(|o| o.peer).map(tracing::field::display),
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
