//! One client connection on its shard: socket, lifecycle, inbound remainder,
//! outbound queue of shared frames and rate bucket.
//!
//! Idle connections hold no buffers: `inbound` is `None` unless a frame was
//! cut by a read, `fragments` is `None` unless a fragmented message is in
//! flight, and the outbound queue gives its memory back once it drains.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use smallvec::SmallVec;

use crate::auth::{Identity, RoomScope};
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::refusal::{Perm, Refusal};
use crate::room::{Membership, Peer};
use crate::ws::frame::{Fragments, Frame};

/// Where a connection is in its life. Closed connections are not a state:
/// they are on the shard's reap list and gone before the next iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Open,
    /// Our Close frame is queued. `peer_closed`: it answers the peer's Close,
    /// so the socket is dropped once it is written; otherwise we wait for the
    /// peer's Close (or EOF) until the close deadline.
    Closing {
        peer_closed: bool,
    },
    /// The connection failed (RFC 6455 §7.1.7): a frame broke the protocol,
    /// the peer's Close was invalid, or it flooded control frames. Our Close
    /// is queued, nothing more the peer sends is decoded (the stream may be
    /// out of step), and the socket is shut once the Close is written,
    /// without waiting for the peer's Close.
    Failed,
}

impl ConnState {
    /// Whether the socket is shut as soon as our Close is written: the peer
    /// closed already, or the connection failed. Nothing more is read then.
    pub fn shuts_when_written(self) -> bool {
        matches!(self, ConnState::Closing { peer_closed: true } | ConnState::Failed)
    }
}

/// What the connection is for.
#[derive(Debug)]
pub enum Role {
    /// A member of a room, authenticated. Inline, not boxed: nearly every
    /// connection is one, and a box would cost a pointer and a heap chunk's
    /// header each.
    Member(Member),
    /// A connection of the echo listener (conformance runs).
    Echo,
}

/// The room side of a connection.
#[derive(Debug)]
pub struct Member {
    /// What the token grants; the user id and name are in `peer`.
    pub grants: Grants,
    pub peer: Arc<Peer>,
    /// Every room the connection is in: the home room first, then its
    /// personal and group rooms, then rooms it joined. Emptied when the
    /// connection starts closing. At most `rooms_per_connection_max`.
    /// The first two (home and personal: all an idle connection has) are
    /// inline, so an idle connection's rooms need no allocation of their own.
    pub rooms: SmallVec<[JoinedRoom; 2]>,
    /// Joins made so far; the next join's tag.
    pub joins: u32,
    /// When the connection was admitted, in ms since the shard started
    /// (wrapping): the close line's `duration_ms`. Sits in what was padding.
    pub opened_ms: u32,
    /// The room of the URL, kept past `rooms` being emptied at close for the
    /// close line and the disconnect webhook (the room table's shared key
    /// once admitted). Its tenant is the connection's: no copy of it is kept.
    pub home: RoomKey,
}

impl Member {
    /// The token's tenant (`""` when it had none).
    pub fn tenant(&self) -> &str {
        self.home.tenant()
    }

    /// The entry for room id `room` (in the member's tenant).
    pub fn room(&self, room: &str) -> Option<&JoinedRoom> {
        self.rooms.iter().find(|joined| joined.key.room() == room)
    }

    pub fn room_mut(&mut self, key: &RoomKey) -> Option<&mut JoinedRoom> {
        self.rooms.iter_mut().find(|joined| &joined.key == key)
    }
}

/// The parts of a token a connection needs after its handshake, kept small:
/// an idle connection's memory is the server's memory budget.
#[derive(Debug)]
pub struct Grants {
    /// What most tokens do not have, boxed: 16 bytes a connection, not 40.
    /// The tenant is not here at all: it is the home room's (`Member::tenant`).
    rare: Option<Box<RareGrants>>,
    /// The `room` claim names exactly the room of the URL. Most tokens
    /// with a claim do, and the member holds that id already
    /// (`Member::home`): such a claim keeps no copy of it.
    scope_is_url_room: bool,
    /// The token's `perms`, one bit per `Perm`; all set when it had none.
    perms: u8,
}

