//! Meeting rooms: roles, the lobby, chat with bounded history, raised hands,
//! screen sharing and WebRTC signaling, as a permission matrix over roles
//! and handlers that turn an allowed request into outputs.
//!
//! Roles from least to most privileged: `waiting` (in the lobby: sees only
//! its own admission state), `participant`, `screenshare` (a participant
//! while sharing), `host`. `allowed` is the whole matrix; every request goes
//! through it before it changes anything, and docs/protocol.md prints it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::persist::{ChatRecord, Persist, StoredChat};
use super::{Audience, Member, Membership, Output, Peer, Room, RoomLimits, Rooms};
use crate::ids::{ConnId, ShardId};
use crate::protocol::{self, Chat, MeetingRequest, Welcome, WelcomeHead};
use crate::refusal::Refusal;
use crate::ws::CloseCode;
use crate::ws::frame::{Frame, FrameBuilder, Opcode};

/// Chat ids the server makes up start with this; client ids may not.
const GENERATED_ID_PREFIX: &str = "srv-";

/// A member's role in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Waiting,
    Participant,
    Screenshare,
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Waiting => "waiting",
            Role::Participant => "participant",
            Role::Screenshare => "screenshare",
            Role::Host => "host",
        }
    }
}

/// What a request asks for, with "own" and "someone else's" apart where the
/// matrix treats them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Publish,
    ChatSend,
    ChatDeleteOwn,
    ChatDeleteOther,
    ChatHistory,
    HandRaise,
    HandLowerOwn,
    HandLowerOther,
    ScreenshareRequest,
    ScreenshareGrant,
    ScreenshareDeny,
    ScreenshareStopOwn,
    ScreenshareStopOther,
    LobbyAdmit,
    LobbyDeny,
    LobbySet,
    Kick,
    Signal,
}

impl RequestKind {
    #[cfg(test)]
    pub const ALL: [RequestKind; 18] = [
        RequestKind::Publish,
        RequestKind::ChatSend,
        RequestKind::ChatDeleteOwn,
        RequestKind::ChatDeleteOther,
        RequestKind::ChatHistory,
        RequestKind::HandRaise,
        RequestKind::HandLowerOwn,
        RequestKind::HandLowerOther,
        RequestKind::ScreenshareRequest,
        RequestKind::ScreenshareGrant,
        RequestKind::ScreenshareDeny,
        RequestKind::ScreenshareStopOwn,
        RequestKind::ScreenshareStopOther,
        RequestKind::LobbyAdmit,
        RequestKind::LobbyDeny,
        RequestKind::LobbySet,
        RequestKind::Kick,
        RequestKind::Signal,
    ];
}

/// The permission matrix: may a member with `role` make a request of `kind`?
pub fn allowed(role: Role, kind: RequestKind) -> bool {
    use RequestKind as K;
    match role {
        // The lobby sees only its own admission state.
        Role::Waiting => false,
        Role::Participant => matches!(
            kind,
            K::Publish
                | K::ChatSend
                | K::ChatDeleteOwn
                | K::ChatHistory
                | K::HandRaise
                | K::HandLowerOwn
                | K::ScreenshareRequest
                | K::Signal
        ),
        Role::Screenshare => matches!(
            kind,
            K::Publish
                | K::ChatSend
                | K::ChatDeleteOwn
                | K::ChatHistory
                | K::HandRaise
                | K::HandLowerOwn
                | K::ScreenshareStopOwn
                | K::Signal
        ),
        // Hosts grant sharing (to themselves too) instead of requesting it.
        Role::Host => kind != K::ScreenshareRequest,
    }
}

/// A chat message kept for `chat.history` and `welcome`.
#[derive(Debug)]
pub(super) struct ChatEntry {
    pub(super) id: Box<str>,
    pub(super) author: Box<str>,
    /// The `chat` event as sent, reused verbatim in histories.
    json: Box<[u8]>,
}

/// The meeting state of one room, allocated on first use: most rooms (every
/// personal room) never raise a hand or chat, and idle rooms cost memory.
#[derive(Debug, Default)]
pub(super) struct LazyMeeting(Option<Box<MeetingState>>);

