//! roomcast's typed, validated configuration. Every key and its default live
//! in the embedded `default.toml`; `Config::load` lays the `--config` file,
//! `ROOMCAST_*` environment variables and command-line overrides over it (in
//! that order, weakest first), deserializes the result into the structs below
//! and checks the relationships between limits once, at startup. Any unknown
//! key, ill-typed value or broken rule is a `ConfigError` naming the key.

mod raw;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use raw::{ENV_ALIAS_JWT_SECRET, Layer, Merged, RawConfig, Schema};
pub use webhooks::{
    WEBHOOK_SECRET_BYTES_MIN, WEBHOOKS_MAX, WebhookConfig, WebhookEventKind, WebhookLimits, WebhookTarget,
};

/// The embedded defaults: every key, its default, and what it does.
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// Prefix of every environment variable roomcast reads.
pub const ENV_PREFIX: &str = "ROOMCAST_";
/// Upper bound on `shards` (and on the resolved shard count).
pub const SHARDS_MAX: usize = 1024;
/// Values `auth.public_key_alg` accepts.
pub const PUBLIC_KEY_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
/// Smallest `limits.handshake_head_bytes_max` (a browser's request head fits).
pub const HANDSHAKE_HEAD_BYTES_MIN: usize = 1024;
/// Shortest `auth.jwt_secret` accepted, in bytes.
pub const JWT_SECRET_BYTES_MIN: usize = 32;
/// Shortest `admin_key` and tenant `api_key` accepted, in bytes.
pub const API_KEY_BYTES_MIN: usize = 16;
/// Largest `limits.outbound_queue_grace_ms`.
pub const OUTBOUND_GRACE_MS_MAX: u32 = 60_000;
/// Largest `rooms.registry_max`: registered rooms held in memory.
pub const REGISTRY_MAX_LIMIT: usize = 10_000_000;
/// Largest `rooms.recovery_messages_max`: a room's recovery ring, bounded.
pub const RECOVERY_MESSAGES_MAX: u32 = 10_000;
/// Largest `store.busy_timeout_ms` (ten minutes): the store thread may wait
/// that long for another process's lock, with chat refused meanwhile.
pub const STORE_BUSY_TIMEOUT_MS_MAX: u64 = 600_000;

/// What a configuration is built from. Tests fill `env` explicitly; `main`
/// uses [`Sources::from_process_env`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file (`--config`), over the defaults.
    pub file: Option<PathBuf>,
    /// Environment variables; only names starting with `ROOMCAST_` are read.
    pub env: Vec<(String, String)>,
    /// Key path → value, from command-line flags; strongest, applied in order.
    pub overrides: Vec<(String, toml::Value)>,
}

impl Sources {
    /// Sources with the `ROOMCAST_*` variables of this process.
    pub fn from_process_env(file: Option<PathBuf>, overrides: Vec<(String, toml::Value)>) -> Sources {
        let env = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                name.starts_with(ENV_PREFIX).then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect();
        Sources { file, env, overrides }
    }
}

/// Why the configuration could not be loaded. Every variant about a key names
/// it (as a dotted key path) and the layer that set it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    // The OS error is part of the message and not also a `source`: printed
    // with its causes (`{:#}`), it would otherwise appear twice.
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile { path: PathBuf, error: std::io::Error },
    #[error("config file {}: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },
    #[error("{layer}: unknown key {key}")]
    UnknownKey { layer: String, key: String },
    #[error(
        "unknown environment variable {name}: it is not ROOMCAST_ followed by a key path \
         (see `roomcast serve --help`); unset it or fix its name"
    )]
    UnknownEnv { name: String },
    #[error("{layer}: {key} must be {expected}, found {found}")]
    WrongType { layer: String, key: String, expected: &'static str, found: String },
    #[error("{layer}: {key}: {message}")]
    BadValue { layer: String, key: String, message: String },
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("the built-in default.toml is broken: {0}")]
    Defaults(String),
}

impl ConfigError {
    /// The key path the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::WrongType { key, .. }
            | ConfigError::BadValue { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::UnknownEnv { name } => Some(name),
            _ => None,
        }
    }

    fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.to_string(), message: message.into() }
    }
}

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

/// The validated configuration roomcast runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Resolved: never 0 (0 in the file means one per available core).
    pub shards: usize,
    pub pin: bool,
    pub data_dir: PathBuf,
    pub echo_listen: Option<SocketAddr>,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Bearer key of the admin HTTP API; `None` = every admin request gets 401.
    pub admin_key: Option<String>,
    /// Separate listener for the admin API and `/metrics`.
    pub admin_listen: Option<SocketAddr>,
    /// Tenants that may mint tokens (`POST /api/v1/tokens`).
    pub tenants: Vec<TenantConfig>,
    pub auth: AuthConfig,
    pub net: NetConfig,
    pub limits: Limits,
    pub api: ApiConfig,
    pub http: HttpConfig,
    pub rooms: RoomsConfig,
    pub store: StoreConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    /// `[[webhooks]]`: HTTP endpoints that get room events (empty = no webhook thread).
    pub webhooks: Vec<WebhookConfig>,
    pub webhook_limits: WebhookLimits,
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
    /// One of [`PUBLIC_KEY_ALGS`]; set exactly when `public_key_file` is.
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

