//! Who may talk to the service, checked before any handler (CONTRACT §5, "Browsers and tokens").
//!
//! A browser on any web page can reach a service on 127.0.0.1, so three checks run on every
//! request, in this order:
//!
//! 1. **DNS rebinding.** While the service is bound to a loopback address, a `Host` that is not
//!    a loopback name or address (nor listed in `web.allowed_hosts`) gets 421: a page on
//!    `evil.example` whose name was re-pointed at 127.0.0.1 still says `Host: evil.example`.
//! 2. **Cross-site requests.** A request that changes state (`POST`, `PUT`, `PATCH`, `DELETE`)
//!    or upgrades to a WebSocket, and carries an `Origin` other than the service's own (nor one
//!    of `web.allowed_origins`), gets 403. Browsers send `Origin` on these; programs (the
//!    producer, curl, SDKs) send none and are judged by their token alone. A `text/plain` POST is
//!    a "simple request" that no CORS preflight stops, so this check, not CORS, is what refuses it.
//! 3. **Read token.** When `web.read_token` is set, reads of fleet data (`/ws`, `/api/*`) need it
//!    (or the admin `web.token`) as a bearer token; a browser's WebSocket cannot send headers, so
//!    `/ws` also takes it as the subprotocol `stampede.token.<hex of the token>`. The page shell
//!    (`/`, its script and style) holds no data and is served to anyone, so that it can ask for
//!    the token. `/metrics`, `/healthz` and `/readyz` stay open for monitoring.
//!
//! Allowed origins also get CORS headers (and preflights an answer), so that a dashboard served
//! elsewhere can read the API. Tokens are compared in constant time and never logged.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The WebSocket subprotocol the dashboard speaks; a token rides beside it as
/// `stampede.token.<hex>`.
pub const WS_PROTOCOL: &str = "stampede";
const WS_TOKEN_PREFIX: &str = "stampede.token.";

/// The checks' settings, from `[web]`.
#[derive(Debug, Default)]
pub struct Guard {
    /// Bound to a loopback address: the `Host` check applies.
    pub loopback: bool,
    /// Host names accepted besides loopback ones, lower case, without port.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, lower case) whose pages may write and open `/ws`.
    pub allowed_origins: Vec<String>,
    /// `web.token`: ingest and admin (also good for reads).
    pub token: Arc<str>,
    /// `web.read_token`: reads; empty for open reads.
    pub read_token: Arc<str>,
    /// Serving HTTPS: the service's own origin is `https://…`.
    pub tls: bool,
}

/// The middleware: refuses what the module docs say, passes the rest to the router.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).map(readable);
    if guard.loopback {
        if let Some(host) = &host {
            let name = host_name(host);
            if !is_loopback_name(name) && !guard.allowed_hosts.iter().any(|h| h == name) {
                return refuse(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "Host {name:?} is not this service: it listens on loopback, where only loopback names are served (a guard against DNS rebinding); list the name in web.allowed_hosts to serve it"
                    ),
                );
            }
        }
    }
    let origin = headers.get(header::ORIGIN).map(readable);
    let allowed_origin = origin
        .as_ref()
        .filter(|o| guard.allowed_origins.iter().any(|a| a == *o))
        .cloned();
    let upgrade = is_websocket(headers);
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if let Some(origin) = &origin {
        let own = host.as_ref().is_some_and(|h| {
            *origin == format!("{}://{h}", if guard.tls { "https" } else { "http" })
        });
        if (writes || upgrade) && !own && allowed_origin.is_none() {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request refused: a page from {origin} may not {} here; list that origin in web.allowed_origins to allow it",
                    if upgrade { "open the live feed" } else { "send data" }
                ),
            );
        }
    }
    if req.method() == Method::OPTIONS {
        if let Some(origin) = &allowed_origin {
            return preflight(origin);
        }
    }
    if !guard.read_token.is_empty() && guards_reads(req.uri().path()) && !guard.may_read(headers) {
        let mut res = refuse(
            StatusCode::UNAUTHORIZED,
            "this service needs its read token (web.read_token): send it as \"Authorization: Bearer <token>\"".into(),
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"stampede-read\""),
        );
        return with_cors(res, allowed_origin.as_deref());
    }
    with_cors(next.run(req).await, allowed_origin.as_deref())
}

impl Guard {
    /// Whether the request carries the read token or the admin token.
    fn may_read(&self, headers: &HeaderMap) -> bool {
        let given = bearer(headers).or_else(|| ws_token(headers));
        let Some(given) = given else {
            return false;
        };
        let matches = |t: &str| {
            !t.is_empty() && crate::clients::token::constant_time_eq(given.as_bytes(), t.as_bytes())
        };
        // Both compared, whatever the first gives: timing says nothing about which matched.
        let read = matches(&self.read_token);
        let admin = matches(&self.token);
        read | admin
    }
}

/// Paths whose `GET` reads fleet data.
fn guards_reads(path: &str) -> bool {
    path == "/ws" || path.starts_with("/api/")
}

/// A `Host` or `Origin` value, lower case; one that is not visible ASCII becomes a value no
/// check accepts (a header that cannot be read is never taken for a missing one).
fn readable(value: &HeaderValue) -> String {
    value
        .to_str()
        .map_or_else(|_| "(unreadable)".to_owned(), str::to_ascii_lowercase)
}

/// The bearer token of the `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// A token offered as the WebSocket subprotocol `stampede.token.<hex>`.
fn ws_token(headers: &HeaderMap) -> Option<String> {
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let hex = offered
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_TOKEN_PREFIX))?;
    let bytes = decode_hex(hex)?;
    String::from_utf8(bytes).ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// The host name of a `Host` value: without its port, IPv6 without brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// `localhost`, a name under `.localhost`, or a loopback address.
fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}

fn preflight(origin: &str) -> Response {
    let res = (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response();
    with_cors(res, Some(origin))
}

fn with_cors(mut res: Response, origin: Option<&str>) -> Response {
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        // The fleet table's page count (`GET /api/unicorns`).
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-total-count"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_host_ports() {
        for host in [
            "localhost",
            "127.0.0.1:8080",
            "[::1]:8080",
            "app.localhost:1",
            "127.3.2.1",
        ] {
            assert!(is_loopback_name(host_name(host)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1",
            "[fe80::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_name(host_name(host)), "{host}");
        }
    }

    #[test]
    fn a_token_rides_in_the_websocket_subprotocol_as_hex() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("stampede, stampede.token.73336372337421"),
        );
        assert_eq!(ws_token(&h).as_deref(), Some("s3cr3t!"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("stampede.token.7"),
        );
        assert_eq!(ws_token(&h), None);
    }
}