/// The `groups` claim, and a `room` claim other than the URL room (a
/// `prefix*`, or a room while the URL named the personal or a group room,
/// which the claim does not govern).
#[derive(Debug)]
struct RareGrants {
    groups: Box<[Box<str>]>,
    room_scope: Option<RoomScope>,
}

impl Grants {
    /// `home_room`: the room id of the URL.
    pub fn from_identity(identity: Identity, home_room: &str) -> Grants {
        let scope_is_url_room = matches!(&identity.room_scope, Some(RoomScope::Exact(room)) if **room == *home_room);
        let room_scope = identity.room_scope.filter(|_| !scope_is_url_room);
        let rare = (room_scope.is_some() || !identity.groups.is_empty()).then(|| {
            Box::new(RareGrants { groups: identity.groups.into_iter().map(Into::into).collect(), room_scope })
        });
        Grants { rare, scope_is_url_room, perms: perm_bits(identity.perms.as_deref()) }
    }

    /// The token's `groups` (empty when it had none).
    pub fn groups(&self) -> &[Box<str>] {
        self.rare.as_ref().map_or(&[], |rare| &rare.groups)
    }

    /// `Ok` when the token allows requests gated by `perm`, else the
    /// `forbidden` refusal naming it. A bit test: no token work on the shard.
    pub fn require(&self, perm: Perm) -> Result<(), Refusal> {
        if self.perms & perm_bit(perm) != 0 { Ok(()) } else { Err(Refusal::PermMissing(perm)) }
    }

    /// Whether `user` with these grants, connected to `home_room`, may be
    /// in `room` (see `Identity::may_join`).
    pub fn may_join(&self, user: &str, home_room: &str, room: &str) -> bool {
        let scope = self.rare.as_ref().and_then(|rare| rare.room_scope.as_ref());
        crate::auth::may_join_where(user, self.groups(), room, |room| {
            if self.scope_is_url_room { room == home_room } else { scope.is_none_or(|scope| scope.allows(room)) }
        })
    }
}

fn perm_bit(perm: Perm) -> u8 {
    1 << (perm as u8)
}

/// The `perms` claim as bits: absent = every permission (tokens from before
/// `perms` was enforced keep working); present = exactly the listed ones.
/// Names roomcast does not know are ignored.
fn perm_bits(claim: Option<&[String]>) -> u8 {
    let Some(names) = claim else { return Perm::ALL.iter().fold(0, |bits, &perm| bits | perm_bit(perm)) };
    Perm::ALL
        .iter()
        .filter(|perm| names.iter().any(|name| name == perm.name()))
        .fold(0, |bits, &perm| bits | perm_bit(perm))
}

/// One room a connection is in, and where that room lives. 32 bytes, as a
/// member keeps two inline (`Member::rooms`): the place and whether the
/// room was joined implicitly are packed into 16 (`place`, `set_place`).
#[derive(Debug)]
pub struct JoinedRoom {
    pub key: RoomKey,
    packed: PackedPlace,
}

/// A `Place` and the implicit bit in 16 bytes (the enum and a `bool` beside
/// it would take 24).
#[derive(Debug, Clone, Copy)]
struct PackedPlace {
    kind: PlaceKind,
    implicit: bool,
    /// The owning shard (`Pending`, `Remote`).
    owner: ShardId,
    /// The membership (`Membership::to_wire`), or the join's tag while pending.
    words: [u32; 3],
}