/// What a room without meeting state reads as.
static NO_MEETING: MeetingState =
    MeetingState { hands: Vec::new(), sharers: Vec::new(), share_requests: Vec::new(), history: VecDeque::new() };

impl std::ops::Deref for LazyMeeting {
    type Target = MeetingState;

    fn deref(&self) -> &MeetingState {
        self.0.as_deref().unwrap_or(&NO_MEETING)
    }
}

impl std::ops::DerefMut for LazyMeeting {
    fn deref_mut(&mut self) -> &mut MeetingState {
        self.0.get_or_insert_with(Default::default)
    }
}

/// The meeting state of one room.
#[derive(Debug, Default)]
pub(super) struct MeetingState {
    /// Users with a raised hand, in raise order; each at most once.
    pub(super) hands: Vec<Box<str>>,
    /// Users sharing a screen; at most `screenshare_max`.
    pub(super) sharers: Vec<Box<str>>,
    /// Users who asked to share and wait for a host; each at most once.
    pub(super) share_requests: Vec<Box<str>>,
    /// The last `history_max` chat messages, oldest first.
    pub(super) history: VecDeque<ChatEntry>,
}

impl MeetingState {
    /// What a room without meeting state reads as.
    pub(super) fn none() -> &'static MeetingState {
        &NO_MEETING
    }
}

impl LazyMeeting {
    /// Drops the oldest chat beyond `history_max` (a registry change);
    /// a room without meeting state stays without.
    pub(super) fn trim_history(&mut self, history_max: u32) {
        if let Some(state) = self.0.as_deref_mut() {
            while state.history.len() > history_max as usize {
                state.history.pop_front();
            }
        }
    }
}

impl Rooms {
    /// Carries out a meeting request of `conn` in its room, if its role allows.
    pub fn request(
        &mut self,
        membership: Membership,
        conn: ConnId,
        request: &MeetingRequest,
        reference: Option<&[u8]>,
        now_unix_ms: u64,
    ) -> Result<(), Refusal> {
        self.begin_call();
        let member = self.member_of(membership, conn).ok_or(Refusal::NotJoined)?;
        let (role, peer) = (member.role, Arc::clone(&member.peer));
        // The lobby may do nothing; say so before looking anything up for it.
        if role == Role::Waiting {
            return Err(Refusal::RoleForbids);
        }
        let slot = membership.room as usize;
        let kind = self.kind_of(slot, peer.user(), request)?;
        if !allowed(role, kind) {
            return Err(Refusal::RoleForbids);
        }
        match request {
            MeetingRequest::ChatSend { text, id } => {
                return self.chat_send(slot, &peer, text, id.as_deref(), reference, now_unix_ms);
            }
            MeetingRequest::ChatDelete { id } => self.chat_delete(slot, &peer, id),
            MeetingRequest::ChatHistory { limit } => self.chat_history(slot, conn, *limit),
            MeetingRequest::HandRaise => self.set_hand(slot, peer.user(), true),
            MeetingRequest::HandLower { user } => self.set_hand(slot, user.as_deref().unwrap_or(peer.user()), false),
            MeetingRequest::ScreenshareRequest => self.screenshare_request(slot, &peer),
            MeetingRequest::ScreenshareGrant { user } => self.screenshare_grant(slot, user)?,
            MeetingRequest::ScreenshareDeny { user } => self.screenshare_deny(slot, user)?,
            MeetingRequest::ScreenshareStop { user } => {
                self.screenshare_stop(slot, user.as_deref().unwrap_or(peer.user()))?
            }
            MeetingRequest::LobbyAdmit { user } => self.lobby_admit(slot, user)?,
            MeetingRequest::LobbyDeny { user } => {
                self.remove_user(slot, user, Some(Role::Waiting), CloseCode::DENIED)?
            }
            MeetingRequest::LobbySet { enabled } => self.lobby_set(slot, *enabled),
            MeetingRequest::Kick { user } => {
                if **user == *peer.user() {
                    return Err(Refusal::KickSelf);
                }
                self.remove_user(slot, user, None, CloseCode::KICKED)?;
            }
            MeetingRequest::Signal { to, data } => self.signal(slot, &peer, to, data)?,
        }
        self.ack(conn, reference, None);
        self.debug_check_invariants();
        Ok(())
    }

