//! `[[webhooks]]` and `[webhook_limits]`: which HTTP endpoints get which room
//! events, and the bounds of the thread that posts them. The raw tables are
//! turned into [`WebhookConfig`]s here (URL parsed, event names checked,
//! secret length checked) so a mistake stops startup with the entry's index
//! and the key, long before an event would have gone nowhere.

use std::fmt;

use serde::Deserialize;

use super::ConfigError;

/// Most `[[webhooks]]` entries: each is a batch buffer and one blocking POST
/// at a time on the one webhook thread, so many slow endpoints would starve
/// each other.
pub const WEBHOOKS_MAX: usize = 16;
/// Shortest webhook `secret` accepted, in bytes.
pub const WEBHOOK_SECRET_BYTES_MIN: usize = 16;
/// Largest `webhook_limits.queue_max` (events held at once, per endpoint too).
pub const WEBHOOK_QUEUE_MAX_LIMIT: usize = 1_000_000;
/// Largest `webhook_limits.batch_max`.
pub const WEBHOOK_BATCH_MAX_LIMIT: usize = 10_000;
/// Largest `webhook_limits.timeout_ms` and per-webhook `timeout_ms`: the
/// webhook thread is blocked that long by an endpoint that never answers.
pub const WEBHOOK_TIMEOUT_MS_MAX: u64 = 60_000;
/// Largest `webhook_limits.backoff_max_ms` and `linger_ms`.
pub const WEBHOOK_DELAY_MS_MAX: u64 = 600_000;
/// Bounds of `webhook_limits.body_bytes_max`: room for a chat event at the
/// low end, far below anything a receiver would refuse at the high end.
pub const WEBHOOK_BODY_BYTES_MIN: usize = 16 * 1024;
pub const WEBHOOK_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A room event a webhook can subscribe to, by its name in `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEventKind {
    Connect,
    Disconnect,
    Join,
    Leave,
    Chat,
}

impl WebhookEventKind {
    pub const ALL: [WebhookEventKind; 5] = [
        WebhookEventKind::Connect,
        WebhookEventKind::Disconnect,
        WebhookEventKind::Join,
        WebhookEventKind::Leave,
        WebhookEventKind::Chat,
    ];

    /// The name in `events` and in the payload's `type`.
    pub fn name(self) -> &'static str {
        match self {
            WebhookEventKind::Connect => "connect",
            WebhookEventKind::Disconnect => "disconnect",
            WebhookEventKind::Join => "join",
            WebhookEventKind::Leave => "leave",
            WebhookEventKind::Chat => "chat",
        }
    }

    pub fn from_name(name: &str) -> Option<WebhookEventKind> {
        WebhookEventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Where a webhook posts: a plain `http://` URL taken apart once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// Host name or address as written (an IPv6 address without brackets);
    /// resolved at each connection, so a DNS change is followed.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl WebhookTarget {
    /// Parses `http://host[:port][/path][?query]`. `https://` is refused:
    /// roomcast carries no TLS client (see docs/webhooks.md for the relay
    /// to put in front of an https receiver).
    pub fn parse(url: &str) -> Result<WebhookTarget, String> {
        if url.len() >= 7 && url[..7].eq_ignore_ascii_case("https:/") {
            return Err("https:// is not supported: roomcast posts plain http:// only; \
                        relay through a local TLS proxy (see docs/webhooks.md)"
                .into());
        }
        let rest = match url.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &url[7..],
            _ => return Err(format!("`{url}` is not an http:// URL")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_string()),
            Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("user:password@ in a webhook URL is not supported; sign with `secret` instead".into());
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| format!("`{url}` has no valid host[:port]"))?;
        if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(format!("`{url}` has spaces or control characters in its path"));
        }
        Ok(WebhookTarget { host, port, path })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 80.
fn split_host_port(authority: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    let port = match port {
        None => 80,
        Some(text) => text.parse().ok().filter(|&port: &u16| port > 0)?,
    };
    valid_host.then(|| (host.to_string(), port))
}

/// One `[[webhooks]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: String,
    events: Vec<String>,
    secret: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// One validated `[[webhooks]]` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The URL as written (for logs).
    pub url: String,
    pub target: WebhookTarget,
    /// The events it receives, each once, in the order written.
    pub events: Vec<WebhookEventKind>,
    /// HMAC-SHA256 key of `X-Roomcast-Signature`.
    pub secret: String,
    /// Per-request bound (connect, write, read): its own or `webhook_limits.timeout_ms`.
    pub timeout_ms: u64,
}

// The secret stays out of debug output (a config dump in a log line).
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// `[webhook_limits]`: the bounds of the webhook thread, shared by every endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookLimits {
    /// Events waiting for the webhook thread, and events one endpoint holds
    /// unsent; past either an event is dropped and counted.
    pub queue_max: usize,
    /// Events in one POST at most.
    pub batch_max: usize,
    /// How long the first event of a batch waits for more before the POST.
    pub linger_ms: u64,
    /// Attempts after the first failed one before a batch is dropped.
    pub retries_max: u32,
    /// First retry delay; it doubles per attempt up to `backoff_max_ms`, with jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Per-request bound unless a webhook sets its own `timeout_ms`.
    pub timeout_ms: u64,
    /// Largest request body; a batch closes before passing it.
    pub body_bytes_max: usize,
}

