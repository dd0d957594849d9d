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
//! busy or a shard that did not answer in time, 507 a revocation while the
//! revoked-token set is full. The OpenAPI 3.1 document of
//! all of it is `src/openapi.json`, served at `GET /api/v1/openapi.json`.

use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::auth::{MintRequest, mint_hs256};
use crate::config::Config;
use crate::http::{self, RequestHead};
use crate::ids::{self, ConnId, RoomKey, ShardId};
use crate::metrics::{self, AcceptorMetrics, Gauges, LimitKind, ShardMetrics};
use crate::registry::RoomPolicy;
use crate::shard::{AdminAnswer, AdminQuery, ConnInfo, SendTarget};
use crate::store::{QueryRequest, RoomRecord, StoreAnswer};
use crate::ws::frame::{self, Opcode};

/// The OpenAPI document, served as is.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
/// Entries of a listing when `limit` is not given, and the most it may ask.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;
/// Lifetime of a minted token when the request gives no `ttl`.
const TOKEN_TTL_DEFAULT_S: u64 = 3600;
/// Days a usage report covers when `from` is not given (ending with `to`).
const USAGE_DAYS_DEFAULT: i64 = 30;
/// Most days one usage report covers: the store computes it on the thread
/// that writes chat, so a request must not make it read years of sessions.
pub const USAGE_DAYS_MAX: i64 = 366;
/// Largest `exp` of `DELETE /api/v1/tokens/{jti}`: 9999-12-31T23:59:59Z,
/// far past any real token, and within SQLite's signed 64-bit integers.
pub const REVOKE_EXP_MAX: u64 = 253_402_300_799;

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
    /// `DELETE /api/v1/tokens/{jti}`: refuse that token from now on.
    RevokeToken(String),
    /// `GET /api/v1/usage`: the tenant's sessions per day.
    Usage,
    /// `GET /api/v1/rooms/{room}/usage`: one room's sessions per day.
    RoomUsage(String),
    /// The room registry: `GET`/`POST /api/v1/rooms`, `GET`/`PUT`/`DELETE /api/v1/rooms/{room}`.
    ListRooms,
    CreateRoom,
    GetRoom(String),
    PutRoom(String),
    DeleteRoom(String),
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// A tenant's `api_key` as `Authorization: Bearer`.
    Tenant,
    /// `admin_key` as `Authorization: Bearer`.
    Admin,
    /// Either: the admin key (any tenant, `?tenant=`) or a tenant's key (that tenant only).
    AdminOrTenant,
}

impl Endpoint {
    pub fn access(&self) -> Access {
        match self {
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics | Endpoint::OpenApi => Access::Public,
            Endpoint::Tokens => Access::Tenant,
            Endpoint::Usage
            | Endpoint::RoomUsage(_)
            | Endpoint::ListRooms
            | Endpoint::CreateRoom
            | Endpoint::GetRoom(_)
            | Endpoint::PutRoom(_)
            | Endpoint::DeleteRoom(_) => Access::AdminOrTenant,
            _ => Access::Admin,
        }
    }

    /// Served only on `admin_listen` when one is configured. The
    /// `AdminOrTenant` endpoints stay on the main listener, but there the
    /// acceptor checks them as `Tenant`: the admin key opens nothing on it.
    pub fn admin_surface(&self) -> bool {
        matches!(self, Endpoint::Metrics | Endpoint::Stats) || self.access() == Access::Admin
    }

