//! The HTTP API beside the WebSocket, served by the acceptor: routing, key
//! checks, request parsing and response bodies. Nothing here does I/O or
//! blocks; requests that need shard data come out as an [`Outcome::Scatter`]
//! that the acceptor sends to the shards, and [`finish`] turns the gathered
//! replies into the response.
//!
//! Every error is a JSON body `{"error":CODE,"message":TEXT}`: 404 unknown
//! path, 405 wrong method (with `Allow`), 400 malformed input naming the
//! field, 401 bad or missing key (one body for unknown and wrong keys), 411
//! no `Content-Length`, 413 body over `api.body_bytes_max`, 503 draining,
//! busy or a shard that did not answer in time. The OpenAPI 3.1 document of
//! all of it is `src/openapi.json`, served at `GET /api/v1/openapi.json`.

use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::auth::{MintRequest, mint_hs256};
use crate::config::Config;
use crate::http::{self, RequestHead};
use crate::ids::{self, ConnId, RoomKey, ShardId};
use crate::metrics::{self, AcceptorMetrics, Gauges, ShardMetrics};
use crate::shard::{AdminAnswer, AdminQuery, ConnInfo, SendTarget};
use crate::ws::frame::{self, Opcode};

/// The OpenAPI document, served as is.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
/// Entries of a listing when `limit` is not given, and the most it may ask.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;
/// Lifetime of a minted token when the request gives no `ttl`.
const TOKEN_TTL_DEFAULT_S: u64 = 3600;

/// Every endpoint of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Stats,
    Tokens,
    Send,
    Kick,
    Drain,
    LiveRooms,
    LiveRoom(String),
    CloseRoom(String),
    LiveConnections,
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// A tenant's `api_key` as `Authorization: Bearer`.
    Tenant,
    /// `admin_key` as `Authorization: Bearer`.
    Admin,
}

impl Endpoint {
    pub fn access(&self) -> Access {
        match self {
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics | Endpoint::OpenApi => Access::Public,
            Endpoint::Tokens => Access::Tenant,
            _ => Access::Admin,
        }
    }

    /// Served only on `admin_listen` when one is configured.
    pub fn admin_surface(&self) -> bool {
        matches!(self, Endpoint::Metrics | Endpoint::Stats) || self.access() == Access::Admin
    }

    /// Whether the request carries a JSON body the handler reads.
    pub fn takes_body(&self) -> bool {
        matches!(self, Endpoint::Tokens | Endpoint::Send | Endpoint::Kick | Endpoint::Drain)
    }
}

/// A refusal, as status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub extra_headers: &'static str,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra_headers: "" }
    }

    fn bad_field(field: &str, problem: &str) -> ApiError {
        ApiError::new(400, "bad_request", format!("{field}: {problem}"))
    }

    fn method(allow: &'static str) -> ApiError {
        ApiError { extra_headers: allow, ..ApiError::new(405, "method_not_allowed", "method not allowed here") }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            extra_headers: "WWW-Authenticate: Bearer\r\n",
            ..ApiError::new(401, "unauthorized", "missing or invalid API key in Authorization: Bearer")
        }
    }

    pub fn response(&self) -> Vec<u8> {
        http::error_response(self.status, self.code, &self.message, self.extra_headers)
    }
}

/// Maps a method and path (without query) to an endpoint.
pub fn route(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    const GET: &str = "Allow: GET\r\n";
    const POST: &str = "Allow: POST\r\n";
    let (endpoint, allow) = match path {
        "/healthz" => (Endpoint::Healthz, GET),
        "/readyz" => (Endpoint::Readyz, GET),
        "/metrics" => (Endpoint::Metrics, GET),
        "/api/v1/openapi.json" => (Endpoint::OpenApi, GET),
        "/api/v1/stats" => (Endpoint::Stats, GET),
        "/api/v1/tokens" => (Endpoint::Tokens, POST),
        "/api/v1/send" => (Endpoint::Send, POST),
        "/api/v1/kick" => (Endpoint::Kick, POST),
        "/api/v1/drain" => (Endpoint::Drain, POST),
        "/api/v1/live/rooms" => (Endpoint::LiveRooms, GET),
        "/api/v1/live/connections" => (Endpoint::LiveConnections, GET),
        _ => match path.strip_prefix("/api/v1/live/rooms/") {
            Some(room) => {
                let room = http::percent_decode(room);
                return match method {
                    "GET" => Ok(Endpoint::LiveRoom(room)),
                    "DELETE" => Ok(Endpoint::CloseRoom(room)),
                    _ => Err(ApiError::method("Allow: GET, DELETE\r\n")),
                };
            }
            None => return Err(ApiError::new(404, "not_found", "unknown path")),
        },
    };
    let wanted = if allow == GET { "GET" } else { "POST" };
    if method == wanted { Ok(endpoint) } else { Err(ApiError::method(allow)) }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(x));
    }
    diff == 0
}

