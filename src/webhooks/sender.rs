//! The `webhooks` thread: receives queued events, encodes each once, keeps
//! per endpoint a bounded buffer of unsent events, and POSTs them in batches
//! of at most `batch_max` events and `body_bytes_max` bytes once a batch is
//! full or its first event has waited `linger_ms`. A failed POST is retried
//! (the same events, a fresh body and signature) after an exponential,
//! jittered backoff, at most `retries_max` times, then dropped and counted.
//!
//! Ordering: an endpoint gets its events in the order the thread received
//! them, and a batch being retried holds back the later ones (no
//! reordering, at the cost of head-of-line waiting). Delivery is at least
//! once: a POST that timed out after the receiver took it is sent again, so
//! receivers dedupe by event `id`.
//!
//! One endpoint is served at a time: a POST blocks the thread for at most
//! the endpoint's timeout, during which the queue fills and may drop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;

use super::{ATTEMPT_HEADER, Counters, Queued, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookDetail, WebhookEvent};
use crate::config::{WebhookConfig, WebhookLimits, WebhookTarget};

/// Bytes of a body besides its events: `{"sent_at_ms":…,"events":[` and `]}`.
const BODY_OVERHEAD_BYTES: usize = 64;

pub(super) fn spawn(
    rx: Receiver<Queued>,
    webhooks: &[WebhookConfig],
    limits: &WebhookLimits,
    counters: Arc<Counters>,
) -> std::io::Result<JoinHandle<()>> {
    let endpoints = webhooks.iter().map(Endpoint::new).collect();
    let mut random = Jitter::seeded();
    let instance = random.next();
    let sender = Sender { rx, endpoints, policy: Policy::from(limits), counters, random, instance, seq: 0 };
    std::thread::Builder::new().name("webhooks".into()).spawn(move || sender.run())
}

/// The limits the thread works by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub queue_max: usize,
    pub batch_max: usize,
    pub linger: Duration,
    pub retries_max: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub body_bytes_max: usize,
}

impl From<&WebhookLimits> for Policy {
    fn from(limits: &WebhookLimits) -> Policy {
        Policy {
            queue_max: limits.queue_max,
            batch_max: limits.batch_max,
            linger: Duration::from_millis(limits.linger_ms),
            retries_max: limits.retries_max,
            backoff_base: Duration::from_millis(limits.backoff_base_ms),
            backoff_max: Duration::from_millis(limits.backoff_max_ms),
            body_bytes_max: limits.body_bytes_max,
        }
    }
}

/// An encoded event waiting in an endpoint's buffer.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub queued_at: Instant,
    /// The event's JSON object, shared by every endpoint that gets it.
    pub json: Arc<str>,
}

/// Events that go out in one POST, and are retried together.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub events: Vec<Arc<str>>,
    /// Sum of the events' JSON lengths.
    pub bytes: usize,
}

#[derive(Debug)]
struct Retry {
    batch: Batch,
    /// Failed attempts so far (≥ 1).
    failures: u32,
    next_at: Instant,
}

struct Endpoint {
    url: String,
    target: WebhookTarget,
    secret: Vec<u8>,
    timeout: Duration,
    /// Unsent events, oldest first; at most `queue_max`.
    pending: VecDeque<Pending>,
    /// The batch that failed and waits for its next attempt.
    retry: Option<Retry>,
}

impl Endpoint {
    fn new(config: &WebhookConfig) -> Endpoint {
        Endpoint {
            url: config.url.clone(),
            target: config.target.clone(),
            secret: config.secret.as_bytes().to_vec(),
            timeout: Duration::from_millis(config.timeout_ms),
            pending: VecDeque::new(),
            retry: None,
        }
    }

    /// When this endpoint next has work: its retry, or its oldest pending
    /// event's linger (now if a full batch waits).
    fn due_at(&self, policy: &Policy) -> Option<Instant> {
        if let Some(retry) = &self.retry {
            return Some(retry.next_at);
        }
        let oldest = self.pending.front()?;
        if self.pending.len() >= policy.batch_max {
            return Some(oldest.queued_at);
        }
        Some(oldest.queued_at + policy.linger)
    }

