//! roomcast: a sharded WebSocket room server.
//!
//! ```text
//!  TCP ──▶ acceptor thread ── handoff (crossbeam + Waker) ──▶ shard 0 … shard N-1
//!          HTTP head, Origin, JWT,                             one mio loop each,
//!          WebSocket handshake                                 rooms + sockets, no locks
//! ```
//!
//! The acceptor does all per-connection work that is not room work and
//! hands each upgraded connection to the shard that owns its room. A shard
//! runs one poll loop over its connections, decodes frames in place, turns
//! text frames into requests and lets the sans-IO room logic decide who
//! receives what. Broadcast frames are encoded once and shared.
//! The store thread writes chat history to SQLite in batched
//! transactions; shards reach it by bounded channel and never wait for it.
//! docs/architecture.md tells the whole story.

//!
//! # Use as a library
//!
//! The public surface is small: [`Server::builder`] configures a server
//! ([`Config`], listener, store on or off), registers custom message
//! handlers ([`ServerBuilder::handler`], given a [`Context`]) and hooks
//! ([`ServerBuilder::on_connect`], `on_join`, `on_leave`, `on_disconnect`),
//! then [`ServerBuilder::run`]s it or [`ServerBuilder::start`]s it for a
//! [`ServerHandle`] with `shutdown()`. [`token`] mints tokens for tests and
//! tools; [`config`] holds every setting; [`cli`] is the `roomcast` command
//! line, for binaries that want it. The `roomcast` binary is built on
//! exactly this surface. A handler runs on the shard thread that owns the
//! room, synchronously, so it must not block; its per-room state lives in
//! the room ([`Context::room_state`]). See the example on [`Server`] and
//! `examples/poll-vote/`.

pub mod cli;
pub mod config;

// Internal modules: their `pub` items are for the layers above
// (docs/architecture.md §0), not for users of the library.
mod acceptor;
mod auth;
mod cluster;
mod http;
mod http_api;
mod ids;
mod metrics;
mod msg;
mod protocol;
mod refusal;
mod registry;
mod revocation;
mod room;
mod server;
mod shard;
mod store;
mod timer;
mod webhooks;
mod ws;

pub use config::Config;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use shard::extension::{ClientInfo, ConnRef, Context, HandlerError, HookRefusal, RoomRole};

/// Minting HS256 tokens the server accepts (tests, tools, `roomcast token`),
/// and reading the secret a server keeps in its data directory.
pub mod token {
    pub use crate::auth::{MintError, MintRequest, mint_hs256, random_jti, read_secret, secret_path};
}

/// Not API: internals the integration tests of this repository use. May
/// change or go in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::http_api::{format_day, parse_day};
    pub use crate::ids::RoomKey;
    /// The parsers the fuzz targets (`fuzz/`) and their corpus replay
    /// (`tests/fuzz_corpus.rs`) drive, under their module names.
    pub mod fuzz {
        pub mod auth {
            pub use crate::auth::extract_token;
        }
        pub mod http {
            pub use crate::http::{RequestHead, parse_head, percent_decode};
        }
        pub mod http_api {
            pub use crate::http_api::{Access, authorize, body_length, route};
        }
        pub mod protocol {
            pub use crate::protocol::{MeetingRequest, Request, RequestDecoder, encode_ack, encode_error, encode_pong};
        }
        pub mod ws {
            pub use crate::ws::{CloseCode, frame};
        }
    }
    /// The webhook thread on its own, for its tests.
    pub mod webhooks {
        pub use crate::webhooks::{WebhookDetail, WebhookEvent, Webhooks, sign};
    }
}