/// The Bearer credential of a request.
fn bearer(head: &RequestHead) -> Option<&str> {
    let value = head.authorization.as_deref()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the key for `access`. `Ok(Some(tenant))` for a tenant key.
pub fn authorize(config: &Config, access: Access, head: &RequestHead) -> Result<Option<String>, ApiError> {
    let given = bearer(head).unwrap_or_default().as_bytes();
    match access {
        Access::Public => Ok(None),
        Access::Admin => match &config.admin_key {
            Some(key) if constant_time_eq(given, key.as_bytes()) => Ok(None),
            _ => Err(ApiError::unauthorized()),
        },
        Access::Tenant => {
            // Every key is compared, so timing does not tell which one matched.
            let mut found = None;
            for tenant in &config.tenants {
                if constant_time_eq(given, tenant.api_key.as_bytes()) {
                    found = Some(tenant.id.clone());
                }
            }
            found.map(Some).ok_or_else(ApiError::unauthorized)
        }
    }
}

/// The request body's length from `Content-Length`, checked against the cap.
pub fn body_length(head: &RequestHead, max: usize) -> Result<usize, ApiError> {
    if head.transfer_encoding.is_some() {
        return Err(ApiError::new(411, "length_required", "chunked bodies are not accepted; send Content-Length"));
    }
    let Some(text) = head.content_length.as_deref() else { return Ok(0) };
    let len: usize = text.parse().map_err(|_| ApiError::new(400, "bad_request", "Content-Length is not a number"))?;
    if len > max {
        return Err(ApiError::new(413, "body_too_large", format!("request bodies are at most {max} bytes")));
    }
    Ok(len)
}

/// What the acceptor knows when it answers a request.
pub struct Context<'a> {
    pub config: &'a Config,
    /// HS secret tokens are minted with; `None` in dev mode.
    pub mint_secret: Option<&'a [u8]>,
    pub shards: &'a [ShardMetrics],
    pub acceptor: &'a AcceptorMetrics,
    pub gauges: Gauges,
    /// `Some(tenant)` when a tenant key was checked.
    pub tenant: Option<String>,
    pub now_unix_s: u64,
}

/// Which shards a scatter goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    All,
    One(ShardId),
}

/// How the replies of a scatter become a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gather {
    Rooms { limit: usize },
    Room { room: String },
    Connections,
    Sent { connection: bool },
    Kicked,
    Closed,
    Drained,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Outcome {
    Respond(u16, Vec<u8>),
    Scatter {
        query: AdminQuery,
        targets: Targets,
        gather: Gather,
    },
    /// Stop taking WebSocket connections, then scatter `Drain`.
    StartDrain,
}

fn json_ok(status: u16, value: &Value) -> Outcome {
    Outcome::Respond(status, http::response(status, "application/json", "", value.to_string().as_bytes()))
}

