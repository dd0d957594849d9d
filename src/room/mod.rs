//! Room logic, sans-IO: who is in which room, presence, sequence numbers and
//! who receives what. No sockets, no clocks, no threads: the shard calls in
//! with events and carries out the `Output`s it polls back.
//!
//! Invariants (checked by `check_invariants` in debug builds after every
//! mutation): every room has at least one member (empty rooms are freed at
//! once), the index maps exactly the live rooms, and no room holds more than
//! `members_max` members.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use slab::Slab;

use crate::ids::{ConnId, RoomKey, ShardId};
use crate::protocol::{self, push_json_str, push_u64};
use crate::ws::frame::{Frame, FrameBuilder, Opcode};

#[cfg(test)]
mod tests;

/// A member as the room sees it: immutable, shared with the connection.
#[derive(Debug)]
pub struct Peer {
    pub conn: ConnId,
    pub user: Box<str>,
    pub name: Option<Box<str>>,
    /// `user` as a JSON literal, encoded once at arrival (it goes in every message).
    user_json: Box<str>,
}

impl Peer {
    pub fn new(conn: ConnId, user: &str, name: Option<&str>) -> Arc<Peer> {
        Arc::new(Peer { conn, user: user.into(), name: name.map(Into::into), user_json: protocol::json_str(user) })
    }

    /// `{"conn":"…","user":"…","name":"…"}` (name only when set).
    fn push_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"conn\":\"");
        out.extend_from_slice(self.conn.to_string().as_bytes());
        out.extend_from_slice(b"\",\"user\":");
        out.extend_from_slice(self.user_json.as_bytes());
        if let Some(name) = &self.name {
            out.extend_from_slice(b",\"name\":");
            push_json_str(out, name);
        }
        out.push(b'}');
    }
}

/// The bounds a shard's rooms enforce (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    pub members_max: u32,
    pub welcome_members_max: u32,
    pub presence_members_max: u32,
}

/// Where a connection sits in a room; returned by `join`, given back to
/// `leave` and `publish`. Valid until `leave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    room: u32,
    member: u32,
}

impl Membership {
    /// The room's slot, as carried by `Output::Broadcast`.
    pub fn room_slot(self) -> usize {
        self.room as usize
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    RoomFull,
}

/// What the shard must do after an event.
#[derive(Debug)]
pub enum Output {
    /// Queue `frame` for one connection.
    Deliver { to: ConnId, frame: Frame },
    /// Queue `frame` for every member of the room in slot `room` except `skip`.
    Broadcast { room: usize, skip: Option<ConnId>, frame: Frame },
}

#[derive(Debug)]
struct Room {
    key: RoomKey,
    /// The room id as a JSON literal, encoded once (it goes in every message).
    room_json: Box<str>,
    /// Members with their `ConnId` inline, so a broadcast walk reads one
    /// contiguous array instead of chasing a pointer per member.
    members: Slab<(ConnId, Arc<Peer>)>,
    /// Messages published so far; the next one gets `seq + 1`.
    seq: u64,
}

/// Every room a shard owns.
#[derive(Debug)]
pub struct Rooms {
    shard: ShardId,
    limits: RoomLimits,
    rooms: Slab<Room>,
    index: HashMap<RoomKey, usize>,
    outputs: VecDeque<Output>,
    frames: FrameBuilder,
}

impl Rooms {
    pub fn new(shard: ShardId, limits: RoomLimits) -> Rooms {
        Rooms {
            shard,
            limits,
            rooms: Slab::new(),
            index: HashMap::new(),
            outputs: VecDeque::new(),
            frames: FrameBuilder::default(),
        }
    }

    /// Adds `peer` to the room `key` (created if absent). The joiner gets a
    /// `welcome`; the others get `member_joined` unless the room is past
    /// `presence_members_max`.
    pub fn join(&mut self, peer: &Arc<Peer>, key: &RoomKey) -> Result<Membership, JoinRefused> {
        let slot = match self.index.get(key) {
            Some(&slot) => slot,
            None => {
                let slot = self.rooms.insert(Room {
                    key: key.clone(),
                    room_json: protocol::json_str(key.room()),
                    members: Slab::new(),
                    seq: 0,
                });
                self.index.insert(key.clone(), slot);
                slot
            }
        };
        let room = &mut self.rooms[slot];
        if room.members.len() >= self.limits.members_max as usize {
            self.debug_check_invariants();
            return Err(JoinRefused::RoomFull);
        }
        let member = room.members.insert((peer.conn, Arc::clone(peer)));
        let welcome = encode_welcome(&mut self.frames, room, peer, self.shard, self.limits.welcome_members_max);
        self.outputs.push_back(Output::Deliver { to: peer.conn, frame: welcome });
        if room.members.len() > 1 && room.members.len() <= self.limits.presence_members_max as usize {
            let joined = encode_presence(&mut self.frames, "member_joined", room, peer);
            self.outputs.push_back(Output::Broadcast { room: slot, skip: Some(peer.conn), frame: joined });
        }
        self.debug_check_invariants();
        Ok(Membership { room: slot as u32, member: member as u32 })
    }

