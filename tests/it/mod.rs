pub mod harness;

mod audit;
mod auth;
mod cli;
mod conformance;
mod cross_shard;
mod handshake;
mod http_api;
mod limits;
mod meeting;
mod metrics;
mod recovery;
mod registry;
mod rooms;
mod shutdown;
mod store;
mod tokens;
mod venv;