    fn held(&self) -> usize {
        self.pending.len() + self.retry.as_ref().map_or(0, |retry| retry.batch.events.len())
    }
}

/// Takes the oldest pending events into a batch: at most `batch_max`, and
/// no more than fit `body_bytes_max` with the body's framing (at least one:
/// an event alone is never over it, `accept` dropped those).
pub(super) fn take_batch(pending: &mut VecDeque<Pending>, policy: &Policy) -> Batch {
    let mut batch = Batch::default();
    let mut body_bytes = BODY_OVERHEAD_BYTES;
    while let Some(next) = pending.front() {
        let grows = next.json.len() + 1; // and its comma
        if batch.events.len() >= policy.batch_max
            || (!batch.events.is_empty() && body_bytes + grows > policy.body_bytes_max)
        {
            break;
        }
        body_bytes += grows;
        batch.bytes += next.json.len();
        if let Some(taken) = pending.pop_front() {
            batch.events.push(taken.json);
        }
    }
    batch
}

/// `{"sent_at_ms":N,"events":[…]}`: the exact bytes that are signed.
pub(super) fn body(batch: &Batch, sent_at_ms: u64) -> String {
    let mut body = String::with_capacity(BODY_OVERHEAD_BYTES + batch.bytes + batch.events.len());
    body.push_str("{\"sent_at_ms\":");
    body.push_str(&sent_at_ms.to_string());
    body.push_str(",\"events\":[");
    for (i, event) in batch.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("]}");
    body
}

/// The wait before retry number `failures` (1 = after the first failure):
/// `base · 2^(failures-1)`, capped at `max`, then drawn uniformly between
/// half of it and all of it ("equal jitter": endpoints that failed together
/// do not retry together, and the wait never collapses to zero).
pub(super) fn backoff(failures: u32, policy: &Policy, random: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let full = policy.backoff_base.saturating_mul(1u32 << doublings.min(31)).min(policy.backoff_max);
    let full_ms = full.as_millis() as u64;
    let half_ms = full_ms / 2;
    Duration::from_millis(half_ms + random % (full_ms - half_ms + 1))
}

/// A small xorshift generator for jitter and the instance id; seeded from
/// the OS, falling back to the clock (jitter needs no secrecy).
pub(super) struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        let seed = getrandom::u64().unwrap_or_else(|_| unix_now_ms() ^ 0x9e37_79b9_7f4a_7c15);
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An event as it appears in a body.
#[derive(Serialize)]
struct EventJson<'a> {
    /// `<instance hex>-<seq>`: unique per process run, for receivers' dedupe.
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    ts_ms: u64,
    conn: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

pub(super) fn encode(event: &WebhookEvent, id: String) -> String {
    let mut json = EventJson {
        id,
        kind: event.kind().name(),
        ts_ms: event.ts_ms,
        conn: &event.conn,
        user: &event.user,
        tenant: event.tenant.as_deref(),
        room: event.room.as_deref(),
        peer: None,
        close_code: None,
        close_reason: None,
        chat_id: None,
        text: None,
    };
    match &event.detail {
        WebhookDetail::Connect { peer } => json.peer = peer.map(|peer| peer.to_string()),
        WebhookDetail::Disconnect { close_code, close_reason } => {
            json.close_code = Some(*close_code);
            json.close_reason = Some(close_reason);
        }
        WebhookDetail::Join | WebhookDetail::Leave => {}
        WebhookDetail::Chat { chat_id, text } => {
            json.chat_id = Some(chat_id);
            json.text = Some(text);
        }
    }
    // Plain strings and integers: serializing cannot fail.
    serde_json::to_string(&json).unwrap_or_default()
}

struct Sender {
    rx: Receiver<Queued>,
    endpoints: Vec<Endpoint>,
    policy: Policy,
    counters: Arc<Counters>,
    random: Jitter,
    /// Random per run: event ids stay unique across restarts.
    instance: u64,
    seq: u64,
}