impl PackedPlace {
    fn new(place: Place, implicit: bool) -> PackedPlace {
        let (kind, owner, words) = match place {
            Place::Local(membership) => (PlaceKind::Local, 0, membership.to_wire()),
            Place::Pending { owner, tag } => (PlaceKind::Pending, owner, [tag, 0, 0]),
            Place::Remote { owner, membership } => (PlaceKind::Remote, owner, membership.to_wire()),
        };
        PackedPlace { kind, implicit, owner, words }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlaceKind {
    Local,
    Pending,
    Remote,
}

impl JoinedRoom {
    /// `implicit`: a personal or group room entered at connect, which
    /// cannot be left.
    pub fn new(key: RoomKey, place: Place, implicit: bool) -> JoinedRoom {
        JoinedRoom { key, packed: PackedPlace::new(place, implicit) }
    }

    pub fn place(&self) -> Place {
        let PackedPlace { kind, owner, words, .. } = self.packed;
        match kind {
            PlaceKind::Local => Place::Local(Membership::from_wire(words)),
            PlaceKind::Pending => Place::Pending { owner, tag: words[0] },
            PlaceKind::Remote => Place::Remote { owner, membership: Membership::from_wire(words) },
        }
    }

    pub fn set_place(&mut self, place: Place) {
        self.packed = PackedPlace::new(place, self.packed.implicit);
    }

    /// Joined implicitly (personal and group rooms); such rooms cannot be left.
    pub fn implicit(&self) -> bool {
        self.packed.implicit
    }

    /// Whether this is the join named `tag` (as carried by an owner's
    /// reply), still waiting for that reply: a reply to an earlier join of
    /// the same room, left while in flight, is not taken for this one.
    pub fn awaits(&self, tag: u32) -> bool {
        self.packed.kind == PlaceKind::Pending && self.packed.words[0] == tag
    }
}

/// Where a joined room's state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On this shard.
    Local(Membership),
    /// On shard `owner`, the join in flight (the owner has not answered);
    /// `tag` names the join in the owner's reply (the member's count of
    /// joins, wrapping).
    Pending { owner: ShardId, tag: u32 },
    /// On shard `owner`, at `membership`.
    Remote { owner: ShardId, membership: Membership },
}

impl Place {
    /// The shard that owns the room, when it is another.
    pub fn owner(self) -> Option<ShardId> {
        match self {
            Place::Local(_) => None,
            Place::Pending { owner, .. } | Place::Remote { owner, .. } => Some(owner),
        }
    }
}

#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    pub id: ConnId,
    pub state: ConnState,
    pub role: Role,
    /// Unix seconds at which the token runs out (`u32::MAX` without a
    /// token, or past 2106): see `expires_at_s`.
    pub(super) expires_at_s: u32,
    /// When the peer last sent anything, in ms since the shard started,
    /// wrapping (49 days): only ever compared with now, over far less than
    /// the idle timeout.
    pub last_rx_ms: u32,
    /// Inbound bytes kept between reads; `None` (one pointer) while idle.
    pub inbound: Option<Box<Inbound>>,
    pub outbound: OutboundQueue,
    pub rate: RateBucket,
    /// Ping and Pong frames the peer may still send (`limits.control_frames_per_s`).
    pub control_rate: RateBucket,
    /// Rate-limited messages so far; past `rate_strikes_max` the connection closes.
    pub rate_strikes: u32,
    /// Limits already logged for this connection (bit per `LimitKind`), so each is logged once.
    pub limits_logged: u64,
    /// On the shard's flush list this iteration.
    pub dirty: bool,
    /// On the shard's reap list: nothing more is done with it.
    pub doomed: bool,
    /// The first Close code sent: the server's (when it closed first) or
    /// the peer's echoed; `None` until then (the audit row then says 1006).
    pub close_code: Option<u16>,
    /// Since when (ms since the shard started, wrapping, 0 = not) the
    /// outbound queue has been over its soft bound (`QueueBounds`).
    pub over_soft_since_ms: u32,
}

/// A connection's outbound bounds, after Redis's client output buffers: a
/// queue may pass `soft` for at most `grace_ms` (a loop turn queues all it
/// decided before its one write, and a write takes only what the socket
/// has room for, so healthy readers pass it briefly under bursts), and never
/// `hard`. Past either, the connection is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    pub soft: usize,
    pub hard: usize,
    pub grace_ms: u32,
    /// Now, in ms since the shard started (wrapping).
    pub now_ms: u32,
    /// Frames queued on the whole shard at most
    /// (`limits.shard_queued_frames_max`): past it, a connection whose
    /// last write left bytes behind is a slow consumer (`ShardMetrics::queued_frames`).
    pub shard_frames: u64,
}

