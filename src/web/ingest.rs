//! `POST /ingest`: NDJSON or a JSON array of telemetry records, answered with what became of
//! each. The body is cut into records and decoded here (in the connection's task, so requests
//! decode in parallel); windowing happens in the engine task, which replies once per request.

use std::ops::Range;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{unauthorized, WebState};
use crate::decode::{array_elements, decode_at, record_lines, Detached};
use crate::pipeline::Batch;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(super) async fn ingest(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    if state.stopping() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if let Some(why) = state.backlog.full() {
        // Records taken now could only wait in memory, where a stop would lose them.
        return busy(&why);
    }
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let payload = match to_bytes(body, limit).await {
        Ok(payload) => payload,
        Err(e) if is_timeout(&e) => {
            return error(StatusCode::REQUEST_TIMEOUT, &e.to_string());
        }
        Err(_) => return too_large(limit),
    };
    let (records, plain_lines): (Vec<Range<usize>>, bool) =
        match payload.iter().find(|b| !crate::decode::is_blank(&[**b])) {
            Some(b'[') => match array_elements(&payload) {
                Some(ranges) => (ranges, false),
                // Not a valid JSON array: one malformed record, counted and kept as a dead letter.
                None => (std::iter::once(0..payload.len()).collect(), false),
            },
            _ => record_lines(&payload),
        };
    if records.len() > MAX_RECORDS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{} records in one request: at most {MAX_RECORDS} are taken (send smaller batches)",
                records.len()
            ),
        );
    }
    // Decoded here, on the request's own thread: requests decode in parallel on every core,
    // and the partition's one task only windows.
    // A body checked as UTF-8 whole spares checking each record (a body with a record that is
    // not UTF-8 is checked record by record, as the decoder does).
    let text = std::str::from_utf8(&payload).ok();
    let decoded = records
        .iter()
        .map(|r| decode_at(&payload, text, r.clone()).map(|record| Detached::new(record, &payload)))
        .collect();
    let (reply, outcome) = oneshot::channel();
    let count = records.len();
    let batch = Batch {
        payload,
        records,
        positions: Vec::new(),
        sequences: Vec::new(),
        reply: Some(reply),
        decoded,
        plain_lines,
    };
    match state.ingest.try_send(batch) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(batch)) => {
            // The partition is held up. By an output that cannot write: what is sent now would
            // only wait in memory behind it, so say so rather than hang the request.
            if let Some(why) = state.backlog.failing() {
                return busy(&why);
            }
            if state.ingest.send(batch).await.is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        }
    }
    let Ok(outcome) = outcome.await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let errors: Vec<_> = outcome
        .errors
        .iter()
        .map(|(index, r)| match r.field {
            Some(f) => json!({ "index": index, "reason": r.reason.as_str(), "field": f.as_str() }),
            None => json!({ "index": index, "reason": r.reason.as_str() }),
        })
        .collect();
    debug_assert_eq!(outcome.accepted + outcome.rejected, count as u64);
    Json(json!({ "accepted": outcome.accepted, "rejected": outcome.rejected, "errors": errors }))
        .into_response()
}

/// 503 with `Retry-After`: an output cannot write, and what is sent now would wait for it.
fn busy(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        Json(json!({ "error": why })),
    )
        .into_response()
}

/// Records in one request at most: far more than a body of real records holds (they are 150
/// bytes or more), so that a body of tiny bad ones (`[0,0,…]`: 4 million in 8 MB) cannot make
/// millions of dead letters in a second.
pub const MAX_RECORDS: usize = 100_000;

/// Whether reading the body failed on its deadline (see [`super::server::BODY_TIMEOUT`]).
fn is_timeout(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<super::server::BodyTimedOut>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body over {limit} bytes (web.max_body_bytes): send smaller batches"),
    )
}