    /// Which row of the matrix a request is, given who makes it.
    fn kind_of(&self, slot: usize, user: &str, request: &MeetingRequest) -> Result<RequestKind, Refusal> {
        use RequestKind as K;
        let own = |target: &Option<Box<str>>| target.as_deref().is_none_or(|t| t == user);
        Ok(match request {
            MeetingRequest::ChatSend { .. } => K::ChatSend,
            MeetingRequest::ChatDelete { id } => {
                let room = &self.rooms[slot];
                let entry = room.meeting().history.iter().find(|e| e.id == *id);
                match entry {
                    Some(entry) if *entry.author == *user => K::ChatDeleteOwn,
                    Some(_) => K::ChatDeleteOther,
                    None => return Err(Refusal::NoSuchChat),
                }
            }
            MeetingRequest::ChatHistory { .. } => K::ChatHistory,
            MeetingRequest::HandRaise => K::HandRaise,
            MeetingRequest::HandLower { user: target } if own(target) => K::HandLowerOwn,
            MeetingRequest::HandLower { .. } => K::HandLowerOther,
            MeetingRequest::ScreenshareRequest => K::ScreenshareRequest,
            MeetingRequest::ScreenshareGrant { .. } => K::ScreenshareGrant,
            MeetingRequest::ScreenshareDeny { .. } => K::ScreenshareDeny,
            MeetingRequest::ScreenshareStop { user: target } if own(target) => K::ScreenshareStopOwn,
            MeetingRequest::ScreenshareStop { .. } => K::ScreenshareStopOther,
            MeetingRequest::LobbyAdmit { .. } => K::LobbyAdmit,
            MeetingRequest::LobbyDeny { .. } => K::LobbyDeny,
            MeetingRequest::LobbySet { .. } => K::LobbySet,
            MeetingRequest::Kick { .. } => K::Kick,
            MeetingRequest::Signal { .. } => K::Signal,
        })
    }

    fn ack(&mut self, to: ConnId, reference: Option<&[u8]>, seq: Option<u64>) {
        if reference.is_some() {
            protocol::encode_ack(self.frames.begin(), reference, seq);
            let frame = self.frames.finish(Opcode::Text);
            self.outputs.push_back(Output::Deliver { to, frame });
        }
    }

    fn broadcast(&mut self, slot: usize, audience: Audience, frame: Frame) {
        self.push_broadcast(slot, audience, None, frame);
    }

    /// `chat.send`: a `chat` event to every admitted member (the sender too),
    /// kept in the room's history; the ack carries its `seq`. With the store
    /// on, the message also goes out as `Output::Persist` carrying the ack:
    /// the broadcast does not wait for the disk, the ack does.
    fn chat_send(
        &mut self,
        slot: usize,
        peer: &Peer,
        text: &str,
        id: Option<&str>,
        reference: Option<&[u8]>,
        now_unix_ms: u64,
    ) -> Result<(), Refusal> {
        self.check_chat(slot, text, id)?;
        let room = &mut self.rooms[slot];
        room.seq += 1;
        let seq = room.seq;
        let epoch = self.epoch(slot);
        let history_max = self.history_max(&self.rooms[slot].key);
        let room = &mut self.rooms[slot];
        // Generated ids live in a namespace clients may not use, so a
        // generated id never equals one a client chose; the epoch keeps
        // them unique across restarts, where `seq` starts again.
        let id: Box<str> = id.map_or_else(|| format!("{GENERATED_ID_PREFIX}{epoch}-{seq}").into(), Into::into);
        let chat = Chat {
            room: room.key.room(),
            id: &id,
            from_json: peer.user_json(),
            name: peer.name(),
            text,
            ts_ms: now_unix_ms,
            seq,
            epoch: &epoch,
        };
        let out = self.frames.begin();
        protocol::encode_chat(out, &chat);
        let json: Box<[u8]> = out[crate::ws::frame::HEADER_ROOM..].into();
        let frame = self.frames.finish(Opcode::Text);
        let author: Box<str> = peer.user().into();
        let record = self.durable.then(|| ChatRecord {
            key: room.key.clone(),
            epoch: epoch.into(),
            seq,
            id: id.clone(),
            author: author.clone(),
            ts_ms: now_unix_ms,
            json: json.clone(),
            sender: peer.conn,
            reference: reference.map(Into::into),
        });
        if self.report_chats {
            let report = Output::Chatted {
                key: room.key.clone(),
                sender: peer.conn,
                id: id.clone(),
                author: author.clone(),
                text: text.into(),
            };
            self.outputs.push_back(report);
        }
        let room = &mut self.rooms[slot];
        let history = &mut room.meeting_mut().history;
        history.push_back(ChatEntry { id, author, json });
        while history.len() > history_max as usize {
            history.pop_front();
        }
        self.broadcast(slot, Audience::Admitted, frame);
        match record {
            Some(record) => {
                if let Some(filter) = &mut self.chat_filter {
                    filter.insert(&record.key);
                }
                self.outputs.push_back(Output::Persist(Persist::Chat(Box::new(record))))
            }
            None => self.ack(peer.conn, reference, Some(seq)),
        }
        self.debug_check_invariants();
        Ok(())
    }

