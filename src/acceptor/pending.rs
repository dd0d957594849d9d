//! Connections before their handoff: the pending table (a slab of
//! connections plus one FIFO of deadlines), reading the request head (and an
//! API request's body) under a byte cap, writing the one HTTP response a
//! refused or API connection gets, and the deadlines.
//!
//! Every entry gets the same timeout (`limits.handshake_timeout_ms`) when it
//! is inserted, so deadlines are in insertion order and a FIFO replaces a
//! timer structure; an entry carries its slot's generation so that a
//! deadline left behind by a freed slot is told from the slot's next user.
//! Policies on who may hold a slot and for how long belong in
//! [`PendingTable`], which every insertion and expiry goes through: it
//! counts each budget (public, admin) and each source address, says whom to
//! evict at a full budget (`guard.rs` decides what to do about it), and keeps
//! a second FIFO of head deadlines, counted from each head's first byte.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use slab::Slab;

use super::Acceptor;
use super::accept::Listener;
use super::guard::{Admission, Budget, Shed, source_key};
use crate::config::Limits;
use crate::http::{self, HeadError, RequestHead};
use crate::http_api::{ApiError, Endpoint, Gather};
use crate::metrics::LimitKind;
use crate::shard::AdminAnswer;

/// Which metrics family a connection's response is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// Not known until the head is read: a head that cannot be read (too
    /// big, malformed, too slow) counts as a failed handshake.
    Unknown,
    /// `/ws/…` on the main listener, or the echo listener.
    WebSocket,
    /// Any other request: `roomcast_http_responses_total`.
    Api,
}

/// A connection before its handoff.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) stream: TcpStream,
    pub(super) listener: Listener,
    pub(super) family: Family,
    /// Its deadline passed once already (it is writing the 408 or 503 `timeout`).
    pub(super) timed_out: bool,
    /// The address `accept` gave (handed to the shard for the session audit).
    pub(super) peer: Option<SocketAddr>,
    /// Request head bytes so far; never more than `handshake_head_bytes_max`.
    pub(super) head: Vec<u8>,
    pub(super) state: PendingState,
    /// Tells this connection's deadline entry from a later one in the same
    /// slot; also the ticket of its HTTP API request.
    pub(super) generation: u64,
    /// The source address it is counted under (public listeners only).
    source: Option<IpAddr>,
    /// When its first byte arrived; the head deadline and the rate count from it.
    first_byte_at: Option<Instant>,
    /// Request bytes read so far (head and body).
    received: u64,
}

#[derive(Debug)]
pub(super) enum PendingState {
    ReadingHead,
    /// An API request whose body (`len` bytes, gathered in `head`) is still arriving.
    ReadingBody {
        request: Box<RequestHead>,
        endpoint: Endpoint,
        tenant: Option<String>,
        len: usize,
    },
    /// Waiting for `remaining` shards to answer an API request.
    Awaiting {
        ticket: u64,
        gather: Gather,
        remaining: usize,
        answers: Vec<AdminAnswer>,
        /// A shard's admin inbox was full: the answer would be partial.
        incomplete: bool,
    },
    /// Writing an HTTP response; the connection closes after it.
    Responding {
        response: Vec<u8>,
        written: usize,
    },
}

/// Pending connections the admin listener holds, apart from
/// `limits.handshakes_pending_max`: its own budget, which a flood on the
/// public listeners cannot take.
pub(super) const ADMIN_PENDING_MAX: usize = 64;

/// How long a head may take before its rate is judged.
const RATE_GRACE: Duration = Duration::from_secs(1);

/// Deadline entries each FIFO keeps room for once the table is empty again;
/// past four times this, what a connect storm grew it to is given back.
const DEADLINES_KEPT: usize = 256;

