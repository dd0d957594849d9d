//! The cluster bridge's figures and their `roomcast_cluster_*` families.
//! `cluster::ClusterMonitor` fills a [`ClusterStats`] copy when `/metrics`
//! is rendered; this file only says what the numbers are and how they print.

use super::{Kind, family};

/// Upper bounds (seconds) of the `roomcast_cluster_lag_seconds` buckets.
pub const LAG_BUCKETS_S: [f64; 9] = [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

/// What `/metrics` shows of the cluster bridge (absent outside a cluster).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterStats {
    /// This node's number in the cluster (1..=255).
    pub node: u8,
    /// The link to Redis is up.
    pub link_up: bool,
    /// Live nodes, as of the last heartbeat (this one included).
    pub nodes: u64,
    /// Messages published to Redis (one per envelope: node, room or claim).
    pub published: u64,
    /// Envelopes received from Redis and handed to a shard.
    pub received: u64,
    /// Connections to Redis made after the first.
    pub reconnects: u64,
    /// Received envelopes dropped: a shard's inbox stayed full.
    pub dropped_inbox_full: u64,
    /// Received envelopes dropped: they did not decode.
    pub dropped_undecodable: u64,
    /// Messages for other nodes dropped: the link to Redis was down.
    pub dropped_link_down: u64,
    /// Times this node found itself declared dead by the others (fenced).
    pub fenced: u64,
    /// Room channels this node is subscribed to now.
    pub subscriptions: u64,
    /// Members of rooms owned here that are on other nodes, now.
    pub remote_members: u64,
    /// Publish-to-receive lag: counts per bucket of `LAG_BUCKETS_S` (not cumulative), then over the last.
    pub lag_buckets: [u64; LAG_BUCKETS_S.len() + 1],
    /// Sum of the lags, µs.
    pub lag_sum_us: u64,
}

/// What the acceptor reads of the cluster bridge when it answers
/// `/metrics`, `/api/v1/stats` and `/readyz` (`None` outside a cluster).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterGauges {
    /// `cluster.node_id` (or the generated one).
    pub node_id: String,
    /// The bridge's figures, `remote_members` summed over the shards.
    pub stats: ClusterStats,
}

impl ClusterStats {
    /// Appends the `roomcast_cluster_*` families in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let scalars: [(&str, Kind, &str, u64); 8] = [
            (
                "roomcast_cluster_link_up",
                Kind::Gauge,
                "1 while the link to Redis is up, else 0 (rooms spanning nodes are degraded).",
                u64::from(self.link_up),
            ),
            ("roomcast_cluster_nodes", Kind::Gauge, "Live cluster nodes, this one included.", self.nodes),
            (
                "roomcast_cluster_published_total",
                Kind::Counter,
                "Messages published to Redis (one per envelope: node, room or claim).",
                self.published,
            ),
            (
                "roomcast_cluster_received_total",
                Kind::Counter,
                "Envelopes received from Redis and handed to a shard.",
                self.received,
            ),
            (
                "roomcast_cluster_reconnects_total",
                Kind::Counter,
                "Connections to Redis made after the first.",
                self.reconnects,
            ),
            (
                "roomcast_cluster_fenced_total",
                Kind::Counter,
                "Times this node found itself declared dead by the others (fenced).",
                self.fenced,
            ),
            (
                "roomcast_cluster_subscriptions",
                Kind::Gauge,
                "Room channels this node is subscribed to.",
                self.subscriptions,
            ),
            (
                "roomcast_cluster_remote_members",
                Kind::Gauge,
                "Members of rooms owned by this node that are on other nodes.",
                self.remote_members,
            ),
        ];
        for (name, kind, help, value) in scalars {
            family(out, name, kind, help).value(value);
        }
        let mut dropped =
            family(out, "roomcast_cluster_dropped_total", Kind::Counter, "Cluster messages dropped, by reason.");
        for (reason, n) in [
            ("inbox_full", self.dropped_inbox_full),
            ("undecodable", self.dropped_undecodable),
            ("link_down", self.dropped_link_down),
        ] {
            dropped.labelled(format_args!("reason=\"{reason}\""), n);
        }
        let mut lag = family(
            out,
            "roomcast_cluster_lag_seconds",
            Kind::Histogram,
            "Time from a message's publish on one node to its receipt on this one.",
        );
        let mut cumulative = 0;
        let buckets = LAG_BUCKETS_S.iter().zip(&self.lag_buckets).map(|(&le, &n)| {
            cumulative += n;
            (le, cumulative)
        });
        let count = self.lag_buckets.iter().sum();
        lag.histogram("", buckets, self.lag_sum_us as f64 / 1e6, count);
    }
}