    /// Why a `chat.send` of `text` with the client's `id` cannot go to room `slot`, if it cannot.
    fn check_chat(&self, slot: usize, text: &str, id: Option<&str>) -> Result<(), Refusal> {
        if text.trim().is_empty() {
            return Err(Refusal::ChatEmpty);
        }
        if text.chars().count() > self.limits.chat_text_chars_max as usize {
            return Err(Refusal::ChatTooLong);
        }
        if let Some(id) = id {
            if id.is_empty() || id.len() > 64 || id.starts_with(GENERATED_ID_PREFIX) {
                return Err(Refusal::ChatIdInvalid);
            }
            if self.rooms[slot].meeting().history.iter().any(|e| *e.id == *id) {
                return Err(Refusal::ChatIdTaken);
            }
        }
        Ok(())
    }

    fn chat_delete(&mut self, slot: usize, peer: &Peer, id: &str) {
        let room = &mut self.rooms[slot];
        room.meeting_mut().history.retain(|e| *e.id != *id);
        if self.durable {
            self.outputs.push_back(Output::Persist(Persist::ChatDelete { key: room.key.clone(), id: id.into() }));
        }
        protocol::encode_chat_deleted(self.frames.begin(), room.key.room(), id, peer.user_json());
        let frame = self.frames.finish(Opcode::Text);
        self.broadcast(slot, Audience::Admitted, frame);
    }

    fn chat_history(&mut self, slot: usize, to: ConnId, limit: Option<u32>) {
        let limit = limit.unwrap_or(self.history_max(&self.rooms[slot].key)) as usize;
        let frame = encode_history(&mut self.frames, &self.rooms[slot], limit);
        self.outputs.push_back(Output::Deliver { to, frame });
    }

    /// Puts the stored history of room `slot` before the messages it holds
    /// (sent since it was created), keeping the newest `history_max`.
    pub(super) fn merge_history(&mut self, slot: usize, stored: Vec<StoredChat>) {
        let history_max = self.history_max(&self.rooms[slot].key);
        let history = &mut self.rooms[slot].meeting_mut().history;
        let sent_since = std::mem::take(history);
        for entry in stored {
            if !sent_since.iter().any(|e| e.id == entry.id) {
                history.push_back(ChatEntry { id: entry.id, author: entry.author, json: entry.json });
            }
        }
        history.extend(sent_since);
        while history.len() > history_max as usize {
            history.pop_front();
        }
    }

    /// Raises or lowers `user`'s hand; admitted members get the new queue.
    fn set_hand(&mut self, slot: usize, user: &str, raised: bool) {
        let hands = &mut self.rooms[slot].meeting_mut().hands;
        let at = hands.iter().position(|h| **h == *user);
        let changed = match (raised, at) {
            (true, None) => {
                hands.push(user.into());
                true
            }
            (false, Some(at)) => {
                hands.remove(at);
                true
            }
            _ => false,
        };
        if changed {
            self.send_hands(slot);
        }
    }

