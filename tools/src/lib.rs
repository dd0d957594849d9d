//! roomcast-load: the load generator and bench helpers for roomcast.
//!
//! - [`client`]: the mio load engine (connect, fanout, rtt, churn).
//! - [`run`]: orchestration of workers and processes, the JSON summary.
//! - [`sink`]: a trivial broadcast/sink server to develop and demonstrate
//!   the tool against.
//! - [`frame`], [`scan`], [`account`]: the in-place frame parser, the tiny
//!   payload scanners and the loss/duplicate/out-of-order accounting.
//! - [`report`]: percentiles, `.hgrm` and SVG output.
//! - [`refusal`]: why a server refused a handshake (its JSON error body).
//! - [`shard`]: the server's room → shard function, home rooms for
//!   `fanout --cross-shard`.

pub mod account;
pub mod client;
pub mod clock;
pub mod frame;
pub mod refusal;
pub mod report;
pub mod run;
pub mod scan;
pub mod shard;
pub mod sink;
pub mod table;