/// The connection cannot keep up: close it with 1013.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowConsumer;

impl Connection {
    /// Unix seconds at which the token runs out (`u32::MAX`: never).
    pub fn expires_at_s(&self) -> u64 {
        u64::from(self.expires_at_s)
    }

    /// Records the token's `exp` (a refreshed one); an `exp` past what 32
    /// bits hold, or none (`u64::MAX`), is kept as never.
    pub fn set_expires_at_s(&mut self, expires_at_s: u64) {
        self.expires_at_s = expires_at_u32(expires_at_s);
    }

    /// Queues `frame` within `bounds` (`outbound_queue_hard_bytes_max`, then
    /// the soft bound's grace).
    pub fn push_bounded(&mut self, frame: Frame, bounds: QueueBounds) -> Result<(), SlowConsumer> {
        self.outbound.push(frame, bounds.hard).map_err(|QueueFull| SlowConsumer)?;
        self.check_backlog(bounds)
    }

    /// Its last write left bytes queued and no writable event came since:
    /// the peer is not reading as fast as it is sent to. (A connection with
    /// frames queued this turn, or left by the flush budget, is on the
    /// dirty list and not blocked.)
    pub fn write_blocked(&self) -> bool {
        !self.dirty && !self.outbound.is_empty()
    }

    /// Tracks how long the queue has been over `bounds.soft`: called when
    /// frames are queued, after each write and at each heartbeat.
    pub fn check_backlog(&mut self, bounds: QueueBounds) -> Result<(), SlowConsumer> {
        let (since, verdict) = backlog(self.outbound.bytes(), self.over_soft_since_ms, bounds);
        self.over_soft_since_ms = since;
        verdict
    }
}

/// The soft bound's rule: for a queue of `bytes`, over the soft bound since
/// `since_ms` (0: not over), the new `since_ms` and whether it is too slow.
fn backlog(bytes: usize, since_ms: u32, bounds: QueueBounds) -> (u32, Result<(), SlowConsumer>) {
    if bytes <= bounds.soft {
        (0, Ok(()))
    } else if since_ms == 0 {
        // 0 means "not over": a start at 0 ms is recorded as 1.
        (bounds.now_ms.max(1), Ok(()))
    } else if bounds.now_ms.wrapping_sub(since_ms) > bounds.grace_ms {
        (since_ms, Err(SlowConsumer))
    } else {
        (since_ms, Ok(()))
    }
}

/// What a connection keeps between reads: the bytes of an incomplete frame,
/// and a fragmented message in flight.
#[derive(Debug, Default)]
pub struct Inbound {
    pub pending: Vec<u8>,
    pub fragments: Option<Box<Fragments>>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Frames waiting to be written, as shared references, with a byte cap.
#[derive(Debug, Default)]
pub struct OutboundQueue {
    frames: VecDeque<Frame>,
    /// Bytes of the head frame already written.
    head_written: u32,
    /// Bytes queued and not yet written (at most the queue's cap, a `u32` key).
    bytes: u32,
}

/// How many frames one write takes at most; 64 frames in one syscall is well
/// past the point where the per-write cost dominates (~7 µs per write here).
const WRITE_SLICES_MAX: usize = 64;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Everything queued is written.
    Drained,
    /// The socket is full; bytes remain until the next writable event.
    WouldBlock,
    Failed(io::ErrorKind),
}

impl OutboundQueue {
    /// Queues `frame` unless that would pass `bytes_max`.
    pub fn push(&mut self, frame: Frame, bytes_max: usize) -> Result<(), QueueFull> {
        if self.bytes as usize + frame.len() > bytes_max {
            return Err(QueueFull);
        }
        self.push_unbounded(frame);
        Ok(())
    }

    /// Queues `frame` whatever the cap; only for the one Close frame and the
    /// handshake response, both bounded by construction.
    pub fn push_unbounded(&mut self, frame: Frame) {
        self.bytes = self.bytes.saturating_add(frame.len() as u32);
        self.frames.push_back(frame);
    }

