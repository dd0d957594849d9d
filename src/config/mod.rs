//! roomcast's typed, validated configuration. Every key and its default live
//! in the embedded `default.toml`; `Config::load` lays the `--config` file,
//! `ROOMCAST_*` environment variables and command-line overrides over it (in
//! that order, weakest first), deserializes the result into the typed
//! sections and checks the relationships between limits once, at startup. Any
//! unknown key, ill-typed value or broken rule is a `ConfigError` naming the key.
//!
//! This file holds `Config`, its `Sources` and `load`; the parts live beside
//! it, one role each: `raw` (schema and layer merging), `env` (`ROOMCAST_*`
//! and `--set` values), `sections` and `limits` (the typed settings),
//! `validate` (the checks), `webhooks` and `error`. Every public item is
//! re-exported here, so callers name them as `config::…`.

mod env;
mod error;
mod limits;
mod raw;
mod sections;
#[cfg(test)]
mod test_support;
mod validate;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

use env::apply_env;
pub use env::parse_key_value;
pub use error::ConfigError;
pub use limits::{HANDSHAKE_HEAD_BYTES_MIN, Limits, OUTBOUND_GRACE_MS_MAX};
use raw::{Layer, Merged, RawConfig, Schema};
pub use sections::{
    ApiConfig, AuthConfig, AuthMode, ClusterConfig, HttpConfig, LogConfig, LogFormat, NetConfig, RoomsConfig,
    ShutdownConfig, StoreConfig, Synchronous, TenantConfig,
};
pub use validate::{
    API_KEY_BYTES_MIN, HISTORY_FILTER_KIB_MAX, JWT_SECRET_BYTES_MIN, LOG_LEVELS, PUBLIC_KEY_ALGS,
    RECOVERY_MESSAGES_MAX, REGISTRY_MAX_LIMIT, STORE_BUSY_TIMEOUT_MS_MAX,
};
pub use webhooks::{
    WEBHOOK_SECRET_BYTES_MIN, WEBHOOKS_MAX, WebhookConfig, WebhookEventKind, WebhookLimits, WebhookTarget,
};

/// The embedded defaults: every key, its default, and what it does.
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// Prefix of every environment variable roomcast reads.
pub const ENV_PREFIX: &str = "ROOMCAST_";
/// Upper bound on `shards` (and on the resolved shard count).
pub const SHARDS_MAX: usize = 1024;

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
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    /// `[[webhooks]]`: HTTP endpoints that get room events (empty = no webhook thread).
    pub webhooks: Vec<WebhookConfig>,
    pub webhook_limits: WebhookLimits,
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
            cluster: raw.cluster,
            log: raw.log,
            webhooks,
            webhook_limits: raw.webhook_limits,
        })
    }
}

fn read_file(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile { path: path.to_path_buf(), error })?;
    text.parse().map_err(|e: toml::de::Error| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use toml::Value;

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
            file: Some(path.clone()),
            env: env(&[("ROOMCAST_SHARDS", "5"), ("PATH", "/bin"), ("OTHER_SHARDS", "9")]),
            overrides: vec![],
        })
        .unwrap();
        let _ = std::fs::remove_file(path);
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
    fn empty_strings_are_none_and_shards_zero_resolves() {
        let config = load_env(&[("ROOMCAST_ECHO_LISTEN", "127.0.0.1:9001")]).unwrap();
        assert_eq!(config.echo_listen, Some("127.0.0.1:9001".parse().unwrap()));
        let config = load_set("shards", int(0)).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.shards, cores.min(SHARDS_MAX));
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
}
