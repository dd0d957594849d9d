//! Client requests on a shard: each text frame of a room connection is
//! decoded once and turned into a room call (room on this shard) or a remote
//! message (room on another shard). Every refusal is an `error` frame with a
//! documented code, carrying the request's `ref`.

use std::sync::Arc;

use super::conn::{JoinedRoom, Member, Place, Role};
use super::refresh::RefreshRequest;
use super::{RemoteMsg, ShardCore};
use crate::ids::{self, RoomKey};
use crate::protocol::{self, MeetingRequest, Request, Since};
use crate::refusal::{Perm, Refusal};
use crate::webhooks::WebhookDetail;
use crate::ws::CloseCode;
use crate::ws::frame::Opcode;

impl ShardCore {
    /// Decodes and carries out one request of connection `slot`.
    pub(super) fn on_request(&mut self, slot: usize, payload: &[u8]) {
        let Some(mut decoder) = self.decoder.take() else { return };
        let (reference, request) = decoder.decode(payload);
        let outcome = match request {
            Ok(Request::Publish { room, data }) => self.publish(slot, room, reference, data),
            Ok(Request::Join { room, since }) => self.join(slot, room, since, reference),
            Ok(Request::Leave { room }) => self.leave(slot, room, reference),
            Ok(Request::Direct { to, data }) => self.direct(slot, to, reference, data),
            Ok(Request::Meeting { room, request }) => self.meeting(slot, room, request, reference),
            Ok(Request::Ping) => {
                protocol::encode_pong(self.frames.begin(), reference);
                let frame = self.frames.finish(Opcode::Text);
                self.queue(slot, frame);
                Ok(())
            }
            Ok(Request::Refresh { token }) => self.refresh(slot, token, reference),
            Ok(Request::Echo { data }) => {
                self.echo(slot, reference, data);
                Ok(())
            }
            Ok(Request::Status) => self.status(slot, reference),
            Ok(Request::Custom { kind, room, data }) => self.custom(slot, kind, room, reference, data),
            Err(error) => Err(Refusal::Request(error)),
        };
        if let Err(refusal) = outcome {
            self.send_error(slot, reference, refusal);
        }
        self.decoder = Some(decoder);
    }

    /// `publish`: to the home room, or to `room` if the connection is in it.
    fn publish(
        &mut self,
        slot: usize,
        room: Option<&str>,
        reference: Option<&[u8]>,
        data: &[u8],
    ) -> Result<(), Refusal> {
        self.require(slot, Perm::Publish)?;
        let (conn, place) = self.place_of(slot, room)?;
        match place {
            Place::Local(membership) => {
                let now_ms = self.now_unix_ms();
                self.rooms.publish(membership, conn, reference, data, now_ms).ok_or(Refusal::NotJoined)??;
                self.metrics.messages_published += 1;
                self.apply_room_outputs();
            }
            Place::Remote { owner, membership } => {
                let msg =
                    RemoteMsg::Publish { membership, conn, reference: reference.map(Into::into), data: data.into() };
                self.try_send_remote(owner, msg).map_err(|_| Refusal::Overloaded)?;
            }
            Place::Pending { .. } => return Err(Refusal::JoinPending),
        }
        Ok(())
    }

    /// A meeting request, carried out by the room's owner.
    fn meeting(
        &mut self,
        slot: usize,
        room: Option<&str>,
        request: MeetingRequest,
        reference: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let gate = match request {
            MeetingRequest::ChatSend { .. } | MeetingRequest::ChatDelete { .. } => Some(Perm::Chat),
            MeetingRequest::Signal { .. } => Some(Perm::Signal),
            _ => None,
        };
        if let Some(perm) = gate {
            self.require(slot, perm)?;
        }
        let (conn, place) = self.place_of(slot, room)?;
        let now_unix_ms = self.now_unix_ms();
        match place {
            Place::Local(membership) => {
                let refused = self.rooms.request(membership, conn, &request, reference, now_unix_ms).err();
                if let Some(refusal) = refused {
                    self.note_refusal(conn, refusal);
                    return Err(refusal);
                }
                self.apply_room_outputs();
            }
            Place::Remote { owner, membership } => {
                let msg =
                    RemoteMsg::Meeting { membership, conn, reference: reference.map(Into::into), request, now_unix_ms };
                self.try_send_remote(owner, msg).map_err(|_| Refusal::Overloaded)?;
            }
            Place::Pending { .. } => return Err(Refusal::JoinPending),
        }
        Ok(())
    }

