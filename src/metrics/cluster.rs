//! The cluster bridge's figures and their `roomcast_cluster_*` families.
//! `cluster::ClusterMonitor` fills a [`ClusterStats`] copy when `/metrics`
//! is rendered; this file only says what the numbers are and how they print.

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