    /// Frames queued (the head one too while partly written).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Drops every frame not yet started, keeping a partly written head frame
    /// so the stream stays well-formed for the Close frame that follows.
    /// Returns how many went.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.head_written > 0);
        let before = self.frames.len();
        while self.frames.len() > keep {
            if let Some(frame) = self.frames.pop_back() {
                self.bytes -= frame.len() as u32;
            }
        }
        before - self.frames.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes as much as the socket takes, many frames per `writev`.
    /// Returns the outcome and what was written.
    pub fn flush(&mut self, stream: &mut impl Write) -> (FlushOutcome, Written) {
        let mut written = Written::default();
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES_MAX];
            let mut count = 0;
            for (i, frame) in self.frames.iter().take(WRITE_SLICES_MAX).enumerate() {
                let start = if i == 0 { self.head_written as usize } else { 0 };
                slices[i] = IoSlice::new(&frame[start..]);
                count += 1;
            }
            match stream.write_vectored(&slices[..count]) {
                Ok(0) => return (FlushOutcome::Failed(io::ErrorKind::WriteZero), written),
                Ok(n) => {
                    written.bytes += n;
                    written.frames += self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (FlushOutcome::WouldBlock, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (FlushOutcome::Failed(e.kind()), written),
            }
        }
        // Idle connections hold no buffers: a drained queue gives its memory
        // back (one small allocation per flush that drains, against a ~7 µs write).
        self.frames = VecDeque::new();
        (FlushOutcome::Drained, written)
    }

    /// Drops `n` written bytes from the front; returns the frames completed.
    fn advance(&mut self, mut n: usize) -> usize {
        self.bytes -= n as u32;
        let mut completed = 0;
        while n > 0 {
            let Some(head) = self.frames.front() else { break };
            let left = head.len() - self.head_written as usize;
            if n < left {
                self.head_written += n as u32;
                break;
            }
            n -= left;
            self.head_written = 0;
            self.frames.pop_front();
            completed += 1;
        }
        completed
    }
}

/// What one flush wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: usize,
    /// Frames written completely.
    pub frames: usize,
}

/// A token bucket in thousandths of a message, refilled from the shard's
/// clock (milliseconds since the shard started, wrapping). Eight bytes, as
/// every connection has two: it holds at most `u32::MAX` thousandths, so a
/// burst above 4,294,967 messages acts as that many.
#[derive(Debug, Clone, Copy)]
pub struct RateBucket {
    tokens_milli: u32,
    refilled_at_ms: u32,
}

impl RateBucket {
    pub fn full(burst: u32, now_ms: u64) -> RateBucket {
        RateBucket { tokens_milli: capacity_milli(burst), refilled_at_ms: now_ms as u32 }
    }

