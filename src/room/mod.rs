//! Room logic, sans-IO: who is in which room with which role, presence,
//! sequence numbers, the meeting features (lobby, chat, hands, screen share,
//! signaling; `meeting.rs`) and who receives what. No sockets, no clocks, no
//! threads: the shard calls in with events (and the time), and carries out
//! the `Output`s it polls back.
//!
//! Invariants (`invariants.rs`, checked by `check_invariants` in debug
//! builds after every mutation): every room has at least one member (empty
//! rooms are freed at once), the index maps exactly the live rooms, the
//! per-shard and waiting counts match the members, every room has a host,
//! and the hand queue, sharers and chat history stay within their bounds.
//! No bound on a room's members is checked: `join` refuses past the
//! capacity in force, but a registry change may lower it below the members
//! present, who stay.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use slab::Slab;

use crate::ids::{ConnId, RoomKey, ShardId};
use crate::protocol::{self, PeerJson, Since};
use crate::refusal::Refusal;
use crate::registry::{self, Admission, RoomPolicy};
use crate::ws::frame::{Frame, FrameBuilder, Opcode};

use chat_filter::ChatFilter;

mod chat_filter;
mod extension;
mod index;
mod invariants;
mod meeting;
#[cfg(test)]
mod meeting_tests;
mod members;
mod persist;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use meeting::{RequestKind, Role, allowed};
pub use persist::{ChatRecord, Persist, StoredChat};

/// A member as the room sees it: immutable, shared with the connection.
#[derive(Debug)]
pub struct Peer {
    pub conn: ConnId,
    /// The token says `role: host`: host on arrival, past any lobby.
    pub host: bool,
    /// The token has a `name` (the rest of `text`, past `user_end`).
    has_name: bool,
    /// The user id as a JSON literal, encoded once at arrival (it goes in
    /// every message); then the user id itself when its JSON form is not
    /// just it in quotes; then the name, if any: one allocation for all
    /// three (every connection has a peer).
    text: Box<str>,
    /// Where the JSON literal ends in `text`.
    user_json_len: u32,
    /// Where the user id (or, when it needs no copy, the JSON literal) ends.
    user_end: u32,
    /// The token's `room` claim names one room exactly. Such a token may
    /// be in no other room (personal and group rooms aside, which are never
    /// private), and every join was checked against the claim before it
    /// reached a room (`auth::may_join`), so this bit is all a private
    /// registry room needs to know (`registry::admission`).
    exact_room_claim: bool,
}

impl Peer {
    #[cfg(test)]
    pub fn new(conn: ConnId, user: &str, name: Option<&str>) -> Arc<Peer> {
        Peer::with_host(conn, user, name, false)
    }

    #[cfg(test)]
    pub fn with_host(conn: ConnId, user: &str, name: Option<&str>, host: bool) -> Arc<Peer> {
        Peer::with_claims(conn, user, name, host, false)
    }

    /// `exact_room_claim`: the token's `room` claim is one room id (not a
    /// `prefix*`, not absent).
    pub fn with_claims(conn: ConnId, user: &str, name: Option<&str>, host: bool, exact_room_claim: bool) -> Arc<Peer> {
        let user_json = protocol::json_str(user);
        // Most ids need no escaping: then the JSON literal holds both forms.
        let user_copy = if user_json.len() == user.len() + 2 { "" } else { user };
        // Exactly the length, so the box needs no shrinking realloc.
        let mut text = String::with_capacity(user_json.len() + user_copy.len() + name.map_or(0, str::len));
        text.push_str(&user_json);
        text.push_str(user_copy);
        let user_end = text.len() as u32;
        text.push_str(name.unwrap_or(""));
        let user_json_len = user_json.len() as u32;
        let text = text.into_boxed_str();
        Arc::new(Peer { conn, host, has_name: name.is_some(), text, user_json_len, user_end, exact_room_claim })
    }

    /// The user id as a JSON string literal.
    pub fn user_json(&self) -> &str {
        &self.text[..self.user_json_len as usize]
    }

    /// The token's `name`.
    pub fn name(&self) -> Option<&str> {
        self.has_name.then(|| &self.text[self.user_end as usize..])
    }

    /// Whether the token's `room` claim names the room this peer is joining
    /// (see `exact_room_claim`: the claim was already checked to allow it).
    pub fn names_room(&self) -> bool {
        self.exact_room_claim
    }

    /// The user id (the token's `sub`).
    pub fn user(&self) -> &str {
        let (json_len, user_end) = (self.user_json_len as usize, self.user_end as usize);
        if user_end > json_len { &self.text[json_len..user_end] } else { &self.text[1..json_len - 1] }
    }

    /// The peer as presence frames show it.
    fn json(&self) -> PeerJson<'_> {
        PeerJson { conn: self.conn, user_json: self.user_json(), name: self.name() }
    }
}

/// The bounds and defaults a shard's rooms use (from `[limits]` and `[rooms]`).
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    pub members_max: u32,
    pub rooms_max: u32,
    pub welcome_members_max: u32,
    pub presence_members_max: u32,
    /// Chat messages a room keeps for `chat.history` and `welcome`.
    pub history_max: u32,
    /// Chat messages included in a `welcome`.
    pub welcome_history_max: u32,
    /// Characters in one chat message.
    pub chat_text_chars_max: u32,
    /// Members sharing a screen at once.
    pub screenshare_max: u32,
    /// New rooms start with a lobby.
    pub lobby_default: bool,
    /// `publish` messages a room keeps for recovery (`since`); 0: none.
    pub recovery_messages_max: u32,
    /// Longest a `publish` message is kept for recovery, in ms.
    pub recovery_age_ms: u64,
    /// Only registry rooms admit anyone (`rooms.require_registration`).
    pub require_registration: bool,
}

