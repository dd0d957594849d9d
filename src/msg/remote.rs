//! Messages between shards (and, in a cluster, between shards of different
//! nodes, through the bridge: `cluster::wire` encodes them). The protocol
//! they carry is described in `shard/remote.rs`.

use std::sync::Arc;

use crate::ids::{ConnId, RoomKey};
use crate::protocol::{MeetingRequest, Since};
use crate::refusal::Refusal;
use crate::room::{Audience, Membership, Peer, Role};
use crate::ws::CloseCode;
use crate::ws::frame::Frame;

/// A message between shards.
#[derive(Debug)]
pub enum RemoteMsg {
    Join {
        peer: Arc<Peer>,
        key: RoomKey,
        tag: u32,
        quiet: bool,
        reference: Option<Box<[u8]>>,
        /// Recover the messages after this point (`Rooms::join_since`).
        since: Option<Box<Since>>,
    },
    Leave {
        key: RoomKey,
        membership: Membership,
        conn: ConnId,
        reference: Option<Box<[u8]>>,
        /// A client's `leave` request (answered even without `reference`), not a close.
        requested: bool,
    },
    Publish {
        membership: Membership,
        conn: ConnId,
        reference: Option<Box<[u8]>>,
        data: Box<[u8]>,
    },
    Direct {
        key: RoomKey,
        from: Arc<Peer>,
        reference: Option<Box<[u8]>>,
        data: Box<[u8]>,
    },
    Joined {
        conn: ConnId,
        key: RoomKey,
        tag: u32,
        membership: Membership,
        /// The member's role at the join (the home filters fan-outs by it).
        role: Role,
    },
    JoinRefused {
        conn: ConnId,
        key: RoomKey,
        tag: u32,
        reason: Refusal,
        reference: Option<Box<[u8]>>,
    },
    /// The answer to every `Leave`: the home forgets the mirror entry of
    /// that membership, if it holds one.
    Left {
        conn: ConnId,
        key: RoomKey,
        membership: Membership,
    },
    Deliver {
        to: ConnId,
        frame: Frame,
    },
    /// A broadcast for the receiving shard's members of `key` that are in
    /// `audience` (by the roles it was told of), except `skip`.
    Fanout {
        key: RoomKey,
        audience: Audience,
        skip: Option<ConnId>,
        frame: Frame,
    },
    /// The owner changed `conn`'s role at `membership` in `key` (admitted, host, sharing).
    Role {
        conn: ConnId,
        key: RoomKey,
        membership: Membership,
        role: Role,
    },
    /// A meeting request of a member on another shard.
    Meeting {
        membership: Membership,
        conn: ConnId,
        reference: Option<Box<[u8]>>,
        request: MeetingRequest,
        now_unix_ms: u64,
    },
    /// The owner removed the connection (kick, lobby deny): close it.
    Close {
        conn: ConnId,
        code: CloseCode,
    },
}
