//! `GET /api/alerts`, the built-in subscriptions' API (`/api/subscriptions`, admin) and the
//! pages their mails link to (`/subscriptions/confirm`, `/subscriptions/unsubscribe`): a `GET`
//! shows a page with a button, and only its `POST` changes anything, so mail scanners that
//! prefetch links confirm or unsubscribe nobody. The unsubscribe `POST` is also RFC 8058's
//! one-click (`List-Unsubscribe=One-Click` in a form body).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{unauthorized, WebState};
use crate::alert::Rule;
use crate::hub::AlertQuery;
use crate::output::notify::smtp::Mailer;
use crate::output::store::subscriptions::Subscriptions;

/// What the web needs of alerts.
#[derive(Clone)]
pub struct AlertsWeb {
    /// The rules (to check subscription filters).
    pub rules: Arc<[Rule]>,
    /// The built-in e-mail channel, when `[alerts.smtp] server` is set.
    pub smtp: Option<(Subscriptions, Arc<Mailer>)>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Deserialize)]
pub(super) struct AlertParams {
    state: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list(State(state): State<WebState>, Query(q): Query<AlertParams>) -> Response {
    let all = match q.state.as_deref() {
        None | Some("firing") => false,
        Some("all") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state={other:?}: expected firing or all"),
            )
        }
    };
    let query = AlertQuery {
        all,
        name: q.name,
        limit: q.limit.unwrap_or(1_000).min(crate::hub::RECENT_ALERTS),
    };
    match state.hub.alerts(query).await {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

/// The built-in channel's subscriptions, mailer and rules.
type BuiltIn<'a> = (&'a Subscriptions, &'a Arc<Mailer>, &'a [Rule]);

/// The built-in channel, or the reason there is none.
fn smtp(state: &WebState) -> Result<BuiltIn<'_>, Box<Response>> {
    match &state.alerts {
        Some(AlertsWeb {
            smtp: Some((subs, mailer)),
            rules,
        }) => Ok((subs, mailer, rules)),
        Some(_) => Err(Box::new(error(
            StatusCode::CONFLICT,
            "built-in e-mail subscriptions need [alerts.smtp] server (with [alerts.sns], subscribe through SNS: stampede subscribe)",
        ))),
        None => Err(Box::new(error(
            StatusCode::CONFLICT,
            "alerts are off (alerts.enabled)",
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSubscription {
    email: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    rules: Vec<String>,
}

pub(super) async fn subscribe(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let (subs, mailer, rules) = match smtp(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let req: NewSubscription = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"email\":\"…\",\"names\":[…],\"rules\":[…]}}: {e}"),
            )
        }
    };
    let s = match subs
        .subscribe(&req.email, req.names, req.rules, rules)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                e.reason,
            )
        }
    };
    if let Err(e) = mailer.confirmation(&s).await {
        tracing::warn!(error = %e, "confirmation mail not sent");
        // Nothing half done: the same request may simply be sent again.
        if let Err(e) = subs.remove(&s.email).await {
            tracing::warn!(error = %e, "a pending subscription whose mail failed is left in the store");
        }
        return error(
            StatusCode::BAD_GATEWAY,
            format!("the confirmation mail could not be sent ({e}); nothing was subscribed, POST again to retry"),
        );
    }
    tracing::info!(email = %s.email, "subscription pending; confirmation mail sent");
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "email": s.email,
            "state": s.state(),
            "names": s.names,
            "rules": s.rules,
            "message": "a confirmation mail is on its way: the subscription starts once its link is followed",
        })),
    )
        .into_response()
}