    /// Whether the request carries a JSON body the handler reads.
    pub fn takes_body(&self) -> bool {
        matches!(
            self,
            Endpoint::Tokens
                | Endpoint::Send
                | Endpoint::Kick
                | Endpoint::Drain
                | Endpoint::CreateRoom
                | Endpoint::PutRoom(_)
        )
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
        "/api/v1/usage" => (Endpoint::Usage, GET),
        _ if let Some(jti) = path.strip_prefix("/api/v1/tokens/") => {
            return match method {
                "DELETE" => Ok(Endpoint::RevokeToken(http::percent_decode(jti))),
                _ => Err(ApiError::method("Allow: DELETE\r\n")),
            };
        }
        _ if let Some(room) = path.strip_prefix("/api/v1/rooms/").and_then(|r| r.strip_suffix("/usage")) => {
            (Endpoint::RoomUsage(http::percent_decode(room)), GET)
        }
        "/api/v1/rooms" => {
            return match method {
                "GET" => Ok(Endpoint::ListRooms),
                "POST" => Ok(Endpoint::CreateRoom),
                _ => Err(ApiError::method("Allow: GET, POST\r\n")),
            };
        }
        _ if let Some(room) = path.strip_prefix("/api/v1/rooms/") => {
            let room = http::percent_decode(room);
            return match method {
                "GET" => Ok(Endpoint::GetRoom(room)),
                "PUT" => Ok(Endpoint::PutRoom(room)),
                "DELETE" => Ok(Endpoint::DeleteRoom(room)),
                _ => Err(ApiError::method("Allow: GET, PUT, DELETE\r\n")),
            };
        }
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
        Access::AdminOrTenant => match authorize(config, Access::Admin, head) {
            Ok(None) => Ok(None),
            _ => authorize(config, Access::Tenant, head),
        },
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
    /// The registry holds `rooms.registry_max` rooms: a create gets 507.
    pub registry_full: bool,
    /// Registry changes wait for a shard that is behind: writes get 503.
    pub registry_behind: bool,
    /// Set by a handler that hit a limit without refusing (a capped `ttl`);
    /// the acceptor counts it.
    pub limit_hit: std::cell::Cell<Option<LimitKind>>,
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
    Rooms {
        limit: usize,
    },
    Room {
        room: String,
    },
    Connections,
    Sent {
        connection: bool,
    },
    Kicked,
    Closed,
    Drained,
    Usage {
        tenant: String,
        room: Option<String>,
        from_day: i64,
        to_day: i64,
    },
    Registry(RegistryOp),
    /// A committed registry change went to the shards (`AdminQuery::Registry`):
    /// once they applied it, `response` (made from the store's answer) goes out.
    RegistryApplied {
        status: u16,
        response: Vec<u8>,
    },
}

/// Which room registry answer to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryOp {
    Create,
    Get,
    /// `PUT` of one room.
    Replace,
    Delete {
        key: RoomKey,
    },
    List {
        limit: usize,
    },
}

/// The change a registry answer of the store commits, which the live server
/// must apply: `(room, Some(policy))` for a create or replace, `(room, None)`
/// for a delete; `None` when the store changed nothing.
pub fn registry_change(op: &RegistryOp, answers: &[AdminAnswer]) -> Option<(RoomKey, Option<RoomPolicy>)> {
    let answer = answers.iter().find_map(|a| if let AdminAnswer::Store(answer) = a { Some(answer) } else { None });
    match (op, answer?) {
        (RegistryOp::Create | RegistryOp::Replace, StoreAnswer::Room(Some(room))) => {
            Some((RoomKey::new(&room.tenant, &room.id), Some(RoomPolicy::of(room))))
        }
        (RegistryOp::Delete { key }, StoreAnswer::Deleted(true)) => Some((key.clone(), None)),
        _ => None,
    }
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
    /// Ask the store thread; its one reply is gathered like a shard's.
    Store {
        request: QueryRequest,
        gather: Gather,
    },
    /// Add `jti` to the acceptor's revoked set until `expires_s`, then send `response`.
    Revoke {
        jti: String,
        expires_s: u64,
        response: Vec<u8>,
    },
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
        Endpoint::RevokeToken(jti) => revoke(ctx, head, jti),
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
        Endpoint::Usage => usage(ctx, head, None),
        Endpoint::RoomUsage(room) => usage(ctx, head, Some(room)),
        Endpoint::ListRooms => {
            let limit = limit_param(head)?;
            let after = head.query_param("cursor").filter(|c| !c.is_empty());
            // One more than asked tells whether there is a next page.
            let request = QueryRequest::RoomList { tenant: scoped_tenant(ctx, head)?, after, limit: limit + 1 };
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::List { limit }) })
        }
        Endpoint::CreateRoom | Endpoint::PutRoom(_) | Endpoint::DeleteRoom(_) if ctx.registry_behind => {
            Err(ApiError::new(503, "busy", "a shard has not yet taken earlier registry changes; try again"))
        }
        Endpoint::CreateRoom if ctx.registry_full => {
            Err(ApiError::new(507, "registry_full", "the registry holds rooms.registry_max rooms"))
        }
        Endpoint::CreateRoom => {
            let doc = parse_object(body)?;
            let id = optional_room(&doc, "id")?.ok_or_else(|| ApiError::bad_field("id", "required"))?;
            let room = room_record(&doc, scoped_tenant(ctx, head)?, id)?;
            let request = QueryRequest::RoomCreate(Box::new(room));
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Create) })
        }
        Endpoint::PutRoom(id) => {
            let id = registry_id(id)?;
            let doc = parse_object(body)?;
            // An `id` in the body is ignored: the path names the room.
            let room = room_record(&doc, scoped_tenant(ctx, head)?, id)?;
            let request = QueryRequest::RoomReplace(Box::new(room));
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Replace) })
        }
        Endpoint::GetRoom(id) => {
            let request = QueryRequest::RoomGet { tenant: scoped_tenant(ctx, head)?, id: registry_id(id)? };
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Get) })
        }
        Endpoint::DeleteRoom(id) => {
            let (tenant, id) = (scoped_tenant(ctx, head)?, registry_id(id)?);
            let key = RoomKey::new(&tenant, &id);
            let request = QueryRequest::RoomDelete { tenant, id };
            Ok(Outcome::Store { request, gather: Gather::Registry(RegistryOp::Delete { key }) })
        }
    }
}

