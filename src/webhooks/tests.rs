//! Tests of the handle's routing and dropping, without a receiver.

use super::*;
use crate::config::{WebhookConfig, WebhookTarget};

fn config(port: u16, events: &[WebhookEventKind]) -> WebhookConfig {
    WebhookConfig {
        url: format!("http://127.0.0.1:{port}/"),
        target: WebhookTarget { host: "127.0.0.1".into(), port, path: "/".into() },
        events: events.to_vec(),
        secret: "0123456789abcdef".into(),
        timeout_ms: 200,
    }
}

#[test]
fn nothing_runs_without_webhooks() {
    let limits = crate::config::Config::load(crate::config::Sources::default()).map(|c| c.webhook_limits);
    let limits = limits.expect("defaults load");
    assert!(Webhooks::start(&[], &limits).expect("start").is_none());
}

#[test]
fn unwanted_kinds_are_not_queued() {
    let limits = crate::config::Config::load(crate::config::Sources::default()).expect("defaults").webhook_limits;
    // Port 9 (discard) on loopback: nothing listens, but nothing is sent either.
    let webhooks = Webhooks::start(&[config(9, &[WebhookEventKind::Chat])], &limits).expect("start").expect("one");
    let handle = webhooks.handle();
    assert!(handle.wants(WebhookEventKind::Chat));
    assert!(!handle.wants(WebhookEventKind::Connect));
    handle.notify(WebhookEvent {
        ts_ms: 1,
        conn: "0:1".into(),
        user: "u".into(),
        tenant: None,
        room: None,
        detail: WebhookDetail::Join,
    });
    let stats = webhooks.monitor().snapshot();
    assert_eq!(stats.queue_depth, 0);
    drop(handle);
    webhooks.stop();
}
