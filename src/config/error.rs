//! `ConfigError`: why a configuration could not be loaded. Every layer and
//! every check of the configuration reports through it, naming the key.

use std::path::PathBuf;

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

    pub(super) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.to_string(), message: message.into() }
    }
}
