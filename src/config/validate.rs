//! The checks `Config::load` runs once the layers are merged and typed: each
//! key's range and the rules between keys (auth, API keys and tenants, rooms,
//! store, log level), with the bounds they enforce. `[limits]` checks its own
//! in `limits`, `[webhook_limits]` in `webhooks`.

use super::{AuthMode, Config, ConfigError};

/// Values `auth.public_key_alg` accepts.
pub const PUBLIC_KEY_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
/// Shortest `auth.jwt_secret` accepted, in bytes.
pub const JWT_SECRET_BYTES_MIN: usize = 32;
/// Shortest `admin_key` and tenant `api_key` accepted, in bytes.
pub const API_KEY_BYTES_MIN: usize = 16;
/// Largest `rooms.registry_max`: registered rooms held in memory.
pub const REGISTRY_MAX_LIMIT: usize = 10_000_000;
/// Largest `rooms.history_filter_kib`: 64 MiB per shard.
pub const HISTORY_FILTER_KIB_MAX: u32 = 65_536;
/// Largest `rooms.recovery_messages_max`: a room's recovery ring, bounded.
pub const RECOVERY_MESSAGES_MAX: u32 = 10_000;
/// Most shards a cluster node may run: a connection id's shard part is
/// `node * 256 + local shard` (`ids::NODE_SHARD_BASE`), the local shard one byte.
pub const CLUSTER_SHARDS_MAX: usize = 255;
/// Shortest `cluster.heartbeat_ms`: Redis is written once per heartbeat.
pub const CLUSTER_HEARTBEAT_MS_MIN: u64 = 100;

/// Largest `store.busy_timeout_ms` (ten minutes): the store thread may wait
/// that long for another process's lock, with chat refused meanwhile.
pub const STORE_BUSY_TIMEOUT_MS_MAX: u64 = 600_000;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        self.validate_cluster()?;
        self.limits.validate()
    }

    /// `[cluster]`, checked only when `cluster.redis` makes this a node.
    /// (The URL itself is checked at start, by `cluster::check_url`.)
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if !cluster.enabled() {
            return Ok(());
        }
        if self.shards > CLUSTER_SHARDS_MAX {
            return Err(ConfigError::invalid(
                "shards",
                format!(
                    "{} shards (with shards = 0: one per CPU) is over the maximum of \
                     {CLUSTER_SHARDS_MAX} for a cluster node (cluster.redis is set)",
                    self.shards
                ),
            ));
        }
        if cluster.heartbeat_ms < CLUSTER_HEARTBEAT_MS_MIN {
            return Err(ConfigError::invalid(
                "cluster.heartbeat_ms",
                format!("{} is under the minimum of {CLUSTER_HEARTBEAT_MS_MIN}", cluster.heartbeat_ms),
            ));
        }
        if cluster.node_ttl_ms < cluster.heartbeat_ms.saturating_mul(2) {
            return Err(ConfigError::invalid(
                "cluster.node_ttl_ms",
                format!(
                    "{} is under twice cluster.heartbeat_ms ({}): a live node would be declared dead \
                     after one late heartbeat",
                    cluster.node_ttl_ms, cluster.heartbeat_ms
                ),
            ));
        }
        if cluster.key_prefix.is_empty() || cluster.key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "cluster.key_prefix",
                format!("{:?}: must be non-empty and without spaces", cluster.key_prefix),
            ));
        }
        if cluster.bridge_queue_max == 0 {
            return Err(ConfigError::invalid("cluster.bridge_queue_max", "must be greater than 0"));
        }
        Ok(())
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
        if self.rooms.history_filter_kib > HISTORY_FILTER_KIB_MAX {
            return Err(ConfigError::invalid("rooms.history_filter_kib", format!("at most {HISTORY_FILTER_KIB_MAX}")));
        }
        if !(0..=19).contains(&store.thread_nice) {
            return Err(ConfigError::invalid("store.thread_nice", "from 0 to 19"));
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Sources, Synchronous, TenantConfig};
    use super::*;
    use toml::Value;

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
    fn short_jwt_secret_refused() {
        assert_names(load_env(&[("ROOMCAST_JWT_SECRET", "short")]), "auth.jwt_secret");
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

    /// A config with `cluster.redis` set, and `extra` overrides.
    fn clustered(extra: &[(&str, Value)]) -> Result<Config, ConfigError> {
        let mut overrides = vec![("cluster.redis".to_string(), Value::String("redis://127.0.0.1:6379".into()))];
        overrides.extend(extra.iter().map(|(key, value)| (key.to_string(), value.clone())));
        Config::load(Sources { overrides, ..Sources::default() })
    }

    #[test]
    fn cluster_section_is_checked_only_in_a_cluster() {
        let config = clustered(&[("shards", int(4))]).unwrap();
        assert!(config.cluster.enabled());
        assert_eq!((config.cluster.heartbeat_ms, config.cluster.node_ttl_ms), (2000, 10_000));
        // Without cluster.redis nothing of [cluster] matters.
        let alone = Config::load(Sources {
            overrides: vec![
                ("shards".into(), int(300)),
                ("cluster.heartbeat_ms".into(), int(1)),
                ("cluster.key_prefix".into(), Value::String(String::new())),
                ("cluster.bridge_queue_max".into(), int(0)),
            ],
            ..Sources::default()
        });
        assert!(alone.is_ok(), "{alone:?}");

        assert!(clustered(&[("shards", int(255))]).is_ok());
        let err = assert_names(clustered(&[("shards", int(256))]), "shards");
        assert!(err.to_string().contains("255"), "{err}");
        assert!(clustered(&[("cluster.heartbeat_ms", int(100)), ("cluster.node_ttl_ms", int(200))]).is_ok());
        assert_names(clustered(&[("cluster.heartbeat_ms", int(99))]), "cluster.heartbeat_ms");
        let err = assert_names(
            clustered(&[("cluster.heartbeat_ms", int(1000)), ("cluster.node_ttl_ms", int(1999))]),
            "cluster.node_ttl_ms",
        );
        assert!(err.to_string().contains("cluster.heartbeat_ms"), "{err}");
        assert!(clustered(&[("cluster.heartbeat_ms", int(1000)), ("cluster.node_ttl_ms", int(3000))]).is_ok());
        for bad in ["", "room cast", "a\tb"] {
            assert_names(clustered(&[("cluster.key_prefix", Value::String(bad.into()))]), "cluster.key_prefix");
        }
        assert!(clustered(&[("cluster.key_prefix", Value::String("test:1".into()))]).is_ok());
        assert_names(clustered(&[("cluster.bridge_queue_max", int(0))]), "cluster.bridge_queue_max");
        assert!(clustered(&[("cluster.bridge_queue_max", int(1))]).is_ok());
    }
}
