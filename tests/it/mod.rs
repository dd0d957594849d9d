pub mod harness;

mod auth;
mod handshake;
mod limits;
mod rooms;
mod shutdown;
