//! The handshake guards: what keeps many slow or half-open connections from
//! locking everyone else out (issue 12 §3). A source address may hold at
//! most `limits.handshakes_pending_per_ip_max` pending connections (past it:
//! 429 and close); a full budget closes its oldest connection instead of
//! pausing `accept`; a head must be complete within
//! `limits.handshake_head_deadline_ms` of its first byte and arrive at
//! `limits.handshake_bytes_per_s_min` at least (else 408). The admin
//! listener draws on a budget of its own, so a flood on the public listener
//! cannot take its slots, and `/healthz` is answered as soon as its head is
//! complete. [`PendingTable`](super::pending::PendingTable) does the
//! counting; this file decides what each guard does and counts and logs it.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;

use super::Acceptor;
use super::accept::Listener;
use crate::http;
use crate::metrics::LimitKind;

/// Which pending budget a connection draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Budget {
    /// The main and echo listeners: `limits.handshakes_pending_max`.
    Public,
    /// The admin listener: `ADMIN_PENDING_MAX`, apart from the public one.
    Admin,
}

impl Budget {
    pub(super) fn of(listener: Listener) -> Budget {
        match listener {
            Listener::Admin => Budget::Admin,
            Listener::Main | Listener::Echo => Budget::Public,
        }
    }
}

/// What happens to a connection just accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// A slot of its budget is free.
    Admit,
    /// Its source address holds `limits.handshakes_pending_per_ip_max` pending connections.
    PerSourceFull,
    /// Its budget is full: this pending connection (the oldest not waiting
    /// for shards) is closed to make room.
    Evict(usize),
    /// Its budget is full of requests waiting for shards: the new one is closed.
    Full,
}

/// Why a guard shed a connection (`roomcast_handshakes_shed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shed {
    PerSource,
    Evicted,
    HeadDeadline,
    TooSlow,
}

impl Shed {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The guards' episodes, logged like `metrics::EpisodeLog`'s: a reason is
/// logged on its first hit, and again only after a quiet interval.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ShedLog {
    logged: u8,
    hit_this_interval: u8,
}

impl ShedLog {
    /// Records a hit; `true` when it starts an episode and should be logged.
    fn starts_episode(&mut self, shed: Shed) -> bool {
        self.hit_this_interval |= shed.bit();
        let first = self.logged & shed.bit() == 0;
        self.logged |= shed.bit();
        first
    }

    pub(super) fn end_interval(&mut self) {
        self.logged &= self.hit_this_interval;
        self.hit_this_interval = 0;
    }
}

/// The address pending connections are counted under: an IPv4 address (an
/// IPv4-mapped IPv6 one included) as is, an IPv6 address by its /64, the
/// block one host usually holds.
pub(super) fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

impl Acceptor {
    /// Counts a shed connection (in its reason and in the limit it hit) and
    /// logs the first of an episode.
    fn count_shed(&mut self, shed: Shed) {
        let (kind, counter) = match shed {
            Shed::PerSource => (LimitKind::HandshakesPending, &mut self.counters.acceptor.shed_per_ip),
            Shed::Evicted => (LimitKind::HandshakesPending, &mut self.counters.acceptor.shed_evicted),
            Shed::HeadDeadline => (LimitKind::HandshakeTimeout, &mut self.counters.acceptor.shed_head_deadline),
            Shed::TooSlow => (LimitKind::HandshakeTimeout, &mut self.counters.acceptor.shed_too_slow),
        };
        *counter += 1;
        // A late head counts its `handshake_timeout` hit where every timeout does (`answer_late`).
        if kind == LimitKind::HandshakesPending {
            self.counters.hit(kind);
        }
        if !self.counters.shed_episodes.starts_episode(shed) {
            return;
        }
        let pending = self.pending.public_len();
        match shed {
            Shed::PerSource => {
                tracing::warn!(pending, "limits.handshakes_pending_per_ip_max reached: connections refused with 429")
            }
            Shed::Evicted => {
                tracing::warn!(pending, "limits.handshakes_pending_max reached: the oldest pending connections closed")
            }
            Shed::HeadDeadline => {
                tracing::warn!(pending, "request heads late (limits.handshake_head_deadline_ms): answered 408")
            }
            Shed::TooSlow => {
                tracing::warn!(pending, "requests too slow (limits.handshake_bytes_per_s_min): answered 408")
            }
        }
    }

    /// `peer` holds its share of pending connections: 429, written once
    /// into the fresh socket (whose send buffer takes it whole), then closed.
    pub(super) fn refuse_per_source(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        self.count_shed(Shed::PerSource);
        self.counters.acceptor.count_handshake(429, "too_many_pending");
        tracing::debug!(?peer, "handshake refused: too many pending from this address");
        let message = "too many connections from this address are in the handshake phase; try again";
        let response = http::error_response(429, "too_many_pending", message, "Retry-After: 1\r\n");
        let _ = stream.write(&response);
        let _ = stream.shutdown(Shutdown::Write);
        // Unread request bytes would turn the close into a reset, which may
        // discard the 429 before the client reads it: take what is there.
        let mut scratch = [0u8; 4096];
        while matches!(stream.read(&mut scratch), Ok(n) if n > 0) {}
    }

    /// Closes the pending connection in `slot` (no response) to make room.
    pub(super) fn evict(&mut self, slot: usize) {
        self.count_shed(Shed::Evicted);
        if let Some(pending) = self.pending.get(slot) {
            tracing::debug!(peer = ?pending.peer, "pending connection evicted to make room");
        }
        self.close_pending(slot);
    }

    /// A budget full of requests waiting for shards: the new connection is dropped.
    pub(super) fn drop_unadmitted(&mut self, stream: TcpStream) {
        self.count_shed(Shed::Evicted);
        drop(stream);
    }

    /// A request too slow by a guard (`HeadDeadline`, `TooSlow`): 408, like
    /// the handshake timeout, written as the socket allows under a fresh deadline.
    pub(super) fn answer_late(&mut self, slot: usize, now: Instant, shed: Shed) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        if !std::mem::replace(&mut pending.timed_out, true) {
            self.counters.hit(LimitKind::HandshakeTimeout);
        }
        self.counters.acceptor.handshake_timeouts += 1;
        self.count_shed(shed);
        self.pending.renew_deadline(slot, now);
        let message = match shed {
            Shed::HeadDeadline => "the request head did not arrive within limits.handshake_head_deadline_ms",
            _ => "the request arrives slower than limits.handshake_bytes_per_s_min",
        };
        self.respond_error(slot, 408, "timeout", message, "");
    }

    /// A request that is not HTTP/1.1 (RFC 6455 §4.1 asks for 1.1 or higher;
    /// httparse reads only 1.x, so that means exactly 1.1).
    pub(super) fn refuse_version(&mut self, slot: usize) {
        let message = "roomcast serves HTTP/1.1 only (a WebSocket handshake needs it: RFC 6455 §4.1)";
        self.respond_error(slot, 505, "http_version_not_supported", message, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(source_key(v4), v4);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_eq!(source_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_shed_reason_is_logged_once_per_episode() {
        let mut log = ShedLog::default();
        assert!(log.starts_episode(Shed::Evicted));
        assert!(!log.starts_episode(Shed::Evicted));
        assert!(log.starts_episode(Shed::PerSource));
        log.end_interval();
        log.end_interval();
        assert!(log.starts_episode(Shed::Evicted));
    }
}