/// The pending connections and their deadlines. Slot numbers are the
/// connections' poll tokens.
pub(super) struct PendingTable {
    slots: Slab<Pending>,
    /// `(deadline, slot, generation)`, oldest first.
    deadlines: VecDeque<(Instant, usize, u64)>,
    /// Head deadlines, from each head's first byte: `(deadline, slot, generation)`, oldest first.
    head_deadlines: VecDeque<(Instant, usize, u64)>,
    next_generation: u64,
    /// Connections held per budget, and `limits.handshakes_pending_max`.
    public_len: usize,
    admin_len: usize,
    max: usize,
    /// Public connections held per source address, and `limits.handshakes_pending_per_ip_max`.
    per_source: HashMap<IpAddr, u32>,
    per_source_max: u32,
    /// `limits.handshake_timeout_ms`.
    timeout: Duration,
    /// `limits.handshake_head_deadline_ms`.
    head_deadline: Duration,
    /// `limits.handshake_bytes_per_s_min`.
    bytes_per_s_min: u64,
}

impl PendingTable {
    pub(super) fn new(limits: &Limits) -> PendingTable {
        let max = limits.handshakes_pending_max as usize;
        PendingTable {
            slots: Slab::with_capacity(max + ADMIN_PENDING_MAX),
            deadlines: VecDeque::with_capacity(DEADLINES_KEPT),
            head_deadlines: VecDeque::with_capacity(DEADLINES_KEPT),
            next_generation: 0,
            public_len: 0,
            admin_len: 0,
            max,
            per_source: HashMap::new(),
            per_source_max: limits.handshakes_pending_per_ip_max,
            timeout: Duration::from_millis(u64::from(limits.handshake_timeout_ms)),
            head_deadline: Duration::from_millis(u64::from(limits.handshake_head_deadline_ms)),
            bytes_per_s_min: u64::from(limits.handshake_bytes_per_s_min),
        }
    }

    /// Pending connections held by the public listeners.
    pub(super) fn public_len(&self) -> usize {
        self.public_len
    }

    /// Whether a connection just accepted on `listener` from `peer` may take
    /// a slot, and what must make room for it.
    pub(super) fn admission(&mut self, listener: Listener, peer: Option<SocketAddr>) -> Admission {
        let budget = Budget::of(listener);
        if budget == Budget::Public
            && let Some(source) = peer.map(|peer| source_key(peer.ip()))
            && self.per_source.get(&source).is_some_and(|&n| n >= self.per_source_max)
        {
            return Admission::PerSourceFull;
        }
        let (held, max) = match budget {
            Budget::Public => (self.public_len, self.max),
            Budget::Admin => (self.admin_len, ADMIN_PENDING_MAX),
        };
        if held < max {
            return Admission::Admit;
        }
        self.oldest_evictable(budget).map_or(Admission::Full, Admission::Evict)
    }

    /// The oldest connection of `budget` that may be closed to make room:
    /// any but a request waiting for shards (at most 64 of those, so one is
    /// found unless the budget is tiny).
    fn oldest_evictable(&mut self, budget: Budget) -> Option<usize> {
        // Entries of freed slots at the front are of no further use.
        while let Some(&(_, slot, generation)) = self.deadlines.front() {
            if self.slots.get(slot).is_some_and(|p| p.generation == generation) {
                break;
            }
            self.deadlines.pop_front();
        }
        self.deadlines.iter().find_map(|&(_, slot, generation)| {
            let pending = self.slots.get(slot)?;
            let evictable = pending.generation == generation
                && Budget::of(pending.listener) == budget
                && !matches!(pending.state, PendingState::Awaiting { .. });
            evictable.then_some(slot)
        })
    }

    /// The slot the next `insert` takes, to register its socket under first.
    pub(super) fn next_slot(&self) -> usize {
        self.slots.vacant_key()
    }

