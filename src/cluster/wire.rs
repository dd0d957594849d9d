//! The bytes the cluster bridge publishes through Redis: one [`Envelope`] of
//! shard messages ([`RemoteMsg`]) per PUBLISH. Hand-written, length-prefixed
//! binary; Redis only carries it.
//!
//! ```text
//! envelope = version:u8 (1) sent_at_us:varint from:varint to_shard:u8 count:varint msg*count
//! msg      = tag:u8 fields…            (tags in RemoteMsg's order, 0 = Join … 11 = Close)
//! varint   = LEB128, at most 10 bytes
//! bytes    = len:varint byte*len        (str: the same, UTF-8 checked)
//! option   = 0 | 1 value
//! conn     = shard:varint slot:varint generation:varint   (shard in global form)
//! key      = room:str tenant:str
//! ```
//!
//! Ids: a `ConnId.shard` or `ShardId` below 256 names a shard of this node;
//! `node << 8 | shard` names shard `shard` of node `node` (1..=255). `encode`
//! writes every id in that global form, `decode` turns the ids of its own
//! node back to local ones and leaves the others global.
//!
//! `decode` reads untrusted bytes: it never panics, checks every length
//! against what is left of the input before allocating, bounds counts and
//! lengths (`MSGS_MAX`, `BYTES_MAX`, `STR_MAX`), and refuses trailing bytes.

// Until the bridge (the lead's `cluster` module) calls it.

use std::fmt;
use std::sync::Arc;

use crate::ids::{ConnId, RoomKey, ShardId};
use crate::msg::RemoteMsg;
use crate::protocol::{MeetingRequest, Since};
use crate::refusal::Refusal;
use crate::room::{Audience, Membership, Peer, Role};
use crate::ws::CloseCode;
use crate::ws::frame::Frame;

/// The format this module writes; `decode` refuses any other.
pub const VERSION: u8 = 1;
/// Most messages in one envelope.
pub const MSGS_MAX: usize = 4096;
/// Longest payload (a frame, `data`, a chat text, a reference), in bytes.
pub const BYTES_MAX: usize = 16 << 20;
/// Longest identifier string (room, tenant, user, name, epoch, chat id), in bytes.
pub const STR_MAX: usize = 64 << 10;

/// Shard messages from one shard of one node to one shard of another.
#[derive(Debug)]
pub struct Envelope {
    /// Sender's wall clock, unix µs (the receiver measures lag with it).
    pub sent_at_us: u64,
    /// The sending shard, in cluster-global form (see the module doc).
    pub from: ShardId,
    /// The destination shard on the receiving node: a local shard index, or
    /// `GATEWAY` = "the shard that owns the message's room by hash on the receiver".
    pub to_shard: u8,
    pub msgs: Vec<RemoteMsg>,
}