    /// `Ok` when the token of connection `slot` allows requests gated by `perm`.
    fn require(&mut self, slot: usize, perm: Perm) -> Result<(), Refusal> {
        self.member(slot)?.1.grants.require(perm)
    }

    /// The connection's id and where the room `room` (home when `None`) is.
    pub(super) fn place_of(&mut self, slot: usize, room: Option<&str>) -> Result<(crate::ids::ConnId, Place), Refusal> {
        let (conn, member) = self.member(slot)?;
        let joined = match room {
            None => member.rooms.first(),
            Some(room) => member.room(room),
        };
        Ok((conn, joined.ok_or(Refusal::NotJoined)?.place()))
    }

    /// `join`: the same checks as the URL room (room claim, tenant), plus
    /// personal and group rooms only for their own user and groups.
    fn join(&mut self, slot: usize, room: &str, since: Option<Since>, reference: Option<&[u8]>) -> Result<(), Refusal> {
        let rooms_max = self.settings.limits.rooms_per_connection_max as usize;
        let shards = self.settings.shards;
        let (conn, peer, key, full) = {
            let (conn, member) = self.member(slot)?;
            member.grants.require(Perm::Join)?;
            may_join(member, room)?;
            if member.room(room).is_some() {
                return Err(Refusal::AlreadyJoined);
            }
            let key = RoomKey::new(member.tenant(), room);
            (conn, Arc::clone(&member.peer), key, member.rooms.len() >= rooms_max)
        };
        if full {
            self.note_refusal(conn, Refusal::ConnectionRoomsFull);
            return Err(Refusal::ConnectionRoomsFull);
        }
        if let Err(refused) = self.hook_join(slot, room) {
            self.send_code(slot, reference, &refused.code, &refused.message);
            return Ok(());
        }
        self.enter(slot, &peer, key, false, reference, since.as_ref(), shards)?;
        self.webhook_room(slot, room, WebhookDetail::Join);
        Ok(())
    }

