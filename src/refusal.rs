//! Every refusal roomcast's rooms, shards and request decoder make, as one
//! typed enum, and the one place that maps a refusal to the wire: the
//! `error` frame's `code` and `message`, the Close a refusal of the URL room
//! ends a connection with, the HTTP status of a refusal answered before the
//! upgrade, and the limit counter it belongs to. Code elsewhere matches on
//! variants, never on wire text, so a reworded message cannot change
//! behaviour. It sits just above the leaves (it names `ws::CloseCode`s), so
//! every layer from `protocol` up may use it (`metrics` maps `Limit` to its
//! `LimitKind`).

use crate::ws::CloseCode;

/// A refused request (or connection), by what was refused and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The text frame is not a request (`bad_json`, `bad_request`, `unknown_type`).
    Request(RequestError),
    /// The room is at its member limit (`limits.room_members_max` or its registry capacity).
    RoomFull,
    /// A join would create a room on a shard at `limits.rooms_per_shard_max`.
    ShardRoomsFull,
    /// `rooms.require_registration` and the room is not in the registry.
    RoomNotRegistered,
    /// A private registry room and the token's `room` claim does not name it.
    RoomPrivate,
    /// The member's role in the room may not make the request (the permission matrix).
    RoleForbids,
    /// The connection is not in the room the request names.
    NotJoined,
    /// The owner of a room found the membership a remote request carried stale.
    StaleMembership,
    /// A host asked to kick itself.
    KickSelf,
    ChatEmpty,
    /// A client chat id that is empty, over 64 bytes or in the server's `srv-` namespace.
    ChatIdInvalid,
    /// A client chat id already in the room's history.
    ChatIdTaken,
    /// A chat text over `rooms.chat_text_chars_max`.
    ChatTooLong,
    /// `chat.delete` of an id not in the room's history.
    NoSuchChat,
    /// `screenshare.grant` of a user with no admitted member in the room.
    NotAdmitted,
    /// `screenshare.deny` of a user who has not asked to share.
    NotAskedToShare,
    /// `screenshare.stop` of a user who is not sharing.
    NotSharing,
    /// `lobby.admit` of a user with no connection in the lobby.
    NotWaiting,
    /// `lobby.deny` or `kick` of a user with no (such) member in the room.
    NoSuchMember,
    /// `signal` to a user with no other admitted member in the room.
    NoSignalTarget,
    /// A grant past `rooms.screenshare_max` sharers.
    ScreenshareBusy,
    AlreadyJoined,
    /// The connection is in `limits.rooms_per_connection_max` rooms.
    ConnectionRoomsFull,
    /// The URL room, personal and group rooms cannot be left.
    CannotLeave,
    /// The room's join is in flight to its owner.
    JoinPending,
    /// `direct` to a user with no connection.
    UserOffline,
    /// The outbox to the shard owning the room is full (`limits.shard_outbox_max`).
    Overloaded,
    /// Not a valid room id.
    BadRoom,
    /// The token does not allow the room (`auth::may_join`).
    TokenForbidsRoom,
    /// The token has a `perms` claim without this permission.
    PermMissing(Perm),
    /// `refresh` without `auth.mode = jwt`.
    RefreshUnsupported,
    /// The acceptor's refresh queue is full (`acceptor::REFRESH_QUEUE_MAX`).
    RefreshOverloaded,
    /// The refresh token did not verify: auth's own code and message.
    TokenRefused {
        code: &'static str,
        message: &'static str,
    },
    /// A single-use token cannot refresh a connection.
    RefreshSingleUse,
    /// The refresh token is for another user or tenant.
    RefreshOtherIdentity,
    /// The refresh token's room claim does not allow the URL room.
    RefreshRoomClaim,
    /// Over `limits.rate_messages_per_s`: the message was dropped.
    RateLimited,
    /// The store queue is full: a chat message went out live, not durable, and is not acked.
    StoreOverloaded,
    /// The store could not write a chat message: live, not durable, not acked.
    StoreFailed,
    /// The connection's state is missing (a shard bug, never a client's doing).
    Internal,
    /// A handoff reached a shard that is draining for shutdown.
    Draining,
    /// A handoff reached a shard at `limits.connections_per_shard_max`.
    ServerFull,
}