/// Why bytes are not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The input ends inside a value.
    Truncated,
    /// A format version this build does not read.
    Version(u8),
    /// Bytes left over after the envelope.
    Trailing(usize),
    /// A count or length over its bound.
    TooLong { what: &'static str, len: u64, max: u64 },
    /// A varint over 10 bytes or over the range of its field.
    BadNumber(&'static str),
    /// An unknown tag (message kind, role, option marker, …).
    BadTag { what: &'static str, tag: u8 },
    /// A string that is not UTF-8 (or a room id holding NUL).
    BadString(&'static str),
    /// A connection or shard id without a node (below 256 on the wire).
    LocalId(u16),
    /// A refusal number this build does not know.
    UnknownRefusal(u8),
    /// A close code that may not be sent.
    BadCloseCode(u16),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated => write!(f, "truncated envelope"),
            WireError::Version(version) => write!(f, "unknown envelope version {version} (this build reads {VERSION})"),
            WireError::Trailing(left) => write!(f, "{left} bytes after the envelope"),
            WireError::TooLong { what, len, max } => write!(f, "{what}: {len} is over the maximum of {max}"),
            WireError::BadNumber(what) => write!(f, "{what}: number out of range"),
            WireError::BadTag { what, tag } => write!(f, "{what}: unknown tag {tag}"),
            WireError::BadString(what) => write!(f, "{what}: not a valid string"),
            WireError::LocalId(id) => write!(f, "shard id {id} names no node"),
            WireError::UnknownRefusal(id) => write!(f, "unknown refusal {id}"),
            WireError::BadCloseCode(code) => write!(f, "close code {code} may not be sent"),
        }
    }
}

impl std::error::Error for WireError {}

// Message tags, in `RemoteMsg`'s order. Append only.
const JOIN: u8 = 0;
const LEAVE: u8 = 1;
const PUBLISH: u8 = 2;
const DIRECT: u8 = 3;
const JOINED: u8 = 4;
const JOIN_REFUSED: u8 = 5;
const LEFT: u8 = 6;
const DELIVER: u8 = 7;
const FANOUT: u8 = 8;
const ROLE: u8 = 9;
const MEETING: u8 = 10;
const CLOSE: u8 = 11;

/// Appends `envelope` to `out`, every id in global form (`own_node` is this
/// node's number, 1..=255). Counts and lengths are not checked here: the
/// bridge keeps envelopes within `MSGS_MAX` and the payloads within
/// `BYTES_MAX` / `STR_MAX`, or the receiver refuses them.
pub fn encode(envelope: &Envelope, own_node: u8, out: &mut Vec<u8>) {
    let mut w = Writer { out, node: own_node };
    w.u8(VERSION);
    w.varint(envelope.sent_at_us);
    w.shard(envelope.from);
    w.u8(envelope.to_shard);
    w.len(envelope.msgs.len());
    for msg in &envelope.msgs {
        w.msg(msg);
    }
}

/// Reads one envelope, turning the ids of `own_node` back to local form.
pub fn decode(bytes: &[u8], own_node: u8) -> Result<Envelope, WireError> {
    let mut r = Reader { bytes, at: 0, node: own_node };
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let sent_at_us = r.varint()?;
    let from = r.shard()?;
    let to_shard = r.u8()?;
    let count = r.count("messages", MSGS_MAX)?;
    let mut msgs = Vec::with_capacity(count);
    for _ in 0..count {
        msgs.push(r.msg()?);
    }
    match r.bytes.len() - r.at {
        0 => Ok(Envelope { sent_at_us, from, to_shard, msgs }),
        left => Err(WireError::Trailing(left)),
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    node: u8,
}

impl Writer<'_> {
    fn u8(&mut self, byte: u8) {
        self.out.push(byte);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.out.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.out.push(value as u8);
    }

    fn len(&mut self, len: usize) {
        self.varint(len as u64);
    }

    fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.out.extend_from_slice(bytes);
    }

    fn opt_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.u8(0),
            Some(bytes) => {
                self.u8(1);
                self.bytes(bytes);
            }
        }
    }

    fn opt_str(&mut self, text: Option<&str>) {
        self.opt_bytes(text.map(str::as_bytes));
    }

    fn opt_u32(&mut self, value: Option<u32>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.varint(value.into());
            }
        }
    }

    /// A shard id in global form.
    fn shard(&mut self, shard: ShardId) {
        let global = if shard < 256 { u16::from(self.node) << 8 | shard } else { shard };
        self.varint(global.into());
    }

    fn conn(&mut self, conn: ConnId) {
        self.shard(conn.shard);
        self.varint(conn.slot.into());
        self.varint(conn.generation.into());
    }

    fn key(&mut self, key: &RoomKey) {
        self.bytes(key.room().as_bytes());
        self.bytes(key.tenant().as_bytes());
    }

    fn membership(&mut self, membership: Membership) {
        for part in membership.to_wire() {
            self.varint(part.into());
        }
    }

    fn peer(&mut self, peer: &Peer) {
        self.conn(peer.conn);
        self.bytes(peer.user().as_bytes());
        self.opt_str(peer.name());
        self.u8(u8::from(peer.host) | u8::from(peer.names_room()) << 1);
    }

    fn role(&mut self, role: Role) {
        self.u8(match role {
            Role::Waiting => 0,
            Role::Participant => 1,
            Role::Screenshare => 2,
            Role::Host => 3,
        });
    }

    fn msg(&mut self, msg: &RemoteMsg) {
        match msg {
            RemoteMsg::Join { peer, key, tag, quiet, reference, since } => {
                self.u8(JOIN);
                self.peer(peer);
                self.key(key);
                self.varint((*tag).into());
                self.bool(*quiet);
                self.opt_bytes(reference.as_deref());
                match since {
                    None => self.u8(0),
                    Some(since) => {
                        self.u8(1);
                        self.varint(since.seq);
                        self.opt_str(since.epoch.as_deref());
                    }
                }
            }
            RemoteMsg::Leave { key, membership, conn, reference, requested } => {
                self.u8(LEAVE);
                self.key(key);
                self.membership(*membership);
                self.conn(*conn);
                self.opt_bytes(reference.as_deref());
                self.bool(*requested);
            }
            RemoteMsg::Publish { membership, conn, reference, data } => {
                self.u8(PUBLISH);
                self.membership(*membership);
                self.conn(*conn);
                self.opt_bytes(reference.as_deref());
                self.bytes(data);
            }
            RemoteMsg::Direct { key, from, reference, data } => {
                self.u8(DIRECT);
                self.key(key);
                self.peer(from);
                self.opt_bytes(reference.as_deref());
                self.bytes(data);
            }
            RemoteMsg::Joined { conn, key, tag, membership, role } => {
                self.u8(JOINED);
                self.conn(*conn);
                self.key(key);
                self.varint((*tag).into());
                self.membership(*membership);
                self.role(*role);
            }
            RemoteMsg::JoinRefused { conn, key, tag, reason, reference } => {
                self.u8(JOIN_REFUSED);
                self.conn(*conn);
                self.key(key);
                self.varint((*tag).into());
                // The refusals without a number (auth's, the request
                // decoder's field errors) are never a join's answer.
                let internal = Refusal::Internal.wire_id().unwrap_or_default();
                self.u8(reason.wire_id().unwrap_or(internal));
                self.opt_bytes(reference.as_deref());
            }
            RemoteMsg::Left { conn, key, membership } => {
                self.u8(LEFT);
                self.conn(*conn);
                self.key(key);
                self.membership(*membership);
            }
            RemoteMsg::Deliver { to, frame } => {
                self.u8(DELIVER);
                self.conn(*to);
                self.bytes(frame);
            }
            RemoteMsg::Fanout { key, audience, skip, frame } => {
                self.u8(FANOUT);
                self.key(key);
                self.u8(match audience {
                    Audience::All => 0,
                    Audience::Admitted => 1,
                    Audience::Hosts => 2,
                });
                match skip {
                    None => self.u8(0),
                    Some(conn) => {
                        self.u8(1);
                        self.conn(*conn);
                    }
                }
                self.bytes(frame);
            }
            RemoteMsg::Role { conn, key, membership, role } => {
                self.u8(ROLE);
                self.conn(*conn);
                self.key(key);
                self.membership(*membership);
                self.role(*role);
            }
            RemoteMsg::Meeting { membership, conn, reference, request, now_unix_ms } => {
                self.u8(MEETING);
                self.membership(*membership);
                self.conn(*conn);
                self.opt_bytes(reference.as_deref());
                self.meeting(request);
                self.varint(*now_unix_ms);
            }
            RemoteMsg::Close { conn, code } => {
                self.u8(CLOSE);
                self.conn(*conn);
                self.out.extend_from_slice(&code.code.to_le_bytes());
                self.bytes(code.reason.as_bytes());
            }
        }
    }

    fn meeting(&mut self, request: &MeetingRequest) {
        match request {
            MeetingRequest::ChatSend { text, id } => {
                self.u8(0);
                self.bytes(text.as_bytes());
                self.opt_str(id.as_deref());
            }
            MeetingRequest::ChatDelete { id } => {
                self.u8(1);
                self.bytes(id.as_bytes());
            }
            MeetingRequest::ChatHistory { limit } => {
                self.u8(2);
                self.opt_u32(*limit);
            }
            MeetingRequest::HandRaise => self.u8(3),
            MeetingRequest::HandLower { user } => {
                self.u8(4);
                self.opt_str(user.as_deref());
            }
            MeetingRequest::ScreenshareRequest => self.u8(5),
            MeetingRequest::ScreenshareGrant { user } => {
                self.u8(6);
                self.bytes(user.as_bytes());
            }
            MeetingRequest::ScreenshareDeny { user } => {
                self.u8(7);
                self.bytes(user.as_bytes());
            }
            MeetingRequest::ScreenshareStop { user } => {
                self.u8(8);
                self.opt_str(user.as_deref());
            }
            MeetingRequest::LobbyAdmit { user } => {
                self.u8(9);
                self.bytes(user.as_bytes());
            }
            MeetingRequest::LobbyDeny { user } => {
                self.u8(10);
                self.bytes(user.as_bytes());
            }
            MeetingRequest::LobbySet { enabled } => {
                self.u8(11);
                self.bool(*enabled);
            }
            MeetingRequest::Kick { user } => {
                self.u8(12);
                self.bytes(user.as_bytes());
            }
            MeetingRequest::Signal { to, data } => {
                self.u8(13);
                self.bytes(to.as_bytes());
                self.bytes(data);
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    node: u8,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let byte = *self.bytes.get(self.at).ok_or(WireError::Truncated)?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(WireError::BadNumber("varint"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::BadNumber("varint"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        u32::try_from(self.varint()?).map_err(|_| WireError::BadNumber(what))
    }

    /// A count or length: at most `max`, and no more than the bytes left
    /// (every element takes at least one), so it can size an allocation.
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(WireError::TooLong { what, len, max: max as u64 });
        }
        let len = len as usize;
        if len > self.bytes.len() - self.at {
            return Err(WireError::Truncated);
        }
        Ok(len)
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(WireError::BadTag { what, tag }),
        }
    }

    fn slice(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.count(what, max)?;
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.slice(what, max)?).map_err(|_| WireError::BadString(what))
    }

    fn boxed_str(&mut self, what: &'static str, max: usize) -> Result<Box<str>, WireError> {
        self.str(what, max).map(Box::from)
    }

    fn boxed_bytes(&mut self, what: &'static str) -> Result<Box<[u8]>, WireError> {
        self.slice(what, BYTES_MAX).map(Box::from)
    }

    fn opt_bytes(&mut self, what: &'static str) -> Result<Option<Box<[u8]>>, WireError> {
        Ok(if self.bool(what)? { Some(self.boxed_bytes(what)?) } else { None })
    }

    fn opt_str(&mut self, what: &'static str) -> Result<Option<Box<str>>, WireError> {
        Ok(if self.bool(what)? { Some(self.boxed_str(what, STR_MAX)?) } else { None })
    }

    /// A global shard id, back to local form if it is of this node.
    fn shard(&mut self) -> Result<ShardId, WireError> {
        let global = ShardId::try_from(self.varint()?).map_err(|_| WireError::BadNumber("shard"))?;
        match global >> 8 {
            0 => Err(WireError::LocalId(global)),
            node if node == u16::from(self.node) => Ok(global & 0xff),
            _ => Ok(global),
        }
    }

    fn conn(&mut self) -> Result<ConnId, WireError> {
        Ok(ConnId { shard: self.shard()?, slot: self.u32("slot")?, generation: self.u32("generation")? })
    }

    fn key(&mut self) -> Result<RoomKey, WireError> {
        let room = self.str("room", STR_MAX)?;
        if room.contains('\0') {
            return Err(WireError::BadString("room"));
        }
        let tenant = self.str("tenant", STR_MAX)?;
        Ok(RoomKey::new(tenant, room))
    }

    fn membership(&mut self) -> Result<Membership, WireError> {
        Ok(Membership::from_wire([self.u32("membership")?, self.u32("membership")?, self.u32("membership")?]))
    }

    fn peer(&mut self) -> Result<Arc<Peer>, WireError> {
        let conn = self.conn()?;
        let user = self.str("user", STR_MAX)?;
        let name = if self.bool("name")? { Some(self.str("name", STR_MAX)?) } else { None };
        let flags = self.u8()?;
        if flags > 3 {
            return Err(WireError::BadTag { what: "peer flags", tag: flags });
        }
        Ok(Peer::with_claims(conn, user, name, flags & 1 != 0, flags & 2 != 0))
    }

    fn role(&mut self) -> Result<Role, WireError> {
        match self.u8()? {
            0 => Ok(Role::Waiting),
            1 => Ok(Role::Participant),
            2 => Ok(Role::Screenshare),
            3 => Ok(Role::Host),
            tag => Err(WireError::BadTag { what: "role", tag }),
        }
    }

    fn frame(&mut self) -> Result<Frame, WireError> {
        self.slice("frame", BYTES_MAX).map(Arc::from)
    }

    fn msg(&mut self) -> Result<RemoteMsg, WireError> {
        Ok(match self.u8()? {
            JOIN => RemoteMsg::Join {
                peer: self.peer()?,
                key: self.key()?,
                tag: self.u32("tag")?,
                quiet: self.bool("quiet")?,
                reference: self.opt_bytes("reference")?,
                since: if self.bool("since")? {
                    Some(Box::new(Since { seq: self.varint()?, epoch: self.opt_str("epoch")? }))
                } else {
                    None
                },
            },
            LEAVE => RemoteMsg::Leave {
                key: self.key()?,
                membership: self.membership()?,
                conn: self.conn()?,
                reference: self.opt_bytes("reference")?,
                requested: self.bool("requested")?,
            },
            PUBLISH => RemoteMsg::Publish {
                membership: self.membership()?,
                conn: self.conn()?,
                reference: self.opt_bytes("reference")?,
                data: self.boxed_bytes("data")?,
            },
            DIRECT => RemoteMsg::Direct {
                key: self.key()?,
                from: self.peer()?,
                reference: self.opt_bytes("reference")?,
                data: self.boxed_bytes("data")?,
            },
            JOINED => RemoteMsg::Joined {
                conn: self.conn()?,
                key: self.key()?,
                tag: self.u32("tag")?,
                membership: self.membership()?,
                role: self.role()?,
            },
            JOIN_REFUSED => RemoteMsg::JoinRefused {
                conn: self.conn()?,
                key: self.key()?,
                tag: self.u32("tag")?,
                reason: {
                    let id = self.u8()?;
                    Refusal::from_wire_id(id).ok_or(WireError::UnknownRefusal(id))?
                },
                reference: self.opt_bytes("reference")?,
            },
            LEFT => RemoteMsg::Left { conn: self.conn()?, key: self.key()?, membership: self.membership()? },
            DELIVER => RemoteMsg::Deliver { to: self.conn()?, frame: self.frame()? },
            FANOUT => RemoteMsg::Fanout {
                key: self.key()?,
                audience: match self.u8()? {
                    0 => Audience::All,
                    1 => Audience::Admitted,
                    2 => Audience::Hosts,
                    tag => return Err(WireError::BadTag { what: "audience", tag }),
                },
                skip: if self.bool("skip")? { Some(self.conn()?) } else { None },
                frame: self.frame()?,
            },
            ROLE => RemoteMsg::Role {
                conn: self.conn()?,
                key: self.key()?,
                membership: self.membership()?,
                role: self.role()?,
            },
            MEETING => RemoteMsg::Meeting {
                membership: self.membership()?,
                conn: self.conn()?,
                reference: self.opt_bytes("reference")?,
                request: self.meeting()?,
                now_unix_ms: self.varint()?,
            },
            CLOSE => RemoteMsg::Close { conn: self.conn()?, code: self.close_code()? },
            tag => return Err(WireError::BadTag { what: "message", tag }),
        })
    }

    /// The constant of `CloseCode::KNOWN` with this code and reason; a code
    /// with an unknown reason (a newer node's constant) keeps its code and
    /// loses its reason, since reasons are `&'static`.
    fn close_code(&mut self) -> Result<CloseCode, WireError> {
        let code = u16::from_le_bytes([self.u8()?, self.u8()?]);
        let reason = self.str("close reason", STR_MAX)?;
        if !CloseCode::is_valid_received(code) {
            return Err(WireError::BadCloseCode(code));
        }
        let known = CloseCode::KNOWN.iter().find(|known| known.code == code && known.reason == reason);
        Ok(known.copied().unwrap_or(CloseCode { code, reason: "" }))
    }

    fn meeting(&mut self) -> Result<MeetingRequest, WireError> {
        Ok(match self.u8()? {
            0 => MeetingRequest::ChatSend { text: self.boxed_str("text", BYTES_MAX)?, id: self.opt_str("id")? },
            1 => MeetingRequest::ChatDelete { id: self.boxed_str("id", STR_MAX)? },
            2 => {
                MeetingRequest::ChatHistory { limit: if self.bool("limit")? { Some(self.u32("limit")?) } else { None } }
            }
            3 => MeetingRequest::HandRaise,
            4 => MeetingRequest::HandLower { user: self.opt_str("user")? },
            5 => MeetingRequest::ScreenshareRequest,
            6 => MeetingRequest::ScreenshareGrant { user: self.boxed_str("user", STR_MAX)? },
            7 => MeetingRequest::ScreenshareDeny { user: self.boxed_str("user", STR_MAX)? },
            8 => MeetingRequest::ScreenshareStop { user: self.opt_str("user")? },
            9 => MeetingRequest::LobbyAdmit { user: self.boxed_str("user", STR_MAX)? },
            10 => MeetingRequest::LobbyDeny { user: self.boxed_str("user", STR_MAX)? },
            11 => MeetingRequest::LobbySet { enabled: self.bool("enabled")? },
            12 => MeetingRequest::Kick { user: self.boxed_str("user", STR_MAX)? },
            13 => MeetingRequest::Signal { to: self.boxed_str("to", STR_MAX)?, data: self.boxed_bytes("data")? },
            tag => return Err(WireError::BadTag { what: "meeting request", tag }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::cluster::GATEWAY;
    use crate::refusal::RequestError;

    /// Connection ids through `shard`, so one builder gives a message as
    /// the sender holds it and as each receiver should read it.
    fn conn(shard: &impl Fn(u16) -> u16, local: u16, slot: u32) -> ConnId {
        ConnId { shard: shard(local), slot, generation: slot.wrapping_mul(7) ^ 0xdead_beef }
    }

    fn membership(n: u32) -> Membership {
        Membership::from_wire([n, n + 1, u32::MAX - n])
    }

    fn meetings() -> Vec<MeetingRequest> {
        vec![
            MeetingRequest::ChatSend { text: "héllo".into(), id: Some("c1".into()) },
            MeetingRequest::ChatSend { text: "".into(), id: None },
            MeetingRequest::ChatDelete { id: "c1".into() },
            MeetingRequest::ChatHistory { limit: Some(u32::MAX) },
            MeetingRequest::ChatHistory { limit: None },
            MeetingRequest::HandRaise,
            MeetingRequest::HandLower { user: Some("bob".into()) },
            MeetingRequest::HandLower { user: None },
            MeetingRequest::ScreenshareRequest,
            MeetingRequest::ScreenshareGrant { user: "bob".into() },
            MeetingRequest::ScreenshareDeny { user: "bob".into() },
            MeetingRequest::ScreenshareStop { user: Some("bob".into()) },
            MeetingRequest::ScreenshareStop { user: None },
            MeetingRequest::LobbyAdmit { user: "bob".into() },
            MeetingRequest::LobbyDeny { user: "bob".into() },
            MeetingRequest::LobbySet { enabled: true },
            MeetingRequest::Kick { user: "bob".into() },
            MeetingRequest::Signal { to: "bob".into(), data: b"{\"sdp\":1}".as_slice().into() },
        ]
    }

    /// Every variant (and the options of each both ways), with ids of this
    /// node (0, 1, 7, 254), of node 3 (0x0305) and of node 4 (0x0407).
    fn sample(shard: impl Fn(u16) -> u16) -> Vec<RemoteMsg> {
        let s = &shard;
        let key = RoomKey::new("acme", "demo");
        let frame: Frame = Arc::from(&b"\x81\x05hello"[..]);
        let mut msgs = vec![
            RemoteMsg::Join {
                peer: Peer::with_claims(conn(s, 1, 1), "alice", Some("Alice"), true, false),
                key: key.clone(),
                tag: 7,
                quiet: true,
                reference: Some(b"r1".as_slice().into()),
                since: Some(Box::new(Since { seq: u64::MAX, epoch: Some("e1".into()) })),
            },
            RemoteMsg::Join {
                peer: Peer::with_claims(conn(s, 0x0305, 2), "b\"ob\u{1}", None, false, true),
                key: RoomKey::new("", "user:x y"),
                tag: 0,
                quiet: false,
                reference: None,
                since: Some(Box::new(Since { seq: 0, epoch: None })),
            },
            RemoteMsg::Join {
                peer: Peer::with_claims(conn(s, 0x0407, 3), "", Some(""), true, true),
                key: RoomKey::new("t\0weird", "r"),
                tag: u32::MAX,
                quiet: false,
                reference: Some(Box::default()),
                since: None,
            },
            RemoteMsg::Leave {
                key: key.clone(),
                membership: membership(1),
                conn: conn(s, 0, 4),
                reference: Some(b"bye".as_slice().into()),
                requested: true,
            },
            RemoteMsg::Leave {
                key: key.clone(),
                membership: membership(2),
                conn: conn(s, 0x0305, 5),
                reference: None,
                requested: false,
            },
            RemoteMsg::Publish {
                membership: membership(3),
                conn: conn(s, 254, 6),
                reference: None,
                data: b"{\"x\":1}".as_slice().into(),
            },
            RemoteMsg::Direct {
                key: key.clone(),
                from: Peer::with_claims(conn(s, 7, 7), "carol", None, false, false),
                reference: Some(b"d".as_slice().into()),
                data: Box::default(),
            },
            RemoteMsg::Joined {
                conn: conn(s, 1, 8),
                key: key.clone(),
                tag: 9,
                membership: membership(4),
                role: Role::Waiting,
            },
            RemoteMsg::JoinRefused {
                conn: conn(s, 0x0407, 9),
                key: key.clone(),
                tag: 10,
                reason: Refusal::RoomFull,
                reference: Some(b"j".as_slice().into()),
            },
            RemoteMsg::JoinRefused {
                conn: conn(s, 1, 10),
                key: key.clone(),
                tag: 11,
                reason: Refusal::Request(RequestError::Unreadable),
                reference: None,
            },
            RemoteMsg::Left { conn: conn(s, 1, 11), key: key.clone(), membership: membership(5) },
            RemoteMsg::Deliver { to: conn(s, 0x0305, 12), frame: frame.clone() },
            RemoteMsg::Fanout { key: key.clone(), audience: Audience::All, skip: None, frame: frame.clone() },
            RemoteMsg::Fanout {
                key: key.clone(),
                audience: Audience::Admitted,
                skip: Some(conn(s, 2, 13)),
                frame: frame.clone(),
            },
            RemoteMsg::Fanout { key: key.clone(), audience: Audience::Hosts, skip: Some(conn(s, 0x0407, 14)), frame },
            RemoteMsg::Role {
                conn: conn(s, 1, 15),
                key: key.clone(),
                membership: membership(6),
                role: Role::Participant,
            },
            RemoteMsg::Role {
                conn: conn(s, 1, 16),
                key: key.clone(),
                membership: membership(7),
                role: Role::Screenshare,
            },
            RemoteMsg::Role { conn: conn(s, 1, 17), key, membership: membership(8), role: Role::Host },
            RemoteMsg::Close { conn: conn(s, 1, 18), code: CloseCode::KICKED },
            RemoteMsg::Close { conn: conn(s, 0x0305, 19), code: CloseCode::NORMAL },
        ];
        for (at, request) in meetings().into_iter().enumerate() {
            let at = at as u32;
            msgs.push(RemoteMsg::Meeting {
                membership: membership(at),
                conn: conn(s, 3, 100 + at),
                reference: at.is_multiple_of(2).then(|| b"m".as_slice().into()),
                request,
                now_unix_ms: 1_700_000_000_000 + u64::from(at),
            });
        }
        msgs
    }

    fn envelope(shard: impl Fn(u16) -> u16, from: u16) -> Envelope {
        Envelope { sent_at_us: 1_700_000_000_123_456, from: shard(from), to_shard: GATEWAY, msgs: sample(shard) }
    }

    fn encoded(node: u8) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&envelope(|s| s, 1), node, &mut out);
        out
    }

    /// A fixed-seed xorshift: the same bytes on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_sample_holds_every_message_and_request_kind() {
        let kinds: std::collections::HashSet<_> = sample(|s| s).iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 12, "one of each RemoteMsg variant");
        let requests: std::collections::HashSet<_> = meetings().iter().map(std::mem::discriminant).collect();
        assert_eq!(requests.len(), 14, "one of each MeetingRequest variant");
    }

    #[test]
    fn every_message_round_trips_with_its_ids_made_global_then_local_again() {
        let bytes = encoded(2);
        // On node 3: node 2's ids stay global, node 3's become local, node 4's stay.
        let on_3 = decode(&bytes, 3).expect("decodes");
        let to_3 = |s: u16| match s {
            0..=255 => 0x0200 | s,
            0x0300..=0x03ff => s & 0xff,
            _ => s,
        };
        assert_eq!(format!("{on_3:?}"), format!("{:?}", envelope(to_3, 1)));
        assert_eq!(on_3.from, 0x0201);

        // Back from node 3 to node 2: the original, local ids and all.
        let mut again = Vec::new();
        encode(&on_3, 3, &mut again);
        let on_2 = decode(&again, 2).expect("decodes");
        assert_eq!(format!("{on_2:?}"), format!("{:?}", envelope(|s| s, 1)));
        // And the same bytes as the first encoding: nothing drifted.
        assert_eq!(again, bytes);
    }

    #[test]
    fn every_prefix_and_any_extra_byte_is_refused() {
        let bytes = encoded(2);
        for end in 0..bytes.len() {
            assert!(decode(&bytes[..end], 3).is_err(), "a prefix of {end} bytes decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer, 3).map(|_| ()), Err(WireError::Trailing(1)));
        let mut newer = bytes;
        newer[0] = VERSION + 1;
        assert_eq!(decode(&newer, 3).map(|_| ()), Err(WireError::Version(VERSION + 1)));
    }

    /// An envelope head (version, time, from 0x0201, gateway), then `rest`.
    fn with_head(rest: &[u8]) -> Vec<u8> {
        let mut bytes = vec![VERSION, 0, 0x81, 0x04, GATEWAY];
        bytes.extend_from_slice(rest);
        bytes
    }

    fn leb(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Writer { out: &mut out, node: 0 }.varint(value);
        out
    }

    #[test]
    fn oversize_counts_and_lengths_are_refused_before_any_allocation() {
        let too_many = with_head(&leb(MSGS_MAX as u64 + 1));
        assert!(matches!(decode(&too_many, 3), Err(WireError::TooLong { what: "messages", .. })));
        // A count the input cannot hold: refused, not allocated.
        assert_eq!(decode(&with_head(&leb(MSGS_MAX as u64)), 3).map(|_| ()), Err(WireError::Truncated));

        // A Deliver to 0x0201.1.1 with a frame of BYTES_MAX + 1 bytes (absent).
        let mut deliver = vec![1, DELIVER, 0x81, 0x04, 1, 1];
        deliver.extend(leb(BYTES_MAX as u64 + 1));
        assert!(matches!(decode(&with_head(&deliver), 3), Err(WireError::TooLong { what: "frame", .. })));
        let mut deliver = vec![1, DELIVER, 0x81, 0x04, 1, 1];
        deliver.extend(leb(BYTES_MAX as u64));
        assert_eq!(decode(&with_head(&deliver), 3).map(|_| ()), Err(WireError::Truncated));

        // A Left whose room is STR_MAX + 1 bytes.
        let mut left = vec![1, LEFT, 0x81, 0x04, 1, 1];
        left.extend(leb(STR_MAX as u64 + 1));
        left.extend(vec![b'a'; STR_MAX + 1]);
        assert!(matches!(decode(&with_head(&left), 3), Err(WireError::TooLong { what: "room", .. })));

        // An 11-byte varint, and one past 64 bits.
        let mut long = vec![VERSION];
        long.extend([0xff; 10]);
        long.push(0);
        assert_eq!(decode(&long, 3).map(|_| ()), Err(WireError::BadNumber("varint")));
        let mut wide = vec![VERSION];
        wide.extend([0xff; 9]);
        wide.push(0x02);
        assert_eq!(decode(&wide, 3).map(|_| ()), Err(WireError::BadNumber("varint")));
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        // A sender id without a node.
        assert_eq!(decode(&[VERSION, 0, 5, 0, 0], 3).map(|_| ()), Err(WireError::LocalId(5)));
        // An unknown message tag.
        assert_eq!(decode(&with_head(&[1, 200]), 3).map(|_| ()), Err(WireError::BadTag { what: "message", tag: 200 }));
        // A Close with an invalid code, then one whose reason is unknown here.
        let mut close = vec![1, CLOSE, 0x81, 0x04, 1, 1];
        close.extend(1005u16.to_le_bytes());
        close.push(0);
        assert_eq!(decode(&with_head(&close), 3).map(|_| ()), Err(WireError::BadCloseCode(1005)));
        let mut close = vec![1, CLOSE, 0x81, 0x04, 1, 1];
        close.extend(4003u16.to_le_bytes());
        close.extend([3, b'x', b'y', b'z']);
        let envelope = decode(&with_head(&close), 3).expect("a newer node's close still closes");
        assert!(
            matches!(envelope.msgs[..], [RemoteMsg::Close { code: CloseCode { code: 4003, reason: "" }, .. }]),
            "{envelope:?}"
        );
        // A refusal number this build does not know.
        let mut refused = vec![1, JOIN_REFUSED, 0x81, 0x04, 1, 1, 1, b'r', 0, 0, 255];
        refused.push(0);
        assert_eq!(decode(&with_head(&refused), 3).map(|_| ()), Err(WireError::UnknownRefusal(255)));
        // A room id that is not UTF-8.
        let left = [1, LEFT, 0x81, 0x04, 1, 1, 1, 0xff, 0, 0, 0, 0];
        assert_eq!(decode(&with_head(&left), 3).map(|_| ()), Err(WireError::BadString("room")));
        for error in [WireError::Truncated, WireError::TooLong { what: "frame", len: 9, max: 8 }] {
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn every_known_close_code_crosses_as_itself() {
        for &code in CloseCode::KNOWN {
            let envelope = Envelope {
                sent_at_us: 0,
                from: 0,
                to_shard: 0,
                msgs: vec![RemoteMsg::Close { conn: ConnId { shard: 0, slot: 0, generation: 0 }, code }],
            };
            let mut bytes = Vec::new();
            encode(&envelope, 1, &mut bytes);
            let back = decode(&bytes, 1).expect("decodes");
            assert!(matches!(back.msgs[..], [RemoteMsg::Close { code: read, .. }] if read == code), "{code:?}");
        }
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(first) = bytes.first_mut() {
                // Mostly the right version, so the decoder gets past it.
                if !rng.next().is_multiple_of(4) {
                    *first = VERSION;
                }
            }
            let _ = decode(&bytes, (rng.next() % 256) as u8);
        }
        let valid = encoded(2);
        for _ in 0..5_000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            if let Ok(envelope) = decode(&bytes, 3) {
                let mut again = Vec::new();
                encode(&envelope, 3, &mut again);
                assert!(decode(&again, 3).is_ok(), "what decodes re-encodes");
            }
        }
    }
}
