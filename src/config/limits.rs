//! `Limits`, every bound roomcast enforces (`[limits]`), and the rules
//! between them: each is positive, and the ones that depend on each other
//! (ping and dead-after, inbound message and outbound queue) agree.

use serde::Deserialize;

use super::ConfigError;

/// Smallest `limits.handshake_head_bytes_max` (a browser's request head fits).
pub const HANDSHAKE_HEAD_BYTES_MIN: usize = 1024;
/// Largest `limits.outbound_queue_grace_ms`.
pub const OUTBOUND_GRACE_MS_MAX: u32 = 60_000;

/// Every bound roomcast enforces (`[limits]`). Units are last in each name;
/// the relationships between them are checked in `Config::load`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connections one shard holds; a handshake for a room on a full shard gets HTTP 503 `server_full`.
    pub connections_per_shard_max: u32,
    /// Connections in the HTTP/handshake phase at once on the public
    /// listeners; at it the oldest not waiting for shards is closed for the new one.
    pub handshakes_pending_max: u32,
    /// Pending connections from one source address (IPv6: one /64); past it: HTTP 429.
    pub handshakes_pending_per_ip_max: u32,
    /// A request head must arrive completely within this time (slowloris defence).
    pub handshake_timeout_ms: u32,
    /// A request head must be complete within this time of its first byte.
    pub handshake_head_deadline_ms: u32,
    /// Average rate a request still incomplete a second after its first byte must have kept.
    pub handshake_bytes_per_s_min: u32,
    /// Request head size (the per-handshake read buffer); over it: HTTP 431.
    pub handshake_head_bytes_max: usize,
    /// Largest inbound message, all fragments together; over it: close 1009.
    pub message_inbound_bytes_max: u32,
    /// Bytes queued for one connection; staying over it longer than
    /// `outbound_queue_grace_ms` closes the slow consumer with 1013.
    pub outbound_queue_bytes_max: u32,
    /// Bytes a frame may never take a connection's queue past (close 1013 at once).
    pub outbound_queue_hard_bytes_max: u32,
    /// How long a queue may stay over `outbound_queue_bytes_max`, in ms.
    pub outbound_queue_grace_ms: u32,
    /// Per-connection token bucket: sustained messages per second.
    pub rate_messages_per_s: u32,
    /// Per-connection token bucket: burst size (at least 1; above 4,294,967
    /// it acts as that many, `shard::conn::RateBucket`).
    pub rate_burst: u32,
    /// Messages refused for rate before the connection is closed with 1008.
    pub rate_strikes_max: u32,
    /// Ping and Pong frames one connection may send per second (a token
    /// bucket holding one second's worth); past it: Close 1008 at once.
    pub control_frames_per_s: u32,
    /// Members of one room; a join past it is refused (`room_full`; 1013 for the URL room).
    pub room_members_max: u32,
    /// Members listed in a `welcome` frame; `member_count` always has the total.
    pub welcome_members_max: u32,
    /// Rooms with more members than this do not send member_joined / member_left.
    pub presence_members_max: u32,
    /// Interval between server pings.
    pub ping_interval_ms: u32,
    /// Silence after which a connection is closed with 1001; above `ping_interval_ms`.
    pub dead_after_ms: u32,
    /// After a server Close frame, how long to wait for the peer's before dropping.
    pub close_timeout_ms: u32,
    /// Capacity of each shard's inbox (acceptor and other threads to the shard).
    pub shard_inbox_max: usize,
    /// Readiness events handled per poll call (the `Events` capacity).
    pub poll_events_max: usize,
    /// Bytes read from one connection per readable event (the scratch read buffer).
    pub read_bytes_per_event_max: usize,
    /// Connections written per loop turn; the rest are written in the next
    /// turns, in order, after the loop has taken what arrived meanwhile.
    pub flush_writes_per_turn: usize,
    /// Frames in all of a shard's outbound queues at once; past it a
    /// connection whose last write left bytes behind is a slow consumer.
    pub shard_queued_frames_max: usize,
    /// Largest message on the echo listener (Autobahn sends up to 16 MiB).
    pub echo_message_bytes_max: usize,
    /// Rooms one connection is in at once (home, personal, groups and joins).
    pub rooms_per_connection_max: u32,
    /// Rooms one shard holds; a join that would create one more is refused.
    pub rooms_per_shard_max: u32,
    /// Messages one shard may hold for another when that one's inbox is full.
    pub shard_outbox_max: usize,
    /// Revoked and spent single-use tokens the acceptor holds; past it a
    /// revocation is refused (507) and a single-use token too (503).
    pub revoked_tokens_max: usize,
}

