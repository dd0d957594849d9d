//! Counters. Each shard keeps plain integers (no atomics, no locks) and sends
//! a snapshot to the acceptor once a second; the acceptor serves the sum in
//! Prometheus text format at `GET /metrics`, together with its own counters
//! (handshake outcomes, HTTP API responses, the limits it enforces).
//!
//! This module is the one place that writes Prometheus text. Other threads'
//! figures are plain structs defined here and filled by their owners: the
//! store thread's in `metrics/store.rs` ([`StoreStats`]), the acceptor's
//! revoked-token set's as [`RevocationMetrics`]. The text itself is
//! written in `metrics/prometheus.rs`; `/proc/self` is read in
//! `metrics/process.rs`.

mod cluster;
mod process;
mod prometheus;
mod store;
mod webhooks;

use std::collections::BTreeMap;

pub use cluster::{ClusterGauges, ClusterStats, LAG_BUCKETS_S};
pub use prometheus::render_prometheus;
pub use store::{PruneKind, RowKind, StoreGauges, StoreStats};
pub use webhooks::WebhookStats;

use prometheus::{Family, Kind, family};

/// Every limit roomcast enforces, as counted when hit. `docs/http-api.md` §7
/// maps each config key to its kind. The first group is counted by the
/// shards, the second by the acceptor; both render in
/// `roomcast_limit_hits_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    MessageTooBig,
    RateLimited,
    RateAbuse,
    SlowConsumer,
    RoomFull,
    /// A handoff to a shard at `limits.connections_per_shard_max` (HTTP 503 `server_full`).
    ShardFull,
    TimerFull,
    DeadPeer,
    ProtocolError,
    TokenExpired,
    /// A handoff found the shard's inbox full (`limits.shard_inbox_max`, HTTP 503 `overloaded`).
    InboxFull,
    /// The store queue was full: a chat message went out live but not durable.
    StoreOverloaded,
    /// The store's transaction failed (disk full, read-only, I/O error).
    StoreFailed,
    /// The store queue was full: a session audit event (admit or close) was dropped.
    AuditDropped,
    /// A handoff reached a shard that is draining for shutdown (HTTP 503 `draining`).
    Draining,
    /// A message for another shard met a full outbox (`limits.shard_outbox_max`).
    OutboxFull,
    /// A connection at `limits.rooms_per_connection_max` asked for one more room.
    TooManyRooms,
    /// A join would create a room on a shard at `limits.rooms_per_shard_max`.
    ShardRoomsFull,
    /// A peer did not finish the closing handshake within `limits.close_timeout_ms`.
    CloseTimeout,
    /// A chat text over `rooms.chat_text_chars_max` (error `too_long`).
    ChatTooLong,
    /// A screen-share grant past `rooms.screenshare_max` (error `screenshare_busy`).
    ScreenshareBusy,
    /// A connection used its `limits.read_bytes_per_event_max` and yielded.
    ReadBudget,
    /// A loop turn wrote `limits.flush_writes_per_turn` connections and left
    /// the rest for the next turns.
    FlushBudget,
    /// A frame for a connection whose last write left bytes behind met a shard
    /// holding `limits.shard_queued_frames_max` frames: closed with 1013.
    ShardQueueFull,
    /// A poll returned `limits.poll_events_max` events (the rest wait for the next poll).
    PollEventsFull,
    /// A request not read (or its response not written) within `limits.handshake_timeout_ms`.
    HandshakeTimeout,
    /// A request head over `limits.handshake_head_bytes_max` or 64 header lines (HTTP 431).
    HeadTooBig,
    /// The acceptor held `limits.handshakes_pending_max` connections and paused accepting.
    HandshakesPending,
    /// A token over `auth.token_bytes_max` (HTTP 401 `token_too_large`).
    TokenTooBig,
    /// An HTTP API body over `api.body_bytes_max` (HTTP 413).
    BodyTooBig,
    /// A minted token's `ttl` was capped at `api.token_ttl_max_s`.
    TokenTtlCapped,
    /// An HTTP API request refused `503 busy` (64 waiting, a full admin inbox or store queue).
    ApiBusy,
    /// `POST /api/v1/rooms` refused `507 registry_full` (`rooms.registry_max`).
    RegistryFull,
    /// A committed registry change met a shard's full admin inbox and waits
    /// in the acceptor's backlog (sent later, in order).
    RegistryDeferred,
    /// Ping/Pong frames past `limits.control_frames_per_s`: Close 1008.
    ControlFlood,
    /// The cluster bridge's queue was full (`cluster.bridge_queue_max`): a
    /// message for another node waits for the next iteration, or is dropped
    /// past `limits.shard_outbox_max`.
    ClusterQueueFull,
}

