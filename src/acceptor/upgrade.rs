//! From a request head to a handoff: routing (WebSocket or HTTP API), the
//! checks of `/ws/{room}` in the documented order (`docs/protocol.md` §1.6:
//! room id, upgrade headers, Origin, token, room claim, registry, `since`,
//! revocation), then the 101 and the handoff to the shard owning the room.
//! A full shard inbox is answered 503 `overloaded` like any other refusal.

use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::accept::Listener;
use super::pending::{Family, PendingState};
use super::{Acceptor, unix_now_s};
use crate::auth::{self, Identity};
use crate::http::{self, RequestHead};
use crate::ids::{self, RoomKey, ShardId};
use crate::metrics::LimitKind;
use crate::protocol::Since;
use crate::registry::{self, Admission};
use crate::shard::{Handoff, HandoffKind, ShardMsg};

impl Acceptor {
    /// Sends a complete head to the upgrade or to the HTTP API.
    pub(super) fn route(&mut self, slot: usize, head: RequestHead, leftover: Vec<u8>) {
        let draining = self.draining;
        let Some(pending) = self.pending.get_mut(slot) else { return };
        let listener = pending.listener;
        let websocket = listener == Listener::Echo || (head.path.starts_with("/ws/") && listener == Listener::Main);
        pending.family = if websocket { Family::WebSocket } else { Family::Api };
        if head.version != 1 {
            return self.refuse_version(slot);
        }
        if websocket && draining {
            return self.respond_error(slot, 503, "draining", "the server is draining", "Retry-After: 5\r\n");
        }
        if listener == Listener::Echo {
            return self.upgrade(slot, &head, leftover, HandoffKind::Echo, 0);
        }
        if websocket {
            return self.upgrade_room(slot, &head, leftover);
        }
        self.api_request(slot, head, leftover);
    }

    /// `/ws/{room}`: checks the request, the Origin and the token, then upgrades.
    fn upgrade_room(&mut self, slot: usize, head: &RequestHead, leftover: Vec<u8>) {
        let room = &head.path["/ws/".len()..];
        if !ids::is_valid_room_id(room) {
            return self.respond_error(slot, 400, "bad_room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]", "");
        }
        if let Some((status, code, message, extra)) = check_websocket_request(head) {
            return self.respond_error(slot, status, code, message, extra);
        }
        let allowed = &self.config.auth.allow_origins;
        if let Some(origin) = &head.origin
            && !allowed.is_empty()
            && !allowed.iter().any(|a| a == origin)
        {
            return self.respond_error(slot, 403, "origin_not_allowed", "the Origin is not in auth.allow_origins", "");
        }
        let identity = match self.authenticate(head) {
            Ok(identity) => identity,
            Err((code, message)) => {
                if code == auth::AuthError::TooLarge.code() {
                    self.counters.hit(LimitKind::TokenTooBig);
                }
                if code == auth::AuthError::BadSignature.code() {
                    // Most often a token minted with another secret: say where the server's is.
                    let auth = &self.config.auth;
                    let message = auth::bad_signature_message(auth.jwt_secret.is_some(), &self.config.data_dir);
                    return self.respond_error(slot, 401, code, &message, "");
                }
                return self.respond_error(slot, 401, code, message, "");
            }
        };
        if !identity.may_join(room) {
            return self.respond_error(
                slot,
                403,
                "room_not_allowed",
                "the token's room claim does not allow this room",
                "",
            );
        }
        let key = RoomKey::new(&identity.tenant, room);
        // may_join held, so an exact claim is this room's.
        let names_room = identity.has_exact_room_claim();
        let require_registration = self.config.rooms.require_registration;
        match registry::admission(self.registry.rooms.get(&key), require_registration, room, names_room) {
            Some(Admission::NotRegistered) => {
                return self.respond_error(slot, 404, "room_not_registered", "the room is not in the registry", "");
            }
            Some(Admission::Private) => {
                let message = "the room is private: only a token whose room claim names it may enter";
                return self.respond_error(slot, 403, "room_private", message, "");
            }
            None => {}
        }
        let since = match head.query_param("since").map(|seq| seq.parse::<u64>()) {
            None => None,
            Some(Ok(seq)) => Some(Box::new(Since { seq, epoch: head.query_param("epoch").map(Into::into) })),
            Some(Err(_)) => return self.respond_error(slot, 400, "bad_since", "since must be a message seq (u64)", ""),
        };
        // Expired entries go in `revoked.tick`, once per loop.
        let now_s = unix_now_s();
        if let Err(refusal) = self.tokens.revoked.admit(&identity, now_s, now_s.saturating_mul(1000)) {
            return self.respond_error(slot, refusal.status(), refusal.code(), refusal.message(), "");
        }
        let shard = key.shard(self.shards.len());
        self.upgrade(slot, head, leftover, HandoffKind::Room { identity: Box::new(identity), key, since }, shard);
    }

