//! HTTP/1.1 for the acceptor: just enough HTTP to upgrade WebSocket
//! connections and answer small API requests, with limits. This is the one
//! place roomcast parses HTTP: the request head ([`head`]), the values inside
//! it that several modules read — query parameters, cookies, the Bearer
//! credential and percent-decoding ([`params`]) — and the responses it
//! writes ([`response`]). It imports nothing from the rest of the crate.

pub mod head;
pub mod params;
pub mod response;

pub use head::{HeadError, RequestHead, parse_head};
pub use params::{bearer_token, cookie_value, percent_decode, query_param};
pub use response::{error_response, response, switching_protocols};
