//! What travels to and from the store thread: [`StoreEvent`]s from the
//! shards (room persistence and session audit) and the acceptor (HTTP API
//! reads, revocations), and [`StoreReply`] batches back to each shard. Room
//! persistence arrives as the room's own [`Persist`] output, wrapped here by
//! the shard; the store never sees a room and a room never sees the store.

use super::AdminReply;
use crate::ids::{ConnId, RoomKey, ShardId};
use crate::registry::RoomRecord;
use std::sync::Arc;

use crate::room::{ChatRecord, Peer, Persist, StoredChat};

/// Reply batches that may wait for one shard's store-reply channel.
pub const REPLY_CHANNEL_MAX: usize = 1024;
/// Close code of an audit row whose connection dropped without a Close
/// frame, or was still open when its process stopped.
pub const CLOSE_ABNORMAL: u16 = 1006;

/// What shards send the store.
#[derive(Debug)]
pub enum StoreEvent {
    /// A chat message to append; its sender is answered after the commit.
    Chat(Box<ChatRecord>),
    /// `chat.delete`: the newest stored message of the room with this id goes.
    ChatDelete { key: RoomKey, id: Box<str> },
    /// The last `limit` stored messages of `key`, for room incarnation `load`
    /// on `shard` (answered with `StoreReply::History`).
    LoadHistory { key: RoomKey, load: u64, shard: ShardId, limit: u32 },
    /// A room connection was admitted: its audit row starts.
    SessionOpen(Box<SessionOpen>),
    /// A room connection was freed: its audit row ends.
    SessionClose { conn: ConnId, disconnected_ms: u64, close_code: u16 },
    /// A read for the HTTP API, answered to the acceptor after the batch.
    Query(Box<StoreQuery>),
    /// A revoked or spent single-use token (from the acceptor), kept in
    /// `revoked_tokens` until `expires_s` (`src/revocation.rs`).
    Revoke { jti: Box<str>, expires_s: u64, revoked_ms: u64, reason: &'static str },
}

impl StoreEvent {
    /// A session audit event: written in batches nobody waits for.
    pub fn is_audit(&self) -> bool {
        matches!(self, StoreEvent::SessionOpen(_) | StoreEvent::SessionClose { .. })
    }
}

impl From<Persist> for StoreEvent {
    /// A room's durable work, as the store's event (same fields, moved).
    fn from(persist: Persist) -> StoreEvent {
        match persist {
            Persist::Chat(record) => StoreEvent::Chat(record),
            Persist::ChatDelete { key, id } => StoreEvent::ChatDelete { key, id },
            Persist::LoadHistory { key, load, shard, limit } => StoreEvent::LoadHistory { key, load, shard, limit },
        }
    }
}

/// The start of one session audit row (one per room connection). Built on
/// the connect path, so it copies nothing: the room key and the member are
/// the connection's own, shared; the store thread turns them into text.
#[derive(Debug)]
pub struct SessionOpen {
    pub conn: ConnId,
    /// The home room (the URL's `/ws/{room}`) in its tenant; shared, not copied.
    pub key: RoomKey,
    /// The connection as its rooms see it; the row's user is `member.user()`.
    pub member: Arc<Peer>,
    /// The peer's address as the acceptor saw it; written as `ip:port`
    /// ("" when unknown) by the store thread, not the shard.
    pub peer: Option<std::net::SocketAddr>,
    pub connected_ms: u64,
}

/// An HTTP API request the store answers: the reply goes to the acceptor's
/// API reply channel with `ticket`, then its waker is woken.
#[derive(Debug)]
pub struct StoreQuery {
    pub ticket: u64,
    pub request: QueryRequest,
    /// Where the answer goes: the acceptor's API reply channel.
    pub reply: super::Reply<AdminReply>,
}

/// What the HTTP API asks the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRequest {
    /// Sessions per UTC day, `from_day..=to_day` (days since 1970-01-01),
    /// of `room` (all rooms when `None`) in `tenant`.
    Usage {
        tenant: String,
        room: Option<String>,
        from_day: i64,
        to_day: i64,
    },
    /// Room registry: add `room` unless its id exists in its tenant.
    RoomCreate(Box<RoomRecord>),
    /// Room registry: replace an existing room (its `created_ms` is kept).
    RoomReplace(Box<RoomRecord>),
    RoomGet {
        tenant: String,
        id: String,
    },
    RoomDelete {
        tenant: String,
        id: String,
    },
    /// Registered rooms of `tenant` by id, after `after`, at most `limit`.
    RoomList {
        tenant: String,
        after: Option<String>,
        limit: usize,
    },
}

/// The store's answer to a [`StoreQuery`].
#[derive(Debug, Clone, PartialEq)]
pub enum StoreAnswer {
    /// One entry per day of the range with sessions, oldest first.
    Usage(Vec<DayUsage>),
    /// A registry room: created, replaced or read; `None`: it exists
    /// already (create) or does not exist (replace, get).
    Room(Option<RoomRecord>),
    /// Registry rooms, by id.
    Rooms(Vec<RoomRecord>),
    /// Whether a registry room was deleted.
    Deleted(bool),
    /// The read failed (the cause is logged).
    Failed,
}

/// Usage of one UTC day: sessions that connected that day (days without
/// any are not reported).
#[derive(Debug, Clone, PartialEq)]
pub struct DayUsage {
    /// Days since 1970-01-01.
    pub day: i64,
    pub unique_users: u64,
    pub sessions: u64,
    /// Over the sessions of the day that have ended (`None` when none has).
    pub avg_duration_s: Option<f64>,
    /// Nearest-rank 95th percentile, over the same sessions.
    pub p95_duration_s: Option<f64>,
}

/// What the store sends back to a shard.
#[derive(Debug)]
pub enum StoreReply {
    /// The message is committed: ack `reference` with `seq` to `to`.
    Committed { to: ConnId, reference: Box<[u8]>, seq: u64 },
    /// The batch holding the message failed: the message is live but not durable.
    Failed { to: ConnId, reference: Option<Box<[u8]>> },
    /// The stored history of a room, oldest first (empty when the query failed).
    History { key: RoomKey, load: u64, entries: Vec<StoredChat> },
}