/// `GET /api/v1/usage` and `GET /api/v1/rooms/{room}/usage`: validates the
/// range (`from`/`to`, `YYYY-MM-DD`, inclusive, UTC; `to` defaults to today,
/// `from` to 29 days before `to`; `from` after `to` is an empty range; at
/// most `USAGE_DAYS_MAX` days) and the tenant (a tenant key reads its own;
/// the admin key names one with `?tenant=`, default ""). Only days with
/// sessions are listed.
fn usage(ctx: &Context<'_>, head: &RequestHead, room: Option<&String>) -> Result<Outcome, ApiError> {
    if room.is_some_and(|r| !ids::is_valid_room_id(r)) {
        return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
    }
    let day = |field: &str| -> Result<Option<i64>, ApiError> {
        match head.query_param(field) {
            None => Ok(None),
            Some(text) => parse_day(&text).map(Some).ok_or_else(|| ApiError::bad_field(field, "a date YYYY-MM-DD")),
        }
    };
    let to_day = day("to")?.unwrap_or((ctx.now_unix_s / 86_400) as i64);
    let from_day = day("from")?.unwrap_or(to_day - (USAGE_DAYS_DEFAULT - 1));
    if to_day - from_day >= USAGE_DAYS_MAX {
        return Err(ApiError::bad_field("from", &format!("the range from..to covers at most {USAGE_DAYS_MAX} days")));
    }
    let tenant = scoped_tenant(ctx, head)?;
    let room = room.cloned();
    let request = QueryRequest::Usage { tenant: tenant.clone(), room: room.clone(), from_day, to_day };
    Ok(Outcome::Store { request, gather: Gather::Usage { tenant, room, from_day, to_day } })
}

/// The tenant a request acts on: with the admin key `?tenant=` (default
/// ""); with a tenant key its own, and `?tenant=` naming another is 403.
fn scoped_tenant(ctx: &Context<'_>, head: &RequestHead) -> Result<String, ApiError> {
    let asked = tenant_param(head)?;
    match &ctx.tenant {
        None => Ok(asked),
        Some(own) if head.query_param("tenant").is_none() || &asked == own => Ok(own.clone()),
        Some(_) => Err(ApiError::new(403, "forbidden", "a tenant API key acts on its own tenant only")),
    }
}

fn registry_id(id: &str) -> Result<String, ApiError> {
    if !ids::is_valid_room_id(id) {
        return Err(ApiError::bad_field("room", "room ids are 1-128 bytes of [A-Za-z0-9._:-]"));
    }
    Ok(id.to_string())
}

/// Longest registry `name` and `description`, in characters.
const ROOM_NAME_CHARS_MAX: usize = 256;
const ROOM_DESCRIPTION_CHARS_MAX: usize = 4096;
/// Largest registry `history_max`.
const ROOM_HISTORY_MAX: u64 = 100_000;