/// Answers `endpoint` or says what to ask the shards.
pub fn handle(ctx: &Context<'_>, endpoint: &Endpoint, head: &RequestHead, body: &[u8]) -> Result<Outcome, ApiError> {
    let shards = ctx.shards.len();
    match endpoint {
        Endpoint::Healthz => Ok(json_ok(200, &json!({ "status": "ok" }))),
        Endpoint::Readyz if ctx.gauges.draining => Err(ApiError::new(503, "draining", "the server is draining")),
        Endpoint::Readyz => Ok(json_ok(200, &json!({ "status": "ready" }))),
        Endpoint::Metrics => {
            let text = metrics::render_prometheus(ctx.shards, ctx.acceptor, &ctx.gauges);
            Ok(Outcome::Respond(200, http::response(200, "text/plain; version=0.0.4", "", text.as_bytes())))
        }
        Endpoint::OpenApi => {
            Ok(Outcome::Respond(200, http::response(200, "application/json", "", OPENAPI_JSON.as_bytes())))
        }
        Endpoint::Stats => Ok(json_ok(200, &stats(ctx))),
        Endpoint::Tokens => mint(ctx, body),
        Endpoint::Send => send(head, body, shards),
        Endpoint::Kick => {
            let doc = parse_object(body)?;
            let user = required_str(&doc, "user")?;
            let room = optional_room(&doc, "room")?;
            let tenant = tenant_of(&doc, head)?;
            Ok(Outcome::Scatter {
                query: AdminQuery::Kick { tenant, user, room },
                targets: Targets::All,
                gather: Gather::Kicked,
            })
        }
        Endpoint::Drain => {
            if !body.is_empty() {
                parse_object(body)?;
            }
            Ok(Outcome::StartDrain)
        }
        Endpoint::LiveRooms => {
            let limit = limit_param(head)?;
            let cursor = head.query_param("cursor").filter(|c| !c.is_empty());
            let query = AdminQuery::Rooms {
                tenant: tenant_param(head)?,
                prefix: head.query_param("prefix").unwrap_or_default(),
                after: cursor,
                // One more than asked tells whether there is a next page.
                limit: limit + 1,
            };
            Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Rooms { limit } })
        }
        Endpoint::LiveRoom(room) | Endpoint::CloseRoom(room) => {
            if !ids::is_valid_room_id(room) {
                return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
            }
            let tenant = tenant_param(head)?;
            if let Endpoint::CloseRoom(_) = endpoint {
                let query = AdminQuery::CloseRoom { key: RoomKey::new(&tenant, room) };
                return Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Closed });
            }
            let query = AdminQuery::Connections { tenant, room: Some(room.clone()), user: None, limit: usize::MAX };
            Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Room { room: room.clone() } })
        }
        Endpoint::LiveConnections => {
            let room = head.query_param("room");
            if room.as_deref().is_some_and(|r| !ids::is_valid_room_id(r)) {
                return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
            }
            let query = AdminQuery::Connections {
                tenant: tenant_param(head)?,
                room,
                user: head.query_param("user").filter(|u| !u.is_empty()),
                limit: limit_param(head)?,
            };
            Ok(Outcome::Scatter { query, targets: Targets::All, gather: Gather::Connections })
        }
    }
}

/// Seed 003's `WebSocketStats`, from the shards' latest snapshots (at most
/// about a second old), plus uptime.
fn stats(ctx: &Context<'_>) -> Value {
    let sum = |get: fn(&ShardMetrics) -> u64| ctx.shards.iter().map(get).sum::<u64>();
    json!({
        "total_connections": sum(|m| m.connections_opened),
        "active_connections": sum(|m| m.connections),
        "total_rooms": sum(|m| m.rooms),
        "messages_processed": sum(|m| m.messages_published),
        "messages_broadcast": sum(|m| m.deliveries),
        "last_connection_time": (ctx.acceptor.last_upgrade_unix_s > 0).then_some(ctx.acceptor.last_upgrade_unix_s),
        "uptime_s": ctx.gauges.uptime_s,
        "shards": ctx.shards.len(),
        "draining": ctx.gauges.draining,
    })
}

fn mint(ctx: &Context<'_>, body: &[u8]) -> Result<Outcome, ApiError> {
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
        Some(value) => match value.as_u64() {
            Some(ttl) if ttl > 0 => ttl.min(ttl_max),
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
        ..MintRequest::default()
    };
    let token =
        mint_hs256(secret, &request, ctx.now_unix_s).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    Ok(json_ok(200, &json!({ "token": token, "expires_at": ctx.now_unix_s + ttl })))
}