    fn send_hands(&mut self, slot: usize) {
        let room = &self.rooms[slot];
        protocol::encode_hands(self.frames.begin(), room.key.room(), &room.meeting().hands);
        let frame = self.frames.finish(Opcode::Text);
        self.broadcast(slot, Audience::Admitted, frame);
    }

    fn screenshare_request(&mut self, slot: usize, peer: &Peer) {
        let room = &mut self.rooms[slot];
        if room.meeting().share_requests.iter().any(|u| **u == *peer.user()) {
            return;
        }
        room.meeting_mut().share_requests.push(Box::<str>::from(peer.user()));
        let frame = encode_user_event(&mut self.frames, room, "screenshare", peer.user(), "requested");
        self.broadcast(slot, Audience::Hosts, frame);
    }

    fn screenshare_grant(&mut self, slot: usize, user: &str) -> Result<(), Refusal> {
        let screenshare_max = self.limits.screenshare_max as usize;
        let room = &mut self.rooms[slot];
        if !room.members.iter().any(|(_, m)| *m.peer.user() == *user && m.role != Role::Waiting) {
            return Err(Refusal::NotAdmitted);
        }
        if room.meeting().sharers.iter().any(|u| **u == *user) {
            return Ok(());
        }
        if room.meeting().sharers.len() >= screenshare_max {
            return Err(Refusal::ScreenshareBusy);
        }
        room.meeting_mut().sharers.push(user.into());
        room.meeting_mut().share_requests.retain(|u| **u != *user);
        let frame = encode_user_event(&mut self.frames, room, "screenshare", user, "started");
        self.broadcast(slot, Audience::Admitted, frame);
        self.set_role_of_user(slot, user, Role::Participant, Role::Screenshare);
        Ok(())
    }

    fn screenshare_deny(&mut self, slot: usize, user: &str) -> Result<(), Refusal> {
        let room = &mut self.rooms[slot];
        if !take_user(&mut room.meeting_mut().share_requests, user) {
            return Err(Refusal::NotAskedToShare);
        }
        let frame = encode_user_event(&mut self.frames, room, "screenshare", user, "denied");
        let targets: Vec<ConnId> = room
            .members
            .iter()
            .filter(|(_, m)| *m.peer.user() == *user && m.role != Role::Waiting)
            .map(|(_, m)| m.conn)
            .collect();
        for to in targets {
            self.outputs.push_back(Output::Deliver { to, frame: Arc::clone(&frame) });
        }
        Ok(())
    }

    fn screenshare_stop(&mut self, slot: usize, user: &str) -> Result<(), Refusal> {
        let room = &mut self.rooms[slot];
        if !take_user(&mut room.meeting_mut().sharers, user) {
            return Err(Refusal::NotSharing);
        }
        let frame = encode_user_event(&mut self.frames, room, "screenshare", user, "stopped");
        self.broadcast(slot, Audience::Admitted, frame);
        self.set_role_of_user(slot, user, Role::Screenshare, Role::Participant);
        Ok(())
    }

    /// Moves `user`'s members with role `from` to `to`, telling admitted members.
    fn set_role_of_user(&mut self, slot: usize, user: &str, from: Role, to: Role) {
        let moving: Vec<usize> = self.rooms[slot]
            .members
            .iter()
            .filter(|(_, m)| *m.peer.user() == *user && m.role == from)
            .map(|(at, _)| at)
            .collect();
        if moving.is_empty() {
            return;
        }
        for member in moving {
            self.set_role(slot, member, to);
        }
        let frame = encode_user_event(&mut self.frames, &self.rooms[slot], "role", user, to.as_str());
        self.broadcast(slot, Audience::Admitted, frame);
    }

    fn lobby_admit(&mut self, slot: usize, user: &str) -> Result<(), Refusal> {
        let waiting: Vec<usize> = self.rooms[slot]
            .members
            .iter()
            .filter(|(_, m)| *m.peer.user() == *user && m.role == Role::Waiting)
            .map(|(at, _)| at)
            .collect();
        if waiting.is_empty() {
            return Err(Refusal::NotWaiting);
        }
        self.admit_members(slot, waiting);
        Ok(())
    }

