//! Which roomcast shard owns a room, and home-room names for `fanout
//! --cross-shard N`.
//!
//! The server places a room on shard `fnv1a64(room '\0' tenant) % shards`
//! (`roomcast::ids::RoomKey::shard`; the empty tenant gives `room` followed
//! by one NUL byte). The tool computes the same function so that every
//! connection can be given a home room on a chosen shard, and then joins the
//! measured (target) room from there.

/// The shard owning `room` of `tenant` on a server with `shards` shards
/// (0 is treated as 1, as the server does).
pub fn room_shard(tenant: &str, room: &str, shards: u32) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in room.as_bytes().iter().chain(b"\0").chain(tenant.as_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u16
}

/// The shard the home room of the `n`-th connection of a room should be on:
/// the shards other than `owner`, in turn (just `owner` when there is one
/// shard and no other choice).
pub fn wanted_home_shard(owner: u16, n: u64, shards: u32) -> u16 {
    let shards = shards.max(1);
    if shards == 1 {
        return 0;
    }
    // The others are 0..shards without `owner`: index i maps to i, or i + 1
    // from `owner` on.
    let i = (n % u64::from(shards - 1)) as u16;
    if i >= owner { i + 1 } else { i }
}

/// A home room for the `n`-th connection (members first, then publishers)
/// of `target` (empty tenant), on `wanted_home_shard(owner, n, shards)`:
/// `TARGET.hN`, else the first `TARGET.hN.K` that hashes there. The name
/// starts with `TARGET`, so a token with the room claim `TARGET*` allows
/// both rooms. Returns the name and its shard.
pub fn home_room(target: &str, n: u64, shards: u32) -> (String, u16) {
    let owner = room_shard("", target, shards);
    let want = wanted_home_shard(owner, n, shards);
    let base = format!("{target}.h{n}");
    if room_shard("", &base, shards) == want {
        return (base, want);
    }
    // Each candidate lands on `want` with probability 1/shards, so this ends
    // after about `shards` tries.
    (0u64..)
        .map(|k| format!("{base}.{k}"))
        .find(|name| room_shard("", name, shards) == want)
        .map(|name| (name, want))
        .expect("some suffix hashes to every shard")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64 reference values (the published test vectors) reduced by
    /// hand: fnv1a64("") = 0xcbf29ce484222325, fnv1a64("a") =
    /// 0xaf63dc4c8601ec8c; with the NUL separator "a\0" = 0x089be207b544f1e4.
    #[test]
    fn fnv_matches_known_values() {
        // One shard: everything on shard 0.
        assert_eq!(room_shard("", "anything", 1), 0);
        assert_eq!(room_shard("", "anything", 0), 0);
        // "a" + NUL, empty tenant: 0x089be207b544f1e4.
        let h: u64 = 0x089b_e207_b544_f1e4;
        for shards in [2u32, 3, 4, 7, 16] {
            assert_eq!(u64::from(room_shard("", "a", shards)), h % u64::from(shards), "{shards} shards");
        }
        // "load-0" + NUL = 0x70c12e76b7390d9c; "demo" NUL "acme" (tenant).
        assert_eq!([2, 3, 4].map(|n| room_shard("", "load-0", n)), [0, 2, 0]);
        assert_eq!([2, 3, 4].map(|n| room_shard("acme", "demo", n)), [0, 1, 0]);
    }

    /// The same function as the server's `RoomKey::shard`: values printed by
    /// `roomcast::ids::RoomKey::new(tenant, room).shard(n)` (commit 7631426)
    /// for n = 1, 2, 3, 4, 8, 13. A table rather than a dev-dependency on
    /// `roomcast`, so that this crate's tests and lints do not depend on the
    /// server crate compiling at the moment.
    #[test]
    fn agrees_with_the_server() {
        let table: [(&str, &str, [u16; 6]); 9] = [
            ("", "a", [0, 0, 1, 0, 4, 6]),
            ("", "demo", [0, 0, 2, 2, 2, 11]),
            ("", "load-0", [0, 0, 2, 0, 4, 12]),
            ("", "load-1", [0, 1, 2, 1, 5, 6]),
            ("", "load-17", [0, 0, 2, 0, 0, 1]),
            ("", "load-0.h0", [0, 0, 2, 2, 2, 3]),
            ("", "load-0.h3.1", [0, 0, 1, 2, 6, 11]),
            ("acme", "demo", [0, 0, 1, 0, 4, 8]),
            ("acme", "team-1.x_y:z", [0, 0, 0, 2, 6, 7]),
        ];
        for (tenant, room, want) in table {
            let got = [1, 2, 3, 4, 8, 13].map(|n| room_shard(tenant, room, n));
            assert_eq!(got, want, "{room:?} of tenant {tenant:?}");
        }
        // bench/run's room1000x: load-0 is on shard 0 of 2, so every home is on 1.
        for n in 0..1001 {
            assert_eq!(home_room("load-0", n, 2).1, 1);
        }
    }

    #[test]
    fn wanted_shards_cycle_over_the_others() {
        let got: Vec<u16> = (0..6).map(|n| wanted_home_shard(1, n, 4)).collect();
        assert_eq!(got, [0, 2, 3, 0, 2, 3]);
        let got: Vec<u16> = (0..4).map(|n| wanted_home_shard(0, n, 2)).collect();
        assert_eq!(got, [1, 1, 1, 1]);
        let got: Vec<u16> = (0..4).map(|n| wanted_home_shard(1, n, 2)).collect();
        assert_eq!(got, [0, 0, 0, 0]);
        assert_eq!(wanted_home_shard(0, 5, 1), 0);
    }

    #[test]
    fn home_rooms_avoid_the_owner_and_are_valid_ids() {
        for shards in [2u32, 3, 5] {
            for target in ["load-0", "load-1", "x"] {
                let owner = room_shard("", target, shards);
                for n in 0..40 {
                    let (name, shard) = home_room(target, n, shards);
                    assert_ne!(shard, owner, "{name}");
                    assert_eq!(shard, wanted_home_shard(owner, n, shards));
                    assert_eq!(room_shard("", &name, shards), shard);
                    assert!(name.starts_with(target) && name.len() <= 128);
                    assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)), "{name}");
                }
            }
        }
        // One shard: no other choice; the plain name.
        assert_eq!(home_room("load-0", 3, 1), ("load-0.h3".to_string(), 0));
    }
}