/// A room's recent `publish` messages, for recovery. Exists only once the
/// room had a publish, so idle rooms (every personal room) hold none.
#[derive(Debug, Default)]
struct Recent {
    /// `(seq, published at in Unix ms, the broadcast frame)`, oldest first.
    held: VecDeque<(u64, u64, Frame)>,
    /// The newest `seq` dropped from `held` (by count or age): a `since`
    /// below it cannot be recovered.
    dropped: u64,
}

impl Recent {
    /// Drops what is older than `age_ms` at `now_ms`; returns how many went.
    fn expire(&mut self, now_ms: u64, age_ms: u64) -> u64 {
        let mut gone = 0;
        while let Some(&(seq, at, _)) = self.held.front() {
            if now_ms.saturating_sub(at) <= age_ms {
                break;
            }
            self.dropped = seq;
            self.held.pop_front();
            gone += 1;
        }
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = VecDeque::new();
        }
        gone
    }
}

/// Where a connection sits in a room; returned by `join`, given back to
/// `leave`, `publish` and `request`. Valid until `leave`. It names the
/// room's incarnation as well as its slot: slab slots are reused, so a
/// membership held across a leave (a request in flight from a kicked
/// connection) must not act on a later room that took the same slot.
/// Every connection holds one per room it is in, so it stays small: the
/// low 32 bits of the incarnation, which (like a `ConnId` generation) can
/// only be mistaken 2^32 room creations later on the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    room: u32,
    member: u32,
    incarnation: u32,
}

impl Membership {
    /// The room's slot, as carried by `Output::Broadcast`.
    pub fn room_slot(self) -> usize {
        self.room as usize
    }

    /// The three numbers, for the wire between nodes (`cluster::wire`).
    pub fn to_wire(self) -> [u32; 3] {
        [self.room, self.member, self.incarnation]
    }

    /// Back from `to_wire`. The owner checks it like any membership it is
    /// given (a stale or forged one names no live member: `StaleMembership`).
    pub fn from_wire([room, member, incarnation]: [u32; 3]) -> Membership {
        Membership { room, member, incarnation }
    }
}

/// Who receives a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member (personal rooms: `direct`).
    All,
    /// Members past the lobby: chat, messages, presence, hands, roles.
    Admitted,
    /// Hosts only: lobby events, screen-share requests.
    Hosts,
}

impl Audience {
    /// Whether a member with `role` is in this audience. Also the filter a
    /// shard applies to its members of a room owned elsewhere.
    pub fn includes(self, role: Role) -> bool {
        match self {
            Audience::All => true,
            Audience::Admitted => role != Role::Waiting,
            Audience::Hosts => role == Role::Host,
        }
    }
}

/// What the shard must do after an event.
#[derive(Debug)]
pub enum Output {
    /// Queue `frame` for one connection.
    Deliver { to: ConnId, frame: Frame },
    /// Queue `frame` for the members of the room in slot `room` that are in
    /// `audience`, except `skip`. The audience is read when the output is
    /// carried out; `Rooms` orders its work so that nobody enters it in
    /// between (see `push_broadcast`).
    Broadcast { room: usize, audience: Audience, skip: Option<ConnId>, frame: Frame },
    /// `conn`, a member on another shard, now has `role` at `membership`
    /// (its room: `membership.room_slot()`): its home shard must know,
    /// because it filters the broadcasts it fans out by its members' roles.
    /// Carried out in order with the broadcasts around it, so each broadcast
    /// reaches the members that were in its audience when it was queued.
    /// The membership tells the home which of its entries changed: a
    /// connection may briefly be in a room twice (a join left while in
    /// flight, then joined again), and the first is being undone.
    RoleChanged { conn: ConnId, membership: Membership, role: Role },
    /// Close a connection (it was kicked or denied); it has already been
    /// removed from the room.
    Close { conn: ConnId, code: crate::ws::CloseCode },
    /// Durable work for the store thread (only with the store on). A
    /// `Persist::Chat` carries the sender's ack, which the store sends
    /// after its commit; if the store cannot take it, the shard answers the
    /// sender `store_overloaded`.
    Persist(Persist),
    /// A chat message the room accepted, for the webhooks; only made when
    /// `Rooms::reporting_chats` turned it on.
    Chatted { key: RoomKey, sender: ConnId, id: Box<str>, author: Box<str>, text: Box<str> },
    /// The room `key` lost its last member and is gone; only made when
    /// `Rooms::reporting_closed` turned it on.
    Closed { key: RoomKey },
}

#[derive(Debug)]
struct Room {
    key: RoomKey,
    /// Members with their `ConnId` inline, so a broadcast walk reads one
    /// contiguous array instead of chasing a pointer per member. Members on
    /// other shards are here too (their `ConnId.shard` says so).
    members: members::Members,
    /// Members in the lobby.
    waiting: u32,
    /// Messages and chat messages so far; the next one gets `seq + 1`.
    seq: u64,
    /// Which creation of the room on this shard this is (unique per
    /// `Rooms`); with the boot number it makes the room's epoch, and it
    /// names the history load in flight.
    incarnation: u64,
    /// The stored chat history was asked for and has not arrived yet.
    loading: bool,
    /// Arrivals so far, so "longest present" is a comparison.
    arrivals: u64,
    /// Non-hosts arrive in the lobby.
    lobby: bool,
    /// What few rooms need, boxed on first need so that every other room
    /// (every personal room) pays one pointer for all of it.
    extra: Option<Box<RoomExtra>>,
}

#[derive(Debug, Default)]
struct RoomExtra {
    /// Hands, screen sharers and requests, chat history (`Room::meeting`).
    meeting: meeting::LazyMeeting,
    /// Members per other shard (a broadcast goes once to each with any);
    /// `None` while every member is local, as in most rooms.
    per_shard: Option<Box<[u32]>>,
    /// Recent `publish` messages (recovery); `None` until the first publish.
    recent: Option<Recent>,
    /// Custom handlers' state (`room_state`); `None` until one asks.
    extensions: Option<extension::Extensions>,
}