    /// Admits lobby members `members` of room `slot` together (`lobby.admit`
    /// of a user waiting with several connections, the lobby turned off).
    ///
    /// Every role changes first, then hosts hear each `admitted`, then each
    /// admitted member gets its full `welcome`, then each is announced by
    /// `member_joined`, all in arrival order. A broadcast reaches its
    /// audience as it is when queued (`push_broadcast`), so no role may
    /// change after a `member_joined` went out in the same call: otherwise
    /// the owner's shard would read the later role and send it to a member
    /// before its welcome, while other shards (told of roles in order) would
    /// not send it at all. Each welcome lists the members admitted before
    /// this call, not the others admitted with it: those reach it once each,
    /// by their `member_joined`, after its welcome (docs/protocol.md §14.3).
    fn admit_members(&mut self, slot: usize, mut members: Vec<usize>) {
        let room = &self.rooms[slot];
        members.sort_unstable_by_key(|&member| room.members[member].arrival);
        for &member in &members {
            self.set_role(slot, member, Role::Participant);
            self.rooms[slot].waiting -= 1;
        }
        for &member in &members {
            let room = &self.rooms[slot];
            let event = encode_lobby_event(&mut self.frames, room, "admitted", &room.members[member].peer);
            self.broadcast(slot, Audience::Hosts, event);
        }
        for &member in &members {
            self.welcome(slot, member, None, Vec::new(), &members);
        }
        for &member in &members {
            self.announce(slot, member);
        }
    }

    /// Closes every connection of `user` in the room (with role `only`, if
    /// given) with `code`, removing it from the room first.
    fn remove_user(&mut self, slot: usize, user: &str, only: Option<Role>, code: CloseCode) -> Result<(), Refusal> {
        let targets: Vec<(usize, ConnId)> = self.rooms[slot]
            .members
            .iter()
            .filter(|(_, m)| *m.peer.user() == *user && only.is_none_or(|role| m.role == role))
            .map(|(at, m)| (at, m.conn))
            .collect();
        if targets.is_empty() {
            return Err(Refusal::NoSuchMember);
        }
        for (member, conn) in targets {
            self.outputs.push_back(Output::Close { conn, code });
            // The room is never emptied here: the host making the request stays.
            self.remove_member(slot, member);
        }
        Ok(())
    }

    /// `lobby.set` (and a registry change of `lobby`): a change is told to
    /// admitted members (`lobby_state`); a setting that is already so is
    /// acked with no event.
    pub(super) fn lobby_set(&mut self, slot: usize, enabled: bool) {
        let room = &mut self.rooms[slot];
        if room.lobby == enabled {
            return;
        }
        room.lobby = enabled;
        // Turning the lobby off admits everyone in it, before `lobby_state`
        // goes out: a broadcast reaches the audience as it is when queued
        // (`push_broadcast`), so the newly admitted get it too, after their
        // welcome, on every shard alike.
        if !enabled {
            let waiting: Vec<usize> =
                room.members.iter().filter(|(_, m)| m.role == Role::Waiting).map(|(at, _)| at).collect();
            if !waiting.is_empty() {
                self.admit_members(slot, waiting);
            }
        }
        protocol::encode_lobby_state(self.frames.begin(), self.rooms[slot].key.room(), enabled);
        let frame = self.frames.finish(Opcode::Text);
        self.broadcast(slot, Audience::Admitted, frame);
    }

    /// `signal`: relayed to every admitted connection of `to` in this room.
    fn signal(&mut self, slot: usize, from: &Peer, to: &str, data: &[u8]) -> Result<(), Refusal> {
        let room = &self.rooms[slot];
        let targets: Vec<ConnId> = room
            .members
            .iter()
            .filter(|(_, m)| *m.peer.user() == *to && m.role != Role::Waiting && m.conn != from.conn)
            .map(|(_, m)| m.conn)
            .collect();
        if targets.is_empty() {
            return Err(Refusal::NoSignalTarget);
        }
        protocol::encode_signal(self.frames.begin(), room.key.room(), from.user_json(), data);
        let frame = self.frames.finish(Opcode::Text);
        for to in targets {
            self.outputs.push_back(Output::Deliver { to, frame: Arc::clone(&frame) });
        }
        Ok(())
    }

