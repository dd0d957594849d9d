//! The cluster bridge: what makes a roomcast process one node of several
//! sharing one Redis (`cluster.redis`). Started only then; nothing below
//! this module knows Redis exists.
//!
//! Every room has one owner node, claimed in Redis (`scripts::CLAIM`) by
//! the first node a member joins it through, and held while that node's
//! liveness key lives. The owner's shard runs the room exactly as on one
//! node (order, `seq`, presence, lobby, roles, history, `since`); a member
//! on another node is a member there as a member on another shard is
//! (`shard/remote.rs`), with its messages carried through Redis:
//!
//! - to one node: one `PUBLISH` on `P:to:{n}` per batch of messages
//!   (requests to the owner; welcomes, acks, roles back);
//! - a room's broadcast: one `PUBLISH` on `P:room:{room}`, to which each
//!   node with members of the room is subscribed, once per node;
//! - `P:all`: `dead {n}` when a node's liveness key expired.
//!
//! Two threads, one connection (RESP3, so subscriptions and commands share
//! it in order, which is what puts a node's `SUBSCRIBE` to a room before
//! its first join there): the writer (`writer.rs`) takes the shards'
//! bounded queue and writes, the reader (`reader.rs`) parses what comes
//! back and routes it into the shards' inboxes. A shard never waits on
//! Redis: it `try_send`s, and a full queue is a counted refusal.

mod link;
mod reader;
mod scripts;
pub mod wire;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender};

use crate::config::ClusterConfig;
use crate::ids::RoomKey;
use crate::metrics::{ClusterStats, LAG_BUCKETS_S};
use crate::msg::ClusterOut;
use crate::shard::ShardHandle;

pub use link::check_url;

/// How long startup waits for Redis before it gives up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(10);

/// Redis key and channel names, under `cluster.key_prefix`.
#[derive(Debug, Clone)]
struct Names {
    prefix: String,
}

impl Names {
    fn owner(&self, key: &RoomKey) -> Vec<u8> {
        format!("{}:owner:{}", self.prefix, room_name(key)).into_bytes()
    }

    fn room_channel(&self, key: &RoomKey) -> Vec<u8> {
        format!("{}:room:{}", self.prefix, room_name(key)).into_bytes()
    }

    fn node_channel(&self, node: u8) -> Vec<u8> {
        format!("{}:to:{node}", self.prefix).into_bytes()
    }

    fn all_channel(&self) -> Vec<u8> {
        format!("{}:all", self.prefix).into_bytes()
    }
}

/// A room as Redis names it: `tenant/room` (room ids have no `/`).
fn room_name(key: &RoomKey) -> String {
    format!("{}/{}", key.tenant(), key.room())
}

/// The bridge's counters, shared with the acceptor (`/metrics`,
/// `/api/v1/stats`, `/readyz`).
#[derive(Debug, Default)]
struct Counters {
    node: AtomicU8,
    link_up: AtomicBool,
    nodes: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
    dropped_inbox_full: AtomicU64,
    dropped_undecodable: AtomicU64,
    dropped_link_down: AtomicU64,
    fenced: AtomicU64,
    subscriptions: AtomicU64,
    lag_buckets: [AtomicU64; LAG_BUCKETS_S.len() + 1],
    lag_sum_us: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn record_lag(&self, lag_us: u64) {
        let seconds = lag_us as f64 / 1e6;
        let bucket = LAG_BUCKETS_S.iter().position(|&bound| seconds <= bound).unwrap_or(LAG_BUCKETS_S.len());
        self.lag_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.lag_sum_us.fetch_add(lag_us, Ordering::Relaxed);
    }
}

/// A read-only view of the bridge for the acceptor.
#[derive(Debug, Clone)]
pub struct ClusterMonitor {
    counters: Arc<Counters>,
    node_id: Arc<str>,
}

impl ClusterMonitor {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn link_up(&self) -> bool {
        self.counters.link_up.load(Ordering::Relaxed)
    }

    /// The figures now; `remote_members` is the shards' to fill.
    pub fn snapshot(&self) -> ClusterStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut lag_buckets = [0; LAG_BUCKETS_S.len() + 1];
        for (out, bucket) in lag_buckets.iter_mut().zip(&c.lag_buckets) {
            *out = get(bucket);
        }
        ClusterStats {
            node: c.node.load(Ordering::Relaxed),
            link_up: self.link_up(),
            nodes: get(&c.nodes),
            published: get(&c.published),
            received: get(&c.received),
            reconnects: get(&c.reconnects),
            dropped_inbox_full: get(&c.dropped_inbox_full),
            dropped_undecodable: get(&c.dropped_undecodable),
            dropped_link_down: get(&c.dropped_link_down),
            fenced: get(&c.fenced),
            subscriptions: get(&c.subscriptions),
            remote_members: 0,
            lag_buckets,
            lag_sum_us: get(&c.lag_sum_us),
        }
    }
}