/// Every bound roomcast enforces (`[limits]`). Units are last in each name;
/// the relationships between them are checked in `Config::load`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connections one shard holds; a handshake for a room on a full shard gets HTTP 503 `server_full`.
    pub connections_per_shard_max: u32,
    /// Connections in the HTTP/handshake phase at once on the public
    /// listeners; at it the oldest not waiting for shards is closed for the new one.
    pub handshakes_pending_max: u32,
    /// Pending connections from one source address (IPv6: one /64); past it: HTTP 429.
    pub handshakes_pending_per_ip_max: u32,
    /// A request head must arrive completely within this time (slowloris defence).
    pub handshake_timeout_ms: u32,
    /// A request head must be complete within this time of its first byte.
    pub handshake_head_deadline_ms: u32,
    /// Average rate a request still incomplete a second after its first byte must have kept.
    pub handshake_bytes_per_s_min: u32,
    /// Request head size (the per-handshake read buffer); over it: HTTP 431.
    pub handshake_head_bytes_max: usize,
    /// Largest inbound message, all fragments together; over it: close 1009.
    pub message_inbound_bytes_max: u32,
    /// Bytes queued for one connection; staying over it longer than
    /// `outbound_queue_grace_ms` closes the slow consumer with 1013.
    pub outbound_queue_bytes_max: u32,
    /// Bytes a frame may never take a connection's queue past (close 1013 at once).
    pub outbound_queue_hard_bytes_max: u32,
    /// How long a queue may stay over `outbound_queue_bytes_max`, in ms.
    pub outbound_queue_grace_ms: u32,
    /// Per-connection token bucket: sustained messages per second.
    pub rate_messages_per_s: u32,
    /// Per-connection token bucket: burst size (at least 1).
    pub rate_burst: u32,
    /// Messages refused for rate before the connection is closed with 1008.
    pub rate_strikes_max: u32,
    /// Ping and Pong frames one connection may send per second (a token
    /// bucket holding one second's worth); past it: Close 1008 at once.
    pub control_frames_per_s: u32,
    /// Members of one room; a join past it is refused (`room_full`; 1013 for the URL room).
    pub room_members_max: u32,
    /// Members listed in a `welcome` frame; `member_count` always has the total.
    pub welcome_members_max: u32,
    /// Rooms with more members than this do not send member_joined / member_left.
    pub presence_members_max: u32,
    /// Interval between server pings.
    pub ping_interval_ms: u32,
    /// Silence after which a connection is closed with 1001; above `ping_interval_ms`.
    pub dead_after_ms: u32,
    /// After a server Close frame, how long to wait for the peer's before dropping.
    pub close_timeout_ms: u32,
    /// Capacity of each shard's inbox (acceptor and other threads to the shard).
    pub shard_inbox_max: usize,
    /// Readiness events handled per poll call (the `Events` capacity).
    pub poll_events_max: usize,
    /// Bytes read from one connection per readable event (the scratch read buffer).
    pub read_bytes_per_event_max: usize,
    /// Largest message on the echo listener (Autobahn sends up to 16 MiB).
    pub echo_message_bytes_max: usize,
    /// Rooms one connection is in at once (home, personal, groups and joins).
    pub rooms_per_connection_max: u32,
    /// Rooms one shard holds; a join that would create one more is refused.
    pub rooms_per_shard_max: u32,
    /// Messages one shard may hold for another when that one's inbox is full.
    pub shard_outbox_max: usize,
    /// Revoked and spent single-use tokens the acceptor holds; past it a
    /// revocation is refused (507) and a single-use token too (503).
    pub revoked_tokens_max: usize,
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

impl Config {
    /// Builds the configuration from its layers, weakest first: the embedded
    /// defaults, `sources.file`, `ROOMCAST_*` in `sources.env`, then
    /// `sources.overrides`. Validates it before returning.
    pub fn load(sources: Sources) -> Result<Config, ConfigError> {
        let schema = Schema::from_embedded()?;
        let mut merged = Merged::new(&schema);
        if let Some(path) = sources.file {
            let table = read_file(&path)?;
            merged.apply_table(&schema, &Layer::File(path), "", table)?;
        }
        apply_env(&schema, &mut merged, &sources.env)?;
        for (key, value) in sources.overrides {
            merged.set(&schema, &Layer::CommandLine, &key, value)?;
        }
        // An empty secret written out is a mistake (an unset variable, a
        // template), never a request for the generated one: that is what
        // leaving the key out means.
        if let Some(layer) = merged.origin.get("auth.jwt_secret")
            && merged.table.get("auth").and_then(|auth| auth.get("jwt_secret")).and_then(toml::Value::as_str)
                == Some("")
        {
            return Err(ConfigError::BadValue {
                layer: layer.to_string(),
                key: "auth.jwt_secret".into(),
                message: "is empty; give a secret of at least 32 bytes, or leave the key out to use \
                          <data_dir>/jwt-secret"
                    .into(),
            });
        }
        let demo_page_set = merged.origin.contains_key("http.demo_page");
        let mut config = Config::from_raw(merged.into_raw()?)?;
        if !demo_page_set && config.auth.mode == AuthMode::None {
            config.http.demo_page = true;
        }
        config.validate()?;
        Ok(config)
    }