    /// After an admitted member left: if it was the user's last connection,
    /// its hand, share and share request go; a room without a host gets one.
    /// Each check walks the members only when it can matter (the user has
    /// a hand, share or request; the one who left was a host), so a big
    /// room emptying costs a walk per host, not per departure.
    pub(super) fn after_departure(&mut self, slot: usize, user: &str, was_host: bool) {
        let room = &mut self.rooms[slot];
        let meeting = room.meeting();
        let requested = meeting.share_requests.iter().any(|u| **u == *user);
        let raised = meeting.hands.iter().any(|h| **h == *user);
        let sharing = meeting.sharers.iter().any(|u| **u == *user);
        if (requested || raised || sharing)
            && !room.members.iter().any(|(_, m)| *m.peer.user() == *user && m.role != Role::Waiting)
        {
            if requested {
                room.meeting_mut().share_requests.retain(|u| **u != *user);
            }
            if raised {
                self.set_hand(slot, user, false);
            }
            if sharing {
                let _ = self.screenshare_stop(slot, user);
            }
        }
        // Hosts are never demoted: a room loses its last host only when one leaves.
        if was_host {
            self.hand_over_host(slot);
        }
    }

    /// When no host is left, the longest-present admitted member becomes
    /// host and everyone admitted is told; the new host hears who waits in
    /// the lobby. With nobody admitted, the longest-waiting member becomes
    /// host (so a lobby never waits for a host that cannot come) and gets
    /// its full welcome, whose `waiting` lists the rest of the lobby.
    fn hand_over_host(&mut self, slot: usize) {
        let room = &mut self.rooms[slot];
        if room.members.iter().any(|(_, m)| m.role == Role::Host) {
            return;
        }
        let admitted = room.members.iter().filter(|(_, m)| m.role != Role::Waiting).min_by_key(|(_, m)| m.arrival);
        let Some(heir) = admitted.or_else(|| room.members.iter().min_by_key(|(_, m)| m.arrival)).map(|(at, _)| at)
        else {
            return;
        };
        if room.members[heir].role == Role::Waiting {
            room.waiting -= 1;
            self.set_role(slot, heir, Role::Host);
            self.admitted(slot, heir);
            return;
        }
        self.set_role(slot, heir, Role::Host);
        let member = &self.rooms[slot].members[heir];
        if member.quiet {
            return; // personal and group rooms: roles exist, but nobody is told
        }
        let (user, heir_conn): (Box<str>, ConnId) = (member.peer.user().into(), member.conn);
        let room = &self.rooms[slot];
        let admitted = room.members.len() - room.waiting as usize;
        let frame = encode_user_event(&mut self.frames, room, "role", &user, Role::Host.as_str());
        if admitted > self.limits.presence_members_max as usize {
            // A big room tells only the heir, as it sends no presence: when
            // its members leave in arrival order (a client fleet shutting
            // down), each departure makes a new host, and telling everyone
            // would queue n²/2 frames, most for connections already closing.
            self.outputs.push_back(Output::Deliver { to: heir_conn, frame });
        } else {
            self.broadcast(slot, Audience::Admitted, frame);
        }
        self.tell_lobby_to(slot, heir);
    }

    /// Sends a new host one `lobby` `waiting` event per member in the lobby,
    /// at most `welcome_members_max` (as a welcome's `waiting` list), so a
    /// big lobby does not flood one connection.
    fn tell_lobby_to(&mut self, slot: usize, host: usize) {
        let room = &self.rooms[slot];
        let to = room.members[host].conn;
        let waiting: Vec<Arc<Peer>> = room
            .members
            .iter()
            .filter(|(_, m)| m.role == Role::Waiting)
            .take(self.limits.welcome_members_max as usize)
            .map(|(_, m)| Arc::clone(&m.peer))
            .collect();
        for peer in waiting {
            let event = encode_lobby_event(&mut self.frames, &self.rooms[slot], "waiting", &peer);
            self.outputs.push_back(Output::Deliver { to, frame: event });
        }
    }
}

