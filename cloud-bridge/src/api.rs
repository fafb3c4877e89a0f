//! The JSON API for the staff console: alarms and their workflow, events,
//! the live alarm stream, dead letters, metrics.
//!
//! There is no login yet, so `Config::validate` keeps the listener on a
//! loopback address. Every alarm action is committed (fsync) by the store
//! writer before the answer is sent, so a 200 means durable. Errors are
//! `{"error": "..."}` with 404 (no such alarm), 409 (the alarm's state does
//! not allow it: someone else took it, or it is closed), 422 (the body is
//! wrong) or 500/503 (the store).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use trygg_uplink::metrics::Metrics;

use crate::alarm::{AlarmState, Cause, WorkflowError};
use crate::store::{ActionError, AlarmChange, Done, Op, Store, StoreError, StoreWriter};

/// The hand-written OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");
/// The largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub const DEFAULT_EVENT_LIMIT: usize = 100;
pub const MAX_EVENT_LIMIT: usize = 10_000;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub writer: StoreWriter,
    pub metrics: Arc<Metrics>,
    pub changes: broadcast::Sender<AlarmChange>,
    /// Ends the open streams at shutdown, so graceful shutdown can finish.
    pub cancel: CancellationToken,
    /// Publishes for the uplink connection (gateway settings).
    pub outbox: tokio::sync::mpsc::UnboundedSender<crate::settings::Outgoing>,
}

/// Every route, in one list, so a test can hold the OpenAPI document to it.
pub fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/alarms", get(list_alarms)),
        ("/api/v1/alarms/{id}", get(get_alarm)),
        ("/api/v1/alarms/{id}/acknowledge", post(acknowledge)),
        ("/api/v1/alarms/{id}/close", post(close)),
        ("/api/v1/events", get(list_events)),
        ("/api/v1/stream", get(stream)),
        ("/api/v1/dead-letters", get(dead_letters)),
        (
            "/api/v1/enrollment-codes",
            get(list_enroll_codes).post(create_enroll_code),
        ),
        ("/api/v1/gateways", get(list_gateways)),
        ("/api/v1/gateways/{id}/revoke", post(revoke_gateway)),
        (
            "/api/v1/gateways/{id}/settings",
            get(get_gateway_settings).put(put_gateway_settings),
        ),
        ("/api/v1/openapi.json", get(openapi)),
        ("/metrics", get(metrics)),
        ("/healthz", get(healthz)),
    ]
}

pub fn router(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, method)| r.route(path, method))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such path; see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// What went wrong, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "api store error");
        let status = match e {
            StoreError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let status = match &e {
            ActionError::NotFound(_) => StatusCode::NOT_FOUND,
            ActionError::Workflow(WorkflowError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ActionError::Workflow(WorkflowError::Conflict(_)) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Runs a read on the blocking pool: redb reads touch the disk.
async fn read<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn alarm_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("alarm {id:?} does not exist: ids are numbers"),
        )
    })
}

async fn list_alarms(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let state = match q.get("state") {
        None => None,
        Some(v) => Some(AlarmState::parse(v).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state {v:?} is not open, acknowledged or closed"),
            )
        })?),
    };
    // Care alarms (alarm and medication) and technical ones (device
    // silent, gateway offline, battery, tamper, power, gaps) are shown
    // apart: `group=care` or `group=technical`.
    let group = match q.get("group").map(String::as_str) {
        None => None,
        Some("care") => Some(false),
        Some("technical") => Some(true),
        Some(v) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("group {v:?} is not care or technical"),
            ))
        }
    };
    let mut alarms = read(&s.store, move |st| st.alarms(state)).await?;
    if let Some(technical) = group {
        alarms.retain(|a| (a.category == "technical") == technical);
    }
    Ok(Json(json!({ "alarms": alarms })))
}

