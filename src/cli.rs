//! The `roomcast` command line (clap derive): `serve` and `token`. Flags only
//! parse here; `serve_overrides` / `token_overrides` turn the given ones into
//! key-path overrides, the strongest layer of `config::Config::load`
//! (defaults ← file ← `ROOMCAST_*` env ← flags). Environment variables are
//! read by the config layer, never by clap, so that order holds.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use toml::Value;

/// `roomcast serve --help` ends with every key, its env name rule and default.
const SERVE_LONG_HELP: &str = concat!(
    "Configuration keys (each also settable as ROOMCAST_<KEY PATH> in the environment, \
     or with --set KEY=VALUE), with their defaults:\n\n",
    include_str!("config/default.toml"),
);

#[derive(Debug, Parser)]
#[command(name = "roomcast", version, about = "A sharded WebSocket room server.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint a token signed with the configured key, for trying things out.
    Token(TokenArgs),
}

/// `roomcast serve`. Each flag, when given, overrides its key in every other
/// layer (see `serve_overrides`).
#[derive(Debug, Clone, Default, Args)]
#[command(after_long_help = SERVE_LONG_HELP)]
pub struct ServeArgs {
    /// TOML config file, over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listener address (listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Shard threads, 0 = one per core (shards).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Pin each shard thread to a core (pin = true).
    #[arg(long, overrides_with = "no_pin")]
    pub pin: bool,
    /// Do not pin shard threads (pin = false).
    #[arg(long, overrides_with = "pin")]
    pub no_pin: bool,
    /// HS256 secret, at least 32 bytes (auth.jwt_secret).
    #[arg(long, value_name = "S")]
    pub jwt_secret: Option<String>,
    /// Directory for roomcast's files, the store's roomcast.db among them (data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// jwt, or none for loopback-only dev mode (auth.mode).
    #[arg(long, value_name = "MODE", value_parser = ["jwt", "none"])]
    pub auth_mode: Option<String>,
    /// Allowed Origin; repeat for several. Replaces auth.allow_origins.
    #[arg(long = "allow-origin", value_name = "URL")]
    pub allow_origins: Vec<String>,
    /// Echo listener address, "" = off (echo_listen).
    #[arg(long, value_name = "ADDR")]
    pub echo_listen: Option<String>,
    /// error, warn, info, debug or trace (log_level).
    #[arg(long, value_name = "L")]
    pub log_level: Option<String>,
    /// text (for people) or json (one object a line, for collectors) (log_format).
    #[arg(long, value_name = "F", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// New rooms start with a lobby (rooms.lobby = true).
    #[arg(long)]
    pub lobby: bool,
    /// Run without persistence: chat history in memory only (store.enabled = false).
    #[arg(long)]
    pub no_store: bool,
    /// Bearer key of the admin HTTP API, at least 16 bytes (admin_key).
    #[arg(long, value_name = "K")]
    pub admin_key: Option<String>,
    /// Separate address for the admin API and /metrics, "" = off (admin_listen).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Join a cluster through this Redis, e.g. redis://127.0.0.1:6379 or
    /// unix:///run/redis.sock (cluster.redis).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// This node's name in the cluster (cluster.node_id; default generated).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Set any key, e.g. --set limits.room_members_max=500; repeatable,
    /// applied after the flags above, later ones win.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, Value)>,
}

/// `roomcast token`: parsed here, minted elsewhere.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// TOML config file, for the key to sign with.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's data directory, whose jwt-secret to sign with (data_dir).
    /// The secret is only read, never created: without one, `token` fails.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HS256 secret to sign with, instead of the configured one.
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// User id (`sub`).
    #[arg(long, value_name = "USER")]
    pub sub: String,
    /// Restrict the token to this room.
    #[arg(long, value_name = "R")]
    pub room: Option<String>,
    /// Display name.
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub ttl: u64,
    /// Role in the room.
    #[arg(long, value_name = "ROLE", value_parser = ["host"])]
    pub role: Option<String>,
    /// Tenant id.
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// Groups, comma-separated.
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Audience (`aud`).
    #[arg(long, value_name = "A")]
    pub aud: Option<String>,
    /// Issuer (`iss`).
    #[arg(long, value_name = "I")]
    pub iss: Option<String>,
    /// Permissions (`perms`), comma-separated, of publish, join, direct,
    /// chat, signal; without the flag the token may do everything.
    #[arg(long, value_name = "p,q", value_delimiter = ',')]
    pub perms: Option<Vec<String>>,
    /// Single-use token (`"use": "once"` with a random `jti`): accepted for one handshake.
    #[arg(long)]
    pub once: bool,
}

