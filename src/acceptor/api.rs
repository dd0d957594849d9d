//! HTTP API requests on the acceptor: routing and access checks, the body,
//! then either an answer at once (`http_api::handle`) or a scatter: the
//! request goes to the shards' admin inboxes (or the store's queue) with a
//! ticket, the connection waits in `Awaiting`, and the replies are gathered
//! here as they arrive. At most `API_AWAITING_MAX` requests wait at once;
//! each waits at most its pending deadline (then 503 `timeout`).

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use super::accept::Listener;
use super::announce::{self, ANNOUNCEMENTS_PER_TURN, Announcement};
use super::pending::PendingState;
use super::{Acceptor, unix_now_s};
use crate::cluster::ClusterMonitor;
use crate::http::RequestHead;
use crate::http_api::{self, Access, ApiError, Endpoint, Gather, Outcome, Targets};
use crate::metrics::{ClusterGauges, Gauges, LimitKind};
use crate::msg::ClusterOut;
use crate::revocation::Reason;
use crate::shard::{AdminQuery, AdminReply, AdminRequest, ShardHandle};
use crate::store::{QueryRequest, StoreEvent, StoreGauges, StoreMonitor, StoreQuery};
use crate::webhooks::WebhookMonitor;

/// HTTP API requests waiting for shard replies at once; more get 503 `busy`.
const API_AWAITING_MAX: usize = 64;

/// The ticket of requests another node announced: no HTTP request waits
/// for their answers (pending generations count up from 0 and never get here).
const ANNOUNCED: u64 = u64::MAX - 1;

/// The HTTP API's own state.
pub(super) struct ApiState {
    /// The HS secret `POST /api/v1/tokens` signs with; `None` in dev mode.
    mint_secret: Option<Vec<u8>>,
    /// Replies of the shards (and the store) to API requests, and the
    /// sender they get a clone of.
    replies: Receiver<AdminReply>,
    reply_tx: Sender<AdminReply>,
    /// Ticket of each API request waiting for shards → its pending slot.
    awaiting: HashMap<u64, usize>,
    /// This thread's waker, sent with every request so that its answer wakes the loop.
    waker: Arc<Waker>,
    /// The store thread's queue, for HTTP API reads; `None` with `--no-store`.
    store: Option<Sender<StoreEvent>>,
    /// The store thread's figures, for /metrics; `None` with `--no-store`.
    store_monitor: Option<StoreMonitor>,
    /// The webhook thread's figures, for /metrics; `None` with no `[[webhooks]]`.
    pub(super) webhook_monitor: Option<WebhookMonitor>,
    /// The cluster bridge's figures and link state; `None` without `cluster.redis`.
    pub(super) cluster_monitor: Option<ClusterMonitor>,
    /// The bridge's queue: admin requests every node runs (`announce`).
    pub(super) cluster: Option<Sender<ClusterOut>>,
    /// Other nodes' such requests, for this node to run.
    pub(super) announcements: Option<Receiver<Vec<u8>>>,
}

impl ApiState {
    pub(super) fn new(
        mint_secret: Option<Vec<u8>>,
        waker: Arc<Waker>,
        store: Option<Sender<StoreEvent>>,
        store_monitor: Option<StoreMonitor>,
        shard_count: usize,
    ) -> ApiState {
        // Every awaiting request expects at most one reply per shard; twice
        // that leaves room for late replies to requests that timed out.
        let (reply_tx, replies) = crossbeam_channel::bounded(2 * API_AWAITING_MAX * shard_count.max(1));
        ApiState {
            mint_secret,
            replies,
            reply_tx,
            awaiting: HashMap::new(),
            waker,
            store,
            store_monitor,
            webhook_monitor: None,
            cluster_monitor: None,
            cluster: None,
            announcements: None,
        }
    }

    /// One shard's copy of an admin query, answered to this loop.
    pub(super) fn admin_request(&self, ticket: u64, query: &Arc<AdminQuery>) -> AdminRequest {
        AdminRequest { ticket, query: Arc::clone(query), reply: self.reply_tx.clone(), waker: Arc::clone(&self.waker) }
    }

    /// The request with `ticket` waits in pending `slot`.
    pub(super) fn wait_for(&mut self, ticket: u64, slot: usize) {
        self.awaiting.insert(ticket, slot);
    }

    /// The request with `ticket` waits no more (answered, timed out or closed).
    pub(super) fn forget(&mut self, ticket: u64) {
        self.awaiting.remove(&ticket);
    }
}

