//! The shard side of the admin HTTP API. The acceptor scatters one
//! `AdminRequest` to every shard that may hold an answer (a bounded admin
//! inbox per shard, apart from the handoff inbox) and gathers the replies on
//! its own loop; a shard answers from its own connection table, without
//! locks, and wakes the acceptor once per reply.
//!
//! Every answer is about this shard's connections only (a connection is
//! counted on its home shard, whichever shard owns the rooms it is in), so
//! the acceptor's merge is a plain sum or concatenation. Frames sent by the
//! admin API are encoded once by the acceptor and shared.

use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::Waker;

use super::ShardCore;
use super::conn::{ConnState, Place, Role};
use crate::ids::{ConnId, RoomKey};
use crate::msg::{AdminAnswer, AdminReply, ConnInfo};
use crate::registry::RoomPolicy;
use crate::ws::CloseCode;
use crate::ws::frame::Frame;

/// Close code of connections removed by `POST /api/v1/kick`.
pub const KICKED: CloseCode = CloseCode { code: 4003, reason: "kicked by an administrator" };
/// Close code of the members of a room closed by `DELETE /api/v1/live/rooms/{room}`.
pub const ROOM_CLOSED: CloseCode = CloseCode { code: 4004, reason: "room closed by an administrator" };
/// Close code of the members of a room deleted from the registry (`DELETE /api/v1/rooms/{id}`).
pub const ROOM_DELETED: CloseCode = CloseCode { code: 4005, reason: "room deleted from the registry" };

/// One admin request to one shard.
#[derive(Debug)]
pub struct AdminRequest {
    /// Names the acceptor's pending HTTP request; echoed in the reply.
    pub ticket: u64,
    pub query: Arc<AdminQuery>,
    pub reply: Sender<AdminReply>,
    /// The acceptor's waker, woken after the reply is queued.
    pub waker: Arc<Waker>,
}

/// What the admin API asks a shard.
#[derive(Debug)]
pub enum AdminQuery {
    /// Rooms this shard's connections are in, with this shard's member count:
    /// in `tenant`, ids starting with `prefix`, after `after`, the first `limit` by id.
    Rooms { tenant: String, prefix: String, after: Option<String>, limit: usize },
    /// This shard's connections, filtered by room (`key`) and/or user.
    Connections { tenant: String, room: Option<String>, user: Option<String>, limit: usize },
    /// Queue `frame` for the connections `target` names.
    Send { target: SendTarget, frame: Frame },
    /// Close (4003) the connections of `user`; with `room`, only those in it.
    Kick { tenant: String, user: String, room: Option<String> },
    /// Close (4004) every connection in `room`.
    CloseRoom { key: RoomKey },
    /// A committed registry change of room `key`: the owner applies the
    /// policy (`Rooms::set_policy`); when deleted (`None`), every shard
    /// closes (4005) its connections in the room. Answers the closed count.
    Registry { key: RoomKey, policy: Option<RoomPolicy> },
    /// Close every open connection with 1001 (the shard keeps running).
    Drain,
}

/// Who an admin `send` reaches.
#[derive(Debug)]
pub enum SendTarget {
    Room(RoomKey),
    User { tenant: String, user: String },
    Connection(ConnId),
    All,
}

impl ShardCore {
    /// Answers one admin request; frames and closes it causes go out in this
    /// iteration's flush like any other.
    pub(super) fn on_admin(&mut self, req: AdminRequest) {
        let answer = match &*req.query {
            AdminQuery::Rooms { tenant, prefix, after, limit } => {
                AdminAnswer::Rooms(self.admin_rooms(tenant, prefix, after.as_deref(), *limit))
            }
            AdminQuery::Connections { tenant, room, user, limit } => {
                let roles = room.as_deref().map(|room| self.admin_room_roles(tenant, room)).unwrap_or_default();
                AdminAnswer::Connections(
                    self.admin_connections(tenant, room.as_deref(), user.as_deref(), *limit),
                    roles,
                )
            }
            AdminQuery::Send { target, frame } => AdminAnswer::Count(self.admin_send(target, frame)),
            AdminQuery::Kick { tenant, user, room } => {
                let slots = self.admin_select(|member, rooms| {
                    *member.tenant() == **tenant
                        && *member.peer.user() == **user
                        && room.as_deref().is_none_or(|room| rooms.iter().any(|key| key.room() == room))
                });
                AdminAnswer::Count(self.admin_close(slots, KICKED))
            }
            AdminQuery::CloseRoom { key } => {
                let slots = self.admin_select(|_, rooms| rooms.contains(&key));
                AdminAnswer::Count(self.admin_close(slots, ROOM_CLOSED))
            }
            AdminQuery::Registry { key, policy } => {
                if key.shard(self.settings.shards) == self.id {
                    self.rooms.set_policy(key, *policy);
                    self.apply_room_outputs();
                }
                let closed = match policy {
                    Some(_) => 0,
                    None => {
                        let slots = self.admin_select(|_, rooms| rooms.contains(&key));
                        self.admin_close(slots, ROOM_DELETED)
                    }
                };
                AdminAnswer::Count(closed)
            }
            AdminQuery::Drain => {
                let slots = self.admin_select(|_, _| true);
                AdminAnswer::Count(self.admin_close(slots, CloseCode::GOING_AWAY))
            }
        };
        // The acceptor sized the channel for every reply it waits for; a
        // failed send means it gave up on the request (or stopped).
        if req.reply.try_send(AdminReply { ticket: req.ticket, answer }).is_ok() {
            let _ = req.waker.wake();
        }
    }

