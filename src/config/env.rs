//! The text layers: `ROOMCAST_*` environment variables and `--set KEY=VALUE`,
//! each value typed by its key's default in the schema.

use super::raw::{ENV_ALIAS_JWT_SECRET, ENV_ALIAS_REDIS, Layer, Merged, Schema};
use super::{ConfigError, ENV_PREFIX};

/// Parses `text` by the type of `key`'s default, as for an env variable
/// (integers, `true/false/1/0`, comma-separated lists, strings). Used by
/// `--set KEY=VALUE`; an unknown key is an error naming it.
pub fn parse_key_value(key: &str, text: &str) -> Result<toml::Value, ConfigError> {
    Schema::from_embedded()?.parse_text(&Layer::CommandLine, key, text)
}

/// Applies `ROOMCAST_*` variables. `ROOMCAST_JWT_SECRET` is an alias of
/// `ROOMCAST_AUTH_JWT_SECRET` and `ROOMCAST_REDIS` of
/// `ROOMCAST_CLUSTER_REDIS` (the full name wins when both are set);
/// any other `ROOMCAST_*` name that is not a key is an error.
pub(super) fn apply_env(schema: &Schema, merged: &mut Merged, env: &[(String, String)]) -> Result<(), ConfigError> {
    let ours = env.iter().filter(|(name, _)| name.starts_with(ENV_PREFIX));
    let (aliases, names): (Vec<_>, Vec<_>) = ours.partition(|(name, _)| alias_key(name).is_some());
    for (name, value) in aliases.into_iter().chain(names) {
        let key = match alias_key(name) {
            Some(key) => key,
            None => schema.key_for_env(name).ok_or_else(|| ConfigError::UnknownEnv { name: name.clone() })?,
        };
        let layer = Layer::Env(name.clone());
        let value = schema.parse_text(&layer, key, value)?;
        merged.set(schema, &layer, key, value)?;
    }
    Ok(())
}

/// The key a short env alias stands for.
fn alias_key(name: &str) -> Option<&'static str> {
    match name {
        ENV_ALIAS_JWT_SECRET => Some("auth.jwt_secret"),
        ENV_ALIAS_REDIS => Some("cluster.redis"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::env_name;
    use super::super::test_support::*;
    use super::super::{Config, DEFAULT_TOML, LogFormat, Sources};
    use super::*;
    use toml::Value;

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
    fn unknown_env_is_named() {
        let err = assert_names(
            load_env(&[("ROOMCAST_LIMITS_MESAGE_INBOUND_BYTES_MAX", "1")]),
            "ROOMCAST_LIMITS_MESAGE_INBOUND_BYTES_MAX",
        );
        assert!(matches!(err, ConfigError::UnknownEnv { .. }));
    }

    #[test]
    fn wrong_type_in_env_is_named() {
        let err = assert_names(load_env(&[("ROOMCAST_SHARDS", "many")]), "shards");
        assert!(err.to_string().contains("ROOMCAST_SHARDS"), "{err}");
        assert_names(load_env(&[("ROOMCAST_PIN", "yes")]), "pin");
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
            file: Some(path.clone()),
            env: env(&[("ROOMCAST_AUTH_ALLOW_ORIGINS", "")]),
            overrides: vec![],
        })
        .unwrap();
        let _ = std::fs::remove_file(path);
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
    fn parse_key_value_uses_the_default_type() {
        assert_eq!(parse_key_value("shards", "4").unwrap(), int(4));
        assert_eq!(parse_key_value("pin", "false").unwrap(), Value::Boolean(false));
        assert_eq!(parse_key_value("log_level", "debug").unwrap(), Value::String("debug".into()));
        assert!(matches!(parse_key_value("limits.nope", "1"), Err(ConfigError::UnknownKey { .. })));
        assert!(matches!(parse_key_value("shards", "x"), Err(ConfigError::BadValue { .. })));
    }
}
