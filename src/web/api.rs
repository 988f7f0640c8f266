//! `GET /api/*`, `/metrics`, `/healthz`, `/readyz`: read-only views of the store, the hub and
//! the counters. EmbeddedStore reads run on the blocking pool.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{unauthorized, WebState};
use crate::hub::table::{self, SortKey, TableQuery};
use crate::hub::TableBusy;
use crate::metrics::METRICS;
use crate::record::{SummaryQuery, MAX_NAME_BYTES};
use crate::time::parse_status_time;

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": message })),
    )
        .into_response()
}

fn json_bytes(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize)]
pub(super) struct UnicornParams {
    q: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

impl UnicornParams {
    /// The page asked for; `None` (the whole fleet) when no parameter is given.
    fn page(self) -> Result<Option<TableQuery>, String> {
        if self.q.is_none()
            && self.sort.is_none()
            && self.order.is_none()
            && self.offset.is_none()
            && self.limit.is_none()
        {
            return Ok(None);
        }
        let search = self.q.unwrap_or_default();
        if search.len() > MAX_NAME_BYTES {
            return Err(format!(
                "q: at most {MAX_NAME_BYTES} bytes (a name is no longer)"
            ));
        }
        let sort = match self.sort.as_deref() {
            None => SortKey::Name,
            Some(s) => SortKey::parse(s)
                .ok_or_else(|| format!("sort={s:?}: expected one of {}", SortKey::NAMES))?,
        };
        // Names A to Z, values largest first, unless asked otherwise.
        let descending = match self.order.as_deref() {
            None => sort != SortKey::Name,
            Some("asc") => false,
            Some("desc") => true,
            Some(o) => return Err(format!("order={o:?}: expected asc or desc")),
        };
        let number = |key: &str, v: Option<String>, default: usize| match v {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| format!("{key}={v:?}: expected a whole number")),
        };
        let offset = number("offset", self.offset, 0)?;
        let limit = number("limit", self.limit, table::DEFAULT_LIMIT)?;
        if !(1..=table::MAX_LIMIT).contains(&limit) {
            return Err(format!("limit={limit}: expected 1 to {}", table::MAX_LIMIT));
        }
        Ok(Some(TableQuery {
            search,
            sort,
            descending,
            offset,
            limit,
        }))
    }
}

/// The live fleet, or a page of it; `X-Total-Count` says how many match (all, without a
/// search), so that a table can say "101–200 of 12,345".
pub(super) async fn unicorns(
    State(state): State<WebState>,
    Query(params): Query<UnicornParams>,
) -> Response {
    let query = match params.page() {
        Ok(query) => query,
        Err(e) => return bad_request(e),
    };
    match state.hub.unicorns(query).await {
        Some(Err(TableBusy)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({
                "error": "the fleet table has had its share of the service this second; try again in a second"
            })),
        )
            .into_response(),
        Some(Ok(list)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (HeaderName::from_static("x-total-count"), list.total.into()),
            ],
            list.body,
        )
            .into_response(),
        None => unavailable("shutting down".into()),
    }
}

/// A time parameter of a query string (`from`, `to`), if given; the error names it.
pub(super) fn time_param(key: &str, v: &Option<String>) -> Result<Option<i64>, String> {
    v.as_deref()
        .map(|t| {
            parse_status_time(t.as_bytes()).map_err(|_| {
                format!("{key}={t:?}: expected \"YYYY-MM-DD HH:MM:SS[.fff]\" (UTC) or RFC 3339")
            })
        })
        .transpose()
}

#[derive(Deserialize)]
pub(super) struct SummaryParams {
    name: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn summaries(
    State(state): State<WebState>,
    Query(q): Query<SummaryParams>,
) -> Response {
    let (from, to) = match (time_param("from", &q.from), time_param("to", &q.to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let query = SummaryQuery {
        name: q.name,
        from,
        to,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    match state.stores.summaries(query).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub(super) struct DeadLetterParams {
    limit: Option<usize>,
}

pub(super) async fn dead_letters(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<DeadLetterParams>,
) -> Response {
    // Dead letters hold raw input: an admin view, behind the token when one is set.
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    match state.stores.dead_letters(limit).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => unavailable(e),
    }
}

pub(super) async fn dashboard_config(State(state): State<WebState>) -> Response {
    json_bytes(bytes::Bytes::copy_from_slice(
        state.dashboard_config.as_bytes(),
    ))
}

pub(super) async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
        .into_response()
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<WebState>) -> Response {
    // A store that hangs must not hang the probe: no answer within 2 s is not ready.
    let store = state
        .stores
        .writable(std::time::Duration::from_secs(2))
        .await;
    let mut checks = serde_json::Map::new();
    checks.insert("store".into(), store.is_ok().into());
    let ingest_ok = !state.stopping() && !state.ingest.is_closed();
    checks.insert("ingest".into(), ingest_ok.into());
    for (name, health) in state.connections.iter() {
        // A name seen twice (the store's database and its output) is up only if both are.
        let up = health.up() && checks.get(*name).is_none_or(|v| v.as_bool() == Some(true));
        checks.insert((*name).into(), up.into());
    }
    let ready = checks.values().all(|v| v.as_bool() == Some(true));
    // What is wrong, in words, for each part that says (the store's last error, say).
    let mut reasons: serde_json::Map<String, serde_json::Value> = state
        .connections
        .iter()
        .filter(|(_, health)| !health.up())
        .filter_map(|(name, health)| Some(((*name).to_owned(), health.reason()?.into())))
        .collect();
    if let Err(why) = store {
        reasons.entry("store").or_insert_with(|| why.into());
    }
    let body = if reasons.is_empty() {
        json!({ "ready": ready, "checks": checks })
    } else {
        json!({ "ready": ready, "checks": checks, "reasons": reasons })
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
