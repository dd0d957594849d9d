//! `GET /api/v1/stats`: totals over the shards' metric snapshots.

use serde_json::{Value, json};

use crate::metrics::ShardMetrics;

use super::Context;

/// Seed 003's `WebSocketStats`, from the shards' latest snapshots (at most
/// about a second old), plus uptime. `messages_processed` counts client
/// messages handled (any type), `messages_broadcast` room broadcasts (one per
/// broadcast, however many recipients), `deliveries` frames queued (one per
/// recipient); `docs/http-api.md` §4 has the exact definitions.
pub(super) fn stats(ctx: &Context<'_>) -> Value {
    let sum = |get: fn(&ShardMetrics) -> u64| ctx.shards.iter().map(get).sum::<u64>();
    let mut stats = json!({
        "total_connections": sum(|m| m.connections_opened),
        "active_connections": sum(|m| m.connections),
        "total_rooms": sum(|m| m.rooms),
        "messages_processed": sum(|m| m.client_messages),
        "messages_broadcast": sum(|m| m.broadcasts),
        "deliveries": sum(|m| m.deliveries),
        "last_connection_time": (ctx.acceptor.last_upgrade_unix_s > 0).then_some(ctx.acceptor.last_upgrade_unix_s),
        "uptime_s": ctx.gauges.uptime_s,
        "shards": ctx.shards.len(),
        "draining": ctx.gauges.draining,
    });
    // Only on a cluster node: a single node's answer is as it always was.
    if let (Some(cluster), Some(object)) = (&ctx.gauges.cluster, stats.as_object_mut()) {
        let link = if cluster.stats.link_up { "up" } else { "degraded" };
        object.insert(
            "cluster".into(),
            json!({ "node_id": cluster.node_id, "node": cluster.stats.node, "link": link, "nodes": cluster.stats.nodes }),
        );
    }
    stats
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::super::{Context, Endpoint, Outcome, handle};
    use crate::config::{Config, Sources};
    use crate::http::RequestHead;
    use crate::metrics::{AcceptorMetrics, ClusterGauges, ClusterStats, Gauges, ShardMetrics};

    fn context<'a>(
        config: &'a Config,
        shards: &'a [ShardMetrics],
        acceptor: &'a AcceptorMetrics,
        gauges: Gauges,
    ) -> Context<'a> {
        Context {
            config,
            mint_secret: None,
            shards,
            acceptor,
            gauges,
            tenant: None,
            now_unix_s: 0,
            registry_full: false,
            registry_behind: false,
            limit_hit: Cell::new(None),
        }
    }

    fn cluster(link_up: bool) -> Gauges {
        let stats = ClusterStats { node: 3, link_up, nodes: 2, ..ClusterStats::default() };
        Gauges { cluster: Some(ClusterGauges { node_id: "east-1".into(), stats }), ..Gauges::default() }
    }

    #[test]
    fn stats_has_a_cluster_object_only_on_a_cluster_node() {
        let config = Config::load(Sources::default()).expect("defaults");
        let (shards, acceptor) = (vec![ShardMetrics::default()], AcceptorMetrics::default());
        let alone = super::stats(&context(&config, &shards, &acceptor, Gauges::default()));
        assert!(alone.get("cluster").is_none(), "{alone}");
        let up = super::stats(&context(&config, &shards, &acceptor, cluster(true)));
        assert_eq!(up["cluster"], json!({"node_id": "east-1", "node": 3, "link": "up", "nodes": 2}));
        let down = super::stats(&context(&config, &shards, &acceptor, cluster(false)));
        assert_eq!(down["cluster"]["link"], "degraded");
    }

    #[test]
    fn readyz_is_503_cluster_degraded_while_the_link_is_down() {
        let config = Config::load(Sources::default()).expect("defaults");
        let (shards, acceptor) = (vec![ShardMetrics::default()], AcceptorMetrics::default());
        let head = RequestHead::default();
        let ready = |gauges| {
            handle(&context(&config, &shards, &acceptor, gauges), &Endpoint::Readyz, &head, &[])
                .map(|outcome| matches!(outcome, Outcome::Respond(200, _)))
        };
        assert!(ready(Gauges::default()).is_ok_and(|ok| ok));
        assert!(ready(cluster(true)).is_ok_and(|ok| ok));
        let err = ready(cluster(false)).expect_err("degraded");
        assert_eq!((err.status, err.code), (503, "cluster_degraded"));
        assert!(err.message.contains("Redis"), "{}", err.message);
    }
}
