//! The room's durable work, as plain values: what a room asks to be
//! written or read back ([`Persist`], polled out as `Output::Persist`) and
//! the stored chat it gets back (`Rooms::history_loaded`). The room does not
//! know who carries this out; the shard hands it to the store thread.

use crate::ids::{ConnId, RoomKey, ShardId};

/// Durable work a room asks for (only with the store on).
#[derive(Debug)]
pub enum Persist {
    /// A chat message to append; its sender is answered after the commit.
    Chat(Box<ChatRecord>),
    /// `chat.delete`: the newest stored message of the room with this id goes.
    ChatDelete { key: RoomKey, id: Box<str> },
    /// The last `limit` stored messages of `key`, for room incarnation `load`
    /// on `shard` (answered through `Rooms::history_loaded`).
    LoadHistory { key: RoomKey, load: u64, shard: ShardId, limit: u32 },
}

/// One chat message as stored, and who waits for its ack.
#[derive(Debug)]
pub struct ChatRecord {
    pub key: RoomKey,
    /// The room incarnation (`welcome.epoch`) the `seq` belongs to.
    pub epoch: Box<str>,
    pub seq: u64,
    pub id: Box<str>,
    pub author: Box<str>,
    pub ts_ms: u64,
    /// The `chat` event as broadcast, reused verbatim in histories.
    pub json: Box<[u8]>,
    /// The sending connection (its home shard gets the answer).
    pub sender: ConnId,
    /// The request's `ref`: acked after the commit when present.
    pub reference: Option<Box<[u8]>>,
}

/// A stored chat message, oldest first in a history answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChat {
    pub id: Box<str>,
    pub author: Box<str>,
    pub json: Box<[u8]>,
}