/// The permissions a token's `perms` claim can list, each gating requests
/// (docs/protocol.md §2.2). A token without `perms` has them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// `publish`.
    Publish,
    /// `join` (the rooms entered at connect need none).
    Join,
    /// `direct`.
    Direct,
    /// `chat.send` and `chat.delete`.
    Chat,
    /// `signal`.
    Signal,
}

impl Perm {
    pub const ALL: [Perm; 5] = [Perm::Publish, Perm::Join, Perm::Direct, Perm::Chat, Perm::Signal];

    /// The name written in the `perms` claim.
    pub fn name(self) -> &'static str {
        match self {
            Perm::Publish => "publish",
            Perm::Join => "join",
            Perm::Direct => "direct",
            Perm::Chat => "chat",
            Perm::Signal => "signal",
        }
    }

    /// The `forbidden` message of a request this permission gates.
    fn missing_message(self) -> &'static str {
        match self {
            Perm::Publish => "the token's perms claim does not include \"publish\"",
            Perm::Join => "the token's perms claim does not include \"join\"",
            Perm::Direct => "the token's perms claim does not include \"direct\"",
            Perm::Chat => "the token's perms claim does not include \"chat\"",
            Perm::Signal => "the token's perms claim does not include \"signal\"",
        }
    }
}

/// The limit counters refusals belong to, each named as its
/// `metrics::LimitKind` (which `metrics` maps it to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RoomFull,
    ShardRoomsFull,
    TooManyRooms,
    ChatTooLong,
    ScreenshareBusy,
    RateLimited,
    OutboxFull,
    StoreOverloaded,
    StoreFailed,
    Draining,
    ShardFull,
}

/// The refusals that may cross to another node (`cluster::wire`), each by a
/// stable number: its index here. Append only; never reorder or remove, or
/// nodes of two versions misread each other. Absent: the refusals that carry
/// another module's text (`TokenRefused`, `Request(MissingField | BadField)`),
/// which are answered where they are made and never travel.
const WIRE: [Refusal; 48] = [
    Refusal::Request(RequestError::BadJson),
    Refusal::Request(RequestError::MissingType),
    Refusal::Request(RequestError::UnknownType),
    Refusal::Request(RequestError::Unreadable),
    Refusal::RoomFull,
    Refusal::ShardRoomsFull,
    Refusal::RoomNotRegistered,
    Refusal::RoomPrivate,
    Refusal::RoleForbids,
    Refusal::NotJoined,
    Refusal::StaleMembership,
    Refusal::KickSelf,
    Refusal::ChatEmpty,
    Refusal::ChatIdInvalid,
    Refusal::ChatIdTaken,
    Refusal::ChatTooLong,
    Refusal::NoSuchChat,
    Refusal::NotAdmitted,
    Refusal::NotAskedToShare,
    Refusal::NotSharing,
    Refusal::NotWaiting,
    Refusal::NoSuchMember,
    Refusal::NoSignalTarget,
    Refusal::ScreenshareBusy,
    Refusal::AlreadyJoined,
    Refusal::ConnectionRoomsFull,
    Refusal::CannotLeave,
    Refusal::JoinPending,
    Refusal::UserOffline,
    Refusal::Overloaded,
    Refusal::BadRoom,
    Refusal::TokenForbidsRoom,
    Refusal::PermMissing(Perm::Publish),
    Refusal::PermMissing(Perm::Join),
    Refusal::PermMissing(Perm::Direct),
    Refusal::PermMissing(Perm::Chat),
    Refusal::PermMissing(Perm::Signal),
    Refusal::RefreshUnsupported,
    Refusal::RefreshOverloaded,
    Refusal::RefreshSingleUse,
    Refusal::RefreshOtherIdentity,
    Refusal::RefreshRoomClaim,
    Refusal::RateLimited,
    Refusal::StoreOverloaded,
    Refusal::StoreFailed,
    Refusal::Internal,
    Refusal::Draining,
    Refusal::ServerFull,
];

impl Refusal {
    /// This refusal's stable number between nodes (`WIRE`); `None` for
    /// those that never travel.
    pub fn wire_id(self) -> Option<u8> {
        WIRE.iter().position(|&refusal| refusal == self).and_then(|at| u8::try_from(at).ok())
    }

