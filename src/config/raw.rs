//! The untyped half of configuration: the key schema taken from the embedded
//! `default.toml`, the layers (defaults ← file ← `ROOMCAST_*` env ← command
//! line) merged as `toml::Table`s with every key and value kind checked against
//! the schema, and the serde shape (`RawConfig`) the merged table deserializes
//! into. No validation of meaning happens here; `super` does that once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::{Table, Value};

use super::{
    ApiConfig, ClusterConfig, ConfigError, ENV_PREFIX, HttpConfig, Limits, LogConfig, LogFormat, NetConfig,
    RoomsConfig, ShutdownConfig, StoreConfig, TenantConfig,
};

/// String keys with no default: written commented out in `default.toml`
/// (so that file, pasted as a config file, loads), and known to the schema
/// from this list. Unset, each deserializes as "" (= unset).
pub(super) const UNSET_STRING_KEYS: &[&str] = &["auth.jwt_secret"];

/// Env alias for `auth.jwt_secret`, the one setting people pass most.
pub(super) const ENV_ALIAS_JWT_SECRET: &str = "ROOMCAST_JWT_SECRET";
/// Env alias for `cluster.redis` (the issue and the README spell it so).
pub(super) const ENV_ALIAS_REDIS: &str = "ROOMCAST_REDIS";

/// The merged table deserializes into this; strings stay strings here
/// (empty = unset) and become `Option`s in `Config::from_raw`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: SocketAddr,
    pub shards: u32,
    pub pin: bool,
    pub data_dir: PathBuf,
    pub echo_listen: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub admin_key: String,
    pub admin_listen: String,
    pub tenants: Vec<TenantConfig>,
    pub auth: RawAuth,
    pub net: NetConfig,
    pub limits: Limits,
    pub api: ApiConfig,
    pub http: HttpConfig,
    pub rooms: RoomsConfig,
    pub store: StoreConfig,
    pub shutdown: ShutdownConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub webhooks: Vec<super::webhooks::RawWebhook>,
    pub webhook_limits: super::WebhookLimits,
}

/// `[auth]` as written; see `AuthConfig` for the typed form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub mode: super::AuthMode,
    #[serde(default)]
    pub jwt_secret: String,
    pub public_key_file: String,
    pub public_key_alg: String,
    pub jwks_file: String,
    pub audience: String,
    pub issuer: String,
    pub leeway_s: u64,
    pub token_bytes_max: usize,
    pub allow_origins: Vec<String>,
}

/// Where a value came from, so an error can say which layer to fix.
#[derive(Debug, Clone)]
pub(super) enum Layer {
    Defaults,
    File(PathBuf),
    Env(String),
    CommandLine,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Defaults => f.write_str("built-in defaults"),
            Layer::File(path) => write!(f, "config file {}", path.display()),
            Layer::Env(name) => write!(f, "environment variable {name}"),
            Layer::CommandLine => f.write_str("command line"),
        }
    }
}

/// Every key path with its default value (the value's kind is the key's
/// type), every section, and the env name of every key.
pub(super) struct Schema {
    pub defaults: Table,
    leaves: BTreeMap<String, Value>,
    sections: BTreeSet<String>,
    env_names: BTreeMap<String, String>,
}

impl Schema {
    pub fn from_embedded() -> Result<Schema, ConfigError> {
        let defaults: Table =
            super::DEFAULT_TOML.parse().map_err(|e: toml::de::Error| ConfigError::Defaults(e.to_string()))?;
        let mut schema = Schema {
            defaults: Table::new(),
            leaves: BTreeMap::new(),
            sections: BTreeSet::new(),
            env_names: BTreeMap::new(),
        };
        schema.collect("", &defaults);
        for key in UNSET_STRING_KEYS {
            schema.env_names.insert(env_name(key), key.to_string());
            schema.leaves.insert(key.to_string(), Value::String(String::new()));
        }
        schema.defaults = defaults;
        Ok(schema)
    }

    fn collect(&mut self, prefix: &str, table: &Table) {
        for (name, value) in table {
            let path = join(prefix, name);
            if let Value::Table(inner) = value {
                self.sections.insert(path.clone());
                self.collect(&path, inner);
            } else {
                self.env_names.insert(env_name(&path), path.clone());
                self.leaves.insert(path, value.clone());
            }
        }
    }

    /// The key path an env variable (`ROOMCAST_…`) sets, if any.
    pub fn key_for_env(&self, name: &str) -> Option<&str> {
        self.env_names.get(name).map(String::as_str)
    }