    /// Puts connection `slot` in room `key`: directly when this shard owns
    /// it, else by a `Join` to the owner (the room is then pending). With
    /// `since`, the owner recovers the messages after it (`Rooms::join_since`).
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        slot: usize,
        peer: &Arc<crate::room::Peer>,
        mut key: RoomKey,
        quiet: bool,
        reference: Option<&[u8]>,
        since: Option<&Since>,
        shards: usize,
    ) -> Result<(), Refusal> {
        let owner = key.shard(shards);
        let tag = {
            let (_, member) = self.member(slot)?;
            member.joins = member.joins.wrapping_add(1);
            member.joins
        };
        let place = if owner == self.id && self.in_cluster() && !self.rooms.contains(&key) {
            // No shard of this node holds the room: claimed here, or joined where it lives.
            let reference = reference.map(Into::into);
            let since = since.map(|since| Box::new(since.clone()));
            self.join_through_cluster(Arc::clone(peer), key.clone(), tag, quiet, reference, since);
            Place::Pending { owner, tag }
        } else if owner == self.id {
            let now_ms = self.now_unix_ms();
            let joined = self.rooms.join_since(peer, &key, quiet, reference, since, now_ms);
            let membership = joined.inspect_err(|&refusal| self.note_refusal(peer.conn, refusal))?;
            // Share the room's own key rather than keep a copy per member.
            key = self.rooms.key(membership.room_slot()).cloned().unwrap_or(key);
            Place::Local(membership)
        } else {
            let reference = reference.map(Into::into);
            let since = since.map(|since| Box::new(since.clone()));
            let msg = RemoteMsg::Join { peer: Arc::clone(peer), key: key.clone(), tag, quiet, reference, since };
            self.try_send_remote(owner, msg).map_err(|_| Refusal::Overloaded)?;
            Place::Pending { owner, tag }
        };
        if let Ok((_, member)) = self.member(slot) {
            member.rooms.push(JoinedRoom::new(key, place, quiet));
        }
        self.apply_room_outputs();
        Ok(())
    }

    /// The home room, personal room and group rooms of a new connection. A
    /// home room that is full closes the connection (1013).
    pub(super) fn join_initial_rooms(&mut self, slot: usize, home: RoomKey, since: Option<&Since>) {
        let shards = self.settings.shards;
        let rooms_max = self.settings.limits.rooms_per_connection_max as usize;
        let personal_rooms = self.settings.rooms.personal_rooms;
        let Ok((_, member)) = self.member(slot) else { return };
        let peer = Arc::clone(&member.peer);
        let tenant = member.tenant();
        let personal = personal_rooms.then(|| RoomKey::personal(tenant, peer.user()));
        // A URL room that is itself the personal or a group room is not joined twice.
        let mut implicit: Vec<RoomKey> = personal
            .into_iter()
            .chain(member.grants.groups().iter().map(|group| RoomKey::group(tenant, group)))
            .filter(|key| *key != home)
            .collect();
        // Group rooms past rooms_per_connection_max are not joined.
        if implicit.len() > rooms_max.saturating_sub(1) {
            implicit.truncate(rooms_max.saturating_sub(1));
            self.note_limit(slot, crate::metrics::LimitKind::TooManyRooms);
        }
        if let Err(refusal) = self.enter(slot, &peer, home, false, None, since, shards) {
            self.send_error(slot, None, refusal);
            // The refusal was counted where it was decided (`enter`).
            self.begin_close(slot, home_close(refusal), None);
            return;
        }
        for key in implicit {
            if let Err(refusal) = self.enter(slot, &peer, key, true, None, None, shards) {
                self.send_error(slot, None, refusal);
            }
        }
    }

    /// `leave`: a joined room; not the home room, personal or group rooms.
    /// Answered with an ack when it has a `ref`, else with a `left` event.
    fn leave(&mut self, slot: usize, room: &str, reference: Option<&[u8]>) -> Result<(), Refusal> {
        let (conn, joined) = {
            let (conn, member) = self.member(slot)?;
            let index = member.rooms.iter().position(|joined| joined.key.room() == room).ok_or(Refusal::NotJoined)?;
            if index == 0 || member.rooms[index].implicit() {
                return Err(Refusal::CannotLeave);
            }
            (conn, member.rooms.remove(index))
        };
        self.hook_leave(slot, room);
        self.webhook_room(slot, room, WebhookDetail::Leave);
        match joined.place() {
            Place::Local(membership) => {
                self.rooms.leave_requested(membership, conn, reference);
                self.apply_room_outputs();
            }
            Place::Remote { owner, membership } => {
                let reference = reference.map(Into::into);
                let msg = RemoteMsg::Leave { key: joined.key, membership, conn, reference, requested: true };
                // Kept whatever the outbox holds: a lost leave would leave a ghost member.
                self.remote.send_control(owner, msg);
            }
            Place::Pending { .. } => {
                // The join is undone when its reply arrives (see `on_joined`).
                // No `seq`: the owner has not placed the connection yet.
                match reference {
                    Some(_) => protocol::encode_ack(self.frames.begin(), reference, None),
                    None => protocol::encode_left(self.frames.begin(), joined.key.room(), None),
                }
                let frame = self.frames.finish(Opcode::Text);
                self.queue(slot, frame);
            }
        }
        Ok(())
    }

    /// `direct`: to every connection of user `to` (same tenant), on any shard.
    pub(super) fn direct(
        &mut self,
        slot: usize,
        to: &str,
        reference: Option<&[u8]>,
        data: &[u8],
    ) -> Result<(), Refusal> {
        let shards = self.settings.shards;
        let (peer, key) = {
            let (_, member) = self.member(slot)?;
            member.grants.require(Perm::Direct)?;
            (Arc::clone(&member.peer), RoomKey::personal(member.tenant(), to))
        };
        let owner = key.shard(shards);
        if owner == self.id && self.in_cluster() && !self.rooms.contains(&key) {
            let msg = RemoteMsg::Direct {
                key: key.clone(),
                from: peer,
                reference: reference.map(Into::into),
                data: data.into(),
            };
            self.send_cluster(crate::msg::ClusterOut::Route { from: self.id, key, msg });
        } else if owner == self.id {
            if !self.rooms.direct(&key, &peer, reference, data) {
                return Err(Refusal::UserOffline);
            }
            self.apply_room_outputs();
        } else {
            let msg = RemoteMsg::Direct { key, from: peer, reference: reference.map(Into::into), data: data.into() };
            self.try_send_remote(owner, msg).map_err(|_| Refusal::Overloaded)?;
        }
        Ok(())
    }

    /// `refresh`: a new token for the same user and tenant that still allows
    /// the home room extends the connection's life. It is verified on the
    /// acceptor (`refresh.rs`); the ack or error goes out when it answers.
    fn refresh(&mut self, slot: usize, token: &str, reference: Option<&[u8]>) -> Result<(), Refusal> {
        let request = {
            let (conn, member) = self.member(slot)?;
            RefreshRequest {
                conn,
                token: token.into(),
                reference: reference.map(Into::into),
                user: member.peer.user().into(),
                tenant: member.tenant().into(),
                home: member.rooms.first().map(|joined| joined.key.room().into()),
            }
        };
        let conn = request.conn;
        let Some(link) = &self.settings.refresh else { return Err(Refusal::RefreshUnsupported) };
        if link.requests.try_send(request).is_err() {
            self.metrics.refresh_overloaded += 1;
            tracing::debug!(conn = %conn, "refresh channel full: answered overloaded");
            return Err(Refusal::RefreshOverloaded);
        }
        // One wake per refresh: refreshes are rare, and the acceptor may sleep a second otherwise.
        if let Err(e) = link.waker.wake() {
            tracing::error!(error = %e, "cannot wake the acceptor");
        }
        Ok(())
    }

    /// The open room connection in `slot`.
    fn member(&mut self, slot: usize) -> Result<(crate::ids::ConnId, &mut Member), Refusal> {
        let conn = self.conns.get_mut(slot).ok_or(Refusal::Internal)?;
        let id = conn.id;
        match &mut conn.role {
            Role::Member(member) => Ok((id, member)),
            Role::Echo => Err(Refusal::Internal),
        }
    }
}

