//! The gateway's local HTTP API, for technicians and monitoring, on
//! loopback only (it has no login). The technician page
//! ([`crate::technician`]) serves the same routes on the home's network
//! behind a technician's login and CSRF token, and its pages call the
//! same functions ([`apply_change`], [`run_test_alarm`], [`device_views`]).
//!
//! - `GET /healthz`                 `ok`, or 503 and why: the journal cannot commit, or
//!   the gateway is not enrolled or its certificate is refused (and what to run)
//! - `GET /metrics`                 Prometheus text
//! - `GET /api/v1/status`           identity (enrolled?), uplink state, journal backlog, heartbeats
//! - `GET /api/v1/dead-letters`     rejected payloads, newest first
//! - `GET /api/v1/devices`          the device register, each with its health
//! - `GET /api/v1/devices/{id}`     one device
//! - `POST /api/v1/devices`         pair a device (201; 409 paired already; 422 invalid)
//! - `POST /api/v1/devices/{id}/swap`  `{"new_id"}`: every setting to the replacement
//! - `DELETE /api/v1/devices/{id}`  unpair: its events are refused from then on
//! - `POST /api/v1/devices/{id}/key`   `{"key"?}`: a new key (generated and shown once if none given)
//! - `GET /api/v1/devices/pending`  unknown devices asking to join (first contact)
//! - `POST /api/v1/devices/pending/{id}/accept`  `{"type","room","resident","supervision_s"?}`:
//!   pair it with the key it presented (201)
//! - `DELETE /api/v1/devices/pending/{id}`  reject it (204)
//! - `POST /api/v1/devices/pending/window`  `{"seconds"}`: let unknown devices ask
//!   to join for a while, even with first contact off (embedded broker)
//! - `POST /api/v1/decommission`  `{"confirm": gateway id, "force"?, "deliver_within_s"?}`:
//!   deliver, have the backend revoke, then stop and wipe (202; progress at GET)
//! - `POST /api/v1/test-alarm`      `{"device"?, "timeout_s"?}`: raise `test_alarm`,
//!   wait for the backend's receipt (200 confirmed, 504 not yet)
//!
//! A register change is answered after it is durable in the journal and
//! ingest and supervision use it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Device;
use crate::register::{Change, RegisterError};
use crate::service::{DeviceChangeError, JournalCmd, Shared};

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _ = axum::serve(listener, router(shared))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
}

/// The whole API. The technician page serves it too, behind its login
/// (`crate::technician`).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/dead-letters", get(dead_letters))
        .route("/api/v1/devices", get(list_devices).post(add_device))
        .route(
            "/api/v1/devices/{id}",
            get(show_device).delete(remove_device),
        )
        .route("/api/v1/devices/{id}/swap", post(swap_device))
        .route("/api/v1/devices/{id}/key", post(rekey_device))
        .route("/api/v1/devices/pending", get(list_pending))
        .route("/api/v1/devices/pending/window", post(open_window))
        .route("/api/v1/devices/pending/{id}/accept", post(accept_pending))
        .route(
            "/api/v1/devices/pending/{id}",
            axum::routing::delete(reject_pending),
        )
        .route("/api/v1/test-alarm", post(test_alarm))
        .route(
            "/api/v1/decommission",
            get(decommission_status).post(decommission),
        )
        .with_state(shared)
}