async fn get_alarm(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = alarm_id(&id)?;
    match read(&s.store, move |st| st.alarm(id)).await? {
        Some(alarm) => Ok(Json(alarm)),
        None => Err(ActionError::NotFound(id).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcknowledgeBody {
    by: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    by: String,
    #[serde(default)]
    note: Option<String>,
    /// `real`, `false`, `test` or `technical`; optional here (the
    /// console's form always sends one).
    #[serde(default)]
    cause: Option<Cause>,
}

/// Reads a JSON body; anything wrong with it is a 422 that says what.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request body: {e}"),
        )
    })
}

async fn alarm_action(s: &AppState, op: Op) -> Result<Response, ApiError> {
    match s.writer.submit(op).await? {
        Done::Alarm(Ok((alarm, _))) => Ok(Json(alarm).into_response()),
        Done::Alarm(Err(e)) => Err(e.into()),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected store answer {other:?}"),
        )),
    }
}

async fn acknowledge(
    State(s): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let alarm = alarm_id(&id)?;
    let b: AcknowledgeBody = body(&bytes)?;
    alarm_action(&s, Op::Acknowledge { alarm, by: b.by }).await
}

async fn close(
    State(s): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let alarm = alarm_id(&id)?;
    let b: CloseBody = body(&bytes)?;
    alarm_action(
        &s,
        Op::Close {
            alarm,
            by: b.by,
            note: b.note,
            cause: b.cause,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollCodeBody {
    gateway: String,
    site: String,
    /// Seconds; 24 h when not given.
    #[serde(default)]
    valid_s: Option<u64>,
    /// Who asks (audited); `api` when not given.
    #[serde(default)]
    by: Option<String>,
}

/// Makes a one-time enrollment code (what `trygg-bridge enroll-code
/// create` uses while the bridge runs). The code is in this answer only.
async fn create_enroll_code(State(s): State<AppState>, bytes: Bytes) -> Result<Response, ApiError> {
    let b: EnrollCodeBody = body(&bytes)?;
    let valid_ms = b
        .valid_s
        .map(|v| v.saturating_mul(1000))
        .unwrap_or(crate::enrollment::DEFAULT_CODE_VALID_MS);
    let by = b.by.unwrap_or_else(|| "api".into());
    let store = s.store.clone();
    let now = crate::store::now_ms();
    let made = tokio::task::spawn_blocking(move || {
        store.create_enroll_code(&b.gateway, &b.site, valid_ms, &by, "api", now)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match made {
        Ok((code, record)) => {
            tracing::info!(gateway = %record.gateway, site = %record.site, by = %record.created_by, "enrollment code made");
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "code": code,
                    "gateway": record.gateway,
                    "site": record.site,
                    "expires_ms": record.expires_ms,
                    "expires": trygg_uplink::enroll::utc_text(record.expires_ms),
                })),
            )
                .into_response())
        }
        Err(crate::enrollment::CodeError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )),
    }
}

/// Every enrollment code made (never the codes themselves), newest first.
async fn list_enroll_codes(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let codes = read(&s.store, |st| st.enroll_codes()).await?;
    Ok(Json(json!({ "codes": codes })))
}

/// Every certificate issued to a gateway, oldest first.
async fn list_gateways(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let certs = read(&s.store, |st| st.gateway_certs()).await?;
    Ok(Json(json!({ "certificates": certs })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    by: String,
    reason: String,
}

/// Revokes every certificate of a gateway (audited): it is refused from
/// its next connection attempt.
async fn revoke_gateway(
    State(s): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: RevokeBody = body(&bytes)?;
    if b.by.trim().is_empty() || b.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give `by` (who revokes) and `reason` (why: stolen, decommissioned, replaced, ...)",
        ));
    }
    let store = s.store.clone();
    let gw = id.clone();
    let now = crate::store::now_ms();
    let revoked = tokio::task::spawn_blocking(move || {
        store.revoke_gateway(&gw, &b.by, &b.reason, "api", now)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    tracing::warn!(gateway = %id, revoked, "gateway revoked: refused from its next connection");
    Ok(Json(json!({ "gateway": id, "revoked": revoked })).into_response())
}

/// The gateway's settings as the backend keeps them, with the gateway's
/// answer to the latest version.
async fn get_gateway_settings(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    gateway_id(&id)?;
    match s.store.gateway_settings(&id)? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no settings were set for gateway {id}"),
        )),
    }
}