/// Removes `user` from a list of users; false when it was not there.
fn take_user(users: &mut Vec<Box<str>>, user: &str) -> bool {
    let before = users.len();
    users.retain(|u| **u != *user);
    users.len() != before
}

/// A `role` or `screenshare` event (`protocol::encode_user_event`).
fn encode_user_event(frames: &mut FrameBuilder, room: &Room, kind: &str, user: &str, value: &str) -> Frame {
    protocol::encode_user_event(frames.begin(), kind, room.key.room(), user, value);
    frames.finish(Opcode::Text)
}

/// A `lobby` event about `peer`, for hosts.
pub(super) fn encode_lobby_event(frames: &mut FrameBuilder, room: &Room, event: &str, peer: &Peer) -> Frame {
    protocol::encode_lobby_event(frames.begin(), room.key.room(), event, peer.json());
    frames.finish(Opcode::Text)
}

/// The head every welcome of `peer` in `room` starts with.
fn welcome_head<'a>(room: &'a Room, peer: &'a Peer, shard: ShardId, role: Role) -> WelcomeHead<'a> {
    WelcomeHead { conn: peer.conn, room: room.key.room(), shard, user_json: peer.user_json(), role: role.as_str() }
}

/// The welcome of a lobby member: its own admission state and nothing else.
pub(super) fn encode_waiting_welcome(frames: &mut FrameBuilder, room: &Room, peer: &Peer, shard: ShardId) -> Frame {
    protocol::encode_waiting_welcome(frames.begin(), &welcome_head(room, peer, shard, Role::Waiting));
    frames.finish(Opcode::Text)
}

/// The full welcome of an admitted member: members (at most
/// `welcome_members_max` of the others), hands, sharers, recent chat, and
/// for hosts the lobby. Members in `unlisted` (slots in the room) are left
/// out of `members`: they were admitted in the same call and are announced
/// by `member_joined` after the welcome.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_welcome(
    frames: &mut FrameBuilder,
    room: &Room,
    member: &Member,
    shard: ShardId,
    epoch: &str,
    recovered: Option<bool>,
    unlisted: &[usize],
    limits: &RoomLimits,
) -> Frame {
    let peer = &member.peer;
    let shown = limits.welcome_members_max as usize;
    let welcome = Welcome {
        seq: room.seq,
        epoch,
        member_count: (room.members.len() - room.waiting as usize) as u64,
        lobby: room.lobby,
        hands: &room.meeting().hands,
        sharers: &room.meeting().sharers,
        history_loading: room.loading,
        recovered,
    };
    let others = room
        .members
        .iter()
        .filter(|&(at, m)| m.conn != peer.conn && m.role != Role::Waiting && !unlisted.contains(&at))
        .take(shown)
        .map(|(_, m)| (m.peer.json(), m.role.as_str()));
    let waiting = (member.role == Role::Host)
        .then(|| room.members.iter().filter(|(_, m)| m.role == Role::Waiting).take(shown).map(|(_, m)| m.peer.json()));
    let history = recent_chat(&room.meeting().history, limits.welcome_history_max as usize);
    let head = welcome_head(room, peer, shard, member.role);
    protocol::encode_welcome(frames.begin(), &head, &welcome, others, history, waiting);
    frames.finish(Opcode::Text)
}

/// A `chat_history` with the last `limit` messages, plus `"loading":true`
/// while the stored history is on its way.
pub(super) fn encode_history(frames: &mut FrameBuilder, room: &Room, limit: usize) -> Frame {
    let messages = recent_chat(&room.meeting().history, limit);
    protocol::encode_history(frames.begin(), room.key.room(), messages, room.loading);
    frames.finish(Opcode::Text)
}

/// The last `limit` chat messages, oldest first, as the `chat` events sent.
fn recent_chat(history: &VecDeque<ChatEntry>, limit: usize) -> impl Iterator<Item = &[u8]> {
    history.iter().skip(history.len().saturating_sub(limit)).map(|entry| &*entry.json)
}