impl Room {
    fn per_shard(&self) -> Option<&[u32]> {
        self.extra.as_ref()?.per_shard.as_deref()
    }

    fn per_shard_mut(&mut self) -> Option<&mut [u32]> {
        self.extra.as_mut()?.per_shard.as_deref_mut()
    }

    fn recent(&self) -> Option<&Recent> {
        self.extra.as_ref()?.recent.as_ref()
    }

    fn recent_mut(&mut self) -> Option<&mut Recent> {
        self.extra.as_mut()?.recent.as_mut()
    }

    fn extra(&mut self) -> &mut RoomExtra {
        self.extra.get_or_insert_default()
    }

    /// The meeting state; a room that never had any reads as empty.
    fn meeting(&self) -> &meeting::MeetingState {
        self.extra.as_ref().map_or(meeting::MeetingState::none(), |extra| &extra.meeting)
    }

    /// The meeting state, made on first need.
    fn meeting_mut(&mut self) -> &mut meeting::MeetingState {
        &mut self.extra().meeting
    }
}

#[derive(Debug)]
struct Member {
    conn: ConnId,
    peer: Arc<Peer>,
    /// Joined implicitly (personal and group rooms): no welcome, no presence.
    quiet: bool,
    role: Role,
    /// Arrival order in this room (smaller = present longer).
    arrival: u64,
}

/// Where a member on shard `shard` is counted in `Room::per_shard` (of
/// `shards + 1` entries): its shard of this node, or the last entry for
/// every other node of a cluster.
fn lane(shard: ShardId, shards: usize) -> usize {
    if crate::ids::remote_node(shard).is_some() { shards } else { shard as usize % shards }
}

/// Every room a shard owns.
#[derive(Debug)]
pub struct Rooms {
    shard: ShardId,
    shards: usize,
    limits: RoomLimits,
    rooms: Slab<Room>,
    index: index::RoomIndex,
    outputs: VecDeque<Output>,
    frames: FrameBuilder,
    /// Boot number of the process (the store's, or the start time in ms
    /// without a store): the first part of every epoch.
    boot: u64,
    /// Rooms created so far; the next gets `incarnations + 1`.
    incarnations: u64,
    /// Chat is persisted: `chat.send` acks after the commit, rooms load
    /// their stored history when created.
    durable: bool,
    /// Accepted chat messages are reported as `Output::Chatted` (webhooks want them).
    report_chats: bool,
    /// Rooms that go away are reported as `Output::Closed` (a cluster node wants them).
    report_closed: bool,
    /// Registry settings of the rooms this shard owns, live or not (at most
    /// `rooms.registry_max` over all shards; `registry::Registry` checks).
    policies: HashMap<RoomKey, RoomPolicy>,
    /// Debug builds only: what `poll_output` checks broadcasts against.
    audit: AudienceAudit,
    /// Counters for metrics: see [`RecoveryCounts`].
    recovery: RecoveryCounts,
    /// Members of these rooms on other cluster nodes (the sum of every
    /// room's cluster lane, `per_shard[shards]`), for metrics.
    remote_members: u64,
    /// Rooms that may have stored chat (`chat_filter.rs`); `None` reads the
    /// history of every durable room.
    chat_filter: Option<ChatFilter>,
    /// Durable rooms created without reading the store (`chat_filter`), for metrics.
    history_loads_skipped: u64,
}

/// What the recovery rings lost, for metrics (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryCounts {
    /// `publish` messages dropped from a ring (by count or age), or never
    /// held (`recovery_messages_max` = 0).
    pub dropped: u64,
    /// `since` requests answered `recovered: false`.
    pub refused: u64,
}

/// Debug builds only: for each queued broadcast, the call that queued it,
/// the room's incarnation and its audience (sorted) then, so `poll_output`
/// can check that nobody entered the audience before the broadcast was
/// carried out. Only the latest call's broadcasts are checked: the shard
/// carries out each call's outputs before the next call, tests may let
/// them pile up.
#[derive(Default)]
struct AudienceAudit {
    queued: VecDeque<(u64, u64, Vec<ConnId>)>,
    calls: u64,
}

/// Not part of the rooms' state (tests compare that by its `Debug` form).
impl std::fmt::Debug for AudienceAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AudienceAudit")
    }
}

impl Rooms {
    pub fn new(shard: ShardId, shards: usize, limits: RoomLimits) -> Rooms {
        Rooms {
            shard,
            shards: shards.max(1),
            limits,
            rooms: Slab::new(),
            index: index::RoomIndex::new(),
            outputs: VecDeque::new(),
            frames: FrameBuilder::default(),
            boot: 0,
            incarnations: 0,
            durable: false,
            report_chats: false,
            report_closed: false,
            policies: HashMap::new(),
            audit: AudienceAudit::default(),
            recovery: RecoveryCounts::default(),
            remote_members: 0,
            chat_filter: None,
            history_loads_skipped: 0,
        }
    }

    /// Durable rooms that never had stored chat skip the history read: a
    /// `kib` KiB filter of the rooms that may have some (0: every durable
    /// room reads it). Call after `with_store`, then `remember_stored_chat`.
    pub fn with_chat_filter(mut self, kib: u32) -> Rooms {
        self.chat_filter = (self.durable && kib > 0).then(|| ChatFilter::with_kib(kib));
        self
    }