impl Limits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in self.sizes() {
            if value == 0 {
                return Err(ConfigError::invalid(&format!("limits.{name}"), "must be greater than 0"));
            }
        }
        if self.rate_burst < 1 {
            return Err(ConfigError::invalid("limits.rate_burst", "must be at least 1"));
        }
        if self.dead_after_ms <= self.ping_interval_ms {
            return Err(ConfigError::invalid(
                "limits.dead_after_ms",
                format!(
                    "{} must be greater than limits.ping_interval_ms ({})",
                    self.dead_after_ms, self.ping_interval_ms
                ),
            ));
        }
        if self.message_inbound_bytes_max > self.outbound_queue_bytes_max {
            return Err(ConfigError::invalid(
                "limits.message_inbound_bytes_max",
                format!(
                    "{} must not exceed limits.outbound_queue_bytes_max ({})",
                    self.message_inbound_bytes_max, self.outbound_queue_bytes_max
                ),
            ));
        }
        if self.outbound_queue_hard_bytes_max < self.outbound_queue_bytes_max
            || self.outbound_queue_hard_bytes_max == u32::MAX
        {
            return Err(ConfigError::invalid(
                "limits.outbound_queue_hard_bytes_max",
                format!(
                    "{} must be at least limits.outbound_queue_bytes_max ({}) and below 4 GiB",
                    self.outbound_queue_hard_bytes_max, self.outbound_queue_bytes_max
                ),
            ));
        }
        if self.outbound_queue_grace_ms > OUTBOUND_GRACE_MS_MAX {
            return Err(ConfigError::invalid(
                "limits.outbound_queue_grace_ms",
                format!("at most {OUTBOUND_GRACE_MS_MAX} (a minute)"),
            ));
        }
        if self.handshake_head_bytes_max < HANDSHAKE_HEAD_BYTES_MIN {
            return Err(ConfigError::invalid(
                "limits.handshake_head_bytes_max",
                format!("{} is below the minimum of {HANDSHAKE_HEAD_BYTES_MIN}", self.handshake_head_bytes_max),
            ));
        }
        Ok(())
    }

    /// Every limit with its key name, for the "greater than 0" rule.
    pub(super) fn sizes(&self) -> [(&'static str, u64); 31] {
        let l = self;
        [
            ("connections_per_shard_max", l.connections_per_shard_max.into()),
            ("handshakes_pending_max", l.handshakes_pending_max.into()),
            ("handshakes_pending_per_ip_max", l.handshakes_pending_per_ip_max.into()),
            ("handshake_timeout_ms", l.handshake_timeout_ms.into()),
            ("handshake_head_deadline_ms", l.handshake_head_deadline_ms.into()),
            ("handshake_bytes_per_s_min", l.handshake_bytes_per_s_min.into()),
            ("handshake_head_bytes_max", l.handshake_head_bytes_max as u64),
            ("message_inbound_bytes_max", l.message_inbound_bytes_max.into()),
            ("outbound_queue_bytes_max", l.outbound_queue_bytes_max.into()),
            ("outbound_queue_hard_bytes_max", l.outbound_queue_hard_bytes_max.into()),
            ("outbound_queue_grace_ms", l.outbound_queue_grace_ms.into()),
            ("rate_messages_per_s", l.rate_messages_per_s.into()),
            ("rate_burst", l.rate_burst.into()),
            ("rate_strikes_max", l.rate_strikes_max.into()),
            ("control_frames_per_s", l.control_frames_per_s.into()),
            ("room_members_max", l.room_members_max.into()),
            ("welcome_members_max", l.welcome_members_max.into()),
            ("presence_members_max", l.presence_members_max.into()),
            ("ping_interval_ms", l.ping_interval_ms.into()),
            ("dead_after_ms", l.dead_after_ms.into()),
            ("close_timeout_ms", l.close_timeout_ms.into()),
            ("shard_inbox_max", l.shard_inbox_max as u64),
            ("poll_events_max", l.poll_events_max as u64),
            ("read_bytes_per_event_max", l.read_bytes_per_event_max as u64),
            ("flush_writes_per_turn", l.flush_writes_per_turn as u64),
            ("shard_queued_frames_max", l.shard_queued_frames_max as u64),
            ("echo_message_bytes_max", l.echo_message_bytes_max as u64),
            ("rooms_per_connection_max", l.rooms_per_connection_max.into()),
            ("rooms_per_shard_max", l.rooms_per_shard_max.into()),
            ("shard_outbox_max", l.shard_outbox_max as u64),
            ("revoked_tokens_max", l.revoked_tokens_max as u64),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::Schema;
    use super::super::test_support::*;
    use super::super::{Config, Sources};
    use toml::Value;

    #[test]
    fn dead_after_must_exceed_ping_interval() {
        let err = assert_names(load_set("limits.dead_after_ms", int(30_000)), "limits.dead_after_ms");
        assert!(err.to_string().contains("limits.ping_interval_ms"), "{err}");
    }

    #[test]
    fn every_limit_must_be_positive() {
        let schema = Schema::from_embedded().unwrap();
        let Some(Value::Table(limits)) = schema.defaults.get("limits") else {
            panic!("no [limits] in default.toml");
        };
        let defaults = Config::load(Sources::default()).unwrap();
        let covered: Vec<&str> = defaults.limits.sizes().iter().map(|(name, _)| *name).collect();
        let keys: Vec<&str> = limits.keys().map(String::as_str).collect();
        assert_eq!(covered.len(), keys.len(), "sizes() covers every limit");
        assert!(keys.iter().all(|key| covered.contains(key)), "{keys:?} vs {covered:?}");
        for name in limits.keys() {
            let key = format!("limits.{name}");
            assert_names(load_set(&key, int(0)), &key);
        }
        assert_names(load_set("auth.token_bytes_max", int(0)), "auth.token_bytes_max");
        assert_names(load_set("net.backlog", int(0)), "net.backlog");
    }

    #[test]
    fn rate_burst_at_least_one() {
        assert_names(load_set("limits.rate_burst", int(0)), "limits.rate_burst");
        assert!(load_set("limits.rate_burst", int(1)).is_ok());
    }

    #[test]
    fn inbound_message_fits_outbound_queue() {
        let err = assert_names(
            load_set("limits.message_inbound_bytes_max", int(2 << 20)),
            "limits.message_inbound_bytes_max",
        );
        assert!(err.to_string().contains("limits.outbound_queue_bytes_max"), "{err}");
    }

    #[test]
    fn handshake_head_at_least_1024() {
        assert_names(load_set("limits.handshake_head_bytes_max", int(1023)), "limits.handshake_head_bytes_max");
        assert!(load_set("limits.handshake_head_bytes_max", int(1024)).is_ok());
    }
}
