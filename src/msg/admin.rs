//! Answers to the admin HTTP API. The acceptor scatters a request to the
//! shards (`shard::AdminRequest`) or to the store (`StoreEvent::Query`) and
//! gathers [`AdminReply`]s on its own loop, one per shard asked, by ticket.

use super::StoreAnswer;

/// One answer to one admin request, from a shard or from the store; the
/// `ticket` says which request (and so which gather) it belongs to.
#[derive(Debug)]
pub struct AdminReply {
    pub ticket: u64,
    pub answer: AdminAnswer,
}

#[derive(Debug)]
pub enum AdminAnswer {
    /// `(room id, members on this shard)`, sorted by room id.
    Rooms(Vec<(String, u64)>),
    /// This shard's connections, and, from the shard that owns the room
    /// asked about, every member's live role in it (`(conn id, role)`).
    Connections(Vec<ConnInfo>, Vec<(String, &'static str)>),
    /// Connections reached, kicked or closed.
    Count(u64),
    /// The store thread's answer to an HTTP API read (`StoreEvent::Query`).
    Store(StoreAnswer),
}

/// A connection as the admin API lists it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub conn: String,
    pub user: String,
    pub name: Option<String>,
    pub tenant: String,
    /// The token's role: `host` or `member` (for a room listing, replaced by
    /// the live meeting role the room's owner reports).
    pub role: &'static str,
    /// The room of its URL.
    pub home: String,
    /// Every room it is in (home, personal, group and joined rooms).
    pub rooms: Vec<String>,
}
