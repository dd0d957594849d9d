//! `POST /api/v1/tokens`: a tenant mints a token for one of its users.

use serde_json::{Value, json};

use crate::auth::{MintRequest, mint_hs256};
use crate::metrics::LimitKind;

use super::request::{optional_str, parse_object, required_str};
use super::{ApiError, Context, Outcome, json_ok};

/// Lifetime of a minted token when the request gives no `ttl`.
const TOKEN_TTL_DEFAULT_S: u64 = 3600;

pub(super) fn mint(ctx: &Context<'_>, body: &[u8]) -> Result<Outcome, ApiError> {
    let doc = parse_object(body)?;
    let user = required_str(&doc, "user")?;
    let room = match doc.get("room") {
        None | Some(Value::Null) => None,
        Some(Value::String(room)) if crate::auth::RoomScope::parse(room).is_some() => Some(room.clone()),
        Some(_) => return Err(ApiError::bad_field("room", "a room id, or a prefix ending in *")),
    };
    let name = optional_str(&doc, "name")?;
    let ttl_max = ctx.config.api.token_ttl_max_s;
    let ttl = match doc.get("ttl") {
        None | Some(Value::Null) => TOKEN_TTL_DEFAULT_S.min(ttl_max),
        // JSON Schema's "integer" includes 600.0.
        Some(value) => match value.as_u64().or_else(|| {
            value.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f < u64::MAX as f64).map(|f| f as u64)
        }) {
            Some(ttl) if ttl > 0 => {
                if ttl > ttl_max {
                    ctx.limit_hit.set(Some(LimitKind::TokenTtlCapped));
                }
                ttl.min(ttl_max)
            }
            _ => return Err(ApiError::bad_field("ttl", "seconds, an integer greater than 0")),
        },
    };
    let host = match optional_str(&doc, "role")?.as_deref() {
        None | Some("member") => false,
        Some("host") => true,
        Some(_) => return Err(ApiError::bad_field("role", "\"host\" or \"member\"")),
    };
    let perms = match doc.get("perms") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_string).collect::<Vec<_>>())
        }
        Some(_) => return Err(ApiError::bad_field("perms", "a list of strings")),
    };
    let once = match doc.get("once") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(once)) => *once,
        Some(_) => return Err(ApiError::bad_field("once", "a boolean")),
    };
    // Every minted token gets a jti, so that it can be revoked.
    let jti = crate::auth::random_jti();
    let Some(secret) = ctx.mint_secret else {
        return Err(ApiError::new(501, "not_implemented", "token minting needs auth.mode = jwt"));
    };
    let request = MintRequest {
        sub: &user,
        name: name.as_deref(),
        room: room.as_deref(),
        ttl_s: ttl,
        host,
        tenant: ctx.tenant.as_deref().filter(|t| !t.is_empty()),
        aud: ctx.config.auth.audience.as_deref(),
        iss: ctx.config.auth.issuer.as_deref(),
        perms: perms.as_deref(),
        jti: Some(&jti),
        once,
        ..MintRequest::default()
    };
    let token =
        mint_hs256(secret, &request, ctx.now_unix_s).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    Ok(json_ok(200, &json!({ "token": token, "expires_at": ctx.now_unix_s + ttl, "jti": jti })))
}