    /// Adds a registered connection with a fresh deadline; returns its slot.
    pub(super) fn insert(
        &mut self,
        stream: TcpStream,
        listener: Listener,
        family: Family,
        peer: Option<SocketAddr>,
        state: PendingState,
    ) -> usize {
        self.next_generation += 1;
        let generation = self.next_generation;
        let budget = Budget::of(listener);
        let source = match budget {
            Budget::Public => peer.map(|peer| source_key(peer.ip())),
            Budget::Admin => None,
        };
        match budget {
            Budget::Public => self.public_len += 1,
            Budget::Admin => self.admin_len += 1,
        }
        if let Some(source) = source {
            *self.per_source.entry(source).or_default() += 1;
        }
        let slot = self.slots.insert(Pending {
            stream,
            listener,
            family,
            timed_out: false,
            peer,
            head: Vec::new(),
            state,
            generation,
            source,
            first_byte_at: None,
            received: 0,
        });
        self.deadlines.push_back((Instant::now() + self.timeout, slot, generation));
        slot
    }

    pub(super) fn get(&self, slot: usize) -> Option<&Pending> {
        self.slots.get(slot)
    }

    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut Pending> {
        self.slots.get_mut(slot)
    }

    /// Takes the connection out (handed off or closed); its deadline entry
    /// is skipped when it comes up.
    pub(super) fn remove(&mut self, slot: usize) -> Option<Pending> {
        let pending = self.slots.try_remove(slot)?;
        match Budget::of(pending.listener) {
            Budget::Public => self.public_len -= 1,
            Budget::Admin => self.admin_len -= 1,
        }
        if let Some(source) = pending.source
            && let Some(held) = self.per_source.get_mut(&source)
        {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(&source);
            }
        }
        if self.slots.is_empty() {
            self.forget_deadlines();
        }
        Some(pending)
    }

    /// With no connection pending, every deadline entry left is a freed
    /// slot's: drop them, and give back the capacity a storm left in the
    /// FIFOs (every accept adds an entry that stays until its deadline, so
    /// they grow to the accept rate × `handshake_timeout_ms`). Checked when
    /// the table empties, not per accept; a shrink happens once per storm.
    fn forget_deadlines(&mut self) {
        for fifo in [&mut self.deadlines, &mut self.head_deadlines] {
            fifo.clear();
            if fifo.capacity() > 4 * DEADLINES_KEPT {
                fifo.shrink_to(DEADLINES_KEPT);
            }
        }
    }

    /// The earlier of the next deadline and the next head deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let next = self.deadlines.front().map(|&(at, _, _)| at);
        let next_head = self.head_deadlines.front().map(|&(at, _, _)| at);
        match (next, next_head) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Notes `n` request bytes read into `slot` at `now`; the first starts
    /// its head deadline.
    pub(super) fn received(&mut self, slot: usize, n: usize, now: Instant) {
        let Some(pending) = self.slots.get_mut(slot) else { return };
        pending.received += n as u64;
        if pending.first_byte_at.is_none() {
            pending.first_byte_at = Some(now);
            self.head_deadlines.push_back((now + self.head_deadline, slot, pending.generation));
        }
    }

    /// Whether `slot`'s request, still incomplete, has arrived too slowly:
    /// under `limits.handshake_bytes_per_s_min` on average since its first
    /// byte, once `RATE_GRACE` has passed.
    pub(super) fn too_slow(&self, slot: usize, now: Instant) -> bool {
        let Some(pending) = self.slots.get(slot) else { return false };
        let Some(first) = pending.first_byte_at else { return false };
        let elapsed = now.saturating_duration_since(first);
        elapsed >= RATE_GRACE
            && u128::from(pending.received) * 1000 < u128::from(self.bytes_per_s_min) * elapsed.as_millis()
    }

    /// The slot of the next connection whose head deadline passed at `now`
    /// while it was still reading its head; `None` once there is none.
    pub(super) fn next_head_expired(&mut self, now: Instant) -> Option<usize> {
        while let Some(&(at, slot, generation)) = self.head_deadlines.front() {
            if at > now {
                return None;
            }
            self.head_deadlines.pop_front();
            let reading = |p: &Pending| p.generation == generation && matches!(p.state, PendingState::ReadingHead);
            if self.slots.get(slot).is_some_and(reading) {
                return Some(slot);
            }
        }
        None
    }

    /// The slot of the next connection whose deadline passed at `now`;
    /// `None` once no deadline has passed.
    pub(super) fn next_expired(&mut self, now: Instant) -> Option<usize> {
        while let Some(&(at, slot, generation)) = self.deadlines.front() {
            if at > now {
                return None;
            }
            self.deadlines.pop_front();
            if self.slots.get(slot).is_some_and(|p| p.generation == generation) {
                return Some(slot);
            }
        }
        None
    }

    /// A fresh deadline for `slot` from `now`, for writing its last response.
    pub(super) fn renew_deadline(&mut self, slot: usize, now: Instant) {
        if let Some(pending) = self.slots.get(slot) {
            self.deadlines.push_back((now + self.timeout, slot, pending.generation));
        }
    }
}

