//! The Lua scripts the bridge runs in Redis. Each is one atomic step, so
//! two nodes never see a half-made claim or a half-removed node. Keys (all
//! under `cluster.key_prefix`, written `P` here):
//!
//! - `P:nodes`: hash, node number → node id, of every node not yet cleaned up;
//! - `P:node:{n}`: node `n`'s liveness key (its id, with a TTL of `node_ttl_ms`);
//! - `P:owner:{room}`: the number of the node that owns the room;
//! - `P:owned:{n}`: set of the owner keys node `n` holds (cleaned with it);
//! - channels `P:to:{n}` (messages for node `n`), `P:room:{room}` (a room's
//!   broadcasts, for the nodes with members) and `P:all` (`dead {n}`).
//!
//! The scripts name keys they build from the prefix, so they need a single
//! Redis (or Sentinel), not Redis Cluster; `docs/design/cluster.md` says why.

/// Registers a node: number `ARGV[4]` again if it is free or still this
/// node's, else the lowest free one. `P:epoch` names this Redis's data
/// (set from `ARGV[6]` when missing: a new or emptied Redis). Returns
/// `{number, was_cleaned, epoch}`; `was_cleaned` = 1 when the wanted
/// number had been cleaned up in the same epoch (`ARGV[5]`): the other
/// nodes took this node for dead. Number 0: all 255 are taken.
/// ARGV: prefix, node id, ttl ms, wanted number (0: any), known epoch, fresh epoch.
pub const REGISTER: &str = r#"
local p, id, ttl, want = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local epoch = redis.call('GET', p..':epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', p..':epoch', epoch)
end
if want > 0 then
  local cur = redis.call('HGET', p..':nodes', want)
  if cur == false or cur == id then
    redis.call('HSET', p..':nodes', want, id)
    redis.call('SET', p..':node:'..want, id, 'PX', ttl)
    if cur == false and epoch == ARGV[5] then return {want, 1, epoch} end
    return {want, 0, epoch}
  end
end
for n = 1, 255 do
  if redis.call('HSETNX', p..':nodes', n, id) == 1 then
    redis.call('SET', p..':node:'..n, id, 'PX', ttl)
    return {n, 0, epoch}
  end
end
return {0, 0, epoch}
"#;

/// Refreshes node `ARGV[2]`'s liveness key; 0 when the node was cleaned up
/// meanwhile (it must register again). ARGV: prefix, number, id, ttl ms.
pub const HEARTBEAT: &str = r#"
local p, n, id, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', p..':nodes', n) ~= id then return 0 end
redis.call('SET', p..':node:'..n, id, 'PX', ttl)
return 1
"#;

/// Cleans up every node whose liveness key expired: its claims go, and
/// `dead {n}` is published on `P:all` (once: the node leaves `P:nodes`
/// here). Returns the number of live nodes. ARGV: prefix.
pub const JANITOR: &str = r#"
local p = ARGV[1]
local all = redis.call('HKEYS', p..':nodes')
local live = 0
for _, n in ipairs(all) do
  if redis.call('EXISTS', p..':node:'..n) == 1 then
    live = live + 1
  else
    redis.call('HDEL', p..':nodes', n)
    local owned = p..':owned:'..n
    for _, k in ipairs(redis.call('SMEMBERS', owned)) do
      if redis.call('GET', k) == n then redis.call('DEL', k) end
    end
    redis.call('DEL', owned)
    redis.call('PUBLISH', p..':all', 'dead '..n)
  end
end
return live
"#;

/// Who owns the room (`KEYS[1]` = its owner key): a live other node gets
/// the join (`ARGV[3]`, published on its channel) and its number is
/// returned; otherwise this node (`ARGV[2]`) takes the room and its own
/// number is returned. ARGV: prefix, this node's number, payload.
pub const CLAIM: &str = r#"
local p, me = ARGV[1], ARGV[2]
local o = redis.call('GET', KEYS[1])
if o and o ~= me and redis.call('EXISTS', p..':node:'..o) == 1 then
  redis.call('PUBLISH', p..':to:'..o, ARGV[3])
  return tonumber(o)
end
redis.call('SET', KEYS[1], me)
redis.call('SADD', p..':owned:'..me, KEYS[1])
return tonumber(me)
"#;

/// Passes `ARGV[3]` to the live node that owns the room (`KEYS[1]`) and
/// returns its number; 0 when no other live node owns it. ARGV: prefix,
/// this node's number, payload.
pub const ROUTE: &str = r#"
local p, me = ARGV[1], ARGV[2]
local o = redis.call('GET', KEYS[1])
if o and o ~= me and redis.call('EXISTS', p..':node:'..o) == 1 then
  redis.call('PUBLISH', p..':to:'..o, ARGV[3])
  return tonumber(o)
end
return 0
"#;

/// Gives up this node's claim on a room (`KEYS[1]`), if it still holds it.
/// ARGV: prefix, this node's number.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', ARGV[1]..':owned:'..ARGV[2], KEYS[1])
  return 1
end
return 0
"#;

/// Takes a room this node holds back after Redis lost its data: its own
/// number back, or the live node that claimed it meanwhile (a conflict,
/// logged). ARGV: prefix, this node's number.
pub const RECLAIM: &str = r#"
local p, me = ARGV[1], ARGV[2]
local o = redis.call('GET', KEYS[1])
if o and o ~= me and redis.call('EXISTS', p..':node:'..o) == 1 then
  return tonumber(o)
end
redis.call('SET', KEYS[1], me)
redis.call('SADD', p..':owned:'..me, KEYS[1])
return tonumber(me)
"#;

/// Every script with its SHA-1, loaded at each connect (a restarted Redis
/// has none), then run by `EVALSHA`.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub register: redis::Script,
    pub heartbeat: redis::Script,
    pub janitor: redis::Script,
    pub claim: redis::Script,
    pub route: redis::Script,
    pub release: redis::Script,
    pub reclaim: redis::Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            register: redis::Script::new(REGISTER),
            heartbeat: redis::Script::new(HEARTBEAT),
            janitor: redis::Script::new(JANITOR),
            claim: redis::Script::new(CLAIM),
            route: redis::Script::new(ROUTE),
            release: redis::Script::new(RELEASE),
            reclaim: redis::Script::new(RECLAIM),
        }
    }

    /// `SCRIPT LOAD` of each, to send before any `EVALSHA`.
    pub fn load_commands() -> Vec<redis::Cmd> {
        [REGISTER, HEARTBEAT, JANITOR, CLAIM, ROUTE, RELEASE, RECLAIM]
            .into_iter()
            .map(|code| {
                let mut cmd = redis::cmd("SCRIPT");
                cmd.arg("LOAD").arg(code);
                cmd
            })
            .collect()
    }
}

/// `EVALSHA sha keys… args…`, packed.
pub fn evalsha(script: &redis::Script, keys: &[&[u8]], args: &[&[u8]]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}
