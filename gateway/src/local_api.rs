//! The gateway's local HTTP API, for technicians and monitoring, on
//! loopback only until the technician login exists (a later issue).
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
    let app = Router::new()
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
        .route("/api/v1/test-alarm", post(test_alarm))
        .route(
            "/api/v1/decommission",
            get(decommission_status).post(decommission),
        )
        .with_state(shared);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
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
    Json(json!({
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
    }))
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
    let devices: Vec<Device> = s
        .register
        .read()
        .map(|r| r.devices().cloned().collect())
        .unwrap_or_default();
    let silent = silent_now(&s);
    let list: Vec<_> = devices
        .iter()
        .map(|d| device_view(&s, d, &silent))
        .collect();
    Json(json!({ "devices": list }))
}

async fn show_device(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let device = s.register.read().ok().and_then(|r| r.get(&id).cloned());
    match device {
        Some(d) => Json(device_view(&s, &d, &silent_now(&s))).into_response(),
        None => error(StatusCode::NOT_FOUND, RegisterError::NotFound(id)),
    }
}

/// Sends `change` to the journal thread and answers with `then` once it
/// is durable.
async fn change(s: &Shared, change: Change, shown: &str, status: StatusCode) -> Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopping = || error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping");
    if s.ask(JournalCmd::Devices { change, reply }).await.is_none() {
        return stopping();
    }
    match answer.await {
        Err(_) => stopping(),
        Ok(Ok(())) => {
            let device = s.register.read().ok().and_then(|r| r.get(shown).cloned());
            let body = match device {
                Some(d) => device_view(s, &d, &silent_now(s)),
                None => json!({ "removed": shown }),
            };
            (status, Json(body)).into_response()
        }
        Ok(Err(DeviceChangeError::Register(e))) => {
            let status = match e {
                RegisterError::AlreadyPaired(_) => StatusCode::CONFLICT,
                RegisterError::NotFound(_) => StatusCode::NOT_FOUND,
                RegisterError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, e)
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
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
    let device: Device = match parse(&body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let id = device.id.clone();
    change(&s, Change::Add(device), &id, StatusCode::CREATED).await
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
    }
    let swap: Swap = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let new_id = swap.new_id.clone();
    change(
        &s,
        Change::Swap {
            old,
            new_id: swap.new_id,
        },
        &new_id,
        StatusCode::OK,
    )
    .await
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
    let started = std::time::Instant::now();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopping = || error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping");
    let cmd = JournalCmd::TestAlarm {
        subject: ask.device.clone(),
        reply,
    };
    if s.ask(cmd).await.is_none() {
        return stopping();
    }
    let (lane, seq) = match answer.await {
        Err(_) => return stopping(),
        Ok(Ok(at)) => at,
        Ok(Err(DeviceChangeError::Register(e))) => return error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
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
    let body = json!({
        "device": ask.device,
        "lane": format!("{lane:?}").to_lowercase(),
        "seq": seq,
        "committed_after_ms": committed_ms,
        "confirmed": confirmed,
        "confirmed_after_ms": confirmed.then(|| started.elapsed().as_millis() as u64),
        "uplink_connected": s.uplink_connected.load(Ordering::Relaxed),
    });
    let status = if confirmed {
        StatusCode::OK
    } else {
        StatusCode::GATEWAY_TIMEOUT
    };
    (status, Json(body)).into_response()
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
