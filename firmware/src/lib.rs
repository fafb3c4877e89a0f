//! Trygg device logic for microcontrollers: `no_std`, no allocation.
//!
//! - [`Outbox`]: every event stays queued, and is re-sent with the same
//!   sequence number, until the gateway's receipt for that sequence number
//!   arrives. Its capacity is fixed at compile time; when it is full, an
//!   alarm pushes out the oldest telemetry event, and nothing ever pushes out
//!   an alarm.
//! - [`store::Store`]: the queue and the sequence counter on NOR flash
//!   (any `embedded-storage` `NorFlash`), so a power cut loses neither.
//! - [`Device`]: queue, flash, sequence numbers, heartbeats, battery and
//!   settings behind a small [`Transport`] trait.
//! - [`input`]: debounced pins, the alarm button (pre-alarm window, long
//!   press, pull cord) and binary sensors (door, bed pad, PIR, fall, smoke,
//!   water); [`dispenser`]: medicine dispenser events. All generic over
//!   embedded-hal 1.0 pins.
//!
//! The simulator's devices run this very code, so what CI tests is what a
//! device does.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod config;
pub mod device;
pub mod dispenser;
pub mod flash;
pub mod input;
pub mod outbox;
pub mod store;

pub use device::{Device, DeviceSettings, Leaf, RaiseError, ReceiptOutcome, Transport};
pub use outbox::{Outbox, PushError};