    fn authenticate(&self, head: &RequestHead) -> Result<Identity, (&'static str, &'static str)> {
        let Some(verifier) = &self.tokens.verifier else {
            return match head.query_param("user") {
                // The name becomes a room key (`user:{name}`), where control characters are ambiguous.
                Some(user) if !user.is_empty() && !user.chars().any(char::is_control) => Ok(Identity::dev(&user)),
                _ => Err(("missing_user", "dev mode (auth.mode = none) needs ?user=NAME without control characters")),
            };
        };
        let token = auth::extract_token(head.query.as_deref(), head.authorization.as_deref(), head.cookie.as_deref())
            .ok_or(("token_missing", "no token in ?token=, Authorization: Bearer or cookie roomcast_token"))?;
        verifier.verify(&token).map_err(|e| (e.code(), e.message()))
    }

    /// Hands the connection to `shard` with the 101 response for it to write first.
    fn upgrade(&mut self, slot: usize, head: &RequestHead, leftover: Vec<u8>, kind: HandoffKind, shard: ShardId) {
        if let Some((status, code, message, extra)) = check_websocket_request(head) {
            return self.respond_error(slot, status, code, message, extra);
        }
        let Some(ws_key) = head.ws_key.as_deref() else { return };
        let response = http::switching_protocols(ws_key);
        let Some(mut pending) = self.pending.remove(slot) else { return };
        let _ = self.poll.registry().deregister(&mut pending.stream);
        let (listener, peer) = (pending.listener, pending.peer);
        let handoff = Box::new(Handoff { stream: pending.stream, response, leftover, kind, peer });
        match self.shards.try_send(shard as usize, ShardMsg::Handoff(handoff)) {
            Ok(()) => {
                // The shard writes the 101 and counts it (`roomcast_handshakes_total{cause="ok"}`).
                self.counters.acceptor.last_upgrade_unix_s = unix_now_s();
            }
            Err(ShardMsg::Handoff(handoff)) => self.refuse_handoff(handoff.stream, listener, peer, shard),
            Err(ShardMsg::Remote(..) | ShardMsg::Refreshed(_) | ShardMsg::Cluster(_)) => {}
        }
    }

    /// The shard's inbox is full: answered like any other refusal, from a
    /// fresh pending slot, written as the socket allows, under a deadline.
    fn refuse_handoff(&mut self, mut stream: TcpStream, listener: Listener, peer: Option<SocketAddr>, shard: ShardId) {
        self.counters.hit(LimitKind::InboxFull);
        if self.counters.episodes.starts_episode(LimitKind::InboxFull) {
            tracing::warn!(shard, "shard inbox full (limits.shard_inbox_max): handshakes refused with 503");
        }
        let slot = self.pending.next_slot();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::WRITABLE) {
            tracing::warn!(error = %e, "cannot register a refused connection");
            return;
        }
        let slot = self.pending.insert(stream, listener, Family::WebSocket, peer, PendingState::ReadingHead);
        let retry = "Retry-After: 1\r\n";
        self.respond_error(slot, 503, "overloaded", "the shard's inbox is full; try again", retry);
    }
}

/// RFC 6455 §4.2.1 checks; `Some` is the refusal to send.
fn check_websocket_request(head: &RequestHead) -> Option<(u16, &'static str, &'static str, &'static str)> {
    if head.method != "GET" {
        return Some((405, "method_not_allowed", "WebSocket upgrades use GET", "Allow: GET\r\n"));
    }
    if !head.wants_websocket() {
        return Some((400, "not_websocket", "expected Upgrade: websocket and Connection: Upgrade", ""));
    }
    if head.ws_version.as_deref() != Some("13") {
        return Some((426, "bad_version", "only WebSocket version 13 is supported", "Sec-WebSocket-Version: 13\r\n"));
    }
    let key_ok = head.ws_key.as_deref().is_some_and(|key| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|raw| raw.len() == 16)
    });
    if !key_ok {
        return Some((400, "bad_key", "Sec-WebSocket-Key must be 16 bytes in base64", ""));
    }
    None
}
