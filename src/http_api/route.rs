//! Routing: which endpoint a method and path name, who may call it, on
//! which listener it is served, and whether it reads a body. Path segments
//! (room ids, `jti`s) are percent-decoded here.

use crate::http;

use super::ApiError;
use super::demo::Asset;

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
    /// `GET /` and `GET /demo/…`: the meeting page, when `http.demo_page` is on.
    Demo(Asset),
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
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics | Endpoint::OpenApi | Endpoint::Demo(_) => {
                Access::Public
            }
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
        _ if let Some(asset) = Asset::from_path(path) => (Endpoint::Demo(asset), GET),
        _ if let Some(jti) = path.strip_prefix("/api/v1/tokens/") => {
            return match method {
                "DELETE" => Ok(Endpoint::RevokeToken(http::percent_decode(jti).into_owned())),
                _ => Err(ApiError::method("Allow: DELETE\r\n")),
            };
        }
        _ if let Some(room) = path.strip_prefix("/api/v1/rooms/").and_then(|r| r.strip_suffix("/usage")) => {
            (Endpoint::RoomUsage(http::percent_decode(room).into_owned()), GET)
        }
        "/api/v1/rooms" => {
            return match method {
                "GET" => Ok(Endpoint::ListRooms),
                "POST" => Ok(Endpoint::CreateRoom),
                _ => Err(ApiError::method("Allow: GET, POST\r\n")),
            };
        }
        _ if let Some(room) = path.strip_prefix("/api/v1/rooms/") => {
            let room = http::percent_decode(room).into_owned();
            return match method {
                "GET" => Ok(Endpoint::GetRoom(room)),
                "PUT" => Ok(Endpoint::PutRoom(room)),
                "DELETE" => Ok(Endpoint::DeleteRoom(room)),
                _ => Err(ApiError::method("Allow: GET, PUT, DELETE\r\n")),
            };
        }
        _ => match path.strip_prefix("/api/v1/live/rooms/") {
            Some(room) => {
                let room = http::percent_decode(room).into_owned();
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
    fn routes_usage_and_registry_paths() {
        assert_eq!(route("GET", "/api/v1/rooms/a%2Eb/usage"), Ok(Endpoint::RoomUsage("a.b".into())));
        assert_eq!(route("POST", "/api/v1/usage").unwrap_err().status, 405);
        assert_eq!(route("GET", "/api/v1/rooms/usage"), Ok(Endpoint::GetRoom("usage".into())));
        assert_eq!(route("PUT", "/api/v1/rooms/a"), Ok(Endpoint::PutRoom("a".into())));
        assert_eq!(route("PATCH", "/api/v1/rooms/a").unwrap_err().extra_headers, "Allow: GET, PUT, DELETE\r\n");
        assert_eq!(route("POST", "/api/v1/rooms"), Ok(Endpoint::CreateRoom));
        assert_eq!(route("GET", "/"), Ok(Endpoint::Demo(Asset::Index)));
        assert_eq!(route("POST", "/demo/app.js").unwrap_err().status, 405);
        assert_eq!(route("DELETE", "/api/v1/rooms").unwrap_err().status, 405);
    }
}