    /// The rooms of this shard the store holds chat of, at start.
    pub fn remember_stored_chat<'a>(&mut self, keys: impl IntoIterator<Item = &'a RoomKey>) {
        if let Some(filter) = &mut self.chat_filter {
            keys.into_iter().for_each(|key| filter.insert(key));
        }
    }

    /// Durable rooms created without reading the store, so far.
    pub fn history_loads_skipped(&self) -> u64 {
        self.history_loads_skipped
    }

    /// The registry settings of the rooms this shard owns, at start.
    pub fn load_policies(&mut self, policies: impl IntoIterator<Item = (RoomKey, RoomPolicy)>) {
        self.policies = policies.into_iter().collect();
    }

    /// A registry change (`Some`: created or replaced, `None`: deleted) of
    /// a room this shard owns. A live room takes it at once: a lower
    /// capacity admits nobody new (members present stay), a changed `lobby`
    /// acts as a host's `lobby.set` (turning it off admits the waiting), a
    /// lower history limit drops the oldest chat. Privacy and registration
    /// apply to arrivals from now on. Closing the members of a deleted room
    /// is the shard's part (`AdminQuery::Registry`).
    pub fn set_policy(&mut self, key: &RoomKey, policy: Option<RoomPolicy>) {
        self.begin_call();
        let old = match policy {
            Some(policy) => self.policies.insert(key.clone(), policy),
            None => self.policies.remove(key),
        };
        let Some(slot) = self.index.get(key, &self.rooms) else { return };
        let lobby = |p: Option<RoomPolicy>| p.and_then(|p| p.lobby).unwrap_or(self.limits.lobby_default);
        if lobby(old) != lobby(policy) {
            self.lobby_set(slot, lobby(policy));
        }
        let history_max = self.history_max(key);
        if let Some(extra) = self.rooms[slot].extra.as_mut() {
            extra.meeting.trim_history(history_max);
        }
        self.debug_check_invariants();
    }

    fn policy(&self, key: &RoomKey) -> Option<&RoomPolicy> {
        // Most servers register nothing: then no hashing on the join path.
        if self.policies.is_empty() { None } else { self.policies.get(key) }
    }

    /// Members room `key` admits at most.
    fn capacity(&self, key: &RoomKey) -> usize {
        self.policy(key).and_then(|p| p.capacity).unwrap_or(self.limits.members_max) as usize
    }

    /// Chat messages room `key` keeps.
    pub(super) fn history_max(&self, key: &RoomKey) -> u32 {
        self.policy(key).and_then(|p| p.history_max).unwrap_or(self.limits.history_max)
    }

    /// What the recovery rings lost so far.
    pub fn recovery_counts(&self) -> RecoveryCounts {
        self.recovery
    }

    /// Members of the rooms here that are on other cluster nodes, now
    /// (`roomcast_cluster_remote_members`; 0 outside a cluster).
    pub fn remote_members(&self) -> u64 {
        self.remote_members
    }

    /// Sets the boot number epochs start with, and whether chat is
    /// persisted (the store is on).
    pub fn with_store(mut self, boot: u64, durable: bool) -> Rooms {
        self.boot = boot;
        self.durable = durable;
        self
    }

    /// Whether accepted chat messages come out as `Output::Chatted` too.
    pub fn reporting_chats(mut self, on: bool) -> Rooms {
        self.report_chats = on;
        self
    }

    /// Adds `peer` (local or on another shard) to the room `key`, created if
    /// absent. The first member of a room, and a token host, is host; with
    /// the room's lobby on, anyone else waits in the lobby (hosts are told).
    /// Unless `quiet`, the joiner gets a `welcome` and the admitted members
    /// get `member_joined` (while the room is within `presence_members_max`).
    /// A `reference` is acked with the room's current `seq`.
    #[cfg(test)]
    pub fn join(
        &mut self,
        peer: &Arc<Peer>,
        key: &RoomKey,
        quiet: bool,
        reference: Option<&[u8]>,
    ) -> Result<Membership, Refusal> {
        self.join_since(peer, key, quiet, reference, None, 0)
    }

    /// `join` with recovery: when `since` is given and the joiner is
    /// admitted at once (not quiet, not waiting in a lobby), its `welcome`
    /// says `recovered` and, when true, is followed by every held `message`
    /// with a `seq` after `since.seq`, in order. Recovered means the epoch is
    /// the room's and no message after `since.seq` was dropped from the ring
    /// (by count, or by age at `now_ms`).
    pub fn join_since(
        &mut self,
        peer: &Arc<Peer>,
        key: &RoomKey,
        quiet: bool,
        reference: Option<&[u8]>,
        since: Option<&Since>,
        now_ms: u64,
    ) -> Result<Membership, Refusal> {
        self.begin_call();
        self.check_admission(peer, key)?;
        let slot = match self.index.get(key, &self.rooms) {
            Some(slot) => slot,
            None => self.create_room(key, quiet)?,
        };
        if self.rooms[slot].members.len() >= self.capacity(key) {
            self.debug_check_invariants();
            return Err(Refusal::RoomFull);
        }
        let (member, role) = self.add_member(slot, peer, quiet);
        if role == Role::Waiting {
            self.greet_waiting(slot, peer);
        } else if !quiet {
            match since {
                Some(since) => self.admitted_since(slot, member, since, now_ms),
                None => self.admitted(slot, member),
            }
        }
        // After the welcome, which carries the state the ack refers to.
        if reference.is_some() {
            protocol::encode_ack(self.frames.begin(), reference, Some(self.rooms[slot].seq));
            let ack = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to: peer.conn, frame: ack });
        }
        self.debug_check_invariants();
        Ok(Membership { room: slot as u32, member: member as u32, incarnation: self.rooms[slot].incarnation as u32 })
    }

    /// The registry's word on `peer` entering room `key`: registration and privacy.
    fn check_admission(&self, peer: &Peer, key: &RoomKey) -> Result<(), Refusal> {
        let admission =
            registry::admission(self.policy(key), self.limits.require_registration, key.room(), peer.names_room());
        match admission {
            Some(Admission::NotRegistered) => Err(Refusal::RoomNotRegistered),
            Some(Admission::Private) => Err(Refusal::RoomPrivate),
            None => Ok(()),
        }
    }

    /// Creates room `key`, which a join found absent, unless the shard holds
    /// `rooms_max` rooms already; returns its slot. A durable room made by a
    /// join that is not quiet asks the store for its chat history.
    fn create_room(&mut self, key: &RoomKey, quiet: bool) -> Result<usize, Refusal> {
        if self.index.len() >= self.limits.rooms_max as usize {
            return Err(Refusal::ShardRoomsFull);
        }
        self.incarnations += 1;
        let incarnation = self.incarnations;
        // Rooms made by quiet joins (personal and group rooms at
        // admit, one per connection) do not read the disk, nor do rooms
        // that never had chat stored.
        let read_history = self.durable && !quiet;
        let loading = read_history && self.chat_filter.as_ref().is_none_or(|filter| filter.may_contain(key));
        if read_history && !loading {
            self.history_loads_skipped += 1;
        }
        let slot = self.rooms.insert(Room {
            key: key.clone(),
            // Most rooms (every personal room) hold one member: inline.
            members: members::Members::default(),
            waiting: 0,
            seq: 0,
            incarnation,
            loading,
            arrivals: 0,
            lobby: self.policy(key).and_then(|p| p.lobby).unwrap_or(self.limits.lobby_default),
            extra: None,
        });
        self.index.insert(slot, &self.rooms);
        if loading {
            self.outputs.push_back(Output::Persist(Persist::LoadHistory {
                key: key.clone(),
                load: incarnation,
                shard: self.shard,
                limit: self.history_max(key),
            }));
        }
        Ok(slot)
    }

    /// Puts `peer` in room `slot` with the role it arrives with: host when
    /// first in the room or a token host, waiting when the room's lobby is
    /// on (and the join is not quiet), else participant. Returns its slot in
    /// the room and that role; nobody is told yet.
    fn add_member(&mut self, slot: usize, peer: &Arc<Peer>, quiet: bool) -> (usize, Role) {
        let room = &mut self.rooms[slot];
        let role = if room.members.is_empty() || peer.host {
            Role::Host
        } else if room.lobby && !quiet {
            Role::Waiting
        } else {
            Role::Participant
        };
        room.arrivals += 1;
        let arrival = room.arrivals;
        let member = room.members.insert(Member { conn: peer.conn, peer: Arc::clone(peer), quiet, role, arrival });
        if peer.conn.shard != self.shard {
            let lane = lane(peer.conn.shard, self.shards);
            let shards = self.shards;
            let counts = room.extra().per_shard.get_or_insert_with(|| vec![0; shards + 1].into_boxed_slice());
            counts[lane] += 1;
            if lane == self.shards {
                self.remote_members += 1;
            }
        }
        if role == Role::Waiting {
            room.waiting += 1;
        }
        (member, role)
    }

    /// A lobby arrival: its own waiting welcome, and a lobby `waiting` event for hosts.
    fn greet_waiting(&mut self, slot: usize, peer: &Arc<Peer>) {
        let room = &self.rooms[slot];
        let waiting = meeting::encode_waiting_welcome(&mut self.frames, room, peer, self.shard);
        self.outputs.push_back(Output::Deliver { to: peer.conn, frame: waiting });
        let event = meeting::encode_lobby_event(&mut self.frames, room, "waiting", peer);
        self.push_broadcast(slot, Audience::Hosts, None, event);
    }

    /// A member becomes visible: its full `welcome`, and `member_joined` for the others.
    fn admitted(&mut self, slot: usize, member: usize) {
        self.welcome(slot, member, None, Vec::new(), &[]);
        self.announce(slot, member);
    }

    /// `admitted` for a reconnecting member: `recovered` in the welcome,
    /// then the held messages after `since.seq` (when recovered).
    fn admitted_since(&mut self, slot: usize, member: usize, since: &Since, now_ms: u64) {
        let age_ms = self.limits.recovery_age_ms;
        let epoch = self.epoch(slot);
        let room = &mut self.rooms[slot];
        if let Some(recent) = room.recent_mut() {
            self.recovery.dropped += recent.expire(now_ms, age_ms);
        }
        let dropped = room.recent().map_or(0, |recent| recent.dropped);
        let recovered = since.epoch.as_deref() == Some(epoch.as_str()) && since.seq <= room.seq && since.seq >= dropped;
        if !recovered {
            self.recovery.refused += 1;
        }
        let replay: Vec<Frame> = match (room.recent(), recovered) {
            (Some(recent), true) => {
                recent.held.iter().filter(|(seq, ..)| *seq > since.seq).map(|(.., frame)| Arc::clone(frame)).collect()
            }
            _ => Vec::new(),
        };
        self.welcome(slot, member, Some(recovered), replay, &[]);
        self.announce(slot, member);
    }

    /// The full `welcome` of member `member` of room `slot`, then `replay`
    /// (recovered messages). It lists the other admitted members but those
    /// in `unlisted` (members admitted in the same call, who are announced
    /// to it by `member_joined` instead: `Rooms::admit_members`).
    pub(super) fn welcome(
        &mut self,
        slot: usize,
        member: usize,
        recovered: Option<bool>,
        replay: Vec<Frame>,
        unlisted: &[usize],
    ) {
        let room = &self.rooms[slot];
        let peer = Arc::clone(&room.members[member].peer);
        let epoch = self.epoch(slot);
        let welcome = meeting::encode_welcome(
            &mut self.frames,
            room,
            &room.members[member],
            self.shard,
            &epoch,
            recovered,
            unlisted,
            &self.limits,
        );
        self.outputs.push_back(Output::Deliver { to: peer.conn, frame: welcome });
        // Right after the welcome, before anything else for this member.
        for frame in replay {
            self.outputs.push_back(Output::Deliver { to: peer.conn, frame });
        }
    }

    /// `member_joined` about member `member` of room `slot` to the other
    /// admitted members, while the room is within `presence_members_max`.
    pub(super) fn announce(&mut self, slot: usize, member: usize) {
        let room = &self.rooms[slot];
        let peer = Arc::clone(&room.members[member].peer);
        let admitted = room.members.len() - room.waiting as usize;
        if admitted > 1 && admitted <= self.limits.presence_members_max as usize {
            let joined = encode_presence(&mut self.frames, "member_joined", room, &peer);
            self.push_broadcast(slot, Audience::Admitted, Some(peer.conn), joined);
        }
    }

    /// The member at `membership`, if the room is still the incarnation the
    /// membership was made in and the member is still `conn`. Guards every
    /// call that takes a membership, so a stale one (from a message that
    /// crossed a leave, a kick or the room being freed and its slot reused)
    /// changes nothing.
    fn member_of(&self, membership: Membership, conn: ConnId) -> Option<&Member> {
        let room = self
            .rooms
            .get(membership.room as usize)
            .filter(|room| room.incarnation as u32 == membership.incarnation)?;
        room.members.get(membership.member as usize).filter(|m| m.conn == conn)
    }

    /// Removes `conn`'s membership; the others are told (`member_left`, or
    /// hosts a lobby `left`); a room left without a host gets one; an empty
    /// room is freed. Acks `reference` with the room's `seq` at the leave:
    /// the last message the member was sent. Returns false when `conn` was
    /// not that member (nothing changes).
    pub fn leave(&mut self, membership: Membership, conn: ConnId, reference: Option<&[u8]>) -> bool {
        self.leave_as(membership, conn, reference, false)
    }

    /// `leave` for a client's `leave` request: as `leave`, and without
    /// `reference` the leaver is told `{"type":"left","room":R,"seq":N}`
    /// (the ack's `seq`), so a leave always has a visible answer.
    pub fn leave_requested(&mut self, membership: Membership, conn: ConnId, reference: Option<&[u8]>) -> bool {
        self.leave_as(membership, conn, reference, true)
    }

    fn leave_as(&mut self, membership: Membership, conn: ConnId, reference: Option<&[u8]>, requested: bool) -> bool {
        self.begin_call();
        if self.member_of(membership, conn).is_none() {
            return false;
        }
        let slot = membership.room as usize;
        let room = &mut self.rooms[slot];
        if reference.is_some() {
            protocol::encode_ack(self.frames.begin(), reference, Some(room.seq));
            let ack = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to: conn, frame: ack });
        } else if requested {
            protocol::encode_left(self.frames.begin(), room.key.room(), Some(room.seq));
            let left = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to: conn, frame: left });
        }
        self.remove_member(slot, membership.member as usize);
        self.debug_check_invariants();
        true
    }

    /// Takes a member out of room `slot` and tells whoever should know.
    fn remove_member(&mut self, slot: usize, member: usize) {
        let room = &mut self.rooms[slot];
        let Some(gone) = room.members.try_remove(member) else { return };
        if gone.conn.shard != self.shard {
            let lane = lane(gone.conn.shard, self.shards);
            if let Some(counts) = self.rooms[slot].per_shard_mut() {
                counts[lane] -= 1;
                if lane == self.shards {
                    self.remote_members -= 1;
                }
            }
        }
        let room = &mut self.rooms[slot];
        if room.members.is_empty() {
            let room = self.rooms.remove(slot);
            self.index.remove(&room.key, slot);
            if self.report_closed {
                self.outputs.push_back(Output::Closed { key: room.key });
            }
            return;
        }
        if gone.role == Role::Waiting {
            room.waiting -= 1;
            let event = meeting::encode_lobby_event(&mut self.frames, room, "left", &gone.peer);
            self.push_broadcast(slot, Audience::Hosts, None, event);
            return;
        }
        let admitted = room.members.len() - room.waiting as usize;
        if !gone.quiet && admitted < self.limits.presence_members_max as usize && admitted > 0 {
            let left = encode_presence(&mut self.frames, "member_left", room, &gone.peer);
            self.push_broadcast(slot, Audience::Admitted, None, left);
        }
        self.after_departure(slot, gone.peer.user(), gone.role == Role::Host);
    }

    /// Publishes `data` (the publisher's JSON, byte for byte) to every other
    /// admitted member with the room's next `seq`; acks `reference`. `None`
    /// when `conn` is not that member, `Some(Err(_))` when its role may not.
    pub fn publish(
        &mut self,
        membership: Membership,
        conn: ConnId,
        reference: Option<&[u8]>,
        data: &[u8],
        now_ms: u64,
    ) -> Option<Result<u64, Refusal>> {
        self.begin_call();
        let member = self.member_of(membership, conn)?;
        if !allowed(member.role, RequestKind::Publish) {
            return Some(Err(Refusal::RoleForbids));
        }
        let publisher = Arc::clone(&member.peer);
        let slot = membership.room as usize;
        let room = &mut self.rooms[slot];
        room.seq += 1;
        let seq = room.seq;
        let out = self.frames.begin();
        protocol::encode_message(out, room.key.room(), publisher.user_json(), seq, data);
        let frame = self.frames.finish(Opcode::Text);
        // Kept for recovery: the same shared bytes, no second encoding.
        // With recovery_messages_max = 0 the message is dropped at once.
        let recent = room.extra().recent.get_or_insert_default();
        self.recovery.dropped += recent.expire(now_ms, self.limits.recovery_age_ms);
        recent.held.push_back((seq, now_ms, Arc::clone(&frame)));
        while recent.held.len() > self.limits.recovery_messages_max as usize
            && let Some((old, ..)) = recent.held.pop_front()
        {
            recent.dropped = old;
            self.recovery.dropped += 1;
        }
        if room.members.len() > 1 {
            self.push_broadcast(slot, Audience::Admitted, Some(conn), frame);
        }
        if reference.is_some() {
            protocol::encode_ack(self.frames.begin(), reference, Some(seq));
            let ack = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to: conn, frame: ack });
        }
        Some(Ok(seq))
    }

    /// The state slot of custom handler `owner` in the room of `membership`
    /// (made with `T::default()` on first use, dropped with the room);
    /// `None` when `conn` is not that member.
    pub fn extension<T: Default + Send + 'static>(
        &mut self,
        membership: Membership,
        conn: ConnId,
        owner: u32,
    ) -> Option<&mut T> {
        self.member_of(membership, conn)?;
        let room = self.rooms.get_mut(membership.room as usize)?;
        Some(room.extra().extensions.get_or_insert_default().slot::<T>(owner))
    }

    /// Sends `data` from `from` to every member of `key` (a personal room):
    /// `{"type":"direct","from":U,"data":D}`. Acks `reference`; false when
    /// the room has no members (the user has no connection).
    pub fn direct(&mut self, key: &RoomKey, from: &Peer, reference: Option<&[u8]>, data: &[u8]) -> bool {
        self.begin_call();
        let Some(slot) = self.index.get(key, &self.rooms) else { return false };
        protocol::encode_direct(self.frames.begin(), from.user_json(), data);
        let frame = self.frames.finish(Opcode::Text);
        self.push_broadcast(slot, Audience::All, None, frame);
        if reference.is_some() {
            protocol::encode_ack(self.frames.begin(), reference, None);
            let ack = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to: from.conn, frame: ack });
        }
        true
    }

    /// Relays a binary message verbatim to every other admitted member.
    pub fn relay_binary(&mut self, membership: Membership, from: ConnId, payload: &[u8]) {
        self.begin_call();
        let slot = membership.room as usize;
        let admitted = self.member_of(membership, from).is_some_and(|m| m.role != Role::Waiting);
        if admitted && self.rooms[slot].members.len() > 1 {
            self.frames.begin().extend_from_slice(payload);
            let frame = self.frames.finish(Opcode::Binary);
            self.push_broadcast(slot, Audience::Admitted, Some(from), frame);
        }
    }

    /// The stored history of room `key` arrived (for its incarnation
    /// `load`): it goes before the messages sent since the room was
    /// created (a stored message whose id one of those took is dropped),
    /// the oldest beyond `history_max` go, and every admitted member gets
    /// the result as one `chat_history`: their welcomes said
    /// `history_loading`. An answer for a room since freed is ignored.
    pub fn history_loaded(&mut self, key: &RoomKey, load: u64, stored: Vec<StoredChat>) {
        self.begin_call();
        let Some(slot) = self.index.get(key, &self.rooms) else { return };
        let room = &mut self.rooms[slot];
        if room.incarnation != load || !room.loading {
            return;
        }
        room.loading = false;
        self.merge_history(slot, stored);
        let room = &self.rooms[slot];
        if room.members.iter().any(|(_, m)| m.role != Role::Waiting && !m.quiet) {
            let history_max = self.history_max(&room.key) as usize;
            let frame = meeting::encode_history(&mut self.frames, room, history_max);
            self.push_broadcast(slot, Audience::Admitted, None, frame);
        }
        self.debug_check_invariants();
    }

    /// `welcome.epoch`: `{boot}.{shard}.{incarnation}`, different for every
    /// creation of a room, across restarts too. A room's `seq` counts from
    /// 0 within one epoch.
    fn epoch(&self, slot: usize) -> String {
        format!("{}.{}.{}", self.boot, self.shard, self.rooms[slot].incarnation)
    }

    /// Queues a broadcast to `audience` in room `slot`, except `skip`.
    ///
    /// The audience is read when the shard carries the output out (after
    /// the whole call), and by each other shard when the fan-out reaches it
    /// (against the roles it was told of, in order: `Output::RoleChanged`).
    /// Both give the audience as it was when the broadcast was queued only
    /// if nobody enters it in between, so handlers change roles before the
    /// broadcasts that should reach the new role, never after (checked in
    /// debug builds; leaving an audience in between is harmless). A
    /// broadcast to admitted members while nobody is admitted is dropped:
    /// it reaches nobody, and must not reach a lobby member promoted to
    /// host later in the same call.
    fn push_broadcast(&mut self, slot: usize, audience: Audience, skip: Option<ConnId>, frame: Frame) {
        let room = &self.rooms[slot];
        if audience == Audience::Admitted && room.members.len() == room.waiting as usize {
            return;
        }
        if cfg!(debug_assertions) {
            let mut queued: Vec<ConnId> = self.audience(slot, audience).collect();
            queued.sort_unstable();
            self.audit.queued.push_back((self.audit.calls, room.incarnation, queued));
        }
        self.outputs.push_back(Output::Broadcast { room: slot, audience, skip, frame });
    }

    /// Sets the role of member `member` of room `slot`; a member on another
    /// shard has its home told (`Output::RoleChanged`), in order with the
    /// broadcasts around the change.
    fn set_role(&mut self, slot: usize, member: usize, role: Role) {
        let room = &mut self.rooms[slot];
        let incarnation = room.incarnation as u32;
        let entry = &mut room.members[member];
        entry.role = role;
        if entry.conn.shard != self.shard {
            let membership = Membership { room: slot as u32, member: member as u32, incarnation };
            self.outputs.push_back(Output::RoleChanged { conn: entry.conn, membership, role });
        }
    }

    /// The role of `conn` at `membership`, if that membership is still valid.
    pub fn role_of(&self, membership: Membership, conn: ConnId) -> Option<Role> {
        self.member_of(membership, conn).map(|member| member.role)
    }

    /// The connections in the room in slot `room`, on every shard.
    #[cfg(test)]
    pub fn members(&self, room: usize) -> impl Iterator<Item = ConnId> + '_ {
        self.rooms.get(room).into_iter().flat_map(|room| room.members.iter().map(|(_, m)| m.conn))
    }

    /// This shard's connections in room `room` that are in `audience`.
    pub fn local_audience(&self, room: usize, audience: Audience) -> impl Iterator<Item = ConnId> + '_ {
        let shard = self.shard;
        self.audience(room, audience).filter(move |conn| conn.shard == shard)
    }

    /// Every connection in room `room` that is in `audience`.
    pub fn audience(&self, room: usize, audience: Audience) -> impl Iterator<Item = ConnId> + '_ {
        self.rooms.get(room).into_iter().flat_map(move |room| {
            room.members.iter().filter(move |(_, m)| audience.includes(m.role)).map(|(_, m)| m.conn)
        })
    }

    /// The other shards of this node with members in the room in slot `room`.
    pub fn remote_shards(&self, room: usize) -> impl Iterator<Item = ShardId> + '_ {
        let (shard, shards) = (self.shard, self.shards);
        self.rooms.get(room).into_iter().flat_map(move |room| {
            room.per_shard()
                .into_iter()
                .flat_map(|counts| counts.iter())
                .enumerate()
                .filter(move |&(s, &n)| n > 0 && s != shard as usize && s < shards)
                .map(|(s, _)| s as ShardId)
        })
    }

    /// Members of the room in slot `room` on other nodes of the cluster.
    pub fn cluster_members(&self, room: usize) -> u32 {
        let lane = self.shards;
        self.rooms.get(room).and_then(Room::per_shard).map_or(0, |counts| counts[lane])
    }

    /// Every membership of a connection of cluster node `node` (0: of any
    /// other node) in the rooms here (that node died, or this one was cut
    /// off: they are removed with `leave`).
    pub fn members_of_node(&self, node: u8) -> Vec<(Membership, ConnId)> {
        let mut found = Vec::new();
        for (slot, room) in &self.rooms {
            if room.per_shard().is_none_or(|counts| counts[self.shards] == 0) {
                continue;
            }
            for (member, entry) in &room.members {
                let of = crate::ids::remote_node(entry.conn.shard);
                if of.is_some() && (node == 0 || of == Some(node)) {
                    let membership =
                        Membership { room: slot as u32, member: member as u32, incarnation: room.incarnation as u32 };
                    found.push((membership, entry.conn));
                }
            }
        }
        found
    }

    /// The keys of every room here now.
    pub fn keys(&self) -> Vec<RoomKey> {
        self.rooms.iter().map(|(_, room)| room.key.clone()).collect()
    }

    /// Members of room `key` on every shard and node (0 when it is not here).
    pub fn member_count(&self, key: &RoomKey) -> usize {
        self.index.get(key, &self.rooms).map_or(0, |slot| self.rooms[slot].members.len())
    }

    /// Whether a room `key` lives here now.
    pub fn contains(&self, key: &RoomKey) -> bool {
        self.index.get(key, &self.rooms).is_some()
    }

    /// Emit `Output::Closed` when a room goes away (a cluster node then
    /// gives up its claim on it).
    pub fn reporting_closed(mut self, on: bool) -> Rooms {
        self.report_closed = on;
        self
    }

    /// Every member of room `key` with its role (admin listings).
    pub fn roles(&self, key: &RoomKey) -> Vec<(ConnId, Role)> {
        let Some(slot) = self.index.get(key, &self.rooms) else { return Vec::new() };
        self.rooms[slot].members.iter().map(|(_, m)| (m.conn, m.role)).collect()
    }

    /// The key of the room in slot `room`.
    pub fn key(&self, room: usize) -> Option<&RoomKey> {
        self.rooms.get(room).map(|room| &room.key)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front()?;
        if cfg!(debug_assertions)
            && let Output::Broadcast { room, audience, .. } = &output
            && let Some((call, incarnation, queued)) = self.audit.queued.pop_front()
            && call == self.audit.calls
            && self.rooms.get(*room).is_some_and(|r| r.incarnation == incarnation)
        {
            let gained: Vec<ConnId> =
                self.audience(*room, *audience).filter(|conn| queued.binary_search(conn).is_err()).collect();
            assert!(gained.is_empty(), "{gained:?} entered the audience of a broadcast after it was queued");
        }
        Some(output)
    }

    /// `key`, or the equal key of a live room here: a connection then keeps
    /// (and its audit row and log line share) the room's own allocation
    /// instead of the copy its handshake made, ~40 bytes per connection of
    /// a room many share.
    pub fn shared_key(&self, key: RoomKey) -> RoomKey {
        match self.index.get(&key, &self.rooms) {
            Some(slot) => self.rooms[slot].key.clone(),
            None => key,
        }
    }

    /// Rooms currently held (each has at least one member).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Marks the start of a call that may queue broadcasts (debug builds).
    fn begin_call(&mut self) {
        if cfg!(debug_assertions) {
            self.audit.calls += 1;
        }
    }

    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Panics if an invariant of the module doc does not hold, with the
    /// message of `verify_invariants` (the one checker: the simulation
    /// calls it directly to name the seed that broke one).
    pub fn check_invariants(&self) {
        if let Err(broken) = self.verify_invariants() {
            panic!("room invariant broken: {broken}");
        }
    }
}

/// `member_joined` or `member_left` (`kind`) about `peer`; the count is of admitted members.
fn encode_presence(frames: &mut FrameBuilder, kind: &str, room: &Room, peer: &Peer) -> Frame {
    let member_count = (room.members.len() - room.waiting as usize) as u64;
    protocol::encode_presence(frames.begin(), kind, room.key.room(), peer.json(), member_count);
    frames.finish(Opcode::Text)
}