impl Acceptor {
    pub(super) fn on_pending(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        match pending.state {
            PendingState::ReadingHead | PendingState::ReadingBody { .. } => self.read_head(slot),
            PendingState::Responding { .. } => self.write_response(slot),
            // Nothing more is read until the answer is out.
            PendingState::Awaiting { .. } => {}
        }
    }

    /// Reads the request head, or (`ReadingBody`) an API request's body.
    pub(super) fn read_head(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let (head_max, body) = match pending.state {
            PendingState::ReadingBody { len, .. } => (len, true),
            _ => (self.config.limits.handshake_head_bytes_max, false),
        };
        let mut chunk = [0u8; 4096];
        let mut read = 0;
        loop {
            let room = head_max.saturating_sub(pending.head.len());
            if room == 0 && body {
                break;
            }
            if room == 0 {
                // A complete head followed by body bytes filled the buffer:
                // the rest of the body is read in `ReadingBody`.
                if matches!(http::parse_head(&pending.head), Ok(Some(_))) {
                    break;
                }
                self.counters.hit(LimitKind::HeadTooBig);
                self.respond_error(slot, 431, "headers_too_large", "request head over handshake_head_bytes_max", "");
                return;
            }
            let limit = room.min(chunk.len());
            match pending.stream.read(&mut chunk[..limit]) {
                Ok(0) => {
                    self.close_pending(slot);
                    return;
                }
                Ok(n) => {
                    pending.head.extend_from_slice(&chunk[..n]);
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_pending(slot);
                    return;
                }
            }
        }
        let now = Instant::now();
        if read > 0 {
            self.pending.received(slot, read, now);
        }
        let Some(pending) = self.pending.get_mut(slot) else { return };
        if body {
            if pending.head.len() >= head_max {
                let state = std::mem::replace(&mut pending.state, PendingState::ReadingHead);
                let body = std::mem::take(&mut pending.head);
                if let PendingState::ReadingBody { request, endpoint, tenant, .. } = state {
                    self.api_dispatch(slot, &endpoint, tenant, &request, &body);
                }
            } else if self.pending.too_slow(slot, now) {
                self.answer_late(slot, now, Shed::TooSlow);
            }
            return;
        }
        match http::parse_head(&pending.head) {
            Ok(None) => {
                if self.pending.too_slow(slot, now) {
                    self.answer_late(slot, now, Shed::TooSlow);
                }
            }
            Ok(Some((head, len))) => {
                let leftover = pending.head[len..].to_vec();
                self.route(slot, head, leftover);
            }
            Err(HeadError::TooLarge) => {
                self.counters.hit(LimitKind::HeadTooBig);
                self.respond_error(slot, 431, "headers_too_large", "too many request headers", "")
            }
            Err(HeadError::Malformed) => self.respond_error(slot, 400, "bad_request", "malformed HTTP request", ""),
            Err(HeadError::Version) => self.refuse_version(slot),
        }
    }

    pub(super) fn respond_error(
        &mut self,
        slot: usize,
        status: u16,
        code: &'static str,
        message: &str,
        extra_headers: &str,
    ) {
        self.respond(slot, status, code, http::error_response(status, code, message, extra_headers));
    }

