//! Issue 14, the cluster over Redis: several `roomcast` nodes on one box
//! and one real `redis-server` per test (on a unix socket in the test's own
//! temp directory, installed by the fixture when missing), driven with real
//! WebSocket clients and the HTTP API. Synchronisation is by events only:
//! log lines, frames, and stats or metrics polled until they change.
//!
//! A test target of its own (`cargo test --test cluster`) so that the
//! Redis fixture stays out of the single-node tests; it shares their
//! harness (`tests/it/harness.rs`).

#[path = "it/harness.rs"]
#[allow(dead_code, reason = "the harness serves the integration tests too; this target uses part of it")]
mod harness;

#[path = "cluster/frames.rs"]
mod frames;
#[path = "cluster/nodes.rs"]
mod nodes;
#[path = "cluster/redis.rs"]
mod redis;

#[path = "cluster/admin.rs"]
mod admin;
#[path = "cluster/delivery.rs"]
mod delivery;
#[path = "cluster/meeting.rs"]
mod meeting;
#[path = "cluster/presence.rs"]
mod presence;
#[path = "cluster/recovery.rs"]
mod recovery;