/// `ok`, or 503 with the reason while the journal cannot commit.
async fn health(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.disk_full.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "disk full: alarms, medication and technical events are still committed (from the reserve); telemetry waits on the devices. Free space on the gateway's disk.\n".to_string(),
        );
    }
    if let Some(problem) = s.identity.lock().ok().and_then(|i| i.problem()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n"));
    }
    match s.journal_error.lock().ok().and_then(|e| e.clone()) {
        None => (StatusCode::OK, "ok".to_string()),
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal cannot commit: {e}\n"),
        ),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    // The backlog is read when asked for, not after every commit.
    if let Ok(counts) = s.reader.pending_counts() {
        for (label, count) in crate::service::LANE_LABELS.iter().zip(counts) {
            s.metrics
                .set("journal_pending_records", label, count as f64);
        }
    }
    if let Ok(bytes) = s.reader.pending_bytes() {
        for (label, b) in crate::service::LANE_LABELS.iter().zip(bytes) {
            s.metrics.set("journal_pending_bytes", label, b as f64);
        }
    }
    let silent = s.silent.lock().map(|v| v.len()).unwrap_or(0);
    s.metrics.set("devices_silent", "", silent as f64);
    s.metrics.set(
        "disk_full",
        "",
        if s.disk_full.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

async fn status(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(status_view(&s))
}

/// What `/api/v1/status` answers.
pub(crate) fn status_view(s: &Shared) -> serde_json::Value {
    let pending = s
        .reader
        .pending_counts()
        .map(|p| json!({"alarm": p[0], "care": p[1], "telemetry": p[2]}))
        .unwrap_or(serde_json::Value::Null);
    let heartbeats: serde_json::Map<String, serde_json::Value> = s
        .last_heartbeat
        .lock()
        .map(|m| {
            m.iter()
                .map(|(d, (at, hb))| {
                    (
                        d.clone(),
                        json!({"at_ms": at, "battery": hb.battery, "rssi": hb.rssi}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let identity = s
        .identity
        .lock()
        .map(|i| {
            let (fingerprint, not_after) = match &*i {
                crate::enrollment::IdentityState::Enrolled {
                    fingerprint,
                    not_after_ms,
                } => (
                    Some(fingerprint.clone()),
                    Some(trygg_uplink::enroll::utc_text(*not_after_ms)),
                ),
                crate::enrollment::IdentityState::CertificateRefused { fingerprint, .. } => {
                    (Some(fingerprint.clone()), None)
                }
                _ => (None, None),
            };
            json!({
                "state": i.name(),
                "problem": i.problem(),
                "certificate_sha256": fingerprint,
                "certificate_expires": not_after,
            })
        })
        .unwrap_or(serde_json::Value::Null);
    json!({
        "identity": identity,
        "uplink_connected": s.uplink_connected.load(Ordering::Relaxed),
        "journal_error": s.journal_error.lock().ok().and_then(|e| e.clone()),
        "journal_set_aside": s.journal_set_aside.as_ref().map(|a| json!({"path": a.path, "reason": a.reason})),
        "journal_pending": pending,
        "journal_pending_bytes": s
            .reader
            .pending_bytes()
            .map(|b| json!({"alarm": b[0], "care": b[1], "telemetry": b[2]}))
            .unwrap_or(serde_json::Value::Null),
        "disk_full": s.disk_full.load(Ordering::Relaxed),
        "devices_silent": s.silent.lock().map(|v| v.clone()).unwrap_or_default(),
        "heartbeats": heartbeats,
        "heartbeat_s": s.heartbeat_s.load(Ordering::Relaxed),
        // Settings pushed by the backend: the version applied, and the
        // answer to the last version received.
        "settings": s.reader.remote_config().ok().flatten().map(|r| json!({
            "applied_version": r.applied_version,
            "last": r.last,
            "at_ms": r.at_ms,
        })),
    })
}

async fn dead_letters(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.reader.dead_letters(1000) {
        Ok(list) => Json(json!({ "dead_letters": list })).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// A device as the API shows it: its register entry and its health.
fn device_view(s: &Shared, d: &Device, silent: &[String]) -> serde_json::Value {
    let period = s
        .register
        .read()
        .ok()
        .and_then(|r| r.supervision_period(d))
        .map(|p| p.as_secs());
    let heartbeat = s
        .last_heartbeat
        .lock()
        .ok()
        .and_then(|m| m.get(&d.id).cloned());
    let last_seen = s.last_seen.lock().ok().and_then(|m| m.get(&d.id).copied());
    let supervision = match (period, silent.contains(&d.id)) {
        (None, _) => "off",
        (Some(_), true) => "silent",
        (Some(_), false) => "ok",
    };
    json!({
        "id": d.id,
        "type": d.device_type,
        "room": d.room,
        "resident": d.resident,
        "supervision_s": period,
        "has_key": d.key_hash.is_some(),
        // What the device is sent on its cfg topic (unset: its own default).
        "heartbeat_s": d.heartbeat_s,
        "pre_alarm_s": d.pre_alarm_s,
        "health": {
            "battery": heartbeat.as_ref().and_then(|(_, hb)| hb.battery),
            "rssi": heartbeat.as_ref().and_then(|(_, hb)| hb.rssi),
            "last_heartbeat_ms": heartbeat.as_ref().map(|(at, _)| *at),
            "last_seen_ms": last_seen,
            "supervision": supervision,
        },
    })
}

fn silent_now(s: &Shared) -> Vec<String> {
    s.silent.lock().map(|v| v.clone()).unwrap_or_default()
}

async fn list_devices(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(json!({ "devices": device_views(&s) }))
}

/// Every paired device as the API shows it.
pub(crate) fn device_views(s: &Shared) -> Vec<serde_json::Value> {
    let devices: Vec<Device> = s
        .register
        .read()
        .map(|r| r.devices().cloned().collect())
        .unwrap_or_default();
    let silent = silent_now(s);
    devices.iter().map(|d| device_view(s, d, &silent)).collect()
}

/// One paired device as the API shows it.
pub(crate) fn one_device_view(s: &Shared, id: &str) -> Option<serde_json::Value> {
    let device = s.register.read().ok().and_then(|r| r.get(id).cloned());
    device.map(|d| device_view(s, &d, &silent_now(s)))
}

async fn show_device(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match one_device_view(&s, &id) {
        Some(d) => Json(d).into_response(),
        None => error(StatusCode::NOT_FOUND, RegisterError::NotFound(id)),
    }
}

/// Why a request was refused: the status and the message to show.
pub(crate) type Refusal = (StatusCode, String);

fn refused((status, message): Refusal) -> Response {
    error(status, message)
}

type ChangeReply = tokio::sync::oneshot::Sender<Result<(), DeviceChangeError>>;

/// Sends the command `make` builds to the journal thread and waits until
/// it is durable; why not otherwise (counted and logged).
async fn ask_change(
    s: &Shared,
    make: impl FnOnce(ChangeReply) -> JournalCmd,
) -> Result<(), Refusal> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopping = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is stopping".to_string(),
        )
    };
    if s.ask(make(reply)).await.is_none() {
        return Err(stopping());
    }
    match answer.await {
        Err(_) => Err(stopping()),
        Ok(Ok(())) => Ok(()),
        Ok(Err(DeviceChangeError::Register(e))) => {
            let (status, code) = match e {
                RegisterError::AlreadyPaired(_) => (StatusCode::CONFLICT, "already_paired"),
                RegisterError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                RegisterError::NotPending(_) => (StatusCode::NOT_FOUND, "not_pending"),
                RegisterError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            };
            s.metrics.inc(
                "device_register_refused_total",
                &format!("reason=\"{code}\""),
            );
            tracing::warn!(error = %e, "device register request refused");
            Err((status, e.to_string()))
        }
        Ok(Err(e)) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// Sends `change` to the journal thread and, once it is durable, answers
/// with the device `shown` as it is now (or `{"removed": id}`), and `key`
/// (a key the gateway generated, shown this once).
pub(crate) async fn apply_change(
    s: &Shared,
    change: Change,
    shown: &str,
    key: Option<String>,
) -> Result<serde_json::Value, Refusal> {
    ask_change(s, |reply| JournalCmd::Devices { change, reply }).await?;
    let mut body = one_device_view(s, shown).unwrap_or_else(|| json!({ "removed": shown }));
    if let Some(k) = key {
        body["key"] = json!(k);
        body["key_note"] = json!("generated by the gateway and shown only this once: load it into the device (its MQTT password) now");
    }
    Ok(body)
}

/// [`apply_change`] as an HTTP answer.
async fn change(s: &Shared, change: Change, shown: &str, status: StatusCode) -> Response {
    change_with_key(s, change, shown, status, None).await
}

async fn change_with_key(
    s: &Shared,
    change: Change,
    shown: &str,
    status: StatusCode,
    key: Option<String>,
) -> Response {
    match apply_change(s, change, shown, key).await {
        Ok(body) => (status, Json(body)).into_response(),
        Err(r) => refused(r),
    }
}

/// The key to pair with: the one given (checked), else a new one, which
/// is returned to be shown once.
fn key_or_generate(given: Option<String>) -> Result<(String, Option<String>), Refusal> {
    match given {
        Some(k) => match crate::credentials::check_key(&k) {
            Ok(()) => Ok((crate::credentials::hash_key(&k), None)),
            Err(e) => Err((StatusCode::UNPROCESSABLE_ENTITY, format!("`key`: {e}"))),
        },
        None => {
            let k = crate::credentials::generate_key();
            Ok((crate::credentials::hash_key(&k), Some(k)))
        }
    }
}

/// The body as `T`, or the 422 that says why not.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the request body: {e}"),
        ))
    })
}

async fn add_device(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    // The register entry, plus the device's `key` (hashed here, never kept).
    let mut value: serde_json::Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let key = match value.as_object_mut().map(|o| o.remove("key")) {
        Some(Some(serde_json::Value::String(k))) => Some(k),
        Some(Some(serde_json::Value::Null)) | Some(None) => None,
        Some(Some(_)) => return error(StatusCode::UNPROCESSABLE_ENTITY, "`key` must be a string"),
        None => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the request body must be a JSON object",
            )
        }
    };
    let device: Device = match serde_json::from_value(value) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the request body: {e}"),
            )
        }
    };
    match pair(&s, device, key).await {
        Ok(body) => (StatusCode::CREATED, Json(body)).into_response(),
        Err(r) => refused(r),
    }
}

