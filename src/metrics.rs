//! Counters. Each shard keeps plain integers (no atomics, no locks) and sends
//! a snapshot to the acceptor once a second; the acceptor serves the sum in
//! Prometheus text format at `GET /metrics`.

use std::fmt::Write as _;

/// Every limit roomcast enforces, as counted when hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    MessageTooBig,
    RateLimited,
    RateAbuse,
    SlowConsumer,
    RoomFull,
    ShardFull,
    TimerFull,
    DeadPeer,
    ProtocolError,
    TokenExpired,
    InboxFull,
}

impl LimitKind {
    pub const ALL: [LimitKind; 11] = [
        LimitKind::MessageTooBig,
        LimitKind::RateLimited,
        LimitKind::RateAbuse,
        LimitKind::SlowConsumer,
        LimitKind::RoomFull,
        LimitKind::ShardFull,
        LimitKind::TimerFull,
        LimitKind::DeadPeer,
        LimitKind::ProtocolError,
        LimitKind::TokenExpired,
        LimitKind::InboxFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LimitKind::MessageTooBig => "message_too_big",
            LimitKind::RateLimited => "rate_limited",
            LimitKind::RateAbuse => "rate_abuse",
            LimitKind::SlowConsumer => "slow_consumer",
            LimitKind::RoomFull => "room_full",
            LimitKind::ShardFull => "shard_full",
            LimitKind::TimerFull => "timer_full",
            LimitKind::DeadPeer => "dead_peer",
            LimitKind::ProtocolError => "protocol_error",
            LimitKind::TokenExpired => "token_expired",
            LimitKind::InboxFull => "inbox_full",
        }
    }

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// One shard's counters (monotonic, except the gauges marked).
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Gauge: connections held now.
    pub connections: u64,
    /// Gauge: rooms held now.
    pub rooms: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub writes: u64,
    pub messages_published: u64,
    /// Frames queued to connections (one per recipient).
    pub deliveries: u64,
    pub limit_hits: [u64; LimitKind::ALL.len()],
    pub loop_iterations: u64,
}

impl ShardMetrics {
    pub fn hit(&mut self, kind: LimitKind) {
        self.limit_hits[kind as usize] += 1;
    }
}

/// The acceptor's own counters.
#[derive(Debug, Clone, Default)]
pub struct AcceptorMetrics {
    /// Handshakes answered, by HTTP status (101 = upgraded).
    pub handshakes: Vec<(u16, u64)>,
    pub accept_paused: u64,
    pub handshake_timeouts: u64,
}

impl AcceptorMetrics {
    pub fn count_status(&mut self, status: u16) {
        match self.handshakes.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.handshakes.push((status, 1)),
        }
    }
}

/// A per-shard series: name, Prometheus type, and how to read it.
type Series = (&'static str, &'static str, fn(&ShardMetrics) -> u64);

/// Renders the latest snapshots in Prometheus text format.
pub fn render_prometheus(shards: &[ShardMetrics], acceptor: &AcceptorMetrics) -> String {
    let mut out = String::with_capacity(4096);
    let per_shard: [Series; 11] = [
        ("roomcast_connections", "gauge", |m| m.connections),
        ("roomcast_rooms", "gauge", |m| m.rooms),
        ("roomcast_connections_opened_total", "counter", |m| m.connections_opened),
        ("roomcast_connections_closed_total", "counter", |m| m.connections_closed),
        ("roomcast_frames_in_total", "counter", |m| m.frames_in),
        ("roomcast_bytes_in_total", "counter", |m| m.bytes_in),
        ("roomcast_bytes_out_total", "counter", |m| m.bytes_out),
        ("roomcast_writes_total", "counter", |m| m.writes),
        ("roomcast_messages_published_total", "counter", |m| m.messages_published),
        ("roomcast_deliveries_total", "counter", |m| m.deliveries),
        ("roomcast_loop_iterations_total", "counter", |m| m.loop_iterations),
    ];
    for (name, kind, get) in per_shard {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (shard, m) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", get(m));
        }
    }
    let _ = writeln!(out, "# TYPE roomcast_limit_hits_total counter");
    for kind in LimitKind::ALL {
        let total: u64 = shards.iter().map(|m| m.limit_hits[kind as usize]).sum();
        let _ = writeln!(out, "roomcast_limit_hits_total{{kind=\"{}\"}} {total}", kind.name());
    }
    let _ = writeln!(out, "# TYPE roomcast_handshakes_total counter");
    for (status, n) in &acceptor.handshakes {
        let _ = writeln!(out, "roomcast_handshakes_total{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE roomcast_handshake_timeouts_total counter");
    let _ = writeln!(out, "roomcast_handshake_timeouts_total {}", acceptor.handshake_timeouts);
    let _ = writeln!(out, "# TYPE roomcast_accept_paused_total counter");
    let _ = writeln!(out, "roomcast_accept_paused_total {}", acceptor.accept_paused);
    out
}