    /// Removes a member; the others get `member_left`; an empty room is freed.
    pub fn leave(&mut self, membership: Membership) {
        let slot = membership.room as usize;
        let Some(room) = self.rooms.get_mut(slot) else {
            debug_assert!(false, "leave of a freed room {membership:?}");
            return;
        };
        let Some((_, peer)) = room.members.try_remove(membership.member as usize) else {
            debug_assert!(false, "leave of a member not present {membership:?}");
            return;
        };
        if room.members.is_empty() {
            let room = self.rooms.remove(slot);
            self.index.remove(&room.key);
        } else if room.members.len() < self.limits.presence_members_max as usize {
            let left = encode_presence(&mut self.frames, "member_left", room, &peer);
            self.outputs.push_back(Output::Broadcast { room: slot, skip: None, frame: left });
        }
        self.debug_check_invariants();
    }

    /// Publishes `data` (the publisher's JSON, byte for byte) to every other
    /// member with the room's next `seq`; acks `reference` when given.
    pub fn publish(&mut self, membership: Membership, reference: Option<&[u8]>, data: &[u8]) -> u64 {
        let slot = membership.room as usize;
        let Some(room) = self.rooms.get_mut(slot) else {
            debug_assert!(false, "publish to a freed room {membership:?}");
            return 0;
        };
        let Some((_, publisher)) = room.members.get(membership.member as usize) else {
            debug_assert!(false, "publish by a member not present {membership:?}");
            return 0;
        };
        let from = publisher.conn;
        room.seq += 1;
        let seq = room.seq;
        let out = self.frames.begin();
        protocol::encode_message(out, &room.room_json, &publisher.user_json, seq, data);
        let frame = self.frames.finish(Opcode::Text);
        if room.members.len() > 1 {
            self.outputs.push_back(Output::Broadcast { room: slot, skip: Some(from), frame });
        }
        if reference.is_some() {
            protocol::encode_ack(self.frames.begin(), reference, Some(seq));
            let ack = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to: from, frame: ack });
        }
        seq
    }

    /// Relays a binary message verbatim to every other member.
    pub fn relay_binary(&mut self, membership: Membership, from: ConnId, payload: &[u8]) {
        let slot = membership.room as usize;
        if self.rooms.get(slot).is_some_and(|room| room.members.len() > 1) {
            self.frames.begin().extend_from_slice(payload);
            let frame = self.frames.finish(Opcode::Binary);
            self.outputs.push_back(Output::Broadcast { room: slot, skip: Some(from), frame });
        }
    }

    /// The room id of a membership (without tenant).
    pub fn room_id(&self, membership: Membership) -> Option<&str> {
        self.rooms.get(membership.room as usize).map(|room| room.key.room())
    }

    /// The connections in the room in slot `room`.
    pub fn members(&self, room: usize) -> impl Iterator<Item = ConnId> + '_ {
        self.rooms.get(room).into_iter().flat_map(|room| room.members.iter().map(|(_, (conn, _))| *conn))
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Rooms currently held (each has at least one member).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Panics if an invariant of the module doc does not hold.
    pub fn check_invariants(&self) {
        assert_eq!(self.index.len(), self.rooms.len(), "index and rooms disagree");
        for (slot, room) in &self.rooms {
            assert_eq!(self.index.get(&room.key), Some(&slot), "room {:?} not indexed at its slot", room.key);
            assert!(!room.members.is_empty(), "empty room {:?} kept", room.key);
            assert!(room.members.len() <= self.limits.members_max as usize, "room {:?} over capacity", room.key);
        }
    }
}

/// `{"type":"welcome","conn":C,"room":R,"shard":S,"user":U,"seq":N,"member_count":K,"members":[…]}`;
/// `members` lists at most `members_max` of the others.
fn encode_welcome(frames: &mut FrameBuilder, room: &Room, peer: &Peer, shard: ShardId, members_max: u32) -> Frame {
    let out = frames.begin();
    out.extend_from_slice(b"{\"type\":\"welcome\",\"conn\":\"");
    out.extend_from_slice(peer.conn.to_string().as_bytes());
    out.extend_from_slice(b"\",\"room\":");
    out.extend_from_slice(room.room_json.as_bytes());
    out.extend_from_slice(b",\"shard\":");
    push_u64(out, u64::from(shard));
    out.extend_from_slice(b",\"user\":");
    out.extend_from_slice(peer.user_json.as_bytes());
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, room.seq);
    out.extend_from_slice(b",\"member_count\":");
    push_u64(out, room.members.len() as u64);
    out.extend_from_slice(b",\"members\":[");
    let others = room.members.iter().filter(|(_, (conn, _))| *conn != peer.conn);
    for (i, (_, (_, other))) in others.take(members_max as usize).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        other.push_json(out);
    }
    out.extend_from_slice(b"]}");
    frames.finish(Opcode::Text)
}

/// `{"type":KIND,"room":R,"member":{…},"member_count":K}`
fn encode_presence(frames: &mut FrameBuilder, kind: &str, room: &Room, peer: &Peer) -> Frame {
    let out = frames.begin();
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"room\":");
    out.extend_from_slice(room.room_json.as_bytes());
    out.extend_from_slice(b",\"member\":");
    peer.push_json(out);
    out.extend_from_slice(b",\"member_count\":");
    push_u64(out, room.members.len() as u64);
    out.push(b'}');
    frames.finish(Opcode::Text)
}
