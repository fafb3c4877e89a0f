//! Devices asking to join ("an unknown device is asking to join: accept?"),
//! as the technician page sees them. The contract with the gateway's side
//! of first-contact pairing is the loopback API's
//! `GET /api/v1/devices/pending`, `POST /api/v1/devices/pending/{id}/accept`
//! and `DELETE /api/v1/devices/pending/{id}`; the page calls the functions
//! behind those routes.
//!
//! This gateway does not keep join requests yet: [`list`] answers `None`,
//! which the page shows as "not available", and [`accept`] and [`reject`]
//! answer 501.

use axum::http::StatusCode;

use crate::config::Device;
use crate::local_api::Refusal;
use crate::service::Shared;

/// A device that asked to join and was not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingJoin {
    pub device: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub attempts: u64,
}

const UNAVAILABLE: &str =
    "this gateway does not keep devices asking to join yet: pair the device with its id instead";

/// The devices asking to join; `None` when this gateway cannot tell.
pub(crate) fn list(_s: &Shared) -> Option<Vec<PendingJoin>> {
    None
}

/// Pairs a device that asked to join, with its place.
pub(crate) async fn accept(_s: &Shared, _device: Device) -> Result<serde_json::Value, Refusal> {
    Err((StatusCode::NOT_IMPLEMENTED, UNAVAILABLE.into()))
}

/// Refuses a device that asked to join.
pub(crate) async fn reject(_s: &Shared, _id: &str) -> Result<(), Refusal> {
    Err((StatusCode::NOT_IMPLEMENTED, UNAVAILABLE.into()))
}
