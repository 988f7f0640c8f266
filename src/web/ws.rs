//! `GET /ws`: the live feed of CONTRACT §5 — a snapshot first, then the hub's frames.
//!
//! `GET /ws?view=SOUTH,WEST,NORTH,EAST` subscribes to part of the map instead, and the client
//! may move it with `{"type":"viewport","south":…,"west":…,"north":…,"east":…}` messages: it
//! gets records of the unicorns in view only, or counts per cell when they are too many (see
//! `hub::view`).
//!
//! `GET /ws?views=a,b` (or the message `{"type":"views","views":["a","b"]}`) adds the rows of
//! those continuous views (CONTRACT §9) as they are written: `{"type":"view","view":"a",
//! "rows":[…]}`.
//!
//! Each client task owns its queue from the hub (shared frames, bounded in count and bytes). A
//! client that falls behind is resynchronised with a fresh snapshot; one that accepts nothing
//! for 20 s is disconnected. Read buffers are small: an idle client costs a few kilobytes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::WebState;
use futures_util::SinkExt;

use crate::hub::view::View;
use crate::hub::{Frame, Hub, LiveSubscription};
use crate::metrics::METRICS;

const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// A client's views are taken at most this often (each costs the hub a look-up and a snapshot of
/// up to `MAX_IN_VIEW` records); the dashboard sends one 150 ms after the map stops moving.
const VIEW_EVERY: Duration = Duration::from_millis(100);

pub(super) async fn upgrade(
    State(state): State<WebState>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<super::server::Peer>>,
    connection: Option<Extension<super::server::ConnectionSlot>>,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(views) = views_parameter(query.as_deref().unwrap_or("")) else {
        let body = serde_json::json!({
            "error": "views must be NAME,NAME,… (at most 64 names of 1 to 64 letters, digits, '-' or '_')"
        });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let view = match query.as_deref().map(view_parameter) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(view))) => Some(view),
        Some(Err(())) => {
            let body = serde_json::json!({
                "error": "view must be SOUTH,WEST,NORTH,EAST in degrees (south ≤ north, longitudes −180 to 180)"
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    // A slot per client, held for as long as it is connected: past the cap, 503 before the
    // upgrade, so a crowd of browsers costs a refused request each, not memory.
    let slot = match state.ws_slots.take(peer.map(|Extension(p)| p.0)) {
        Ok(slot) => slot,
        Err(reason) => {
            METRICS.ws_refused.fetch_add(1, Relaxed);
            let body = serde_json::json!({ "error": reason });
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                axum::Json(body),
            )
                .into_response();
        }
    };
    // The dashboard offers the `stampede` subprotocol (beside its read token, if any): echo it.
    ws.protocols([super::guard::WS_PROTOCOL])
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            client(socket, state.hub, view, views).await;
            // The connection's slot too: an upgraded socket still holds a descriptor.
            drop((slot, connection));
        })
}

/// The `view` parameter of the query, if there is one.
fn view_parameter(query: &str) -> Result<Option<View>, ()> {
    let Some(value) = query.split('&').find_map(|p| p.strip_prefix("view=")) else {
        return Ok(None);
    };
    // Commas may come percent-encoded.
    View::parse_query(&value.replace("%2C", ",").replace("%2c", ","))
        .map(Some)
        .ok_or(())
}

/// The `views` parameter: names of continuous views, comma-separated.
fn views_parameter(query: &str) -> Result<Vec<Arc<str>>, ()> {
    let Some(value) = query.split('&').find_map(|p| p.strip_prefix("views=")) else {
        return Ok(Vec::new());
    };
    let value = value.replace("%2C", ",").replace("%2c", ",");
    view_names(value.split(',').filter(|n| !n.is_empty()))
}

/// Checked view names (CONTRACT §9), at most [`crate::view::registry::MAX_VIEWS`].
fn view_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<Arc<str>>, ()> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for name in names {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok || out.len() >= crate::view::registry::MAX_VIEWS {
            return Err(());
        }
        if !out.iter().any(|n| &**n == name) {
            out.push(name.into());
        }
    }
    Ok(out)
}