/// Pairs `device` with `key` (checked, and kept only as its hash), or with
/// the `key_hash` it has, or with a key generated here (in the answer,
/// shown this once).
pub(crate) async fn pair(
    s: &Shared,
    mut device: Device,
    key: Option<String>,
) -> Result<serde_json::Value, Refusal> {
    let shown_key = match (&device.key_hash, key) {
        (Some(_), Some(_)) => {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                "give `key` or `key_hash`, not both".into(),
            ))
        }
        (Some(_), None) => None,
        (None, key) => {
            let (hash, shown) = key_or_generate(key)?;
            device.key_hash = Some(hash);
            shown
        }
    };
    let id = device.id.clone();
    apply_change(s, Change::Add(device), &id, shown_key).await
}

async fn rekey_device(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Rekey {
        key: Option<String>,
    }
    let ask: Rekey = if body.iter().all(u8::is_ascii_whitespace) {
        Rekey::default()
    } else {
        match parse(&body) {
            Ok(a) => a,
            Err(r) => return *r,
        }
    };
    let (key_hash, shown) = match key_or_generate(ask.key) {
        Ok(k) => k,
        Err(r) => return refused(r),
    };
    let change = Change::Rekey {
        id: id.clone(),
        key_hash,
    };
    change_with_key(&s, change, &id, StatusCode::OK, shown).await
}

