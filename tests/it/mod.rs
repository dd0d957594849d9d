pub mod harness;

mod auth;
mod cli;
mod conformance;
mod cross_shard;
mod handshake;
mod http_api;
mod limits;
mod meeting;
mod rooms;
mod shutdown;
mod store;
