pub mod harness;

mod auth;
mod cli;
mod conformance;
mod handshake;
mod limits;
mod rooms;
mod shutdown;
