pub mod harness;

mod auth;
mod cli;
mod handshake;
mod limits;
mod rooms;
mod shutdown;