async fn list_pending(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(pending_views(&s))
}

/// The devices asking to join, as `GET /api/v1/devices/pending` lists them.
pub(crate) fn pending_views(s: &Shared) -> Vec<serde_json::Value> {
    s.gate
        .pending_list()
        .into_iter()
        .map(|(id, p)| {
            json!({
                "device": id,
                "first_seen_ms": p.first_seen_ms,
                "last_seen_ms": p.last_seen_ms,
                "attempts": p.attempts,
            })
        })
        .collect()
}

async fn accept_pending(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Accept {
        #[serde(rename = "type")]
        device_type: crate::config::DeviceType,
        #[serde(default)]
        room: Option<String>,
        #[serde(default)]
        resident: Option<String>,
        #[serde(default)]
        supervision_s: Option<u64>,
    }
    let a: Accept = match parse(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let device = Device {
        id: id.clone(),
        device_type: a.device_type,
        room: a.room,
        resident: a.resident,
        supervision_s: a.supervision_s,
        key_hash: None,
        heartbeat_s: None,
        pre_alarm_s: None,
    };
    match accept(&s, device).await {
        Ok(body) => (StatusCode::CREATED, Json(body)).into_response(),
        Err(r) => refused(r),
    }
}

/// Pairs a device that asked to join (with the key it presented) at its
/// place: `device` without a key.
pub(crate) async fn accept(s: &Shared, device: Device) -> Result<serde_json::Value, Refusal> {
    let id = device.id.clone();
    ask_change(s, |reply| JournalCmd::Accept { device, reply }).await?;
    s.metrics.inc("device_join_requests_accepted_total", "");
    one_device_view(s, &id).ok_or_else(|| {
        (
            StatusCode::CONFLICT,
            format!("device `{id}` was removed meanwhile"),
        )
    })
}

async fn open_window(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Window {
        seconds: u64,
    }
    let w: Window = match parse(&body) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    match open_pairing_window(&s, w.seconds) {
        Ok(body) => Json(body).into_response(),
        Err(r) => refused(r),
    }
}

/// Whether unknown devices can ask to join here at all: the embedded
/// broker with device authentication (Mosquitto lets in only paired
/// devices; without device_auth every device gets in anyway).
pub(crate) fn first_contact_possible(s: &Shared) -> bool {
    s.local_broker.mode == crate::config::BrokerMode::Embedded && s.local_broker.device_auth
}

/// Lets unknown devices ask to join for `seconds` (1 to an hour), even
/// with first contact off.
pub(crate) fn open_pairing_window(s: &Shared, seconds: u64) -> Result<serde_json::Value, Refusal> {
    let max = crate::device_auth::MAX_WINDOW.as_secs();
    if seconds == 0 || seconds > max {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`seconds` must be 1 to {max} (an hour)"),
        ));
    }
    if !first_contact_possible(s) {
        return Err((
            StatusCode::CONFLICT,
            "there is no first contact with this broker: Mosquitto lets in only paired devices (pair the device with its key: `trygg-gateway device add ID --type TYPE --key KEY`), and with device_auth off every device gets in anyway".into(),
        ));
    }
    s.gate.open_window(
        std::time::Duration::from_secs(seconds),
        std::time::Instant::now(),
    );
    tracing::info!(
        seconds,
        "pairing window opened: unknown devices may ask to join until it closes"
    );
    Ok(json!({ "open_for_s": seconds, "first_contact_always": s.local_broker.first_contact }))
}

