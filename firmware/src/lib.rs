//! Trygg device logic for microcontrollers: `no_std`, no allocation.
//!
//! [`Outbox`] is the heart of a device's reliability: every event stays in
//! it, and is re-sent with the same sequence number, until the gateway's
//! receipt for that sequence number arrives. Its capacity is fixed at
//! compile time; when it is full, an alarm pushes out the oldest telemetry
//! event, and nothing ever pushes out an alarm.
//!
//! The simulator's devices run this very code, so what CI tests is what a
//! device does.
#![no_std]
#![deny(unsafe_code)]

pub mod outbox;

pub use outbox::{Outbox, PushError};