fn send(head: &RequestHead, body: &[u8], shards: usize) -> Result<Outcome, ApiError> {
    let doc = parse_object(body)?;
    let named: Vec<&str> = ["room", "user", "connection", "all"]
        .into_iter()
        .filter(|k| doc.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if named.len() != 1 {
        return Err(ApiError::bad_field("room|user|connection|all", "give exactly one target"));
    }
    let data = crate::protocol::top_level_span(body, b"data").ok_or_else(|| ApiError::bad_field("data", "required"))?;
    let data = &body[data];
    let tenant = tenant_of(&doc, head)?;
    let (target, targets, scope, room) = match named[0] {
        "room" => {
            let room = optional_room(&doc, "room")?.unwrap_or_default();
            let key = RoomKey::new(&tenant, &room);
            (SendTarget::Room(key), Targets::All, "room", Some(room))
        }
        "user" => {
            let user = required_str(&doc, "user")?;
            (SendTarget::User { tenant, user }, Targets::All, "user", None)
        }
        "connection" => {
            let text = required_str(&doc, "connection")?;
            let id = parse_conn_id(&text)
                .ok_or_else(|| ApiError::bad_field("connection", "a connection id \"shard.slot.generation\""))?;
            if id.shard as usize >= shards {
                return Err(ApiError::new(404, "not_found", "no open connection with that id"));
            }
            (SendTarget::Connection(id), Targets::One(id.shard), "connection", None)
        }
        _ => {
            if doc.get("all") != Some(&Value::Bool(true)) {
                return Err(ApiError::bad_field("all", "must be true"));
            }
            (SendTarget::All, Targets::All, "all", None)
        }
    };
    let frame = frame::encode_frame(Opcode::Text, &broadcast_json(scope, room.as_deref(), data));
    let gather = Gather::Sent { connection: scope == "connection" };
    Ok(Outcome::Scatter { query: AdminQuery::Send { target, frame }, targets, gather })
}

/// The frame an admin send delivers:
/// `{"type":"broadcast","to":SCOPE,"room":R,"data":D}`, `room` only for a
/// room send, `data` byte for byte as the caller sent it.
pub fn broadcast_json(scope: &str, room: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + data.len());
    out.extend_from_slice(b"{\"type\":\"broadcast\",\"to\":\"");
    out.extend_from_slice(scope.as_bytes());
    out.push(b'"');
    if let Some(room) = room {
        out.extend_from_slice(b",\"room\":");
        crate::protocol::push_json_str(&mut out, room);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// Turns the shards' replies into the response.
pub fn finish(gather: &Gather, answers: Vec<AdminAnswer>) -> (u16, Vec<u8>) {
    let count = || answers.iter().map(|a| if let AdminAnswer::Count(n) = a { *n } else { 0 }).sum::<u64>();
    let connections = || {
        let mut all: Vec<&ConnInfo> = answers
            .iter()
            .flat_map(|a| if let AdminAnswer::Connections(c, _) = a { c.as_slice() } else { &[] })
            .collect();
        all.sort_by(|a, b| a.conn.cmp(&b.conn));
        // In a room listing, the owner's live roles replace the tokens' roles.
        let roles: BTreeMap<&str, &str> = answers
            .iter()
            .flat_map(|a| if let AdminAnswer::Connections(_, r) = a { r.as_slice() } else { &[] })
            .map(|(conn, role)| (conn.as_str(), *role))
            .collect();
        all.into_iter()
            .map(|info| {
                let mut value = conn_json(info);
                if let Some(role) = roles.get(info.conn.as_str()) {
                    value["role"] = json!(role);
                }
                value
            })
            .collect::<Vec<_>>()
    };
    let (status, value) = match gather {
        Gather::Rooms { limit } => {
            let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
            for answer in &answers {
                if let AdminAnswer::Rooms(rooms) = answer {
                    for (room, n) in rooms {
                        *merged.entry(room).or_default() += n;
                    }
                }
            }
            let more = merged.len() > *limit;
            let page: Vec<(&str, u64)> = merged.into_iter().take(*limit).collect();
            let next = if more { page.last().map(|(room, _)| room.to_string()) } else { None };
            let rooms: Vec<Value> = page.iter().map(|(room, n)| json!({ "room": room, "members": n })).collect();
            (200, json!({ "rooms": rooms, "next_cursor": next }))
        }
        Gather::Room { room } => {
            let members = connections();
            if members.is_empty() {
                return (404, http::error_response(404, "not_found", "no connection is in that room", ""));
            }
            (200, json!({ "room": room, "member_count": members.len(), "members": members }))
        }
        Gather::Connections => (200, json!({ "connections": connections() })),
        Gather::Sent { connection: true } if count() == 0 => {
            return (404, http::error_response(404, "not_found", "no open connection with that id", ""));
        }
        Gather::Sent { .. } => (200, json!({ "delivered": count() })),
        Gather::Kicked => (200, json!({ "kicked": count() })),
        Gather::Closed if count() == 0 => {
            return (404, http::error_response(404, "not_found", "no connection is in that room", ""));
        }
        Gather::Closed => (200, json!({ "closed": count() })),
        Gather::Drained => (202, json!({ "draining": true, "closing": count() })),
    };
    (status, http::response(status, "application/json", "", value.to_string().as_bytes()))
}

fn conn_json(info: &ConnInfo) -> Value {
    json!({
        "conn": info.conn,
        "user": info.user,
        "name": info.name,
        "tenant": info.tenant,
        "role": info.role,
        "room": info.home,
        "rooms": info.rooms,
    })
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_field("body", "must be a JSON object")),
        Err(e) => Err(ApiError::bad_field("body", &format!("malformed JSON: {e}"))),
    }
}