    /// Things worth a startup warning that do not stop it.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.auth.allow_origins.is_empty() && !self.listen.ip().is_loopback() {
            warnings.push(format!(
                "auth.allow_origins is empty and listen = {} is not loopback: \
                 any web page may open connections here",
                self.listen
            ));
        }
        if let Some(echo) = self.echo_listen
            && !echo.ip().is_loopback()
        {
            warnings.push(format!(
                "echo_listen = {echo} is not loopback: anyone can use the echo listener \
                 without a token"
            ));
        }
        warnings
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let echo_listen = match non_empty(raw.echo_listen) {
            None => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|e| ConfigError::invalid("echo_listen", format!("`{text}` is not an address: {e}")))?,
            ),
        };
        if raw.shards as usize > SHARDS_MAX {
            return Err(ConfigError::invalid("shards", format!("{} is over the maximum of {SHARDS_MAX}", raw.shards)));
        }
        let shards = match raw.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(SHARDS_MAX),
            n => n as usize,
        };
        let admin_listen = match non_empty(raw.admin_listen) {
            None => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|e| ConfigError::invalid("admin_listen", format!("`{text}` is not an address: {e}")))?,
            ),
        };
        let auth = raw.auth;
        let webhooks = webhooks::from_raw(raw.webhooks, &raw.webhook_limits)?;
        Ok(Config {
            listen: raw.listen,
            shards,
            pin: raw.pin,
            data_dir: raw.data_dir,
            echo_listen,
            log_level: raw.log_level,
            log_format: raw.log_format,
            admin_key: non_empty(raw.admin_key),
            admin_listen,
            tenants: raw.tenants,
            auth: AuthConfig {
                mode: auth.mode,
                jwt_secret: non_empty(auth.jwt_secret),
                public_key_file: non_empty(auth.public_key_file).map(PathBuf::from),
                public_key_alg: non_empty(auth.public_key_alg),
                jwks_file: non_empty(auth.jwks_file).map(PathBuf::from),
                audience: non_empty(auth.audience),
                issuer: non_empty(auth.issuer),
                leeway_s: auth.leeway_s,
                token_bytes_max: auth.token_bytes_max,
                allow_origins: auth.allow_origins,
            },
            net: raw.net,
            limits: raw.limits,
            api: raw.api,
            http: raw.http,
            rooms: raw.rooms,
            store: raw.store,
            shutdown: raw.shutdown,
            log: raw.log,
            webhooks,
            webhook_limits: raw.webhook_limits,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        check_log_level(&self.log_level)?;
        self.validate_auth()?;
        self.validate_api()?;
        if self.net.backlog <= 0 {
            return Err(ConfigError::invalid("net.backlog", "must be greater than 0"));
        }
        self.validate_rooms()?;
        self.validate_store()?;
        self.webhook_limits.validate()?;
        self.limits.validate()
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.admin_key
            && key.len() < API_KEY_BYTES_MIN
        {
            return Err(ConfigError::invalid(
                "admin_key",
                format!("is {} bytes; at least {API_KEY_BYTES_MIN} are needed", key.len()),
            ));
        }
        for (i, tenant) in self.tenants.iter().enumerate() {
            if tenant.api_key.len() < API_KEY_BYTES_MIN {
                return Err(ConfigError::invalid(
                    "tenants",
                    format!("tenant {:?}: api_key needs at least {API_KEY_BYTES_MIN} bytes", tenant.id),
                ));
            }
            if self.tenants[..i].iter().any(|other| other.api_key == tenant.api_key) {
                return Err(ConfigError::invalid("tenants", format!("tenant {:?} reuses an api_key", tenant.id)));
            }
        }
        if self.api.body_bytes_max == 0 || self.api.token_ttl_max_s == 0 {
            return Err(ConfigError::invalid(
                "api",
                "api.body_bytes_max and api.token_ttl_max_s must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        for (key, value) in [("store.queue_max", store.queue_max), ("store.batch_max", store.batch_max)] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        // One batch's replies must fit, or a healthy store would drop acks.
        if store.outbox_max < store.batch_max {
            return Err(ConfigError::invalid(
                "store.outbox_max",
                format!("{} is below store.batch_max ({})", store.outbox_max, store.batch_max),
            ));
        }
        if store.busy_timeout_ms > STORE_BUSY_TIMEOUT_MS_MAX {
            return Err(ConfigError::invalid(
                "store.busy_timeout_ms",
                format!("{} is over the maximum of {STORE_BUSY_TIMEOUT_MS_MAX}", store.busy_timeout_ms),
            ));
        }
        if store.audit_linger_ms > 1000 {
            return Err(ConfigError::invalid("store.audit_linger_ms", "at most 1000"));
        }
        if !(64..=1_048_576).contains(&store.cache_kib) {
            return Err(ConfigError::invalid("store.cache_kib", "from 64 to 1048576 (KiB)"));
        }
        Ok(())
    }

    fn validate_rooms(&self) -> Result<(), ConfigError> {
        let rooms = &self.rooms;
        // Every room may hold this many messages (each up to
        // limits.message_inbound_bytes_max): a sane bound keeps one room's
        // ring from taking the process's memory.
        if rooms.recovery_messages_max > RECOVERY_MESSAGES_MAX {
            return Err(ConfigError::invalid(
                "rooms.recovery_messages_max",
                format!("{} is over the maximum of {RECOVERY_MESSAGES_MAX}", rooms.recovery_messages_max),
            ));
        }
        if rooms.chat_text_chars_max == 0 {
            return Err(ConfigError::invalid("rooms.chat_text_chars_max", "must be greater than 0"));
        }
        if rooms.welcome_history_max > rooms.history_max {
            return Err(ConfigError::invalid(
                "rooms.welcome_history_max",
                format!("{} is over rooms.history_max ({})", rooms.welcome_history_max, rooms.history_max),
            ));
        }
        // Both copies of the registry are in memory: keep them within reason.
        if rooms.registry_max > REGISTRY_MAX_LIMIT {
            return Err(ConfigError::invalid("rooms.registry_max", format!("at most {REGISTRY_MAX_LIMIT}")));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.mode == AuthMode::None && !self.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "auth.mode",
                format!(
                    "dev mode (auth.mode = none) refuses to bind a non-loopback address \
                     (listen = {}); use a loopback address such as 127.0.0.1, or auth.mode = jwt",
                    self.listen
                ),
            ));
        }
        if let Some(secret) = &auth.jwt_secret
            && secret.len() < JWT_SECRET_BYTES_MIN
        {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                format!("is {} bytes; at least {JWT_SECRET_BYTES_MIN} are needed", secret.len()),
            ));
        }
        match (&auth.public_key_file, &auth.public_key_alg) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "auth.public_key_file",
                    "auth.public_key_file and auth.public_key_alg must be set together",
                ));
            }
            (_, Some(alg)) if !PUBLIC_KEY_ALGS.contains(&alg.as_str()) => {
                return Err(ConfigError::invalid(
                    "auth.public_key_alg",
                    format!("`{alg}` is not one of {}", PUBLIC_KEY_ALGS.join(", ")),
                ));
            }
            _ => {}
        }
        if auth.token_bytes_max == 0 {
            return Err(ConfigError::invalid("auth.token_bytes_max", "must be greater than 0"));
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in self.sizes() {
            if value == 0 {
                return Err(ConfigError::invalid(&format!("limits.{name}"), "must be greater than 0"));
            }
        }
        if self.rate_burst < 1 {
            return Err(ConfigError::invalid("limits.rate_burst", "must be at least 1"));
        }
        if self.dead_after_ms <= self.ping_interval_ms {
            return Err(ConfigError::invalid(
                "limits.dead_after_ms",
                format!(
                    "{} must be greater than limits.ping_interval_ms ({})",
                    self.dead_after_ms, self.ping_interval_ms
                ),
            ));
        }
        if self.message_inbound_bytes_max > self.outbound_queue_bytes_max {
            return Err(ConfigError::invalid(
                "limits.message_inbound_bytes_max",
                format!(
                    "{} must not exceed limits.outbound_queue_bytes_max ({})",
                    self.message_inbound_bytes_max, self.outbound_queue_bytes_max
                ),
            ));
        }
        if self.outbound_queue_hard_bytes_max < self.outbound_queue_bytes_max
            || self.outbound_queue_hard_bytes_max == u32::MAX
        {
            return Err(ConfigError::invalid(
                "limits.outbound_queue_hard_bytes_max",
                format!(
                    "{} must be at least limits.outbound_queue_bytes_max ({}) and below 4 GiB",
                    self.outbound_queue_hard_bytes_max, self.outbound_queue_bytes_max
                ),
            ));
        }
        if self.outbound_queue_grace_ms > OUTBOUND_GRACE_MS_MAX {
            return Err(ConfigError::invalid(
                "limits.outbound_queue_grace_ms",
                format!("at most {OUTBOUND_GRACE_MS_MAX} (a minute)"),
            ));
        }
        if self.handshake_head_bytes_max < HANDSHAKE_HEAD_BYTES_MIN {
            return Err(ConfigError::invalid(
                "limits.handshake_head_bytes_max",
                format!("{} is below the minimum of {HANDSHAKE_HEAD_BYTES_MIN}", self.handshake_head_bytes_max),
            ));
        }
        Ok(())
    }

    /// Every limit with its key name, for the "greater than 0" rule.
    fn sizes(&self) -> [(&'static str, u64); 29] {
        let l = self;
        [
            ("connections_per_shard_max", l.connections_per_shard_max.into()),
            ("handshakes_pending_max", l.handshakes_pending_max.into()),
            ("handshakes_pending_per_ip_max", l.handshakes_pending_per_ip_max.into()),
            ("handshake_timeout_ms", l.handshake_timeout_ms.into()),
            ("handshake_head_deadline_ms", l.handshake_head_deadline_ms.into()),
            ("handshake_bytes_per_s_min", l.handshake_bytes_per_s_min.into()),
            ("handshake_head_bytes_max", l.handshake_head_bytes_max as u64),
            ("message_inbound_bytes_max", l.message_inbound_bytes_max.into()),
            ("outbound_queue_bytes_max", l.outbound_queue_bytes_max.into()),
            ("outbound_queue_hard_bytes_max", l.outbound_queue_hard_bytes_max.into()),
            ("outbound_queue_grace_ms", l.outbound_queue_grace_ms.into()),
            ("rate_messages_per_s", l.rate_messages_per_s.into()),
            ("rate_burst", l.rate_burst.into()),
            ("rate_strikes_max", l.rate_strikes_max.into()),
            ("control_frames_per_s", l.control_frames_per_s.into()),
            ("room_members_max", l.room_members_max.into()),
            ("welcome_members_max", l.welcome_members_max.into()),
            ("presence_members_max", l.presence_members_max.into()),
            ("ping_interval_ms", l.ping_interval_ms.into()),
            ("dead_after_ms", l.dead_after_ms.into()),
            ("close_timeout_ms", l.close_timeout_ms.into()),
            ("shard_inbox_max", l.shard_inbox_max as u64),
            ("poll_events_max", l.poll_events_max as u64),
            ("read_bytes_per_event_max", l.read_bytes_per_event_max as u64),
            ("echo_message_bytes_max", l.echo_message_bytes_max as u64),
            ("rooms_per_connection_max", l.rooms_per_connection_max.into()),
            ("rooms_per_shard_max", l.rooms_per_shard_max.into()),
            ("shard_outbox_max", l.shard_outbox_max as u64),
            ("revoked_tokens_max", l.revoked_tokens_max as u64),
        ]
    }
}

