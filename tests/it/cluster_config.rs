//! The cluster's surface without Redis: a single node shows none of it
//! (no `cluster` in `/api/v1/stats`, no `roomcast_cluster_*` families,
//! `/readyz` as ever), and a `[cluster]` that cannot work stops startup
//! with the key or the URL named, before anything is created. The tests
//! against a real Redis live in `tests/cluster/`.

use std::process::Command;

use super::harness::{Server, http_get_json, raw_http};
use super::http_api::metrics_text;

const ADMIN_KEY: &str = "admin-key-0123456789";

#[test]
fn a_single_node_shows_nothing_of_the_cluster() {
    let server = Server::start(&["--admin-key", ADMIN_KEY]);
    let (status, stats) = http_get_json(server.addr, "/api/v1/stats", ADMIN_KEY);
    assert_eq!(status, 200, "{stats}");
    assert!(stats.get("cluster").is_none(), "{stats}");
    assert!(stats["shards"].is_u64(), "{stats}");
    let text = metrics_text(server.addr);
    assert!(!text.contains("roomcast_cluster_"), "{text}");
    let (status, body) = raw_http(server.addr, b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
}

/// `roomcast serve --redis url` with `args`: it must fail at startup,
/// saying `needle` on stderr, and leave the data dir empty.
fn assert_cluster_startup_error(url: &str, args: &[&str], needle: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("path");
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-pin", "--data-dir", data, "--redis", url])
        .args(args)
        .env_clear()
        .output()
        .expect("run roomcast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{url} {args:?} started: {stderr}");
    assert!(stderr.contains(needle), "{url} {args:?}: the error does not say {needle:?}: {stderr}");
    assert!(!stderr.contains("roomcast listening"), "{stderr}");
    assert!(!stderr.contains("retrying"), "refused before any attempt to reach Redis: {stderr}");
    let created: Vec<_> = std::fs::read_dir(dir.path()).expect("data dir").collect();
    assert!(created.is_empty(), "{url} {args:?} created {created:?}");
}

#[test]
fn a_cluster_config_that_cannot_work_stops_startup() {
    // Nothing listens on port 1 of 127.0.0.1: none of these may get as far as trying.
    let redis = "redis://127.0.0.1:1";
    assert_cluster_startup_error(redis, &["--shards", "256"], "shards");
    assert_cluster_startup_error(redis, &["--set", "cluster.heartbeat_ms=50"], "cluster.heartbeat_ms");
    assert_cluster_startup_error(
        redis,
        &["--set", "cluster.heartbeat_ms=1000", "--set", "cluster.node_ttl_ms=1500"],
        "cluster.node_ttl_ms",
    );
    assert_cluster_startup_error(redis, &["--set", "cluster.key_prefix=a b"], "cluster.key_prefix");
    assert_cluster_startup_error(redis, &["--set", "cluster.bridge_queue_max=0"], "cluster.bridge_queue_max");
    assert_cluster_startup_error("rediss://127.0.0.1:6380", &[], "rediss://");
    assert_cluster_startup_error("http://127.0.0.1:6379", &[], "is not a Redis URL");
}
