//! The webhook thread's figures and their `roomcast_webhook_*` families.
//! `webhooks::WebhookMonitor` fills a [`WebhookStats`] copy when `/metrics`
//! is rendered; this file only says what the numbers are and how they print.

use super::{Kind, family};

/// What `/metrics` shows of the webhook thread (absent with no `[[webhooks]]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events delivered (a 2xx answer), counted once per endpoint.
    pub events_sent: u64,
    /// POSTs answered 2xx.
    pub batches_sent: u64,
    /// POSTs that failed (connect error, timeout, non-2xx), retried or not.
    pub attempts_failed: u64,
    /// Events dropped because the queue (or an endpoint's unsent buffer) was full.
    pub events_dropped_queue_full: u64,
    /// Events dropped with their batch once its retries were spent.
    pub events_dropped_retries: u64,
    /// Events dropped because one alone is over `webhook_limits.body_bytes_max`.
    pub events_dropped_too_large: u64,
    /// Events still unsent when the server stopped (after one last attempt).
    pub events_dropped_shutdown: u64,
    /// Batches dropped once their retries were spent.
    pub batches_dropped: u64,
    /// Events queued for the thread or held unsent by an endpoint now.
    pub queue_depth: u64,
    /// `webhook_limits.queue_max`.
    pub queue_max: u64,
}

impl WebhookStats {
    /// Appends the `roomcast_webhook_*` families in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let scalars: [(&str, Kind, &str, u64); 6] = [
            (
                "roomcast_webhook_events_sent_total",
                Kind::Counter,
                "Webhook events delivered (answered 2xx), once per endpoint.",
                self.events_sent,
            ),
            ("roomcast_webhook_batches_sent_total", Kind::Counter, "Webhook POSTs answered 2xx.", self.batches_sent),
            (
                "roomcast_webhook_attempts_failed_total",
                Kind::Counter,
                "Webhook POSTs that failed (connect error, timeout or non-2xx answer), retried or not.",
                self.attempts_failed,
            ),
            (
                "roomcast_webhook_batches_dropped_total",
                Kind::Counter,
                "Webhook batches dropped after webhook_limits.retries_max failed retries.",
                self.batches_dropped,
            ),
            (
                "roomcast_webhook_queue_depth",
                Kind::Gauge,
                "Webhook events queued for the webhook thread or held unsent by an endpoint.",
                self.queue_depth,
            ),
            (
                "roomcast_webhook_queue_max",
                Kind::Gauge,
                "Capacity of the webhook queue (webhook_limits.queue_max).",
                self.queue_max,
            ),
        ];
        for (name, kind, help, value) in scalars {
            family(out, name, kind, help).value(value);
        }
        let mut dropped =
            family(out, "roomcast_webhook_events_dropped_total", Kind::Counter, "Webhook events dropped, by reason.");
        for (reason, n) in [
            ("queue_full", self.events_dropped_queue_full),
            ("retries_exhausted", self.events_dropped_retries),
            ("too_large", self.events_dropped_too_large),
            ("shutdown", self.events_dropped_shutdown),
        ] {
            dropped.labelled(format_args!("reason=\"{reason}\""), n);
        }
    }
}