impl Acceptor {
    /// Routes an HTTP API request, checks its key, and reads its body.
    pub(super) fn api_request(&mut self, slot: usize, head: RequestHead, mut leftover: Vec<u8>) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let listener = pending.listener;
        let endpoint = match http_api::route(&head.method, &head.path) {
            Ok(endpoint) => endpoint,
            Err(e) => return self.respond_api_error(slot, &e),
        };
        // With a separate admin listener the main listener is public: admin
        // paths do not exist there, and the admin key opens nothing.
        let public = listener == Listener::Main && self.listeners.has_admin();
        if public && endpoint.admin_surface() {
            return self.respond_api_error(slot, &ApiError::new(404, "not_found", "unknown path"));
        }
        let access = match endpoint.access() {
            Access::AdminOrTenant if public => Access::Tenant,
            access => access,
        };
        let tenant = match http_api::authorize(&self.config, access, &head) {
            Ok(tenant) => tenant,
            Err(e) => return self.respond_api_error(slot, &e),
        };
        if !endpoint.takes_body() {
            return self.api_dispatch(slot, &endpoint, tenant, &head, &[]);
        }
        let len = match http_api::body_length(&head, self.config.api.body_bytes_max) {
            Ok(len) => len,
            Err(e) => {
                if e.status == 413 {
                    self.counters.hit(LimitKind::BodyTooBig);
                }
                return self.respond_api_error(slot, &e);
            }
        };
        if leftover.len() >= len {
            return self.api_dispatch(slot, &endpoint, tenant, &head, &leftover[..len]);
        }
        leftover.reserve_exact(len - leftover.len());
        pending.head = leftover;
        pending.state = PendingState::ReadingBody { request: Box::new(head), endpoint, tenant, len };
        // The head read may have stopped at its cap rather than at WouldBlock:
        // read on now, as no new readiness edge may come for bytes already here.
        self.read_head(slot);
    }

    /// Answers an API request, or scatters it to the shards.
    pub(super) fn api_dispatch(
        &mut self,
        slot: usize,
        endpoint: &Endpoint,
        tenant: Option<String>,
        head: &RequestHead,
        body: &[u8],
    ) {
        if matches!(endpoint, Endpoint::Metrics | Endpoint::Stats) {
            self.counters.take_snapshots();
            self.counters.acceptor.registry_rooms = self.registry.rooms.len() as u64;
        }
        let ctx = self.api_context(tenant);
        let outcome = http_api::handle(&ctx, endpoint, head, body);
        let limit_hit = ctx.limit_hit.get();
        if let Some(kind) = limit_hit {
            self.counters.hit(kind);
        }
        match outcome {
            Err(e) if e.code == "busy" => self.respond_busy(slot, &e),
            Err(e) => {
                if e.code == "registry_full" {
                    self.counters.hit(LimitKind::RegistryFull);
                }
                self.respond_api_error(slot, &e)
            }
            Ok(outcome) => self.carry_out(slot, outcome),
        }
    }

    /// What an API handler sees of the server.
    fn api_context(&self, tenant: Option<String>) -> http_api::Context<'_> {
        http_api::Context {
            config: &self.config,
            mint_secret: self.api.mint_secret.as_deref(),
            shards: &self.counters.shards,
            acceptor: &self.counters.acceptor,
            gauges: Gauges {
                inbox_depths: self.shards.handles.iter().map(ShardHandle::inbox_len).collect(),
                uptime_s: self.counters.started.elapsed().as_secs(),
                draining: self.draining,
                store: self.api.store_monitor.as_ref().map(|monitor| StoreGauges {
                    queue_depth: self.api.store.as_ref().map_or(0, Sender::len),
                    queue_max: self.config.store.queue_max,
                    stats: monitor.snapshot(),
                }),
                revocations: self.tokens.revoked.metrics(),
                webhooks: self.api.webhook_monitor.as_ref().map(WebhookMonitor::snapshot),
                cluster: self.api.cluster_monitor.as_ref().map(|monitor| {
                    let mut stats = monitor.snapshot();
                    stats.remote_members = self.counters.shards.iter().map(|m| m.remote_members).sum();
                    ClusterGauges { node_id: monitor.node_id().to_owned(), stats }
                }),
            },
            tenant,
            now_unix_s: unix_now_s(),
            registry_full: !self.registry.rooms.has_room_for_one_more(),
            registry_behind: self.registry.full(),
            limit_hit: std::cell::Cell::new(None),
        }
    }

    /// Does what a handler decided: respond, scatter, ask the store, revoke or drain.
    fn carry_out(&mut self, slot: usize, outcome: Outcome) {
        match outcome {
            Outcome::Respond(status, response) => self.respond(slot, status, "ok", response),
            Outcome::Scatter { query, targets, gather } => self.scatter_everywhere(slot, query, targets, gather),
            Outcome::Store { request, gather } => self.store_query(slot, request, gather),
            Outcome::Revoke { jti, expires_s, response } => {
                let now_ms = unix_now_s().saturating_mul(1000);
                match self.tokens.revoked.add(&jti, expires_s, Reason::Revoked, now_ms) {
                    Ok(()) => {
                        tracing::info!(jti, expires_s, "token revoked through the HTTP API");
                        if self.api.cluster.is_some() && !self.announce(slot, announce::encode_revoke(&jti, expires_s))
                        {
                            return;
                        }
                        self.respond(slot, 200, "ok", response);
                    }
                    Err(full) => self.respond_api_error(slot, &full.api_error()),
                }
            }
            Outcome::StartDrain => {
                if !self.draining {
                    tracing::info!("drain requested through the HTTP API");
                }
                self.draining = true;
                self.scatter(slot, AdminQuery::Drain, Targets::All, Gather::Drained);
            }
        }
    }

    /// In a cluster, announces what every node runs too (`announce`) before
    /// scattering it to this node's shards; a connection of another node is
    /// left to that node (202).
    fn scatter_everywhere(&mut self, slot: usize, query: AdminQuery, targets: Targets, mut gather: Gather) {
        let text = self.api.cluster.as_ref().and_then(|_| announce::encode_query(&query));
        let announced = text.is_some();
        if let Some(text) = text
            && !self.announce(slot, text)
        {
            return;
        }
        match targets {
            Targets::Node(node) if announced => {
                let body = serde_json::json!({ "forwarded": true, "node": node }).to_string();
                self.respond(slot, 202, "ok", crate::http::response(202, "application/json", "", body.as_bytes()))
            }
            Targets::Node(_) => {
                let gone = ApiError::new(404, "not_found", "no open connection with that id");
                self.respond_api_error(slot, &gone)
            }
            _ => {
                if let Gather::Closed { announced: closed_elsewhere } = &mut gather {
                    *closed_elsewhere = announced;
                }
                self.scatter(slot, query, targets, gather)
            }
        }
    }

    /// Queues `text` for the other nodes of the cluster; when the bridge's
    /// queue is full, answers 503 `busy` (nothing was done anywhere) and
    /// says false.
    fn announce(&mut self, slot: usize, text: Vec<u8>) -> bool {
        let Some(cluster) = &self.api.cluster else { return true };
        if cluster.try_send(ClusterOut::Announce(text)).is_ok() {
            return true;
        }
        self.counters.hit(LimitKind::ClusterQueueFull);
        let busy = ApiError::new(503, "busy", "the queue to the other nodes of the cluster is full; try again");
        self.respond_busy(slot, &busy);
        false
    }

    /// Runs what other nodes announced (`announce`) on this node's shards,
    /// at most `ANNOUNCEMENTS_PER_TURN` an iteration; nobody waits for the
    /// shards' answers. A full admin inbox drops that shard's part, counted
    /// as `api_busy`.
    pub(super) fn run_announcements(&mut self) {
        let Some(announcements) = &self.api.announcements else { return };
        let taken: Vec<Vec<u8>> = announcements.try_iter().take(ANNOUNCEMENTS_PER_TURN).collect();
        if taken.len() == ANNOUNCEMENTS_PER_TURN {
            // More may wait: come back soon even if nothing else happens.
            let _ = self.api.waker.wake();
        }
        for text in taken {
            let (query, shards) = match announce::decode(&text) {
                Some(Announcement::Query(query)) => (query, (0..self.shards.len()).collect()),
                Some(Announcement::QueryOne(query, shard)) => (query, vec![usize::from(shard)]),
                Some(Announcement::Revoke { jti, expires_s }) => {
                    let now_ms = unix_now_s().saturating_mul(1000);
                    // A full set counts and logs the refusal itself.
                    let _ = self.tokens.revoked.add(&jti, expires_s, Reason::Revoked, now_ms);
                    continue;
                }
                None => continue,
            };
            let query = Arc::new(query);
            for shard in shards {
                let request = self.api.admin_request(ANNOUNCED, &query);
                if self.shards.try_admin(shard, request).is_err() {
                    self.counters.hit(LimitKind::ApiBusy);
                }
            }
        }
    }

    /// Sends `query` to the target shards; the replies are gathered in `take_api_replies`.
    fn scatter(&mut self, slot: usize, query: AdminQuery, targets: Targets, gather: Gather) {
        if self.api.awaiting.len() >= API_AWAITING_MAX {
            let busy = ApiError::new(503, "busy", "too many API requests in flight; try again");
            return self.respond_busy(slot, &busy);
        }
        let Some(pending) = self.pending.get(slot) else { return };
        let ticket = pending.generation;
        let query = Arc::new(query);
        let shards: Vec<usize> = match targets {
            Targets::All => (0..self.shards.len()).collect(),
            Targets::One(shard) => vec![shard as usize],
            Targets::Node(_) => Vec::new(),
        };
        let mut sent = 0;
        let mut incomplete = false;
        for shard in shards {
            let request = self.api.admin_request(ticket, &query);
            match self.shards.try_admin(shard, request) {
                Ok(()) => sent += 1,
                Err(_) => incomplete = true,
            }
        }
        if sent == 0 {
            let busy = ApiError::new(503, "busy", "the shards' admin inboxes are full; try again");
            return self.respond_busy(slot, &busy);
        }
        self.api.wait_for(ticket, slot);
        if let Some(pending) = self.pending.get_mut(slot) {
            pending.head = Vec::new();
            let answers = Vec::with_capacity(sent);
            pending.state = PendingState::Awaiting { ticket, gather, remaining: sent, answers, incomplete };
        }
    }

    /// Sends an HTTP API read to the store thread and waits for its one reply
    /// in `Awaiting`, like a scatter to one shard (same cap, same deadline):
    /// the store answers on the API reply channel and wakes this loop.
    fn store_query(&mut self, slot: usize, request: QueryRequest, gather: Gather) {
        let Some(store) = &self.api.store else {
            let off = ApiError::new(501, "not_implemented", "this needs the store; the server runs with --no-store");
            return self.respond_api_error(slot, &off);
        };
        if self.api.awaiting.len() >= API_AWAITING_MAX {
            let busy = ApiError::new(503, "busy", "too many API requests in flight; try again");
            return self.respond_busy(slot, &busy);
        }
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let ticket = pending.generation;
        let query = StoreQuery {
            ticket,
            request,
            reply: crate::msg::Reply::new(self.api.reply_tx.clone(), Arc::clone(&self.api.waker)),
        };
        if store.try_send(StoreEvent::Query(Box::new(query))).is_err() {
            let busy = ApiError::new(503, "busy", "the store's queue is full; try again");
            return self.respond_busy(slot, &busy);
        }
        pending.head = Vec::new();
        pending.state =
            PendingState::Awaiting { ticket, gather, remaining: 1, answers: Vec::with_capacity(1), incomplete: false };
        self.api.wait_for(ticket, slot);
    }

    /// Collects the shards' replies; a request answered by every shard it
    /// asked gets its response.
    pub(super) fn take_api_replies(&mut self) {
        while let Ok(reply) = self.api.replies.try_recv() {
            let Some(&slot) = self.api.awaiting.get(&reply.ticket) else { continue }; // timed out
            let Some(pending) = self.pending.get_mut(slot) else { continue };
            let PendingState::Awaiting { remaining, answers, .. } = &mut pending.state else { continue };
            answers.push(reply.answer);
            *remaining -= 1;
            if *remaining > 0 {
                continue;
            }
            self.api.forget(reply.ticket);
            let state = std::mem::replace(&mut pending.state, PendingState::ReadingHead);
            let PendingState::Awaiting { gather, answers, incomplete, .. } = state else { continue };
            if incomplete {
                let busy = ApiError::new(503, "busy", "a shard's admin inbox was full; the answer would be partial");
                self.respond_busy(slot, &busy);
                continue;
            }
            let change = match &gather {
                Gather::Registry(op) => http_api::registry_change(op, &answers),
                _ => None,
            };
            let (status, response) = http_api::finish(&gather, answers);
            match change {
                Some((key, policy)) => self.apply_registry_change(slot, key, policy, status, response),
                None => self.respond(slot, status, "ok", response),
            }
        }
    }

    pub(super) fn respond_api_error(&mut self, slot: usize, error: &ApiError) {
        self.respond(slot, error.status, error.code, error.response());
    }

    /// A `503 busy`: one of the HTTP API's constant bounds (64 waiting
    /// requests, a shard's admin inbox, the store's queue) is full.
    pub(super) fn respond_busy(&mut self, slot: usize, error: &ApiError) {
        self.counters.hit(LimitKind::ApiBusy);
        self.respond_api_error(slot, error);
    }
}
