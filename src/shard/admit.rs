//! Taking in a connection handed off by the acceptor: the shard's own
//! limits (draining, full) and the connect hook can still refuse it with a
//! plain HTTP status, since the 101 is not written yet; otherwise it is
//! registered, given its role and home room, and its first bytes decoded.

use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::conn::{ConnState, Connection, Grants, Member, OutboundQueue, RateBucket, Role};
use super::{Handoff, HandoffKind, Shard, ShardCore, ShardMsg};
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::metrics::LimitKind;
use crate::protocol::Since;
use crate::refusal::Refusal;
use crate::room::Peer;
use crate::timer::TimerKind;

impl Shard {
    /// Takes a connection in from the acceptor: registers it, queues the 101
    /// response, joins its room and processes bytes that came with the request.
    pub(super) fn admit(&mut self, mut handoff: Handoff) {
        let core = &mut self.core;
        if core.draining.is_some() {
            core.note_shard_limit(LimitKind::Draining);
            refuse_handoff(&mut handoff.stream, Refusal::Draining);
            return;
        }
        if let HandoffKind::Room { key, .. } = &handoff.kind
            && let Some(shard) = core.spread_target(key)
            && let Some(peer) = core.remote.peers.get(usize::from(shard))
        {
            match peer.try_send(ShardMsg::Handoff(Box::new(handoff))) {
                Ok(()) => {
                    peer.wake();
                    core.metrics.connections_spread += 1;
                    return;
                }
                // That shard's inbox is full: this one takes the connection
                // (`try_send` gives back what it was given).
                Err(ShardMsg::Handoff(returned)) => handoff = *returned,
                Err(_) => return,
            }
        }
        self.admit_here(handoff)
    }

    /// Registers a connection on this shard (see `admit`).
    fn admit_here(&mut self, handoff: Handoff) {
        let Handoff { mut stream, response, leftover, kind, peer: peer_addr } = handoff;
        let core = &mut self.core;
        if core.conns.len() >= core.settings.limits.connections_per_shard_max as usize {
            core.note_shard_limit(LimitKind::ShardFull);
            refuse_handoff(&mut stream, Refusal::ServerFull);
            return;
        }
        let slot = core.conns.vacant_key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot register handed-off connection");
            return;
        }
        core.generation = core.generation.wrapping_add(1);
        let id = ConnId { shard: self.id, slot: slot as u32, generation: core.generation };
        if let HandoffKind::Room { identity, key, .. } = &kind
            && let Err(refused) = core.hook_connect(id, identity, key)
        {
            // The 101 is not written yet: the client gets the hook's HTTP status.
            let _ = self.poll.registry().deregister(&mut stream);
            let response = crate::http::error_response(refused.status, &refused.code, &refused.message, "");
            use std::io::Write;
            let _ = stream.write_all(&response);
            return;
        }
        let Arrival { mut role, home, expires_at_s } = arrival(id, kind, core.now_ms());
        let home = home.map(|(key, since)| (core.rooms.shared_key(key), since));
        if let (Role::Member(member), Some((key, _))) = (&mut role, &home) {
            member.home = key.clone();
        }
        let mut outbound = OutboundQueue::default();
        outbound.push_unbounded(Arc::from(response));
        let rate = RateBucket::full(core.settings.limits.rate_burst, core.now_ms());
        let control_rate = RateBucket::full(core.settings.limits.control_frames_per_s, core.now_ms());
        core.conns.insert(Connection {
            stream,
            id,
            state: ConnState::Open,
            role,
            expires_at_s: super::conn::expires_at_u32(expires_at_s),
            last_rx_ms: core.now_ms() as u32,
            inbound: None,
            outbound,
            rate,
            control_rate,
            rate_strikes: 0,
            limits_logged: 0,
            dirty: false,
            doomed: false,
            close_code: None,
            over_soft_since_ms: 0,
        });
        core.metrics.connections_opened += 1;
        core.metrics.queued_frames += 1; // the 101
        let home_key = home.as_ref().map(|(key, _)| key);
        core.audit_open(slot, home_key, peer_addr);
        core.log_connection(slot, peer_addr, None);
        core.mark_dirty(slot);
        let first_check = core.next_heartbeat(core.now, expires_at_s);
        core.schedule(id, first_check, TimerKind::Heartbeat);
        if let Some((key, since)) = home {
            core.join_initial_rooms(slot, key, since.as_deref());
        }
        if !leftover.is_empty() {
            let mut bytes = leftover;
            core.consume_bytes(slot, &mut bytes);
        }
    }
}

impl ShardCore {
    /// The shard a new connection to room `key` goes to, when `key` is a
    /// room of this shard with `rooms.spread_from_members` members or more:
    /// every shard in turn, this one included. `None` (stay here) for a
    /// smaller room, one owned elsewhere (a connection handed on is never
    /// handed on again) or a single shard.
    fn spread_target(&mut self, key: &RoomKey) -> Option<ShardId> {
        let from = self.settings.rooms.spread_from_members as usize;
        let shards = self.settings.shards;
        if from == 0 || shards < 2 || key.shard(shards) != self.id || self.rooms.member_count(key) < from {
            return None;
        }
        self.spread_turn = (self.spread_turn + 1) % shards;
        let shard = self.spread_turn as ShardId;
        (shard != self.id).then_some(shard)
    }
}

/// What a handoff makes of a new connection.
struct Arrival {
    role: Role,
    /// The URL room of a room connection, with the point to recover from (`?since=`).
    home: Option<(RoomKey, Option<Box<Since>>)>,
    /// Unix seconds at which the token runs out (`u64::MAX` without a token).
    expires_at_s: u64,
}

/// The role, home room and expiry of connection `id`, handed off as `kind`
/// at `now_ms` (ms since the shard started).
fn arrival(id: ConnId, kind: HandoffKind, now_ms: u64) -> Arrival {
    match kind {
        HandoffKind::Room { identity, key, since } => {
            let exact = identity.has_exact_room_claim();
            let peer = Peer::with_claims(id, &identity.user, identity.name.as_deref(), identity.host, exact);
            let expires_at_s = identity.expires_at_s;
            let member = Member {
                rooms: smallvec::SmallVec::with_capacity(2 + identity.groups.len()),
                grants: Grants::from_identity(*identity, key.room()),
                peer,
                joins: 0,
                // Wrapping, as `over_soft_since_ms`: 4 bytes, not 8.
                opened_ms: now_ms as u32,
                // The room table's shared key replaces it on admission.
                home: key.clone(),
            };
            Arrival { role: Role::Member(member), home: Some((key, since)), expires_at_s }
        }
        HandoffKind::Echo => Arrival { role: Role::Echo, home: None, expires_at_s: u64::MAX },
    }
}

/// Answers a handoff the shard cannot take: the 101 has not been written yet,
/// so the client still gets a plain HTTP 503. The socket is fresh, so this
/// one small write fits in its buffer; if not, the client sees a reset.
fn refuse_handoff(stream: &mut TcpStream, refusal: Refusal) {
    use std::io::Write;
    let response = crate::http::error_response(refusal.http_status(), refusal.code(), refusal.message(), "");
    // One write: a client may read the head and stop before a second one.
    let _ = stream.write_all(&response);
}