    /// The refusal numbered `id` by `wire_id`, if there is one.
    pub fn from_wire_id(id: u8) -> Option<Refusal> {
        WIRE.get(usize::from(id)).copied()
    }

    /// The `error` frame's `code`.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Request(error) => error.code(),
            Refusal::RoomFull => "room_full",
            Refusal::ShardRoomsFull | Refusal::ConnectionRoomsFull => "too_many_rooms",
            Refusal::RoomNotRegistered => "room_not_registered",
            Refusal::RoomPrivate => "room_private",
            Refusal::RoleForbids
            | Refusal::TokenForbidsRoom
            | Refusal::PermMissing(_)
            | Refusal::RefreshSingleUse
            | Refusal::RefreshOtherIdentity
            | Refusal::RefreshRoomClaim => "forbidden",
            Refusal::NotJoined | Refusal::StaleMembership => "not_joined",
            Refusal::KickSelf | Refusal::ChatEmpty | Refusal::ChatIdInvalid => "bad_request",
            Refusal::ChatIdTaken => "duplicate_id",
            Refusal::ChatTooLong => "too_long",
            Refusal::NoSuchChat
            | Refusal::NotAdmitted
            | Refusal::NotAskedToShare
            | Refusal::NotSharing
            | Refusal::NotWaiting
            | Refusal::NoSuchMember
            | Refusal::NoSignalTarget
            | Refusal::UserOffline => "not_found",
            Refusal::ScreenshareBusy => "screenshare_busy",
            Refusal::AlreadyJoined => "already_joined",
            Refusal::CannotLeave => "cannot_leave",
            Refusal::JoinPending => "join_pending",
            Refusal::Overloaded | Refusal::RefreshOverloaded => "overloaded",
            Refusal::BadRoom => "bad_room",
            Refusal::RefreshUnsupported => "unsupported",
            Refusal::TokenRefused { code, .. } => code,
            Refusal::RateLimited => "rate_limited",
            Refusal::StoreOverloaded => "store_overloaded",
            Refusal::StoreFailed => "store_failed",
            Refusal::Internal => "internal",
            Refusal::Draining => "draining",
            Refusal::ServerFull => "server_full",
        }
    }

    /// The `error` frame's `message`.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Request(error) => error.message(),
            Refusal::RoomFull => "the room is at its member limit",
            Refusal::ShardRoomsFull => "the shard owning this room holds limits.rooms_per_shard_max rooms",
            Refusal::RoomNotRegistered => "the room is not in the registry (rooms.require_registration)",
            Refusal::RoomPrivate => "the room is private: only a token whose room claim names it may enter",
            Refusal::RoleForbids => "your role in this room may not make this request",
            Refusal::NotJoined => "this connection is not in that room",
            Refusal::StaleMembership => "not a member of that room",
            Refusal::KickSelf => "a host cannot kick itself; close the connection instead",
            Refusal::ChatEmpty => "chat text is empty",
            Refusal::ChatIdInvalid => "a chat id is 1-64 bytes and does not start with \"srv-\"",
            Refusal::ChatIdTaken => "a chat message with that id is in the history",
            Refusal::ChatTooLong => "chat text is over rooms.chat_text_chars_max characters",
            Refusal::NoSuchChat => "no chat message with that id in the room's history",
            Refusal::NotAdmitted => "no admitted member with that user id",
            Refusal::NotAskedToShare => "that user has not asked to share",
            Refusal::NotSharing => "that user is not sharing",
            Refusal::NotWaiting => "no connection of that user is waiting",
            Refusal::NoSuchMember => "no such member in the room",
            Refusal::NoSignalTarget => "no admitted member with that user id in this room",
            Refusal::ScreenshareBusy => "rooms.screenshare_max members are sharing already",
            Refusal::AlreadyJoined => "this connection is already in that room",
            Refusal::ConnectionRoomsFull => "this connection is in limits.rooms_per_connection_max rooms",
            Refusal::CannotLeave => "the room in the URL, personal and group rooms cannot be left",
            Refusal::JoinPending => "the join of that room is not confirmed yet; wait for its welcome",
            Refusal::UserOffline => "that user has no connection",
            Refusal::Overloaded => "the shard owning that room is not keeping up; try again",
            Refusal::BadRoom => "room ids are 1-128 bytes of [A-Za-z0-9._:-]",
            Refusal::TokenForbidsRoom => "the token does not allow this room",
            Refusal::PermMissing(perm) => perm.missing_message(),
            Refusal::RefreshUnsupported => "refresh needs auth.mode = jwt",
            Refusal::RefreshOverloaded => "the server is verifying too many refresh tokens; try again",
            Refusal::TokenRefused { message, .. } => message,
            Refusal::RefreshSingleUse => "a single-use token cannot refresh a connection",
            Refusal::RefreshOtherIdentity => "a refresh token must be for the same user and tenant",
            Refusal::RefreshRoomClaim => "the refresh token's room claim does not allow this room",
            Refusal::RateLimited => "message rate over rate_messages_per_s; message dropped",
            Refusal::StoreOverloaded => {
                "the message was delivered but not stored: the store is behind; it is not acknowledged"
            }
            Refusal::StoreFailed => {
                "the message was delivered but the store could not write it; it is not acknowledged"
            }
            Refusal::Internal => "connection state missing",
            Refusal::Draining => "the server is shutting down",
            Refusal::ServerFull => "the shard holding this room is full",
        }
    }

    /// The Close that ends a connection whose URL (home) room this refusal
    /// keeps it out of: 1013 when the room or its shard is full (or the
    /// owner is not keeping up), 1008 when the room's registry entry
    /// refuses it. `None` for refusals that cannot keep a connection out of
    /// its URL room; the shard then closes with 1013 `server full`.
    pub fn close(self) -> Option<CloseCode> {
        match self {
            Refusal::RoomFull => Some(CloseCode::ROOM_FULL),
            Refusal::RoomPrivate => Some(CloseCode::ROOM_PRIVATE),
            Refusal::RoomNotRegistered => Some(CloseCode::ROOM_NOT_REGISTERED),
            Refusal::ShardRoomsFull | Refusal::Overloaded => Some(CloseCode::SHARD_FULL),
            _ => None,
        }
    }

    /// The close code of `close`.
    pub fn close_code(self) -> Option<u16> {
        self.close().map(|close| close.code)
    }

    /// The HTTP status of this refusal when it answers a request before any
    /// upgrade (today only a handoff a shard cannot take: 503). The others
    /// follow the acceptor's choices for the same conditions (400
    /// `bad_room`, 403 `room_private`, 404 `room_not_registered`).
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::Request(_)
            | Refusal::KickSelf
            | Refusal::ChatEmpty
            | Refusal::ChatIdInvalid
            | Refusal::BadRoom => 400,
            Refusal::TokenRefused { .. } => 401,
            Refusal::RoleForbids
            | Refusal::RoomPrivate
            | Refusal::TokenForbidsRoom
            | Refusal::PermMissing(_)
            | Refusal::RefreshSingleUse
            | Refusal::RefreshOtherIdentity
            | Refusal::RefreshRoomClaim => 403,
            Refusal::RoomNotRegistered
            | Refusal::NotJoined
            | Refusal::StaleMembership
            | Refusal::NoSuchChat
            | Refusal::NotAdmitted
            | Refusal::NotAskedToShare
            | Refusal::NotSharing
            | Refusal::NotWaiting
            | Refusal::NoSuchMember
            | Refusal::NoSignalTarget
            | Refusal::UserOffline => 404,
            Refusal::ChatIdTaken
            | Refusal::AlreadyJoined
            | Refusal::ConnectionRoomsFull
            | Refusal::CannotLeave
            | Refusal::JoinPending
            | Refusal::ScreenshareBusy => 409,
            Refusal::ChatTooLong => 413,
            Refusal::RateLimited => 429,
            Refusal::Internal | Refusal::StoreFailed => 500,
            Refusal::RefreshUnsupported => 501,
            Refusal::RoomFull
            | Refusal::ShardRoomsFull
            | Refusal::Overloaded
            | Refusal::RefreshOverloaded
            | Refusal::StoreOverloaded
            | Refusal::Draining
            | Refusal::ServerFull => 503,
        }
    }

    /// The limit counter (`roomcast_limit_hits_total{kind}`) this refusal
    /// belongs to. The shard counts room and join refusals where it hears of
    /// them (`ShardCore::note_refusal`, once per refusal, on the shard that
    /// decided or, for a remote join, the member's home) and the others where
    /// it makes them; `overloaded` and the store refusals are counted where
    /// the condition is met, because it is also met where nobody is refused
    /// (a dropped fan-out, a history load).
    pub fn limit(self) -> Option<Limit> {
        Some(match self {
            Refusal::RoomFull => Limit::RoomFull,
            Refusal::ShardRoomsFull => Limit::ShardRoomsFull,
            Refusal::ConnectionRoomsFull => Limit::TooManyRooms,
            Refusal::ChatTooLong => Limit::ChatTooLong,
            Refusal::ScreenshareBusy => Limit::ScreenshareBusy,
            Refusal::RateLimited => Limit::RateLimited,
            Refusal::Overloaded => Limit::OutboxFull,
            Refusal::StoreOverloaded => Limit::StoreOverloaded,
            Refusal::StoreFailed => Limit::StoreFailed,
            Refusal::Draining => Limit::Draining,
            Refusal::ServerFull => Limit::ShardFull,
            _ => return None,
        })
    }
}

