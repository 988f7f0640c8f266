//! Continuous views over HTTP (CONTRACT §9): `GET /api/views` (every view, its SQL, columns,
//! window, state and counts), `GET /api/views/{name}` (its rows, newest window first), and,
//! behind the admin token, `POST /api/views` (the SQL as the body) and `DELETE
//! /api/views/{name}`. A view made at run time is kept in the store and comes back at the next
//! start.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{unauthorized, WebState};
use crate::output::store::views::{Def, ViewTables};
use crate::time::{format_status_time, Millis};
use crate::view::compile::ViewPlan;
use crate::view::plan::{parse, Window};
use crate::view::registry::{AddError, LiveView, Registry};

/// The largest view statement taken.
const MAX_SQL_BYTES: usize = 100 << 10;

/// What the web needs of views.
#[derive(Clone)]
pub struct ViewsWeb {
    /// The views kept.
    pub registry: Arc<Registry>,
    /// Their tables in the store.
    pub tables: ViewTables,
    /// With an archive: views defined at run time first compute their past from it.
    pub backfill: Option<crate::query::backfill::Backfill>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// What a service that keeps no views answers.
fn not_kept() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "views are kept in the embedded store (store.kind = \"embedded\")",
    )
}

/// A view as `GET /api/views` lists it.
fn describe(view: &LiveView) -> Value {
    let plan = &view.plan;
    let columns: Vec<Value> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let window = match plan.view().window {
        Window::Tumble { size_ms } => json!({ "kind": "TUMBLE", "size_ms": size_ms }),
        Window::Hop { slide_ms, size_ms } => {
            json!({ "kind": "HOP", "slide_ms": slide_ms, "size_ms": size_ms })
        }
        Window::Session { gap_ms } => json!({ "kind": "SESSION", "gap_ms": gap_ms }),
    };
    let mut out = json!({
        "name": view.name(),
        "sql": plan.view().sql,
        "columns": columns,
        "keys": plan.key_columns(),
        "window": window,
        "state": view.state(),
        "rows_emitted": view.rows.load(Relaxed),
        "dropped_late": view.dropped_late.load(Relaxed),
        "from_file": view.from_file,
        "created": format_status_time(view.created),
    });
    if let Some(why) = view.failure() {
        out["error"] = Value::String(why);
    }
    out
}

pub(super) async fn list(State(state): State<WebState>) -> Response {
    let Some(web) = state.views.as_ref() else {
        return not_kept();
    };
    let all: Vec<Value> = web.registry.list().iter().map(|v| describe(v)).collect();
    Json(all).into_response()
}

#[derive(Deserialize)]
pub(super) struct RowParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn rows(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(q): Query<RowParams>,
) -> Response {
    let Some(web) = state.views.as_ref() else {
        return not_kept();
    };
    if web.registry.get(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no view named {name:?}"));
    }
    let (from, to) = match (
        super::api::time_param("from", &q.from),
        super::api::time_param("to", &q.to),
    ) {
        (Ok(from), Ok(to)) => (from.unwrap_or(Millis::MIN), to.unwrap_or(Millis::MAX)),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let tables = web.tables.clone();
    let read = tokio::task::spawn_blocking(move || tables.rows(&name, from, to, limit)).await;
    match read {
        Ok(Ok(rows)) => {
            let mut body = String::with_capacity(2 + rows.iter().map(String::len).sum::<usize>());
            body.push('[');
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(row);
            }
            body.push(']');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

pub(super) async fn create(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let Some(web) = state.views.as_ref() else {
        return not_kept();
    };
    if body.len() > MAX_SQL_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a view's SQL is at most {MAX_SQL_BYTES} bytes"),
        );
    }
    let Ok(sql) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body is the view's SQL, in UTF-8",
        );
    };
    let def = match parse(sql) {
        Ok(def) => def,
        Err(r) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "error": r.to_string(),
                    "line": r.line,
                    "column": r.column,
                    "construct": r.construct,
                })),
            )
                .into_response()
        }
    };
    if web.registry.get(&def.name).is_some() {
        return error(
            StatusCode::CONFLICT,
            AddError::Exists(def.name.clone()).to_string(),
        );
    }
    let plan = match ViewPlan::new(def.clone()).await {
        Ok(plan) => plan,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.message, "construct": "SELECT" })),
            )
                .into_response()
        }
    };
    let created = crate::time::now_ms();
    let stored = Def {
        name: def.name.clone(),
        sql: def.sql.clone(),
        created,
        from_file: false,
    };
    // Stored (its table made, anything stored under its name before cleared: a file's view,
    // gone, answered another question) before any partition sees it: a view the API accepted
    // survives a restart, and no clearing races its first rows. A view whose rows cannot be
    // kept is not computed.
    let tables = web.tables.clone();
    let written = tokio::task::spawn_blocking(move || tables.put_def(&stored, true)).await;
    if let Err(e) = written
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    let view = Arc::new(LiveView::new(plan, false, created));
    // Set before the partitions see the view: they count only records from the cut on.
    if let Some(backfill) = &web.backfill {
        view.cut.store(backfill.cut(&view, &web.registry), Relaxed);
    }
    if let Err(e) = web.registry.add(Arc::clone(&view)) {
        let status = match e {
            AddError::Exists(_) => StatusCode::CONFLICT,
            AddError::Full => {
                // Not kept after all: what was stored of it goes.
                let (tables, name) = (web.tables.clone(), def.name.clone());
                let _ = tokio::task::spawn_blocking(move || tables.delete(&name)).await;
                StatusCode::INSUFFICIENT_STORAGE
            }
        };
        return error(status, e.to_string());
    }
    tracing::info!(view = %def.name, "view defined");
    if let Some(backfill) = &web.backfill {
        backfill.start(Arc::clone(&view), Arc::clone(&web.registry));
    }
    (StatusCode::CREATED, Json(describe(&view))).into_response()
}

pub(super) async fn delete(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let Some(web) = state.views.as_ref() else {
        return not_kept();
    };
    if let Some(view) = web.registry.get(&name) {
        if view.from_file {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "view {name:?} is defined by a file of views.dir: remove the file and restart"
                ),
            );
        }
    }
    let tables = web.tables.clone();
    let stored = {
        let tables = tables.clone();
        tokio::task::spawn_blocking(move || tables.defs()).await
    };
    let known = match stored {
        Ok(Ok(defs)) => defs.iter().any(|d| d.name == name),
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let removed = web.registry.remove(&name).is_some();
    if !removed && !known {
        return error(StatusCode::NOT_FOUND, format!("no view named {name:?}"));
    }
    let gone = name.clone();
    match tokio::task::spawn_blocking(move || tables.delete(&gone)).await {
        Ok(Ok(())) => {
            tracing::info!(view = %name, "view deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
