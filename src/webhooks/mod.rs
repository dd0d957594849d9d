//! Webhooks: room events (connect, disconnect, join, leave, chat) posted as
//! signed JSON batches to the HTTP endpoints of `[[webhooks]]`, for hooks
//! that must leave the process.
//!
//! A shard (or any thread) calls [`WebhookHandle::notify`]: it looks up which
//! endpoints want the event's kind (a copy of a small array, no lock) and
//! `try_send`s it on one bounded channel; a full channel drops the event and
//! counts it. Nothing else happens on the caller's side: the one `webhooks`
//! thread (`sender.rs`) encodes each event once, batches it per endpoint,
//! signs each body (`sign.rs`) and POSTs it with a small blocking HTTP/1.1
//! client (`client.rs`), retrying with exponential backoff and jitter. Every
//! buffer, retry, request and body is bounded by `[webhook_limits]`.
//!
//! The thread stops when every handle is gone (the channel disconnects):
//! it then gives what it still holds one last attempt per endpoint.

mod client;
mod sender;
pub mod sign;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use crate::config::WebhookEventKind;
use crate::config::{WebhookConfig, WebhookLimits};
use crate::metrics::WebhookStats;

pub use client::{PostError, post};

/// Name of the signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Roomcast-Signature";
/// Name of the header with the send time (Unix ms, also `sent_at_ms` in the body).
pub const TIMESTAMP_HEADER: &str = "X-Roomcast-Timestamp";
/// Name of the header with the attempt number (1 for the first POST of a batch).
pub const ATTEMPT_HEADER: &str = "X-Roomcast-Attempt";

/// One room event, as plain owned data: built by its source (a shard),
/// moved through the queue, encoded to JSON on the webhook thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// When it happened, Unix ms.
    pub ts_ms: u64,
    /// The connection, as the server logs it.
    pub conn: String,
    pub user: String,
    pub tenant: Option<String>,
    /// The room (for a connect: the room in the URL, if any).
    pub room: Option<String>,
    pub detail: WebhookDetail,
}

/// What is particular to each kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookDetail {
    Connect {
        peer: Option<SocketAddr>,
    },
    /// The WebSocket close code and its reason (roomcast's own, or the peer's).
    Disconnect {
        close_code: u16,
        close_reason: String,
    },
    Join,
    Leave,
    Chat {
        chat_id: String,
        text: String,
    },
}

impl WebhookEvent {
    pub fn kind(&self) -> WebhookEventKind {
        match self.detail {
            WebhookDetail::Connect { .. } => WebhookEventKind::Connect,
            WebhookDetail::Disconnect { .. } => WebhookEventKind::Disconnect,
            WebhookDetail::Join => WebhookEventKind::Join,
            WebhookDetail::Leave => WebhookEventKind::Leave,
            WebhookDetail::Chat { .. } => WebhookEventKind::Chat,
        }
    }
}

/// An event on its way to the thread, with the endpoints that want it.
struct Queued {
    /// Bit `i` set: endpoint `i` gets it.
    endpoints: u32,
    event: WebhookEvent,
}