/// Parses the process arguments; prints help or an error and exits on failure.
pub fn parse() -> Command {
    Cli::parse().command
}

/// Parses the given arguments (the first is the program name).
pub fn try_parse_from<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map(|cli| cli.command)
}

/// The `serve` flags that were given, as key-path overrides in order: named
/// flags first, then each `--set`.
pub fn serve_overrides(args: &ServeArgs) -> Vec<(String, Value)> {
    let mut overrides = Vec::new();
    let mut put = |key: &str, value: Value| overrides.push((key.to_string(), value));
    if let Some(listen) = args.listen {
        put("listen", Value::String(listen.to_string()));
    }
    if let Some(shards) = args.shards {
        put("shards", Value::Integer(shards.into()));
    }
    if args.pin {
        put("pin", Value::Boolean(true));
    }
    if args.no_pin {
        put("pin", Value::Boolean(false));
    }
    if let Some(secret) = &args.jwt_secret {
        put("auth.jwt_secret", Value::String(secret.clone()));
    }
    if let Some(dir) = &args.data_dir {
        put("data_dir", path_value(dir));
    }
    if let Some(mode) = &args.auth_mode {
        put("auth.mode", Value::String(mode.clone()));
    }
    if !args.allow_origins.is_empty() {
        let origins = args.allow_origins.iter().cloned().map(Value::String).collect();
        put("auth.allow_origins", Value::Array(origins));
    }
    if let Some(echo) = &args.echo_listen {
        put("echo_listen", Value::String(echo.clone()));
    }
    if args.lobby {
        put("rooms.lobby", Value::Boolean(true));
    }
    if args.no_store {
        put("store.enabled", Value::Boolean(false));
    }
    if let Some(level) = &args.log_level {
        put("log_level", Value::String(level.clone()));
    }
    if let Some(format) = &args.log_format {
        put("log_format", Value::String(format.clone()));
    }
    if let Some(key) = &args.admin_key {
        put("admin_key", Value::String(key.clone()));
    }
    if let Some(admin) = &args.admin_listen {
        put("admin_listen", Value::String(admin.clone()));
    }
    if let Some(redis) = &args.redis {
        put("cluster.redis", Value::String(redis.clone()));
    }
    if let Some(node_id) = &args.node_id {
        put("cluster.node_id", Value::String(node_id.clone()));
    }
    overrides.extend(args.set.iter().cloned());
    overrides
}

/// The `token` flags that are configuration (`--data-dir`, and `--secret` as
/// `auth.jwt_secret`), as key-path overrides.
pub fn token_overrides(args: &TokenArgs) -> Vec<(String, Value)> {
    let mut overrides = Vec::new();
    if let Some(dir) = &args.data_dir {
        overrides.push(("data_dir".to_string(), path_value(dir)));
    }
    if let Some(secret) = &args.secret {
        overrides.push(("auth.jwt_secret".to_string(), Value::String(secret.clone())));
    }
    overrides
}

fn path_value(path: &std::path::Path) -> Value {
    Value::String(path.to_string_lossy().into_owned())
}