impl LimitKind {
    pub const ALL: [LimitKind; 36] = [
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
        LimitKind::StoreOverloaded,
        LimitKind::StoreFailed,
        LimitKind::AuditDropped,
        LimitKind::Draining,
        LimitKind::OutboxFull,
        LimitKind::TooManyRooms,
        LimitKind::ShardRoomsFull,
        LimitKind::CloseTimeout,
        LimitKind::ChatTooLong,
        LimitKind::ScreenshareBusy,
        LimitKind::ReadBudget,
        LimitKind::FlushBudget,
        LimitKind::ShardQueueFull,
        LimitKind::PollEventsFull,
        LimitKind::HandshakeTimeout,
        LimitKind::HeadTooBig,
        LimitKind::HandshakesPending,
        LimitKind::TokenTooBig,
        LimitKind::BodyTooBig,
        LimitKind::TokenTtlCapped,
        LimitKind::ApiBusy,
        LimitKind::RegistryFull,
        LimitKind::RegistryDeferred,
        LimitKind::ControlFlood,
        LimitKind::ClusterQueueFull,
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
            LimitKind::StoreOverloaded => "store_overloaded",
            LimitKind::StoreFailed => "store_failed",
            LimitKind::AuditDropped => "audit_dropped",
            LimitKind::Draining => "draining",
            LimitKind::OutboxFull => "outbox_full",
            LimitKind::TooManyRooms => "too_many_rooms",
            LimitKind::ShardRoomsFull => "shard_rooms_full",
            LimitKind::CloseTimeout => "close_timeout",
            LimitKind::ChatTooLong => "chat_too_long",
            LimitKind::ScreenshareBusy => "screenshare_busy",
            LimitKind::ReadBudget => "read_budget",
            LimitKind::FlushBudget => "flush_budget",
            LimitKind::ShardQueueFull => "shard_queue_full",
            LimitKind::PollEventsFull => "poll_events_full",
            LimitKind::HandshakeTimeout => "handshake_timeout",
            LimitKind::HeadTooBig => "head_too_big",
            LimitKind::HandshakesPending => "handshakes_pending",
            LimitKind::TokenTooBig => "token_too_big",
            LimitKind::BodyTooBig => "body_too_big",
            LimitKind::TokenTtlCapped => "token_ttl_capped",
            LimitKind::ApiBusy => "api_busy",
            LimitKind::RegistryFull => "registry_full",
            LimitKind::RegistryDeferred => "registry_deferred",
            LimitKind::ControlFlood => "control_flood",
            LimitKind::ClusterQueueFull => "cluster_queue_full",
        }
    }

    /// This kind's bit in a `u64` set (`Connection::limits_logged`, [`EpisodeLog`]).
    pub fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// The counter a refusal belongs to (`Refusal::limit`).
impl From<crate::refusal::Limit> for LimitKind {
    fn from(limit: crate::refusal::Limit) -> LimitKind {
        use crate::refusal::Limit;
        match limit {
            Limit::RoomFull => LimitKind::RoomFull,
            Limit::ShardRoomsFull => LimitKind::ShardRoomsFull,
            Limit::TooManyRooms => LimitKind::TooManyRooms,
            Limit::ChatTooLong => LimitKind::ChatTooLong,
            Limit::ScreenshareBusy => LimitKind::ScreenshareBusy,
            Limit::RateLimited => LimitKind::RateLimited,
            Limit::OutboxFull => LimitKind::OutboxFull,
            Limit::StoreOverloaded => LimitKind::StoreOverloaded,
            Limit::StoreFailed => LimitKind::StoreFailed,
            Limit::Draining => LimitKind::Draining,
            Limit::ShardFull => LimitKind::ShardFull,
        }
    }
}

// Every kind must have a bit in a u64 set.
const _: () = assert!(LimitKind::ALL.len() <= 64);

/// Hits per kind, indexed by `LimitKind as usize`; a type of its own because
/// `Default` for arrays stops at 32 entries.
#[derive(Debug, Clone, Copy)]
pub struct LimitHits(pub [u64; LimitKind::ALL.len()]);

impl Default for LimitHits {
    fn default() -> Self {
        LimitHits([0; LimitKind::ALL.len()])
    }
}

impl std::ops::Index<usize> for LimitHits {
    type Output = u64;
    fn index(&self, kind: usize) -> &u64 {
        &self.0[kind]
    }
}

impl std::ops::IndexMut<usize> for LimitHits {
    fn index_mut(&mut self, kind: usize) -> &mut u64 {
        &mut self.0[kind]
    }
}

/// Logs limits that belong to no one connection (a full outbox, a refused
/// handoff) once per episode: a kind is logged on its first hit, and again
/// only after a whole [`EpisodeLog::end_interval`] period passed without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpisodeLog {
    logged: u64,
    hit_this_interval: u64,
}

