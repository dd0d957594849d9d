//! The `roomcast` binary: `serve` runs the server, `token` mints a token.
//! Errors become a message on stderr and exit code 1.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use roomcast::auth::{self, MintRequest};
use roomcast::cli::{self, Command, ServeArgs, TokenArgs};
use roomcast::config::{Config, LogFormat, Sources};
use roomcast::server::Server;

fn main() -> ExitCode {
    let result = match cli::parse() {
        Command::Serve(args) => serve(&args),
        Command::Token(args) => token(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(Sources::from_process_env(args.config.clone(), cli::serve_overrides(args)))?;
    init_logging(&config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let drain = Duration::from_millis(config.shutdown.drain_timeout_ms);
    let (shards, auth_mode) = (config.shards, config.auth.mode);
    // Installed before "listening" is logged, so a SIGTERM right after it
    // (tests, supervisors) drains instead of killing the process.
    let signals = stop_signals()?;
    let server = Server::start(config)?;
    tracing::info!(addr = %server.local_addr(), shards, auth = auth_mode.as_str(), "roomcast listening");
    if let Some(echo) = server.echo_addr() {
        tracing::info!(addr = %echo, "echo listener (no auth) open");
    }
    wait_for_stop_signal(signals);
    tracing::info!(drain_ms = drain.as_millis() as u64, "stop signal: draining");
    server.shutdown(drain);
    tracing::info!("stopped");
    Ok(())
}

/// Blocks until SIGTERM or SIGINT.
fn stop_signals() -> anyhow::Result<signal_hook::iterator::Signals> {
    signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .context("install signal handlers")
}

fn wait_for_stop_signal(mut signals: signal_hook::iterator::Signals) {
    let _ = signals.forever().next();
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(Sources::from_process_env(args.config.clone(), cli::token_overrides(args)))?;
    let secret = token_secret(&config)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let jti = args.once.then(auth::random_jti);
    let request = MintRequest {
        sub: &args.sub,
        name: args.name.as_deref(),
        room: args.room.as_deref(),
        ttl_s: args.ttl,
        host: args.role.as_deref() == Some("host"),
        tenant: args.tenant.as_deref(),
        groups: &args.groups,
        aud: args.aud.as_deref(),
        iss: args.iss.as_deref(),
        jti: jti.as_deref(),
        perms: args.perms.as_deref(),
        once: args.once,
    };
    let token = auth::mint_hs256(&secret, &request, now).context("mint token")?;
    println!("{token}");
    Ok(())
}

/// The secret `token` signs with: `auth.jwt_secret` (`--secret`, config,
/// env), else the server's `<data_dir>/jwt-secret`. Never created here: a
/// secret made up in the wrong directory would sign tokens the server
/// refuses (`401 token_bad_signature`).
fn token_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = auth::secret_path(&config.data_dir);
    match auth::read_secret(&config.data_dir) {
        Ok(secret) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no JWT secret at {}: `roomcast token` only reads the server's secret and never creates one. \
             Point it at the server's with --data-dir DIR (the server's data_dir), --config FILE \
             (the server's config), ROOMCAST_DATA_DIR, or give the secret itself with --secret",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("JWT secret in {}", path.display())),
    }
}

fn init_logging(config: &Config) {
    // `Config::load` checked the level, so this parse does not fail; were it
    // to, logging everything at info beats logging nothing.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