/// `KEY=VALUE` → (key, value typed like the key's default).
fn parse_set(text: &str) -> Result<(String, Value), String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| format!("`{text}` is not KEY=VALUE (e.g. limits.rate_burst=200)"))?;
    let key = key.trim();
    let value = crate::config::parse_key_value(key, value).map_err(|e| e.to_string())?;
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["roomcast", "serve"].iter().chain(args);
        match try_parse_from(argv).unwrap() {
            Command::Serve(serve) => serve,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    fn token(args: &[&str]) -> Result<TokenArgs, clap::Error> {
        let argv = ["roomcast", "token"].iter().chain(args);
        try_parse_from(argv).map(|command| match command {
            Command::Token(token) => token,
            other => panic!("expected token, got {other:?}"),
        })
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_no_overrides() {
        assert!(serve_overrides(&serve(&[])).is_empty());
    }

    #[test]
    fn serve_flags_become_overrides() {
        let args = serve(&[
            "--config",
            "r.toml",
            "--listen",
            "0.0.0.0:9000",
            "--shards",
            "4",
            "--no-pin",
            "--jwt-secret",
            "s",
            "--data-dir",
            "/tmp/d",
            "--auth-mode",
            "none",
            "--allow-origin",
            "https://a",
            "--allow-origin",
            "https://b",
            "--echo-listen",
            "",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--set",
            "limits.rate_burst=7",
            "--set",
            "shards=2",
        ]);
        assert_eq!(args.config, Some(PathBuf::from("r.toml")));
        let s = |v: &str| Value::String(v.into());
        let expected: Vec<(String, Value)> = vec![
            ("listen".into(), s("0.0.0.0:9000")),
            ("shards".into(), Value::Integer(4)),
            ("pin".into(), Value::Boolean(false)),
            ("auth.jwt_secret".into(), s("s")),
            ("data_dir".into(), s("/tmp/d")),
            ("auth.mode".into(), s("none")),
            ("auth.allow_origins".into(), Value::Array(vec![s("https://a"), s("https://b")])),
            ("echo_listen".into(), s("")),
            ("log_level".into(), s("debug")),
            ("log_format".into(), s("json")),
            ("limits.rate_burst".into(), Value::Integer(7)),
            ("shards".into(), Value::Integer(2)),
        ];
        assert_eq!(serve_overrides(&args), expected);
    }

    #[test]
    fn no_store_turns_the_store_off() {
        assert_eq!(serve_overrides(&serve(&["--no-store"])), vec![("store.enabled".into(), Value::Boolean(false))]);
    }

    #[test]
    fn last_of_pin_and_no_pin_wins() {
        let pin = |args: &[&str]| serve_overrides(&serve(args));
        assert_eq!(pin(&["--no-pin", "--pin"]), vec![("pin".into(), Value::Boolean(true))]);
        assert_eq!(pin(&["--pin", "--no-pin"]), vec![("pin".into(), Value::Boolean(false))]);
    }

    #[test]
    fn set_checks_key_and_type() {
        let argv = |set: &str| try_parse_from(["roomcast", "serve", "--set", set]);
        assert!(argv("limits.nope=1").unwrap_err().to_string().contains("limits.nope"));
        assert!(argv("shards=many").unwrap_err().to_string().contains("shards"));
        assert!(argv("shards").is_err());
        assert!(argv("auth.allow_origins=https://a,https://b").is_ok());
    }

    #[test]
    fn bad_flag_values_are_refused() {
        assert!(try_parse_from(["roomcast", "serve", "--auth-mode", "open"]).is_err());
        assert!(try_parse_from(["roomcast", "serve", "--listen", "nowhere"]).is_err());
        assert!(try_parse_from(["roomcast", "serve", "--shards", "-1"]).is_err());
        assert!(try_parse_from(["roomcast", "serve", "--log-format", "yaml"]).is_err());
    }

    #[test]
    fn serve_help_lists_every_key() {
        let mut command = Cli::command();
        let serve = command.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        assert!(help.contains("Configuration keys"), "{help}");
        assert!(help.contains("message_inbound_bytes_max = 32768"));
        assert!(help.contains("drain_timeout_ms = 10000"));
    }

    #[test]
    fn token_flags() {
        let args = token(&[
            "--sub",
            "alice",
            "--room",
            "demo",
            "--role",
            "host",
            "--groups",
            "a,b",
            "--aud",
            "x",
            "--iss",
            "y",
            "--tenant",
            "t",
            "--name",
            "Alice",
            "--data-dir",
            "d",
            "--secret",
            "s",
        ])
        .unwrap();
        assert_eq!(args.sub, "alice");
        assert_eq!(args.room.as_deref(), Some("demo"));
        assert_eq!(args.ttl, 3600);
        assert_eq!(args.groups, vec!["a", "b"]);
        assert_eq!(args.role.as_deref(), Some("host"));
        assert_eq!(token_overrides(&args).len(), 2);
        assert_eq!(token(&["--sub", "bob", "--ttl", "60"]).unwrap().ttl, 60);
        assert_eq!(args.perms, None);
        let perms = token(&["--sub", "bob", "--perms", "publish,join"]).unwrap().perms;
        assert_eq!(perms, Some(vec!["publish".to_string(), "join".to_string()]));
    }

    #[test]
    fn token_needs_sub() {
        assert!(token(&["--room", "demo"]).is_err());
        assert!(token(&["--sub", "a", "--role", "owner"]).is_err());
    }
}