/// A registry room from a request body (fields absent or null: server defaults).
fn room_record(doc: &serde_json::Map<String, Value>, tenant: String, id: String) -> Result<RoomRecord, ApiError> {
    let text = |field: &str, max: usize| -> Result<Option<String>, ApiError> {
        match optional_str(doc, field)? {
            Some(text) if text.chars().count() > max => {
                Err(ApiError::bad_field(field, &format!("at most {max} characters")))
            }
            text => Ok(text),
        }
    };
    let number = |field: &str, min: u64, max: u64| -> Result<Option<u32>, ApiError> {
        match doc.get(field) {
            None | Some(Value::Null) => Ok(None),
            // JSON Schema's "integer" includes 12.0.
            Some(value) => match value.as_u64().or_else(|| {
                value.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64).map(|f| f as u64)
            }) {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n as u32)),
                _ => Err(ApiError::bad_field(field, &format!("an integer from {min} to {max}, or null"))),
            },
        }
    };
    let flag = |field: &str| -> Result<Option<bool>, ApiError> {
        match doc.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::bad_field(field, "true, false or null")),
        }
    };
    let metadata = match doc.get("metadata") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => Some(value.to_string()),
        Some(_) => return Err(ApiError::bad_field("metadata", "a JSON object, or null")),
    };
    Ok(RoomRecord {
        tenant,
        id,
        name: text("name", ROOM_NAME_CHARS_MAX)?,
        description: text("description", ROOM_DESCRIPTION_CHARS_MAX)?,
        capacity: number("capacity", 1, u64::from(u32::MAX))?,
        lobby: flag("lobby")?,
        private: flag("private")?.unwrap_or(false),
        history_max: number("history_max", 0, ROOM_HISTORY_MAX)?,
        metadata,
        created_ms: 0,
        updated_ms: 0,
    })
}

fn room_json(room: &RoomRecord) -> Value {
    let metadata = room.metadata.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok());
    json!({
        "id": room.id,
        "tenant": room.tenant,
        "name": room.name,
        "description": room.description,
        "capacity": room.capacity,
        "lobby": room.lobby,
        "private": room.private,
        "history_max": room.history_max,
        "metadata": metadata,
        "created_at_ms": room.created_ms,
        "updated_at_ms": room.updated_ms,
    })
}