/// Settings the bridge threads share.
#[derive(Debug, Clone)]
struct BridgeSettings {
    url: String,
    node_id: String,
    names: Names,
    heartbeat: Duration,
    node_ttl_ms: u64,
    /// Local shards (the receiving node's hash of a room key).
    shards: usize,
    /// Items held while the link is down, at most (`cluster.bridge_queue_max`).
    held_max: usize,
}

/// A node's bridge, connected and registered, its threads not yet started.
#[derive(Debug)]
pub struct Bridge {
    settings: BridgeSettings,
    link: link::Link,
    node: u8,
    /// `P:epoch` at registration (`scripts::REGISTER`).
    epoch: String,
    queue_tx: Sender<ClusterOut>,
    queue_rx: Receiver<ClusterOut>,
    monitor: ClusterMonitor,
}

/// The running bridge: stops when every shard's sender is gone.
#[derive(Debug)]
pub struct BridgeThreads {
    writer: JoinHandle<()>,
}

impl BridgeThreads {
    /// Waits for the writer, which deregisters this node on its way out.
    pub fn join(self) {
        let _ = self.writer.join();
    }
}

impl Bridge {
    /// Connects to Redis and registers this node; its number is set for the
    /// whole process (`ids::set_node_number`). Waits up to
    /// `STARTUP_PATIENCE` for Redis, then fails: a node that cannot join its
    /// cluster should not serve as if it were alone.
    pub fn connect(config: &ClusterConfig, shards: usize) -> anyhow::Result<Bridge> {
        let url = config.redis.clone().context("cluster.redis is not set")?;
        let node_id = config.node_id.clone().unwrap_or_else(generated_node_id);
        let settings = BridgeSettings {
            url,
            node_id: node_id.clone(),
            names: Names { prefix: config.key_prefix.clone() },
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            node_ttl_ms: config.node_ttl_ms,
            shards,
            held_max: config.bridge_queue_max,
        };
        let started = Instant::now();
        let (link, node, epoch) = loop {
            match writer::connect_and_register(&settings, 0, "") {
                Ok((link, node, registered)) => break (link, node, registered.epoch),
                Err(e) if started.elapsed() < STARTUP_PATIENCE => {
                    tracing::warn!(error = %e, "cluster: Redis not reachable yet, retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e).context("cluster: joining through Redis"),
            }
        };
        crate::ids::set_node_number(node);
        let counters = Arc::new(Counters::default());
        counters.node.store(node, Ordering::Relaxed);
        counters.link_up.store(true, Ordering::Relaxed);
        counters.nodes.store(1, Ordering::Relaxed);
        let (queue_tx, queue_rx) = crossbeam_channel::bounded(config.bridge_queue_max);
        let monitor = ClusterMonitor { counters, node_id: node_id.into() };
        tracing::info!(node_id = %settings.node_id, node, "cluster link up");
        Ok(Bridge { settings, link, node, epoch, queue_tx, queue_rx, monitor })
    }

    /// The queue the shards send through (`ShardSettings::cluster`).
    pub fn queue(&self) -> Sender<ClusterOut> {
        self.queue_tx.clone()
    }

    pub fn monitor(&self) -> ClusterMonitor {
        self.monitor.clone()
    }

    /// Starts the reader and writer threads, once the shards exist.
    /// `announcements` receives other nodes' `ClusterOut::Announce` texts
    /// (the acceptor: admin requests to run here too). The bridge's own
    /// sender is dropped here: the writer stops when the shards' and the
    /// acceptor's are gone too.
    pub fn start(
        self,
        shards: Vec<ShardHandle>,
        announcements: Option<crate::msg::Reply<Vec<u8>>>,
    ) -> anyhow::Result<BridgeThreads> {
        let Bridge { settings, link, node, epoch, queue_tx, queue_rx, monitor } = self;
        drop(queue_tx);
        let writer = writer::Writer::new(settings, node, epoch, queue_rx, shards, announcements, monitor.counters);
        let thread = std::thread::Builder::new()
            .name("cluster-writer".into())
            .spawn(move || writer.run(link))
            .context("cluster writer thread")?;
        Ok(BridgeThreads { writer: thread })
    }
}

/// `host-pid`: unique among live nodes, readable in logs.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "node" } else { host }, std::process::id())
}

fn unix_now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
