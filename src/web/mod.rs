//! The HTTP and WebSocket server of CONTRACT §5: dashboard, ingest, API, metrics, health.
//!
//! The last stage of the flow and the first thing a user sees. Handlers are thin: ingest cuts a
//! body into records and hands them to the engine task; the API reads the store; `/ws` relays
//! the hub's frames.

pub mod alerts;
mod api;
pub mod guard;
mod ingest;
pub mod query;
pub mod server;
pub mod tls;
pub mod views;
mod ws;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::pipeline::Batch;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    /// The HTTP partition's engine task.
    pub ingest: mpsc::Sender<Batch>,
    /// Live fan-out.
    pub hub: Hub,
    /// Where summaries and dead letters are read back.
    pub stores: crate::output::store::Stores,
    /// Bearer token for ingest and admin endpoints; empty for none.
    pub token: Arc<str>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Set once shutdown starts: ingest answers 503.
    pub stopping: Arc<AtomicBool>,
    /// What waits for outputs that cannot write: ingest answers 503 when it is full.
    pub backlog: crate::output::Backlog,
    /// Dashboard settings (JSON).
    pub dashboard_config: Arc<str>,
    /// One slot per WebSocket client (`web.max_ws_clients`).
    pub ws_slots: Arc<server::Slots>,
    /// What `/readyz` reports, by name: the source's connection and each output's health
    /// (`store`, `summary_stream`, `dead_letter_stream`).
    pub connections: Arc<[(&'static str, crate::output::Health)]>,
    /// Alert rules and the built-in subscriptions, when alerts are on.
    pub alerts: Option<alerts::AlertsWeb>,
    /// SQL over the archive and the store.
    pub query: query::QueryWeb,
    /// Continuous views, when the store keeps them.
    pub views: Option<views::ViewsWeb>,
}

impl WebState {
    /// Whether the request carries the configured token (always true when none is configured).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.token.is_empty() {
            return true;
        }
        let given = guard::bearer(headers).unwrap_or_default();
        crate::clients::token::constant_time_eq(given.as_bytes(), self.token.as_bytes())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": "missing or wrong bearer token"})),
    )
        .into_response()
}

/// The router, behind the [`guard`] checks.
pub fn router(state: WebState, guard: Arc<guard::Guard>) -> Router {
    // Ingest enforces the body limit itself (to answer 413 with a JSON body); the extractor's own
    // limit is set just above it.
    let limit = state.max_body_bytes.saturating_add(1);
    Router::new()
        .route("/", get(dashboard_html))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .route(
            "/vendor/uplot.js",
            get(|| vendored(UPLOT_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/vendor/uplot.css",
            get(|| vendored(UPLOT_CSS, "text/css; charset=utf-8")),
        )
        .route("/map/land-110m.json", get(|| land(LAND_110M)))
        .route("/map/land-50m.json", get(|| land(LAND_50M)))
        .route("/ingest", post(ingest::ingest))
        .route("/ws", get(ws::upgrade))
        .route("/api/unicorns", get(api::unicorns))
        .route("/api/summaries", get(api::summaries))
        .route("/api/dead-letters", get(api::dead_letters))
        .route("/api/config", get(api::dashboard_config))
        .route("/api/alerts", get(alerts::list))
        .route("/api/query", post(query::query))
        .route("/api/trip", get(query::trip))
        .route(
            "/api/subscriptions",
            get(alerts::list_subscriptions).post(alerts::subscribe),
        )
        .route(
            "/api/subscriptions/{email}",
            axum::routing::delete(alerts::delete_subscription),
        )
        .route(
            "/subscriptions/confirm",
            get(alerts::confirm_page).post(alerts::confirm),
        )
        .route(
            "/subscriptions/unsubscribe",
            get(alerts::unsubscribe_page).post(alerts::unsubscribe),
        )
        .route("/api/views", get(views::list).post(views::create))
        .route("/api/views/{name}", get(views::rows).delete(views::delete))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(server::body_deadline))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("../../dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../../dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../dashboard/dashboard.css");

/// Natural Earth land outlines (npm `world-atlas`, see `dashboard/world-atlas-NOTICE.md`), so
/// that the map is never blank, tiles or not.
const LAND_110M: &[u8] = include_bytes!("../../dashboard/land-110m.json");
const LAND_50M: &[u8] = include_bytes!("../../dashboard/land-50m.json");

/// uPlot, the Views panel's charts (npm `uplot`, see `dashboard/vendor/uPlot-NOTICE.md`).
const UPLOT_JS: &str = include_str!("../../dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../dashboard/vendor/uPlot.min.css");

async fn vendored(body: &'static str, kind: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            // The same bytes for the life of the binary.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
}

async fn land(topojson: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // The same bytes for the life of the binary.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        topojson,
    )
}

async fn dashboard_html() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn dashboard_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

async fn dashboard_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
    )
}