    /// Checks that `key` exists and `value` has the kind of its default.
    pub fn check(&self, layer: &Layer, key: &str, value: &Value) -> Result<(), ConfigError> {
        let Some(default) = self.leaves.get(key) else {
            return Err(ConfigError::UnknownKey { layer: layer.to_string(), key: key.to_string() });
        };
        let fits = match (default, value) {
            // `[[tenants]]` is the one list of tables; its items are checked when deserialized.
            (Value::Array(_), Value::Array(items)) if key == "tenants" => {
                items.iter().all(|item| item.is_str() || item.is_table())
            }
            // `[[webhooks]]` is tables only: a URL alone would lack its secret.
            (Value::Array(_), Value::Array(items)) if key == "webhooks" => items.iter().all(Value::is_table),
            (Value::Array(_), Value::Array(items)) => items.iter().all(Value::is_str),
            (d, v) => d.same_type(v),
        };
        if fits {
            Ok(())
        } else {
            Err(ConfigError::WrongType {
                layer: layer.to_string(),
                key: key.to_string(),
                expected: if key == "webhooks" { "a list of [[webhooks]] tables" } else { kind(default) },
                found: value.to_string(),
            })
        }
    }

    /// Parses command-line or env text by the type of `key`'s default:
    /// integers, booleans (`true/false/1/0`), comma-separated string lists,
    /// and strings as they are.
    pub fn parse_text(&self, layer: &Layer, key: &str, text: &str) -> Result<Value, ConfigError> {
        let Some(default) = self.leaves.get(key) else {
            return Err(ConfigError::UnknownKey { layer: layer.to_string(), key: key.to_string() });
        };
        let bad = |expected: &str| ConfigError::BadValue {
            layer: layer.to_string(),
            key: key.to_string(),
            message: format!("expected {expected}, got `{text}`"),
        };
        let trimmed = text.trim();
        match default {
            Value::Integer(_) => trimmed.parse().map(Value::Integer).map_err(|_| bad("an integer")),
            Value::Float(_) => trimmed.parse().map(Value::Float).map_err(|_| bad("a number")),
            Value::Boolean(_) => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Value::Boolean(true)),
                "false" | "0" => Ok(Value::Boolean(false)),
                _ => Err(bad("true, false, 1 or 0")),
            },
            Value::Array(_) => Ok(Value::Array(
                trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_string()))
                    .collect(),
            )),
            Value::String(_) => Ok(Value::String(text.to_string())),
            Value::Datetime(_) | Value::Table(_) => Err(bad("a value this key cannot take from text")),
        }
    }
}

/// The merged configuration table and, per key, the layer that set it last.
pub(super) struct Merged {
    pub table: Table,
    pub origin: BTreeMap<String, Layer>,
}

impl Merged {
    pub fn new(schema: &Schema) -> Merged {
        Merged { table: schema.defaults.clone(), origin: BTreeMap::new() }
    }

    /// Lays a nested table (a config file) over the current one.
    pub fn apply_table(
        &mut self,
        schema: &Schema,
        layer: &Layer,
        prefix: &str,
        table: Table,
    ) -> Result<(), ConfigError> {
        for (name, value) in table {
            let path = join(prefix, &name);
            match value {
                Value::Table(inner) if schema.sections.contains(&path) => {
                    self.apply_table(schema, layer, &path, inner)?;
                }
                value if schema.sections.contains(&path) => {
                    return Err(ConfigError::WrongType {
                        layer: layer.to_string(),
                        key: path,
                        expected: "a table",
                        found: value.to_string(),
                    });
                }
                value => self.set(schema, layer, &path, value)?,
            }
        }
        Ok(())
    }

    /// Sets one key path after checking it against the schema.
    pub fn set(&mut self, schema: &Schema, layer: &Layer, key: &str, value: Value) -> Result<(), ConfigError> {
        schema.check(layer, key, &value)?;
        let mut table = &mut self.table;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                table.insert(part.to_string(), value);
                break;
            }
            let entry = table.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
            let Value::Table(inner) = entry else {
                return Err(ConfigError::Defaults(format!("{key}: section is not a table")));
            };
            table = inner;
        }
        self.origin.insert(key.to_string(), layer.clone());
        Ok(())
    }

    /// Deserializes the merged table; a failure names the key and the layer
    /// that gave it its value.
    pub fn into_raw(self) -> Result<RawConfig, ConfigError> {
        let Merged { table, origin } = self;
        table.try_into::<RawConfig>().map_err(|e| {
            let text = e.to_string();
            // toml reports "<message>\nin `a.b`\n" for values under a key.
            let (message, key) = match text.rsplit_once("\nin `") {
                Some((message, rest)) => (message.trim(), rest.trim().trim_end_matches('`')),
                None => (text.trim(), ""),
            };
            let layer = origin.get(key).cloned().unwrap_or(Layer::Defaults);
            ConfigError::BadValue { layer: layer.to_string(), key: key.to_string(), message: message.to_string() }
        })
    }
}

/// `limits.message_inbound_bytes_max` → `ROOMCAST_LIMITS_MESSAGE_INBOUND_BYTES_MAX`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "a list of strings",
        Value::Table(_) => "a table",
    }
}
