//! The JSON wire protocol: client requests in (`decode`), server frames out
//! (`encode`), and the request types both sides share. Requests that travel
//! to the shard owning a room (`MeetingRequest`, `Since`) are owned values;
//! a `Request` borrows the frame it was decoded from.

mod decode;
mod encode;

pub use decode::{RequestDecoder, is_builtin_type, top_level_span};
pub use encode::*;

/// A decoded client request. Raw spans (`data`, `ref`) borrow the frame's
/// original bytes; strings borrow the decoder's copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Publish {
        room: Option<&'a str>,
        data: &'a [u8],
    },
    Join {
        room: &'a str,
        /// `since` (with `epoch`): recover the messages after it.
        since: Option<Since>,
    },
    Leave {
        room: &'a str,
    },
    Direct {
        to: &'a str,
        data: &'a [u8],
    },
    /// A meeting request for `room` (the home room when absent).
    Meeting {
        room: Option<&'a str>,
        request: MeetingRequest,
    },
    Ping,
    Refresh {
        token: &'a str,
    },
    /// `echo`: answered with `data`, byte for byte.
    Echo {
        data: &'a [u8],
    },
    /// `status`: the connection's id, user, rooms, shard, version, uptime.
    Status,
    /// Any other `type`: the shard looks up a handler registered for it
    /// (`ServerBuilder::handler`) and answers `unknown_type` when none is.
    /// `data` is the top-level `data` value byte for byte, when present.
    Custom {
        kind: &'a str,
        room: Option<&'a str>,
        data: Option<&'a [u8]>,
    },
}

/// A meeting request, owned so it can travel to the shard owning the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeetingRequest {
    ChatSend { text: Box<str>, id: Option<Box<str>> },
    ChatDelete { id: Box<str> },
    ChatHistory { limit: Option<u32> },
    HandRaise,
    HandLower { user: Option<Box<str>> },
    ScreenshareRequest,
    ScreenshareGrant { user: Box<str> },
    ScreenshareDeny { user: Box<str> },
    ScreenshareStop { user: Option<Box<str>> },
    LobbyAdmit { user: Box<str> },
    LobbyDeny { user: Box<str> },
    LobbySet { enabled: bool },
    Kick { user: Box<str> },
    Signal { to: Box<str>, data: Box<[u8]> },
}

/// Where a reconnecting client stopped: the last `seq` it saw in the room's
/// `epoch` (`?since=SEQ&epoch=E`, or `join` with `since` and `epoch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub seq: u64,
    /// `None` when the client sent no epoch: then nothing is recovered.
    pub epoch: Option<Box<str>>,
}
