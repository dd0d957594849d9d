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
    json!({
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
    })
}