    /// Takes one message's token; `false` when the bucket is empty.
    pub fn try_take(&mut self, now_ms: u64, per_s: u32, burst: u32) -> bool {
        // Wrapping: a bucket untouched for 49 days refills less than it
        // could, and no connection stays idle that long (heartbeats).
        let now_ms = now_ms as u32;
        let elapsed = u64::from(now_ms.wrapping_sub(self.refilled_at_ms));
        let refilled = u64::from(self.tokens_milli) + elapsed * u64::from(per_s);
        self.tokens_milli = refilled.min(u64::from(capacity_milli(burst))) as u32;
        self.refilled_at_ms = now_ms;
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// A token's `exp` as a connection keeps it: past 2106 (or none) is never.
pub(super) fn expires_at_u32(expires_at_s: u64) -> u32 {
    u32::try_from(expires_at_s).unwrap_or(u32::MAX)
}

/// A bucket's capacity for `burst` messages, in thousandths.
fn capacity_milli(burst: u32) -> u32 {
    burst.saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `accept` bytes per call, then blocks.
    struct Trickle {
        out: Vec<u8>,
        accept: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.accept - n);
                self.out.extend_from_slice(&buf[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(bytes: &[u8]) -> Frame {
        Arc::from(bytes)
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut queue = OutboundQueue::default();
        for chunk in [&b"abc"[..], b"defg", b"hi"] {
            queue.push(frame(chunk), 100).expect("room");
        }
        let mut sink = Trickle { out: Vec::new(), accept: 4, calls_left: 1 };
        assert_eq!(queue.flush(&mut sink), (FlushOutcome::WouldBlock, Written { bytes: 4, frames: 1 }));
        assert_eq!(queue.bytes(), 5);
        sink.calls_left = 10;
        assert_eq!(queue.flush(&mut sink), (FlushOutcome::Drained, Written { bytes: 5, frames: 2 }));
        assert_eq!(sink.out, b"abcdefghi");
        assert!(queue.is_empty());
    }

    #[test]
    fn the_byte_cap_refuses_and_discard_keeps_a_started_frame() {
        let mut queue = OutboundQueue::default();
        queue.push(frame(b"12345"), 8).expect("room");
        assert_eq!(queue.push(frame(b"6789"), 8), Err(QueueFull));
        queue.push(frame(b"67"), 8).expect("room");
        let mut sink = Trickle { out: Vec::new(), accept: 2, calls_left: 1 };
        queue.flush(&mut sink);
        queue.discard_unstarted();
        queue.push_unbounded(frame(b"CLOSE"));
        sink.calls_left = 10;
        sink.accept = 100;
        queue.flush(&mut sink);
        assert_eq!(sink.out, b"12345CLOSE");
    }

    #[test]
    fn a_queue_may_stay_over_its_soft_bound_for_the_grace_only() {
        let at = |now_ms| QueueBounds { soft: 100, hard: 1000, grace_ms: 50, now_ms, shard_frames: u64::MAX };
        assert_eq!(backlog(100, 0, at(7)), (0, Ok(())), "at the bound is not over it");
        assert_eq!(backlog(101, 0, at(7)), (7, Ok(())), "over: the clock starts");
        assert_eq!(backlog(500, 7, at(57)), (7, Ok(())), "within the grace");
        assert_eq!(backlog(500, 7, at(58)), (7, Err(SlowConsumer)), "past the grace");
        assert_eq!(backlog(90, 7, at(58)), (0, Ok(())), "back under: the clock resets");
        assert_eq!(backlog(101, 0, at(0)), (1, Ok(())), "a start at 0 ms is still a start");
        let wrapped = u32::MAX - 10;
        assert_eq!(backlog(500, wrapped, at(20)), (wrapped, Ok(())), "31 ms across the wrap");
        assert_eq!(backlog(500, wrapped, at(40)), (wrapped, Err(SlowConsumer)), "51 ms across the wrap");
    }

    #[test]
    fn the_rate_bucket_allows_the_burst_then_the_rate() {
        let mut bucket = RateBucket::full(3, 0);
        assert!((0..3).all(|_| bucket.try_take(0, 10, 3)));
        assert!(!bucket.try_take(0, 10, 3));
        assert!(!bucket.try_take(99, 10, 3), "10/s refills one token per 100 ms");
        assert!(bucket.try_take(100, 10, 3));
        assert!((0..3).all(|_| bucket.try_take(10_000, 10, 3)), "refill stops at the burst");
        assert!(!bucket.try_take(10_000, 10, 3));
    }
}

#[cfg(test)]
mod grants_tests {
    use super::Grants;
    use crate::auth::{Identity, RoomScope};

    fn grants(scope: Option<RoomScope>, home_room: &str) -> Grants {
        Grants::from_identity(Identity { room_scope: scope, ..Identity::dev("u") }, home_room)
    }

    #[test]
    fn an_exact_room_claim_kept_as_the_url_room_allows_that_room_only() {
        let at_demo = grants(Some(RoomScope::Exact("demo".into())), "demo");
        assert!(at_demo.may_join("u", "demo", "demo"));
        assert!(!at_demo.may_join("u", "demo", "demo2") && !at_demo.may_join("u", "demo", "dem"));
        assert!(at_demo.may_join("u", "demo", "user:u"), "the claim does not govern the personal room");
    }

    #[test]
    fn an_exact_room_claim_on_a_connection_to_its_personal_room_still_names_its_room() {
        // The URL named the personal room, which the claim does not govern:
        // the claim's room is kept, not taken from the URL.
        let at_personal = grants(Some(RoomScope::Exact("demo".into())), "user:u");
        assert!(at_personal.may_join("u", "user:u", "demo"));
        assert!(!at_personal.may_join("u", "user:u", "other"));
    }

    #[test]
    fn groups_are_kept_with_or_without_a_room_claim() {
        let identity = Identity { groups: vec!["ops".into(), "dev".into()], ..Identity::dev("u") };
        let plain = Grants::from_identity(identity.clone(), "r");
        assert_eq!(plain.groups().iter().map(|g| &**g).collect::<Vec<_>>(), ["ops", "dev"]);
        assert!(plain.may_join("u", "r", "group:ops") && !plain.may_join("u", "r", "group:hr"));
        let scoped =
            Grants::from_identity(Identity { room_scope: Some(RoomScope::Exact("r".into())), ..identity }, "r");
        assert_eq!(scoped.groups().len(), 2);
        assert!(scoped.may_join("u", "r", "group:dev") && !scoped.may_join("u", "r", "other"));
        assert!(grants(None, "r").groups().is_empty());
    }

    #[test]
    fn prefix_and_absent_claims_are_unchanged() {
        let team = grants(Some(RoomScope::Prefix("team-".into())), "team-a");
        assert!(team.may_join("u", "team-a", "team-b") && !team.may_join("u", "team-a", "other"));
        let any = grants(None, "r");
        assert!(any.may_join("u", "r", "anything") && !any.may_join("u", "r", "user:someone-else"));
    }
}

#[cfg(test)]
mod joined_room_tests {
    use super::{JoinedRoom, Place};
    use crate::ids::RoomKey;
    use crate::room::Membership;

    #[test]
    fn a_joined_room_gives_back_the_place_and_implicit_bit_it_was_given() {
        let membership = Membership::from_wire([3, 4, 5]);
        let places = [
            Place::Local(membership),
            Place::Pending { owner: 1, tag: u32::MAX },
            Place::Remote { owner: 300, membership },
        ];
        for place in places {
            for implicit in [true, false] {
                let joined = JoinedRoom::new(RoomKey::new("", "user:a"), place, implicit);
                assert_eq!((joined.place(), joined.implicit()), (place, implicit));
            }
        }
        let mut joined = JoinedRoom::new(RoomKey::new("", "r"), Place::Pending { owner: 1, tag: 7 }, true);
        assert!(joined.awaits(7) && !joined.awaits(8));
        joined.set_place(Place::Remote { owner: 1, membership });
        assert!(!joined.awaits(7), "an answered join awaits nothing");
        assert_eq!((joined.place(), joined.implicit()), (Place::Remote { owner: 1, membership }, true));
    }
}

#[cfg(test)]
mod size_tests {
    /// Idle connections are the memory budget (≤ 1 KiB each, userspace);
    /// these bound the structs every connection carries.
    #[test]
    fn per_connection_structs_stay_small() {
        use std::mem::size_of;
        println!(
            "Connection {} Member {} Grants {} JoinedRoom {} OutboundQueue {} Peer {}",
            size_of::<super::Connection>(),
            size_of::<super::Member>(),
            size_of::<super::Grants>(),
            size_of::<super::JoinedRoom>(),
            size_of::<super::OutboundQueue>(),
            size_of::<crate::room::Peer>()
        );
        // The member inline (its first two rooms inline too): one slab slot
        // per connection, no heap chunk. 232 B in a release build; mio's
        // stream carries 16 B more with debug assertions.
        let debug_stream = if cfg!(debug_assertions) { 16 } else { 0 };
        assert!(size_of::<super::Connection>() <= 232 + debug_stream);
        assert!(size_of::<super::JoinedRoom>() <= 32);
        assert!(size_of::<super::Grants>() <= 16);
        assert!(size_of::<super::Member>() <= 120);
        // An `Arc<Peer>` is the peer and two counts: 56 bytes, a 64-byte
        // chunk, its user id, JSON form and name in one more.
        assert!(size_of::<crate::room::Peer>() <= 40);
    }
}