pub(super) async fn list_subscriptions(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let (subs, _, _) = match smtp(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let list: Vec<serde_json::Value> = subs
        .list()
        .into_iter()
        .map(|s| json!({"email": s.email, "state": s.state(), "names": s.names, "rules": s.rules}))
        .collect();
    Json(list).into_response()
}

pub(super) async fn delete_subscription(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let (subs, _, _) = match smtp(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match subs.remove(&email).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no subscription for {email}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
pub(super) struct TokenParam {
    #[serde(default)]
    token: String,
}

/// A small page: a title, a line of text and, for a pending action, its button.
fn page(status: StatusCode, title: &str, text: &str, button: Option<(&str, &str)>) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let form = button.map_or(String::new(), |(action, label)| {
        format!(
            "<form method=\"post\" action=\"{}\"><button type=\"submit\">{}</button></form>",
            esc(action),
            esc(label)
        )
    });
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title><style>body{{font:16px system-ui,sans-serif;max-width:34em;margin:4em auto;padding:0 1em}}button{{font:inherit;padding:.5em 1.2em}}</style></head><body><h1>{t}</h1><p>{x}</p>{form}</body></html>",
        t = esc(title),
        x = esc(text),
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

fn unknown_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This link belongs to no subscription: it was unsubscribed already, or the link is incomplete.",
        None,
    )
}

/// What a link of a mail does.
#[derive(Clone, Copy)]
enum Link {
    Confirm,
    Unsubscribe,
}

impl Link {
    fn path(self) -> &'static str {
        match self {
            Link::Confirm => "/subscriptions/confirm",
            Link::Unsubscribe => "/subscriptions/unsubscribe",
        }
    }
}

/// The page a link opens: what the button would do, and the button. A `GET` changes nothing.
async fn link_page(state: &WebState, token: &str, link: Link) -> Response {
    let Ok((subs, _, _)) = smtp(state) else {
        return unknown_link();
    };
    let Some(s) = subs.by_token(token).await else {
        return unknown_link();
    };
    let (title, question, label) = match link {
        Link::Confirm if s.confirmed => {
            let text = format!("{} already gets these alerts.", s.email);
            return page(StatusCode::OK, "Subscribed", &text, None);
        }
        Link::Confirm => (
            "Confirm your subscription",
            format!("Send the Wild Rydes fleet's alerts to {}?", s.email),
            "Confirm",
        ),
        Link::Unsubscribe => (
            "Unsubscribe",
            format!("Stop sending the fleet's alerts to {}?", s.email),
            "Unsubscribe",
        ),
    };
    let action = format!("{}?token={token}", link.path());
    page(StatusCode::OK, title, &question, Some((&action, label)))
}

/// The button of a link's page (or RFC 8058's one-click `POST`): does what it says.
async fn link_action(state: &WebState, token: &str, link: Link) -> Response {
    let Ok((subs, _, _)) = smtp(state) else {
        return unknown_link();
    };
    let Some(s) = subs.by_token(token).await else {
        return unknown_link();
    };
    let done = match link {
        Link::Confirm => subs.confirm(token).await.map(|_| ()),
        Link::Unsubscribe => subs.remove(&s.email).await.map(|_| ()),
    };
    match (done, link) {
        (Ok(()), Link::Confirm) => {
            tracing::info!(email = %s.email, "subscription confirmed");
            let text = format!(
                "{} will get the alerts it asked for. Every alert mail has a link to stop them.",
                s.email
            );
            page(StatusCode::OK, "Subscribed", &text, None)
        }
        (Ok(()), Link::Unsubscribe) => {
            tracing::info!(email = %s.email, "unsubscribed through the mail's link");
            let text = format!("{} gets no more alerts.", s.email);
            page(StatusCode::OK, "Unsubscribed", &text, None)
        }
        (Err(e), _) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Nothing changed",
            &format!("The store failed: {e}. Try again."),
            None,
        ),
    }
}

pub(super) async fn confirm_page(
    State(state): State<WebState>,
    Query(q): Query<TokenParam>,
) -> Response {
    link_page(&state, &q.token, Link::Confirm).await
}

pub(super) async fn confirm(
    State(state): State<WebState>,
    Query(q): Query<TokenParam>,
) -> Response {
    link_action(&state, &q.token, Link::Confirm).await
}

pub(super) async fn unsubscribe_page(
    State(state): State<WebState>,
    Query(q): Query<TokenParam>,
) -> Response {
    link_page(&state, &q.token, Link::Unsubscribe).await
}

pub(super) async fn unsubscribe(
    State(state): State<WebState>,
    Query(q): Query<TokenParam>,
) -> Response {
    link_action(&state, &q.token, Link::Unsubscribe).await
}