impl EpisodeLog {
    /// Records a hit; `true` when it starts an episode and should be logged.
    pub fn starts_episode(&mut self, kind: LimitKind) -> bool {
        self.hit_this_interval |= kind.bit();
        let first = self.logged & kind.bit() == 0;
        self.logged |= kind.bit();
        first
    }

    /// Ends an interval: kinds not hit during it end their episode.
    pub fn end_interval(&mut self) {
        self.logged &= self.hit_this_interval;
        self.hit_this_interval = 0;
    }
}

/// One shard's counters (monotonic, except the gauges marked).
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Gauge: connections held now.
    pub connections: u64,
    /// Gauge: rooms held now.
    pub rooms: u64,
    /// Gauge: members of the shard's rooms that are on other cluster nodes
    /// (summed into `ClusterStats::remote_members`; 0 outside a cluster).
    pub remote_members: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub frames_in: u64,
    /// Frames written to sockets completely.
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub writes: u64,
    pub messages_published: u64,
    /// Complete text or binary messages from room connections that passed
    /// the rate limit and were handled (any request type, answered with an
    /// error or not); echo connections and control frames are not counted.
    pub client_messages: u64,
    /// Room broadcasts made by the room's owner: one per frame sent to a
    /// room's audience (a published message, chat, presence and meeting
    /// events), however many members receive it.
    pub broadcasts: u64,
    /// Frames queued to connections (one per recipient).
    pub deliveries: u64,
    /// Gauge, kept live: frames in this shard's outbound queues now (each
    /// an entry of a connection's queue; a broadcast frame's bytes are
    /// shared). Bounded by `limits.shard_queued_frames_max`.
    pub queued_frames: u64,
    pub limit_hits: LimitHits,
    pub loop_iterations: u64,
    /// Messages sent to and received from other shards (each counts once,
    /// however many members it serves).
    pub remote_sent: u64,
    pub remote_received: u64,
    /// Connections to a big room this shard owns, handed on to another
    /// shard (`rooms.spread_from_members`).
    pub connections_spread: u64,
    /// Durable rooms created without reading their history: the store holds
    /// no chat of them (`rooms.history_filter_kib`).
    pub history_loads_skipped: u64,
    /// Busy time of one loop iteration (poll return to end of iteration), µs.
    pub loop_us: LatencyHistogram,
    /// From the start of an iteration that published to the end of its
    /// flush (the write of every frame it queued), µs.
    pub publish_flush_us: LatencyHistogram,
    /// Messages waiting in the inbox when the loop came to it, once per iteration.
    pub inbox_depth: DepthHistogram,
    /// `publish` messages that left the rooms' recovery rings (by count or
    /// age) or were never held (`rooms.recovery_messages_max = 0`).
    pub recovery_dropped: u64,
    /// Welcomes that answered a `since` with `recovered: false`.
    pub recovery_refused: u64,
    /// `refresh` requests answered `overloaded`: the acceptor's refresh channel was full.
    pub refresh_overloaded: u64,
    /// Connection open/close log lines past `log.connection_lines_per_s`.
    pub log_lines_suppressed: u64,
}

/// An HDR histogram of microseconds, 1 µs to 60 s at 2 significant digits
/// (a few KiB, fixed at creation: recording never allocates).
#[derive(Debug, Clone)]
pub struct LatencyHistogram(pub hdrhistogram::Histogram<u64>);

/// Bucket bounds (µs) of the Prometheus histograms.
const BUCKETS_US: [u64; 12] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];
const HISTOGRAM_MAX_US: u64 = 60_000_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        // Bounds are constants within what hdrhistogram accepts, so this cannot fail.
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 2)
            .unwrap_or_else(|_| hdrhistogram::Histogram::new(2).unwrap_or_else(|_| unreachable!()));
        LatencyHistogram(histogram)
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HISTOGRAM_MAX_US));
    }
}

impl LatencyHistogram {
    /// Writes this histogram's series (in seconds, buckets `BUCKETS_US`) into `family`.
    fn write(&self, family: &mut Family<'_>, labels: &str) {
        let h = &self.0;
        let buckets = BUCKETS_US.iter().map(|&le| (le as f64 / 1e6, h.count_between(0, le)));
        family.histogram(labels, buckets, h.mean() * h.len() as f64 / 1e6, h.len());
    }
}

/// Bucket bounds of [`DepthHistogram`]: 0, then the powers of two to 2^16
/// (the default `limits.shard_inbox_max` is 65536).
const DEPTH_BUCKETS: usize = 18;

/// A histogram of queue depths with fixed power-of-two buckets, counted
/// exactly: recording is a few integer operations, no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepthHistogram {
    /// `counts[0]`: depth 0; `counts[i]` for `i ≥ 1`: depths in
    /// (2^(i-2), 2^(i-1)]; the last entry counts the deeper ones.
    pub counts: [u64; DEPTH_BUCKETS + 1],
    pub sum: u64,
}