    fn admin_rooms(&self, tenant: &str, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, u64)> {
        let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for (_, conn) in &self.conns {
            let Some(rooms) = open_member_rooms(conn) else { continue };
            for key in rooms {
                let room = key.room();
                if key.tenant() == tenant && room.starts_with(prefix) && after.is_none_or(|after| room > after) {
                    *counts.entry(room).or_default() += 1;
                }
            }
        }
        // The first `limit` by id suffice: every room in the merged first
        // `limit` is among the first `limit` of each shard that has it.
        counts.into_iter().take(limit).map(|(room, n)| (room.to_string(), n)).collect()
    }

    /// Every member's meeting role in `room`, if this shard owns it.
    fn admin_room_roles(&self, tenant: &str, room: &str) -> Vec<(String, &'static str)> {
        let key = RoomKey::new(tenant, room);
        if key.shard(self.settings.shards) != self.id {
            return Vec::new();
        }
        self.rooms.roles(&key).into_iter().map(|(conn, role)| (conn.to_string(), role.as_str())).collect()
    }

    fn admin_connections(&self, tenant: &str, room: Option<&str>, user: Option<&str>, limit: usize) -> Vec<ConnInfo> {
        let mut out = Vec::new();
        for (_, conn) in &self.conns {
            if out.len() >= limit {
                break;
            }
            if conn.doomed || conn.state != ConnState::Open {
                continue;
            }
            let Role::Member(member) = &conn.role else { continue };
            let rooms: Vec<&RoomKey> =
                member.rooms.iter().filter(|j| is_established(j.place())).map(|j| &j.key).collect();
            if *member.tenant() != *tenant
                || user.is_some_and(|user| *member.peer.user() != *user)
                || room.is_some_and(|room| !rooms.iter().any(|key| key.room() == room))
            {
                continue;
            }
            out.push(ConnInfo {
                conn: conn.id.to_string(),
                user: member.peer.user().to_string(),
                name: member.peer.name().map(str::to_string),
                tenant: member.tenant().to_string(),
                role: if member.peer.host { "host" } else { "member" },
                home: member.rooms.first().map(|j| j.key.room().to_string()).unwrap_or_default(),
                rooms: rooms.iter().map(|key| key.room().to_string()).collect(),
            });
        }
        out
    }

    fn admin_send(&mut self, target: &SendTarget, frame: &Frame) -> u64 {
        let slots = match target {
            SendTarget::Connection(id) => {
                let open = self.conns.get(id.slot as usize).is_some_and(|c| {
                    c.id == *id && !c.doomed && c.state == ConnState::Open && matches!(c.role, Role::Member(_))
                });
                if open { vec![id.slot as usize] } else { Vec::new() }
            }
            SendTarget::Room(key) => self.admin_select(|_, rooms| rooms.contains(&key)),
            SendTarget::User { tenant, user } => {
                self.admin_select(|member, _| *member.tenant() == **tenant && *member.peer.user() == **user)
            }
            SendTarget::All => self.admin_select(|_, _| true),
        };
        let reached = slots.len() as u64;
        for slot in slots {
            self.queue(slot, Arc::clone(frame));
        }
        reached
    }

    /// Slots of open member connections for which `pick(identity, rooms)` holds.
    fn admin_select(&self, pick: impl Fn(&super::conn::Member, &[&RoomKey]) -> bool) -> Vec<usize> {
        let mut rooms = Vec::new();
        let mut slots = Vec::new();
        for (slot, conn) in &self.conns {
            let Some(joined) = open_member_rooms(conn) else { continue };
            rooms.clear();
            rooms.extend(joined);
            let Role::Member(member) = &conn.role else { continue };
            if pick(member, &rooms) {
                slots.push(slot);
            }
        }
        slots
    }

    fn admin_close(&mut self, slots: Vec<usize>, code: CloseCode) -> u64 {
        let closed = slots.len() as u64;
        for slot in slots {
            if let Some(conn) = self.conns.get(slot) {
                tracing::debug!(conn = %conn.id, code = code.code, "closed by the admin API");
            }
            self.begin_close(slot, code, None);
        }
        closed
    }
}

/// The rooms of an open member connection whose membership is established
/// (a remote join still in flight is not counted yet).
fn open_member_rooms(conn: &super::conn::Connection) -> Option<impl Iterator<Item = &RoomKey>> {
    if conn.doomed || conn.state != ConnState::Open {
        return None;
    }
    let Role::Member(member) = &conn.role else { return None };
    Some(member.rooms.iter().filter(|j| is_established(j.place())).map(|j| &j.key))
}

fn is_established(place: Place) -> bool {
    !matches!(place, Place::Pending { .. })
}
