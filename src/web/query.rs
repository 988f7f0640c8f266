//! SQL on a running service (CONTRACT §8): `POST /api/query` (admin) and `GET /api/trip` (a
//! unicorn's path from the archive, for the dashboard).
//!
//! A query runs on a thread of its own with one thread of parallelism and a memory limit, one
//! at a time, within a time and row limit (see [`QueryLimits`]): it can take one core, never the
//! pipeline's runtime, and never all the memory.

use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{unauthorized, WebState};
use crate::output::archive::target::Target;
use crate::query::{QueryError, Tables};
use crate::record::SummaryQuery;

/// What a query on the service may use.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Rows returned at most (`"truncated": true` past it).
    pub max_rows: usize,
    /// Stopped past this.
    pub timeout: Duration,
    /// Memory for its sorts, joins and aggregations.
    pub memory_bytes: usize,
}

/// The limits `serve` uses: 10,000 rows, 30 s, 512 MiB.
pub const LIMITS: QueryLimits = QueryLimits {
    max_rows: 10_000,
    timeout: Duration::from_secs(30),
    memory_bytes: 512 << 20,
};

/// Points of a trip returned at most.
pub const MAX_TRIP_POINTS: usize = 20_000;

/// Stored summaries a query on the service reads into memory at most (about 200 MB).
pub const MAX_SUMMARIES: usize = 1_000_000;

/// What the query handlers need.
#[derive(Clone)]
pub struct QueryWeb {
    /// The archive, if the service keeps one.
    pub archive: Option<Target>,
    /// One query at a time.
    pub running: Arc<tokio::sync::Semaphore>,
    /// Its limits.
    pub limits: QueryLimits,
}

impl QueryWeb {
    /// Queries over `archive` (and the store) with `limits`.
    pub fn new(archive: Option<Target>, limits: QueryLimits) -> QueryWeb {
        QueryWeb {
            archive,
            running: Arc::new(tokio::sync::Semaphore::new(1)),
            limits,
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Runs `sql` with the service's tables, one query at a time.
async fn answer(
    state: &WebState,
    sql: String,
    max_rows: usize,
) -> Result<(crate::query::Answer, Duration, OwnedSemaphorePermit), Response> {
    let web = &state.query;
    let Ok(permit) = Arc::clone(&web.running).try_acquire_owned() else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            Json(json!({"error": "another query is running; one runs at a time"})),
        )
            .into_response());
    };
    let started = Instant::now();
    let summaries = if crate::query::wants_summaries(&sql) {
        let all = SummaryQuery {
            name: None,
            from: None,
            to: None,
            limit: MAX_SUMMARIES + 1,
        };
        match state.stores.summaries(all).await {
            Ok(s) if s.len() > MAX_SUMMARIES => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the store holds more than {MAX_SUMMARIES} summaries, more than a query on the service reads; run it with stampede query on a stopped service (or a DynamoDB store)"),
                ))
            }
            Ok(s) => Some(s),
            Err(e) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the store: {e}"),
                ))
            }
        }
    } else {
        None
    };
    let mut views = Vec::new();
    if let Some(kept) = &state.views {
        for view in kept.registry.list().iter() {
            if !crate::query::names_view(&sql, view.name()) {
                continue;
            }
            let (tables, name) = (kept.tables.clone(), view.name().to_owned());
            let read = tokio::task::spawn_blocking(move || {
                tables.rows(&name, i64::MIN, i64::MAX, MAX_SUMMARIES + 1)
            })
            .await;
            match read {
                Ok(Ok(rows)) if rows.len() > MAX_SUMMARIES => {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("view {} holds more than {MAX_SUMMARIES} rows, more than a query on the service reads; run it with stampede query on a stopped service", view.name()),
                    ))
                }
                Ok(Ok(rows)) => views.push(crate::query::ViewRows {
                    sql: view.plan.view().sql.clone(),
                    rows,
                }),
                Ok(Err(e)) => {
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot read the store: {e}"),
                    ))
                }
                Err(e) => {
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot read the store: {e}"),
                    ))
                }
            }
        }
    }
    let tables = Tables {
        archive: web.archive.clone(),
        summaries,
        views,
    };
    let limits = web.limits;
    match crate::query::run_isolated(tables, sql, max_rows, limits.timeout, limits.memory_bytes)
        .await
    {
        Ok(answer) => Ok((answer, started.elapsed(), permit)),
        Err(QueryError::Sql(m)) => Err(error(StatusCode::BAD_REQUEST, m)),
        Err(e @ QueryError::Timeout(_)) => Err(error(StatusCode::REQUEST_TIMEOUT, e.to_string())),
        Err(QueryError::Source(m)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, m)),
        Err(e @ QueryError::TooLarge(_)) => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))
        }
        Err(QueryError::Stopped(m)) => Err(error(StatusCode::UNPROCESSABLE_ENTITY, m)),
    }
}