/// `YYYY-MM-DD` (years 0001-9999) as days since 1970-01-01.
pub fn parse_day(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &text[range];
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn format_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Seed 003's `WebSocketStats`, from the shards' latest snapshots (at most
/// about a second old), plus uptime. `messages_processed` counts client
/// messages handled (any type), `messages_broadcast` room broadcasts (one per
/// broadcast, however many recipients), `deliveries` frames queued (one per
/// recipient); `docs/http-api.md` §4 has the exact definitions.
fn stats(ctx: &Context<'_>) -> Value {
    let sum = |get: fn(&ShardMetrics) -> u64| ctx.shards.iter().map(get).sum::<u64>();
    json!({
        "total_connections": sum(|m| m.connections_opened),
        "active_connections": sum(|m| m.connections),
        "total_rooms": sum(|m| m.rooms),
        "messages_processed": sum(|m| m.client_messages),
        "messages_broadcast": sum(|m| m.broadcasts),
        "deliveries": sum(|m| m.deliveries),
        "last_connection_time": (ctx.acceptor.last_upgrade_unix_s > 0).then_some(ctx.acceptor.last_upgrade_unix_s),
        "uptime_s": ctx.gauges.uptime_s,
        "shards": ctx.shards.len(),
        "draining": ctx.gauges.draining,
    })
}

/// `DELETE /api/v1/tokens/{jti}`: kept until `?exp=` (the token's `exp`,
/// Unix seconds, at most `REVOKE_EXP_MAX`) or, without it,
/// `api.token_ttl_max_s` from now.
fn revoke(ctx: &Context<'_>, head: &RequestHead, jti: &str) -> Result<Outcome, ApiError> {
    if jti.is_empty() || jti.chars().count() > 256 || jti.chars().any(char::is_control) {
        return Err(ApiError::bad_field("jti", "1-256 characters without control characters"));
    }
    let expires_s = match head.query_param("exp") {
        None => ctx.now_unix_s.saturating_add(ctx.config.api.token_ttl_max_s),
        Some(exp) => match exp.parse::<u64>() {
            Ok(exp) if exp <= REVOKE_EXP_MAX => exp,
            _ => {
                let problem = format!("Unix seconds, an integer from 0 to {REVOKE_EXP_MAX} (9999-12-31T23:59:59Z)");
                return Err(ApiError::bad_field("exp", &problem));
            }
        },
    };
    let value = json!({ "jti": jti, "revoked": true, "expires_s": expires_s });
    let response = http::response(200, "application/json", "", value.to_string().as_bytes());
    Ok(Outcome::Revoke { jti: jti.to_owned(), expires_s, response })
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
        Gather::RegistryApplied { status, response } => return (*status, response.clone()),
        Gather::Registry(op) => {
            let answer =
                answers.iter().find_map(|a| if let AdminAnswer::Store(answer) = a { Some(answer) } else { None });
            let not_found = || (404, http::error_response(404, "not_found", "no such room in the registry", ""));
            match (op, answer) {
                (RegistryOp::Create, Some(StoreAnswer::Room(Some(room)))) => (201, room_json(room)),
                (RegistryOp::Create, Some(StoreAnswer::Room(None))) => {
                    let body = http::error_response(409, "exists", "a room with that id is registered already", "");
                    return (409, body);
                }
                (RegistryOp::Get | RegistryOp::Replace, Some(StoreAnswer::Room(Some(room)))) => (200, room_json(room)),
                (RegistryOp::Get | RegistryOp::Replace, Some(StoreAnswer::Room(None))) => return not_found(),
                (RegistryOp::Delete { .. }, Some(StoreAnswer::Deleted(true))) => (200, json!({ "deleted": true })),
                (RegistryOp::Delete { .. }, Some(StoreAnswer::Deleted(false))) => return not_found(),
                (RegistryOp::List { limit }, Some(StoreAnswer::Rooms(rooms))) => {
                    let page: Vec<&RoomRecord> = rooms.iter().take(*limit).collect();
                    let next = if rooms.len() > *limit { page.last().map(|room| room.id.clone()) } else { None };
                    let rooms: Vec<Value> = page.into_iter().map(room_json).collect();
                    (200, json!({ "rooms": rooms, "next_cursor": next }))
                }
                _ => return (500, http::error_response(500, "store_failed", "the store could not do that", "")),
            }
        }
        Gather::Usage { tenant, room, from_day, to_day } => {
            let days = answers.iter().find_map(|a| match a {
                AdminAnswer::Store(StoreAnswer::Usage(days)) => Some(days),
                _ => None,
            });
            let Some(days) = days else {
                return (500, http::error_response(500, "store_failed", "the store could not read the sessions", ""));
            };
            let days: Vec<Value> = days
                .iter()
                .map(|d| {
                    json!({
                        "date": format_day(d.day),
                        "unique_users": d.unique_users,
                        "sessions": d.sessions,
                        "avg_duration_s": d.avg_duration_s,
                        "p95_duration_s": d.p95_duration_s,
                    })
                })
                .collect();
            let (from, to) = (format_day(*from_day), format_day(*to_day));
            (200, json!({ "tenant": tenant, "room": room, "from": from, "to": to, "days": days }))
        }
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
    fn days_parse_and_format() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2024-02-29"), Some(19_782));
        assert_eq!(format_day(19_782), "2024-02-29");
        assert_eq!(parse_day("2023-02-29"), None);
        assert_eq!(parse_day("2024-13-01"), None);
        assert_eq!(parse_day("2024-1-01"), None);
        assert_eq!(parse_day("+024-01-01"), None);
        assert_eq!(parse_day("0000-12-31"), None);
        assert_eq!(parse_day("1969-12-31"), Some(-1));
        for days in [-719_162, -1, 0, 59, 365, 10_957, 20_000, 2_932_896] {
            assert_eq!(parse_day(&format_day(days)), Some(days));
        }
        assert_eq!(route("GET", "/api/v1/rooms/a%2Eb/usage"), Ok(Endpoint::RoomUsage("a.b".into())));
        assert_eq!(route("POST", "/api/v1/usage").unwrap_err().status, 405);
        assert_eq!(route("GET", "/api/v1/rooms/usage"), Ok(Endpoint::GetRoom("usage".into())));
        assert_eq!(route("PUT", "/api/v1/rooms/a"), Ok(Endpoint::PutRoom("a".into())));
        assert_eq!(route("PATCH", "/api/v1/rooms/a").unwrap_err().extra_headers, "Allow: GET, PUT, DELETE\r\n");
        assert_eq!(route("POST", "/api/v1/rooms"), Ok(Endpoint::CreateRoom));
        assert_eq!(route("DELETE", "/api/v1/rooms").unwrap_err().status, 405);
    }

    #[test]
    fn conn_ids_parse() {
        assert_eq!(parse_conn_id("1.2.3"), Some(ConnId { shard: 1, slot: 2, generation: 3 }));
        assert_eq!(parse_conn_id("1.2"), None);
        assert_eq!(parse_conn_id("1.2.3.4"), None);
    }
}
