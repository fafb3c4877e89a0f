//! The gateway's local HTTP API, for technicians and monitoring, on
//! loopback only until the technician login exists (a later issue).
//!
//! - `GET /healthz`                 `ok`, or 503 and why the journal cannot commit
//! - `GET /metrics`                 Prometheus text
//! - `GET /api/v1/status`           uplink state, journal backlog, heartbeats
//! - `GET /api/v1/dead-letters`     rejected payloads, newest first

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::service::Shared;

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
    Json(json!({
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