impl WebhookLimits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| Err(ConfigError::invalid(&format!("webhook_limits.{key}"), message));
        if self.queue_max == 0 || self.queue_max > WEBHOOK_QUEUE_MAX_LIMIT {
            return bad("queue_max", format!("from 1 to {WEBHOOK_QUEUE_MAX_LIMIT}"));
        }
        if self.batch_max == 0 || self.batch_max > WEBHOOK_BATCH_MAX_LIMIT.min(self.queue_max) {
            return bad("batch_max", format!("from 1 to {WEBHOOK_BATCH_MAX_LIMIT}, and at most queue_max"));
        }
        if self.linger_ms > WEBHOOK_DELAY_MS_MAX {
            return bad("linger_ms", format!("at most {WEBHOOK_DELAY_MS_MAX}"));
        }
        if self.retries_max > 100 {
            return bad("retries_max", "at most 100".into());
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_max_ms {
            return bad("backoff_base_ms", "greater than 0 and at most backoff_max_ms".into());
        }
        if self.backoff_max_ms > WEBHOOK_DELAY_MS_MAX {
            return bad("backoff_max_ms", format!("at most {WEBHOOK_DELAY_MS_MAX}"));
        }
        check_timeout("webhook_limits.timeout_ms", self.timeout_ms)?;
        if !(WEBHOOK_BODY_BYTES_MIN..=WEBHOOK_BODY_BYTES_MAX).contains(&self.body_bytes_max) {
            return bad("body_bytes_max", format!("from {WEBHOOK_BODY_BYTES_MIN} to {WEBHOOK_BODY_BYTES_MAX}"));
        }
        Ok(())
    }
}

fn check_timeout(key: &str, timeout_ms: u64) -> Result<(), ConfigError> {
    if timeout_ms == 0 || timeout_ms > WEBHOOK_TIMEOUT_MS_MAX {
        return Err(ConfigError::invalid(key, format!("from 1 to {WEBHOOK_TIMEOUT_MS_MAX} (ms)")));
    }
    Ok(())
}

/// Validates every `[[webhooks]]` table; errors name `webhooks[i].key`.
pub(super) fn from_raw(raw: Vec<RawWebhook>, limits: &WebhookLimits) -> Result<Vec<WebhookConfig>, ConfigError> {
    if raw.len() > WEBHOOKS_MAX {
        return Err(ConfigError::invalid("webhooks", format!("{} entries; at most {WEBHOOKS_MAX}", raw.len())));
    }
    raw.into_iter().enumerate().map(|(i, raw)| one_from_raw(i, raw, limits)).collect()
}

fn one_from_raw(i: usize, raw: RawWebhook, limits: &WebhookLimits) -> Result<WebhookConfig, ConfigError> {
    let key = |name: &str| format!("webhooks[{i}].{name}");
    let target = WebhookTarget::parse(&raw.url).map_err(|message| ConfigError::invalid(&key("url"), message))?;
    if raw.events.is_empty() {
        return Err(ConfigError::invalid(&key("events"), "is empty; name at least one event"));
    }
    let mut events = Vec::with_capacity(raw.events.len());
    for name in &raw.events {
        let kind = WebhookEventKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = WebhookEventKind::ALL.iter().map(|kind| kind.name()).collect();
            ConfigError::invalid(&key("events"), format!("unknown event `{name}`; known: {}", known.join(", ")))
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    if raw.secret.len() < WEBHOOK_SECRET_BYTES_MIN {
        return Err(ConfigError::invalid(
            &key("secret"),
            format!("is {} bytes; at least {WEBHOOK_SECRET_BYTES_MIN} are needed", raw.secret.len()),
        ));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(limits.timeout_ms);
    check_timeout(&key("timeout_ms"), timeout_ms)?;
    Ok(WebhookConfig { url: raw.url, target, events, secret: raw.secret, timeout_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_taken_apart() {
        let parse = |url: &str| WebhookTarget::parse(url);
        let target = |host: &str, port, path: &str| Ok(WebhookTarget { host: host.into(), port, path: path.into() });
        assert_eq!(parse("http://example.com"), target("example.com", 80, "/"));
        assert_eq!(parse("http://127.0.0.1:9000/hooks?x=1"), target("127.0.0.1", 9000, "/hooks?x=1"));
        assert_eq!(parse("HTTP://h:1?q"), target("h", 1, "/?q"));
        assert_eq!(parse("http://[::1]:81/a"), target("::1", 81, "/a"));
        for bad in ["https://example.com/", "ftp://x", "http://", "http://h:0/", "http://h:99999", "http://u:p@h/"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("https://example.com/").unwrap_err().contains("https"));
    }
}
