//! Who a verified token (or dev mode) says the client is, and the room rules
//! that follow from it: the `room` claim's scope, personal rooms
//! (`user:{sub}`) and group rooms (`group:{g}`).

/// Longest room id (DESIGN §2: room ids are 1–128 bytes of `[A-Za-z0-9._:-]`).
pub const MAX_ROOM_ID_BYTES: usize = 128;

/// Rooms a token is limited to (claim `room`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoomScope {
    /// `"room": "demo"`: only that room.
    Exact(Box<str>),
    /// `"room": "team-*"`: rooms starting with `team-` (`"*"` alone: any room).
    /// (`Box<str>`, not `String`: every connection keeps its scope.)
    Prefix(Box<str>),
}

impl RoomScope {
    /// Parses a `room` claim; `None` when it is neither a room id nor a
    /// room-id prefix followed by `*`.
    pub fn parse(claim: &str) -> Option<RoomScope> {
        match claim.strip_suffix('*') {
            Some(prefix) if prefix.len() < MAX_ROOM_ID_BYTES && is_room_chars(prefix) => {
                Some(RoomScope::Prefix(prefix.into()))
            }
            Some(_) => None,
            None if !claim.is_empty() && claim.len() <= MAX_ROOM_ID_BYTES && is_room_chars(claim) => {
                Some(RoomScope::Exact(claim.into()))
            }
            None => None,
        }
    }

    /// Whether `room` is within this scope.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            RoomScope::Exact(id) => **id == *room,
            RoomScope::Prefix(prefix) => room.starts_with(&**prefix),
        }
    }
}

fn is_room_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Who a verified token (or dev mode) says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub user: String,
    /// `name`.
    pub name: Option<String>,
    /// `tenant`; `""` when absent.
    pub tenant: String,
    /// `role == "host"`.
    pub host: bool,
    /// `groups`; empty when absent.
    pub groups: Vec<String>,
    /// `room`; `None` means any room (of the tenant).
    pub room_scope: Option<RoomScope>,
    /// `perms`; `None` when absent (the server applies its default).
    pub perms: Option<Vec<String>>,
    /// `exp` in Unix seconds; `u64::MAX` for dev identities.
    pub expires_at_s: u64,
    /// `jti`.
    pub jti: Option<String>,
    /// `"use": "once"`: a single-use token (it then has a `jti`); the
    /// acceptor accepts it for one handshake.
    pub once: bool,
}

impl Identity {
    /// Identity for dev mode (`auth.mode = "none"`, `?user=NAME`): no token,
    /// no tenant, no room limit, never expires, not a host.
    pub fn dev(user: &str) -> Identity {
        Identity {
            user: user.to_owned(),
            name: None,
            tenant: String::new(),
            host: false,
            groups: Vec::new(),
            room_scope: None,
            perms: None,
            expires_at_s: u64::MAX,
            jti: None,
            once: false,
        }
    }

    /// Whether this identity may be in `room`, by URL or by `join`: a
    /// personal room (`user:{sub}`) only its own, a group room (`group:{g}`)
    /// only its groups, any other room as the `room` claim allows.
    pub fn may_join(&self, room: &str) -> bool {
        may_join(&self.user, &self.groups, self.room_scope.as_ref(), room)
    }

    /// Whether the token's `room` claim is one room id (not `prefix*`, not
    /// absent): with `may_join` checked, it names the room being entered.
    pub fn has_exact_room_claim(&self) -> bool {
        matches!(self.room_scope, Some(RoomScope::Exact(_)))
    }

    /// Whether the token's `room` claim allows entering `room`.
    pub fn may_enter(&self, room: &str) -> bool {
        self.room_scope.as_ref().is_none_or(|scope| scope.allows(room))
    }
}

/// The rule of [`Identity::may_join`], for callers that keep only the
/// identity's grants.
pub fn may_join(user: &str, groups: &[impl AsRef<str>], scope: Option<&RoomScope>, room: &str) -> bool {
    may_join_where(user, groups, room, |room| scope.is_none_or(|scope| scope.allows(room)))
}

/// [`may_join`] for callers that keep the `room` claim in their own form:
/// `scope_allows` answers for rooms the claim governs (all but personal
/// and group rooms).
pub fn may_join_where(
    user: &str,
    groups: &[impl AsRef<str>],
    room: &str,
    scope_allows: impl FnOnce(&str) -> bool,
) -> bool {
    if let Some(personal) = room.strip_prefix(crate::ids::PERSONAL_PREFIX) {
        personal == user
    } else if let Some(group) = room.strip_prefix(crate::ids::GROUP_PREFIX) {
        groups.iter().any(|g| g.as_ref() == group)
    } else {
        scope_allows(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;
    use serde_json::json;

    #[test]
    fn room_scope_exact_and_prefix() {
        let v = hs_verifier();
        let exact = v.verify(&hs(&with(base_claims(), "room", json!("demo")))).expect("valid");
        assert_eq!(exact.room_scope, Some(RoomScope::Exact("demo".into())));
        assert!(exact.may_enter("demo"));
        assert!(!exact.may_enter("demo2") && !exact.may_enter("dem"));

        let prefix = v.verify(&hs(&with(base_claims(), "room", json!("team-*")))).expect("valid");
        assert_eq!(prefix.room_scope, Some(RoomScope::Prefix("team-".into())));
        assert!(prefix.may_enter("team-a") && prefix.may_enter("team-"));
        assert!(!prefix.may_enter("team") && !prefix.may_enter("other"));

        let any = v.verify(&hs(&with(base_claims(), "room", json!("*")))).expect("valid");
        assert!(any.may_enter("anything"));
        assert!(Identity::dev("bob").may_enter("anything"));
    }

    #[test]
    fn dev_identity() {
        let id = Identity::dev("bob");
        assert_eq!(id.user, "bob");
        assert_eq!(id.tenant, "");
        assert_eq!(id.expires_at_s, u64::MAX);
        assert!(!id.host && id.room_scope.is_none() && id.perms.is_none());
    }
}
