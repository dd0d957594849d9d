//! Helpers the config unit tests share: load a `Config` from one layer and
//! assert that an error names its key.

use std::path::PathBuf;

use toml::Value;

use super::{Config, ConfigError, Sources};

pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// Writes `text` to a per-test file under the temp dir.
pub(super) fn file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("roomcast-config-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

pub(super) fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(Sources { env: env(pairs), ..Sources::default() })
}

pub(super) fn load_set(key: &str, value: Value) -> Result<Config, ConfigError> {
    Config::load(Sources { overrides: vec![(key.to_string(), value)], ..Sources::default() })
}

pub(super) fn load_file(name: &str, text: &str) -> Result<Config, ConfigError> {
    let path = file(name, text);
    let loaded = Config::load(Sources { file: Some(path.clone()), ..Sources::default() });
    let _ = std::fs::remove_file(path);
    loaded
}

/// Asserts an error that names `key` in both its key and its message.
pub(super) fn assert_names(result: Result<Config, ConfigError>, key: &str) -> ConfigError {
    let err = result.expect_err("expected a configuration error");
    assert_eq!(err.key(), Some(key), "{err}");
    assert!(err.to_string().contains(key), "`{err}` does not name {key}");
    err
}

pub(super) fn int(n: i64) -> Value {
    Value::Integer(n)
}
