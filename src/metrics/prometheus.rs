//! The one Prometheus text renderer: every family is written through
//! [`family`], which puts its `# HELP` and `# TYPE` lines first, so no sample
//! can go out without them. `render_prometheus` lays out the whole page from
//! the shards' snapshots, the acceptor's counters and the gauges read at
//! render time.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

use super::process::ProcessStats;
use super::{AcceptorMetrics, Gauges, LimitKind, RevocationMetrics, ShardMetrics};

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

/// Starts the family `name`: its `# HELP` line (`help`: one line, no
/// backslash) and its `# TYPE` line.
pub(super) fn family<'a>(out: &'a mut String, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
    debug_assert!(!help.is_empty() && !help.contains(['\\', '\n']), "{name}: help must be one plain line");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
    Family { out, name }
}

impl Family<'_> {
    /// The family's one unlabelled sample.
    pub(super) fn value(&mut self, value: impl Display) {
        let _ = writeln!(self.out, "{} {value}", self.name);
    }

    /// A sample with `labels`, written as they go between the braces (`shard="0"`).
    pub(super) fn labelled(&mut self, labels: impl Display, value: impl Display) {
        let _ = writeln!(self.out, "{}{{{labels}}} {value}", self.name);
    }

    /// One histogram's series: `buckets` are (upper bound, cumulative count)
    /// in increasing order, then `+Inf`, `_sum` and `_count`. `labels` (may be
    /// empty) go before `le`.
    pub(super) fn histogram<L: Display>(
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
    let per_shard_series: [Series; 24] = [
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
        (
            "roomcast_outbound_queued_frames",
            Kind::Gauge,
            "Frames in the shard's outbound queues (limits.shard_queued_frames_max).",
            |m| m.queued_frames,
        ),
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
            "roomcast_connections_spread_total",
            Kind::Counter,
            "Connections to a room of rooms.spread_from_members members or more, handed by the room's shard to another.",
            |m| m.connections_spread,
        ),
        (
            "roomcast_history_loads_skipped_total",
            Kind::Counter,
            "Rooms created without reading their history from the store, which holds no chat of them.",
            |m| m.history_loads_skipped,
        ),
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
    if let Some(cluster) = &gauges.cluster {
        cluster.stats.render(&mut out);
    }
    ProcessStats::read().render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::process::{process_open_fds, process_rss_bytes};
    use crate::metrics::{ClusterGauges, ClusterStats, StoreGauges, WebhookStats};

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
            cluster: Some(ClusterGauges::default()),
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
            "roomcast_cluster_link_up",
            "roomcast_cluster_dropped_total",
            "roomcast_cluster_lag_seconds",
        ] {
            assert!(types.contains_key(name), "{name} not rendered:\n{text}");
        }
        assert!(text.lines().any(|l| l == "roomcast_refresh_overloaded_total{shard=\"0\"} 2"));
        println!("{} families", types.len());
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

    #[test]
    fn cluster_families_render_only_in_a_cluster_with_cumulative_lag_buckets() {
        let alone = render_prometheus(&[ShardMetrics::default()], &AcceptorMetrics::default(), &Gauges::default());
        assert!(!alone.contains("roomcast_cluster_"), "no cluster families outside a cluster:\n{alone}");

        let mut lag_buckets = [0; crate::metrics::LAG_BUCKETS_S.len() + 1];
        (lag_buckets[0], lag_buckets[2], lag_buckets[8], lag_buckets[9]) = (2, 3, 1, 4);
        let stats = ClusterStats {
            node: 3,
            link_up: true,
            nodes: 2,
            published: 10,
            received: 9,
            dropped_undecodable: 1,
            dropped_link_down: 5,
            remote_members: 7,
            lag_buckets,
            lag_sum_us: 2_500_000,
            ..ClusterStats::default()
        };
        let gauges = Gauges { cluster: Some(ClusterGauges { node_id: "a".into(), stats }), ..Gauges::default() };
        let text = render_prometheus(&[ShardMetrics::default()], &AcceptorMetrics::default(), &gauges);
        for line in [
            "roomcast_cluster_link_up 1",
            "roomcast_cluster_nodes 2",
            "roomcast_cluster_published_total 10",
            "roomcast_cluster_received_total 9",
            "roomcast_cluster_reconnects_total 0",
            "roomcast_cluster_fenced_total 0",
            "roomcast_cluster_subscriptions 0",
            "roomcast_cluster_remote_members 7",
            "roomcast_cluster_dropped_total{reason=\"inbox_full\"} 0",
            "roomcast_cluster_dropped_total{reason=\"undecodable\"} 1",
            "roomcast_cluster_dropped_total{reason=\"link_down\"} 5",
            "roomcast_cluster_lag_seconds_bucket{le=\"0.0002\"} 2",
            "roomcast_cluster_lag_seconds_bucket{le=\"0.0005\"} 2",
            "roomcast_cluster_lag_seconds_bucket{le=\"0.001\"} 5",
            "roomcast_cluster_lag_seconds_bucket{le=\"0.25\"} 5",
            "roomcast_cluster_lag_seconds_bucket{le=\"1\"} 6",
            "roomcast_cluster_lag_seconds_bucket{le=\"+Inf\"} 10",
            "roomcast_cluster_lag_seconds_sum 2.5",
            "roomcast_cluster_lag_seconds_count 10",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