fn required_str(doc: &serde_json::Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match doc.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(_) => Err(ApiError::bad_field(field, "must be a non-empty string")),
        None => Err(ApiError::bad_field(field, "required")),
    }
}

fn optional_str(doc: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_field(field, "must be a string")),
    }
}

fn optional_room(doc: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match optional_str(doc, field)? {
        Some(room) if !ids::is_valid_room_id(&room) => {
            Err(ApiError::bad_field(field, "room ids are 1-128 bytes of [A-Za-z0-9._:-]"))
        }
        room => Ok(room),
    }
}

/// `tenant` of a body, else of the query, else `""`.
fn tenant_of(doc: &serde_json::Map<String, Value>, head: &RequestHead) -> Result<String, ApiError> {
    match optional_str(doc, "tenant")? {
        Some(tenant) if tenant.contains('\0') => Err(ApiError::bad_field("tenant", "must not contain NUL")),
        Some(tenant) => Ok(tenant),
        None => tenant_param(head),
    }
}

fn tenant_param(head: &RequestHead) -> Result<String, ApiError> {
    let tenant = head.query_param("tenant").unwrap_or_default();
    if tenant.contains('\0') {
        return Err(ApiError::bad_field("tenant", "must not contain NUL"));
    }
    Ok(tenant)
}

fn limit_param(head: &RequestHead) -> Result<usize, ApiError> {
    match head.query_param("limit") {
        None => Ok(LIST_LIMIT_DEFAULT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_field("limit", &format!("an integer from 1 to {LIST_LIMIT_MAX}"))),
        },
    }
}

/// `"{shard}.{slot}.{generation}"`, as `welcome` and the listings give it.
fn parse_conn_id(text: &str) -> Option<ConnId> {
    let mut parts = text.split('.');
    let id = ConnId {
        shard: parts.next()?.parse().ok()?,
        slot: parts.next()?.parse().ok()?,
        generation: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_methods_and_unknown_paths() {
        assert_eq!(route("GET", "/healthz"), Ok(Endpoint::Healthz));
        assert_eq!(route("DELETE", "/api/v1/live/rooms/a%2Eb"), Ok(Endpoint::CloseRoom("a.b".into())));
        assert_eq!(route("POST", "/healthz").unwrap_err().status, 405);
        assert_eq!(route("GET", "/api/v1/send").unwrap_err().extra_headers, "Allow: POST\r\n");
        assert_eq!(route("PUT", "/api/v1/live/rooms/x").unwrap_err().status, 405);
        assert_eq!(route("GET", "/nope").unwrap_err().status, 404);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn data_span_is_byte_for_byte() {
        let body = br#"{ "room":"r", "data" : {"a": [1, "x}"] , "b":null} ,"x":1}"#;
        let span = crate::protocol::top_level_span(body, b"data").unwrap();
        assert_eq!(&body[span], br#"{"a": [1, "x}"] , "b":null}"#);
        let number = br#"{"data":12.5e3}"#;
        assert_eq!(&number[crate::protocol::top_level_span(number, b"data").unwrap()], b"12.5e3");
        assert_eq!(crate::protocol::top_level_span(br#"{"nested":{"data":1}}"#, b"data"), None);
    }

    #[test]
    fn broadcast_frame_shape() {
        let json = broadcast_json("room", Some("demo"), br#"{"k": 1}"#);
        assert_eq!(json, br#"{"type":"broadcast","to":"room","room":"demo","data":{"k": 1}}"#);
        assert_eq!(broadcast_json("all", None, b"1"), br#"{"type":"broadcast","to":"all","data":1}"#);
    }

    #[test]
    fn conn_ids_parse() {
        assert_eq!(parse_conn_id("1.2.3"), Some(ConnId { shard: 1, slot: 2, generation: 3 }));
        assert_eq!(parse_conn_id("1.2"), None);
        assert_eq!(parse_conn_id("1.2.3.4"), None);
    }
}