impl Sender {
    fn run(mut self) {
        loop {
            let wait = self.next_due().map(|at| at.saturating_duration_since(Instant::now()));
            let received = match wait {
                Some(wait) => self.rx.recv_timeout(wait),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(queued) => {
                    self.accept(queued);
                    // Take what else is waiting (bounded) before sending, so batches fill.
                    for _ in 0..self.policy.queue_max {
                        let Ok(queued) = self.rx.try_recv() else { break };
                        self.accept(queued);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
            }
            self.send_due();
            self.publish_held();
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.endpoints.iter().filter_map(|endpoint| endpoint.due_at(&self.policy)).min()
    }

    /// Encodes one event and adds it to each endpoint that wants it.
    fn accept(&mut self, queued: Queued) {
        self.seq += 1;
        let json: Arc<str> = encode(&queued.event, format!("{:016x}-{}", self.instance, self.seq)).into();
        let wanted = u64::from(queued.endpoints.count_ones());
        if json.len() + BODY_OVERHEAD_BYTES > self.policy.body_bytes_max {
            Counters::add(&self.counters.dropped_too_large, wanted);
            return;
        }
        let now = Instant::now();
        for (i, endpoint) in self.endpoints.iter_mut().enumerate() {
            if queued.endpoints & (1 << i) == 0 {
                continue;
            }
            if endpoint.pending.len() >= self.policy.queue_max {
                Counters::add(&self.counters.dropped_queue_full, 1);
                continue;
            }
            endpoint.pending.push_back(Pending { queued_at: now, json: Arc::clone(&json) });
        }
    }

    /// One POST at most per endpoint whose work is due, so a busy endpoint
    /// does not keep the thread from the queue and the others.
    fn send_due(&mut self) {
        for i in 0..self.endpoints.len() {
            let now = Instant::now();
            let endpoint = &mut self.endpoints[i];
            if endpoint.due_at(&self.policy).is_none_or(|at| at > now) {
                continue;
            }
            let (batch, failures) = match endpoint.retry.take() {
                Some(retry) => (retry.batch, retry.failures),
                None => (take_batch(&mut endpoint.pending, &self.policy), 0),
            };
            self.attempt(i, batch, failures);
        }
    }

    /// POSTs `batch` to endpoint `i` (attempt `failures + 1`); on failure
    /// schedules the retry, or drops the batch when retries are spent.
    fn attempt(&mut self, i: usize, batch: Batch, failures: u32) {
        match self.post(i, &batch, failures + 1) {
            Ok(()) => {}
            Err(error) => {
                let failures = failures + 1;
                let events = batch.events.len() as u64;
                let endpoint = &mut self.endpoints[i];
                if failures > self.policy.retries_max {
                    Counters::add(&self.counters.batches_dropped, 1);
                    Counters::add(&self.counters.dropped_retries, events);
                    tracing::warn!(url = %endpoint.url, events, attempts = failures, %error,
                        "webhook batch dropped: retries spent");
                    return;
                }
                let wait = backoff(failures, &self.policy, self.random.next());
                tracing::warn!(url = %endpoint.url, events, attempt = failures, retry_in_ms = wait.as_millis() as u64,
                    %error, "webhook POST failed");
                endpoint.retry = Some(Retry { batch, failures, next_at: Instant::now() + wait });
            }
        }
    }

    /// One POST of `batch` to endpoint `i`, counted.
    fn post(&self, i: usize, batch: &Batch, attempt: u32) -> Result<(), super::PostError> {
        let endpoint = &self.endpoints[i];
        let sent_at_ms = unix_now_ms();
        let body = body(batch, sent_at_ms);
        let signature = super::sign::signature(&endpoint.secret, body.as_bytes());
        let timestamp = sent_at_ms.to_string();
        let attempt = attempt.to_string();
        let headers = [
            (SIGNATURE_HEADER, signature.as_str()),
            (TIMESTAMP_HEADER, timestamp.as_str()),
            (ATTEMPT_HEADER, &attempt),
        ];
        match super::post(&endpoint.target, &headers, body.as_bytes(), endpoint.timeout) {
            Ok(_) => {
                Counters::add(&self.counters.batches_sent, 1);
                Counters::add(&self.counters.events_sent, batch.events.len() as u64);
                Ok(())
            }
            Err(error) => {
                Counters::add(&self.counters.attempts_failed, 1);
                Err(error)
            }
        }
    }

    fn publish_held(&self) {
        let held: usize = self.endpoints.iter().map(Endpoint::held).sum();
        self.counters.held.store(held as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every source is gone: one last attempt for what each endpoint holds,
    /// its retry first, stopping at the endpoint's first failure; whatever
    /// is left is dropped and counted.
    fn shutdown(mut self) {
        for i in 0..self.endpoints.len() {
            let mut batches: Vec<Batch> = self.endpoints[i].retry.take().map(|retry| retry.batch).into_iter().collect();
            while !self.endpoints[i].pending.is_empty() {
                batches.push(take_batch(&mut self.endpoints[i].pending, &self.policy));
            }
            let mut failed = false;
            for batch in batches {
                if failed || self.post(i, &batch, 1).is_err() {
                    failed = true;
                    Counters::add(&self.counters.dropped_shutdown, batch.events.len() as u64);
                }
            }
            if failed {
                tracing::warn!(url = %self.endpoints[i].url, "webhook events dropped at shutdown: the endpoint failed");
            }
        }
        self.publish_held();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn policy() -> Policy {
        Policy {
            queue_max: 100,
            batch_max: 3,
            linger: Duration::from_millis(50),
            retries_max: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            body_bytes_max: 200,
        }
    }

    fn pending(text: &str) -> Pending {
        Pending { queued_at: Instant::now(), json: Arc::from(text) }
    }

    #[test]
    fn a_batch_stops_at_batch_max_or_at_the_body_bound() {
        let policy = policy();
        let mut queue: VecDeque<Pending> = (0..7).map(|i| pending(&format!("{{\"n\":{i}}}"))).collect();
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let batch = take_batch(&mut queue, &policy);
            (!batch.events.is_empty()).then_some(batch.events.len())
        })
        .collect();
        assert_eq!(sizes, vec![3, 3, 1]);

        // 60-byte events: 64 + 2 × 61 = 186 fits 200, a third would not.
        let big = "x".repeat(60);
        let mut queue: VecDeque<Pending> = (0..3).map(|_| pending(&big)).collect();
        assert_eq!(take_batch(&mut queue, &policy).events.len(), 2);
        assert_eq!(take_batch(&mut queue, &policy).events.len(), 1);
    }

    #[test]
    fn the_body_lists_the_events_in_order() {
        let batch = Batch { events: vec![Arc::from("{\"a\":1}"), Arc::from("{\"b\":2}")], bytes: 14 };
        let text = body(&batch, 42);
        assert_eq!(text, "{\"sent_at_ms\":42,\"events\":[{\"a\":1},{\"b\":2}]}");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["events"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let policy = policy();
        let mut random = Jitter(12345);
        for (failures, full_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
            for _ in 0..200 {
                let wait = backoff(failures, &policy, random.next()).as_millis() as u64;
                assert!((full_ms / 2..=full_ms).contains(&wait), "failures {failures}: {wait} ms");
            }
        }
        assert_eq!(backoff(1, &policy, 0), Duration::from_millis(50));
        assert_eq!(backoff(1, &policy, 50), Duration::from_millis(100));
    }

    #[test]
    fn events_encode_with_their_kind_fields_only() {
        let event = WebhookEvent {
            ts_ms: 7,
            conn: "0:1".into(),
            user: "ann".into(),
            tenant: None,
            room: Some("lobby".into()),
            detail: WebhookDetail::Disconnect { close_code: 1008, close_reason: "policy \"x\"".into() },
        };
        let json: serde_json::Value = serde_json::from_str(&encode(&event, "ab-1".into())).expect("JSON");
        assert_eq!(json["type"], "disconnect");
        assert_eq!(json["close_code"], 1008);
        assert_eq!(json["close_reason"], "policy \"x\"");
        assert_eq!(json["id"], "ab-1");
        assert!(json.get("tenant").is_none() && json.get("text").is_none() && json.get("peer").is_none());
    }
}
