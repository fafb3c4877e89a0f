//! Running Trygg's firmware logic (`trygg-firmware`, `no_std`) on a Linux
//! host, with what a microcontroller board would supply replaced by host
//! parts:
//!
//! - [`mqtt`]: the firmware's `Transport` over rumqttc, and the link's
//!   events (connected, receipts, settings);
//! - [`node`]: [`HostDevice`], the device loop (tokio): the firmware
//!   `Device` with its inputs, polled every 10 ms;
//! - [`flash`]: [`FileFlash`], NOR flash in a file (fsync per write), so
//!   the queue and sequence numbers survive a restart or a SIGKILL;
//! - [`pins`]: simulated input pins, set from a test, a simulated resident
//!   or stdin.
//!
//! Used by the simulator's devices (`trygg-sim`) and by the Raspberry Pi
//! sensor node (`trygg-pi-sensor-node`), so both run the same code as a
//! device in a home.

pub mod flash;
pub mod mqtt;
pub mod node;
pub mod pins;

pub use flash::{FileFlash, FileFlashError};
pub use mqtt::{LinkEvent, LinkOptions, MqttTransport};
pub use node::{ButtonInput, Happened, HostDevice, Input, SensorInput, Source, POLL_EVERY};
pub use pins::{sim_pin, PinDriver, SimPin};
