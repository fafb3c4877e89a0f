//! Trygg's event model and device protocol.
//!
//! This crate is the single source of truth for what a device can report:
//! every [`EventKind`] with its [`Category`], [`Severity`], priority
//! [`Lane`], its VKP alert code and its SCAIP device type and status code,
//! all in one table ([`kinds::TABLE`]). It is `no_std` and allocation-free so
//! that device firmware, the gateway and the backend decode and encode the
//! very same types.
//!
//! The wire format (MQTT topics and JSON payloads) is described in the
//! project's `docs/protocol.md`; [`wire`] implements it.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(unsafe_code)]

pub mod kinds;
pub mod topic;
pub mod wire;

pub use kinds::{Category, EventKind, KindInfo, Lane, Severity};
pub use wire::{DecodeError, DeviceEvent, Heartbeat, Receipt, ReceiptStatus};

/// The schema version this crate reads and writes (`"v"` in every payload).
pub const SCHEMA_VERSION: u16 = 1;

/// The largest device payload the gateway accepts, in bytes.
pub const MAX_DEVICE_PAYLOAD: usize = 4096;

/// The longest device id, in bytes. Ids are `[A-Za-z0-9_-]`.
pub const MAX_DEVICE_ID: usize = 64;
