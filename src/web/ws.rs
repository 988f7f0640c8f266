//! `GET /ws`: the live feed of CONTRACT §5 — a snapshot first, then the hub's frames.
//!
//! Each client task owns a cursor into the hub's broadcast ring and nothing else; frames are
//! shared buffers. A client that falls behind the ring is resynchronised with a fresh snapshot;
//! one that accepts nothing for 10 s is disconnected. Read buffers are small: an idle client
//! costs a few kilobytes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use super::WebState;
use crate::hub::{Frame, Hub};
use crate::metrics::METRICS;

const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn upgrade(State(state): State<WebState>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| client(socket, state.hub, state.closing))
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

async fn client(mut socket: WebSocket, hub: Hub, closing: tokio_util::sync::CancellationToken) {
    let _connected = Connected::new();
    // Subscribe before taking the snapshot, so that nothing falls between them.
    let mut frames = hub.subscribe();
    let Some(snapshot) = hub.snapshot().await else {
        return;
    };
    if !send(&mut socket, snapshot).await {
        return;
    }
    loop {
        tokio::select! {
            () = closing.cancelled() => {
                // Frames still in the ring go out first: the last summaries matter.
                while let Ok(frame) = frames.try_recv() {
                    if !send(&mut socket, frame).await {
                        return;
                    }
                }
                let close = CloseFrame { code: 1001, reason: "server shutting down".into() };
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
                break;
            }
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if !send(&mut socket, frame).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    METRICS.ws_resyncs.fetch_add(1, Relaxed);
                    frames = frames.resubscribe();
                    let Some(snapshot) = hub.snapshot().await else { break };
                    if !send(&mut socket, snapshot).await {
                        break;
                    }
                }
                Err(RecvError::Closed) => {
                    let close = CloseFrame { code: 1001, reason: "server shutting down".into() };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
                    break;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                // Pings are answered by the protocol layer; clients have nothing else to say.
                Some(Ok(_)) => {}
            },
        }
    }
}
