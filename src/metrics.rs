//! Counters. Each shard keeps plain integers (no atomics, no locks) and sends
//! a snapshot to the acceptor once a second; the acceptor serves the sum in
//! Prometheus text format at `GET /metrics`, together with its own counters
//! (handshake outcomes, HTTP API responses, the limits it enforces).
//!
//! This module is the one place that writes Prometheus text. Other threads'
//! figures are plain structs defined here and filled by their owners: the
//! store thread's in `metrics/store.rs` ([`StoreStats`]), the acceptor's
//! revoked-token set's as [`RevocationMetrics`].

mod store;
mod webhooks;

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

pub use store::{PruneKind, RowKind, StoreGauges, StoreStats};
pub use webhooks::WebhookStats;

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
}

impl LimitKind {
    pub const ALL: [LimitKind; 33] = [
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
    pub limit_hits: LimitHits,
    pub loop_iterations: u64,
    /// Messages sent to and received from other shards (each counts once,
    /// however many members it serves).
    pub remote_sent: u64,
    pub remote_received: u64,
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

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A family being written. [`family`] is the only way to get one, and it
/// writes the `# HELP` and `# TYPE` lines first, so no sample can be
/// rendered without its family's help text and type. Label values written
/// through it are roomcast's own (shard numbers, statuses, kind names),
/// never client input, so they need no escaping.
struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

/// Starts the family `name`: its `# HELP` line (`help`: one line, no
/// backslash) and its `# TYPE` line.
fn family<'a>(out: &'a mut String, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
    debug_assert!(!help.is_empty() && !help.contains(['\\', '\n']), "{name}: help must be one plain line");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
    Family { out, name }
}

impl Family<'_> {
    /// The family's one unlabelled sample.
    fn value(&mut self, value: impl Display) {
        let _ = writeln!(self.out, "{} {value}", self.name);
    }

    /// A sample with `labels`, written as they go between the braces (`shard="0"`).
    fn labelled(&mut self, labels: impl Display, value: impl Display) {
        let _ = writeln!(self.out, "{}{{{labels}}} {value}", self.name);
    }

    /// One histogram's series: `buckets` are (upper bound, cumulative count)
    /// in increasing order, then `+Inf`, `_sum` and `_count`. `labels` (may be
    /// empty) go before `le`.
    fn histogram<L: Display>(
        &mut self,
        labels: &str,
        buckets: impl Iterator<Item = (L, u64)>,
        sum: impl Display,
        count: u64,
    ) {
        let name = self.name;
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, n) in buckets {
            let _ = writeln!(self.out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        let _ = writeln!(self.out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(self.out, "{name}_sum{braces} {sum}");
        let _ = writeln!(self.out, "{name}_count{braces} {count}");
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

/// Every handshake outcome: the acceptor's refusals, plus what only the
/// shards know (the 101 is written by the shard that admits the connection,
/// and a full or draining shard refuses the handoff itself).
fn handshake_outcomes(shards: &[ShardMetrics], acceptor: &AcceptorMetrics) -> BTreeMap<(u16, &'static str), u64> {
    let mut all = acceptor.handshakes.clone();
    let sum = |get: fn(&ShardMetrics) -> u64| shards.iter().map(get).sum::<u64>();
    *all.entry((101, "ok")).or_default() += sum(|m| m.connections_opened);
    *all.entry((503, "server_full")).or_default() += sum(|m| m.limit_hits[LimitKind::ShardFull as usize]);
    let draining = sum(|m| m.limit_hits[LimitKind::Draining as usize]);
    if draining > 0 {
        *all.entry((503, "draining")).or_default() += draining;
    }
    all.retain(|&(status, _), n| *n > 0 || status == 101);
    all
}

/// A per-shard series: name, Prometheus type, help text, and how to read it.
type Series = (&'static str, Kind, &'static str, fn(&ShardMetrics) -> u64);

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

impl RevocationMetrics {
    /// Appends the revocation families in Prometheus text format.
    fn render(&self, out: &mut String) {
        for (name, kind, help, value) in [
            ("roomcast_revoked_tokens", Kind::Gauge, "Entries in the acceptor's revoked-token set.", self.held),
            (
                "roomcast_revoked_tokens_max",
                Kind::Gauge,
                "Capacity of the revoked-token set (limits.revoked_tokens_max).",
                self.max,
            ),
            (
                "roomcast_revocations_unpersisted",
                Kind::Gauge,
                "Revoked-token entries still waiting for room in the store queue.",
                self.unpersisted,
            ),
            (
                "roomcast_revocations_deferred_total",
                Kind::Counter,
                "Revoked-token entries the store queue had no room for when added (kept in memory, offered again).",
                self.deferred,
            ),
        ] {
            family(out, name, kind, help).value(value);
        }
        let mut refused = family(
            out,
            "roomcast_revocations_refused_total",
            Kind::Counter,
            "Revoked-token entries not added because the set was full, by reason.",
        );
        refused.labelled("reason=\"revoked\"", self.refused_revoked);
        refused.labelled("reason=\"used\"", self.refused_used);
    }
}

/// What `/proc/self` says of this process, read when `/metrics` is rendered
/// (by the acceptor thread). Each figure is `None` where it cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = (ticks > 0).then_some(ticks as f64);
        let boot = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time_s);
        ProcessStats {
            cpu_seconds: stat.zip(ticks).map(|(s, hz)| (s.utime + s.stime) as f64 / hz),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot)
                .map(|((s, hz), boot)| boot as f64 + s.start_ticks as f64 / hz),
            resident_memory_bytes: process_rss_bytes(),
            open_fds: process_open_fds(),
        }
    }

