//! The `roomcast` binary: `serve` runs the server, `token` mints a token.
//! It uses only the library's public API (`Server::builder`, `config`, `cli`, `token`).
//! Errors become a message on stderr and exit code 1.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use roomcast::Server;
use roomcast::cli::{self, Command, ServeArgs, TokenArgs};
use roomcast::config::{Config, LogFormat, Sources};
use roomcast::token::{self, MintRequest};

fn main() -> ExitCode {
    let result = match cli::parse() {
        Command::Serve(args) => serve(&args),
        Command::Token(args) => mint(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`: the library's server with the built-in handlers only, until SIGTERM or SIGINT.
fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(Sources::from_process_env(args.config.clone(), cli::serve_overrides(args)))?;
    init_logging(&config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    Server::builder().config(config).run()
}

fn mint(args: &TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(Sources::from_process_env(args.config.clone(), cli::token_overrides(args)))?;
    let secret = token_secret(&config)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let jti = args.once.then(token::random_jti);
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
    let minted = token::mint_hs256(&secret, &request, now).context("mint token")?;
    println!("{minted}");
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
    let path = token::secret_path(&config.data_dir);
    match token::read_secret(&config.data_dir) {
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
