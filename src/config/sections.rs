//! The typed settings groups of `Config` besides `[limits]`: one struct or
//! enum per section (`[auth]`, `[api]`, `[http]`, `[net]`, `[rooms]`,
//! `[store]`, `[log]`, `[shutdown]`, `[[tenants]]`) as serde reads it. Their
//! bounds are checked in `validate`.

use std::path::PathBuf;

use serde::Deserialize;

/// Text log lines for people, JSON lines for collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `jwt`: every connection needs a valid token. `none`: dev mode, loopback only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Jwt,
    None,
}

impl AuthMode {
    /// The spelling of the config file (`auth.mode`), for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Jwt => "jwt",
            AuthMode::None => "none",
        }
    }
}

/// One `[[tenants]]` table, or `"id:api_key"` from the environment or `--set`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTenant")]
pub struct TenantConfig {
    pub id: String,
    pub api_key: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTenant {
    Table { id: String, api_key: String },
    Text(String),
}

impl TryFrom<RawTenant> for TenantConfig {
    type Error = String;

    fn try_from(raw: RawTenant) -> Result<TenantConfig, String> {
        match raw {
            RawTenant::Table { id, api_key } => Ok(TenantConfig { id, api_key }),
            RawTenant::Text(text) => match text.split_once(':') {
                Some((id, api_key)) => Ok(TenantConfig { id: id.to_string(), api_key: api_key.to_string() }),
                None => Err("a tenant written as text is `id:api_key`".to_string()),
            },
        }
    }
}

/// `[api]`: the HTTP API beside the WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Longest lifetime of a token minted by `POST /api/v1/tokens`.
    pub token_ttl_max_s: u64,
    /// Largest request body; over it: HTTP 413.
    pub body_bytes_max: usize,
}

/// `[http]`: what the main listener serves besides the API and `/ws/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the meeting page at `GET /`. Resolved: when no layer sets it,
    /// it follows dev mode (`auth.mode = none`).
    pub demo_page: bool,
}

/// `[auth]`: how connections prove who they are. Empty strings are `None`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// HS256/384/512 secret; `None` = use (or create) `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    pub public_key_file: Option<PathBuf>,
    /// One of [`PUBLIC_KEY_ALGS`](super::PUBLIC_KEY_ALGS); set exactly when `public_key_file` is.
    pub public_key_alg: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub leeway_s: u64,
    pub token_bytes_max: usize,
    /// Allowed `Origin` values; empty = any.
    pub allow_origins: Vec<String>,
}

/// `[net]`: listener socket options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub backlog: i32,
    pub nodelay: bool,
    pub reuseport: bool,
}

/// `[rooms]`: meeting-room defaults and bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// New rooms start with a lobby: non-hosts wait until a host admits them.
    pub lobby: bool,
    /// Chat messages a room keeps (`chat.history`, welcome).
    pub history_max: u32,
    /// Chat messages included in a `welcome`.
    pub welcome_history_max: u32,
    /// Characters in one chat message.
    pub chat_text_chars_max: u32,
    /// Members sharing a screen at once.
    pub screenshare_max: u32,
    /// `publish` messages a room keeps for recovery with `since` (0: none).
    pub recovery_messages_max: u32,
    /// Longest a `publish` message is kept for recovery, in ms.
    pub recovery_age_ms: u64,
    /// Only registered rooms can be entered (personal and group rooms aside).
    pub require_registration: bool,
    /// Registered rooms held in memory at most.
    pub registry_max: usize,
    /// Every connection enters its personal room at connect (`false`: only
    /// by joining it).
    pub personal_rooms: bool,
    /// A room with this many members or more spreads: its shard hands new
    /// connections to every shard in turn, so its fan-out runs on all of
    /// them (0: never).
    pub spread_from_members: u32,
    /// KiB per shard of the filter of rooms that may have stored chat
    /// (others skip the history read when created; 0: every room reads it).
    pub history_filter_kib: u32,
}

/// `[store]`: the embedded SQLite store (`<data_dir>/roomcast.db`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Persist chat history; `false` (`--no-store`) keeps it in memory only.
    pub enabled: bool,
    /// Events queued from the shards to the store thread; past it chat gets `store_overloaded`.
    pub queue_max: usize,
    /// Events written in one transaction at most.
    pub batch_max: usize,
    /// `full`: every commit synced; `normal`: durable across a process crash only.
    pub synchronous: Synchronous,
    /// Days session audit rows are kept (by connect time); 0 keeps them forever.
    pub audit_retention_days: u32,
    /// How long a transaction waits for a lock another process holds on the
    /// database before it fails (`store_failed`); 0 fails at once.
    pub busy_timeout_ms: u64,
    /// SQLite's page cache, in KiB.
    pub cache_kib: u32,
    /// How long a batch of session audit events alone waits for more, in ms.
    pub audit_linger_ms: u64,
    /// The store thread's niceness above the rest of the server's (0-19).
    pub thread_nice: i32,
    /// Replies held per shard while that shard's store-reply channel is
    /// full; past it acks are dropped (counted). At least `batch_max`.
    pub outbox_max: usize,
}

/// `store.synchronous`: `full` syncs the WAL at every commit (an ack survives
/// power loss); `normal` only survives a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

/// `[log]`: what the logs hold beyond `log_level` / `log_format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Connection open/close lines (info) one shard writes per second at
    /// most; past it they are counted and summed up in one line a second.
    pub connection_lines_per_s: u32,
}

/// `[shutdown]`: how SIGTERM/SIGINT drains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest wait for connections to close before exiting.
    pub drain_timeout_ms: u64,
}

/// `[cluster]`: membership of a cluster over Redis (`cluster.redis` set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL; `None`: a single node.
    #[serde(deserialize_with = "empty_is_none")]
    pub redis: Option<String>,
    /// This node's name; `None`: generated at start.
    #[serde(deserialize_with = "empty_is_none")]
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel.
    pub key_prefix: String,
    /// Liveness refresh and dead-node scan period, ms.
    pub heartbeat_ms: u64,
    /// Liveness key lifetime, ms.
    pub node_ttl_ms: u64,
    /// Shard → bridge queue bound.
    pub bridge_queue_max: usize,
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok((!text.trim().is_empty()).then_some(text))
}