/// Why a text frame is not a request; each has a wire `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not a JSON object (not JSON, or another kind of value).
    BadJson,
    MissingType,
    UnknownType,
    MissingField(&'static str),
    /// A JSON object with a field of the wrong type, a string that is not
    /// valid Unicode, or a field twice; the message names the field.
    BadField(&'static str),
    /// A JSON object that cannot be read for another reason (a lone
    /// surrogate in a field roomcast does not read, such as `data`).
    Unreadable,
}

impl RequestError {
    pub fn code(self) -> &'static str {
        match self {
            RequestError::BadJson => "bad_json",
            RequestError::MissingType
            | RequestError::MissingField(_)
            | RequestError::BadField(_)
            | RequestError::Unreadable => "bad_request",
            RequestError::UnknownType => "unknown_type",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            RequestError::BadJson => "the frame is not a JSON object",
            RequestError::BadField(message) => message,
            RequestError::Unreadable => {
                "the request cannot be read: a string holds an escape that is not valid Unicode (a lone surrogate)"
            }
            RequestError::MissingType => "the request has no string field \"type\"",
            RequestError::UnknownType => "unknown request type",
            RequestError::MissingField("data") => "publish and direct need a \"data\" field",
            RequestError::MissingField("room") => "join and leave need a string \"room\" field",
            RequestError::MissingField("to") => "direct and signal need a string \"to\" field (a user id)",
            RequestError::MissingField("user") => "this request needs a string \"user\" field (a user id)",
            RequestError::MissingField("text") => "chat.send needs a string \"text\" field",
            RequestError::MissingField("id") => "chat.delete needs a string \"id\" field",
            RequestError::MissingField("enabled") => "lobby.set needs a boolean \"enabled\" field",
            RequestError::MissingField("token") => "refresh needs a string \"token\" field",
            RequestError::MissingField(_) => "a required field is missing",
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant once (`TokenRefused` with a sample of auth's text).
    const ALL: [Refusal; 46] = [
        Refusal::Request(RequestError::BadJson),
        Refusal::RoomFull,
        Refusal::ShardRoomsFull,
        Refusal::RoomNotRegistered,
        Refusal::RoomPrivate,
        Refusal::RoleForbids,
        Refusal::NotJoined,
        Refusal::StaleMembership,
        Refusal::KickSelf,
        Refusal::ChatEmpty,
        Refusal::ChatIdInvalid,
        Refusal::ChatIdTaken,
        Refusal::ChatTooLong,
        Refusal::NoSuchChat,
        Refusal::NotAdmitted,
        Refusal::NotAskedToShare,
        Refusal::NotSharing,
        Refusal::NotWaiting,
        Refusal::NoSuchMember,
        Refusal::NoSignalTarget,
        Refusal::ScreenshareBusy,
        Refusal::AlreadyJoined,
        Refusal::ConnectionRoomsFull,
        Refusal::CannotLeave,
        Refusal::JoinPending,
        Refusal::UserOffline,
        Refusal::Overloaded,
        Refusal::BadRoom,
        Refusal::TokenForbidsRoom,
        Refusal::PermMissing(Perm::Publish),
        Refusal::PermMissing(Perm::Join),
        Refusal::PermMissing(Perm::Direct),
        Refusal::PermMissing(Perm::Chat),
        Refusal::PermMissing(Perm::Signal),
        Refusal::RefreshUnsupported,
        Refusal::RefreshOverloaded,
        Refusal::TokenRefused { code: "token_expired", message: "the token has expired" },
        Refusal::RefreshSingleUse,
        Refusal::RefreshOtherIdentity,
        Refusal::RefreshRoomClaim,
        Refusal::RateLimited,
        Refusal::StoreOverloaded,
        Refusal::StoreFailed,
        Refusal::Internal,
        Refusal::Draining,
        Refusal::ServerFull,
    ];

    #[test]
    fn each_refusal_has_its_own_wire_text() {
        let mut seen = std::collections::HashSet::new();
        for refusal in ALL {
            assert!(!refusal.code().is_empty() && !refusal.message().is_empty(), "{refusal:?}");
            assert!(seen.insert((refusal.code(), refusal.message())), "{refusal:?} repeats another's text");
        }
    }

    #[test]
    fn every_refusal_that_travels_round_trips_by_its_wire_id() {
        for refusal in ALL {
            let id = refusal.wire_id();
            if matches!(refusal, Refusal::TokenRefused { .. }) {
                assert_eq!(id, None, "auth's text cannot cross nodes");
                continue;
            }
            let id = id.unwrap_or_else(|| panic!("{refusal:?} has no wire id: append it to WIRE"));
            assert_eq!(Refusal::from_wire_id(id), Some(refusal));
        }
        for error in
            [RequestError::BadJson, RequestError::MissingType, RequestError::UnknownType, RequestError::Unreadable]
        {
            let refusal = Refusal::Request(error);
            assert_eq!(refusal.wire_id().and_then(Refusal::from_wire_id), Some(refusal));
        }
        assert_eq!(Refusal::Request(RequestError::MissingField("data")).wire_id(), None);
        assert_eq!(Refusal::Request(RequestError::BadField("x")).wire_id(), None);
        let ids: std::collections::HashSet<u8> = WIRE.iter().filter_map(|r| r.wire_id()).collect();
        assert_eq!(ids.len(), WIRE.len(), "WIRE holds no refusal twice");
        assert_eq!(Refusal::from_wire_id(u8::try_from(WIRE.len()).unwrap_or(u8::MAX)), None);
    }

    #[test]
    fn a_missing_perm_is_forbidden_naming_the_perm() {
        for perm in Perm::ALL {
            let refusal = Refusal::PermMissing(perm);
            assert_eq!(refusal.code(), "forbidden");
            assert!(refusal.message().contains(&format!("\"{}\"", perm.name())), "{}", refusal.message());
        }
    }

    #[test]
    fn the_url_room_refusals_close_and_the_limits_are_named() {
        let closes: Vec<(Refusal, u16)> =
            ALL.iter().filter_map(|&refusal| refusal.close_code().map(|code| (refusal, code))).collect();
        assert_eq!(
            closes,
            [
                (Refusal::RoomFull, 1013),
                (Refusal::ShardRoomsFull, 1013),
                (Refusal::RoomNotRegistered, 1008),
                (Refusal::RoomPrivate, 1008),
                (Refusal::Overloaded, 1013),
            ]
        );
        assert_eq!(Refusal::ChatTooLong.limit(), Some(Limit::ChatTooLong));
        assert_eq!(Refusal::ConnectionRoomsFull.limit(), Some(Limit::TooManyRooms));
        assert_eq!(Refusal::RoomPrivate.limit(), None, "a registry decision, not a limit");
        assert_eq!((Refusal::ServerFull.http_status(), Refusal::ServerFull.code()), (503, "server_full"));
        assert_eq!(Refusal::Request(RequestError::UnknownType).code(), "unknown_type");
    }
}