/// The counters shared by the handles and the thread. The handles touch
/// only `dropped_queue_full`, and only when the queue is full.
#[derive(Debug, Default)]
struct Counters {
    events_sent: AtomicU64,
    batches_sent: AtomicU64,
    attempts_failed: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_retries: AtomicU64,
    dropped_too_large: AtomicU64,
    dropped_shutdown: AtomicU64,
    batches_dropped: AtomicU64,
    /// Events the endpoints hold unsent (pending and in retry), set by the thread.
    held: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Which endpoints want each kind, indexed like `WebhookEventKind::ALL`.
type Routes = [u32; WebhookEventKind::ALL.len()];

fn kind_index(kind: WebhookEventKind) -> usize {
    kind as usize
}

/// The sending side: cheap to clone, one per thread that reports events.
#[derive(Debug, Clone)]
pub struct WebhookHandle {
    queue: Sender<Queued>,
    routes: Routes,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl WebhookHandle {
    /// Whether any endpoint wants events of `kind`: a caller checks it before
    /// building an event, so unwanted kinds cost nothing.
    pub fn wants(&self, kind: WebhookEventKind) -> bool {
        self.routes[kind_index(kind)] != 0
    }

    /// Queues `event` for the endpoints that want its kind, without blocking.
    /// A full queue drops it (counted once per endpoint that wanted it).
    pub fn notify(&self, event: WebhookEvent) {
        let endpoints = self.routes[kind_index(event.kind())];
        if endpoints == 0 {
            return;
        }
        match self.queue.try_send(Queued { endpoints, event }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                Counters::add(&self.counters.dropped_queue_full, u64::from(endpoints.count_ones()));
            }
            // The thread is gone (shutting down): nothing can be sent any more.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The reading side for `/metrics`: the counters and the queue's length.
#[derive(Debug, Clone)]
pub struct WebhookMonitor {
    // A receiver clone reads the queue's length; it never receives, and the
    // channel still disconnects when the last handle is dropped.
    queue: Receiver<Queued>,
    queue_max: usize,
    counters: Arc<Counters>,
}

impl WebhookMonitor {
    pub fn snapshot(&self) -> WebhookStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WebhookStats {
            events_sent: get(&c.events_sent),
            batches_sent: get(&c.batches_sent),
            attempts_failed: get(&c.attempts_failed),
            events_dropped_queue_full: get(&c.dropped_queue_full),
            events_dropped_retries: get(&c.dropped_retries),
            events_dropped_too_large: get(&c.dropped_too_large),
            events_dropped_shutdown: get(&c.dropped_shutdown),
            batches_dropped: get(&c.batches_dropped),
            queue_depth: self.queue.len() as u64 + get(&c.held),
            queue_max: self.queue_max as u64,
        }
    }
}

/// The running webhook thread.
#[derive(Debug)]
pub struct Webhooks {
    handle: WebhookHandle,
    monitor: WebhookMonitor,
    thread: JoinHandle<()>,
}

impl Webhooks {
    /// Starts the webhook thread for `webhooks`, or nothing (`None`) when
    /// there is none configured. The configs are validated ones (see
    /// `config::WebhookConfig`); at most 32 endpoints fit the routing mask.
    pub fn start(webhooks: &[WebhookConfig], limits: &WebhookLimits) -> io::Result<Option<Webhooks>> {
        if webhooks.is_empty() {
            return Ok(None);
        }
        if webhooks.len() > u32::BITS as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than 32 webhooks"));
        }
        let mut routes: Routes = [0; WebhookEventKind::ALL.len()];
        for (i, webhook) in webhooks.iter().enumerate() {
            for &kind in &webhook.events {
                routes[kind_index(kind)] |= 1 << i;
            }
        }
        let (queue, rx) = crossbeam_channel::bounded(limits.queue_max);
        let counters = Arc::new(Counters::default());
        let monitor =
            WebhookMonitor { queue: rx.clone(), queue_max: limits.queue_max, counters: Arc::clone(&counters) };
        let thread = sender::spawn(rx, webhooks, limits, Arc::clone(&counters))?;
        Ok(Some(Webhooks { handle: WebhookHandle { queue, routes, counters }, monitor, thread }))
    }

    /// A handle for a thread that reports events.
    pub fn handle(&self) -> WebhookHandle {
        self.handle.clone()
    }

    pub fn monitor(&self) -> WebhookMonitor {
        self.monitor.clone()
    }

    /// Drops this handle and waits for the thread. It ends once every other
    /// handle is dropped too, after one last attempt to send what it holds
    /// (bounded by the endpoints' timeouts), so stop the event sources first.
    pub fn stop(self) {
        let Webhooks { handle, monitor, thread } = self;
        drop(handle);
        drop(monitor);
        if thread.join().is_err() {
            tracing::error!("the webhook thread panicked");
        }
    }
}

#[cfg(test)]
mod tests;