/// Parses `text` by the type of `key`'s default, as for an env variable
/// (integers, `true/false/1/0`, comma-separated lists, strings). Used by
/// `--set KEY=VALUE`; an unknown key is an error naming it.
pub fn parse_key_value(key: &str, text: &str) -> Result<toml::Value, ConfigError> {
    Schema::from_embedded()?.parse_text(&Layer::CommandLine, key, text)
}

fn read_file(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile { path: path.to_path_buf(), error })?;
    text.parse().map_err(|e: toml::de::Error| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Applies `ROOMCAST_*` variables. `ROOMCAST_JWT_SECRET` is an alias of
/// `ROOMCAST_AUTH_JWT_SECRET` (which wins when both are set);
/// any other `ROOMCAST_*` name that is not a key is an error.
fn apply_env(schema: &Schema, merged: &mut Merged, env: &[(String, String)]) -> Result<(), ConfigError> {
    let ours = env.iter().filter(|(name, _)| name.starts_with(ENV_PREFIX));
    let (aliases, names): (Vec<_>, Vec<_>) = ours.partition(|(name, _)| name == ENV_ALIAS_JWT_SECRET);
    for (name, value) in aliases.into_iter().chain(names) {
        let key = match name.as_str() {
            ENV_ALIAS_JWT_SECRET => "auth.jwt_secret",
            _ => schema.key_for_env(name).ok_or_else(|| ConfigError::UnknownEnv { name: name.clone() })?,
        };
        let layer = Layer::Env(name.clone());
        let value = schema.parse_text(&layer, key, value)?;
        merged.set(schema, &layer, key, value)?;
    }
    Ok(())
}

/// Log levels `log_level` accepts, alone or as `target=level` directives.
pub const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// `log_level` is a level, or comma-separated directives `target=level`
/// (tracing-subscriber's `EnvFilter` syntax) whose levels are all known. A
/// bare word that is not a level would be read by `EnvFilter` as a target
/// name, silently logging nothing of roomcast, so it is refused.
fn check_log_level(text: &str) -> Result<(), ConfigError> {
    let bad = |message: String| Err(ConfigError::invalid("log_level", message));
    if text.trim().is_empty() {
        return bad("must not be empty".into());
    }
    for directive in text.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LOG_LEVELS.iter().any(|known| known.eq_ignore_ascii_case(level)) {
            return bad(format!("`{directive}`: the level must be one of {}", LOG_LEVELS.join(", ")));
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(text) {
        return bad(format!("`{text}`: {e}"));
    }
    Ok(())
}

fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

#[cfg(test)]
mod tests {
    use super::raw::env_name;
    use super::*;
    use toml::Value;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Writes `text` to a per-test file under the temp dir.
    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("roomcast-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(Sources { env: env(pairs), ..Sources::default() })
    }

    fn load_set(key: &str, value: Value) -> Result<Config, ConfigError> {
        Config::load(Sources { overrides: vec![(key.to_string(), value)], ..Sources::default() })
    }

    fn load_file(name: &str, text: &str) -> Result<Config, ConfigError> {
        Config::load(Sources { file: Some(file(name, text)), ..Sources::default() })
    }

    /// Asserts an error that names `key` in both its key and its message.
    fn assert_names(result: Result<Config, ConfigError>, key: &str) -> ConfigError {
        let err = result.expect_err("expected a configuration error");
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains(key), "`{err}` does not name {key}");
        err
    }

    fn int(n: i64) -> Value {
        Value::Integer(n)
    }

    #[test]
    fn defaults_load_and_validate() {
        let config = Config::load(Sources::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(config.shards >= 1 && config.shards <= SHARDS_MAX);
        assert!(config.pin);
        assert_eq!(config.data_dir, PathBuf::from("./roomcast-data"));
        assert_eq!(config.echo_listen, None);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.auth.mode, AuthMode::Jwt);
        assert_eq!(config.auth.jwt_secret, None);
        assert_eq!(config.auth.public_key_file, None);
        assert_eq!(config.auth.token_bytes_max, 8192);
        assert_eq!(config.net.backlog, 1024);
        assert_eq!(config.limits.message_inbound_bytes_max, 32768);
        assert_eq!(config.limits.echo_message_bytes_max, 20 << 20);
        assert_eq!(config.shutdown.drain_timeout_ms, 10_000);
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn every_default_key_has_an_env_name_that_loads() {
        let defaults: toml::Table = DEFAULT_TOML.parse().unwrap();
        let mut names = Vec::new();
        for (name, value) in &defaults {
            match value {
                Value::Table(section) => names.extend(section.keys().map(|k| env_name(&format!("{name}.{k}")))),
                _ => names.push(env_name(name)),
            }
        }
        assert!(names.contains(&"ROOMCAST_LIMITS_MESSAGE_INBOUND_BYTES_MAX".to_string()));
        assert!(names.contains(&"ROOMCAST_LISTEN".to_string()));
        let schema = Schema::from_embedded().unwrap();
        for name in names {
            assert!(schema.key_for_env(&name).is_some(), "{name}");
        }
    }

    #[test]
    fn the_defaults_pasted_as_a_config_file_load_as_the_defaults() {
        let pasted = load_file("pasted-defaults", DEFAULT_TOML).expect("default.toml as a config file");
        let builtin = Config::load(Sources::default()).unwrap();
        assert_eq!(format!("{pasted:?}"), format!("{builtin:?}"));
    }

    #[test]
    fn keys_without_a_default_are_documented_commented_out_and_settable() {
        for key in raw::UNSET_STRING_KEYS {
            let (_, name) = key.rsplit_once('.').unwrap_or(("", key));
            assert!(DEFAULT_TOML.contains(&format!("\n# {name} = ")), "{key} is not shown commented out");
        }
        let secret = "0123456789abcdef0123456789abcdef";
        let config = load_file("set-secret", &format!("[auth]\njwt_secret = \"{secret}\"\n")).unwrap();
        assert_eq!(config.auth.jwt_secret.as_deref(), Some(secret));
    }

    #[test]
    fn file_overrides_default() {
        let config = load_file(
            "file-overrides",
            "shards = 3\n[limits]\nrate_burst = 7\n[auth]\nallow_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        assert_eq!(config.shards, 3);
        assert_eq!(config.limits.rate_burst, 7);
        assert_eq!(config.auth.allow_origins, vec!["https://a.example".to_string()]);
        assert_eq!(config.limits.rate_messages_per_s, 50, "untouched keys keep defaults");
    }

    #[test]
    fn env_overrides_file() {
        let path = file("env-overrides", "shards = 3\n[limits]\nrate_burst = 7\n");
        let config = Config::load(Sources {
            file: Some(path),
            env: env(&[("ROOMCAST_SHARDS", "5"), ("PATH", "/bin"), ("OTHER_SHARDS", "9")]),
            overrides: vec![],
        })
        .unwrap();
        assert_eq!(config.shards, 5);
        assert_eq!(config.limits.rate_burst, 7);
    }

    #[test]
    fn flag_overrides_env() {
        let config = Config::load(Sources {
            file: None,
            env: env(&[("ROOMCAST_SHARDS", "5"), ("ROOMCAST_LISTEN", "127.0.0.1:9000")]),
            overrides: vec![("shards".into(), int(2))],
        })
        .unwrap();
        assert_eq!(config.shards, 2);
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn later_override_wins() {
        let config = Config::load(Sources {
            overrides: vec![("shards".into(), int(2)), ("shards".into(), int(4))],
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(config.shards, 4);
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let err = assert_names(
            load_file("unknown-key", "[limits]\nmesage_inbound_bytes_max = 1\n"),
            "limits.mesage_inbound_bytes_max",
        );
        let text = err.to_string();
        assert!(text.starts_with("config file "), "{text}");
        assert!(text.ends_with("unknown key limits.mesage_inbound_bytes_max"), "{text}");
        assert_names(load_file("unknown-section", "[limitz]\nx = 1\n"), "limitz");
        assert_names(load_file("unknown-top", "listen_addr = \"x\"\n"), "listen_addr");
    }

    #[test]
    fn unknown_env_is_named() {
        let err = assert_names(
            load_env(&[("ROOMCAST_LIMITS_MESAGE_INBOUND_BYTES_MAX", "1")]),
            "ROOMCAST_LIMITS_MESAGE_INBOUND_BYTES_MAX",
        );
        assert!(matches!(err, ConfigError::UnknownEnv { .. }));
    }

    #[test]
    fn unknown_override_key_is_named() {
        assert_names(load_set("limits.nope", int(1)), "limits.nope");
        assert_names(load_set("limits", int(1)), "limits");
    }

    #[test]
    fn wrong_type_in_file_is_named() {
        let err = assert_names(load_file("wrong-type", "[limits]\nrate_burst = \"lots\"\n"), "limits.rate_burst");
        assert!(matches!(err, ConfigError::WrongType { .. }), "{err}");
        assert_names(load_file("wrong-type-bool", "pin = 1\n"), "pin");
        assert_names(load_file("wrong-type-list", "[auth]\nallow_origins = [1]\n"), "auth.allow_origins");
        assert_names(load_file("section-as-value", "limits = 3\n"), "limits");
    }

    #[test]
    fn out_of_range_or_unparsable_values_are_named_with_their_layer() {
        let err = assert_names(load_file("negative", "[limits]\nrate_burst = -1\n"), "limits.rate_burst");
        assert!(err.to_string().starts_with("config file "), "{err}");
        let err = assert_names(load_env(&[("ROOMCAST_LISTEN", "nowhere")]), "listen");
        assert!(err.to_string().contains("ROOMCAST_LISTEN"), "{err}");
        assert_names(load_set("log_format", Value::String("xml".into())), "log_format");
        assert_names(load_set("auth.mode", Value::String("open".into())), "auth.mode");
        assert_names(load_set("echo_listen", Value::String("nope".into())), "echo_listen");
    }

    #[test]
    fn wrong_type_in_env_is_named() {
        let err = assert_names(load_env(&[("ROOMCAST_SHARDS", "many")]), "shards");
        assert!(err.to_string().contains("ROOMCAST_SHARDS"), "{err}");
        assert_names(load_env(&[("ROOMCAST_PIN", "yes")]), "pin");
    }

    #[test]
    fn wrong_type_override_is_named() {
        let err = assert_names(load_set("shards", Value::String("2".into())), "shards");
        assert!(matches!(err, ConfigError::WrongType { .. }), "{err}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let missing = std::env::temp_dir().join("roomcast-config-does-not-exist.toml");
        let err = Config::load(Sources { file: Some(missing), ..Sources::default() }).unwrap_err();
        assert!(err.to_string().contains("roomcast-config-does-not-exist.toml"), "{err}");
        let err = load_file("syntax", "shards = = 2\n").unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
    }

    #[test]
    fn env_values_parse_by_default_type() {
        let config = load_env(&[
            ("ROOMCAST_PIN", "0"),
            ("ROOMCAST_NET_NODELAY", "FALSE"),
            ("ROOMCAST_NET_REUSEPORT", "1"),
            ("ROOMCAST_AUTH_LEEWAY_S", " 30 "),
            ("ROOMCAST_LOG_FORMAT", "json"),
            ("ROOMCAST_AUTH_AUDIENCE", "roomcast"),
        ])
        .unwrap();
        assert!(!config.pin);
        assert!(!config.net.nodelay);
        assert!(config.net.reuseport);
        assert_eq!(config.auth.leeway_s, 30);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.auth.audience.as_deref(), Some("roomcast"));
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let config = load_env(&[("ROOMCAST_AUTH_ALLOW_ORIGINS", "https://a.example, https://b.example,,")]).unwrap();
        assert_eq!(config.auth.allow_origins, vec!["https://a.example", "https://b.example"]);
        let path = file("list-cleared", "[auth]\nallow_origins = [\"https://a.example\"]\n");
        let config = Config::load(Sources {
            file: Some(path),
            env: env(&[("ROOMCAST_AUTH_ALLOW_ORIGINS", "")]),
            overrides: vec![],
        })
        .unwrap();
        assert!(config.auth.allow_origins.is_empty());
    }

    #[test]
    fn jwt_secret_alias() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = load_env(&[("ROOMCAST_JWT_SECRET", secret)]).unwrap();
        assert_eq!(config.auth.jwt_secret.as_deref(), Some(secret));
        let canonical = "fedcba9876543210fedcba9876543210";
        let config = load_env(&[("ROOMCAST_AUTH_JWT_SECRET", canonical), ("ROOMCAST_JWT_SECRET", secret)]).unwrap();
        assert_eq!(config.auth.jwt_secret.as_deref(), Some(canonical), "canonical name wins");
    }

    #[test]
    fn admin_key_and_tenants_load_from_env_and_file() {
        let key = "0123456789abcdef";
        let config = load_env(&[("ROOMCAST_ADMIN_KEY", key), ("ROOMCAST_TENANTS", "acme:fedcba9876543210")]).unwrap();
        assert_eq!(config.admin_key.as_deref(), Some(key));
        assert_eq!(config.tenants, vec![TenantConfig { id: "acme".into(), api_key: "fedcba9876543210".into() }]);
        assert_names(load_env(&[("ROOMCAST_ADMIN_KEY", "short")]), "admin_key");
        let text = "[[tenants]]\nid = \"a\"\napi_key = \"aaaaaaaaaaaaaaaa\"\n[[tenants]]\nid = \"b\"\napi_key = \"bbbbbbbbbbbbbbbb\"\n";
        let config = load_file("tenants", text).unwrap();
        assert_eq!(config.tenants.len(), 2);
        assert_eq!(config.tenants[1].id, "b");
        assert_names(load_file("tenants-dup", &text.replace("bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa")), "tenants");
    }

    #[test]
    fn empty_strings_are_none_and_shards_zero_resolves() {
        let config = load_env(&[("ROOMCAST_ECHO_LISTEN", "127.0.0.1:9001")]).unwrap();
        assert_eq!(config.echo_listen, Some("127.0.0.1:9001".parse().unwrap()));
        let config = load_set("shards", int(0)).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.shards, cores.min(SHARDS_MAX));
    }

    #[test]
    fn dead_after_must_exceed_ping_interval() {
        let err = assert_names(load_set("limits.dead_after_ms", int(30_000)), "limits.dead_after_ms");
        assert!(err.to_string().contains("limits.ping_interval_ms"), "{err}");
    }

    #[test]
    fn every_limit_must_be_positive() {
        let schema = Schema::from_embedded().unwrap();
        let Some(Value::Table(limits)) = schema.defaults.get("limits") else {
            panic!("no [limits] in default.toml");
        };
        let defaults = Config::load(Sources::default()).unwrap();
        let covered: Vec<&str> = defaults.limits.sizes().iter().map(|(name, _)| *name).collect();
        let keys: Vec<&str> = limits.keys().map(String::as_str).collect();
        assert_eq!(covered.len(), keys.len(), "sizes() covers every limit");
        assert!(keys.iter().all(|key| covered.contains(key)), "{keys:?} vs {covered:?}");
        for name in limits.keys() {
            let key = format!("limits.{name}");
            assert_names(load_set(&key, int(0)), &key);
        }
        assert_names(load_set("auth.token_bytes_max", int(0)), "auth.token_bytes_max");
        assert_names(load_set("net.backlog", int(0)), "net.backlog");
    }

    #[test]
    fn store_section_loads_and_is_checked() {
        let config = Config::load(Sources::default()).unwrap();
        assert!(config.store.enabled);
        assert_eq!((config.store.queue_max, config.store.batch_max), (65536, 1024));
        assert_eq!(config.store.synchronous, Synchronous::Full);
        let config =
            load_env(&[("ROOMCAST_STORE_ENABLED", "false"), ("ROOMCAST_STORE_SYNCHRONOUS", "normal")]).unwrap();
        assert!(!config.store.enabled);
        assert_eq!(config.store.synchronous, Synchronous::Normal);
        assert_names(load_set("store.queue_max", int(0)), "store.queue_max");
        assert_names(load_set("store.batch_max", int(0)), "store.batch_max");
        assert_names(load_set("store.synchronous", Value::String("off".into())), "store.synchronous");
        assert_eq!((config.store.busy_timeout_ms, config.store.outbox_max), (5000, 65536));
        assert!(load_set("store.busy_timeout_ms", int(0)).is_ok(), "0: fail at once");
        assert_names(load_set("store.busy_timeout_ms", int(600_001)), "store.busy_timeout_ms");
        let err = assert_names(load_set("store.outbox_max", int(1023)), "store.outbox_max");
        assert!(err.to_string().contains("store.batch_max"), "{err}");
    }

    #[test]
    fn recovery_ring_has_an_upper_bound() {
        assert!(load_set("rooms.recovery_messages_max", int(10_000)).is_ok());
        assert!(load_set("rooms.recovery_messages_max", int(0)).is_ok(), "0: recovery off");
        assert_names(load_set("rooms.recovery_messages_max", int(10_001)), "rooms.recovery_messages_max");
    }

    #[test]
    fn rate_burst_at_least_one() {
        assert_names(load_set("limits.rate_burst", int(0)), "limits.rate_burst");
        assert!(load_set("limits.rate_burst", int(1)).is_ok());
    }

    #[test]
    fn inbound_message_fits_outbound_queue() {
        let err = assert_names(
            load_set("limits.message_inbound_bytes_max", int(2 << 20)),
            "limits.message_inbound_bytes_max",
        );
        assert!(err.to_string().contains("limits.outbound_queue_bytes_max"), "{err}");
    }

    #[test]
    fn handshake_head_at_least_1024() {
        assert_names(load_set("limits.handshake_head_bytes_max", int(1023)), "limits.handshake_head_bytes_max");
        assert!(load_set("limits.handshake_head_bytes_max", int(1024)).is_ok());
    }

    #[test]
    fn public_key_file_and_alg_together() {
        let err =
            assert_names(load_set("auth.public_key_file", Value::String("key.pem".into())), "auth.public_key_file");
        assert!(err.to_string().contains("auth.public_key_alg"), "{err}");
        assert_names(load_set("auth.public_key_alg", Value::String("ES256".into())), "auth.public_key_file");
        let both = |alg: &str| {
            Config::load(Sources {
                overrides: vec![
                    ("auth.public_key_file".into(), Value::String("key.pem".into())),
                    ("auth.public_key_alg".into(), Value::String(alg.into())),
                ],
                ..Sources::default()
            })
        };
        for alg in PUBLIC_KEY_ALGS {
            assert!(both(alg).is_ok(), "{alg}");
        }
        assert_names(both("HS256"), "auth.public_key_alg");
    }

    #[test]
    fn dev_mode_refuses_non_loopback() {
        let none = |listen: &str| {
            Config::load(Sources {
                overrides: vec![
                    ("auth.mode".into(), Value::String("none".into())),
                    ("listen".into(), Value::String(listen.into())),
                ],
                ..Sources::default()
            })
        };
        let err = assert_names(none("0.0.0.0:8080"), "auth.mode");
        assert!(err.to_string().contains("dev mode (auth.mode = none) refuses"), "{err}");
        assert!(none("127.0.0.1:8080").is_ok());
        assert!(none("[::1]:8080").is_ok());
    }

    #[test]
    fn demo_page_follows_dev_mode_unless_set() {
        let load = |pairs: &[(&str, Value)]| {
            let overrides = pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            Config::load(Sources { overrides, ..Sources::default() }).map(|c| c.http.demo_page)
        };
        let none = ("auth.mode", Value::String("none".into()));
        assert_eq!(load(&[]).ok(), Some(false));
        assert_eq!(load(std::slice::from_ref(&none)).ok(), Some(true));
        assert_eq!(load(&[none.clone(), ("http.demo_page", Value::Boolean(false))]).ok(), Some(false));
        assert_eq!(load(&[("http.demo_page", Value::Boolean(true))]).ok(), Some(true));
    }

    #[test]
    fn shards_capped() {
        assert_names(load_set("shards", int(1025)), "shards");
        assert_eq!(load_set("shards", int(1024)).unwrap().shards, 1024);
    }

    #[test]
    fn short_jwt_secret_refused() {
        assert_names(load_env(&[("ROOMCAST_JWT_SECRET", "short")]), "auth.jwt_secret");
    }

    #[test]
    fn an_explicitly_empty_jwt_secret_is_refused_in_every_layer() {
        let err = assert_names(load_env(&[("ROOMCAST_JWT_SECRET", "")]), "auth.jwt_secret");
        assert!(err.to_string().contains("ROOMCAST_JWT_SECRET"), "{err}");
        assert_names(load_env(&[("ROOMCAST_AUTH_JWT_SECRET", "")]), "auth.jwt_secret");
        assert_names(load_set("auth.jwt_secret", Value::String(String::new())), "auth.jwt_secret");
        let err = assert_names(load_file("empty-secret", "[auth]\njwt_secret = \"\"\n"), "auth.jwt_secret");
        assert!(err.to_string().starts_with("config file "), "{err}");
        // Left out, the generated secret is used.
        assert_eq!(Config::load(Sources::default()).unwrap().auth.jwt_secret, None);
    }

    #[test]
    fn log_levels_are_checked() {
        for good in ["info", "DEBUG", "off", "warn,roomcast=trace", "roomcast::shard=debug"] {
            assert!(load_set("log_level", Value::String(good.into())).is_ok(), "{good}");
        }
        for bad in ["", "verbose", "roomcast=loud", "info,"] {
            let err = assert_names(load_set("log_level", Value::String(bad.into())), "log_level");
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
        }
    }

    #[test]
    fn warns_about_any_origin_off_loopback() {
        let config = load_set("listen", Value::String("0.0.0.0:8080".into())).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("auth.allow_origins"));
        let config =
            load_env(&[("ROOMCAST_LISTEN", "0.0.0.0:8080"), ("ROOMCAST_AUTH_ALLOW_ORIGINS", "https://a.example")])
                .unwrap();
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn parse_key_value_uses_the_default_type() {
        assert_eq!(parse_key_value("shards", "4").unwrap(), int(4));
        assert_eq!(parse_key_value("pin", "false").unwrap(), Value::Boolean(false));
        assert_eq!(parse_key_value("log_level", "debug").unwrap(), Value::String("debug".into()));
        assert!(matches!(parse_key_value("limits.nope", "1"), Err(ConfigError::UnknownKey { .. })));
        assert!(matches!(parse_key_value("shards", "x"), Err(ConfigError::BadValue { .. })));
    }
}