async fn reject_pending(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match reject(&s, id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refused(r),
    }
}

/// Refuses a device that asked to join.
pub(crate) async fn reject(s: &Shared, id: String) -> Result<(), Refusal> {
    ask_change(s, |reply| JournalCmd::Reject { id, reply }).await
}

async fn swap_device(
    State(s): State<Arc<Shared>>,
    Path(old): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Swap {
        new_id: String,
        /// The replacement's key (from its label); generated if not given.
        #[serde(default)]
        key: Option<String>,
    }
    let swap: Swap = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match self::swap(&s, old, swap.new_id, swap.key).await {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(r) => refused(r),
    }
}

/// Moves every setting of `old` to `new_id` in one step, with the
/// replacement's `key` (generated if not given, and then in the answer,
/// shown this once).
pub(crate) async fn swap(
    s: &Shared,
    old: String,
    new_id: String,
    key: Option<String>,
) -> Result<serde_json::Value, Refusal> {
    let (new_key_hash, shown) = key_or_generate(key)?;
    let change = Change::Swap {
        old,
        new_id: new_id.clone(),
        new_key_hash: Some(new_key_hash),
    };
    apply_change(s, change, &new_id, shown).await
}

async fn remove_device(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    change(&s, Change::Remove(id.clone()), &id, StatusCode::OK).await
}

/// The longest a test alarm waits for the backend's receipt.
const MAX_TEST_WAIT_S: u64 = 300;