/// The Close of a connection whose URL room refused it (`Refusal::close`;
/// 1013 `server full` for any other refusal).
pub(super) fn home_close(refusal: Refusal) -> CloseCode {
    refusal.close().unwrap_or(CloseCode::SHARD_FULL)
}

/// Whether `member` may join `room`: a valid id its token allows.
fn may_join(member: &Member, room: &str) -> Result<(), Refusal> {
    if !ids::is_valid_room_id(room) {
        return Err(Refusal::BadRoom);
    }
    if member.grants.may_join(member.peer.user(), member.home.room(), room) {
        Ok(())
    } else {
        Err(Refusal::TokenForbidsRoom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_room_refusals_close_as_the_ws_close_codes_say() {
        assert_eq!(home_close(Refusal::RoomFull), CloseCode::ROOM_FULL);
        assert_eq!(home_close(Refusal::RoomPrivate), CloseCode::ROOM_PRIVATE);
        assert_eq!(home_close(Refusal::RoomNotRegistered), CloseCode::ROOM_NOT_REGISTERED);
        assert_eq!(home_close(Refusal::ShardRoomsFull), CloseCode::SHARD_FULL);
        assert_eq!(home_close(Refusal::Overloaded), CloseCode::SHARD_FULL);
        assert_eq!(home_close(Refusal::Internal), CloseCode::SHARD_FULL);
    }
}