impl DepthHistogram {
    pub fn record(&mut self, depth: u64) {
        // The smallest j with depth <= 2^j is 64 - lz(depth - 1) for depth >= 1.
        let bucket = if depth == 0 { 0 } else { (65 - (depth - 1).leading_zeros()) as usize };
        self.counts[bucket.min(DEPTH_BUCKETS)] += 1;
        self.sum = self.sum.saturating_add(depth);
    }

    fn write(&self, family: &mut Family<'_>, labels: &str) {
        let mut cumulative = 0;
        let buckets = (0..DEPTH_BUCKETS).map(|i| {
            cumulative += self.counts[i];
            let le = if i == 0 { 0 } else { 1u64 << (i - 1) };
            (le, cumulative)
        });
        let total = self.counts.iter().sum();
        family.histogram(labels, buckets, self.sum, total);
    }
}

impl ShardMetrics {
    pub fn hit(&mut self, kind: LimitKind) {
        self.limit_hits[kind as usize] += 1;
    }
}

/// The acceptor's own counters.
#[derive(Debug, Clone, Default)]
pub struct AcceptorMetrics {
    /// WebSocket handshake outcomes decided by the acceptor, by HTTP status
    /// and cause (the `error` code of the response body; `timeout` for 408).
    /// Upgrades (101 `ok`) and the shards' refusals are counted by the shards.
    pub handshakes: BTreeMap<(u16, &'static str), u64>,
    /// Responses to HTTP API requests, by status.
    pub http_responses: BTreeMap<u16, u64>,
    /// Limits the acceptor enforces (indexed by `LimitKind`).
    pub limit_hits: LimitHits,
    pub accept_paused: u64,
    pub handshake_timeouts: u64,
    /// Connections the acceptor's handshake guards shed, by reason
    /// (`roomcast_handshakes_shed_total{reason}`): refused at
    /// `limits.handshakes_pending_per_ip_max` (429), closed at
    /// `limits.handshakes_pending_max` to make room, and heads too slow
    /// (`limits.handshake_head_deadline_ms`, `limits.handshake_bytes_per_s_min`; 408).
    pub shed_per_ip: u64,
    pub shed_evicted: u64,
    pub shed_head_deadline: u64,
    pub shed_too_slow: u64,
    /// Unix seconds of the last connection handed to a shard (0: none yet).
    pub last_upgrade_unix_s: u64,
    /// Rooms in the registry (the acceptor's copy).
    pub registry_rooms: u64,
}

impl AcceptorMetrics {
    pub fn count_handshake(&mut self, status: u16, cause: &'static str) {
        *self.handshakes.entry((status, cause)).or_default() += 1;
    }

    pub fn count_http(&mut self, status: u16) {
        *self.http_responses.entry(status).or_default() += 1;
    }

    pub fn hit(&mut self, kind: LimitKind) {
        self.limit_hits[kind as usize] += 1;
    }
}

/// What `/metrics` shows beside the counters: read when it is rendered.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Messages waiting in each shard's inbox (handoffs, cross-shard batches).
    pub inbox_depths: Vec<usize>,
    pub uptime_s: u64,
    pub draining: bool,
    /// The store thread's figures; `None` with `--no-store`.
    pub store: Option<StoreGauges>,
    /// The acceptor's revoked-token set.
    pub revocations: RevocationMetrics,
    /// The webhook thread's figures; `None` with no `[[webhooks]]`.
    pub webhooks: Option<WebhookStats>,
    /// The cluster bridge's figures; `None` without `cluster.redis`.
    pub cluster: Option<ClusterGauges>,
}

/// What `/metrics` shows of the acceptor's revoked-token set
/// (`revocation::RevokedTokens` fills it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevocationMetrics {
    /// Entries held now, and `limits.revoked_tokens_max`.
    pub held: u64,
    pub max: u64,
    /// Entries not yet handed to the store (its queue was full).
    pub unpersisted: u64,
    /// Times an entry could not be queued to the store at once.
    pub deferred: u64,
    /// Entries refused because the set was full, by reason (`revoked`, `used`).
    pub refused_revoked: u64,
    pub refused_used: u64,
}

#[cfg(test)]
mod episode_tests {
    use super::*;

    #[test]
    fn an_episode_is_logged_once_until_a_quiet_interval() {
        let mut log = EpisodeLog::default();
        assert!(log.starts_episode(LimitKind::OutboxFull));
        assert!(!log.starts_episode(LimitKind::OutboxFull));
        assert!(log.starts_episode(LimitKind::ShardFull), "kinds are independent");
        log.end_interval();
        assert!(!log.starts_episode(LimitKind::OutboxFull), "hit in the last interval: same episode");
        log.end_interval();
        log.end_interval();
        assert!(log.starts_episode(LimitKind::OutboxFull), "a quiet interval ended the episode");
    }
}