/// Sets the gateway's settings (the whole set the backend manages) as a new
/// version, durably and audited, then pushes it; 202 with the version,
/// `pending` until the gateway answers (GET shows the answer).
pub(crate) async fn put_gateway_settings(
    State(s): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    gateway_id(&id)?;
    let settings: trygg_uplink::remote_config::GatewaySettings = body(&bytes)?;
    let record = set_gateway_settings(&s, &id, settings, "api", "loopback").await?;
    Ok((StatusCode::ACCEPTED, Json(record)).into_response())
}

/// Checks, stores (audited as `actor`) and pushes a gateway's settings.
pub(crate) async fn set_gateway_settings(
    s: &AppState,
    gateway: &str,
    settings: trygg_uplink::remote_config::GatewaySettings,
    actor: &str,
    remote: &str,
) -> Result<crate::settings::GatewaySettingsRecord, ApiError> {
    settings
        .check()
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let (store, gw, actor, remote) = (
        s.store.clone(),
        gateway.to_string(),
        actor.to_string(),
        remote.to_string(),
    );
    let record = tokio::task::spawn_blocking(move || {
        store.set_gateway_settings(&gw, settings, &actor, &remote, crate::store::now_ms())
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the store task failed"))??;
    tracing::info!(gateway, version = record.version, by = %record.set_by, "gateway settings set; pushing");
    let _ = s.outbox.send(crate::settings::Outgoing::config(&record));
    Ok(record)
}

fn gateway_id(id: &str) -> Result<(), ApiError> {
    if trygg_protocol::topic::is_valid_device_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a gateway id: 1-64 characters of A-Z, a-z, 0-9, '-' or '_'",
        ))
    }
}

async fn list_events(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = match q.get("limit") {
        None => DEFAULT_EVENT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit {v:?} is not a number"),
                )
            })?
            .min(MAX_EVENT_LIMIT),
    };
    let device = q.get("device").cloned();
    let events = read(&s.store, move |st| st.events(device.as_deref(), limit)).await?;
    Ok(Json(json!({ "events": events })))
}

async fn dead_letters(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let letters = read(&s.store, |st| st.dead_letters(1000)).await?;
    Ok(Json(json!({ "dead_letters": letters })))
}

/// Server-sent events: `alarm` for each new or changed alarm, `resync` when
/// this client fell behind and missed some (reload the list then).
async fn stream(State(s): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = BroadcastStream::new(s.changes.subscribe()).map(|m| {
        Ok(match m {
            Ok(change) => Event::default()
                .event("alarm")
                .json_data(&change)
                .unwrap_or_else(|e| {
                    Event::default()
                        .event("resync")
                        .data(format!("{{\"error\":\"{e}\"}}"))
                }),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "alarm stream client lagged");
                Event::default()
                    .event("resync")
                    .data(format!("{{\"missed\":{n}}}"))
            }
        })
    });
    // The comment goes out at once, so a client knows it is subscribed.
    let hello = futures::stream::once(async {
        Ok(Event::default().comment("subscribed to alarm changes"))
    });
    let stream = hello
        .chain(changes)
        .take_until(s.cancel.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for (path, _) in routes() {
            assert!(
                paths.contains_key(path),
                "{path} is routed but not in openapi.json"
            );
        }
        for path in paths.keys() {
            assert!(
                routes().iter().any(|(p, _)| p == path),
                "{path} is in openapi.json but not routed"
            );
        }
    }

    #[test]
    fn openapi_says_there_is_no_login_yet() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("no login"));
    }
}