async fn test_alarm(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        device: Option<String>,
        timeout_s: Option<u64>,
    }
    let ask: Ask = if body.iter().all(u8::is_ascii_whitespace) {
        Ask::default()
    } else {
        match parse(&body) {
            Ok(a) => a,
            Err(r) => return *r,
        }
    };
    let timeout = std::time::Duration::from_secs(ask.timeout_s.unwrap_or(30).min(MAX_TEST_WAIT_S));
    match run_test_alarm(&s, ask.device, timeout).await {
        Ok(body) => {
            let status = if body["confirmed"] == true {
                StatusCode::OK
            } else {
                StatusCode::GATEWAY_TIMEOUT
            };
            (status, Json(body)).into_response()
        }
        Err((status, message)) => error(status, message),
    }
}

/// Raises a test alarm about `device` (or the gateway) and waits up to
/// `timeout` for the backend's receipt. The answer says whether it was
/// confirmed and how long it took.
pub(crate) async fn run_test_alarm(
    s: &Shared,
    device: Option<String>,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, Refusal> {
    let started = std::time::Instant::now();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopping = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is stopping".to_string(),
        )
    };
    let cmd = JournalCmd::TestAlarm {
        subject: device.clone(),
        reply,
    };
    if s.ask(cmd).await.is_none() {
        return Err(stopping());
    }
    let (lane, seq) = match answer.await {
        Err(_) => return Err(stopping()),
        Ok(Ok(at)) => at,
        Ok(Err(DeviceChangeError::Register(e))) => {
            return Err((StatusCode::NOT_FOUND, e.to_string()))
        }
        Ok(Err(e)) => return Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    };
    let committed_ms = started.elapsed().as_millis() as u64;
    // The uplink deletes a record from the journal when the backend's
    // receipt covers it: gone means confirmed.
    let deadline = tokio::time::Instant::now() + timeout;
    let confirmed = loop {
        if matches!(s.reader.is_pending(lane, seq), Ok(false)) {
            break true;
        }
        // A stopping gateway does not wait out the timeout: graceful
        // shutdown waits for this request.
        let stopping = s.admin.lock().map(|a| a.is_none()).unwrap_or(true);
        if stopping || tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    Ok(json!({
        "device": device,
        "lane": format!("{lane:?}").to_lowercase(),
        "seq": seq,
        "committed_after_ms": committed_ms,
        "confirmed": confirmed,
        "confirmed_after_ms": confirmed.then(|| started.elapsed().as_millis() as u64),
        "uplink_connected": s.uplink_connected.load(Ordering::Relaxed),
    }))
}

/// What a decommission is doing, with what the journal still holds.
async fn decommission_status(State(s): State<Arc<Shared>>) -> Response {
    let pending = s
        .reader
        .pending_counts()
        .map(|p| json!({"alarm": p[0], "care": p[1], "telemetry": p[2]}))
        .unwrap_or(serde_json::Value::Null);
    Json(json!({
        "decommission": s.decommission.phase(),
        "pending": pending,
        "uplink_connected": s.uplink_connected.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// The longest a decommission waits for the journal to be delivered.
const MAX_DELIVER_WAIT_S: u64 = 24 * 3600;

async fn decommission(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        confirm: String,
        #[serde(default)]
        force: bool,
        deliver_within_s: Option<u64>,
    }
    let ask: Ask = match parse(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let gateway_id = s
        .register
        .read()
        .map(|r| r.gateway_id().to_string())
        .unwrap_or_default();
    if ask.confirm != gateway_id {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("to confirm, `confirm` must be this gateway's id ({gateway_id})"),
        );
    }
    if !s.decommission.begin() {
        return error(
            StatusCode::CONFLICT,
            "a decommission is under way already (GET /api/v1/decommission)",
        );
    }
    let limits = crate::decommission::Limits {
        deliver_within: std::time::Duration::from_secs(
            ask.deliver_within_s.unwrap_or(600).min(MAX_DELIVER_WAIT_S),
        ),
        revoke_within: std::time::Duration::from_secs(60),
    };
    tokio::spawn(crate::service::decommission_flow(
        s.clone(),
        ask.force,
        limits,
    ));
    (
        StatusCode::ACCEPTED,
        Json(json!({"decommission": s.decommission.phase()})),
    )
        .into_response()
}