/// A body of `POST /api/query` given as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
    #[serde(default)]
    limit: Option<usize>,
}

/// `POST /api/query`: the SQL as the body (`text/plain`, or JSON `{"sql": …, "limit": N}`);
/// answers `{"columns": […], "rows": [{…}], "truncated": bool, "elapsed_ms": n}`.
pub(super) async fn query(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    // SQL reads every record kept: an admin view, behind the token when one is set.
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (sql, limit) = if json_body {
        match serde_json::from_str::<QueryBody>(&body) {
            Ok(q) => (q.sql, q.limit),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"sql\": \"…\", \"limit\": N}}: {e}"),
                )
            }
        }
    } else {
        (body, None)
    };
    if sql.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "no SQL: send it as the body");
    }
    let max = state.query.limits.max_rows;
    let rows = limit.unwrap_or(max).clamp(1, max);
    match answer(&state, sql, rows).await {
        Ok((answer, took, permit)) => {
            let columns: Vec<&String> = answer.schema.fields().iter().map(|f| f.name()).collect();
            let mut out = String::from("{\"columns\":");
            out.push_str(&serde_json::to_string(&columns).unwrap_or_default());
            out.push_str(",\"rows\":[");
            // Rendered a slice of rows at a time and counted: JSON can be several times the
            // Arrow answer the worker was held to (a control character is six bytes escaped).
            let mut first = true;
            for batch in &answer.batches {
                let mut at = 0;
                while at < batch.num_rows() {
                    let n = RENDER_ROWS.min(batch.num_rows() - at);
                    let slice = crate::query::Answer {
                        schema: Arc::clone(&answer.schema),
                        batches: vec![batch.slice(at, n)],
                        truncated: false,
                    };
                    for row in crate::query::json_rows(&slice) {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        out.push_str(&row);
                    }
                    if out.len() > MAX_RESPONSE_BYTES {
                        return error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("the answer is larger than {} MiB as JSON: select fewer rows or columns (LIMIT), or run it with stampede query", MAX_RESPONSE_BYTES >> 20),
                        );
                    }
                    at += n;
                }
            }
            out.push_str(&format!(
                "],\"truncated\":{},\"elapsed_ms\":{}}}",
                answer.truncated,
                took.as_millis()
            ));
            // The query's slot is held until the answer is sent (or its send deadline passes):
            // a client that asks and never reads cannot pile answers up in memory.
            let body = super::server::response_body(out, SEND_TIMEOUT, permit);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(response) => response,
    }
}

/// Rows rendered at a time, between checks of the answer's size.
const RENDER_ROWS: usize = 256;

/// The largest JSON answer of `POST /api/query`.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// An answer must have been sent within this (a client that stops reading loses it).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /api/trip` parameters.
#[derive(Deserialize)]
pub(super) struct TripParams {
    name: String,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/trip?name=N[&from=T&to=T]`: the unicorn's positions from the archive, oldest first
/// (`from` and `to` in the `StatusTime` formats), at most [`MAX_TRIP_POINTS`]:
/// `{"name", "points": [[longitude, latitude, "StatusTime"], …], "truncated"}`.
pub(super) async fn trip(State(state): State<WebState>, Query(q): Query<TripParams>) -> Response {
    if q.name.is_empty()
        || q.name.len() > crate::record::MAX_NAME_BYTES
        || q.name.chars().any(char::is_control)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "name: 1 to 64 bytes, no control characters",
        );
    }
    if state.query.archive.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "this service keeps no archive (archive.kind = \"none\")",
        );
    }
    let mut sql = format!(
        "SELECT longitude, latitude, statustime FROM wildrydes WHERE name = '{}'",
        q.name.replace('\'', "''")
    );
    for (key, value, op) in [("from", &q.from, ">="), ("to", &q.to, "<=")] {
        if let Some(text) = value.as_deref().filter(|t| !t.is_empty()) {
            match crate::time::parse_status_time(text.as_bytes()) {
                Ok(t) => sql.push_str(&format!(
                    " AND statustime {op} TIMESTAMP '{}'",
                    crate::time::format_status_time(t)
                )),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                        "{key}={text:?}: expected \"YYYY-MM-DD HH:MM:SS[.fff]\" (UTC) or RFC 3339"
                    ),
                    )
                }
            }
        }
    }
    sql.push_str(" ORDER BY statustime");
    match answer(&state, sql, MAX_TRIP_POINTS).await {
        Ok((answer, _, _permit)) => {
            let points: Vec<serde_json::Value> = crate::query::row_values(&answer)
                .into_iter()
                .map(serde_json::Value::Array)
                .collect();
            Json(json!({"name": q.name, "points": points, "truncated": answer.truncated}))
                .into_response()
        }
        Err(response) => response,
    }
}