    fn render(&self, out: &mut String) {
        if let Some(cpu) = self.cpu_seconds {
            family(out, "process_cpu_seconds_total", Kind::Counter, "Total user and system CPU time spent in seconds.")
                .value(cpu);
        }
        if let Some(start) = self.start_time_seconds {
            family(
                out,
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
            )
            .value(start);
        }
        if let Some(rss) = self.resident_memory_bytes {
            family(out, "process_resident_memory_bytes", Kind::Gauge, "Resident memory size in bytes.").value(rss);
        }
        if let Some(fds) = self.open_fds {
            family(out, "process_open_fds", Kind::Gauge, "Number of open file descriptors.").value(fds);
        }
    }
}

/// The fields of `/proc/self/stat` that [`ProcessStats`] uses, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Since boot.
    start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may hold spaces or parentheses itself, so fields are counted from
/// the last `)`: what follows starts at field 3 (`state`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let field = |n: usize| -> Option<u64> { rest.split_whitespace().nth(n - 3)?.parse().ok() };
    Some(Stat { utime: field(14)?, stime: field(15)?, start_ticks: field(22)? })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
fn boot_time_s(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Open file descriptors of this process, counted in `/proc/self/fd`.
pub fn process_open_fds() -> Option<u64> {
    // The directory handle itself is one of the entries.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count().saturating_sub(1) as u64)
}

/// A per-shard histogram: name, help text, and how to write one shard's series.
type HistogramSeries = (&'static str, &'static str, fn(&ShardMetrics, &mut Family<'_>, &str));

/// Writes one family with a sample per shard (`shard="i"`).
fn per_shard(out: &mut String, shards: &[ShardMetrics], (name, kind, help, get): Series) {
    let mut f = family(out, name, kind, help);
    for (shard, m) in shards.iter().enumerate() {
        f.labelled(format_args!("shard=\"{shard}\""), get(m));
    }
}

/// Renders the latest snapshots in Prometheus text format.
pub fn render_prometheus(shards: &[ShardMetrics], acceptor: &AcceptorMetrics, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let per_shard_series: [Series; 21] = [
        (
            "roomcast_connections",
            Kind::Gauge,
            "Connections held by the shard (echo and closing connections included).",
            |m| m.connections,
        ),
        ("roomcast_rooms", Kind::Gauge, "Rooms owned by the shard.", |m| m.rooms),
        (
            "roomcast_connections_opened_total",
            Kind::Counter,
            "Connections admitted by the shard (each one a 101).",
            |m| m.connections_opened,
        ),
        ("roomcast_connections_closed_total", Kind::Counter, "Connections freed by the shard.", |m| {
            m.connections_closed
        }),
        ("roomcast_frames_in_total", Kind::Counter, "WebSocket frames received (data and control).", |m| m.frames_in),
        ("roomcast_frames_out_total", Kind::Counter, "WebSocket frames written to sockets completely.", |m| {
            m.frames_out
        }),
        ("roomcast_bytes_in_total", Kind::Counter, "Bytes read from sockets.", |m| m.bytes_in),
        ("roomcast_bytes_out_total", Kind::Counter, "Bytes written to sockets.", |m| m.bytes_out),
        ("roomcast_writes_total", Kind::Counter, "Socket write calls (each may carry up to 64 frames).", |m| m.writes),
        (
            "roomcast_messages_published_total",
            Kind::Counter,
            "Messages published, counted on the room's owner (not direct, not admin send).",
            |m| m.messages_published,
        ),
        (
            "roomcast_client_messages_total",
            Kind::Counter,
            "Client messages of any type from room connections that passed the rate limit and were handled.",
            |m| m.client_messages,
        ),
        (
            "roomcast_broadcasts_total",
            Kind::Counter,
            "Room broadcasts made by the room's owner, one per frame however many members receive it.",
            |m| m.broadcasts,
        ),
        ("roomcast_deliveries_total", Kind::Counter, "Frames queued to connections, one per recipient.", |m| {
            m.deliveries
        }),
        ("roomcast_loop_iterations_total", Kind::Counter, "Shard loop iterations.", |m| m.loop_iterations),
        (
            "roomcast_cross_shard_sent_total",
            Kind::Counter,
            "Messages sent to other shards (one per message, however many members it serves).",
            |m| m.remote_sent,
        ),
        ("roomcast_cross_shard_received_total", Kind::Counter, "Messages received from other shards.", |m| {
            m.remote_received
        }),
        (
            "roomcast_recovery_dropped_total",
            Kind::Counter,
            "Publish messages that left the recovery rings (by count or age) or were never held.",
            |m| m.recovery_dropped,
        ),
        (
            "roomcast_recovery_refused_total",
            Kind::Counter,
            "Welcomes that answered a since with recovered false.",
            |m| m.recovery_refused,
        ),
        (
            "roomcast_refresh_overloaded_total",
            Kind::Counter,
            "Token refresh requests answered overloaded because the acceptor's refresh channel was full.",
            |m| m.refresh_overloaded,
        ),
        (
            "roomcast_slow_consumers_closed_total",
            Kind::Counter,
            "Connections closed with 1013 as slow consumers.",
            |m| m.limit_hits[LimitKind::SlowConsumer as usize],
        ),
        (
            "roomcast_log_lines_suppressed_total",
            Kind::Counter,
            "Connection open/close log lines not written: past log.connection_lines_per_s per second on the shard.",
            |m| m.log_lines_suppressed,
        ),
    ];
    for series in per_shard_series {
        per_shard(&mut out, shards, series);
    }
    let histograms: [HistogramSeries; 3] = [
        (
            "roomcast_loop_iteration_seconds",
            "Busy time of one shard loop iteration, from the return of poll to the end of its flush.",
            |m, f, labels| m.loop_us.write(f, labels),
        ),
        (
            "roomcast_publish_flush_seconds",
            "For iterations that published: from the return of poll to the end of the flush of all they queued.",
            |m, f, labels| m.publish_flush_us.write(f, labels),
        ),
        (
            "roomcast_loop_inbox_depth",
            "Messages waiting in the shard's inbox when its loop came to it, sampled once per iteration.",
            |m, f, labels| m.inbox_depth.write(f, labels),
        ),
    ];
    for (name, help, write) in histograms {
        let mut f = family(&mut out, name, Kind::Histogram, help);
        for (shard, m) in shards.iter().enumerate() {
            write(m, &mut f, &format!("shard=\"{shard}\""));
        }
    }
    let mut f = family(
        &mut out,
        "roomcast_shard_inbox_depth",
        Kind::Gauge,
        "Messages waiting in the shard's inbox now (handoffs and cross-shard batches), read at render time.",
    );
    for (shard, depth) in gauges.inbox_depths.iter().enumerate() {
        f.labelled(format_args!("shard=\"{shard}\""), depth);
    }
    let mut f = family(
        &mut out,
        "roomcast_limit_hits_total",
        Kind::Counter,
        "Limit hits summed over the shards and the acceptor, by kind.",
    );
    for kind in LimitKind::ALL {
        let total: u64 =
            shards.iter().map(|m| m.limit_hits[kind as usize]).sum::<u64>() + acceptor.limit_hits[kind as usize];
        f.labelled(format_args!("kind=\"{}\"", kind.name()), total);
    }
    let mut f = family(
        &mut out,
        "roomcast_handshakes_total",
        Kind::Counter,
        "WebSocket handshake outcomes by HTTP status and cause.",
    );
    for ((status, cause), n) in handshake_outcomes(shards, acceptor) {
        f.labelled(format_args!("status=\"{status}\",cause=\"{cause}\""), n);
    }
    let mut f =
        family(&mut out, "roomcast_http_responses_total", Kind::Counter, "Responses to HTTP API requests by status.");
    for (status, n) in &acceptor.http_responses {
        f.labelled(format_args!("status=\"{status}\""), n);
    }
    family(
        &mut out,
        "roomcast_handshake_timeouts_total",
        Kind::Counter,
        "Connections whose request or response did not complete within limits.handshake_timeout_ms.",
    )
    .value(acceptor.handshake_timeouts);
    family(
        &mut out,
        "roomcast_accept_paused_total",
        Kind::Counter,
        "Times the acceptor stopped accepting (always 0 since pending handshakes are evicted instead; kept for dashboards).",
    )
    .value(acceptor.accept_paused);
    let mut f = family(
        &mut out,
        "roomcast_handshakes_shed_total",
        Kind::Counter,
        "Pending handshakes refused or closed by the acceptor's guards, by reason.",
    );
    for (reason, n) in [
        ("per_ip", acceptor.shed_per_ip),
        ("evicted", acceptor.shed_evicted),
        ("head_deadline", acceptor.shed_head_deadline),
        ("too_slow", acceptor.shed_too_slow),
    ] {
        f.labelled(format_args!("reason=\"{reason}\""), n);
    }
    family(&mut out, "roomcast_registry_rooms", Kind::Gauge, "Rooms in the room registry (the acceptor's copy).")
        .value(acceptor.registry_rooms);
    family(&mut out, "roomcast_uptime_seconds", Kind::Gauge, "Seconds since the acceptor started.")
        .value(gauges.uptime_s);
    family(&mut out, "roomcast_draining", Kind::Gauge, "1 while the server drains for shutdown, else 0.")
        .value(u8::from(gauges.draining));
    if let Some(store) = &gauges.store {
        store.render(&mut out);
    }
    gauges.revocations.render(&mut out);
    if let Some(webhooks) = &gauges.webhooks {
        webhooks.render(&mut out);
    }
    ProcessStats::read().render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histograms_render_as_cumulative_buckets() {
        let mut shard = ShardMetrics::default();
        for us in [40, 400, 4_000, 40_000] {
            shard.loop_us.record(us);
        }
        let text = render_prometheus(&[shard], &AcceptorMetrics::default(), &Gauges::default());
        assert!(text.contains("roomcast_loop_iteration_seconds_bucket{shard=\"0\",le=\"0.00005\"} 1\n"), "{text}");
        assert!(text.contains("roomcast_loop_iteration_seconds_bucket{shard=\"0\",le=\"0.005\"} 3\n"));
        assert!(text.contains("roomcast_loop_iteration_seconds_bucket{shard=\"0\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("roomcast_loop_iteration_seconds_count{shard=\"0\"} 4\n"));
        assert!(text.contains("roomcast_publish_flush_seconds_count{shard=\"0\"} 0\n"));
    }

    #[test]
    fn inbox_depths_fall_in_power_of_two_buckets() {
        let mut shard = ShardMetrics::default();
        for depth in [0, 0, 1, 2, 3, 4, 5, 65_536, 65_537, u64::MAX] {
            shard.inbox_depth.record(depth);
        }
        let h = &shard.inbox_depth;
        assert_eq!(&h.counts[..5], &[2, 1, 1, 2, 1], "0 | 1 | 2 | 3..=4 | 5..=8");
        assert_eq!((h.counts[17], h.counts[18]), (1, 2), "65536 in the last bound, the rest past it");
        assert_eq!(h.sum, u64::MAX, "saturates");
        let text =
            render_prometheus(&[ShardMetrics::default(), shard], &AcceptorMetrics::default(), &Gauges::default());
        for line in [
            "roomcast_loop_inbox_depth_bucket{shard=\"1\",le=\"0\"} 2",
            "roomcast_loop_inbox_depth_bucket{shard=\"1\",le=\"4\"} 6",
            "roomcast_loop_inbox_depth_bucket{shard=\"1\",le=\"65536\"} 8",
            "roomcast_loop_inbox_depth_bucket{shard=\"1\",le=\"+Inf\"} 10",
            "roomcast_loop_inbox_depth_count{shard=\"1\"} 10",
            "roomcast_loop_inbox_depth_count{shard=\"0\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }

    /// The family a sample line belongs to, given the families typed so far.
    fn family_of<'a>(sample: &'a str, types: &BTreeMap<&str, &str>) -> &'a str {
        let name = sample.split(['{', ' ']).next().unwrap_or("");
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && types.get(base) == Some(&"histogram")
            {
                return base;
            }
        }
        name
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let mut shard = ShardMetrics { refresh_overloaded: 2, ..ShardMetrics::default() };
        shard.loop_us.record(10);
        let mut acceptor = AcceptorMetrics::default();
        acceptor.count_http(200);
        acceptor.count_handshake(401, "token_missing");
        let gauges = Gauges {
            inbox_depths: vec![0, 0],
            store: Some(StoreGauges::default()),
            webhooks: Some(WebhookStats::default()),
            ..Gauges::default()
        };
        let text = render_prometheus(&[shard, ShardMetrics::default()], &acceptor, &gauges);

        let mut helps: BTreeMap<&str, &str> = BTreeMap::new();
        let mut types: BTreeMap<&str, &str> = BTreeMap::new();
        let mut current = "";
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(!help.trim().is_empty(), "{name}: empty help");
                assert!(helps.insert(name, help).is_none(), "{name}: two HELP lines (a family rendered twice)");
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                assert_eq!(name, current, "TYPE right after its family's HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(types.insert(name, kind).is_none(), "{name}: two TYPE lines");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}: counters end in _total");
                }
            } else {
                assert!(!line.starts_with('#') && !line.is_empty(), "stray line {line:?}");
                let family = family_of(line, &types);
                assert_eq!(family, current, "sample {line:?} outside its family (HELP/TYPE missing or out of order)");
                samples += 1;
            }
        }
        assert_eq!(helps.len(), types.len());
        assert!(samples > helps.len());
        for name in [
            "roomcast_refresh_overloaded_total",
            "roomcast_loop_iteration_seconds",
            "roomcast_loop_inbox_depth",
            "roomcast_store_commit_seconds",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(types.contains_key(name), "{name} not rendered:\n{text}");
        }
        assert!(text.lines().any(|l| l == "roomcast_refresh_overloaded_total{shard=\"0\"} 2"));
        println!("{} families", types.len());
    }

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        // Field 2 of a process named "a) (b c" and the fields after it.
        let mut line = String::from("4242 (a) (b c) S");
        for field in 4..=22 {
            line.push_str(&format!(" {}", field * 10));
        }
        line.push_str(" 99 100\n");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat, Stat { utime: 140, stime: 150, start_ticks: 220 });
        assert_eq!(boot_time_s("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let me = ProcessStats::read();
        let start = me.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 86_400.0, "this test process started recently: {start} vs {now}");
        assert!(me.cpu_seconds.is_some_and(|cpu| cpu >= 0.0));
    }

    #[test]
    fn renders_every_family_with_process_gauges() {
        let mut shard = ShardMetrics { connections: 3, ..ShardMetrics::default() };
        shard.hit(LimitKind::SlowConsumer);
        shard.connections_opened = 4;
        shard.hit(LimitKind::Draining);
        let mut acceptor = AcceptorMetrics::default();
        acceptor.count_handshake(401, "token_expired");
        acceptor.count_handshake(503, "draining");
        acceptor.count_http(200);
        acceptor.hit(LimitKind::HeadTooBig);
        let store = StoreGauges { queue_depth: 3, queue_max: 8, ..Default::default() };
        let gauges = Gauges { inbox_depths: vec![0, 7], uptime_s: 5, store: Some(store), ..Gauges::default() };
        let text = render_prometheus(&[shard, ShardMetrics::default()], &acceptor, &gauges);
        for line in [
            "roomcast_connections{shard=\"0\"} 3",
            "roomcast_slow_consumers_closed_total{shard=\"0\"} 1",
            "roomcast_limit_hits_total{kind=\"slow_consumer\"} 1",
            "roomcast_handshakes_total{status=\"101\",cause=\"ok\"} 4",
            "roomcast_handshakes_total{status=\"401\",cause=\"token_expired\"} 1",
            "roomcast_handshakes_total{status=\"503\",cause=\"draining\"} 2",
            "roomcast_http_responses_total{status=\"200\"} 1",
            "roomcast_limit_hits_total{kind=\"head_too_big\"} 1",
            "roomcast_limit_hits_total{kind=\"draining\"} 1",
            "roomcast_limit_hits_total{kind=\"api_busy\"} 0",
            "roomcast_shard_inbox_depth{shard=\"1\"} 7",
            "roomcast_uptime_seconds 5",
            "roomcast_recovery_dropped_total{shard=\"1\"} 0",
            "roomcast_store_queue_depth 3",
            "roomcast_store_queue_max 8",
            "roomcast_store_healthy 1",
            "roomcast_store_rows_failed_total{kind=\"session_open\"} 0",
            "roomcast_store_commit_seconds_count 0",
            "roomcast_store_batch_events_bucket{le=\"+Inf\"} 0",
            "roomcast_revoked_tokens 0",
            "roomcast_revocations_refused_total{reason=\"used\"} 0",
            "roomcast_handshakes_shed_total{reason=\"evicted\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("server_full"), "outcomes that never happened are left out:\n{text}");
        assert!(process_rss_bytes().is_some_and(|rss| rss > 0));
        assert!(process_open_fds().is_some_and(|fds| fds >= 3));
    }
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
