//! `/console/api`: the console's JSON API. A session is required (401
//! without), writes carry the session's CSRF token in `X-CSRF-Token` (403
//! and audited without), and an alarm that is not this user's is 403 and
//! audited. Errors are `{"error": "..."}` in the user's language.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::board::{act, close_fields, load_for, view, visible, Acted, Action};
use super::i18n::t;
use super::{blocking, csrf_refused, json_error, store_failed, ApiUser, ConsoleState, Who};
use crate::access::{AuditEntry, Lang};
use crate::alarm::AlarmState;
use crate::store::now_ms;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/api/alarms", get(list))
        .route("/console/api/alarms/{id}", get(one))
        .route("/console/api/alarms/{id}/acknowledge", post(acknowledge))
        .route("/console/api/alarms/{id}/close", post(close))
        .route("/console/api/{*rest}", get(no_such).post(no_such))
}

async fn no_such() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "no such console API path; see docs/console.md",
    )
}

fn not_found(lang: Lang) -> Response {
    json_error(StatusCode::NOT_FOUND, t(lang, "error_not_found"))
}

async fn list(
    State(s): State<ConsoleState>,
    who: ApiUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = who.lang();
    let state = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(v) => match AlarmState::parse(v) {
            Some(st) => Some(st),
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("state {v:?}: open, acknowledged or closed"),
                )
            }
        },
    };
    let group = match q.get("group").map(String::as_str) {
        None | Some("") => None,
        Some(g @ ("care" | "technical")) => Some(g.to_string()),
        Some(v) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("group {v:?}: care or technical"),
            )
        }
    };
    let p = who.principal.clone();
    match blocking(s.store(), move |st| visible(st, &p, state)).await {
        Ok(mut alarms) => {
            if let Some(g) = group {
                alarms.retain(|v| v.group == g);
            }
            Json(json!({ "alarms": alarms })).into_response()
        }
        Err(e) => store_failed(e, lang, true),
    }
}

fn acted_json(who: &Who, acted: Acted) -> Response {
    let lang = who.lang();
    match acted {
        // Callers turn a success into the alarm's view first.
        Acted::Done(a) => Json(*a).into_response(),
        Acted::NotFound => not_found(lang),
        Acted::Forbidden => json_error(StatusCode::FORBIDDEN, t(lang, "error_forbidden")),
        Acted::Conflict(m) => json_error(StatusCode::CONFLICT, m),
        Acted::Invalid(m) => json_error(StatusCode::UNPROCESSABLE_ENTITY, m),
        Acted::Store(e) => store_failed(e, lang, true),
    }
}

/// The alarm as a view, after an action.
async fn done(s: &ConsoleState, who: &Who, acted: Acted) -> Response {
    let Acted::Done(alarm) = acted else {
        return acted_json(who, acted);
    };
    let lang = who.lang();
    match blocking(s.store(), move |st| view(st, *alarm, lang)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_failed(e, lang, true),
    }
}

async fn one(State(s): State<ConsoleState>, who: ApiUser, Path(id): Path<String>) -> Response {
    let lang = who.lang();
    let Ok(id) = id.parse::<u64>() else {
        return not_found(lang);
    };
    let alarm = match load_for(&s, &who, id).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(lang),
        Err(acted) => return acted_json(&who, acted),
    };
    let (user, remote) = (who.principal.username.clone(), who.remote.clone());
    let r = blocking(s.store(), move |st| {
        if let Some(r) = alarm.resident.as_deref() {
            if st.resident(r)?.is_some() {
                st.audit_now(AuditEntry::new(
                    &user,
                    "view_resident",
                    &format!("resident/{r}"),
                    &format!("ok: alarm/{}", alarm.id),
                    &remote,
                    now_ms(),
                ))?;
            }
        }
        view(st, alarm, lang)
    })
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_failed(e, lang, true),
    }
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// The body's refusal before anything else is looked at.
fn body_refused(lang: Lang, body: &Result<Bytes, BytesRejection>) -> Option<Response> {
    match body {
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Some(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            t(lang, "error_too_large"),
        )),
        Err(_) => Some(json_error(
            StatusCode::BAD_REQUEST,
            t(lang, "error_malformed"),
        )),
        Ok(_) => None,
    }
}

/// An alarm action's request, checked: the body within its limit, the
/// alarm id, the session's CSRF token. Otherwise the answer to give.
async fn checked(
    s: &ConsoleState,
    who: &Who,
    id: &str,
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
) -> Result<u64, Response> {
    let lang = who.lang();
    if let Some(r) = body_refused(lang, body) {
        return Err(r);
    }
    let Ok(id) = id.parse::<u64>() else {
        return Err(not_found(lang));
    };
    if !who.csrf_ok(csrf_header(headers)) {
        return Err(csrf_refused(s, who, &format!("alarm/{id}"), true).await);
    }
    Ok(id)
}

async fn acknowledge(
    State(s): State<ConsoleState>,
    who: ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = match checked(&s, &who, &id, &headers, &body).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let acted = act(&s, &who, id, Action::Acknowledge).await;
    done(&s, &who, acted).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

async fn close(
    State(s): State<ConsoleState>,
    who: ApiUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let lang = who.lang();
    let id = match checked(&s, &who, &id, &headers, &body).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let bytes = body.unwrap_or_default();
    let b: CloseBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("{} ({e})", t(lang, "error_malformed")),
            )
        }
    };
    let action = match close_fields(lang, b.note.as_deref(), b.cause.as_deref()) {
        Ok(a) => a,
        Err(m) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    let acted = act(&s, &who, id, action).await;
    done(&s, &who, acted).await
}