/// `{"type":"views","views":[…]}`: the continuous views a client wants rows of now.
fn views_message(text: &str) -> Option<Vec<Arc<str>>> {
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(borrow)]
        views: Vec<&'a str>,
    }
    let m: Message<'_> = serde_json::from_str(text).ok()?;
    (m.kind == "views")
        .then(|| view_names(m.views.into_iter()).ok())
        .flatten()
}

/// Counts a connected client for as long as it lives.
struct Connected;

impl Connected {
    fn new() -> Self {
        METRICS.ws_clients.fetch_add(1, Relaxed);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        METRICS.ws_clients.fetch_sub(1, Relaxed);
    }
}

async fn send(socket: &mut WebSocket, frame: Frame) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(frame))).await {
        Ok(Ok(())) => {
            METRICS.ws_frames.fetch_add(1, Relaxed);
            true
        }
        _ => false,
    }
}

/// Sends `first` and every frame already queued behind it (up to 1 MiB) with one flush: a
/// minute's burst of small summary frames becomes a few large writes instead of one system call
/// each.
async fn send_queued(socket: &mut WebSocket, sub: &mut LiveSubscription, first: Frame) -> bool {
    let batch = async {
        let mut bytes = first.as_str().len();
        let mut n = 1;
        socket.feed(Message::Text(first)).await?;
        while bytes < 1 << 20 {
            let Ok(frame) = sub.frames.try_recv() else {
                break;
            };
            let len = frame.as_str().len();
            sub.queued.fetch_sub(len, Relaxed);
            bytes += len;
            n += 1;
            socket.feed(Message::Text(frame)).await?;
        }
        socket.flush().await?;
        Ok::<u64, axum::Error>(n)
    };
    match tokio::time::timeout(SEND_TIMEOUT, batch).await {
        Ok(Ok(n)) => {
            METRICS.ws_frames.fetch_add(n, Relaxed);
            true
        }
        _ => false,
    }
}

async fn client(mut socket: WebSocket, hub: Hub, mut view: Option<View>, mut views: Vec<Arc<str>>) {
    let _connected = Connected::new();
    let mut last_view: Option<tokio::time::Instant> = None;
    let Some(mut sub) = hub.subscribe(view).await else {
        return;
    };
    if !views.is_empty() && !hub.set_views(sub.id, views.clone()).await {
        return;
    }
    if !send(&mut socket, sub.snapshot.clone()).await {
        return;
    }
    loop {
        tokio::select! {
            frame = sub.frames.recv() => {
                if sub.lagged.load(Relaxed) {
                    // Fell behind: what is queued is stale; start again from a snapshot.
                    METRICS.ws_resyncs.fetch_add(1, Relaxed);
                    let Some(fresh) = hub.subscribe(view).await else { break };
                    sub = fresh;
                    if !views.is_empty() && !hub.set_views(sub.id, views.clone()).await {
                        break;
                    }
                    if !send(&mut socket, sub.snapshot.clone()).await {
                        return;
                    }
                    continue;
                }
                match frame {
                    Some(frame) => {
                        sub.queued.fetch_sub(frame.as_str().len(), Relaxed);
                        if !send_queued(&mut socket, &mut sub, frame).await {
                            return;
                        }
                    }
                    None => {
                        // The hub has stopped: everything it sent went out; say goodbye.
                        let close = CloseFrame { code: 1001, reason: "server shutting down".into() };
                        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
                        break;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                // A new view (messages are at most 64 KiB); anything else is ignored. Pings are
                // answered by the protocol layer.
                Some(Ok(Message::Text(text))) => {
                    if let Some(wanted) = views_message(text.as_str()) {
                        views = wanted;
                        if !hub.set_views(sub.id, views.clone()).await {
                            break;
                        }
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    let too_soon = last_view.is_some_and(|t| now.duration_since(t) < VIEW_EVERY);
                    if let Some(moved) = View::from_message(text.as_str()).filter(|_| !too_soon) {
                        last_view = Some(now);
                        view = Some(moved);
                        if !hub.set_view(sub.id, moved).await {
                            break;
                        }
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
