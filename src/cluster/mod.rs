//! The cluster: nodes sharing rooms through Redis.

pub mod wire;
