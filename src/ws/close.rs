//! Close codes roomcast sends, with the reason text that goes with each.
//! The full list with meanings is in docs/protocol.md.

/// A close code and its fixed reason. `Copy` so it can travel in outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode { code: 1000, reason: "" };
    pub const GOING_AWAY: CloseCode = CloseCode { code: 1001, reason: "server shutting down" };
    pub const DEAD_PEER: CloseCode = CloseCode { code: 1001, reason: "no traffic within dead_after_ms" };
    pub const PROTOCOL: CloseCode = CloseCode { code: 1002, reason: "protocol error" };
    pub const BAD_UTF8: CloseCode = CloseCode { code: 1007, reason: "invalid utf-8" };
    pub const RATE_ABUSE: CloseCode = CloseCode { code: 1008, reason: "rate limit exceeded repeatedly" };
    pub const CONTROL_FLOOD: CloseCode = CloseCode { code: 1008, reason: "control frame rate exceeded" };
    pub const TOO_BIG: CloseCode = CloseCode { code: 1009, reason: "message too big" };
    pub const INTERNAL: CloseCode = CloseCode { code: 1011, reason: "internal error" };
    pub const SLOW_CONSUMER: CloseCode = CloseCode { code: 1013, reason: "slow consumer: outbound queue full" };
    pub const SHARD_FULL: CloseCode = CloseCode { code: 1013, reason: "server full" };
    pub const ROOM_FULL: CloseCode = CloseCode { code: 1013, reason: "room full" };
    /// The URL room became private or unregistered after the acceptor let the
    /// connection in (a registry change racing the handshake).
    pub const ROOM_PRIVATE: CloseCode = CloseCode { code: 1008, reason: "room is private" };
    pub const ROOM_NOT_REGISTERED: CloseCode = CloseCode { code: 1008, reason: "room not registered" };
    pub const OWNER_NODE_LOST: CloseCode = CloseCode { code: 1012, reason: "room owner node lost" };
    pub const TOKEN_EXPIRED: CloseCode = CloseCode { code: 4001, reason: "token expired" };
    pub const KICKED: CloseCode = CloseCode { code: 4003, reason: "kicked by a host" };
    pub const DENIED: CloseCode = CloseCode { code: 4004, reason: "denied entry by a host" };

    /// Every constant above, so that a close can cross to another node and
    /// come back as the same constant (`cluster::wire`). Add new ones here.
    pub const KNOWN: &'static [CloseCode] = &[
        CloseCode::NORMAL,
        CloseCode::GOING_AWAY,
        CloseCode::DEAD_PEER,
        CloseCode::PROTOCOL,
        CloseCode::BAD_UTF8,
        CloseCode::RATE_ABUSE,
        CloseCode::CONTROL_FLOOD,
        CloseCode::TOO_BIG,
        CloseCode::INTERNAL,
        CloseCode::SLOW_CONSUMER,
        CloseCode::SHARD_FULL,
        CloseCode::ROOM_FULL,
        CloseCode::ROOM_PRIVATE,
        CloseCode::ROOM_NOT_REGISTERED,
        CloseCode::TOKEN_EXPIRED,
        CloseCode::KICKED,
        CloseCode::DENIED,
        CloseCode::OWNER_NODE_LOST,
    ];

    /// Whether a code received from a peer is one RFC 6455 §7.4 allows on the wire.
    pub fn is_valid_received(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_close_codes_follow_rfc6455_and_the_iana_registry() {
        // Autobahn 7.7.* sends these and expects them echoed.
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
            assert!(CloseCode::is_valid_received(code), "{code} is valid");
        }
        // Autobahn 7.9.* and 7.13.* send these and expect a 1002 close:
        // 1005/1006/1015 are never sent on the wire, the rest are unassigned.
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode::is_valid_received(code), "{code} is invalid");
        }
    }
}