    /// Writes `response` and closes. It is counted once, here, in the
    /// connection's family: a handshake by `status` and `cause` (the body's
    /// error code), an HTTP API response by `status`.
    pub(super) fn respond(&mut self, slot: usize, status: u16, cause: &'static str, response: Vec<u8>) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        match pending.family {
            Family::Unknown | Family::WebSocket => {
                self.counters.acceptor.count_handshake(status, cause);
                tracing::debug!(status, cause, peer = ?pending.peer, "handshake refused");
            }
            Family::Api => self.counters.acceptor.count_http(status),
        }
        pending.head = Vec::new();
        pending.state = PendingState::Responding { response, written: 0 };
        self.write_response(slot);
    }

    fn write_response(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let PendingState::Responding { response, written } = &mut pending.state else { return };
        while *written < response.len() {
            match pending.stream.write(&response[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = pending.stream.shutdown(Shutdown::Write);
        self.close_pending(slot);
    }

    pub(super) fn close_pending(&mut self, slot: usize) {
        if let Some(mut pending) = self.pending.remove(slot) {
            if let PendingState::Awaiting { ticket, .. } = pending.state {
                self.api.forget(ticket);
            }
            let _ = self.poll.registry().deregister(&mut pending.stream);
        }
    }

    /// Answers (or drops) every connection whose deadline has passed.
    pub(super) fn expire_deadlines(&mut self, now: Instant) {
        while let Some(slot) = self.pending.next_head_expired(now) {
            self.answer_late(slot, now, Shed::HeadDeadline);
        }
        while let Some(slot) = self.pending.next_expired(now) {
            let Some(pending) = self.pending.get_mut(slot) else { continue };
            let first = !std::mem::replace(&mut pending.timed_out, true);
            if first {
                self.counters.hit(LimitKind::HandshakeTimeout);
            }
            match pending.state {
                PendingState::Awaiting { ticket, .. } => {
                    // A shard did not answer in time: say so, with a fresh deadline for the write.
                    self.api.forget(ticket);
                    self.pending.renew_deadline(slot, now);
                    let late = ApiError::new(503, "timeout", "a shard did not answer in time");
                    self.respond_api_error(slot, &late);
                }
                PendingState::ReadingHead | PendingState::ReadingBody { .. } => {
                    // The request did not arrive in time: answer 408 (as the
                    // socket allows, under a fresh deadline), so what is
                    // counted is what the client gets.
                    self.counters.acceptor.handshake_timeouts += 1;
                    self.pending.renew_deadline(slot, now);
                    let message = "the request did not arrive within limits.handshake_timeout_ms";
                    self.respond_error(slot, 408, "timeout", message, "");
                }
                PendingState::Responding { .. } => {
                    // The client does not read its response: drop it. Its
                    // status was counted when the response was decided.
                    if first {
                        self.counters.acceptor.handshake_timeouts += 1;
                    }
                    self.close_pending(slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Sources};

    #[test]
    fn the_deadline_fifos_give_back_a_storms_capacity_once_the_table_empties() {
        let config = Config::load(Sources::default()).expect("defaults");
        let mut table = PendingTable::new(&config.limits);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = || TcpStream::from_std(std::net::TcpStream::connect(addr).expect("connect"));
        let insert = |table: &mut PendingTable, stream| {
            table.insert(stream, Listener::Main, Family::Unknown, None, PendingState::ReadingHead)
        };
        // One connection stays pending while a storm of others comes and goes.
        let held = insert(&mut table, connect());
        let mut churn = connect();
        for _ in 0..8 * DEADLINES_KEPT {
            let slot = insert(&mut table, churn);
            table.received(slot, 1, Instant::now());
            churn = table.remove(slot).expect("inserted").stream;
        }
        assert!(table.deadlines.len() > 8 * DEADLINES_KEPT, "entries stay until their deadline");
        assert!(table.head_deadlines.capacity() > 4 * DEADLINES_KEPT);
        assert!(table.next_deadline().is_some());
        table.remove(held).expect("inserted");
        for fifo in [&table.deadlines, &table.head_deadlines] {
            assert!(fifo.is_empty() && fifo.capacity() <= 4 * DEADLINES_KEPT, "{}", fifo.capacity());
        }
        assert_eq!(table.next_deadline(), None);
    }
}
