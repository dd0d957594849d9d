//! roomcast: a sharded WebSocket room server.
//!
//! ```text
//!  TCP ──▶ acceptor thread ── handoff (crossbeam + Waker) ──▶ shard 0 … shard N-1
//!          HTTP head, Origin, JWT,                             one mio loop each,
//!          WebSocket handshake                                 rooms + sockets, no locks
//! ```
//!
//! The acceptor ([`acceptor`]) does all per-connection work that is not room
//! work and hands each upgraded connection to the shard that owns its room
//! (`RoomKey::shard`). A shard ([`shard`]) runs one poll loop over its
//! connections ([`shard::conn`]), decodes frames in place ([`ws`]), turns text frames
//! into requests ([`protocol`]) and lets the sans-IO room logic ([`room`])
//! decide who receives what. Broadcast frames are encoded once and shared.
//! The store thread ([`store`]) writes chat history to SQLite in batched
//! transactions; shards reach it by bounded channel and never wait for it.
//! docs/architecture.md tells the whole story.

pub mod acceptor;
pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod http_api;
pub mod ids;
pub mod metrics;
pub mod msg;
pub mod protocol;
pub mod refusal;
pub mod registry;
pub mod revocation;
pub mod room;
pub mod server;
pub mod shard;
pub mod store;
pub mod timer;
pub mod webhooks;
pub mod ws;
